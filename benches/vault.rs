//! Vault mode (DESIGN §8, issue 11 point 8):
//! - `vault/verify_handle`: handle decode + tag check (target ≤ 5 µs, no store I/O);
//! - `vault/process_current` and `vault/process_rotate`: the engine's whole per-request
//!   decision on the memory store (verify, single-flight, judge, credential opening);
//! - after criterion, printed figures: embedded-store rotations/s and commit latency
//!   percentiles against a temp file (each rotation is one fsync'd redb commit), and the
//!   memory store's bytes per session excluding the captured cookie bytes (≤ 512 B),
//!   measured by a counting allocator.
//!
//!     cargo bench --bench vault

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use rotagate::clock::{Clock, ManualClock};
use rotagate::secret::Secret;
use rotagate::session::vault::handle::Handle;
use rotagate::session::vault::keys::Keys;
use rotagate::session::vault::{
    Accepted, CapturedCookie, Engine, Lookup, NewLogin, RequestOptions, VaultSettings,
};
use rotagate::store::embedded::EmbeddedStore;
use rotagate::store::memory::MemoryStore;
use rotagate::store::{FamilyId, Store, DEFAULT_HANDOVER};
use serde_json::{json, Map};

/// Counts live heap bytes (for the bytes-per-session figure).
struct CountingAlloc;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const T0: u64 = 1_793_491_200;
const MAY: RequestOptions = RequestOptions { may_rotate: true };

fn settings() -> VaultSettings {
    VaultSettings::with_secrets(vec![
        Secret::new(vec![0x42; 32]),
        Secret::new(vec![0x43; 32]),
    ])
}

/// A typical login: one captured cookie of `cookie_len` bytes, a subject, two claims.
fn login(n: usize, cookie_len: usize) -> NewLogin {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(format!("user-{n}")));
    claims.insert("role".into(), json!("member"));
    NewLogin {
        cookies: vec![CapturedCookie::new("sid", vec![b'x'; cookie_len])],
        subject: Some(format!("user-{n}")),
        claims,
        limit: None,
    }
}

fn engine(store: Arc<dyn Store>, clock: Arc<ManualClock>) -> Engine {
    Engine::new(&settings(), store, clock).expect("engine")
}

fn micro(c: &mut Criterion) {
    let keys = Keys::new(&settings()).expect("keys");
    let value = Handle {
        kid: 0,
        family: FamilyId([7; 16]),
        generation: 12,
        secret: [9; 32],
    }
    .mint(keys.active());
    c.bench_function("vault/verify_handle", |b| {
        b.iter(|| Handle::verify(black_box(value.expose()), &keys).is_ok())
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let clock = Arc::new(ManualClock::new(T0));
    let e = engine(Arc::new(MemoryStore::new()), clock.clone());
    let issued = rt.block_on(e.login(login(1, 200))).expect("login");
    let h = issued.handle.value.expose().to_string();
    c.bench_function("vault/process_current", |b| {
        b.iter(|| {
            let l = rt.block_on(e.process(black_box(&h), MAY)).expect("process");
            assert!(matches!(l, Lookup::Session(_)));
        })
    });

    // a rotation each iteration: the clock jumps past every interval
    let mut h = h;
    c.bench_function("vault/process_rotate_memory", |b| {
        b.iter(|| {
            clock.advance(400);
            let Ok(Lookup::Session(s)) = rt.block_on(e.process(&h, MAY)) else {
                panic!("rotation failed")
            };
            assert_eq!(s.accepted, Accepted::Rotated);
            h = s.set_handle.expect("successor").value.expose().to_string();
            // keep within the absolute limit
            if clock.now_unix() > T0 + 40_000 {
                clock.set(T0);
                let issued = rt.block_on(e.login(login(1, 200))).expect("login");
                h = issued.handle.value.expose().to_string();
            }
        })
    });
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Rotations through the engine on the embedded store: each is a read plus one durable
/// compare-and-swap (fsync). Sequential (one family), then 8 families concurrently.
fn embedded_rotations() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.redb");
    let store = Arc::new(EmbeddedStore::open(&path, DEFAULT_HANDOVER).expect("store"));
    let clock = Arc::new(ManualClock::new(T0));
    let e = Arc::new(engine(store.clone(), clock.clone()));
    const N: usize = 400;

    let mut h = rt
        .block_on(e.login(login(1, 200)))
        .expect("login")
        .handle
        .value
        .expose()
        .to_string();
    let mut lat = Vec::with_capacity(N);
    let start = Instant::now();
    for _ in 0..N {
        clock.advance(400);
        let t = Instant::now();
        let Ok(Lookup::Session(s)) = rt.block_on(e.process(&h, MAY)) else {
            panic!("rotation failed")
        };
        lat.push(t.elapsed());
        h = s.set_handle.expect("successor").value.expose().to_string();
        if clock.now_unix() > T0 + 40_000 {
            clock.set(T0);
            h = rt
                .block_on(e.login(login(1, 200)))
                .expect("login")
                .handle
                .value
                .expose()
                .to_string();
        }
    }
    let total = start.elapsed();
    lat.sort();
    println!(
        "vault/embedded_rotation (one family, sequential, {N}): {:.0} rotations/s; latency p50 {:?} p99 {:?} max {:?}",
        N as f64 / total.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );

    // raw commit latency of the store alone
    let id = FamilyId([3; 16]);
    let mut record = None;
    for (fid, r) in store.by_subject_blocking("user-1").expect("list") {
        if r.revoked.is_none() {
            record = Some((fid, r));
            break;
        }
    }
    let (_, mut r) = record.expect("a live family");
    let mut version = None;
    let mut commits = Vec::with_capacity(N);
    let start = Instant::now();
    for _ in 0..N {
        r.generation += 1;
        let t = Instant::now();
        match store
            .compare_and_swap_blocking(&id, version, &r)
            .expect("cas")
        {
            rotagate::store::Cas::Written(v) => version = Some(v),
            rotagate::store::Cas::Conflict => panic!("single writer"),
        }
        commits.push(t.elapsed());
    }
    let total = start.elapsed();
    commits.sort();
    println!(
        "vault/embedded_commit (durable CAS, {N}): {:.0} commits/s; p50 {:?} p99 {:?} max {:?}",
        N as f64 / total.as_secs_f64(),
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
        commits[commits.len() - 1]
    );

    // 8 families rotating at once (distinct families do not share a slot)
    let mut handles = Vec::new();
    clock.set(T0);
    for i in 0..8 {
        handles.push(
            rt.block_on(e.login(login(100 + i, 200)))
                .expect("login")
                .handle
                .value
                .expose()
                .to_string(),
        );
    }
    let rounds = N / 8;
    let start = Instant::now();
    for _ in 0..rounds {
        clock.advance(400);
        let results = rt.block_on(futures_util::future::join_all(
            handles.iter().map(|h| e.process(h, MAY)),
        ));
        for (h, r) in handles.iter_mut().zip(results) {
            let Ok(Lookup::Session(s)) = r else {
                panic!("rotation failed")
            };
            *h = s.set_handle.expect("successor").value.expose().to_string();
        }
    }
    let total = start.elapsed();
    println!(
        "vault/embedded_rotation (8 families concurrently, {}): {:.0} rotations/s",
        rounds * 8,
        (rounds * 8) as f64 / total.as_secs_f64()
    );
}

/// Live heap bytes per session in the memory store, minus the captured cookie bytes.
fn memory_bytes_per_session() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    const N: usize = 20_000;
    const COOKIE: usize = 200;
    let store = Arc::new(MemoryStore::new());
    let e = engine(store.clone(), Arc::new(ManualClock::new(T0)));
    // warm the map up to its final capacity class so growth slack is counted once
    let logins: Vec<NewLogin> = (0..N).map(|i| login(i, COOKIE)).collect();
    let before = LIVE.load(Ordering::Relaxed);
    for l in logins {
        let issued = rt.block_on(e.login(l)).expect("login");
        drop(issued);
    }
    let after = LIVE.load(Ordering::Relaxed);
    // the logins' own inputs were freed; what stays is the store
    let per = (after - before) as f64 / N as f64;
    let cookie = ("sid".len() + COOKIE) as f64;
    println!(
        "vault/memory_store_bytes_per_session ({N} sessions, {COOKIE}-byte captured cookie, subject + 2 claims): {per:.0} B total, {:.0} B excluding the captured cookie bytes (target ≤ 512)",
        per - cookie
    );
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    micro(&mut c);
    c.final_summary();
    memory_bytes_per_session();
    embedded_rotations();
}
