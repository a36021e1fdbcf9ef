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
//!
//! With `store = "redis+sentinel://…"` the sentinels name the master: the probe asks
//! them at start and whenever the connected server stops answering or stops being the
//! master (`ROLE`), and swaps in a connection to the new master after a failover.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncCommands, Client, ConnectionAddr, Script, TlsCertificates, TlsMode};

use super::{Cas, Cleaned, FamilyId, FamilyRecord, Store, StoreError};
use crate::clock::Clock;
use crate::secret::Secret;

/// `store = "redis://…"` (or `rediss://…`, `redis+sentinel://…`,
/// `rediss+sentinel://…`) with its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The URL without credentials (`redis://host:port/db`, `rediss://…`, or
    /// `redis+sentinel://host:port,host:port/master/db`).
    pub url: String,
    /// `session.store_username` (ACL user).
    pub username: Option<Secret>,
    /// `session.store_password`.
    pub password: Option<Secret>,
    /// `session.store_ca`: the PEM CA bundle TLS connections trust instead of the
    /// built-in web roots (a private CA).
    pub ca: Option<Vec<u8>>,
    /// `session.store_sentinel_password`: the sentinels' own `requirepass`.
    pub sentinel_password: Option<Secret>,
}

impl RedisConfig {
    /// A URL without credentials or a private CA.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            username: None,
            password: None,
            ca: None,
            sentinel_password: None,
        }
    }
}

/// The port a sentinel address without one gets.
pub const SENTINEL_PORT: u16 = 26379;

/// A `redis+sentinel://` / `rediss+sentinel://` URL, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// `rediss+sentinel://`: TLS to the sentinels and to the master.
    pub tls: bool,
    /// The sentinels, in the order they are asked.
    pub nodes: Vec<(String, u16)>,
    /// The master's name as the sentinels know it (`sentinel monitor NAME …`).
    pub service: String,
    /// The database on the master.
    pub db: i64,
}

/// Reads `redis+sentinel://host[:port][,host[:port]…]/MASTER[/DB]`; `Ok(None)` for any
/// other scheme. The error says what was expected (it never repeats the URL).
pub fn parse_sentinel_url(url: &str) -> Result<Option<SentinelUrl>, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        (true, r)
    } else {
        return Ok(None);
    };
    let shape = "expected \"redis+sentinel://host:port[,host:port…]/MASTER[/DB]\"";
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    if hosts.contains('@') {
        return Err("the sentinel URL names no user or password: set `session.store_username` / `session.store_password` (the master's) and `session.store_sentinel_password`".into());
    }
    let mut nodes = Vec::new();
    for h in hosts.split(',') {
        let (host, port) = match h.strip_prefix('[') {
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| {
                    format!("{shape}, found an unclosed `[` in a sentinel address")
                })?;
                match after.strip_prefix(':') {
                    Some(p) => (host, Some(p)),
                    None if after.is_empty() => (host, None),
                    None => return Err(format!("{shape}, found {h:?}")),
                }
            }
            None => match h.rsplit_once(':') {
                Some((host, p)) => (host, Some(p)),
                None => (h, None),
            },
        };
        if host.is_empty() {
            return Err(format!("{shape}, found an empty sentinel address"));
        }
        let port = match port {
            None => SENTINEL_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{shape}, found the port {p:?}"))?,
        };
        nodes.push((host.to_string(), port));
    }
    let mut parts = path.split('/');
    let service = parts.next().unwrap_or("");
    if service.is_empty() {
        return Err(format!("{shape}, found no master name"));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(d) => d
            .parse::<u16>()
            .map_err(|_| format!("{shape}, found the database {d:?}"))?
            .into(),
    };
    if parts.next().is_some() || path.contains(['?', '#']) {
        return Err(format!("{shape}, found more after the database"));
    }
    Ok(Some(SentinelUrl {
        tls,
        nodes,
        service: service.to_string(),
        db,
    }))
}

/// How long one command may take before it counts as a failure (→ 503).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the health probe checks the connection and the marker.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long asking the sentinels for the master may take.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

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

/// The connection to the server holding the families: fixed for a plain URL; for a
/// Sentinel URL, the current master's, replaced after a failover.
struct Link {
    current: ArcSwapOption<ConnectionManager>,
    /// The current master's address (Sentinel), for messages.
    master: Mutex<Option<String>>,
    sentinel: Option<tokio::sync::Mutex<SentinelClient>>,
    config: ConnectionManagerConfig,
    url: String,
}

impl Link {
    /// A handle on the current connection (cheap: a reference count).
    fn get(&self) -> Result<ConnectionManager, StoreError> {
        match self.current.load_full() {
            Some(c) => Ok((*c).clone()),
            None => Err(StoreError::Unavailable(format!(
                "Redis Sentinel {}: no master found yet",
                self.url
            ))),
        }
    }

    /// Sentinel only: asks the sentinels for the master (they check that it says it is
    /// one) and connects to it when it is not the one connected; `Ok(true)` then.
    async fn resolve(&self) -> Result<bool, StoreError> {
        let Some(sentinel) = &self.sentinel else {
            return Ok(false);
        };
        let asked = tokio::time::timeout(SENTINEL_TIMEOUT, async {
            sentinel.lock().await.async_get_client().await
        })
        .await;
        let client = match asked {
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "Redis Sentinel {}: no sentinel named a master within {} ms",
                    self.url,
                    SENTINEL_TIMEOUT.as_millis()
                )))
            }
            Ok(Err(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "Redis Sentinel {}: {e}",
                    self.url
                )))
            }
            Ok(Ok(c)) => c,
        };
        let addr = client.get_connection_info().addr().to_string();
        if self.current.load().is_some() && lock(&self.master).as_deref() == Some(addr.as_str()) {
            return Ok(false);
        }
        let manager = ConnectionManager::new_lazy_with_config(client, self.config.clone())
            .map_err(|e| unavailable(&self.url, &e))?;
        self.current.store(Some(Arc::new(manager)));
        *lock(&self.master) = Some(addr);
        Ok(true)
    }
}

/// True when the server says it is a master (`ROLE`).
async fn is_master(conn: &mut ConnectionManager) -> bool {
    match redis::cmd("ROLE").query_async::<redis::Value>(conn).await {
        Ok(redis::Value::Array(parts)) => {
            matches!(
                parts.first(),
                Some(redis::Value::BulkString(b)) if b == b"master"
            ) || matches!(
                parts.first(),
                Some(redis::Value::SimpleString(s)) if s == "master"
            )
        }
        _ => false,
    }
}

/// Family records in Redis.
pub struct RedisStore {
    link: Arc<Link>,
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
        let text = |s: &Option<Secret>, key: &str| -> Result<Option<String>, StoreError> {
            s.as_ref()
                .map(|v| {
                    std::str::from_utf8(v.expose())
                        .map(str::to_string)
                        .map_err(|_| bad(format!("session.{key} is not UTF-8")))
                })
                .transpose()
        };
        let username = text(&config.username, "store_username")?;
        let password = text(&config.password, "store_password")?;
        let sentinel_password = text(&config.sentinel_password, "store_sentinel_password")?;
        let certs = config.ca.as_ref().map(|ca| TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        });
        let (client, sentinel) = match parse_sentinel_url(&config.url).map_err(&bad)? {
            Some(su) => {
                let nodes = su.nodes.iter().map(|(host, port)| {
                    if su.tls {
                        ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                let mut b =
                    SentinelClientBuilder::new(nodes, &su.service, SentinelServerType::Master)
                        .map_err(|e| bad(e.to_string()))?
                        .set_client_to_redis_db(su.db);
                if su.tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(c) = &certs {
                        b = b
                            .set_client_to_redis_certificates(c.clone())
                            .set_client_to_sentinel_certificates(c.clone());
                    }
                }
                if let Some(u) = &username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &password {
                    b = b.set_client_to_redis_password(p);
                }
                if let Some(p) = &sentinel_password {
                    b = b.set_client_to_sentinel_password(p);
                }
                (None, Some(b.build().map_err(|e| bad(e.to_string()))?))
            }
            None => {
                let info = redis::IntoConnectionInfo::into_connection_info(config.url.as_str())
                    .map_err(|e| bad(format!("not a Redis URL the client understands ({e})")))?;
                let mut settings = info.redis_settings().clone();
                if let Some(u) = &username {
                    settings = settings.set_username(u);
                }
                if let Some(p) = &password {
                    settings = settings.set_password(p);
                }
                let info = info.set_redis_settings(settings);
                let client = match certs {
                    Some(c) => Client::build_with_tls(info, c),
                    None => Client::open(info),
                }
                .map_err(|e| bad(e.to_string()))?;
                (Some(client), None)
            }
        };
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
        let current = match client {
            Some(client) => {
                let _enter = runtime.enter();
                match ConnectionManager::new_lazy_with_config(client, manager_config.clone()) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(e) => {
                        runtime.shutdown_background();
                        return Err(bad(e.to_string()));
                    }
                }
            }
            // the sentinels name the master at first contact
            None => None,
        };
        let link = Arc::new(Link {
            current: ArcSwapOption::new(current),
            master: Mutex::new(None),
            sentinel: sentinel.map(tokio::sync::Mutex::new),
            config: manager_config,
            url: config.url.clone(),
        });
        let mut store = RedisStore {
            link,
            cas: Script::new(CAS_LUA),
            clock,
            health: Arc::new(Health::default()),
            url: config.url.clone(),
            runtime: None,
        };
        // the first contact runs on the store's runtime from a plain thread, so open()
        // works whether or not the caller is inside a runtime
        let first = std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(store.probe_handle().connect()))
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
        runtime.spawn(store.probe_handle().run());
        store.runtime = Some(runtime);
        Ok(store)
    }

    fn probe_handle(&self) -> ProbeHandle {
        ProbeHandle {
            link: self.link.clone(),
            cas: self.cas.clone(),
            health: self.health.clone(),
            url: self.url.clone(),
        }
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
        // a read-only server is a demoted master (a failover the probe follows)
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        {
            self.health.set_down(err.to_string());
        }
        err
    }
}

/// What the background probe needs (a clone of the connection handle).
struct ProbeHandle {
    link: Arc<Link>,
    cas: Script,
    health: Arc<Health>,
    url: String,
}

impl ProbeHandle {
    /// First contact: refuses a cluster, loads the script, writes/reads the marker.
    async fn connect(&self) -> Result<(), StoreError> {
        if self.link.get().is_err() {
            self.link.resolve().await?;
        }
        let mut conn = self.link.get()?;
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
        if self.link.sentinel.is_some() {
            // after a failover the old master is gone or a replica: ask the sentinels
            let master = match self.link.get() {
                Ok(mut c) => is_master(&mut c).await,
                Err(_) => false,
            };
            if !master {
                match self.link.resolve().await {
                    Ok(true) => tracing::warn!(
                        target: "rotagate::store",
                        url = %self.url,
                        master = lock(&self.link.master).as_deref().unwrap_or("-"),
                        "Redis Sentinel named a new master; connected to it"
                    ),
                    Ok(false) => {}
                    Err(e) => {
                        // the connected server is not the master and no sentinel names
                        // one: stop using it, or logins and revocations would land on a
                        // (writable) replica and be lost at its next resync
                        self.link.current.store(None);
                        *lock(&self.link.master) = None;
                        self.health.set_down(e.to_string());
                        return;
                    }
                }
            }
        }
        let mut conn = match self.link.get() {
            Ok(c) => c,
            Err(e) => {
                self.health.set_down(e.to_string());
                return;
            }
        };
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
        let mut conn = self.link.get()?;
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
        let mut conn = self.link.get()?;
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
        let mut conn = self.link.get()?;
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
        let mut conn = self.link.get()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_read_or_refused_with_what_was_expected() {
        let su = parse_sentinel_url("redis+sentinel://a:1,[::1]:2,b/mymaster/3")
            .unwrap()
            .unwrap();
        assert_eq!(
            su,
            SentinelUrl {
                tls: false,
                nodes: vec![
                    ("a".into(), 1),
                    ("::1".into(), 2),
                    ("b".into(), SENTINEL_PORT)
                ],
                service: "mymaster".into(),
                db: 3,
            }
        );
        let su = parse_sentinel_url("rediss+sentinel://s/m")
            .unwrap()
            .unwrap();
        assert!(su.tls && su.db == 0 && su.service == "m");
        assert_eq!(parse_sentinel_url("redis://h:1/0"), Ok(None));
        for (bad, why) in [
            ("redis+sentinel://h:1", "no master name"),
            ("redis+sentinel://h:1/", "no master name"),
            ("redis+sentinel://h:x/m", "the port"),
            ("redis+sentinel://,h/m", "empty sentinel address"),
            ("redis+sentinel://[::1/m", "unclosed"),
            ("redis+sentinel://h/m/x", "the database"),
            ("redis+sentinel://h/m/0/more", "more after"),
            ("redis+sentinel://u@h/m", "store_username"),
        ] {
            let e = parse_sentinel_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
