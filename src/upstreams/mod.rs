//! Upstreams at run time: each configured upstream's addresses as pingora peers, their
//! live state (passive ejection, active health), the round-robin choice and the health
//! check tasks. The decisions are in [`select`]; this room keeps state and moves data.
//!
//! A single-address upstream (the common pass-through case) costs a request what it
//! did before: one peer clone, no lock, no clock read, no counter.
//!
//! NOTE: pingora-load-balancing's `Backends`/`RoundRobin` are not used: they keep
//! backends behind an `ArcSwap` updated by their own discovery and health loop, where
//! here the set is fixed per configuration generation and its state must carry over a
//! reload, be counted per address in our metrics and decide `/readyz`; the selection
//! they would give is the few lines of [`select::pick`].

pub mod health;
pub mod select;

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pingora::upstreams::peer::HttpPeer;
use prometheus::IntCounter;
use tokio::sync::watch;

use crate::config::{Config, HealthCheck, Upstream};
use crate::metrics::UpstreamMetrics;

/// What a request tried so far: the upstream, the address of its last attempt, the
/// addresses it tried (bit `i` = address `i`) and its connect retries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attempt {
    /// Index into [`Upstreams`].
    pub upstream: usize,
    /// The address of the last attempt.
    pub address: usize,
    /// Addresses tried, as bits.
    pub tried: u64,
    /// Connect retries made.
    pub retries: u8,
}

/// One address's live state. Kept across configuration reloads that keep the same
/// upstream name, address and health path (see [`StateRegistry`]).
#[derive(Debug)]
pub struct AddrState {
    healthy: AtomicBool,
    /// Milliseconds on [`now_ms`]'s clock until which the address is skipped; 0: not.
    ejected_until: AtomicU64,
}

impl AddrState {
    fn new() -> AddrState {
        AddrState {
            healthy: AtomicBool::new(true),
            ejected_until: AtomicU64::new(0),
        }
    }

    /// What active health checks say (true without any).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Skipped now after a connect failure.
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    fn usable(&self) -> bool {
        self.healthy() && !self.ejected()
    }
}

/// Milliseconds since the first call in this process, never 0.
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// `(upstream name, authority, health path)`: what identifies one address's state.
type StateKey = (String, String, Option<String>);

/// The address states of the process, handed from one configuration generation to the
/// next: a reload that keeps an address keeps what is known of it (an unhealthy
/// address stays out until its probes pass), a new one starts healthy.
#[derive(Debug, Default)]
pub struct StateRegistry {
    map: Mutex<HashMap<StateKey, Arc<AddrState>>>,
}

impl StateRegistry {
    /// The states for `keys`, existing ones reused; forgets every other key and
    /// returns those it forgot (their metric series go).
    fn adopt(&self, keys: &[StateKey]) -> (Vec<Arc<AddrState>>, Vec<StateKey>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(keys.len());
        let states = keys
            .iter()
            .map(|k| {
                next.entry(k.clone())
                    .or_insert_with(|| {
                        map.get(k)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(AddrState::new()))
                    })
                    .clone()
            })
            .collect();
        let gone = map
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        *map = next;
        (states, gone)
    }
}

/// One address of an upstream.
#[derive(Debug)]
pub struct Address {
    /// `host:port` as written (the metrics' `address` label).
    pub authority: String,
    /// The URL as written.
    pub url: String,
    /// The peer requests clone: resolved address, TLS and server name, timeouts.
    pub peer: HttpPeer,
    /// Live state.
    pub state: Arc<AddrState>,
    connect_failures: IntCounter,
}

/// One upstream at run time.
#[derive(Debug)]
pub struct UpstreamRt {
    /// Its name ([`crate::config::DEFAULT_UPSTREAM`] for `[upstream]`).
    pub name: String,
    /// Its addresses, in configuration order.
    pub addresses: Vec<Address>,
    /// Active health checks, if configured.
    pub health: Option<HealthCheck>,
    /// Connect with TLS.
    pub tls: bool,
    next: AtomicUsize,
    eject_for: Duration,
    retries: IntCounter,
}

impl UpstreamRt {
    /// The peer for the next attempt of a request, recorded in `attempt`.
    pub fn choose(&self, attempt: &mut Attempt) -> &HttpPeer {
        let n = self.addresses.len();
        let i = if n == 1 {
            0
        } else {
            // a request takes one turn of the round; its retries go on from the
            // address that failed instead of taking turns of other requests
            let start = if attempt.tried == 0 {
                self.next.fetch_add(1, Ordering::Relaxed)
            } else {
                attempt.address + 1
            };
            select::pick(n, start % n, attempt.tried, |i| {
                self.addresses[i].state.usable()
            })
        };
        attempt.address = i;
        if i < 64 {
            attempt.tried |= 1 << i;
        }
        &self.addresses[i].peer
    }

    /// Records that `attempt`'s connection could not be made, and decides whether the
    /// request goes to another address (see [`select::retry_connect`]).
    pub fn connect_failed(&self, attempt: &mut Attempt, idempotent: bool) -> bool {
        let n = self.addresses.len();
        if let Some(a) = self.addresses.get(attempt.address) {
            a.connect_failures.inc();
            // with one address there is nothing to skip to: never eject it
            if n > 1 {
                let until = now_ms()
                    .saturating_add(u64::try_from(self.eject_for.as_millis()).unwrap_or(u64::MAX));
                a.state.ejected_until.store(until, Ordering::Relaxed);
            }
        }
        let retry = select::retry_connect(idempotent, attempt.retries, n, attempt.tried);
        if retry {
            attempt.retries += 1;
            self.retries.inc();
        }
        retry
    }

    /// True when some address passes its health checks (always without checks).
    pub fn any_healthy(&self) -> bool {
        self.addresses.iter().any(|a| a.state.healthy())
    }

    /// The state for `/config`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "tls": self.tls,
            "health_check": self.health.as_ref().map(|h| serde_json::json!({
                "path": h.path,
                "interval_ms": h.interval.as_millis() as u64,
                "timeout_ms": h.timeout.as_millis() as u64,
                "healthy_threshold": h.healthy_threshold,
                "unhealthy_threshold": h.unhealthy_threshold,
            })),
            "addresses": self.addresses.iter().map(|a| serde_json::json!({
                "address": a.authority,
                "url": a.url,
                "healthy": a.state.healthy(),
                "ejected": a.state.ejected(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Why the upstreams of a valid configuration could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: cannot resolve {authority}: {reason}")]
pub struct ResolveError {
    /// `upstream` or `upstreams.NAME`.
    pub key: String,
    /// The `host:port` that did not resolve.
    pub authority: String,
    /// The resolver's words.
    pub reason: String,
}

/// Every upstream of one configuration generation (index 0 is the default), and its
/// health check tasks, which end with it.
#[derive(Debug)]
pub struct Upstreams {
    list: Vec<UpstreamRt>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the health tasks report to: the process's metrics and its count of health
/// changes (which `/config?after_health_changes=N` waits on).
#[derive(Clone)]
pub struct HealthSink {
    /// The metrics.
    pub metrics: UpstreamMetrics,
    /// Bumped at every flip of an address's health.
    pub changes: watch::Sender<u64>,
}

impl std::fmt::Debug for HealthSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthSink")
    }
}

impl Upstreams {
    /// Resolves every address (once per configuration load), builds its peer, takes its
    /// state from `registry` and, inside a tokio runtime, starts the health checks.
    pub fn build(
        config: &Config,
        registry: &StateRegistry,
        sink: &HealthSink,
    ) -> Result<Upstreams, ResolveError> {
        let mut resolved = Vec::with_capacity(config.upstreams.len());
        for (ui, up) in config.upstreams.iter().enumerate() {
            let key = if ui == 0 {
                "upstream".to_string()
            } else {
                format!("upstreams.{}", up.name)
            };
            let mut peers = Vec::with_capacity(up.urls.len());
            for u in &up.urls {
                let err = |reason: String| ResolveError {
                    key: key.clone(),
                    authority: u.authority.clone(),
                    reason,
                };
                let addr = u
                    .authority
                    .to_socket_addrs()
                    .map_err(|e| err(e.to_string()))?
                    .next()
                    .ok_or_else(|| err("no address".to_string()))?;
                peers.push(peer(up, ui, addr, &u.host));
            }
            resolved.push(peers);
        }
        let keys: Vec<StateKey> = config
            .upstreams
            .iter()
            .flat_map(|up| {
                up.urls.iter().map(|u| {
                    (
                        up.name.clone(),
                        u.authority.clone(),
                        up.health.as_ref().map(|h| h.path.clone()),
                    )
                })
            })
            .collect();
        let (states, gone) = registry.adopt(&keys);
        let m = &sink.metrics;
        for (name, authority, _) in gone {
            let _ = m.healthy.remove_label_values(&[&name, &authority]);
        }
        let mut states = states.into_iter();
        let list = config
            .upstreams
            .iter()
            .zip(resolved)
            .map(|(up, peers)| {
                let addresses = up
                    .urls
                    .iter()
                    .zip(peers)
                    .map(|(u, peer)| {
                        let state = states.next().unwrap_or_else(|| Arc::new(AddrState::new()));
                        // without health checks an address is healthy, whatever it was
                        if up.health.is_none() {
                            state.healthy.store(true, Ordering::Relaxed);
                        }
                        m.healthy
                            .with_label_values(&[&up.name, &u.authority])
                            .set(i64::from(state.healthy()));
                        Address {
                            authority: u.authority.clone(),
                            url: u.url.clone(),
                            peer,
                            state,
                            connect_failures: m
                                .connect_failures
                                .with_label_values(&[&up.name, &u.authority]),
                        }
                    })
                    .collect();
                UpstreamRt {
                    name: up.name.clone(),
                    addresses,
                    health: up.health.clone(),
                    tls: up.tls,
                    next: AtomicUsize::new(0),
                    eject_for: up.eject_for,
                    retries: m.retries.with_label_values(&[&up.name]),
                }
            })
            .collect();
        let mut set = Upstreams {
            list,
            tasks: Vec::new(),
        };
        // outside a tokio runtime (`rotagate check`-like callers) nothing is probed
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            set.tasks = health::spawn_all(&handle, &set.list, sink);
        }
        Ok(set)
    }

    /// Upstream `i` (0, the default, for an index out of range).
    pub fn get(&self, i: usize) -> &UpstreamRt {
        self.list.get(i).unwrap_or(&self.list[0])
    }

    /// Every upstream, the default first.
    pub fn iter(&self) -> impl Iterator<Item = &UpstreamRt> {
        self.list.iter()
    }

    /// Ends the health checks of this generation (a reload replaced it).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Readiness as the default upstream's health decides it: not ready while it has
    /// health checks and none of its addresses passes them. Passive ejection does not
    /// count: it reacts to single failures and lifts by itself.
    pub fn ready(&self) -> Result<(), String> {
        let d = self.get(0);
        if d.health.is_some() && !d.any_healthy() {
            return Err(format!("upstream {:?} has no healthy address", d.name));
        }
        Ok(())
    }

    /// The state of every upstream for `/config`.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.list.iter().map(UpstreamRt::status_json).collect())
    }
}

/// The peer of one address: TLS with the URL's host as server name (certificates are
/// verified, against `ca` when set), the upstream's timeouts, and a connection pool
/// group of its own per upstream so upstreams with different trust never share one.
fn peer(up: &Upstream, index: usize, addr: std::net::SocketAddr, host: &str) -> HttpPeer {
    let sni = if up.tls {
        host.to_string()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, up.tls, sni);
    peer.group_key = index as u64;
    peer.options.connection_timeout = Some(up.connect_timeout);
    peer.options.read_timeout = Some(up.read_timeout);
    peer.options.write_timeout = Some(up.write_timeout);
    peer.options.idle_timeout = Some(up.idle_timeout);
    if let Some(ca) = &up.ca {
        use pingora::utils::tls::{parse_x509, WrappedX509};
        // every certificate was parsed at validation, so `parse_x509` cannot panic here
        let certs: Vec<WrappedX509> = ca
            .iter()
            .map(|der| WrappedX509::new(der.clone(), parse_x509))
            .collect();
        peer.options.ca = Some(Arc::from(certs));
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, addr: &str, path: Option<&str>) -> StateKey {
        (name.into(), addr.into(), path.map(str::to_string))
    }

    #[test]
    fn a_reload_keeps_the_state_of_addresses_it_keeps() {
        let reg = StateRegistry::default();
        let (first, gone) =
            reg.adopt(&[key("app", "a:1", Some("/h")), key("app", "b:1", Some("/h"))]);
        assert!(gone.is_empty());
        first[0].healthy.store(false, Ordering::Relaxed);
        // same address and path: the same state; another path: a fresh one
        let (next, gone) =
            reg.adopt(&[key("app", "a:1", Some("/h")), key("app", "b:1", Some("/x"))]);
        assert!(Arc::ptr_eq(&first[0], &next[0]));
        assert!(!next[0].healthy());
        assert!(!Arc::ptr_eq(&first[1], &next[1]));
        assert!(next[1].healthy(), "new addresses start healthy");
        assert_eq!(gone, vec![key("app", "b:1", Some("/h"))]);
    }

    #[test]
    fn ejection_lasts_until_its_deadline() {
        let s = AddrState::new();
        assert!(s.usable());
        s.ejected_until.store(now_ms() + 60_000, Ordering::Relaxed);
        assert!(s.ejected() && !s.usable());
        s.ejected_until.store(1, Ordering::Relaxed);
        assert!(!s.ejected());
    }
}
