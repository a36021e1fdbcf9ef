//! Access enforcement glue: CSRF and `require` (decisions in `crate::access`).

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::request::is_login_path;
use super::respond::{respond, respond_answer};
use crate::logout::{self, Answer, Kind};
use crate::session::cookies;
use crate::{access, hygiene};

use super::{Ctx, Proxy};

impl Proxy {
    /// CSRF and `require` (DESIGN §6), including the requirements of the pages that
    /// define a posted Server Action. Answers and returns `true` when the request must
    /// not reach the upstream.
    pub(super) async fn enforce_access(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<bool> {
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
}
