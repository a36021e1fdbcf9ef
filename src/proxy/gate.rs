//! Access enforcement glue: CSRF and `require` (decisions in `crate::access`).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::respond::{respond, respond_answer};
use crate::actions::{self, ActionRequest, FormLook, FORM_LOOK_LIMIT};
use crate::config::OnDeny;
use crate::logout::{self, Answer, Kind};
use crate::matcher::RequestParts;
use crate::session::cookies;
use crate::{access, hygiene};

use super::{BodyRewrite, Ctx, Proxy};

/// Reads a whole request body of at most [`FORM_LOOK_LIMIT`] bytes (`None` when more
/// arrives). pingora keeps what was read in its retry buffer, which it sends upstream
/// before anything else, so the app still gets the body byte for byte; 64 KiB fit in
/// that buffer, so it cannot overflow here. A client waiting on `Expect:
/// 100-continue` gets the go-ahead first (and the app no second one).
async fn read_whole_body(session: &mut Session) -> Result<Option<Bytes>> {
    let expects = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects {
        session.write_continue_response().await?;
        session
            .req_header_mut()
            .remove_header(&http::header::EXPECT);
    }
    session.enable_retry_buffering();
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > FORM_LOOK_LIMIT {
            return Ok(None);
        }
    }
    Ok(Some(body.freeze()))
}

/// Whether the request is a CORS preflight ([`access::is_preflight`]); asks the
/// transport whether the body is certainly empty only for `OPTIONS`.
pub(super) fn is_preflight(session: &mut Session) -> bool {
    if session.req_header().method != http::Method::OPTIONS {
        return false;
    }
    let body_empty = session.is_body_empty();
    let req = session.req_header();
    access::is_preflight(&req.method, &req.headers, body_empty)
}

impl Proxy {
    /// CSRF and `require` (DESIGN §6): the requirements of every route that applies
    /// (for Server Action requests: every matching route and the action's owners, see
    /// [`access::requirements`]). Answers and returns `true` when the request must not
    /// reach the upstream.
    pub(super) async fn enforce_access(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<bool> {
        let rt = ctx.rt.clone();
        let cfg = &rt.config;
        if is_preflight(session) {
            return Ok(false);
        }
        let req = session.req_header();
        let action = match actions::header_action(&req.method, &req.headers) {
            Some(a) => a,
            None => self.form_action(session, cfg).await?,
        };
        let req = session.req_header();
        let nx = &cfg.nextjs;
        // only Server Action requests look past the matched route: the rest pay nothing
        let path = match action {
            ActionRequest::None => Cow::Borrowed(ctx.log_path.as_str()),
            _ => ctx.match_path(),
        };
        let parts = RequestParts {
            method: req.method.as_str(),
            host: ctx.host.as_ref().map(|h| h.name.as_str()),
            path: &path,
            query: req.uri.query(),
            headers: &req.headers,
        };
        let reqs = access::requirements(cfg, &rt.actions, ctx.route, &parts, &action);
        if reqs.unknown_action {
            self.shared
                .metrics
                .denials
                .with_label_values(&["unknown_action"])
                .inc();
            let kind = logout::classify(&req.headers);
            let answer = access::deny_answer(kind, &OnDeny::Status(404), &nx.base_path);
            respond_answer(session, answer).await?;
            return Ok(true);
        }
        let session_route = ctx
            .route
            .and_then(|i| cfg.routes.get(i))
            .is_some_and(|r| r.handles_sessions());
        // WebSocket handshakes are GETs, but a cross-site one would ride the session
        let state_changing = access::is_unsafe(&req.method) || session.is_upgrade_req();
        if (session_route || !reqs.routes.is_empty())
            && state_changing
            && self.refuse_cross_site(session, cfg).await?
        {
            return Ok(true);
        }
        if reqs.routes.is_empty() {
            return Ok(false);
        }
        // whatever answers this request belongs to someone: never for shared caches
        ctx.held_to_require = true;
        let req = session.req_header();
        // an action posted to a route without session work still needs the session; the
        // app then gets only the cookie verified here (one truth upstream), but nothing
        // is set in the browser on a route that does no session work
        if ctx.session.is_none() {
            if let Some(engine) = &rt.session {
                let cookie = hygiene::merged_cookie(&req.headers);
                let mut d = engine.process(cookie.as_deref(), self.shared.clock.now_unix(), false);
                d.set_cookies.clear();
                ctx.session = Some(d);
            }
        }
        let claims = ctx.session.as_ref().and_then(|d| d.claims.clone());
        let Some((owner, verdict)) =
            access::first_failure(&cfg.routes, &reqs.routes, claims.as_deref())
        else {
            return Ok(false);
        };
        let kind = logout::classify(&req.headers);
        // cookies decided for this request (a rotation, a dead token's deletion) still go out
        let outcome = ctx.session.as_ref().map(|d| d.outcome);
        let pending = ctx
            .session
            .as_mut()
            .map(|d| std::mem::take(&mut d.set_cookies))
            .unwrap_or_default();
        let reason = match (verdict, reqs.fallback.is_some()) {
            (access::Verdict::Login, false) => "login",
            (access::Verdict::Login, true) => "fallback_login",
            (_, false) => "claims",
            (_, true) => "fallback_claims",
        };
        self.shared
            .metrics
            .denials
            .with_label_values(&[reason])
            .inc();
        let mut answer = if verdict == access::Verdict::Login {
            let return_to = logout::return_path(&ctx.log_path, req.uri.query(), &nx.base_path);
            match logout::login_answer(kind, &cfg.logout, &nx.base_path, &return_to) {
                Some(mut a) => {
                    // only a login rotagate's own session decision caused can be a loop
                    if kind != Kind::Fetch && logout::login_counts_toward_loop(outcome) {
                        let cookie = hygiene::merged_cookie(&req.headers).unwrap_or_default();
                        let (pairs, _) = cookies::pairs_bounded(&cookie, cookies::MAX_COOKIES);
                        if self.count_login_redirect(&mut a, &pairs, cfg) {
                            self.shared
                                .metrics
                                .logouts
                                .with_label_values(&["access_login", "loop_breaker"])
                                .inc();
                        }
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
            let on_deny = cfg
                .routes
                .get(owner)
                .map_or(OnDeny::Status(403), |r| r.on_deny.clone());
            access::deny_answer(kind, &on_deny, &nx.base_path)
        };
        answer.set_cookies.extend(pending);
        respond_answer(session, answer).await?;
        Ok(true)
    }

    /// The action a POST without a `Next-Action` id asks for: read from the form body
    /// when it is short enough to read whole (see [`actions::form_look`]); a longer one
    /// is unreadable. Nothing is read when no route has a `require`.
    async fn form_action(
        &self,
        session: &mut Session,
        cfg: &crate::config::Config,
    ) -> Result<ActionRequest> {
        let req = session.req_header();
        match actions::form_look(&req.method, &req.headers) {
            FormLook::NotForm => Ok(ActionRequest::None),
            _ if !cfg.routes.iter().any(|r| r.require.is_some()) => Ok(ActionRequest::None),
            FormLook::TooLong => Ok(ActionRequest::Unreadable(
                "a form body too long to read whole (or of unknown length)",
            )),
            FormLook::Ambiguous => Ok(ActionRequest::Unreadable(
                "a form with several Content-Type headers",
            )),
            FormLook::Read => {
                // raw bytes: one that is not ASCII must not make a form "not a form"
                let content_type = req
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .cloned()
                    .unwrap_or(http::HeaderValue::from_static(""));
                Ok(match read_whole_body(session).await? {
                    Some(body) => actions::form_ids(content_type.as_bytes(), &body),
                    None => ActionRequest::Unreadable("a form body longer than it said"),
                })
            }
        }
    }

    /// The answer to a preflight on a `require` route: its status, and of its headers
    /// only `Access-Control-*` and `Vary`, with an empty body.
    pub(super) fn preflight_response(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let mut new = ResponseHeader::build(resp.status, Some(resp.headers.len().min(16) + 1))?;
        for (name, value) in resp.headers.iter() {
            if access::kept_on_preflight(name) {
                new.append_header(name.clone(), value.clone())?;
            }
        }
        new.insert_header(http::header::CONTENT_LENGTH, "0")?;
        ctx.body = Some(BodyRewrite { body: None });
        *resp = new;
        Ok(())
    }

    /// The CSRF check (DESIGN §6): answers 403 and returns `true` when the request is
    /// cross-site. The host an `Origin` is compared with (when no public origin is
    /// configured) is the `Host` the client asked for, port included.
    pub(super) async fn refuse_cross_site(
        &self,
        session: &mut Session,
        cfg: &crate::config::Config,
    ) -> Result<bool> {
        let req = session.req_header();
        let host = hygiene::request_host(
            req.raw_path(),
            req.uri.authority().map(|a| a.as_str()),
            &req.headers,
        )
        .into_host()
        .map(|h| h.authority());
        // over TLS without a configured public origin, the site's origin is the https
        // one of the Host asked for: an http:// page posting here is cross-origin
        let own = crate::tls::site_origin(
            super::arrived_over_tls(session),
            cfg.listen.public_origin.as_ref(),
            host.as_deref(),
        );
        if access::csrf_ok(&req.headers, own.as_deref(), host.as_deref(), &cfg.csrf) {
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
}
