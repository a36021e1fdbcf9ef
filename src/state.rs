//! The state shared by the proxy and the admin listener: the configuration in force
//! (swapped atomically on reload), metrics and the clock.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::access::ActionIndex;
use crate::clock::Clock;
use crate::config::{self, Config};
use crate::logout::{LoopBreaker, Target};
use crate::metrics::{Metrics, RouteMetrics};
use crate::session::vault::{self, VaultError, VaultSettings};
use crate::session::vault_capture::Names;
use crate::session::{EngineError, SessionEngine};
use crate::store::{Store, StoreConfig, StoreError};

/// One generation of configuration, with everything derived from it ready for requests.
/// A request takes an `Arc` of the current one when it starts and keeps it to the end,
/// so in-flight requests finish on the rules they started with.
#[derive(Debug)]
pub struct Runtime {
    /// The validated configuration.
    pub config: Config,
    /// 1 for the configuration loaded at start, +1 per successful reload.
    pub generation: u64,
    /// The upstreams (index 0 the default), resolved, with their live state and
    /// health checks.
    pub upstreams: crate::upstreams::Upstreams,
    /// The session engine, when `[session]` is configured in reissue mode.
    pub session: Option<SessionEngine>,
    /// The vault engine and names, when `[session]` is configured in vault mode.
    pub vault: Option<VaultRuntime>,
    /// Cookies a logout deletes: the session cookie and `logout.clear_cookies`.
    pub logout_targets: Vec<Target>,
    /// Server Action ids → routes of their defining pages.
    pub actions: ActionIndex,
    /// Per-route metric handles, same order as `config.routes`, then one for requests
    /// no route matched (route `-`).
    pub route_metrics: Vec<RouteMetrics>,
    /// Counts redirects to login per browser; its key is derived from the configured
    /// session secrets, so every replica honours the others' cookies.
    pub loop_breaker: LoopBreaker,
}

impl Runtime {
    /// The metric handles of route index `route` (`None`: no route matched).
    pub fn route_metrics(&self, route: Option<usize>) -> &RouteMetrics {
        let unmatched = self.route_metrics.len() - 1;
        &self.route_metrics[route.map_or(unmatched, |i| i.min(unmatched))]
    }
}

/// Why a runtime could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An upstream host did not resolve.
    #[error("{file}: {source}")]
    Resolve {
        /// Config file.
        file: String,
        /// Which upstream and address.
        source: crate::upstreams::ResolveError,
    },
    /// The session keys could not be loaded.
    #[error("{file}: {source}")]
    Session {
        /// Config file.
        file: String,
        /// What is wrong (names the key, never its bytes).
        source: EngineError,
    },
    /// The vault engine could not be built from its settings.
    #[error("{file}: {source}")]
    Vault {
        /// Config file.
        file: String,
        /// What is wrong (names the key, never a secret).
        source: VaultError,
    },
    /// The vault session store could not be opened (corrupted, held by another
    /// process, unreadable): names the store file.
    #[error("{file}: `session.store`: {source}")]
    Store {
        /// Config file.
        file: String,
        /// What is wrong with the store.
        source: StoreError,
    },
}

/// How often expired families and old tombstones are cleaned up.
pub const VAULT_CLEANUP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Vault mode's run-time pieces of one configuration.
pub struct VaultRuntime {
    /// The engine (over the process's one store).
    pub engine: Arc<vault::Engine>,
    /// The handle's and the captured cookies' names.
    pub names: Names,
    /// Attributes of the handle cookie.
    pub attributes: crate::config::CookieAttributes,
    /// `adopt_existing`.
    pub adopt_existing: bool,
    cleanup: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for VaultRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultRuntime")
            .field("cookie", &self.names.handle)
            .finish_non_exhaustive()
    }
}

impl Drop for VaultRuntime {
    fn drop(&mut self) {
        // the cleanup of a configuration no longer in force ends with it
        if let Some(c) = self.cleanup.take() {
            c.abort();
        }
    }
}

/// What every configuration generation shares: the clock, the metrics, and the one
/// session store of the process (opened once; a reload that keeps `session.store`
/// keeps it, so the embedded file is never opened twice).
pub struct Env {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The metrics.
    pub metrics: Metrics,
    store: std::sync::Mutex<Option<(StoreConfig, Arc<dyn Store>)>>,
    /// Upstream address states, handed from one generation to the next.
    upstream_states: crate::upstreams::StateRegistry,
    /// Health check flips so far (every generation's), for `/config` long-polls.
    health_changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    /// An environment with fresh metrics and no store opened yet.
    pub fn new(clock: Arc<dyn Clock>) -> Env {
        Env {
            clock,
            metrics: Metrics::new(),
            store: std::sync::Mutex::new(None),
            upstream_states: Default::default(),
            health_changes: watch::channel(0).0,
        }
    }

    /// The store for `spec`: the one already open when it is the same, else opened now
    /// (blocking: the embedded store may wait for a previous process to let go).
    fn store(&self, spec: &crate::config::StoreSpec) -> Result<Arc<dyn Store>, StoreError> {
        let want = match spec {
            crate::config::StoreSpec::Memory => StoreConfig::Memory,
            crate::config::StoreSpec::Embedded(path) => StoreConfig::Embedded {
                path: path.clone(),
                handover: crate::store::DEFAULT_HANDOVER,
            },
            crate::config::StoreSpec::Redis(c) => StoreConfig::Redis(c.clone()),
        };
        let mut slot = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((have, store)) = slot.as_ref() {
            if *have == want {
                return Ok(store.clone());
            }
        }
        // a different store: the old one closes when the last configuration using it ends
        *slot = None;
        let store = crate::store::open_with_clock(&want, self.clock.clone())?;
        *slot = Some((want, store.clone()));
        Ok(store)
    }
}

/// Counts the vault engine's events in the metrics.
struct VaultObserver(crate::metrics::VaultMetrics);

impl vault::Observer for VaultObserver {
    fn event(&self, event: vault::Event) {
        let m = &self.0;
        match event {
            vault::Event::Rotation => m.rotations.inc(),
            vault::Event::PredecessorAccepted { within_slack } => m
                .predecessor_accepts
                .with_label_values(&[if within_slack { "slack" } else { "unseen" }])
                .inc(),
            vault::Event::ReuseDetected => m.reuse_detected.inc(),
            vault::Event::Revoked(reason) => {
                m.revocations.with_label_values(&[reason.as_str()]).inc()
            }
            vault::Event::CasConflict => m.cas_conflicts.inc(),
            vault::Event::Anonymous(why) => m.anonymous.with_label_values(&[why.as_str()]).inc(),
            vault::Event::Login => {}
        }
    }
    fn store_latency(&self, op: vault::StoreOp, seconds: f64) {
        self.0
            .store_latency
            .with_label_values(&[op.as_str()])
            .observe(seconds);
    }
    fn live_families(&self, count: u64) {
        self.0
            .live_families
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

fn vault_runtime(config: &Config, env: &Env) -> Result<Option<VaultRuntime>, RuntimeError> {
    let Some(s) = config.session.as_ref() else {
        return Ok(None);
    };
    let Some(v) = s.mode.vault() else {
        return Ok(None);
    };
    let file = config.source.display().to_string();
    let store = env.store(&v.store).map_err(|source| RuntimeError::Store {
        file: file.clone(),
        source,
    })?;
    let settings = VaultSettings {
        secrets: v.secrets.clone(),
        rotate_every: s.rotate_every,
        idle_timeout: s.idle_timeout.unwrap_or(crate::config::DEFAULT_VAULT_IDLE),
        absolute_timeout: s.absolute_timeout,
        slack: v.slack,
    };
    let engine = vault::Engine::new(&settings, store, env.clock.clone())
        .map_err(|source| RuntimeError::Vault { file, source })?
        .with_observer(Arc::new(VaultObserver(env.metrics.vault.clone())));
    let engine = Arc::new(engine);
    // outside a tokio runtime (`rotagate check`-like callers) nothing is cleaned
    let cleanup = tokio::runtime::Handle::try_current()
        .ok()
        .map(|_| engine.spawn_cleanup(VAULT_CLEANUP_EVERY));
    Ok(Some(VaultRuntime {
        engine,
        names: Names::new(&v.cookie, &v.capture),
        attributes: v.attributes.clone(),
        adopt_existing: v.adopt_existing,
        cleanup,
    }))
}

impl Runtime {
    /// Derives the run-time pieces from a validated configuration. The upstream hosts
    /// are resolved here, once per load, not per request.
    pub fn build(config: Config, generation: u64, env: &Env) -> Result<Runtime, RuntimeError> {
        let session = match &config.session {
            Some(s) if s.mode.reissue().is_some() => Some(SessionEngine::new(s).map_err(
                |source| RuntimeError::Session {
                    file: config.source.display().to_string(),
                    source,
                },
            )?),
            _ => None,
        };
        let vault = vault_runtime(&config, env)?;
        let mut logout_targets: Vec<Target> = Vec::new();
        let reissue = config.session.as_ref().and_then(|s| s.mode.reissue());
        // a valid session's chunks fit in one request header block: delete no more
        let max_chunks = reissue.map_or(crate::session::cookies::MAX_CHUNKS, |r| {
            crate::session::cookies::max_valid_chunks(config.listen.max_header_bytes, r.chunk_size)
        });
        if let Some(r) = reissue {
            logout_targets.push(Target {
                name: r.cookie.clone(),
                attributes: r.attributes.clone(),
                max_chunks,
            });
        }
        if let Some(v) = config.session.as_ref().and_then(|s| s.mode.vault()) {
            // the handle, and any captured cookie a browser still holds from before vault
            logout_targets.push(Target {
                name: v.cookie.clone(),
                attributes: v.attributes.clone(),
                max_chunks: 0,
            });
            for c in &v.capture {
                logout_targets.push(Target {
                    name: c.clone(),
                    attributes: v.attributes.clone(),
                    max_chunks,
                });
            }
        }
        logout_targets.extend(
            config
                .logout
                .clear_cookies
                .iter()
                .map(|c| Target::from_clear(c, max_chunks)),
        );
        let actions = config.nextjs.action_index.clone();
        let route_metrics = (0..=config.routes.len())
            .map(|_| RouteMetrics::default())
            .collect();
        let loop_breaker = loop_breaker(&config);
        // last: it adopts the address states and starts the health checks, which a
        // failure above would leave behind for nothing
        let sink = crate::upstreams::HealthSink {
            metrics: env.metrics.upstreams.clone(),
            changes: env.health_changes.clone(),
        };
        let upstreams = crate::upstreams::Upstreams::build(&config, &env.upstream_states, &sink)
            .map_err(|source| RuntimeError::Resolve {
                file: config.source.display().to_string(),
                source,
            })?;
        Ok(Runtime {
            config,
            generation,
            upstreams,
            session,
            vault,
            logout_targets,
            actions,
            route_metrics,
            loop_breaker,
        })
    }
}

/// The loop breaker of a configuration: keyed from its first session secret in every
/// mode (vault secret, Auth.js secret, HMAC key or private key), else (no session
/// configured) a random key of this process.
fn loop_breaker(config: &Config) -> LoopBreaker {
    let secret = config.session.as_ref().and_then(|s| match &s.mode {
        crate::config::SessionMode::Vault(v) => v.secrets.first(),
        crate::config::SessionMode::Reissue(r) => r.secrets.first().or_else(|| {
            r.keys
                .iter()
                .find_map(|k| k.secret.as_ref().or(k.private_key_pem.as_ref()))
        }),
    });
    match secret {
        Some(s) => LoopBreaker::derived(s.expose()),
        None => LoopBreaker::new(),
    }
}

/// What the admin listener reports about reloads, and what tests wait on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Generation in force.
    pub generation: u64,
    /// Reload attempts so far (successful or not).
    pub attempts: u64,
    /// The error of the last failed attempt, if the last attempt failed.
    pub last_error: Option<String>,
}

/// State shared between the proxy, the admin listener and the signal handlers.
pub struct Shared {
    current: ArcSwap<Runtime>,
    env: Arc<Env>,
    /// Metrics of this instance.
    pub metrics: Metrics,
    /// The clock (a [`crate::clock::ManualClock`] in tests).
    pub clock: Arc<dyn Clock>,
    config_path: Option<PathBuf>,
    status: watch::Sender<ReloadStatus>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// State starting at generation 1 with `runtime` (built over `env`).
    pub fn new(runtime: Runtime, env: Arc<Env>, config_path: Option<PathBuf>) -> Shared {
        let metrics = env.metrics.clone();
        let clock = env.clock.clone();
        metrics.config_generation.set(runtime.generation as i64);
        let (status, _) = watch::channel(ReloadStatus {
            generation: runtime.generation,
            ..Default::default()
        });
        Shared {
            current: ArcSwap::from_pointee(runtime),
            env,
            metrics,
            clock,
            config_path,
            status,
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The runtime in force now.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// The count of upstream health flips so far, and a receiver to wait for the next.
    pub fn health_changes(&self) -> watch::Receiver<u64> {
        self.env.health_changes.subscribe()
    }

    /// Reload status, and a receiver to wait for the next change.
    pub fn status(&self) -> watch::Receiver<ReloadStatus> {
        self.status.subscribe()
    }

    /// Re-reads the config file, validates it and swaps it in. An invalid file is
    /// refused with its error and the configuration in force stays.
    pub async fn reload(&self) -> Result<u64, String> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let Some(path) = self.config_path.clone() else {
            return Err("no config file to reload (started from a built-in config)".to_string());
        };
        let next_gen = self.current().generation + 1;
        let env = self.env.clone();
        // file reads and DNS resolution block: keep them off the proxy's worker threads
        let built = tokio::task::spawn_blocking(move || -> Result<Runtime, String> {
            let cfg = config::load(&path).map_err(|e| e.to_string())?;
            Runtime::build(cfg, next_gen, &env).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("reload task failed: {e}")));
        // the TLS listener is bound at start: a configuration that adds or removes it
        // would make cookies Secure, or redirect to https, for a listener that is not there
        let built = built.and_then(|rt| {
            let had = self.current().config.listen.tls.is_some();
            match (had, rt.config.listen.tls.is_some()) {
                (false, true) => Err(format!(
                    "{}: [listen.tls] was added; the TLS listener starts only with a restart",
                    rt.config.source.display()
                )),
                (true, false) => Err(format!(
                    "{}: [listen.tls] was removed; the TLS listener stops only with a restart",
                    rt.config.source.display()
                )),
                _ => Ok(rt),
            }
        });
        let result = match built {
            Ok(rt) => {
                let old = self.current();
                if old.config.listen.address != rt.config.listen.address {
                    tracing::warn!(
                        "listen.address changed; the new address takes effect only after a restart"
                    );
                }
                let tls_address = |r: &Runtime| r.config.listen.tls.as_ref().map(|t| t.address);
                if tls_address(&old) != tls_address(&rt) {
                    tracing::warn!(
                        "listen.tls.address changed; the new address takes effect only after a restart (the certificates are replaced now)"
                    );
                }
                self.current.store(Arc::new(rt));
                // the old generation's health checks end now, not when its last
                // request does: the new one probes the same addresses
                old.upstreams.stop();
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                self.metrics.config_generation.set(next_gen as i64);
                tracing::info!(generation = next_gen, "configuration reloaded");
                Ok(next_gen)
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "configuration reload refused; keeping the configuration in force");
                Err(e)
            }
        };
        let generation = self.current().generation;
        self.status.send_modify(|s| {
            s.attempts += 1;
            s.generation = generation;
            s.last_error = result.as_ref().err().cloned();
        });
        result
    }
}
