//! Both stores through the trait, and the embedded store's file handling: reopen,
//! corruption, truncation, a foreign file, handover, and a `kill -9` mid-write.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::embedded::EmbeddedStore;
use super::memory::MemoryStore;
use super::*;

fn record(subject: Option<&str>, created: u64) -> FamilyRecord {
    FamilyRecord::sample(subject, created, 40)
}

async fn contract(store: &dyn Store) {
    let a = FamilyId([1; 16]);
    let b = FamilyId([2; 16]);
    assert_eq!(store.get(&a).await.unwrap(), None);
    // create only if absent
    assert_eq!(
        store
            .compare_and_swap(&a, None, &record(Some("u1"), 100))
            .await
            .unwrap(),
        Cas::Written(1)
    );
    assert_eq!(
        store
            .compare_and_swap(&a, None, &record(Some("u1"), 100))
            .await
            .unwrap(),
        Cas::Conflict
    );
    let got = store.get(&a).await.unwrap().unwrap();
    assert_eq!(got.version, 1);
    assert_eq!(got.subject.as_deref(), Some("u1"));
    // a stale version loses, the current one wins
    let mut next = got.clone();
    next.generation = 1;
    assert_eq!(
        store.compare_and_swap(&a, Some(0), &next).await.unwrap(),
        Cas::Conflict
    );
    assert_eq!(
        store.compare_and_swap(&a, Some(1), &next).await.unwrap(),
        Cas::Written(2)
    );
    assert_eq!(
        store.compare_and_swap(&a, Some(1), &next).await.unwrap(),
        Cas::Conflict
    );
    assert_eq!(store.get(&a).await.unwrap().unwrap().generation, 1);

    // subject index, newest first, follows subject changes
    store
        .compare_and_swap(&b, None, &record(Some("u1"), 200))
        .await
        .unwrap();
    let ids: Vec<_> = store
        .by_subject("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    assert_eq!(ids, vec![b, a]);
    let mut moved = store.get(&b).await.unwrap().unwrap();
    moved.subject = Some("u2".into());
    store.compare_and_swap(&b, Some(1), &moved).await.unwrap();
    assert_eq!(store.by_subject("u1").await.unwrap().len(), 1);
    assert_eq!(store.by_subject("u2").await.unwrap()[0].0, b);
    assert!(store.by_subject("nobody").await.unwrap().is_empty());

    // cleanup: a is idle-expired at 100 + 1800; b (created 200) is live until 2000
    let c = store.cleanup(1_950).await.unwrap();
    assert_eq!(
        c,
        Cleaned {
            expired: 1,
            tombstones: 0,
            live: 1
        }
    );
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert!(store.by_subject("u1").await.unwrap().is_empty());
    // a tombstone stays until the absolute deadline, then goes
    let mut tomb = store.get(&b).await.unwrap().unwrap();
    tomb.revoked = Some(Revocation {
        reason: RevokeReason::Admin,
        at: 300,
    });
    store.compare_and_swap(&b, Some(2), &tomb).await.unwrap();
    assert_eq!(store.cleanup(5_000).await.unwrap(), Cleaned::default());
    assert!(store.get(&b).await.unwrap().is_some());
    let c = store.cleanup(200 + 43_200).await.unwrap();
    assert_eq!(c.tombstones, 1);
    assert_eq!(store.get(&b).await.unwrap(), None);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb"), DEFAULT_HANDOVER).unwrap();
    contract(&store).await;
}

#[tokio::test]
async fn embedded_store_keeps_records_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let id = FamilyId([5; 16]);
    {
        let store = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
        store
            .compare_and_swap(&id, None, &record(Some("u"), 10))
            .await
            .unwrap();
    }
    let store = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
    let r = store.get(&id).await.unwrap().unwrap();
    assert_eq!((r.version, r.subject.as_deref()), (1, Some("u")));
    assert_eq!(store.by_subject("u").await.unwrap().len(), 1);
}

fn open_error(path: &Path) -> StoreError {
    EmbeddedStore::open(path, DEFAULT_HANDOVER).unwrap_err()
}

#[test]
fn a_garbage_file_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    let e = open_error(&path);
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("corrupted"), "{msg}");
    // nothing was overwritten: the bytes are still there for a human to look at
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 64 * 1024]);
}

#[tokio::test]
async fn a_truncated_store_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
        for i in 0..200u8 {
            store
                .compare_and_swap(&FamilyId([i; 16]), None, &record(Some("u"), 10))
                .await
                .unwrap();
        }
    }
    let len = std::fs::metadata(&path).unwrap().len();
    for keep in [len / 2, 4096, 100] {
        let copy = dir.path().join(format!("cut-{keep}.redb"));
        std::fs::copy(&path, &copy).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(keep)
            .unwrap();
        match EmbeddedStore::open(&copy, DEFAULT_HANDOVER) {
            Err(e) => {
                assert!(matches!(e, StoreError::Corrupt { .. }), "{keep}: {e:?}");
                assert!(e.to_string().contains(&copy.display().to_string()));
            }
            Ok(s) => panic!("a store cut to {keep} of {len} bytes opened: {s:?}"),
        }
    }
}

#[test]
fn another_programs_redb_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("things"))
                .unwrap();
            t.insert("x", 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let e = open_error(&path);
    assert!(e.to_string().contains("another program"), "{e}");
}

#[tokio::test]
async fn a_held_file_is_handed_over_when_the_holder_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let old = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
    old.compare_and_swap(&FamilyId([1; 16]), None, &record(None, 1))
        .await
        .unwrap();
    // the new process's open returns at once, not ready, and answers Unavailable
    let new = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
    assert!(matches!(new.ready(), Err(StoreError::Unavailable(_))));
    assert!(matches!(
        new.wait_ready(Duration::from_millis(0)),
        Err(StoreError::Unavailable(_))
    ));
    drop(old);
    new.wait_ready(Duration::from_secs(30)).unwrap();
    assert!(new.ready().is_ok());
    assert!(new.get(&FamilyId([1; 16])).await.unwrap().is_some());
}

#[test]
fn a_holder_that_never_lets_go_ends_in_a_busy_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let _old = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
    let new = EmbeddedStore::open(&path, Duration::from_millis(0)).unwrap();
    // the retry thread gives up after its first attempt
    let e = loop {
        match new.wait_ready(Duration::from_secs(30)) {
            Err(StoreError::Unavailable(_)) => continue,
            other => break other.unwrap_err(),
        }
    };
    assert!(matches!(e, StoreError::Busy { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()));
}

/// The child half of the crash test: commits generations of one family forever,
/// printing each version after its commit returned.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var("ROTAGATE_CRASH_CHILD_STORE") else {
        return;
    };
    let store = EmbeddedStore::open(Path::new(&path), DEFAULT_HANDOVER).unwrap();
    let id = FamilyId([7; 16]);
    let mut version = None;
    let mut r = record(Some("crash"), 1);
    use std::io::Write;
    let mut out = std::io::stdout();
    loop {
        r.generation = r.generation.wrapping_add(1);
        match store.compare_and_swap_blocking(&id, version, &r).unwrap() {
            Cas::Written(v) => {
                version = Some(v);
                writeln!(out, "committed {v}").unwrap();
                out.flush().unwrap();
            }
            Cas::Conflict => panic!("single writer"),
        }
    }
}

#[test]
fn kill_9_mid_writes_loses_no_committed_record() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let exe = std::env::current_exe().unwrap();
    for round in 0..3 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "store::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ROTAGATE_CRASH_CHILD_STORE", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut last = 0u64;
        // let it commit a while, then kill it without warning, mid-write
        while last < 40 {
            let line = lines.next().expect("child output").unwrap();
            if let Some(v) = line.strip_prefix("committed ") {
                last = v.parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // every version the child reported committed is on disk (maybe one more)
        let store = EmbeddedStore::open(&path, DEFAULT_HANDOVER).unwrap();
        let r = store.get_blocking(&FamilyId([7; 16])).unwrap().unwrap();
        assert!(
            r.version >= last,
            "round {round}: reported {last}, found {}",
            r.version
        );
        assert_eq!(
            r.generation as u64, r.version,
            "round {round}: a torn record"
        );
        drop(store);
        // each round starts from an empty file (the child creates its record anew)
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn record_codec_round_trips_and_refuses_unknown_formats() {
    let r = record(Some("u"), 1);
    assert_eq!(FamilyRecord::decode(&r.encode()).unwrap(), r);
    let mut bad = r.encode();
    bad[0] = 9;
    assert!(FamilyRecord::decode(&bad).is_err());
    assert!(FamilyRecord::decode(&[]).is_err());
    assert!(FamilyRecord::decode(&r.encode()[..10]).is_err());
}

#[test]
fn family_ids_round_trip_through_hex() {
    let id = FamilyId([0xab; 16]);
    assert_eq!(FamilyId::from_hex(&id.to_hex()), Some(id));
    assert_eq!(FamilyId::from_hex("zz"), None);
    assert_eq!(FamilyId::from_hex(&"g".repeat(32)), None);
    let _ = Arc::new(MemoryStore::new());
}

#[test]
fn group_commits_keep_each_compare_and_swap_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb"), DEFAULT_HANDOVER).unwrap();
    // 8 threads each chain 25 versions of their own family, committed in shared groups
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let store = &store;
            s.spawn(move || {
                let id = FamilyId([t; 16]);
                let mut r = record(Some("g"), 1);
                let mut version = None;
                for _ in 0..25 {
                    r.generation += 1;
                    match store.compare_and_swap_blocking(&id, version, &r).unwrap() {
                        Cas::Written(v) => version = Some(v),
                        Cas::Conflict => panic!("own family"),
                    }
                }
            });
        }
    });
    for t in 0..8u8 {
        let r = store.get_blocking(&FamilyId([t; 16])).unwrap().unwrap();
        assert_eq!((r.version, r.generation), (25, 25));
    }
    // 8 threads race one version of one family: exactly one wins
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            let (store, wins) = (&store, &wins);
            s.spawn(move || {
                let mut r = store.get_blocking(&FamilyId([0; 16])).unwrap().unwrap();
                r.generation = 99;
                if store
                    .compare_and_swap_blocking(&FamilyId([0; 16]), Some(25), &r)
                    .unwrap()
                    == Cas::Written(26)
                {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1);
    assert_eq!(store.by_subject_blocking("g").unwrap().len(), 8);
}
