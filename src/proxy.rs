//! The pingora `ProxyHttp` implementation: glue only. Every decision is made by the
//! pure functions in [`crate::hygiene`], [`crate::matcher`] and the session modules;
//! this file moves data between pingora and them.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, COOKIE};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

use crate::config::UpstreamStatusAction;
use crate::logout::{self, Answer, Kind};
use crate::matcher::{path, RequestParts};
use crate::session::{self, cookies, Decision, Outcome};
use crate::state::{Runtime, Shared};
use crate::{access, hygiene};

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
    /// Set when an upstream 401/403 on this request would become a logout.
    logout: Option<LogoutPlan>,
    /// The body that replaces the upstream's after a rewrite (`None` = pass it on).
    body: Option<BodyRewrite>,
}

/// Whether an upstream 401/403 on this request may become a logout, decided from cheap
/// facts when the request comes in; the rest is worked out only when one arrives.
#[derive(Debug)]
struct LogoutPlan {
    on_401: bool,
    on_403: bool,
}

/// Replaces the upstream body: upstream chunks are dropped and `body` goes out at the
/// end (once).
#[derive(Debug)]
struct BodyRewrite {
    body: Option<Bytes>,
}

impl Ctx {
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

/// Writes a complete small response from `request_filter`. The explicit
/// `Content-Length` keeps the connection reusable (pingora's `respond_error*` forces
/// `Connection: close`, wrong for redirects and ordinary refusals).
pub(crate) async fn respond(
    session: &mut Session,
    status: u16,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 2))?;
    for (name, value) in headers {
        resp.append_header(name.to_string(), value.as_str())?;
    }
    resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only || body.is_empty())
        .await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes an [`Answer`] from `request_filter`.
async fn respond_answer(session: &mut Session, a: Answer) -> Result<()> {
    let mut headers: Vec<(&str, String)> = a.headers.clone();
    for c in &a.set_cookies {
        headers.push(("set-cookie", c.clone()));
    }
    respond(session, a.status, &headers, a.body).await
}

async fn respond_text(session: &mut Session, status: u16, text: &str) -> Result<()> {
    respond(
        session,
        status,
        &[
            ("content-type", "text/plain; charset=utf-8".to_string()),
            ("cache-control", "no-store".to_string()),
        ],
        Bytes::from(format!("{text}\n")),
    )
    .await
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
            logout: None,
            body: None,
        }
    }

    /// Hygiene, normalisation and route matching. Answers directly (and returns
    /// `Ok(true)`) for requests that must not reach the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let limit = ctx.rt.config.listen.max_header_bytes;
        if hygiene::header_block_size(req.method.as_str(), req.raw_path().len(), &req.headers)
            > limit
        {
            ctx.log_path = "-".to_string();
            respond_text(session, 431, "request header fields too large").await?;
            return Ok(true);
        }
        let raw_path = req.uri.path().to_string();
        let normalised = match path::normalise(&raw_path) {
            Ok(p) => p,
            Err(e) => {
                ctx.log_path = "-".to_string();
                respond_text(session, 400, &format!("bad request: {e}")).await?;
                return Ok(true);
            }
        };
        if normalised != raw_path {
            let pq = match req.uri.query() {
                Some(q) => format!("{normalised}?{q}"),
                None => normalised.clone(),
            };
            match http::Uri::builder().path_and_query(pq).build() {
                Ok(uri) => session.req_header_mut().set_uri(uri),
                Err(_) => {
                    respond_text(session, 400, "bad request: invalid path").await?;
                    return Ok(true);
                }
            }
        }
        ctx.log_path = normalised;
        if ctx.log_path == ctx.rt.config.logout.endpoint {
            self.logout_endpoint(session, ctx).await?;
            return Ok(true);
        }

        let req = session.req_header();
        let host = hygiene::request_host(req.uri.authority().map(|a| a.as_str()), &req.headers);
        let parts = RequestParts {
            method: req.method.as_str(),
            host: host.as_deref(),
            path: &ctx.log_path,
            query: req.uri.query(),
            headers: &req.headers,
        };
        ctx.route = ctx.rt.config.rules.first_match(&parts);

        let handles_sessions = ctx
            .route
            .and_then(|i| ctx.rt.config.routes.get(i))
            .is_some_and(|r| r.handles_sessions());
        if let (true, Some(engine)) = (handles_sessions, &ctx.rt.session) {
            let cookie = hygiene::merged_cookie(&req.headers);
            let may_rotate =
                session::rotation_allowed(&req.method, &req.headers) && !session.is_upgrade_req();
            let decision =
                engine.process(cookie.as_deref(), self.shared.clock.now_unix(), may_rotate);
            let m = &self.shared.metrics;
            match decision.outcome {
                Outcome::Rotated => m.rotations.inc(),
                Outcome::Invalid(why) => {
                    m.invalid_tokens.with_label_values(&[why.as_str()]).inc();
                    if why.certainly_dead() {
                        // the dead cookie is deleted in the browser: a logout by expiry
                        m.logouts
                            .with_label_values(&["expired", "cookie_cleared"])
                            .inc();
                    }
                }
                Outcome::None | Outcome::Valid => {}
            }
            ctx.session = Some(decision);
        }
        if self.enforce_access(session, ctx).await? {
            return Ok(true);
        }
        if let Some(route) = ctx.route.and_then(|i| ctx.rt.config.routes.get(i)) {
            let on_401 = route.on_401 == UpstreamStatusAction::Logout;
            let on_403 = route.on_403 == UpstreamStatusAction::Logout;
            let req = session.req_header();
            // a 401 about a bearer token, or a failed login form, is the app's business
            let eligible = handles_sessions
                && (on_401 || on_403)
                && !req.headers.contains_key(http::header::AUTHORIZATION)
                && !is_login_path(&ctx.log_path, &ctx.rt.config.logout.login_url);
            if eligible {
                ctx.logout = Some(LogoutPlan { on_401, on_403 });
            }
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(ctx.rt.peer.clone()))
    }

    /// Rewrites the request for the upstream: strips spoofable and hop-by-hop headers,
    /// sets `X-Forwarded-*`, merges `Cookie` fields.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for name in hygiene::spoofable_names(&up.headers) {
            up.remove_header(&name);
        }
        // identity headers come only from rotagate, and only for verified sessions
        let identity = &ctx.rt.config.identity;
        up.remove_header(identity.subject_header.as_str());
        for (name, _) in &identity.claim_headers {
            up.remove_header(name.as_str());
        }
        if let Some(claims) = ctx.session.as_ref().and_then(|d| d.claims.as_ref()) {
            if let Some(sub) = claims.get("sub").and_then(|v| v.as_str()) {
                up.insert_header(identity.subject_header.clone(), sub)?;
            }
            for (name, path) in &identity.claim_headers {
                if let Some(v) = access::claim(claims, path) {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    if let Ok(hv) = http::HeaderValue::from_str(&text) {
                        up.insert_header(name.clone(), hv)?;
                    }
                }
            }
        }
        let upgrade = session.is_upgrade_req();
        for name in hygiene::hop_by_hop_names(&up.headers, upgrade) {
            up.remove_header(&name);
        }
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let host =
            hygiene::request_host(up.uri.authority().map(|a| a.as_str()), &up.headers).map(|_| {
                // keep the port in X-Forwarded-Host: it is the authority the client used
                up.headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| up.uri.authority().map(|a| a.to_string()))
                    .unwrap_or_default()
            });
        let fwd = hygiene::forwarded(
            &up.headers,
            peer_ip,
            &ctx.rt.config.listen.trusted_proxies,
            "http",
            host.as_deref(),
        );
        up.insert_header("x-forwarded-for", fwd.for_)?;
        up.insert_header("x-forwarded-proto", fwd.proto)?;
        match fwd.host {
            Some(h) => up.insert_header("x-forwarded-host", h)?,
            None => {
                up.remove_header("x-forwarded-host");
            }
        }
        // the session decision wins; otherwise several Cookie fields are merged into one
        let cookie = match ctx.session.as_ref().and_then(|d| d.upstream_cookie.clone()) {
            Some(rewritten) => Some(rewritten),
            None if hygiene::cookie_field_count(&up.headers) > 1 => {
                Some(hygiene::merged_cookie(&up.headers))
            }
            None => None,
        };
        match cookie {
            Some(Some(v)) => up.insert_header(COOKIE, v)?,
            Some(None) => {
                up.remove_header(&COOKIE);
            }
            None => {}
        }
        Ok(())
    }

    /// Final response headers: drop hop-by-hop headers and append rotated cookies.
    /// 1xx responses (including 101 for WebSocket) pass untouched.
    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        for name in hygiene::hop_by_hop_names(&resp.headers, false) {
            if name != http::header::CONNECTION && name != http::header::UPGRADE {
                resp.remove_header(&name);
            }
        }
        let status = resp.status.as_u16();
        let rewrite = ctx
            .logout
            .as_ref()
            .is_some_and(|p| (status == 401 && p.on_401) || (status == 403 && p.on_403));
        if rewrite {
            return self.rewrite_to_logout(session, resp, ctx).await;
        }
        let (Some(decision), Some(engine)) = (ctx.session.as_mut(), ctx.rt.session.as_ref()) else {
            return Ok(());
        };
        if decision.set_cookies.is_empty() {
            return Ok(());
        }
        // when the app sets the session cookie itself on this response, its value wins
        let app_sets_it = resp
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|s| cookies::sets_session_cookie(s, engine.cookie_name()))
            });
        if app_sets_it {
            return Ok(());
        }
        for value in decision.set_cookies.drain(..) {
            // append, never insert: insert would wipe the app's own Set-Cookie headers
            resp.append_header(http::header::SET_COOKIE, value)?;
        }
        let cc = resp
            .headers
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok());
        if let Some(private) = cc.and_then(hygiene::private_cache_control) {
            resp.insert_header(http::header::CACHE_CONTROL, private)?;
        }
        Ok(())
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

    /// A client that hangs up mid-request is normal traffic, not an error worth a log
    /// line at error level.
    fn suppress_error_log(&self, _session: &Session, _ctx: &Ctx, e: &Error) -> bool {
        e.esource() == &ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    /// Maps upstream failures to the answers operators expect: connect problems → 502,
    /// read timeouts → 504. Nothing rotagate causes itself becomes a logout.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
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
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let text = StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_ascii_lowercase();
            if let Err(err) = respond_text(session, code, &text).await {
                tracing::debug!(error = %err, "could not send the error response");
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
        let route = ctx.route_name().to_string();
        let m = &self.shared.metrics;
        m.requests
            .with_label_values(&[&route, crate::metrics::status_class(status)])
            .inc();
        m.latency
            .with_label_values(&[&route])
            .observe(elapsed.as_secs_f64());
        let req = session.req_header();
        let session = ctx.session.as_ref().map_or("-", |d| d.outcome.as_str());
        tracing::info!(
            target: "rotagate::access",
            method = %req.method,
            path = %ctx.log_path,
            route = %route,
            status,
            session,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error = e.map(|e| e.etype().as_str()),
            "request"
        );
    }
}

/// True when `path` is the login page itself (a 401 there is a failed login).
fn is_login_path(path: &str, login_url: &str) -> bool {
    let login = login_url.split('?').next().unwrap_or(login_url);
    path == login || path.strip_suffix('/') == Some(login)
}

/// Upstream headers a rewritten answer keeps: the app's own cookies (appended, never
/// dropped), CORS, and `Vary`.
fn kept_on_rewrite(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    n == "set-cookie" || n == "vary" || n.starts_with("access-control-")
}

impl Proxy {
    /// CSRF and `require` (DESIGN §6), including the requirements of the pages that
    /// define a posted Server Action. Answers and returns `true` when the request must
    /// not reach the upstream.
    async fn enforce_access(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let rt = ctx.rt.clone();
        let req = session.req_header();
        if access::is_preflight(&req.method, &req.headers) {
            return Ok(false);
        }
        let route = ctx
            .route
            .and_then(|i| rt.config.routes.get(i).map(|r| (i, r)));
        // routes whose `require` applies: the matched one, and the owners of an action
        let mut owners: Vec<usize> = Vec::new();
        if let Some((i, r)) = route {
            if r.handles_sessions() && r.require.is_some() {
                owners.push(i);
            }
        }
        if !rt.actions.is_empty() {
            if let Some(id) = req.headers.get("next-action").and_then(|v| v.to_str().ok()) {
                match rt.actions.routes_of(id.trim()) {
                    Some(rs) => owners.extend_from_slice(rs),
                    None if rt.config.nextjs.deny_unknown_actions => {
                        self.shared
                            .metrics
                            .denials
                            .with_label_values(&["unknown_action"])
                            .inc();
                        let kind = logout::classify(&req.headers);
                        let answer = access::deny_answer(
                            kind,
                            &crate::config::OnDeny::Status(404),
                            &rt.config.nextjs.base_path,
                        );
                        respond_answer(session, answer).await?;
                        return Ok(true);
                    }
                    None => {}
                }
            } else if access::may_be_form_action(&req.method, &req.headers)
                && !is_login_path(&ctx.log_path, &rt.config.logout.login_url)
            {
                // without JavaScript the action id hides in the form body: hold such
                // posts to the strictest action rule rather than buffer bodies
                owners.extend_from_slice(rt.actions.all_routes());
            }
        }
        owners.sort_unstable();
        owners.dedup();
        owners.retain(|i| {
            rt.config
                .routes
                .get(*i)
                .and_then(|r| r.require.as_ref())
                .is_some()
        });
        let session_route = route.is_some_and(|(_, r)| r.handles_sessions());
        if (session_route || !owners.is_empty())
            && access::is_unsafe(&req.method)
            && self.refuse_cross_site(session, &rt.config).await?
        {
            return Ok(true);
        }
        let req = session.req_header();
        if owners.is_empty() {
            return Ok(false);
        }
        // an action posted to a route without session work still needs the session
        if ctx.session.is_none() {
            if let Some(engine) = &rt.session {
                let cookie = hygiene::merged_cookie(&req.headers);
                let mut d = engine.process(cookie.as_deref(), self.shared.clock.now_unix(), false);
                d.upstream_cookie = None;
                d.set_cookies.clear();
                ctx.session = Some(d);
            }
        }
        let claims = ctx.session.as_ref().and_then(|d| d.claims.clone());
        let mut denied_by = None;
        for i in &owners {
            let Some(req_rule) = rt.config.routes.get(*i).and_then(|r| r.require.as_ref()) else {
                continue;
            };
            match access::evaluate([req_rule], claims.as_deref()) {
                access::Verdict::Allow => {}
                access::Verdict::Login => {
                    denied_by = Some((*i, access::Verdict::Login));
                    break;
                }
                access::Verdict::Deny => {
                    denied_by.get_or_insert((*i, access::Verdict::Deny));
                }
            }
        }
        let Some((owner, verdict)) = denied_by else {
            return Ok(false);
        };
        let kind = logout::classify(&req.headers);
        let cfg = &rt.config;
        // cookies decided for this request (a rotation, a dead token's deletion) still go out
        let pending = ctx
            .session
            .as_mut()
            .map(|d| std::mem::take(&mut d.set_cookies))
            .unwrap_or_default();
        let mut answer = if verdict == access::Verdict::Login {
            self.shared
                .metrics
                .denials
                .with_label_values(&["login"])
                .inc();
            let return_to =
                logout::return_path(&ctx.log_path, req.uri.query(), &cfg.nextjs.base_path);
            match logout::login_answer(kind, &cfg.logout, &cfg.nextjs.base_path, &return_to) {
                Some(mut a) => {
                    if kind != Kind::Fetch {
                        let pairs_src = hygiene::merged_cookie(&req.headers).unwrap_or_default();
                        let secure = cfg
                            .listen
                            .public_origin
                            .as_ref()
                            .is_some_and(|o| o.scheme == "https");
                        let (broken, c) = self.shared.loop_breaker.record(
                            &cookies::pairs(&pairs_src),
                            self.shared.clock.now_unix(),
                            &cfg.logout,
                            secure,
                        );
                        if broken {
                            a = logout::loop_page(&cfg.logout);
                        }
                        a.set_cookies.push(c);
                    }
                    a
                }
                None => Answer {
                    status: 401,
                    headers: vec![
                        ("content-type", "text/plain; charset=utf-8".into()),
                        ("cache-control", "no-store".into()),
                    ],
                    set_cookies: Vec::new(),
                    body: Bytes::from_static(b"authentication required"),
                },
            }
        } else {
            self.shared
                .metrics
                .denials
                .with_label_values(&["claims"])
                .inc();
            let on_deny = cfg
                .routes
                .get(owner)
                .map_or(crate::config::OnDeny::Status(403), |r| r.on_deny.clone());
            access::deny_answer(kind, &on_deny, &cfg.nextjs.base_path)
        };
        answer.set_cookies.extend(pending);
        respond_answer(session, answer).await?;
        Ok(true)
    }

    /// Turns the upstream 401/403 in `resp` into the logout answer for this kind of
    /// request (DESIGN §5). Prefetches pass through untouched.
    async fn rewrite_to_logout(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.logout.take().is_none() {
            return Ok(());
        }
        let cfg = &ctx.rt.config;
        let req = session.req_header();
        // only a request that carried a session cookie is logged out
        let cookie = hygiene::merged_cookie(&req.headers).unwrap_or_default();
        let pairs = cookies::pairs(&cookie);
        if !logout::carries_any(&pairs, &ctx.rt.logout_targets) {
            return Ok(());
        }
        let request_kind = logout::classify(&req.headers);
        let return_to = logout::return_path(&ctx.log_path, req.uri.query(), &cfg.nextjs.base_path);
        let Some(mut answer) =
            logout::login_answer(request_kind, &cfg.logout, &cfg.nextjs.base_path, &return_to)
        else {
            return Ok(());
        };
        let mut kind = request_kind.as_str();
        if request_kind != Kind::Fetch {
            let secure = cfg
                .listen
                .public_origin
                .as_ref()
                .is_some_and(|o| o.scheme == "https");
            let (broken, loop_cookie) = self.shared.loop_breaker.record(
                &pairs,
                self.shared.clock.now_unix(),
                &cfg.logout,
                secure,
            );
            if broken {
                answer = logout::loop_page(&cfg.logout);
                kind = "loop_breaker";
            }
            answer.set_cookies.push(loop_cookie);
        }
        answer
            .set_cookies
            .extend(logout::deletions(&pairs, &ctx.rt.logout_targets));
        let reason = if resp.status.as_u16() == 401 {
            "upstream_401"
        } else {
            "upstream_403"
        };
        self.shared
            .metrics
            .logouts
            .with_label_values(&[reason, kind])
            .inc();
        // a re-minted session cookie must not follow a logout
        if let Some(d) = ctx.session.as_mut() {
            d.set_cookies.clear();
        }

        let upstream_has_no_body = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0")
            || matches!(resp.status.as_u16(), 204 | 304);
        let mut new = ResponseHeader::build(
            answer.status,
            Some(resp.headers.len() + answer.headers.len() + 4),
        )?;
        for (name, value) in resp.headers.iter() {
            if kept_on_rewrite(name) {
                new.append_header(name.clone(), value.clone())?;
            }
        }
        for (name, value) in &answer.headers {
            new.insert_header(*name, value.as_str())?;
        }
        for c in &answer.set_cookies {
            new.append_header(http::header::SET_COOKIE, c.as_str())?;
        }
        new.insert_header(CONTENT_LENGTH, answer.body.len().to_string())?;
        let head = session.req_header().method == http::Method::HEAD;
        if upstream_has_no_body && !answer.body.is_empty() && !head {
            // NOTE: pingora marks a Content-Length: 0 upstream response as ended at its
            // header, so no body hook runs to carry ours: write the answer now; pingora's
            // own write of this header afterwards is ignored.
            session
                .write_response_header(Box::new(new.clone()), false)
                .await?;
            session.write_response_body(Some(answer.body), true).await?;
        } else {
            ctx.body = Some(BodyRewrite {
                body: (!head).then_some(answer.body),
            });
        }
        *resp = new;
        Ok(())
    }

    /// The CSRF check (DESIGN §6): answers 403 and returns `true` when the request is
    /// cross-site. The host an `Origin` is compared with (when no public origin is
    /// configured) is the `Host` the client asked for, port included.
    async fn refuse_cross_site(
        &self,
        session: &mut Session,
        cfg: &crate::config::Config,
    ) -> Result<bool> {
        let req = session.req_header();
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri.authority().map(|a| a.to_string()));
        if access::csrf_ok(
            &req.headers,
            cfg.listen.public_origin.as_ref(),
            host.as_deref(),
            &cfg.csrf,
        ) {
            return Ok(false);
        }
        self.shared
            .metrics
            .denials
            .with_label_values(&["csrf"])
            .inc();
        let body = Bytes::from(serde_json::json!({ "error": "csrf_rejected" }).to_string());
        respond(
            session,
            403,
            &[
                ("content-type", "application/json".to_string()),
                ("cache-control", "no-store".to_string()),
            ],
            body,
        )
        .await?;
        Ok(true)
    }

    /// The explicit logout endpoint: POST (GET when `allow_get`), CSRF-checked; deletes
    /// every session cookie and sends the browser to `after_logout`.
    async fn logout_endpoint(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let cfg = &ctx.rt.config;
        let req = session.req_header();
        let allowed = req.method == http::Method::POST
            || (cfg.logout.allow_get && req.method == http::Method::GET);
        if !allowed {
            let allow = if cfg.logout.allow_get {
                "GET, POST"
            } else {
                "POST"
            };
            return respond(
                session,
                405,
                &[
                    ("allow", allow.to_string()),
                    ("cache-control", "no-store".to_string()),
                ],
                Bytes::new(),
            )
            .await;
        }
        if self.refuse_cross_site(session, cfg).await? {
            return Ok(());
        }
        let req = session.req_header();
        let kind = logout::classify(&req.headers);
        let cookie = hygiene::merged_cookie(&req.headers).unwrap_or_default();
        let mut answer = if kind == Kind::Navigation {
            Answer {
                status: 303,
                headers: vec![("location", cfg.logout.after_logout.clone())],
                set_cookies: Vec::new(),
                body: Bytes::new(),
            }
        } else {
            Answer {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                set_cookies: Vec::new(),
                body: Bytes::from(
                    serde_json::json!({ "logged_out": true, "redirect": cfg.logout.after_logout })
                        .to_string(),
                ),
            }
        };
        answer.headers.push(("cache-control", "no-store".into()));
        if cfg.logout.clear_site_data {
            answer
                .headers
                .push(("clear-site-data", "\"cookies\"".into()));
        }
        answer.set_cookies = logout::deletions(&cookies::pairs(&cookie), &ctx.rt.logout_targets);
        self.shared
            .metrics
            .logouts
            .with_label_values(&["endpoint", kind.as_str()])
            .inc();
        respond_answer(session, answer).await
    }
}
