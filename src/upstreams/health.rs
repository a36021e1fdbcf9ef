//! Active health checks: one task per address of an upstream with `health_path`,
//! probing it every `health_interval` over pingora's own connector (so a probe trusts
//! exactly what requests trust), with thresholds deciding the flips.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use super::select::Tracker;
use super::{AddrState, HealthSink, UpstreamRt};
use crate::config::HealthCheck;

/// Starts the health checks of every upstream in `list` that has them on `handle`;
/// returns the handles that stop them.
pub(super) fn spawn_all(
    handle: &tokio::runtime::Handle,
    list: &[UpstreamRt],
    sink: &HealthSink,
) -> Vec<tokio::task::AbortHandle> {
    if list.iter().all(|u| u.health.is_none()) {
        return Vec::new();
    }
    // one connector (and TLS configuration) for this generation's probes
    let connector = Arc::new(Connector::new(None));
    let mut tasks = Vec::new();
    for up in list {
        let Some(hc) = &up.health else { continue };
        for a in &up.addresses {
            let mut peer = a.peer.clone();
            peer.options.connection_timeout = Some(hc.timeout);
            peer.options.total_connection_timeout = Some(hc.timeout);
            peer.options.read_timeout = Some(hc.timeout);
            peer.options.write_timeout = Some(hc.timeout);
            let probe = Probe {
                connector: connector.clone(),
                peer,
                host: a.authority.clone(),
                check: hc.clone(),
                state: a.state.clone(),
                upstream: up.name.clone(),
                address: a.authority.clone(),
                sink: sink.clone(),
            };
            tasks.push(handle.spawn(probe.run()).abort_handle());
        }
    }
    tasks
}

/// One address's health check loop.
struct Probe {
    connector: Arc<Connector>,
    peer: HttpPeer,
    /// The `Host` of the probe request (the URL's `host:port`).
    host: String,
    check: HealthCheck,
    state: Arc<AddrState>,
    upstream: String,
    address: String,
    sink: HealthSink,
}

impl Probe {
    async fn run(self) {
        let m = &self.sink.metrics;
        let labels = |result| [self.upstream.as_str(), self.address.as_str(), result];
        let (pass, fail) = (
            m.health_checks.with_label_values(&labels("pass")),
            m.health_checks.with_label_values(&labels("fail")),
        );
        let gauge = m
            .healthy
            .with_label_values(&[&self.upstream, &self.address]);
        let mut tracker = Tracker::new(self.state.healthy());
        // the first probe goes out at once, then one per interval; a slow probe delays
        // the next instead of bunching them up
        let mut tick = tokio::time::interval(self.check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let passed = self.probe().await;
            if passed { &pass } else { &fail }.inc();
            if let Some(healthy) = tracker.observe(passed, &self.check) {
                self.state.healthy.store(healthy, Ordering::Relaxed);
                gauge.set(i64::from(healthy));
                if healthy {
                    tracing::info!(target: "rotagate::upstream", upstream = %self.upstream, address = %self.address, "upstream address is healthy again");
                } else {
                    tracing::warn!(target: "rotagate::upstream", upstream = %self.upstream, address = %self.address, path = %self.check.path, "upstream address failed its health checks; it gets no requests while another address is healthy");
                }
                self.sink.changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// One `GET health_path`: passes on a 2xx or 3xx answer within `health_timeout`.
    async fn probe(&self) -> bool {
        let attempt = async {
            let (mut s, _) = self.connector.get_http_session(&self.peer).await.ok()?;
            let mut req = RequestHeader::build("GET", self.check.path.as_bytes(), None).ok()?;
            req.insert_header(http::header::HOST, &self.host).ok()?;
            req.insert_header(http::header::USER_AGENT, "rotagate-health-check")
                .ok()?;
            req.insert_header(http::header::CONNECTION, "close").ok()?;
            s.write_request_header(Box::new(req)).await.ok()?;
            s.finish_request_body().await.ok()?;
            s.read_response_header().await.ok()?;
            let status = s.response_header()?.status.as_u16();
            // the connection is not pooled: it closes when `s` drops
            Some((200..400).contains(&status))
        };
        matches!(
            tokio::time::timeout(self.check.timeout + GRACE, attempt).await,
            Ok(Some(true))
        )
    }
}

/// Slack past `health_timeout` for the outer bound (the connector's own timeouts fire
/// first; this one only guards against a probe that never returns).
const GRACE: Duration = Duration::from_millis(50);
