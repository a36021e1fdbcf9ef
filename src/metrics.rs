//! Prometheus metrics, served by the admin listener at `/metrics`.
//!
//! Labels never carry token values, cookie values or paths with query strings: only
//! route names, status classes and fixed reason words.

use std::sync::OnceLock;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of one proxy instance (its own registry, so tests can run several).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by route name and status class (`2xx`, …).
    pub requests: IntCounterVec,
    /// Request duration in seconds, by route.
    pub latency: HistogramVec,
    /// Config reloads by result (`ok`, `error`).
    pub reloads: IntCounterVec,
    /// The generation of the config in force (1 = the one loaded at start).
    pub config_generation: IntGauge,
    /// Session tokens re-minted.
    pub rotations: IntCounter,
    /// Session tokens refused, by reason (`expired`, `bad_signature`, `unknown_kid`,
    /// `malformed`, `over_age`, …).
    pub invalid_tokens: IntCounterVec,
    /// Logouts by reason (`upstream_401`, `endpoint`, `expired`, `reuse`) and answer kind.
    pub logouts: IntCounterVec,
    /// Requests refused by access rules, by reason.
    pub denials: IntCounterVec,
    /// Requests refused or altered by request hygiene, by reason: `host_missing`,
    /// `host_invalid`, `host_misdirected`, `path_*` (see `PathError::reason`),
    /// `identity_value_invalid` (an identity header skipped), `regex_limit` (a route
    /// pattern hit the backtracking limit).
    pub hygiene: IntCounterVec,
    /// Client connection events, by kind: `header_timeout`, `idle_timeout`,
    /// `body_timeout`, `write_timeout`, `limit_wait` (accepting paused at
    /// `max_connections`), `accept_error`, `lingering_close`.
    pub connection_events: IntCounterVec,
    /// Client connections open now (lingering closes included).
    pub connections_open: IntGauge,
    /// Session safety events, by event: limits hit (`chunk_limit`, `candidate_limit`,
    /// `cookie_limit`, `deletion_limit`), upstream 401/403s passed through because rotagate itself had
    /// refused the token (`passed_401_refused_token`, `passed_403_refused_token`), the
    /// app's own session cookie winning over a rotation (`app_cookie_won`), and
    /// responses made unstorable for shared caches (`made_private`).
    pub session_events: IntCounterVec,
    /// Vault metrics (DESIGN §4.2).
    pub vault: VaultMetrics,
    /// Upstream address metrics.
    pub upstreams: UpstreamMetrics,
}

/// Per-upstream, per-address metrics. `address` is the `host:port` of the URL as
/// written in the configuration.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// `rotagate_upstream_healthy{upstream,address}`: 1 while active health checks
    /// (if any) hold the address healthy, else 0.
    pub healthy: IntGaugeVec,
    /// `rotagate_upstream_health_checks_total{upstream,address,result}`: probes by
    /// `result` (`pass`, `fail`).
    pub health_checks: IntCounterVec,
    /// `rotagate_upstream_connect_failures_total{upstream,address}`: connections that
    /// could not be made (refused, timed out, TLS refused); each ejects the address for
    /// `eject_for` when the upstream has another.
    pub connect_failures: IntCounterVec,
    /// `rotagate_upstream_retries_total{upstream}`: requests sent again to another
    /// address after a connect failure.
    pub retries: IntCounterVec,
}

impl UpstreamMetrics {
    fn new() -> UpstreamMetrics {
        UpstreamMetrics {
            healthy: IntGaugeVec::new(
                Opts::new(
                    "rotagate_upstream_healthy",
                    "1 while an upstream address passes its health checks (or has none), else 0",
                ),
                &["upstream", "address"],
            )
            .expect("static metric definition"),
            health_checks: IntCounterVec::new(
                Opts::new(
                    "rotagate_upstream_health_checks_total",
                    "Upstream health probes, by result (pass, fail)",
                ),
                &["upstream", "address", "result"],
            )
            .expect("static metric definition"),
            connect_failures: IntCounterVec::new(
                Opts::new(
                    "rotagate_upstream_connect_failures_total",
                    "Connections to an upstream address that could not be made",
                ),
                &["upstream", "address"],
            )
            .expect("static metric definition"),
            retries: IntCounterVec::new(
                Opts::new(
                    "rotagate_upstream_retries_total",
                    "Idempotent requests sent to another address after a connect failure",
                ),
                &["upstream"],
            )
            .expect("static metric definition"),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.healthy.clone()),
            Box::new(self.health_checks.clone()),
            Box::new(self.connect_failures.clone()),
            Box::new(self.retries.clone()),
        ]
    }
}

/// Vault mode's metrics: how handles rotate, how often a predecessor was accepted and
/// why, reuse detections, revocations, store health.
#[derive(Clone)]
pub struct VaultMetrics {
    /// Handle rotations (a family moved to its next generation).
    pub rotations: IntCounter,
    /// Predecessor handles accepted, by `window`: `unseen` (the successor was never
    /// presented: a lost response) or `slack` (within `session.slack` of its first use).
    pub predecessor_accepts: IntCounterVec,
    /// Handles presented outside the accepted window (each revoked a family).
    pub reuse_detected: IntCounter,
    /// Families revoked, by `reason` (`reuse`, `admin`, `app_logout`, `logout`,
    /// `subject_changed`).
    pub revocations: IntCounterVec,
    /// Compare-and-swap writes lost to another writer (then decided again).
    pub cas_conflicts: IntCounter,
    /// Requests whose handle gave no session, by `reason` (`malformed`, `bad_tag`,
    /// `unknown_kid`, `expired`, `unknown_family`, `ahead`, …).
    pub anonymous: IntCounterVec,
    /// Families created (logins and adoptions), by `how` (`login`, `adopted`).
    pub logins: IntCounterVec,
    /// Store operation latency in seconds, by `op` (`get`, `cas`, `list`, `cleanup`).
    pub store_latency: HistogramVec,
    /// Store errors answered with 503 (nothing cleared, nothing revoked), by `phase`.
    pub store_errors: IntCounterVec,
    /// Live families (after the last cleanup pass, adjusted on logins and revocations).
    pub live_families: IntGauge,
    /// 1 while the session store works (Redis reachable, its data intact), else 0;
    /// set when `/metrics` or `/store` is read.
    pub store_up: IntGauge,
    /// Handle `Set-Cookie`s withheld, by `why`: `stale` (the generation was no longer
    /// current when the response went out), `app_cookie_won`.
    pub handle_withheld: IntCounterVec,
}

impl VaultMetrics {
    fn new() -> VaultMetrics {
        let c =
            |name: &str, help: &str| IntCounter::new(name, help).expect("static metric definition");
        let v = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label]).expect("static metric definition")
        };
        VaultMetrics {
            rotations: c("rotagate_vault_rotations_total", "Vault handle rotations"),
            predecessor_accepts: v(
                "rotagate_vault_predecessor_accepts_total",
                "Predecessor handles accepted, by window (unseen, slack)",
                "window",
            ),
            reuse_detected: c(
                "rotagate_vault_reuse_detected_total",
                "Vault handles presented outside the accepted window (family revoked)",
            ),
            revocations: v(
                "rotagate_vault_revocations_total",
                "Vault families revoked, by reason",
                "reason",
            ),
            cas_conflicts: c(
                "rotagate_vault_cas_conflicts_total",
                "Vault store compare-and-swap conflicts",
            ),
            anonymous: v(
                "rotagate_vault_anonymous_total",
                "Vault handles that gave no session, by reason",
                "reason",
            ),
            logins: v(
                "rotagate_vault_logins_total",
                "Vault families created, by how (login, adopted)",
                "how",
            ),
            store_latency: HistogramVec::new(
                HistogramOpts::new(
                    "rotagate_vault_store_latency_seconds",
                    "Vault store operation latency",
                )
                .buckets(vec![
                    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0,
                ]),
                &["op"],
            )
            .expect("static metric definition"),
            store_errors: v(
                "rotagate_vault_store_errors_total",
                "Vault store errors answered with 503, by phase",
                "phase",
            ),
            live_families: IntGauge::new("rotagate_vault_live_families", "Live vault families")
                .expect("static metric definition"),
            store_up: IntGauge::new(
                "rotagate_store_up",
                "1 while the vault session store works (reachable, data intact), else 0",
            )
            .expect("static metric definition"),
            handle_withheld: v(
                "rotagate_vault_handle_withheld_total",
                "Vault handle Set-Cookies withheld, by why (stale, app_cookie_won)",
                "why",
            ),
        }
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.rotations.clone()),
            Box::new(self.predecessor_accepts.clone()),
            Box::new(self.reuse_detected.clone()),
            Box::new(self.revocations.clone()),
            Box::new(self.cas_conflicts.clone()),
            Box::new(self.anonymous.clone()),
            Box::new(self.logins.clone()),
            Box::new(self.store_latency.clone()),
            Box::new(self.store_errors.clone()),
            Box::new(self.live_families.clone()),
            Box::new(self.store_up.clone()),
            Box::new(self.handle_withheld.clone()),
        ]
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        // The names and label sets are static, so construction cannot fail at run time;
        // a failure here is a programming error caught by the unit test below.
        let requests = IntCounterVec::new(
            Opts::new(
                "rotagate_requests_total",
                "Requests by route and status class",
            ),
            &["route", "status"],
        )
        .expect("static metric definition");
        let latency = HistogramVec::new(
            HistogramOpts::new("rotagate_request_duration_seconds", "Request duration").buckets(
                vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            ),
            &["route"],
        )
        .expect("static metric definition");
        let reloads = IntCounterVec::new(
            Opts::new("rotagate_config_reloads_total", "Config reloads by result"),
            &["result"],
        )
        .expect("static metric definition");
        let config_generation = IntGauge::new(
            "rotagate_config_generation",
            "Generation of the configuration in force",
        )
        .expect("static metric definition");
        let rotations = IntCounter::new(
            "rotagate_session_rotations_total",
            "Session tokens re-minted",
        )
        .expect("static metric definition");
        let invalid_tokens = IntCounterVec::new(
            Opts::new(
                "rotagate_session_invalid_total",
                "Session tokens refused, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let logouts = IntCounterVec::new(
            Opts::new(
                "rotagate_logouts_total",
                "Logouts by reason and answer kind",
            ),
            &["reason", "kind"],
        )
        .expect("static metric definition");
        let denials = IntCounterVec::new(
            Opts::new(
                "rotagate_access_denied_total",
                "Requests refused by access rules",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let hygiene = IntCounterVec::new(
            Opts::new(
                "rotagate_hygiene_total",
                "Requests refused or altered by request hygiene, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let connection_events = IntCounterVec::new(
            Opts::new(
                "rotagate_connection_events_total",
                "Client connection events: timeouts, limits, accept errors",
            ),
            &["event"],
        )
        .expect("static metric definition");
        let session_events = IntCounterVec::new(
            Opts::new(
                "rotagate_session_events_total",
                "Session safety events: limits hit, 401s passed through, app cookies that won, responses made private",
            ),
            &["event"],
        )
        .expect("static metric definition");
        let connections_open =
            IntGauge::new("rotagate_connections_open", "Client connections open now")
                .expect("static metric definition");
        let vault = VaultMetrics::new();
        let upstreams = UpstreamMetrics::new();
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(reloads.clone()),
            Box::new(config_generation.clone()),
            Box::new(rotations.clone()),
            Box::new(invalid_tokens.clone()),
            Box::new(logouts.clone()),
            Box::new(denials.clone()),
            Box::new(hygiene.clone()),
            Box::new(connection_events.clone()),
            Box::new(connections_open.clone()),
            Box::new(session_events.clone()),
            Box::new(DroppedLogLines::new()),
        ]
        .into_iter()
        .chain(vault.collectors())
        .chain(upstreams.collectors())
        {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            reloads,
            config_generation,
            rotations,
            invalid_tokens,
            logouts,
            denials,
            hygiene,
            connection_events,
            connections_open,
            session_events,
            vault,
            upstreams,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // encoding into a Vec only fails on invalid metric families, which we never build
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `rotagate_log_lines_dropped_total`: read from the process's log writer
/// ([`crate::logging::dropped_lines`]) at each scrape, so it is the same for every
/// proxy instance of the process.
struct DroppedLogLines {
    template: IntCounter,
}

impl DroppedLogLines {
    fn new() -> Self {
        DroppedLogLines {
            template: IntCounter::new(
                "rotagate_log_lines_dropped_total",
                "Log lines dropped because the log writer's queue was full",
            )
            .expect("static metric definition"),
        }
    }
}

impl Collector for DroppedLogLines {
    fn desc(&self) -> Vec<&Desc> {
        self.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = IntCounter::with_opts(Opts::new(
            "rotagate_log_lines_dropped_total",
            "Log lines dropped because the log writer's queue was full",
        ))
        .expect("static metric definition");
        now.inc_by(crate::logging::dropped_lines());
        now.collect()
    }
}

/// The status classes, in the order of [`class_index`].
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Index of the `2xx`-style class of a status code in [`CLASSES`].
fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// `2xx`-style class of a status code (`0` → `none`, for connections that died).
pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

/// One route's request counters and latency histogram, looked up by label once and
/// then kept: a request bumps atomics instead of hashing its labels into the vector
/// under its lock. Each handle is resolved at its first use, so `/metrics` shows the
/// same series as before (a route's series appear once it has served a request).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    requests: [OnceLock<IntCounter>; 6],
    latency: OnceLock<Histogram>,
}

impl RouteMetrics {
    /// Counts one request of route `route` answered with `status`, taking `seconds`.
    pub fn observe(&self, m: &Metrics, route: &str, status: u16, seconds: f64) {
        let class = class_index(status);
        self.requests[class]
            .get_or_init(|| m.requests.with_label_values(&[route, CLASSES[class]]))
            .inc();
        self.latency
            .get_or_init(|| m.latency.with_label_values(&[route]))
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.requests.with_label_values(&["app", "2xx"]).inc();
        m.reloads.with_label_values(&["ok"]).inc();
        m.latency.with_label_values(&["app"]).observe(0.002);
        let text = m.render();
        assert!(text.contains("rotagate_requests_total{route=\"app\",status=\"2xx\"} 1"));
        assert!(text.contains("rotagate_config_reloads_total{result=\"ok\"} 1"));
        assert!(text.contains("rotagate_request_duration_seconds_bucket"));
        m.vault.rotations.inc();
        m.vault.live_families.set(3);
        assert!(m.render().contains("rotagate_vault_rotations_total 1"));
        assert!(m.render().contains("rotagate_vault_live_families 3"));
    }

    #[test]
    fn dropped_log_lines_are_a_family_from_the_start() {
        let text = Metrics::new().render();
        assert!(
            text.contains("rotagate_log_lines_dropped_total 0"),
            "{text}"
        );
    }

    #[test]
    fn route_handles_count_into_the_labelled_series() {
        let m = Metrics::new();
        let r = RouteMetrics::default();
        r.observe(&m, "app", 204, 0.001);
        r.observe(&m, "app", 200, 0.001);
        r.observe(&m, "app", 0, 0.001);
        let text = m.render();
        assert!(text.contains("rotagate_requests_total{route=\"app\",status=\"2xx\"} 2"));
        assert!(text.contains("rotagate_requests_total{route=\"app\",status=\"none\"} 1"));
        assert!(
            !text.contains("status=\"5xx\""),
            "unused classes stay absent"
        );
        assert!(text.contains("rotagate_request_duration_seconds_count{route=\"app\"} 3"));
    }

    #[test]
    fn classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(504), "5xx");
        assert_eq!(status_class(0), "none");
    }
}
