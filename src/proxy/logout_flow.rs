//! Logout glue: the upstream 401/403 rewrite and the explicit endpoint.

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::respond::{respond, respond_answer};
use crate::hygiene;
use crate::logout::{self, Answer, Kind};
use crate::session::{cookies, Outcome};

use super::{BodyRewrite, Ctx, Proxy};

/// Upstream headers a rewritten answer keeps: the app's own cookies (appended, never
/// dropped), CORS, and `Vary`.
fn kept_on_rewrite(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    n == "set-cookie" || n == "vary" || n.starts_with("access-control-")
}

impl Proxy {
    /// Counts one more redirect to login in the loop breaker (DESIGN §5): appends the
    /// breaker's cookie to `answer`, and replaces the answer with the explanatory page
    /// (returning `true`) when the loop is broken.
    pub(super) fn count_login_redirect(
        &self,
        answer: &mut Answer,
        pairs: &[(&str, &str)],
        cfg: &crate::config::Config,
    ) -> bool {
        let secure = cfg.listen.https();
        let (broken, cookie) = self.shared.current().loop_breaker.record(
            pairs,
            self.shared.clock.now_unix(),
            &cfg.logout,
            secure,
        );
        if broken {
            *answer = logout::loop_page(&cfg.logout);
        }
        answer.set_cookies.push(cookie);
        broken
    }

    /// Turns the upstream 401/403 in `resp` into the logout answer for this kind of
    /// request (DESIGN §5). Prefetches pass through untouched.
    pub(super) async fn rewrite_to_logout(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(plan) = ctx.logout.take() else {
            return Ok(());
        };
        if let Some(why) = plan.ours {
            // the app did not judge the browser's session but what rotagate made of it
            // (a token it refused, one it just re-minted, twins it stripped): no reason
            // to log anyone out — a misconfigured key must never become a mass logout
            let event = match (resp.status.as_u16() == 401, why) {
                (true, "reminted_token") => "passed_401_reminted_token",
                (true, "stripped_cookies") => "passed_401_stripped_cookies",
                (true, _) => "passed_401_refused_token",
                (false, "reminted_token") => "passed_403_reminted_token",
                (false, "stripped_cookies") => "passed_403_stripped_cookies",
                (false, _) => "passed_403_refused_token",
            };
            self.session_event(event);
            if let Some(d) = ctx.session.as_mut() {
                if matches!(d.outcome, Outcome::Invalid(_)) {
                    // the certainly dead tokens among the refused ones are still deleted
                    if !d.set_cookies.is_empty() {
                        for v in d.set_cookies.drain(..) {
                            resp.append_header(http::header::SET_COOKIE, v)?;
                        }
                        self.make_private(resp)?;
                    }
                } else {
                    // a re-minted token the app refused is not given to the browser: it
                    // keeps the one the app knows
                    d.set_cookies.clear();
                }
            }
            return Ok(());
        }
        let cfg = &ctx.rt.config;
        let req = session.req_header();
        // only a request that carried a session cookie is logged out
        let cookie = hygiene::merged_cookie(&req.headers).unwrap_or_default();
        // as many cookies as the session decision read, no more (bounded work)
        let (pairs, _) = cookies::pairs_bounded(&cookie, cookies::MAX_COOKIES);
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
        if request_kind != Kind::Fetch && self.count_login_redirect(&mut answer, &pairs, cfg) {
            kind = "loop_breaker";
        }
        let (deletions, capped) = logout::deletions_bounded(&pairs, &ctx.rt.logout_targets);
        if capped {
            self.session_event("deletion_limit");
        }
        answer.set_cookies.extend(deletions);
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
        // vault: the login ends server-side too, and no handle follows the logout
        self.vault_end(ctx, crate::store::RevokeReason::Logout)
            .await;

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

    /// The logout answer for a request whose vault family is revoked (a reuse just
    /// detected, or an earlier revocation): the login answer for its kind, every session
    /// cookie deleted, `Cache-Control: no-store`. Returns `false` (nothing written) for
    /// prefetches and on the login page itself, which go on as anonymous.
    pub(super) async fn vault_revoked_answer(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        reason: &str,
    ) -> Result<bool> {
        let cfg = &ctx.rt.config;
        if super::request::is_login_path(&ctx.log_path, &cfg.logout.login_url) {
            return Ok(false);
        }
        let req = session.req_header();
        let request_kind = logout::classify(&req.headers);
        let return_to = logout::return_path(&ctx.log_path, req.uri.query(), &cfg.nextjs.base_path);
        let Some(mut answer) =
            logout::login_answer(request_kind, &cfg.logout, &cfg.nextjs.base_path, &return_to)
        else {
            return Ok(false);
        };
        let cookie = hygiene::merged_cookie(&req.headers).unwrap_or_default();
        let (pairs, _) = cookies::pairs_bounded(&cookie, cookies::MAX_COOKIES);
        let mut kind = request_kind.as_str();
        if request_kind != Kind::Fetch && self.count_login_redirect(&mut answer, &pairs, cfg) {
            kind = "loop_breaker";
        }
        let (deletions, capped) = logout::deletions_bounded(&pairs, &ctx.rt.logout_targets);
        if capped {
            self.session_event("deletion_limit");
        }
        answer.set_cookies.extend(deletions);
        answer.headers.push(("cache-control", "no-store".into()));
        self.shared
            .metrics
            .logouts
            .with_label_values(&[reason, kind])
            .inc();
        respond_answer(session, answer).await?;
        Ok(true)
    }

    /// The explicit logout endpoint: POST (GET when `allow_get`), CSRF-checked; deletes
    /// every session cookie and sends the browser to `after_logout`.
    pub(super) async fn logout_endpoint(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
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
        let (pairs, _) = cookies::pairs_bounded(&cookie, cookies::MAX_COOKIES);
        let (deletions, capped) = logout::deletions_bounded(&pairs, &ctx.rt.logout_targets);
        if capped {
            self.session_event("deletion_limit");
        }
        answer.set_cookies = deletions;
        if !self.vault_logout_endpoint(session, ctx).await {
            // the login could not be ended in the store: saying "logged out" while a
            // copy of the handle still works would be a lie; nothing is deleted, the
            // user tries again
            super::vault::respond_store_unavailable(
                session,
                b"session store unavailable: not logged out yet; try again\n",
            )
            .await?;
            return Ok(());
        }
        self.shared
            .metrics
            .logouts
            .with_label_values(&["endpoint", kind.as_str()])
            .inc();
        respond_answer(session, answer).await
    }
}
