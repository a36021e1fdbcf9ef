//! Vault mode's engine (DESIGN §4.2–4.4): the browser holds only a rotating handle; the
//! app's own cookies stay server-side, sealed, in a [`Store`].
//!
//! The engine knows nothing of HTTP: the proxy glue finds the handle cookie, calls
//! [`Engine::process`] once per request, and writes out what it answers (inject the
//! decrypted app cookies upstream, append the handle `Set-Cookie`, run the logout flow,
//! answer 503 on a store error). Logins, app updates of captured cookies and operator
//! revocations are further calls.
//!
//! Rooms: [`handle`] (the cookie codec), [`keys`] (HKDF purpose keys, kids),
//! [`creds`] (AES-256-GCM sealing of captured cookies), [`decide`] (the per-request
//! algorithm as a pure function of record, handle and time), [`flight`] (per-family
//! single-flight), this file (the engine that ties them to a store).

pub mod creds;
pub mod decide;
pub mod flight;
pub mod handle;
pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::secret::Secret;
use crate::store::{FamilyId, RevokeReason, Store, StoreError};

pub use creds::CapturedCookie;
pub use handle::HandleValue;

/// Most predecessor requests accepted after the successor was first seen (DESIGN §4.2).
pub const MAX_PREDECESSOR_USES: u32 = 64;
/// Longest `slack` allowed.
pub const MAX_SLACK: Duration = Duration::from_secs(60);
/// Shortest vault secret.
pub const MIN_SECRET_LEN: usize = 32;

/// What the engine is built from (validated config values).
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// `session.vault.secrets`: the first is active (mints handles, seals credentials),
    /// all verify. Each ≥ [`MIN_SECRET_LEN`] bytes.
    pub secrets: Vec<Secret>,
    /// `session.rotate_every` (±10 % jitter, deterministic per family and generation).
    pub rotate_every: Duration,
    /// `session.idle_timeout`.
    pub idle_timeout: Duration,
    /// `session.absolute_timeout`.
    pub absolute_timeout: Duration,
    /// `session.slack` (≤ [`MAX_SLACK`]).
    pub slack: Duration,
}

impl VaultSettings {
    /// The defaults of DESIGN §4.2 with these secrets: rotate 5 min, idle 30 min,
    /// absolute 12 h, slack 10 s.
    pub fn with_secrets(secrets: Vec<Secret>) -> VaultSettings {
        VaultSettings {
            secrets,
            rotate_every: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(1800),
            absolute_timeout: Duration::from_secs(12 * 3600),
            slack: Duration::from_secs(10),
        }
    }
}

/// Why settings cannot make an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// No secret.
    #[error("`session.vault.secrets`: at least one secret is required")]
    NoSecret,
    /// A secret is too short (its position in the list, its length; never its value).
    #[error("`session.vault.secrets[{index}]`: a vault secret needs at least {MIN_SECRET_LEN} bytes; found {len}")]
    ShortSecret {
        /// Position in the list.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// `slack` above [`MAX_SLACK`].
    #[error("`session.slack`: at most 60 s; found {0} s")]
    SlackTooLong(u64),
    /// A zero duration where a positive one is needed.
    #[error("`session.{0}`: must be longer than zero")]
    Zero(&'static str),
}

/// How a request's handle was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// The current generation, not due for rotation (no `Set-Cookie`).
    Current,
    /// The current generation, rotated by this request (`Set-Cookie` with the successor).
    Rotated,
    /// The immediate predecessor while its successor was never presented (a lost or
    /// aborted response): gets the byte-identical successor.
    PredecessorUnseen,
    /// The immediate predecessor within `slack` of the successor's first use (parallel
    /// requests, several tabs): gets the byte-identical successor.
    PredecessorSlack,
}

/// A handle cookie to append: `value` for the configured cookie name, with
/// `Max-Age = max_age` (what is left of the idle and absolute limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleCookie {
    /// The cookie value (redacting `Debug`).
    pub value: HandleValue,
    /// Seconds.
    pub max_age: u64,
    /// The generation this cookie carries (for [`Engine::is_current`] when the response
    /// goes out).
    pub generation: u32,
}

/// A live session found by [`Engine::process`].
#[derive(Debug, Clone)]
pub struct ActiveSession {
    /// The family.
    pub family: FamilyId,
    /// The generation the browser holds once this response is applied.
    pub generation: u32,
    /// How the handle was accepted.
    pub accepted: Accepted,
    /// The app's user, when known.
    pub subject: Option<String>,
    /// Claims for access rules.
    pub claims: Arc<Map<String, Value>>,
    /// The captured app cookies, decrypted, to inject into the upstream `Cookie` header.
    pub cookies: Vec<CapturedCookie>,
    /// The handle `Set-Cookie` to append, when the browser needs a new handle
    /// (rotated, or a predecessor caught up). Emit it only if
    /// [`Engine::is_current`]`(family, set_handle.generation)` still holds when the
    /// response goes out.
    pub set_handle: Option<HandleCookie>,
    /// Seconds left of the idle and absolute limits after this request.
    pub max_age: u64,
    /// The handle the browser holds after this response (for [`Engine::rotate_now`]).
    pub(crate) current: handle::Handle,
}

/// Why a request is anonymous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnonReason {
    /// Not a handle (shape, base64, version).
    Malformed,
    /// The tag did not verify.
    BadTag,
    /// The kid names no configured secret.
    UnknownKid,
    /// Idle or absolute deadline passed.
    Expired,
    /// No record of the family (cleaned up, or a store restored from an older backup).
    UnknownFamily,
    /// The handle's generation is ahead of the record (a store restored from a backup, a
    /// write lost on failover): never a reason to revoke.
    Ahead,
    /// The handle verified but its secret is not the record's (should not happen;
    /// counted, never a revocation).
    SecretMismatch,
    /// The record was derived under a secret no longer configured.
    KeyRetired,
}

impl AnonReason {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AnonReason::Malformed => "malformed",
            AnonReason::BadTag => "bad_tag",
            AnonReason::UnknownKid => "unknown_kid",
            AnonReason::Expired => "expired",
            AnonReason::UnknownFamily => "unknown_family",
            AnonReason::Ahead => "ahead",
            AnonReason::SecretMismatch => "secret_mismatch",
            AnonReason::KeyRetired => "key_retired",
        }
    }

    /// True when the glue deletes the handle cookie in the browser: it is certainly
    /// dead (not ours, or expired). Causes that may be rotagate's own (its store, its
    /// keys) keep the cookie (DESIGN §10: fail open for sessions).
    pub fn delete_cookie(self) -> bool {
        matches!(
            self,
            AnonReason::Malformed
                | AnonReason::BadTag
                | AnonReason::UnknownKid
                | AnonReason::Expired
        )
    }
}

/// The engine's answer for one request.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No session: forward without app cookies. Delete the handle cookie when
    /// [`AnonReason::delete_cookie`] says so.
    Anonymous(AnonReason),
    /// A live session.
    Session(Box<ActiveSession>),
    /// The family is revoked: run the logout flow (delete the handle, the login answer).
    /// `detected_now` is true when this very request was the reuse that revoked it (log
    /// the security event).
    Revoked {
        /// The family.
        family: FamilyId,
        /// Why it was revoked.
        reason: RevokeReason,
        /// This request caused the revocation (a reuse).
        detected_now: bool,
        /// The app's user, when known (for the security log line).
        subject: Option<String>,
    },
}

/// Per-request options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// False for prefetches, HEAD/OPTIONS and WebSocket upgrades (see
    /// [`crate::session::rotation_allowed`]): their responses may never reach the
    /// browser, so they never rotate. A predecessor is still accepted and still gets
    /// the successor cookie.
    pub may_rotate: bool,
}

/// A login: the upstream set a captured cookie on a request without a valid handle.
#[derive(Debug, Clone)]
pub struct NewLogin {
    /// The captured cookies (every chunk and twin the app set), values as set.
    pub cookies: Vec<CapturedCookie>,
    /// The app's user (from `x-rotagate-claims` `sub`, or a readable captured token).
    pub subject: Option<String>,
    /// Claims for access rules.
    pub claims: Map<String, Value>,
    /// The captured cookie's own end (Unix seconds, from its `Max-Age`/`Expires`), which
    /// caps the family's absolute deadline. `None`: a session cookie, no cap.
    pub limit: Option<u64>,
}

/// A family just created.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The new family.
    pub family: FamilyId,
    /// The handle cookie to append.
    pub handle: HandleCookie,
}

/// The app changed its captured cookies on a request of a live session.
#[derive(Debug, Clone)]
pub struct CredentialUpdate {
    /// The full new set of captured cookies (the glue merges the response's
    /// `Set-Cookie`s into [`ActiveSession::cookies`]). Empty: the app deleted them, the
    /// family is revoked ([`RevokeReason::AppLogout`]).
    pub cookies: Vec<CapturedCookie>,
    /// The subject the new cookies carry, when known. A different subject than the
    /// family's starts a new family (no session fixation).
    pub subject: Option<String>,
    /// New claims, when the app sent them (`None`: keep).
    pub claims: Option<Map<String, Value>>,
    /// The new cookies' own end (see [`NewLogin::limit`]).
    pub limit: Option<u64>,
}

/// What [`Engine::update`] did.
#[derive(Debug, Clone)]
pub enum Updated {
    /// The record now holds the new cookies; the handle is unchanged.
    Same,
    /// The subject changed: the old family is revoked, this is the new one (append its
    /// handle).
    NewFamily(Issued),
    /// The app deleted its cookies: the family is revoked; delete the handle cookie.
    Revoked,
    /// The family was not live any more (revoked or expired meanwhile): nothing written.
    Gone,
}

/// One family as the admin API lists it (never secrets).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FamilySummary {
    /// Family id (hex).
    pub id: String,
    /// The subject.
    pub subject: Option<String>,
    /// Login time (Unix seconds).
    pub created: u64,
    /// Last request (Unix seconds, to the touch interval).
    pub last_seen: u64,
    /// Current generation.
    pub generation: u32,
    /// Revocation reason, for a tombstone.
    pub revoked: Option<&'static str>,
}

/// Things to count (the glue maps them to Prometheus metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A family rotated to a new generation.
    Rotation,
    /// A predecessor accepted; `within_slack` false = the successor was never seen.
    PredecessorAccepted {
        /// After the successor was seen (within `slack`), or never seen.
        within_slack: bool,
    },
    /// A handle presented outside the accepted window.
    ReuseDetected,
    /// A family revoked, by reason.
    Revoked(RevokeReason),
    /// A compare-and-swap lost to another writer (then re-read and decided again).
    CasConflict,
    /// A request treated as anonymous, by reason.
    Anonymous(AnonReason),
    /// A family created.
    Login,
}

/// Store operations timed for the latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// A read.
    Get,
    /// A compare-and-swap (durable write).
    Cas,
    /// A subject listing.
    List,
    /// A cleanup pass.
    Cleanup,
}

impl StoreOp {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::Cas => "cas",
            StoreOp::List => "list",
            StoreOp::Cleanup => "cleanup",
        }
    }
}

/// Receives the engine's events (implemented by the glue over its metrics). Calls are
/// made inline: keep them cheap (counter increments).
pub trait Observer: Send + Sync {
    /// One event happened.
    fn event(&self, event: Event);
    /// A store operation took `seconds`.
    fn store_latency(&self, op: StoreOp, seconds: f64);
    /// The number of live families (after a cleanup pass, and adjusted on login and
    /// revocation in between).
    fn live_families(&self, count: u64);
}

/// An observer that drops everything (tests, benches).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn event(&self, _: Event) {}
    fn store_latency(&self, _: StoreOp, _: f64) {}
    fn live_families(&self, _: u64) {}
}

/// The vault engine of one configuration. Cheap to rebuild on a config reload with the
/// same `Arc<dyn Store>` (the store is opened once per process).
pub struct Engine {
    keys: keys::Keys,
    timing: decide::Timing,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    observer: Arc<dyn Observer>,
    flights: flight::Flights,
    /// Live families: set by each cleanup pass, adjusted by logins and revocations.
    live: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("vault::Engine")
            .field("timing", &self.timing)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Longest compare-and-swap retries of one request before it gives up with 503 (each
/// retry means another writer won; more than a few is a store problem, not a race).
const MAX_CAS_ATTEMPTS: usize = 8;

fn random32() -> Result<[u8; 32], StoreError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| StoreError::Unavailable("the system random generator failed".into()))?;
    Ok(out)
}

fn claims_json(claims: &Map<String, Value>) -> Vec<u8> {
    if claims.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(claims).unwrap_or_default()
    }
}

fn parse_claims(bytes: &[u8]) -> Map<String, Value> {
    if bytes.is_empty() {
        return Map::new();
    }
    serde_json::from_slice(bytes).unwrap_or_default()
}

impl Engine {
    /// Builds the engine. Errors name the config key and never print a secret.
    pub fn new(
        settings: &VaultSettings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine, VaultError> {
        let secs = |d: Duration| d.as_secs();
        if settings.slack > MAX_SLACK {
            return Err(VaultError::SlackTooLong(settings.slack.as_secs()));
        }
        for (key, d) in [
            ("rotate_every", settings.rotate_every),
            ("idle_timeout", settings.idle_timeout),
            ("absolute_timeout", settings.absolute_timeout),
        ] {
            if d.as_secs() == 0 {
                return Err(VaultError::Zero(key));
            }
        }
        Ok(Engine {
            keys: keys::Keys::new(settings)?,
            timing: decide::Timing {
                rotate_every: secs(settings.rotate_every),
                idle: secs(settings.idle_timeout),
                absolute: secs(settings.absolute_timeout),
                slack: secs(settings.slack),
            },
            store,
            clock,
            observer: Arc::new(NoObserver),
            flights: flight::Flights::default(),
            live: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Sends events and store latencies to `observer` (default: dropped).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Engine {
        self.observer = observer;
        self
    }

    /// The store (for `/readyz`: [`Store::ready`]).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Families with a request in flight now (tests of the single-flight).
    pub fn in_flight(&self) -> usize {
        self.flights.in_flight()
    }

    async fn get(&self, id: &FamilyId) -> Result<Option<crate::store::FamilyRecord>, StoreError> {
        let t = std::time::Instant::now();
        let r = self.store.get(id).await;
        self.observer
            .store_latency(StoreOp::Get, t.elapsed().as_secs_f64());
        r
    }

    async fn cas(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &crate::store::FamilyRecord,
    ) -> Result<crate::store::Cas, StoreError> {
        let t = std::time::Instant::now();
        let r = self.store.compare_and_swap(id, expected, record).await;
        self.observer
            .store_latency(StoreOp::Cas, t.elapsed().as_secs_f64());
        if r == Ok(crate::store::Cas::Conflict) {
            self.observer.event(Event::CasConflict);
        }
        r
    }

    fn anonymous(&self, reason: AnonReason) -> Lookup {
        self.observer.event(Event::Anonymous(reason));
        Lookup::Anonymous(reason)
    }

    fn live_add(&self, n: i64) {
        use std::sync::atomic::Ordering;
        let v = if n >= 0 {
            self.live.fetch_add(n as u64, Ordering::Relaxed) + n as u64
        } else {
            let m = n.unsigned_abs();
            let old = self
                .live
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(m))
                })
                .unwrap_or(0);
            old.saturating_sub(m)
        };
        self.observer.live_families(v);
    }

    fn cookie_for(
        &self,
        handle: &handle::Handle,
        record: &crate::store::FamilyRecord,
        now: u64,
    ) -> HandleCookie {
        HandleCookie {
            value: handle.mint_own(&self.keys),
            max_age: record.expires_at().saturating_sub(now),
            generation: handle.generation,
        }
    }

    /// The per-request decision for the handle cookie's value (DESIGN §4.2). A store
    /// error is returned as is: answer 503, clear nothing, revoke nothing.
    pub async fn process(
        &self,
        handle: &str,
        options: RequestOptions,
    ) -> Result<Lookup, StoreError> {
        let h = match handle::Handle::verify(handle, &self.keys) {
            Ok(h) => h,
            Err(reason) => return Ok(self.anonymous(reason)),
        };
        let mut ticket = self.flights.join(h.family);
        let mut slot = ticket.lock().await;
        let result = self.process_in_slot(&h, options, &mut slot).await;
        if ticket.leave() && slot.dirty {
            self.flush(&h.family, &mut slot).await;
        }
        result
    }

    /// Writes a slot's soft changes (the last request of a burst does): a conflict or an
    /// error drops them, which only makes later requests more lenient.
    async fn flush(&self, family: &FamilyId, slot: &mut flight::SlotState) {
        slot.dirty = false;
        if let Some(Some(record)) = slot.cached.take() {
            if let Err(e) = self.cas(family, Some(record.version), &record).await {
                tracing::warn!(error = %e, "vault: bookkeeping write failed (harmless)");
            }
        }
    }

    async fn cached_record(
        &self,
        family: &FamilyId,
        slot: &mut flight::SlotState,
    ) -> Result<Option<crate::store::FamilyRecord>, StoreError> {
        if let Some(r) = &slot.cached {
            return Ok(r.clone());
        }
        let r = self.get(family).await?;
        slot.cached = Some(r.clone());
        slot.dirty = false;
        Ok(r)
    }

    /// Writes `record` durably through the slot; `false` on a lost compare-and-swap
    /// (the slot is then re-read).
    async fn hard_write(
        &self,
        family: &FamilyId,
        expected: Option<u64>,
        mut record: crate::store::FamilyRecord,
        slot: &mut flight::SlotState,
    ) -> Result<Option<crate::store::FamilyRecord>, StoreError> {
        // invalidate first: a request cancelled during the write leaves the next one to
        // read the store instead of trusting a record that may be stale
        slot.cached = None;
        slot.dirty = false;
        match self.cas(family, expected, &record).await? {
            crate::store::Cas::Written(v) => {
                record.version = v;
                slot.cached = Some(Some(record.clone()));
                Ok(Some(record))
            }
            crate::store::Cas::Conflict => Ok(None),
        }
    }

    async fn process_in_slot(
        &self,
        h: &handle::Handle,
        options: RequestOptions,
        slot: &mut flight::SlotState,
    ) -> Result<Lookup, StoreError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(record) = self.cached_record(&h.family, slot).await? else {
                return Ok(self.anonymous(AnonReason::UnknownFamily));
            };
            let now = self.clock.now_unix();
            let verdict = decide::judge(
                &record,
                h,
                now,
                &self.timing,
                &self.keys,
                options.may_rotate,
                random32()?,
            );
            match verdict {
                decide::Verdict::Anonymous(reason) => return Ok(self.anonymous(reason)),
                decide::Verdict::Tombstone(reason) => {
                    return Ok(Lookup::Revoked {
                        family: h.family,
                        reason,
                        detected_now: false,
                        subject: record.subject.clone(),
                    })
                }
                decide::Verdict::Reuse(tomb) => {
                    if self
                        .hard_write(&h.family, Some(record.version), tomb, slot)
                        .await?
                        .is_none()
                    {
                        continue;
                    }
                    self.observer.event(Event::ReuseDetected);
                    self.observer.event(Event::Revoked(RevokeReason::Reuse));
                    self.live_add(-1);
                    return Ok(Lookup::Revoked {
                        family: h.family,
                        reason: RevokeReason::Reuse,
                        detected_now: true,
                        subject: record.subject.clone(),
                    });
                }
                decide::Verdict::Accept {
                    accepted,
                    current,
                    write,
                } => {
                    let after = match write {
                        decide::Write::None => record,
                        decide::Write::Soft(next) => {
                            slot.cached = Some(Some(next.clone()));
                            slot.dirty = true;
                            next
                        }
                        decide::Write::Hard(next) => {
                            match self
                                .hard_write(&h.family, Some(record.version), next, slot)
                                .await?
                            {
                                Some(written) => written,
                                None => continue,
                            }
                        }
                    };
                    match accepted {
                        Accepted::Rotated => self.observer.event(Event::Rotation),
                        Accepted::PredecessorUnseen => {
                            self.observer.event(Event::PredecessorAccepted {
                                within_slack: false,
                            })
                        }
                        Accepted::PredecessorSlack => self
                            .observer
                            .event(Event::PredecessorAccepted { within_slack: true }),
                        Accepted::Current => {}
                    }
                    let cookies = match creds::open(&self.keys, &h.family, &after.credentials) {
                        Ok(c) => c,
                        Err(creds::OpenError::UnknownKid) => {
                            return Ok(self.anonymous(AnonReason::KeyRetired))
                        }
                        Err(creds::OpenError::Corrupt) => {
                            return Ok(self.anonymous(AnonReason::SecretMismatch))
                        }
                    };
                    let set_handle = (accepted != Accepted::Current)
                        .then(|| self.cookie_for(&current, &after, now));
                    return Ok(Lookup::Session(Box::new(ActiveSession {
                        family: h.family,
                        generation: current.generation,
                        accepted,
                        subject: after.subject.clone(),
                        claims: Arc::new(parse_claims(&after.claims)),
                        cookies,
                        set_handle,
                        max_age: after.expires_at().saturating_sub(now),
                        current,
                    })));
                }
            }
        }
        Err(StoreError::Unavailable(
            "too many concurrent writers for one family".into(),
        ))
    }

    fn new_record(
        &self,
        family: &FamilyId,
        secret: &[u8; 32],
        login: &NewLogin,
        now: u64,
    ) -> Result<crate::store::FamilyRecord, StoreError> {
        let absolute = now.saturating_add(self.timing.absolute);
        Ok(crate::store::FamilyRecord {
            version: 0,
            generation: 0,
            current_digest: decide::digest(secret),
            previous_digest: None,
            successor_r: random32()?,
            previous_r: [0; 32],
            derive_kid: self.keys.active().kid,
            rotated_at: now,
            successor_seen_at: None,
            predecessor_uses: 0,
            revoked: None,
            created: now,
            last_seen: now,
            idle_timeout: self.timing.idle,
            absolute_deadline: login.limit.map_or(absolute, |l| l.min(absolute)),
            subject: login.subject.clone(),
            claims: claims_json(&login.claims),
            credentials: creds::seal(&self.keys, family, &login.cookies),
        })
    }

    /// Starts a new family from captured cookies (a login, or the adoption of a
    /// pre-vault cookie). Durable before it returns.
    pub async fn login(&self, login: NewLogin) -> Result<Issued, StoreError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let id = random32()?;
            let mut fid = [0u8; 16];
            fid.copy_from_slice(&id[..16]);
            let family = FamilyId(fid);
            let secret = random32()?;
            let now = self.clock.now_unix();
            let record = self.new_record(&family, &secret, &login, now)?;
            // an id collision (2^-128) only means: draw again
            if let crate::store::Cas::Written(_) = self.cas(&family, None, &record).await? {
                self.observer.event(Event::Login);
                self.live_add(1);
                let handle = handle::Handle {
                    kid: self.keys.active().kid,
                    family,
                    generation: 0,
                    secret,
                };
                return Ok(Issued {
                    family,
                    handle: self.cookie_for(&handle, &record, now),
                });
            }
        }
        Err(StoreError::Unavailable("could not create a family".into()))
    }

    /// The app changed its captured cookies on a request of `session`.
    pub async fn update(
        &self,
        session: &ActiveSession,
        update: CredentialUpdate,
    ) -> Result<Updated, StoreError> {
        let family = session.family;
        let mut ticket = self.flights.join(family);
        let mut slot = ticket.lock().await;
        let result = async {
            for _ in 0..MAX_CAS_ATTEMPTS {
                let now = self.clock.now_unix();
                let Some(record) = self.cached_record(&family, &mut slot).await? else {
                    return Ok(Updated::Gone);
                };
                if record.revoked.is_some() || record.expired(now) {
                    return Ok(Updated::Gone);
                }
                if update.cookies.is_empty() {
                    let tomb = decide::tombstone(&record, RevokeReason::AppLogout, now);
                    if self
                        .hard_write(&family, Some(record.version), tomb, &mut slot)
                        .await?
                        .is_none()
                    {
                        continue;
                    }
                    self.observer.event(Event::Revoked(RevokeReason::AppLogout));
                    self.live_add(-1);
                    return Ok(Updated::Revoked);
                }
                let changed_subject = update
                    .subject
                    .as_ref()
                    .is_some_and(|s| record.subject.as_ref() != Some(s));
                if changed_subject {
                    let tomb = decide::tombstone(&record, RevokeReason::SubjectChanged, now);
                    if self
                        .hard_write(&family, Some(record.version), tomb, &mut slot)
                        .await?
                        .is_none()
                    {
                        continue;
                    }
                    self.observer
                        .event(Event::Revoked(RevokeReason::SubjectChanged));
                    self.live_add(-1);
                    let claims = update.claims.clone().unwrap_or_default();
                    let issued = self
                        .login(NewLogin {
                            cookies: update.cookies.clone(),
                            subject: update.subject.clone(),
                            claims,
                            limit: update.limit,
                        })
                        .await?;
                    return Ok(Updated::NewFamily(issued));
                }
                let mut next = record.clone();
                next.credentials = creds::seal(&self.keys, &family, &update.cookies);
                if let Some(c) = &update.claims {
                    next.claims = claims_json(c);
                }
                let absolute = record.created.saturating_add(self.timing.absolute);
                next.absolute_deadline = update.limit.map_or(absolute, |l| l.min(absolute));
                if self
                    .hard_write(&family, Some(record.version), next, &mut slot)
                    .await?
                    .is_none()
                {
                    continue;
                }
                return Ok(Updated::Same);
            }
            Err(StoreError::Unavailable(
                "too many concurrent writers for one family".into(),
            ))
        }
        .await;
        if ticket.leave() && slot.dirty {
            self.flush(&family, &mut slot).await;
        }
        result
    }

    /// Rotates `session` now (the upstream sent `x-rotagate-rotate`), if its
    /// generation is still current: the new handle to append, or `None` when another
    /// request rotated first or the family is gone.
    pub async fn rotate_now(
        &self,
        session: &ActiveSession,
    ) -> Result<Option<HandleCookie>, StoreError> {
        let family = session.family;
        let h = &session.current;
        let mut ticket = self.flights.join(family);
        let mut slot = ticket.lock().await;
        let result = async {
            for _ in 0..MAX_CAS_ATTEMPTS {
                let Some(record) = self.cached_record(&family, &mut slot).await? else {
                    return Ok(None);
                };
                if record.generation != h.generation || record.revoked.is_some() {
                    return Ok(None);
                }
                let now = self.clock.now_unix();
                // judged as if the interval had passed: the app asked for it
                let mut due = record.clone();
                due.rotated_at = 0;
                let verdict =
                    decide::judge(&due, h, now, &self.timing, &self.keys, true, random32()?);
                let decide::Verdict::Accept {
                    accepted: Accepted::Rotated,
                    current,
                    write: decide::Write::Hard(mut next),
                } = verdict
                else {
                    return Ok(None);
                };
                next.version = record.version;
                let Some(written) = self
                    .hard_write(&family, Some(record.version), next, &mut slot)
                    .await?
                else {
                    continue;
                };
                self.observer.event(Event::Rotation);
                return Ok(Some(self.cookie_for(&current, &written, now)));
            }
            Err(StoreError::Unavailable(
                "too many concurrent writers for one family".into(),
            ))
        }
        .await;
        if ticket.leave() && slot.dirty {
            self.flush(&family, &mut slot).await;
        }
        result
    }

    /// True while `generation` is the family's current one and the family is live: the
    /// check before a handle `Set-Cookie` goes out (an out-of-order response must never
    /// roll the browser back).
    pub async fn is_current(&self, family: &FamilyId, generation: u32) -> Result<bool, StoreError> {
        let mut ticket = self.flights.join(*family);
        let mut slot = ticket.lock().await;
        let result = self.cached_record(family, &mut slot).await.map(|r| {
            r.is_some_and(|r| {
                r.revoked.is_none()
                    && r.generation == generation
                    && !r.expired(self.clock.now_unix())
            })
        });
        if ticket.leave() && slot.dirty {
            self.flush(family, &mut slot).await;
        }
        result
    }

    /// Revokes one family (tombstone). `Ok(false)` when there was none live.
    pub async fn revoke_family(
        &self,
        family: &FamilyId,
        reason: RevokeReason,
    ) -> Result<bool, StoreError> {
        let mut ticket = self.flights.join(*family);
        let mut slot = ticket.lock().await;
        let result = async {
            for _ in 0..MAX_CAS_ATTEMPTS {
                let Some(record) = self.cached_record(family, &mut slot).await? else {
                    return Ok(false);
                };
                if record.revoked.is_some() {
                    return Ok(false);
                }
                let now = self.clock.now_unix();
                let tomb = decide::tombstone(&record, reason, now);
                if self
                    .hard_write(family, Some(record.version), tomb, &mut slot)
                    .await?
                    .is_none()
                {
                    continue;
                }
                self.observer.event(Event::Revoked(reason));
                self.live_add(-1);
                return Ok(true);
            }
            Err(StoreError::Unavailable(
                "too many concurrent writers for one family".into(),
            ))
        }
        .await;
        if ticket.leave() && slot.dirty {
            self.flush(family, &mut slot).await;
        }
        result
    }

    /// Revokes every live family of `subject`; how many.
    pub async fn revoke_subject(
        &self,
        subject: &str,
        reason: RevokeReason,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for (id, record) in self.by_subject(subject).await? {
            if record.revoked.is_none() && self.revoke_family(&id, reason).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn by_subject(
        &self,
        subject: &str,
    ) -> Result<Vec<(FamilyId, crate::store::FamilyRecord)>, StoreError> {
        let t = std::time::Instant::now();
        let r = self.store.by_subject(subject).await;
        self.observer
            .store_latency(StoreOp::List, t.elapsed().as_secs_f64());
        r
    }

    /// The families of `subject`, newest first.
    pub async fn list_subject(&self, subject: &str) -> Result<Vec<FamilySummary>, StoreError> {
        Ok(self
            .by_subject(subject)
            .await?
            .into_iter()
            .map(|(id, r)| FamilySummary {
                id: id.to_hex(),
                subject: r.subject.clone(),
                created: r.created,
                last_seen: r.last_seen,
                generation: r.generation,
                revoked: r.revoked.map(|v| v.reason.as_str()),
            })
            .collect())
    }

    /// One cleanup pass (expired records, old tombstones); reports live families to
    /// the observer.
    pub async fn cleanup_now(&self) -> Result<crate::store::Cleaned, StoreError> {
        let t = std::time::Instant::now();
        let r = self.store.cleanup(self.clock.now_unix()).await;
        self.observer
            .store_latency(StoreOp::Cleanup, t.elapsed().as_secs_f64());
        if let Ok(c) = &r {
            self.live
                .store(c.live, std::sync::atomic::Ordering::Relaxed);
            self.observer.live_families(c.live);
        }
        r
    }

    /// Runs [`Engine::cleanup_now`] every `every` on the current tokio runtime (the
    /// first pass at once, which also sets the live-families gauge) until the engine is
    /// dropped.
    pub fn spawn_cleanup(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(engine) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = engine.cleanup_now().await {
                    tracing::warn!(error = %e, "vault: session store cleanup failed");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
