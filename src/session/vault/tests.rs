//! The vault engine against real stores with a manual clock (no sleeping): the cases of
//! DESIGN §4.2 and issue 11 point 6, decided without HTTP.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::store::embedded::EmbeddedStore;
use crate::store::memory::MemoryStore;
use crate::store::{Cas, Cleaned, FamilyRecord};

const T0: u64 = 1_793_491_200;
const SECRET_A: [u8; 32] = [0xa1; 32];
const SECRET_B: [u8; 32] = [0xb2; 32];

/// A store that counts round trips, yields like real I/O, and can be made to fail.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    gets: AtomicUsize,
    writes: AtomicUsize,
    fail: AtomicBool,
}

impl Counting {
    fn new(inner: Arc<dyn Store>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            gets: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        })
    }
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("test: store down".into()))
        } else {
            Ok(())
        }
    }
    fn counts(&self) -> (usize, usize) {
        (
            self.gets.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }
    fn reset(&self) {
        self.gets.store(0, Ordering::SeqCst);
        self.writes.store(0, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for Counting {
    fn ready(&self) -> Result<(), StoreError> {
        self.check()
    }
    async fn get(&self, id: &FamilyId) -> Result<Option<FamilyRecord>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.check()?;
        self.inner.get(id).await
    }
    async fn compare_and_swap(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &FamilyRecord,
    ) -> Result<Cas, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        self.check()?;
        self.inner.compare_and_swap(id, expected, record).await
    }
    async fn by_subject(&self, subject: &str) -> Result<Vec<(FamilyId, FamilyRecord)>, StoreError> {
        self.check()?;
        self.inner.by_subject(subject).await
    }
    async fn cleanup(&self, now: u64) -> Result<Cleaned, StoreError> {
        self.check()?;
        self.inner.cleanup(now).await
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}

impl Observer for Recorder {
    fn event(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
    fn store_latency(&self, _: StoreOp, _: f64) {}
    fn live_families(&self, _: u64) {}
}

struct Rig {
    engine: Arc<Engine>,
    clock: Arc<ManualClock>,
    store: Arc<Counting>,
    events: Arc<Recorder>,
}

fn settings(secrets: &[[u8; 32]]) -> VaultSettings {
    VaultSettings::with_secrets(secrets.iter().map(|s| Secret::new(s.to_vec())).collect())
}

fn rig_on(inner: Arc<dyn Store>, secrets: &[[u8; 32]], clock: Arc<ManualClock>) -> Rig {
    let store = Counting::new(inner);
    let events = Arc::new(Recorder::default());
    let engine = Engine::new(&settings(secrets), store.clone(), clock.clone())
        .unwrap()
        .with_observer(events.clone());
    Rig {
        engine: Arc::new(engine),
        clock,
        store,
        events,
    }
}

fn rig() -> Rig {
    rig_on(
        Arc::new(MemoryStore::new()),
        &[SECRET_A],
        Arc::new(ManualClock::new(T0)),
    )
}

const MAY: RequestOptions = RequestOptions { may_rotate: true };

fn login_of(sid: &str, subject: &str) -> NewLogin {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(subject));
    claims.insert("plan".into(), json!("pro"));
    NewLogin {
        cookies: vec![CapturedCookie::new("sid", sid.as_bytes().to_vec())],
        subject: Some(subject.into()),
        claims,
        limit: None,
    }
}

impl Rig {
    async fn login(&self) -> (FamilyId, String) {
        let issued = self
            .engine
            .login(login_of("app-sid-1", "user-1"))
            .await
            .unwrap();
        (issued.family, issued.handle.value.expose().to_string())
    }

    async fn record(&self, family: &FamilyId) -> FamilyRecord {
        self.store.inner.get(family).await.unwrap().unwrap()
    }

    /// Moves the clock to the exact instant the family's current generation is due.
    async fn to_rotation_instant(&self, family: &FamilyId) {
        let r = self.record(family).await;
        self.clock
            .set(r.rotated_at + self.engine.timing.rotation_interval(&r));
    }

    async fn session(&self, handle: &str) -> ActiveSession {
        match self.engine.process(handle, MAY).await.unwrap() {
            Lookup::Session(s) => *s,
            other => panic!("expected a session, got {other:?}"),
        }
    }

    /// Rotates the family by presenting `handle` at its rotation instant; the successor.
    async fn rotate(&self, family: &FamilyId, handle: &str) -> String {
        self.to_rotation_instant(family).await;
        let s = self.session(handle).await;
        assert_eq!(s.accepted, Accepted::Rotated);
        s.set_handle.unwrap().value.expose().to_string()
    }
}

fn cookies(s: &ActiveSession) -> Vec<(String, Vec<u8>)> {
    s.cookies
        .iter()
        .map(|c| (c.name.clone(), c.value.expose().to_vec()))
        .collect()
}

#[tokio::test]
async fn a_login_gives_a_handle_that_opens_the_app_cookies() {
    let r = rig();
    let (family, h0) = r.login().await;
    assert!(h0.starts_with("v1."));
    let s = r.session(&h0).await;
    assert_eq!(s.family, family);
    assert_eq!(s.accepted, Accepted::Current);
    assert_eq!(s.set_handle, None);
    assert_eq!(
        cookies(&s),
        vec![("sid".to_string(), b"app-sid-1".to_vec())]
    );
    assert_eq!(s.claims["plan"], json!("pro"));
    assert_eq!(s.subject.as_deref(), Some("user-1"));
    assert_eq!(s.max_age, 1800);
    // the store holds neither the handle secret nor the app cookie in plain
    let stored = r.record(&family).await.encode();
    assert!(!stored.windows(9).any(|w| w == b"app-sid-1"));
    assert_eq!(r.events.count(|e| *e == Event::Login), 1);
}

async fn fifty_at_the_rotation_instant(r: Rig) {
    let (family, h0) = r.login().await;
    r.to_rotation_instant(&family).await;
    r.store.reset();
    let answers = join_all((0..50).map(|_| r.engine.process(&h0, MAY))).await;
    let mut successors = Vec::new();
    for a in answers {
        let Lookup::Session(s) = a.unwrap() else {
            panic!("a parallel request lost its session");
        };
        assert_eq!(s.generation, 1);
        successors.push(
            s.set_handle
                .expect("every request carries the successor")
                .value,
        );
    }
    assert!(
        successors.windows(2).all(|w| w[0] == w[1]),
        "one byte-identical successor"
    );
    // one read and one compare-and-swap for the 50 requests
    assert_eq!(r.store.counts(), (1, 1));
    assert_eq!(r.events.count(|e| *e == Event::Rotation), 1);
    assert_eq!(
        r.events.count(|e| *e
            == Event::PredecessorAccepted {
                within_slack: false
            }),
        49
    );
    assert_eq!(r.record(&family).await.generation, 1);
    assert_eq!(r.engine.in_flight(), 0);
    // the successor works
    assert_eq!(
        r.session(successors[0].expose()).await.accepted,
        Accepted::Current
    );
}

#[tokio::test]
async fn fifty_parallel_requests_at_the_rotation_instant_share_one_rotation_memory() {
    fifty_at_the_rotation_instant(rig()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_requests_at_the_rotation_instant_share_one_rotation_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        EmbeddedStore::open(&dir.path().join("s.redb"), crate::store::DEFAULT_HANDOVER).unwrap();
    fifty_at_the_rotation_instant(rig_on(
        Arc::new(store),
        &[SECRET_A],
        Arc::new(ManualClock::new(T0)),
    ))
    .await;
}

#[tokio::test]
async fn a_lost_rotation_response_and_twenty_idle_minutes_still_work() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h1 = r.rotate(&family, &h0).await; // the response carrying h1 is lost
    r.clock.advance(20 * 60);
    let s = r.session(&h0).await;
    assert_eq!(s.accepted, Accepted::PredecessorUnseen);
    assert_eq!(
        s.set_handle.as_ref().unwrap().value.expose(),
        h1,
        "the same successor again"
    );
    assert_eq!(cookies(&s)[0].1, b"app-sid-1");
    // and the browser, now holding h1, carries on (h1 is due by now: it rotates)
    let s = r.session(&h1).await;
    assert_eq!((s.accepted, s.generation), (Accepted::Rotated, 2));
}

#[tokio::test]
async fn fan_out_with_the_old_handle_after_rotation_stays_logged_in() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h1 = r.rotate(&family, &h0).await;
    // one request with h1 came back first (successor seen) …
    r.clock.advance(1);
    r.session(&h1).await;
    // … while a server render fans out 8 requests with h0, within slack
    r.clock.advance(2);
    for a in join_all((0..8).map(|_| r.engine.process(&h0, MAY))).await {
        let Lookup::Session(s) = a.unwrap() else {
            panic!("fan-out request logged out");
        };
        assert_eq!(s.accepted, Accepted::PredecessorSlack);
        assert_eq!(s.set_handle.unwrap().value.expose(), h1);
    }
    assert_eq!(r.record(&family).await.predecessor_uses, 8);
}

#[tokio::test]
async fn replay_after_the_successor_was_seen_and_slack_passed_revokes() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h1 = r.rotate(&family, &h0).await;
    r.session(&h1).await; // the user's browser moved on
    r.clock.advance(11); // slack (10 s) passed
    match r.engine.process(&h0, MAY).await.unwrap() {
        Lookup::Revoked {
            family: f,
            reason,
            detected_now,
            subject,
        } => {
            assert_eq!(
                (f, reason, detected_now),
                (family, RevokeReason::Reuse, true)
            );
            assert_eq!(subject.as_deref(), Some("user-1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.events.count(|e| *e == Event::ReuseDetected), 1);
    // the tombstone keeps no credentials; the user's next request gets the logout
    let t = r.record(&family).await;
    assert!(t.credentials.ciphertext.is_empty());
    assert!(matches!(
        r.engine.process(&h1, MAY).await.unwrap(),
        Lookup::Revoked {
            detected_now: false,
            reason: RevokeReason::Reuse,
            ..
        }
    ));
}

#[tokio::test]
async fn more_than_64_predecessor_uses_within_slack_is_reuse() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h1 = r.rotate(&family, &h0).await;
    r.session(&h1).await;
    for _ in 0..MAX_PREDECESSOR_USES {
        assert_eq!(r.session(&h0).await.accepted, Accepted::PredecessorSlack);
    }
    assert!(matches!(
        r.engine.process(&h0, MAY).await.unwrap(),
        Lookup::Revoked {
            detected_now: true,
            ..
        }
    ));
}

#[tokio::test]
async fn a_thief_keeping_an_idle_session_alive_is_caught_when_the_user_comes_back() {
    let r = rig();
    let (family, user_h0) = r.login().await;
    // the thief copied h0 and keeps the session alive while the user is away
    let mut thief = user_h0.clone();
    for _ in 0..4 {
        thief = r.rotate(&family, &thief).await;
        r.clock.advance(1);
        r.session(&thief).await;
    }
    // the user comes back with the old handle: the family is revoked …
    assert!(matches!(
        r.engine.process(&user_h0, MAY).await.unwrap(),
        Lookup::Revoked {
            detected_now: true,
            reason: RevokeReason::Reuse,
            ..
        }
    ));
    // … and the thief is out too
    assert!(matches!(
        r.engine.process(&thief, MAY).await.unwrap(),
        Lookup::Revoked { .. }
    ));
}

#[tokio::test]
async fn a_handle_ahead_of_the_store_is_anonymous_never_a_revocation() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h = handle::Handle::verify(&h0, &r.engine.keys).unwrap();
    let ahead = handle::Handle { generation: 5, ..h }.mint(r.engine.keys.active());
    let a = r.engine.process(ahead.expose(), MAY).await.unwrap();
    assert!(matches!(a, Lookup::Anonymous(AnonReason::Ahead)));
    assert!(!AnonReason::Ahead.delete_cookie());
    assert_eq!(r.record(&family).await.revoked, None);
    assert_eq!(r.session(&h0).await.accepted, Accepted::Current);
}

#[tokio::test]
async fn bad_handles_are_anonymous_and_deleted_without_touching_the_store() {
    let r = rig();
    let (_, h0) = r.login().await;
    r.store.reset();
    let mut tampered = h0.clone().into_bytes();
    // a character inside the tag, not the last one: the last character of unpadded
    // base64 carries unused low bits, and 'A' → 'B' there made a non-canonical
    // encoding the strict decoder refuses as malformed (when the handle ended in 'A')
    let inside = tampered.len() - 2;
    tampered[inside] = if tampered[inside] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for (value, want) in [
        ("garbage", AnonReason::Malformed),
        (tampered.as_str(), AnonReason::BadTag),
    ] {
        match r.engine.process(value, MAY).await.unwrap() {
            Lookup::Anonymous(reason) => {
                assert_eq!(reason, want);
                assert!(reason.delete_cookie());
            }
            other => panic!("{other:?}"),
        }
    }
    let other_key = rig_on(
        Arc::new(MemoryStore::new()),
        &[SECRET_B],
        Arc::new(ManualClock::new(T0)),
    );
    let (_, foreign) = other_key.login().await;
    assert!(matches!(
        r.engine.process(&foreign, MAY).await.unwrap(),
        Lookup::Anonymous(AnonReason::UnknownKid | AnonReason::BadTag)
    ));
    assert_eq!(r.store.counts(), (0, 0));
}

#[tokio::test]
async fn idle_and_absolute_limits_end_the_session() {
    let r = rig();
    let (_, h0) = r.login().await;
    r.clock.advance(1800);
    assert!(matches!(
        r.engine.process(&h0, MAY).await.unwrap(),
        Lookup::Anonymous(AnonReason::Expired)
    ));
    // the app cookie's own Max-Age caps the family
    let mut login = login_of("x", "u");
    login.limit = Some(r.clock.now_unix() + 600);
    let issued = r.engine.login(login).await.unwrap();
    assert_eq!(issued.handle.max_age, 600);
    r.clock.advance(599);
    let s = r.session(issued.handle.value.expose()).await;
    assert_eq!(s.max_age, 1);
    r.clock.advance(1);
    assert!(matches!(
        r.engine
            .process(issued.handle.value.expose(), MAY)
            .await
            .unwrap(),
        Lookup::Anonymous(AnonReason::Expired)
    ));
}

#[tokio::test]
async fn activity_keeps_the_idle_limit_moving() {
    let r = rig();
    let (family, mut h) = r.login().await;
    // an hour of requests every 4 minutes, rotating as it goes, never idle 30 min
    for _ in 0..15 {
        r.clock.advance(240);
        let s = r.session(&h).await;
        if let Some(new) = s.set_handle {
            h = new.value.expose().to_string();
        }
    }
    assert!(r.record(&family).await.generation >= 6);
    assert_eq!(r.session(&h).await.max_age, 1800);
}

#[tokio::test]
async fn prefetches_never_rotate_but_a_predecessor_still_gets_the_successor() {
    let r = rig();
    let (family, h0) = r.login().await;
    r.to_rotation_instant(&family).await;
    let no = RequestOptions { may_rotate: false };
    let Lookup::Session(s) = r.engine.process(&h0, no).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (s.accepted, s.set_handle.is_none()),
        (Accepted::Current, true)
    );
    let h1 = r.rotate(&family, &h0).await;
    let Lookup::Session(s) = r.engine.process(&h0, no).await.unwrap() else {
        panic!()
    };
    assert_eq!(s.set_handle.unwrap().value.expose(), h1);
}

#[tokio::test]
async fn rotation_jitter_is_within_ten_percent_and_the_same_on_every_node() {
    let r = rig();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (family, _) = r.login().await;
        let rec = r.record(&family).await;
        let i = r.engine.timing.rotation_interval(&rec);
        assert!((270..=330).contains(&i), "{i}");
        assert_eq!(i, r.engine.timing.rotation_interval(&rec.clone()));
        seen.insert(i);
    }
    assert!(seen.len() > 5, "families spread out: {seen:?}");
}

#[tokio::test]
async fn an_out_of_order_response_is_not_current_any_more() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h1 = r.rotate(&family, &h0).await;
    assert!(r.engine.is_current(&family, 1).await.unwrap());
    let _h2 = r.rotate(&family, &h1).await;
    // a slow response still carrying h1 must not roll the browser back
    assert!(!r.engine.is_current(&family, 1).await.unwrap());
    assert!(r.engine.is_current(&family, 2).await.unwrap());
    r.engine
        .revoke_family(&family, RevokeReason::Admin)
        .await
        .unwrap();
    assert!(!r.engine.is_current(&family, 2).await.unwrap());
}

#[tokio::test]
async fn a_store_error_is_an_error_and_nothing_is_revoked() {
    let r = rig();
    let (family, h0) = r.login().await;
    let h1 = r.rotate(&family, &h0).await;
    r.session(&h1).await;
    r.clock.advance(60);
    r.store.fail.store(true, Ordering::SeqCst);
    // even a would-be reuse gets only the error while the store is down
    assert!(matches!(
        r.engine.process(&h0, MAY).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(r.engine.process(&h1, MAY).await.is_err());
    r.store.fail.store(false, Ordering::SeqCst);
    assert_eq!(r.record(&family).await.revoked, None);
    assert_eq!(r.session(&h1).await.accepted, Accepted::Current);
}

#[tokio::test]
async fn key_rollover_with_live_families_logs_nobody_out() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(T0));
    let old = rig_on(store.clone(), &[SECRET_A], clock.clone());
    let (family, h0) = old.login().await;
    let (other_family, other_h0) = old.login().await;
    // a rotation under A, so a predecessor exists, then the new secret goes first
    let h1 = old.rotate(&family, &h0).await;
    let rolled = rig_on(store.clone(), &[SECRET_B, SECRET_A], clock.clone());
    // the predecessor still gets the byte-identical successor (minted under A's kid,
    // like the response that rotated it)
    assert_eq!(
        rolled.session(&h0).await.set_handle.unwrap().value.expose(),
        h1
    );
    assert_eq!(rolled.session(&h1).await.accepted, Accepted::Current);
    // at its next rotation the family moves to B, credentials too
    let h2 = rolled.rotate(&family, &h1).await;
    let minted = handle::Handle::verify(&h2, &rolled.engine.keys).unwrap();
    assert_eq!(minted.kid, rolled.engine.keys.active().kid);
    let rec = rolled.record(&family).await;
    assert_eq!(rec.credentials.kid, rolled.engine.keys.active().kid);
    // the other family rotates under the new key list too, nobody was logged out
    let s = rolled.session(&other_h0).await;
    assert_eq!(
        s.accepted,
        Accepted::Rotated,
        "it was due: rotated under the new list"
    );
    let other_h1 = s.set_handle.unwrap().value.expose().to_string();
    assert_eq!(
        rolled.record(&other_family).await.credentials.kid,
        rolled.engine.keys.active().kid
    );
    // once every family has rotated, A can go
    let only_b = rig_on(store, &[SECRET_B], clock);
    let s = only_b.session(&h2).await;
    assert_eq!(cookies(&s)[0].1, b"app-sid-1");
    assert_eq!(only_b.session(&other_h1).await.accepted, Accepted::Current);
}

#[tokio::test]
async fn a_restart_on_the_embedded_store_keeps_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let clock = Arc::new(ManualClock::new(T0));
    let mut handles = Vec::new();
    {
        let store = EmbeddedStore::open(&path, crate::store::DEFAULT_HANDOVER).unwrap();
        let r = rig_on(Arc::new(store), &[SECRET_A], clock.clone());
        for _ in 0..5 {
            let (family, h0) = r.login().await;
            handles.push((family, r.rotate(&family, &h0).await));
            clock.set(T0);
        }
    }
    let store = EmbeddedStore::open(&path, crate::store::DEFAULT_HANDOVER).unwrap();
    let r = rig_on(Arc::new(store), &[SECRET_A], clock.clone());
    for (family, h) in &handles {
        let s = r.session(h).await;
        assert_eq!((&s.family, s.generation), (family, 1));
        assert_eq!(cookies(&s)[0].1, b"app-sid-1");
    }
}

#[tokio::test]
async fn app_updates_keep_the_family_and_a_new_subject_starts_a_new_one() {
    let r = rig();
    let (family, h0) = r.login().await;
    let s = r.session(&h0).await;
    let update = |sid: &str, subject: Option<&str>| CredentialUpdate {
        cookies: if sid.is_empty() {
            Vec::new()
        } else {
            vec![CapturedCookie::new("sid", sid.as_bytes().to_vec())]
        },
        subject: subject.map(str::to_string),
        claims: None,
        limit: None,
    };
    assert!(matches!(
        r.engine
            .update(&s, update("app-sid-2", Some("user-1")))
            .await
            .unwrap(),
        Updated::Same
    ));
    let s = r.session(&h0).await;
    assert_eq!(cookies(&s)[0].1, b"app-sid-2");
    assert_eq!(s.claims["plan"], json!("pro"), "claims kept");
    // another user's session on this browser: no fixation, a new family
    let Updated::NewFamily(issued) = r
        .engine
        .update(&s, update("sid-of-2", Some("user-2")))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_ne!(issued.family, family);
    assert!(matches!(
        r.engine.process(&h0, MAY).await.unwrap(),
        Lookup::Revoked {
            reason: RevokeReason::SubjectChanged,
            ..
        }
    ));
    let s2 = r.session(issued.handle.value.expose()).await;
    assert_eq!(s2.subject.as_deref(), Some("user-2"));
    // the app deleting its cookie revokes the family
    assert!(matches!(
        r.engine.update(&s2, update("", None)).await.unwrap(),
        Updated::Revoked
    ));
    assert!(matches!(
        r.engine
            .process(issued.handle.value.expose(), MAY)
            .await
            .unwrap(),
        Lookup::Revoked {
            reason: RevokeReason::AppLogout,
            ..
        }
    ));
    assert!(matches!(
        r.engine.update(&s2, update("x", None)).await.unwrap(),
        Updated::Gone
    ));
}

#[tokio::test]
async fn operators_list_and_revoke_by_subject() {
    let r = rig();
    let (a, ha) = r.login().await;
    r.clock.advance(5);
    let (b, _) = r.login().await;
    let other = r.engine.login(login_of("z", "user-9")).await.unwrap();
    let list = r.engine.list_subject("user-1").await.unwrap();
    assert_eq!(
        list.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        vec![b.to_hex(), a.to_hex()]
    );
    assert_eq!(list[1].created, T0);
    assert!(!serde_json::to_string(&list).unwrap().contains("app-sid"));
    assert_eq!(
        r.engine
            .revoke_subject("user-1", RevokeReason::Admin)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        r.engine.process(&ha, MAY).await.unwrap(),
        Lookup::Revoked {
            reason: RevokeReason::Admin,
            ..
        }
    ));
    assert_eq!(
        r.engine.list_subject("user-1").await.unwrap()[0].revoked,
        Some("admin")
    );
    assert_eq!(
        r.session(other.handle.value.expose())
            .await
            .subject
            .as_deref(),
        Some("user-9")
    );
    assert!(!r
        .engine
        .revoke_family(&a, RevokeReason::Admin)
        .await
        .unwrap());
}

#[tokio::test]
async fn the_upstream_can_ask_for_a_rotation() {
    let r = rig();
    let (family, h0) = r.login().await;
    let s = r.session(&h0).await;
    let new = r.engine.rotate_now(&s).await.unwrap().unwrap();
    assert_eq!(new.generation, 1);
    assert_eq!(
        r.session(new.value.expose()).await.accepted,
        Accepted::Current
    );
    // a second ask with the old session: another rotation already happened
    assert_eq!(r.engine.rotate_now(&s).await.unwrap(), None);
    assert_eq!(r.record(&family).await.generation, 1);
}

#[tokio::test]
async fn cleanup_removes_expired_families_and_counts_the_live() {
    let r = rig();
    r.login().await;
    r.clock.advance(1000);
    r.login().await;
    r.clock.advance(900);
    let c = r.engine.cleanup_now().await.unwrap();
    assert_eq!((c.expired, c.live), (1, 1));
}

#[test]
fn settings_are_checked() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(T0));
    let mut s = settings(&[SECRET_A]);
    s.slack = Duration::from_secs(61);
    assert_eq!(
        Engine::new(&s, store.clone(), clock.clone()).unwrap_err(),
        VaultError::SlackTooLong(61)
    );
    let mut s = settings(&[SECRET_A]);
    s.rotate_every = Duration::ZERO;
    assert_eq!(
        Engine::new(&s, store, clock).unwrap_err().to_string(),
        "`session.rotate_every`: must be longer than zero"
    );
}
