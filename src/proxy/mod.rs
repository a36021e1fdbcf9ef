//! The pingora `ProxyHttp` implementation: glue only. Every decision is made by the
//! pure functions in [`crate::hygiene`], [`crate::matcher`] and the session modules;
//! this module moves data between pingora and them, one file per phase:
//! `request` (hygiene, matching, session, access), `upstream` (the forwarded
//! request), `response` (cookies, cache headers), `logout_flow` (401 rewrite and the
//! logout endpoint), `gate` (CSRF and `require`), `respond` (answers rotagate
//! writes itself).

mod gate;
mod logout_flow;
mod request;
mod respond;
mod response;
mod upstream;
mod vault;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::session::Decision;
use crate::state::{Runtime, Shared};

/// The proxy: holds the shared state; one instance serves every connection.
#[derive(Debug, Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Proxy { shared }
    }
}

/// Per-request state carried between the hooks.
#[derive(Debug)]
pub struct Ctx {
    /// The configuration this request runs on (taken once, at its start).
    rt: Arc<Runtime>,
    started: Instant,
    /// Index of the matched route, if any.
    route: Option<usize>,
    /// Path for the access log (normalised, without the query).
    log_path: String,
    /// The session decision, on routes that handle sessions.
    session: Option<Decision>,
    /// Vault mode: what the request phase found, for the response phase.
    vault: Option<vault::VaultCtx>,
    /// Set when an upstream 401/403 on this request would become a logout.
    logout: Option<LogoutPlan>,
    /// The body that replaces the upstream's after a rewrite (`None` = pass it on).
    body: Option<BodyRewrite>,
    /// The request's vetted host ([`crate::hygiene::vet_host`]), set by the request phase.
    host: Option<crate::hygiene::RequestHost>,
    /// A CORS preflight on a `require` route: forwarded without credentials, and only
    /// its CORS headers come back.
    preflight: bool,
    /// Set by the gate when some `require` applied to this request (its route's, or
    /// those of a Server Action's owners): the response is never for shared caches.
    held_to_require: bool,
    /// The upstream and addresses this request tried.
    attempt: crate::upstreams::Attempt,
    /// The request arrived over TLS (the TLS listener).
    tls: bool,
}

/// Whether an upstream 401/403 on this request may become a logout, decided from cheap
/// facts when the request comes in; the rest is worked out only when one arrives.
#[derive(Debug)]
struct LogoutPlan {
    on_401: bool,
    on_403: bool,
    /// Set when a 401/403 would answer what rotagate did to the session (see
    /// `request::ours_not_the_apps`), not the browser's session: it then passes.
    ours: Option<&'static str>,
}

/// Replaces the upstream body: upstream chunks are dropped and `body` goes out at the
/// end (once).
#[derive(Debug)]
struct BodyRewrite {
    body: Option<Bytes>,
}

impl Ctx {
    /// The path rules are matched against: the normalised path, with the default
    /// locale added when the app has locales and the path names none (as Next does).
    fn match_path(&self) -> std::borrow::Cow<'_, str> {
        let nx = &self.rt.config.nextjs;
        crate::matcher::locale::localise(
            &self.log_path,
            &nx.base_path,
            &nx.locales,
            &nx.default_locale,
        )
    }

    fn route_name(&self) -> &str {
        match self.route {
            Some(i) => self
                .rt
                .config
                .routes
                .get(i)
                .map_or("-", |r| r.name.as_str()),
            None => "-",
        }
    }
}

use respond::respond_text;

/// True when `session` came in over the TLS listener: pingora's digest of the
/// connection then carries the TLS session.
fn arrived_over_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

impl Proxy {
    /// The one log line of a failed request (pingora's own are suppressed): the error's
    /// kind and side, the route and the path without its query. Never the error's
    /// context text, which may carry raw request or response bytes. Clients that went
    /// away are normal traffic (debug); timeouts of theirs are counted.
    fn log_failure(&self, e: &Error, code: u16, ctx: &Ctx) {
        let downstream = e.esource() == &ErrorSource::Downstream;
        let event = match e.etype() {
            ErrorType::ReadTimedout if downstream => Some("body_timeout"),
            ErrorType::WriteTimedout if downstream => Some("write_timeout"),
            _ => None,
        };
        if let Some(ev) = event {
            self.shared
                .metrics
                .connection_events
                .with_label_values(&[ev])
                .inc();
        }
        let (route, path) = (ctx.route_name(), ctx.log_path.as_str());
        let (error, source) = (e.etype().as_str(), e.esource().as_str());
        match e.esource() {
            ErrorSource::Downstream => tracing::debug!(
                target: "rotagate::proxy",
                route, path, error, source, status = code,
                "client side of the request failed"
            ),
            ErrorSource::Upstream => tracing::warn!(
                target: "rotagate::proxy",
                route, path, error, source, status = code,
                "upstream request failed"
            ),
            _ => tracing::error!(
                target: "rotagate::proxy",
                route, path, error, source, status = code,
                "request failed"
            ),
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            rt: self.shared.current(),
            started: Instant::now(),
            route: None,
            log_path: String::new(),
            session: None,
            vault: None,
            logout: None,
            body: None,
            host: None,
            preflight: false,
            held_to_require: false,
            attempt: Default::default(),
            tls: false,
        }
    }

    /// No downstream modules: pingora's default adds its response compression module
    /// disabled (level 0), which rotagate never enables, and which still builds a
    /// context and runs its filters on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    /// The first hook after a request's header block was read: its header deadline
    /// ends here (the connection's `body_timeout` governs from now on).
    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        crate::conn::stream::header_done(session);
        // over TLS, pingora's digest of the connection carries the TLS session
        ctx.tls = arrived_over_tls(session);
        Ok(())
    }

    /// Hygiene, normalisation and route matching. Answers directly (and returns
    /// `Ok(true)`) for requests that must not reach the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        self.request(session, ctx).await
    }

    /// The matched route's upstream (the default one without a route), and the next of
    /// its addresses; called again for each retry.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let ui = ctx
            .route
            .and_then(|i| ctx.rt.config.routes.get(i))
            .map_or(0, |r| r.upstream);
        ctx.attempt.upstream = ui;
        let peer = ctx.rt.upstreams.get(ui).choose(&mut ctx.attempt);
        Ok(Box::new(peer.clone()))
    }

    /// A connection to the chosen address could not be made (refused, timed out, TLS
    /// refused): nothing of the request was sent. The address is ejected for a while,
    /// and an idempotent request goes to another address of the upstream (bounded);
    /// any other request, a POST above all, is never sent twice.
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let idempotent = session.req_header().method.is_idempotent();
        let up = ctx.rt.upstreams.get(ctx.attempt.upstream);
        let retry = up.connect_failed(&mut ctx.attempt, idempotent);
        e.set_retry(retry);
        e
    }

    /// An error once the request was (at least partly) sent, e.g. on a pooled
    /// connection the upstream had just closed: pingora would send any idempotent
    /// request again on a fresh connection; here only safe methods (GET, HEAD, OPTIONS,
    /// TRACE) are resent — a PUT or DELETE the upstream may already have applied is
    /// never sent twice, as a POST never is.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if crate::upstreams::select::resend_after_send(
            &session.req_header().method,
            session.as_ref().retry_buffer_truncated(),
        ) {
            e.retry.decide_reuse(client_reused);
        } else {
            e.set_retry(false);
        }
        e
    }

    /// Rewrites the request for the upstream: strips spoofable and hop-by-hop headers,
    /// sets `X-Forwarded-*`, merges `Cookie` fields.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.upstream_request(session, up, ctx).await
    }

    /// Final response headers: drop hop-by-hop headers and append rotated cookies.
    /// 1xx responses (including 101 for WebSocket) pass untouched.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        self.response(session, resp, ctx).await
    }

    /// Drops the upstream body of a rewritten response and sends ours at its end.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(rw) = ctx.body.as_mut() {
            *body = if end_of_stream { rw.body.take() } else { None };
        }
        Ok(None)
    }

    /// pingora's own error lines print the request's query (`request_summary`) and the
    /// error's context, which for an unparsable upstream answer is its raw header bytes
    /// (`Set-Cookie` included): they are all suppressed, and [`Self::fail_to_proxy`]
    /// logs its own line with the error's kind only.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, _e: &Error) -> bool {
        true
    }

    /// As [`Self::suppress_error_log`], for the attempts pingora retries (a reused
    /// upstream connection that turned out dead); they are logged at debug level.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &Ctx,
        e: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        tracing::debug!(
            target: "rotagate::proxy",
            route = %ctx.route_name(),
            path = %ctx.log_path,
            error = e.etype().as_str(),
            source = e.esource().as_str(),
            "upstream attempt failed; retrying"
        );
        true
    }

    /// What pingora may print about this request: method and path, never the query.
    fn request_summary(&self, session: &Session, _ctx: &Ctx) -> String {
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }

    /// Maps upstream failures to the answers operators expect: connect problems → 502,
    /// read timeouts → 504; a client whose body stalls past `body_timeout` gets 408.
    /// Nothing rotagate causes itself becomes a logout.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if e.esource() == &ErrorSource::Upstream =>
            {
                504
            }
            ErrorType::ConnectTimedout => 502,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::ReadTimedout => 408,
                    ErrorType::WriteError
                    | ErrorType::ReadError
                    | ErrorType::ConnectionClosed
                    | ErrorType::WriteTimedout => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        self.log_failure(e, code, ctx);
        if code > 0 && session.response_written().is_none() {
            // the connection closes after this answer (`can_reuse_downstream: false`):
            // say so, or a keep-alive client sends its next request into a closing socket
            session.set_keepalive(None);
            let text = StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_ascii_lowercase();
            if let Err(err) = respond_text(session, code, &text).await {
                tracing::debug!(
                    error = err.etype().as_str(),
                    "could not send the error response"
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Metrics and the access line. Logs the path without its query and never a
    /// header value.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let route = ctx.route_name();
        ctx.rt.route_metrics(ctx.route).observe(
            &self.shared.metrics,
            route,
            status,
            elapsed.as_secs_f64(),
        );
        if !ctx.rt.config.log.access {
            return;
        }
        let req = session.req_header();
        let session = ctx.session.as_ref().map_or("-", |d| d.outcome.as_str());
        crate::logging::access(
            &req.method,
            &ctx.log_path,
            route,
            status,
            session,
            elapsed,
            e.map(|e| e.etype().as_str()),
        );
    }
}
