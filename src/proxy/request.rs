//! The request phase: hygiene, normalisation, route matching, the session decision
//! and access rules.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::respond::respond_text;
use crate::config::UpstreamStatusAction;
use crate::hygiene;
use crate::matcher::{path, RequestParts};
use crate::session::{self, Outcome};

use super::{Ctx, LogoutPlan, Proxy};

impl Proxy {
    /// Refuses a request before any rule runs: counts `reason` in
    /// `rotagate_hygiene_total` and answers `status` with `text`.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        reason: &str,
        status: u16,
        text: &str,
    ) -> Result<bool> {
        self.hygiene_events(reason, 1);
        ctx.log_path = "-".to_string();
        respond_text(session, status, text).await?;
        Ok(true)
    }

    /// Counts `n` of `rotagate_hygiene_total{reason}`.
    pub(super) fn hygiene_events(&self, reason: &str, n: u64) {
        self.shared
            .metrics
            .hygiene
            .with_label_values(&[reason])
            .inc_by(n);
    }

    /// Hygiene, normalisation and route matching. Answers directly (and returns
    /// `Ok(true)`) for requests that must not reach the upstream.
    pub(super) async fn request(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let limit = ctx.rt.config.listen.max_header_bytes;
        if hygiene::header_block_size(req.method.as_str(), req.raw_path().len(), &req.headers)
            > limit
        {
            ctx.log_path = "-".to_string();
            respond_text(session, 431, "request header fields too large").await?;
            return Ok(true);
        }
        let listen = &ctx.rt.config.listen;
        if let Some(location) = https_redirect(req, ctx.tls, listen) {
            ctx.log_path = "-".to_string();
            let headers = [
                ("location", location),
                ("content-type", "text/plain; charset=utf-8".to_string()),
            ];
            let body = bytes::Bytes::from_static(b"this site is served over https\n");
            super::respond::respond(session, 308, &headers, body).await?;
            return Ok(true);
        }
        // the one reading of the host (DESIGN §10), vetted against the public origin
        let reading = hygiene::request_host(
            req.raw_path(),
            req.uri.authority().map(|a| a.as_str()),
            &req.headers,
        );
        let http10 = req.version <= http::Version::HTTP_10;
        let host = match hygiene::vet_host(
            reading,
            http10,
            listen.public_origin.as_ref(),
            &listen.allowed_hosts,
        ) {
            Ok(h) => h,
            Err(refusal) => {
                let text = match refusal {
                    hygiene::HostRefusal::Missing => "bad request: missing Host",
                    hygiene::HostRefusal::Invalid => "bad request: invalid Host",
                    hygiene::HostRefusal::Misdirected => {
                        "misdirected request: this server does not serve that host"
                    }
                };
                let (reason, status) = (refusal.reason(), refusal.status());
                return self.refuse(session, ctx, reason, status, text).await;
            }
        };
        // behind a trusted load balancer the app reads its X-Forwarded-Host: when that
        // host is one rotagate serves, it is the host rules are matched with too
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let host = hygiene::trusted_forwarded_host(&req.headers, peer, &listen.trusted_proxies)
            .and_then(|r| {
                hygiene::vet_host(
                    r,
                    false,
                    listen.public_origin.as_ref(),
                    &listen.allowed_hosts,
                )
                .ok()
                .flatten()
            })
            .or(host);
        if !hygiene::request_target_ok(req.raw_path()) {
            let text = "bad request: the request target must be a path";
            return self
                .refuse(session, ctx, "path_not_origin_form", 400, text)
                .await;
        }
        let absolute_form = hygiene::absolute_form_authority(req.raw_path()).is_some();
        let raw_path = req.uri.path().to_string();
        let normalised = match path::normalise_with(&raw_path, listen.path_strictness) {
            Ok(p) => p,
            Err(e) => {
                let text = format!("bad request: {e}");
                return self.refuse(session, ctx, e.reason(), 400, &text).await;
            }
        };
        if normalised.forward != raw_path || absolute_form {
            // origin-form for the app (an absolute-form target's authority goes into
            // Host below); an HTTP/2 request keeps its scheme and authority
            let pq = match req.uri.query() {
                Some(q) => format!("{}?{q}", normalised.forward),
                None => normalised.forward.clone(),
            };
            let mut b = http::Uri::builder();
            if let (Some(scheme), Some(authority)) = (req.uri.scheme(), req.uri.authority()) {
                b = b.scheme(scheme.clone()).authority(authority.clone());
            }
            match b.path_and_query(pq).build() {
                Ok(uri) => session.req_header_mut().set_uri(uri),
                Err(_) => {
                    respond_text(session, 400, "bad request: invalid path").await?;
                    return Ok(true);
                }
            }
        }
        // the app reads the host rotagate vetted, in its one spelling: an absolute-form
        // target's authority, the public origin for an HTTP/1.0 request without one,
        // `APP.example.com.` as `app.example.com` (HTTP/2 keeps its `:authority`)
        if let Some(h) = &host {
            let req = session.req_header();
            let spelled = req
                .headers
                .get(http::header::HOST)
                .is_some_and(|v| h.is_spelled(v.as_bytes()));
            if req.uri.authority().is_none() && !spelled {
                session
                    .req_header_mut()
                    .insert_header(http::header::HOST, h.authority())?;
            }
        }
        ctx.log_path = match normalised.matching {
            Some(m) => m,
            None => normalised.forward,
        };
        ctx.host = host;
        if ctx.log_path == ctx.rt.config.logout.endpoint {
            self.logout_endpoint(session, ctx).await?;
            return Ok(true);
        }

        let preflight = super::gate::is_preflight(session);
        let req = session.req_header();
        // with i18n, rules see the path with the default locale added, as Next's do
        let match_path = ctx.match_path();
        let parts = RequestParts {
            method: req.method.as_str(),
            host: ctx.host.as_ref().map(|h| h.name.as_str()),
            path: &match_path,
            query: req.uri.query(),
            headers: &req.headers,
        };
        let route = ctx.rt.config.rules.first_match(&parts);
        drop(match_path);
        ctx.route = route;
        let limit_hits = crate::matcher::take_regex_limit_hits();
        if limit_hits > 0 {
            self.hygiene_events("regex_limit", u64::from(limit_hits));
        }

        let route = ctx.route.and_then(|i| ctx.rt.config.routes.get(i));
        let handles_sessions = route.is_some_and(|r| r.handles_sessions());
        if preflight && route.is_some_and(|r| r.require.is_some()) {
            // forwarded as the Fetch standard sends preflights: without credentials
            ctx.preflight = true;
            let req = session.req_header_mut();
            req.remove_header(&http::header::COOKIE);
            req.remove_header(&http::header::AUTHORIZATION);
        }
        // vault mode: the app needs its own cookies on every path it serves, matched or
        // not; a bypass route gets none (and never the handle)
        let vault_sessions = route.is_none_or(|r| r.handles_sessions());
        let unmatched = route.is_none();
        if !ctx.preflight {
            if let Some(rt) = ctx.rt.vault.is_some().then(|| ctx.rt.clone()) {
                if let Some(vrt) = rt.vault.as_ref() {
                    if self
                        .vault_request(session, ctx, vrt, vault_sessions, unmatched)
                        .await?
                    {
                        return Ok(true);
                    }
                }
            }
        }
        let req = session.req_header();
        // a preflight on a `require` route carries no credentials any more; elsewhere the
        // session is read as on any request (one truth upstream), without rotation
        if let (true, false, Some(engine)) = (handles_sessions, ctx.preflight, &ctx.rt.session) {
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
            let limits = decision.limits;
            for (hit, event) in [
                (limits.too_many_chunks, "chunk_limit"),
                (limits.too_many_candidates, "candidate_limit"),
                (limits.too_many_cookies, "cookie_limit"),
            ] {
                if hit {
                    self.session_event(event);
                }
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
                ctx.logout = Some(LogoutPlan {
                    on_401,
                    on_403,
                    ours: ctx.session.as_ref().and_then(ours_not_the_apps),
                });
            }
        }
        Ok(false)
    }
}

/// Why an upstream 401/403 on this request would answer what rotagate did to the
/// session rather than the session the browser holds (DESIGN §10: a session problem
/// rotagate caused never logs anyone out), as the metric word; `None` when the app
/// judged the session the browser sent.
fn ours_not_the_apps(d: &session::Decision) -> Option<&'static str> {
    match d.outcome {
        // a token refused for a reason that may be rotagate's own: its keys, its policy
        Outcome::Invalid(why) if !why.certainly_dead() => Some("refused_token"),
        Outcome::Invalid(_) | Outcome::Valid => None,
        // the app saw a token minted on this very request: an app that lacks rotagate's
        // signing key would otherwise log every user out at their next rotation
        Outcome::Rotated => Some("reminted_token"),
        // rotagate removed session cookies it does not read (another twin, cookies past
        // the limit): the app saw no session at all
        Outcome::None => d.upstream_cookie.is_some().then_some("stripped_cookies"),
    }
}

/// True when `path` is the login page itself (a 401 there is a failed login).
pub(super) fn is_login_path(path: &str, login_url: &str) -> bool {
    let login = login_url.split('?').next().unwrap_or(login_url);
    path == login || path.strip_suffix('/') == Some(login)
}

/// The `Location` of the plain listener's only answer when `redirect_http` is on (see
/// [`crate::tls::https_redirect`]); `None` when the request is to be served.
fn https_redirect(
    req: &RequestHeader,
    tls: bool,
    listen: &crate::config::Listen,
) -> Option<String> {
    let origin = listen.public_origin.as_ref()?;
    if tls || !listen.tls.as_ref().is_some_and(|t| t.redirect_http) {
        return None;
    }
    let reading = hygiene::request_host(
        req.raw_path(),
        req.uri.authority().map(|a| a.as_str()),
        &req.headers,
    );
    // a host rotagate serves, or none: a foreign Host is never reflected
    let host = hygiene::vet_host(reading, false, Some(origin), &listen.allowed_hosts)
        .ok()
        .flatten();
    let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
    Some(crate::tls::https_redirect(
        host.as_ref(),
        pq,
        origin,
        &listen.allowed_hosts,
    ))
}
