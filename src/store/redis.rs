//! The Redis store: vault families shared by several replicas (DESIGN §4.4).
//!
//! Layout (all keys under `rotagate:`):
//! - `rotagate:f:<family hex>`: a hash `v` (CAS version), `d` (the encoded record),
//!   `s` (subject), `x` (expiry of a live family, `0` for a tombstone); its Redis TTL is
//!   the record's [`FamilyRecord::keep_until`], so Redis drops expired families and old
//!   tombstones itself.
//! - `rotagate:s:<subject>`: a set of family ids, its TTL the longest of its members.
//! - `rotagate:marker`: a random value written at start and re-checked on every health
//!   probe; when it is gone or different, the server lost its data (a restart without
//!   persistence, a flush), which is reported (see [`RedisStore::status`]).
//!
//! Every write is one Lua compare-and-swap (`EVALSHA`, loaded at start, reloaded by the
//! client on `NOSCRIPT`), so two replicas can never both rotate a family. Nothing is
//! cached here: every read goes to Redis, so a revocation is seen by every replica on
//! its next request (the engine's single-flight already folds concurrent local reads of
//! one family into one round trip).
//!
//! The connection is the `redis` crate's tokio `ConnectionManager` (one multiplexed
//! connection, command and connect timeouts, reconnects on its own). It lives on a
//! small runtime of its own, so it does not depend on which of the proxy's runtimes
//! happened to open the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, Script};

use super::{Cas, Cleaned, FamilyId, FamilyRecord, Store, StoreError};
use crate::clock::Clock;
use crate::secret::Secret;

/// `store = "redis://…"` (or `rediss://…`) with its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The URL without credentials (`redis://host:port/db`, `rediss://…`).
    pub url: String,
    /// `session.store_username` (ACL user).
    pub username: Option<Secret>,
    /// `session.store_password`.
    pub password: Option<Secret>,
}

/// How long one command may take before it counts as a failure (→ 503).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the health probe checks the connection and the marker.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

const PREFIX: &str = "rotagate:";
const MARKER: &str = "rotagate:marker";

/// The compare-and-swap. KEYS[1] the family hash. ARGV: expected version (`""`: none
/// may exist), encoded record, TTL seconds, subject (`""`: none), subject key prefix,
/// family hex, live expiry (`0`: tombstone). Returns the new version, or -1.
const CAS_LUA: &str = r"
local cur = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if cur then return -1 end
elseif cur ~= ARGV[1] then
  return -1
end
local nv = 1
if cur then nv = tonumber(cur) + 1 end
local old_s = redis.call('HGET', KEYS[1], 's')
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'v', nv, 'd', ARGV[2], 'x', ARGV[7])
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 's')
else
  redis.call('HSET', KEYS[1], 's', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ttl)
if old_s and old_s ~= ARGV[4] then
  redis.call('SREM', ARGV[5] .. old_s, ARGV[6])
end
if ARGV[4] ~= '' then
  local sk = ARGV[5] .. ARGV[4]
  redis.call('SADD', sk, ARGV[6])
  if redis.call('TTL', sk) < ttl then redis.call('EXPIRE', sk, ttl) end
end
return nv
";

#[derive(Debug, Default)]
struct Health {
    up: AtomicBool,
    /// Why the store is not up (shown by `GET /store`; never a credential).
    reason: Mutex<Option<String>>,
    /// Set once the marker was found missing: sticky until restart, so an operator
    /// sees that sessions were lost even after Redis is back.
    data_lost: Mutex<Option<String>>,
    /// The marker value this process saw at start.
    marker: Mutex<Option<String>>,
}

impl Health {
    fn set_down(&self, reason: String) {
        self.up.store(false, Ordering::Relaxed);
        *lock(&self.reason) = Some(reason);
    }
    fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
        *lock(&self.reason) = None;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Family records in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    cas: Script,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    /// Shown in messages: the URL (it never holds a password; validation refuses one).
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        // may run on a runtime thread, where a blocking shutdown would panic
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(url: &str, e: &redis::RedisError) -> StoreError {
    StoreError::Unavailable(describe(url, e))
}

fn describe(url: &str, e: &redis::RedisError) -> String {
    // the client's messages name the kind and the server's reply, never the password
    if e.is_timeout() {
        format!(
            "Redis {url} did not answer within {} ms",
            COMMAND_TIMEOUT.as_millis()
        )
    } else if e.is_connection_refusal() || e.is_io_error() || e.is_connection_dropped() {
        format!("Redis {url} is unreachable ({e})")
    } else {
        format!("Redis {url}: {e}")
    }
}

fn family_key(id: &FamilyId) -> String {
    format!("{PREFIX}f:{}", id.to_hex())
}

fn subject_prefix() -> String {
    format!("{PREFIX}s:")
}

impl RedisStore {
    /// Connects (blocking; call at start-up). A Redis that cannot be reached now is not
    /// an error: the store starts "down" (requests needing a session get 503) and the
    /// probe connects as soon as the server answers. A Redis Cluster, refused
    /// credentials or a URL the client does not understand are errors.
    pub fn open(config: &RedisConfig, clock: Arc<dyn Clock>) -> Result<RedisStore, StoreError> {
        let url = config.url.clone();
        let bad = |detail: String| StoreError::Unsupported {
            url: url.clone(),
            detail,
        };
        let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
            .map_err(|e| bad(format!("not a Redis URL the client understands ({e})")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &config.username {
            let u = std::str::from_utf8(u.expose())
                .map_err(|_| bad("session.store_username is not UTF-8".into()))?;
            settings = settings.set_username(u);
        }
        if let Some(p) = &config.password {
            let p = std::str::from_utf8(p.expose())
                .map_err(|_| bad("session.store_password is not UTF-8".into()))?;
            settings = settings.set_password(p);
        }
        let info = info.set_redis_settings(settings);
        let client = Client::open(info).map_err(|e| bad(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rotagate-redis")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the Redis runtime: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(2);
        let conn = {
            let _enter = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, manager_config)
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                runtime.shutdown_background();
                return Err(bad(e.to_string()));
            }
        };
        let mut store = RedisStore {
            conn,
            cas: Script::new(CAS_LUA),
            clock,
            health: Arc::new(Health::default()),
            url: config.url.clone(),
            runtime: None,
        };
        // the first contact runs on the store's runtime from a plain thread, so open()
        // works whether or not the caller is inside a runtime
        let first = std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(store.first_contact()))
                .join()
                .unwrap_or_else(|_| Err(StoreError::Unavailable("start-up probe failed".into())))
        });
        match first {
            Ok(()) => {}
            Err(e @ StoreError::Unsupported { .. }) => {
                // may run inside the caller's runtime, where a blocking drop panics
                runtime.shutdown_background();
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(target: "rotagate::store", error = %e, "Redis not reachable at start; sessions answer 503 until it is");
                store.health.set_down(e.to_string());
            }
        }
        let probe = ProbeHandle {
            conn: store.conn.clone(),
            cas: store.cas.clone(),
            health: store.health.clone(),
            url: store.url.clone(),
        };
        runtime.spawn(probe.run());
        store.runtime = Some(runtime);
        Ok(store)
    }

    async fn first_contact(&self) -> Result<(), StoreError> {
        ProbeHandle {
            conn: self.conn.clone(),
            cas: self.cas.clone(),
            health: self.health.clone(),
            url: self.url.clone(),
        }
        .connect()
        .await
    }

    /// `Ok(())` when Redis answers and still holds the data it had at start; else why
    /// not (for `GET /store` and the `rotagate_store_up` gauge). Never blocks.
    pub fn status(&self) -> Result<(), StoreError> {
        if let Some(lost) = lock(&self.health.data_lost).clone() {
            return Err(StoreError::Unavailable(lost));
        }
        if self.health.up.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                lock(&self.health.reason)
                    .clone()
                    .unwrap_or_else(|| format!("Redis {} is not connected yet", self.url)),
            ))
        }
    }

    fn fail(&self, e: &redis::RedisError) -> StoreError {
        let err = unavailable(&self.url, e);
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            self.health.set_down(err.to_string());
        }
        err
    }
}

/// What the background probe needs (a clone of the connection handle).
struct ProbeHandle {
    conn: ConnectionManager,
    cas: Script,
    health: Arc<Health>,
    url: String,
}

impl ProbeHandle {
    /// First contact: refuses a cluster, loads the script, writes/reads the marker.
    async fn connect(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.classify(&e))?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            return Err(StoreError::Unsupported {
                url: self.url.clone(),
                detail: "the server is a Redis Cluster node; rotagate keeps a family and its subject index in one keyspace and needs a standalone Redis (with replicas or Sentinel for failover)".into(),
            });
        }
        self.cas
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(|e| self.classify(&e))?;
        let fresh = random_hex();
        let _: bool = conn
            .set_nx(MARKER, &fresh)
            .await
            .map_err(|e| self.classify(&e))?;
        let seen: Option<String> = conn.get(MARKER).await.map_err(|e| self.classify(&e))?;
        *lock(&self.health.marker) = seen;
        self.health.set_up();
        Ok(())
    }

    /// An authentication or protocol failure at start is a configuration error; a
    /// network failure only means "not yet".
    fn classify(&self, e: &redis::RedisError) -> StoreError {
        use redis::ErrorKind;
        match e.kind() {
            ErrorKind::AuthenticationFailed | ErrorKind::InvalidClientConfig => {
                StoreError::Unsupported {
                    url: self.url.clone(),
                    detail: format!("{e} (check session.store_username / session.store_password)"),
                }
            }
            _ => unavailable(&self.url, e),
        }
    }

    async fn run(self) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            self.probe().await;
        }
    }

    async fn probe(&self) {
        let known = lock(&self.health.marker).clone();
        let Some(known) = known else {
            // never reached Redis yet: do the first contact now
            if let Err(e) = self.connect().await {
                self.health.set_down(e.to_string());
            }
            return;
        };
        let mut conn = self.conn.clone();
        let seen: Result<Option<String>, _> = conn.get(MARKER).await;
        match seen {
            Err(e) => self.health.set_down(describe(&self.url, &e)),
            Ok(Some(v)) if v == known => self.health.set_up(),
            Ok(other) => {
                let what = if other.is_none() {
                    "is gone"
                } else {
                    "changed"
                };
                let msg = format!(
                    "Redis {} lost its data (the marker key written at start {what}: a restart without persistence or a flush); sessions stored before then answer as anonymous",
                    self.url
                );
                tracing::error!(target: "rotagate::store", url = %self.url, "{msg}");
                *lock(&self.health.data_lost) = Some(msg);
                // adopt the server's (new) marker so the next loss is seen as well
                let fresh = random_hex();
                let _: Result<bool, _> = conn.set_nx(MARKER, &fresh).await;
                if let Ok(Some(v)) = conn.get::<_, Option<String>>(MARKER).await {
                    *lock(&self.health.marker) = Some(v);
                }
                self.health.set_up();
            }
        }
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails when the OS has no randomness; a fixed marker then still
    // detects a flush (it is gone)
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    FamilyId(b).to_hex()
}

fn decode(id: &FamilyId, version: u64, bytes: &[u8]) -> Result<FamilyRecord, StoreError> {
    let mut r = FamilyRecord::decode(bytes).map_err(|detail| StoreError::Codec {
        family: id.to_hex(),
        detail,
    })?;
    r.version = version;
    Ok(r)
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn ready(&self) -> Result<(), StoreError> {
        // a Redis outage must not pull every replica out of the load balancer at once:
        // /readyz stays ready, the outage shows in GET /store and rotagate_store_up
        Ok(())
    }

    fn status(&self) -> Result<(), StoreError> {
        RedisStore::status(self)
    }

    async fn get(&self, id: &FamilyId) -> Result<Option<FamilyRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let (v, d): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(family_key(id))
            .arg("v")
            .arg("d")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(&e))?;
        match (v, d) {
            (Some(v), Some(d)) => decode(id, v, &d).map(Some),
            _ => Ok(None),
        }
    }

    async fn compare_and_swap(
        &self,
        id: &FamilyId,
        expected: Option<u64>,
        record: &FamilyRecord,
    ) -> Result<Cas, StoreError> {
        let now = self.clock.now_unix();
        // a record already past its end still gets a second, so the write is visible
        // (and a tombstone answers) until Redis drops it
        let ttl = record.keep_until().saturating_sub(now).max(1);
        let live_until = match record.revoked {
            Some(_) => 0,
            None => record.expires_at(),
        };
        let mut conn = self.conn.clone();
        let out: i64 = self
            .cas
            .key(family_key(id))
            .arg(expected.map(|v| v.to_string()).unwrap_or_default())
            .arg(record.encode())
            .arg(ttl)
            .arg(record.subject.as_deref().unwrap_or(""))
            .arg(subject_prefix())
            .arg(id.to_hex())
            .arg(live_until)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(&e))?;
        Ok(match u64::try_from(out) {
            Ok(v) => Cas::Written(v),
            Err(_) => Cas::Conflict,
        })
    }

    async fn by_subject(&self, subject: &str) -> Result<Vec<(FamilyId, FamilyRecord)>, StoreError> {
        let mut conn = self.conn.clone();
        let skey = format!("{}{subject}", subject_prefix());
        let members: Vec<String> = conn.smembers(&skey).await.map_err(|e| self.fail(&e))?;
        let ids: Vec<FamilyId> = members
            .iter()
            .filter_map(|m| FamilyId::from_hex(m))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(family_key(id))
                .arg("v")
                .arg("d")
                .arg("s");
        }
        type Row = (Option<u64>, Option<Vec<u8>>, Option<String>);
        let rows: Vec<Row> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(&e))?;
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (id, row) in ids.iter().zip(rows) {
            match row {
                (Some(v), Some(d), Some(s)) if s == subject => out.push((*id, decode(id, v, &d)?)),
                // expired by its TTL, or moved to another subject
                _ => stale.push(id.to_hex()),
            }
        }
        if !stale.is_empty() {
            let _: Result<i64, _> = conn.srem(&skey, stale).await;
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.1.created));
        Ok(out)
    }

    async fn cleanup(&self, now: u64) -> Result<Cleaned, StoreError> {
        // Redis drops expired families and tombstones by their TTLs; this only counts
        // the live families (SCAN in batches: never blocks the server)
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut cleaned = Cleaned::default();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{PREFIX}f:*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.fail(&e))?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.hget(k, "x");
                }
                let xs: Vec<Option<u64>> = pipe
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| self.fail(&e))?;
                cleaned.live += xs.iter().filter(|x| x.is_some_and(|x| x > now)).count() as u64;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(cleaned)
    }
}
