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
                let refused_token = ctx.session.as_ref().is_some_and(
                    |d| matches!(d.outcome, Outcome::Invalid(why) if !why.certainly_dead()),
                );
                ctx.logout = Some(LogoutPlan {
                    on_401,
                    on_403,
                    refused_token,
                });
            }
        }
        Ok(false)
    }
}

/// True when `path` is the login page itself (a 401 there is a failed login).
pub(super) fn is_login_path(path: &str, login_url: &str) -> bool {
    let login = login_url.split('?').next().unwrap_or(login_url);
    path == login || path.strip_suffix('/') == Some(login)
}
