//! The Redis store against a local `redis-server` of its own (issue 12): rotations per
//! second (one Lua compare-and-swap each, 64 families written concurrently) and the
//! store latency of one rotation (read + CAS, p50/p99, one at a time).
//!
//!     cargo bench --bench redis_store
//!
//! Under `cargo test --benches` it runs a few operations only (a smoke check).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rotagate::store::redis::RedisConfig;
use rotagate::store::{Cas, FamilyId, FamilyRecord, Store, StoreConfig};

fn record(now: u64) -> FamilyRecord {
    FamilyRecord {
        claims: br#"{"sub":"bench-user","plan":"pro"}"#.to_vec(),
        // about what two captured Auth.js-sized cookies seal to
        ..FamilyRecord::sample(Some("bench-user"), now, 300)
    }
}

/// One rotation as the engine does it with a cold single-flight slot: read, then CAS.
async fn rotate(store: &dyn Store, id: &FamilyId) {
    let mut r = store.get(id).await.unwrap().unwrap();
    let expected = r.version;
    r.generation += 1;
    match store
        .compare_and_swap(id, Some(expected), &r)
        .await
        .unwrap()
    {
        Cas::Written(_) => {}
        Cas::Conflict => panic!("no other writer in this bench"),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = match Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            eprintln!("redis_store bench: redis-server not found (scripts/setup.sh installs it)");
            std::process::exit(if full { 1 } else { 0 });
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cfg = StoreConfig::Redis(RedisConfig::new(format!("redis://127.0.0.1:{port}/0")));
    let store: Arc<dyn Store> = rotagate::store::open(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (families, rounds) = if full { (64u8, 200usize) } else { (4, 3) };
    rt.block_on(async {
        let ids: Vec<FamilyId> = (0..families).map(|i| FamilyId([i; 16])).collect();
        for id in &ids {
            store.compare_and_swap(id, None, &record(now)).await.unwrap();
        }
        // latency: one rotation at a time
        let mut lat = Vec::new();
        for i in 0..rounds * 5 {
            let id = &ids[i % ids.len()];
            let t = Instant::now();
            rotate(&*store, id).await;
            lat.push(t.elapsed());
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
        // throughput: every family rotated concurrently, `rounds` times
        let t = Instant::now();
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (store.clone(), *id);
                tokio::spawn(async move {
                    for _ in 0..rounds {
                        rotate(&*store, &id).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        let n = ids.len() * rounds;
        println!(
            "redis store: {:.0} rotations/s ({} families concurrently, {n} rotations); one rotation (read + CAS) p50 {:.0} us, p99 {:.0} us",
            n as f64 / secs,
            ids.len(),
            p(0.5),
            p(0.99)
        );
    });
    drop(store);
    let _ = child.kill();
    let _ = child.wait();
}
