//! Vault mode glue (DESIGN §4.2): finds the handle, asks the vault engine, injects the
//! app's stored cookies upstream, captures the app's `Set-Cookie`s, honours the
//! upstream control headers, and appends the handle `Set-Cookie` only while its
//! generation is current. The decisions are the engine's and
//! [`crate::session::vault_capture`]'s; this moves data between them and pingora.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::respond::respond;
use crate::hygiene;
use crate::session::vault::{
    self, ActiveSession, CapturedCookie, CredentialUpdate, HandleCookie, Lookup, NewLogin,
    RequestOptions, Updated,
};
use crate::session::vault_capture::{self as capture, ResponseCapture};
use crate::session::{Decision, Invalid, Limits, Outcome};
use crate::state::VaultRuntime;
use crate::store::{RevokeReason, StoreError};

use super::{BodyRewrite, Ctx, Proxy};

/// The answer when the session store cannot be used: 503, `Retry-After: 1`, nothing
/// set or deleted (the browser keeps what it has).
pub(super) async fn respond_store_unavailable(
    session: &mut Session,
    body: &'static [u8],
) -> Result<()> {
    respond(
        session,
        503,
        &[
            ("content-type", "text/plain; charset=utf-8".to_string()),
            ("cache-control", "no-store".to_string()),
            ("retry-after", "1".to_string()),
        ],
        Bytes::from_static(body),
    )
    .await
}

/// What the request phase found, for the response phase.
#[derive(Debug, Default)]
pub(super) struct VaultCtx {
    /// The live session, if the handle gave one (or a pre-vault cookie was adopted).
    pub(super) live: Option<Box<ActiveSession>>,
    /// The handle `Set-Cookie` the engine asked for (rotation, a predecessor caught up),
    /// sent only if its generation is still current when the response goes out.
    pending: Option<HandleCookie>,
    /// The handle is certainly dead: delete it in the browser.
    delete_handle: bool,
    /// `Set-Cookie` lines decided in the request phase (deleting adopted cookies).
    extra: Vec<String>,
    /// The family was created on this request (adoption): its handle needs no check.
    fresh: bool,
}

/// Upstream control headers read from a response (and removed from it).
#[derive(Debug, Default)]
pub(super) struct Control {
    claims: Option<serde_json::Map<String, serde_json::Value>>,
    rotate: bool,
    logout: bool,
}

fn anon_outcome(why: vault::AnonReason) -> Outcome {
    use vault::AnonReason as A;
    match why {
        A::Malformed => Outcome::Invalid(Invalid::Malformed),
        A::BadTag => Outcome::Invalid(Invalid::BadSignature),
        A::UnknownKid => Outcome::Invalid(Invalid::UnknownKid),
        A::Expired => Outcome::Invalid(Invalid::Expired),
        _ => Outcome::None,
    }
}

fn jar_of(cookies: &[CapturedCookie]) -> Vec<(String, String)> {
    cookies
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                String::from_utf8_lossy(c.value.expose()).into_owned(),
            )
        })
        .collect()
}

fn cookies_of(jar: Vec<(String, String)>) -> Vec<CapturedCookie> {
    jar.into_iter()
        .map(|(k, v)| CapturedCookie::new(k, v.into_bytes()))
        .collect()
}

impl Proxy {
    /// The request phase in vault mode. `sessions` is false on `bypass` routes: the
    /// handle and captured cookies are still never forwarded, but nothing is looked up.
    /// Answers (and returns `true`) on a store error (503) and for a revoked family
    /// (the logout answer). On a path no rule matches (`unmatched`) a store error is
    /// not answered: the request goes on without the session (DESIGN §10: an outage
    /// never stops what needs no session, and never logs anyone out).
    pub(super) async fn vault_request(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        vrt: &VaultRuntime,
        sessions: bool,
        unmatched: bool,
    ) -> Result<bool> {
        let req = session.req_header();
        let merged = hygiene::merged_cookie(&req.headers);
        let rc = capture::read_request(merged.as_deref(), &vrt.names);
        let limits = Limits {
            too_many_cookies: rc.too_many_cookies,
            ..Default::default()
        };
        if rc.too_many_cookies {
            self.session_event("cookie_limit");
        }
        let rewritten = |app: &[(String, String)]| {
            (rc.rewrite || !app.is_empty()).then(|| capture::upstream_cookie(&rc.rest, app))
        };
        if !sessions {
            ctx.session = Some(Decision {
                outcome: Outcome::None,
                claims: None,
                upstream_cookie: rewritten(&[]),
                set_cookies: Vec::new(),
                limits,
            });
            return Ok(false);
        }
        let may_rotate = crate::session::rotation_allowed(&req.method, &req.headers)
            && !session.is_upgrade_req();
        let mut vc = VaultCtx::default();
        let mut outcome = Outcome::None;
        let mut revoked = None;
        for h in &rc.handles {
            match vrt.engine.process(h, RequestOptions { may_rotate }).await {
                Err(e) if unmatched => {
                    return Ok(self.vault_degraded(ctx, rewritten(&[]), limits, &e));
                }
                Err(e) => return self.vault_unavailable(session, ctx, "request", &e).await,
                Ok(Lookup::Session(s)) => {
                    vc.pending = s.set_handle.clone();
                    vc.live = Some(s);
                    outcome = Outcome::Valid;
                    break;
                }
                Ok(Lookup::Revoked {
                    family,
                    reason,
                    detected_now,
                    subject,
                }) => {
                    if detected_now {
                        // the security event: which login, whose; never a handle or cookie
                        tracing::warn!(
                            target: "rotagate::security",
                            event = "vault_reuse_detected",
                            family = %family.to_hex(),
                            subject = subject.as_deref().unwrap_or("-"),
                            path = %ctx.log_path,
                            "a rotated session handle was replayed: the whole login is revoked"
                        );
                    }
                    revoked = Some(if detected_now {
                        "reuse"
                    } else {
                        reason.as_str()
                    });
                    break;
                }
                Ok(Lookup::Anonymous(why)) => {
                    // a dead handle is deleted in the browser only when it is the one
                    // handle the request carries: a Max-Age=0 names a cookie, not a
                    // value, so beside a tossed-in junk copy it would delete the live one
                    if why.delete_cookie() && rc.handles.len() == 1 {
                        vc.delete_handle = true;
                    }
                    if outcome == Outcome::None {
                        outcome = anon_outcome(why);
                    }
                }
            }
        }
        if let Some(reason) = revoked {
            if self.vault_revoked_answer(session, ctx, reason).await? {
                return Ok(true);
            }
            // a prefetch, or the login page itself: on as anonymous, handle deleted
            vc.delete_handle = !crate::logout::classify(&session.req_header().headers)
                .eq(&crate::logout::Kind::Prefetch);
        }
        // a browser logged in before vault mode: its app cookie becomes a family, once
        if vc.live.is_none()
            && rc.handles.is_empty()
            && !rc.captured.is_empty()
            && vrt.adopt_existing
        {
            let jar: Vec<(String, String)> = rc
                .captured
                .iter()
                .take(capture::MAX_CAPTURED)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            // the cookie came from the client, not from the app: nothing in it is
            // believed (an unsigned JWT would name any user). The family gets its
            // claims and subject when the app next sends `x-rotagate-claims` or sets
            // the cookie itself.
            let login = NewLogin {
                subject: None,
                claims: Default::default(),
                cookies: cookies_of(jar),
                limit: None,
            };
            match vrt.engine.login(login).await {
                Err(e) if unmatched => {
                    return Ok(self.vault_degraded(ctx, rewritten(&[]), limits, &e));
                }
                Err(e) => return self.vault_unavailable(session, ctx, "adopt", &e).await,
                Ok(issued) => {
                    self.shared
                        .metrics
                        .vault
                        .logins
                        .with_label_values(&["adopted"])
                        .inc();
                    // the new family, read back as any request would find it
                    let opts = RequestOptions { may_rotate: false };
                    match vrt.engine.process(issued.handle.value.expose(), opts).await {
                        Err(e) => return self.vault_unavailable(session, ctx, "adopt", &e).await,
                        Ok(Lookup::Session(s)) => vc.live = Some(s),
                        Ok(_) => {}
                    }
                    vc.extra = capture::captured_deletions(&rc.captured, &vrt.attributes);
                    vc.pending = Some(issued.handle);
                    vc.fresh = true;
                    outcome = Outcome::Valid;
                }
            }
        }
        let app = vc
            .live
            .as_ref()
            .map(|s| jar_of(&s.cookies))
            .unwrap_or_default();
        ctx.session = Some(Decision {
            outcome,
            claims: vc.live.as_ref().map(|s| s.claims.clone()),
            upstream_cookie: rewritten(&app),
            set_cookies: Vec::new(),
            limits,
        });
        ctx.vault = Some(vc);
        Ok(false)
    }

    /// A store error on a path no rule matches: the request goes upstream without the
    /// session (no handle, no app cookies: the app sees an anonymous visitor) and the
    /// browser keeps its handle. A login on the answer still needs the store (503).
    fn vault_degraded(
        &self,
        ctx: &mut Ctx,
        upstream_cookie: Option<Option<String>>,
        limits: Limits,
        e: &StoreError,
    ) -> bool {
        self.shared
            .metrics
            .vault
            .store_errors
            .with_label_values(&["unmatched"])
            .inc();
        tracing::warn!(target: "rotagate::vault", error = %e, path = %ctx.log_path, "session store error on a path no rule matches: served without the session, nothing cleared");
        ctx.session = Some(Decision {
            outcome: Outcome::None,
            claims: None,
            upstream_cookie,
            set_cookies: Vec::new(),
            limits,
        });
        ctx.vault = Some(VaultCtx::default());
        false
    }

    /// A store error: 503, nothing cleared, nothing revoked (DESIGN §10).
    async fn vault_unavailable(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        phase: &str,
        e: &StoreError,
    ) -> Result<bool> {
        self.note_store_error(phase, e);
        let _ = ctx;
        respond_store_unavailable(session, b"session store unavailable; try again\n").await?;
        Ok(true)
    }

    fn note_store_error(&self, phase: &str, e: &StoreError) {
        self.shared
            .metrics
            .vault
            .store_errors
            .with_label_values(&[phase])
            .inc();
        tracing::error!(target: "rotagate::vault", phase, error = %e, "session store error: answered 503, nothing cleared");
    }

    /// Removes the upstream control headers and the captured `Set-Cookie` lines from a
    /// response (on every response in vault mode: the app's cookies never reach the
    /// browser, a rewritten 401 included), and says what they said.
    pub(super) fn vault_strip(
        &self,
        resp: &mut ResponseHeader,
        vrt: &VaultRuntime,
    ) -> Result<(ResponseCapture, Control)> {
        let control = Control {
            claims: resp
                .headers
                .get(capture::CLAIMS_HEADER)
                .and_then(|v| capture::claims_from_header(v.as_bytes())),
            rotate: capture::control_on(
                resp.headers
                    .get(capture::ROTATE_HEADER)
                    .map(|v| v.as_bytes()),
            ),
            logout: capture::control_on(
                resp.headers
                    .get(capture::LOGOUT_HEADER)
                    .map(|v| v.as_bytes()),
            ),
        };
        // the three control headers, and any other name of rotagate's namespace: the
        // app talks to rotagate there, never to the browser
        let ours: Vec<http::HeaderName> = resp
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-rotagate-"))
            .cloned()
            .collect();
        for h in ours {
            resp.remove_header(&h);
        }
        let lines: Vec<String> = resp
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            // read lossily: a non-ASCII byte in the app's line must not hide it
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if lines.is_empty() {
            return Ok((ResponseCapture::default(), control));
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let cap = capture::read_response(&refs, &vrt.names, self.shared.clock.now_unix());
        if !cap.drop.is_empty() {
            let kept: Vec<http::HeaderValue> = resp
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .enumerate()
                .filter(|(i, _)| !cap.drop.contains(i))
                .map(|(_, v)| v.clone())
                .collect();
            resp.remove_header(&http::header::SET_COOKIE);
            for v in kept {
                // the app's other cookies go on as they came, in order
                resp.append_header(http::header::SET_COOKIE, v)?;
            }
        }
        Ok((cap, control))
    }

    /// The response phase in vault mode, after [`Self::vault_strip`]: logins, app
    /// updates, control headers, and the handle `Set-Cookie` (only while current).
    pub(super) async fn vault_response(
        &self,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
        cap: ResponseCapture,
        control: Control,
    ) -> Result<()> {
        let rt = ctx.rt.clone();
        let Some(vrt) = rt.vault.as_ref() else {
            return Ok(());
        };
        let Some(vc) = ctx.vault.as_mut() else {
            // no session work on this request (a bypass route): nothing to decide
            return Ok(());
        };
        let now = self.shared.clock.now_unix();
        let engine = &vrt.engine;
        let mut out = std::mem::take(&mut vc.extra);
        let mut pending = vc.pending.take();
        let mut fresh = vc.fresh;
        let mut delete = vc.delete_handle;
        let mut family = vc.live.as_ref().map(|s| s.family);
        let result: std::result::Result<(), StoreError> = async {
            match vc.live.as_deref() {
                Some(s) if control.logout => {
                    engine
                        .revoke_family(&s.family, RevokeReason::Logout)
                        .await?;
                    (pending, delete) = (None, true);
                }
                Some(s) => {
                    if !cap.is_empty() || control.claims.is_some() {
                        let stored = jar_of(&s.cookies);
                        let jar = capture::apply(&stored, &cap);
                        // claims only from what the app set on this response: the stored
                        // jar may hold a cookie a client presented (adoption)
                        let set_by_app = capture::apply(&[], &cap);
                        let jar_claims = capture::claims_from_jar(&set_by_app, &vrt.names);
                        let claims = control.claims.clone().or(jar_claims);
                        let subject = capture::subject(claims.as_ref());
                        // an opaque session id (no subject known, before or now) the app replaced:
                        // a login on a request that carried someone's handle. It starts a
                        // new family (no fixation onto a planted handle); the old family
                        // is left as it was.
                        let replaced = subject.is_none()
                            && s.subject.is_none()
                            && cap.set.iter().any(|c| {
                                !stored.iter().any(|(k, v)| *k == c.name && *v == c.value)
                            });
                        if replaced {
                            let issued = engine
                                .login(NewLogin {
                                    subject: None,
                                    claims: claims.unwrap_or_default(),
                                    limit: capture::family_limit(&cap),
                                    cookies: cookies_of(set_by_app),
                                })
                                .await?;
                            self.shared
                                .metrics
                                .vault
                                .logins
                                .with_label_values(&["login"])
                                .inc();
                            family = Some(issued.family);
                            pending = Some(issued.handle);
                            (fresh, delete) = (true, false);
                        } else {
                            let update = CredentialUpdate {
                                subject,
                                claims,
                                limit: capture::family_limit(&cap),
                                cookies: cookies_of(jar),
                            };
                            match engine.update(s, update).await? {
                                Updated::Same => {}
                                Updated::NewFamily(issued) => {
                                    family = Some(issued.family);
                                    pending = Some(issued.handle);
                                    fresh = true;
                                }
                                Updated::Revoked => (pending, delete) = (None, true),
                                Updated::Gone => pending = None,
                            }
                        }
                    }
                    // only a request that came with the current handle rotates on the
                    // app's word: one accepted as the predecessor would turn the
                    // siblings still in flight with that predecessor into reuse
                    if control.rotate
                        && !delete
                        && !fresh
                        && matches!(s.accepted, vault::Accepted::Current)
                    {
                        if let Some(h) = engine.rotate_now(s).await? {
                            pending = Some(h);
                        }
                    }
                }
                None if !cap.set.is_empty() && !control.logout => {
                    // a login: always a new family (no fixation onto an old one)
                    let jar = capture::apply(&[], &cap);
                    let claims = control
                        .claims
                        .clone()
                        .or_else(|| capture::claims_from_jar(&jar, &vrt.names))
                        .unwrap_or_default();
                    let issued = engine
                        .login(NewLogin {
                            subject: capture::subject(Some(&claims)),
                            claims,
                            limit: capture::family_limit(&cap),
                            cookies: cookies_of(jar),
                        })
                        .await?;
                    self.shared
                        .metrics
                        .vault
                        .logins
                        .with_label_values(&["login"])
                        .inc();
                    family = Some(issued.family);
                    pending = Some(issued.handle);
                    (fresh, delete) = (true, false);
                }
                None => {}
            }
            if let (Some(h), Some(f)) = (pending.as_ref(), family.as_ref()) {
                let name = &vrt.names.handle;
                if cap.app_sets_handle {
                    // the app set a cookie of the handle's name itself: its word wins
                    self.withheld("app_cookie_won");
                } else if fresh || engine.is_current(f, h.generation).await? {
                    out.push(capture::handle_cookie(
                        name,
                        h.value.expose(),
                        &vrt.attributes,
                        h.max_age,
                        now,
                    ));
                } else {
                    // an out-of-order response must never roll the browser's jar back
                    self.withheld("stale");
                }
            } else if delete && !cap.app_sets_handle {
                out.push(capture::handle_deletion(&vrt.names.handle, &vrt.attributes));
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.note_store_error("response", &e);
            return self.vault_response_unavailable(resp, ctx);
        }
        if out.is_empty() {
            return Ok(());
        }
        for v in out {
            // append, never insert: insert would wipe the app's own Set-Cookie headers
            resp.append_header(http::header::SET_COOKIE, v)?;
        }
        self.make_private(resp)
    }

    fn withheld(&self, why: &str) {
        self.shared
            .metrics
            .vault
            .handle_withheld
            .with_label_values(&[why])
            .inc();
    }

    /// A store error while the upstream's answer is in hand (a login that could not be
    /// kept): the answer becomes a 503 — the browser keeps what it had, the app's
    /// cookies were never handed out.
    fn vault_response_unavailable(&self, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let body = Bytes::from_static(b"session store unavailable; try again\n");
        let mut new = ResponseHeader::build(503, Some(4))?;
        new.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
        new.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        new.insert_header("retry-after", "1")?;
        new.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        *resp = new;
        ctx.body = Some(BodyRewrite { body: Some(body) });
        Ok(())
    }

    /// Ends the live family of this request (the upstream's 401 became a logout).
    pub(super) async fn vault_end(&self, ctx: &mut Ctx, reason: RevokeReason) {
        let rt = ctx.rt.clone();
        let (Some(vrt), Some(s)) = (
            rt.vault.as_ref(),
            ctx.vault.as_mut().and_then(|v| v.live.take()),
        ) else {
            return;
        };
        if let Err(e) = vrt.engine.revoke_family(&s.family, reason).await {
            // the browser's handle is deleted anyway; the family then ends by idle time
            self.note_store_error("logout", &e);
        }
    }

    /// The explicit logout endpoint in vault mode: the family of the handle presented
    /// is revoked. `false` when the store could not say or record it (the endpoint then
    /// answers 503 and deletes nothing: a copied handle must not outlive a logout the
    /// user was told had happened).
    pub(super) async fn vault_logout_endpoint(&self, session: &mut Session, ctx: &mut Ctx) -> bool {
        let rt = ctx.rt.clone();
        let Some(vrt) = rt.vault.as_ref() else {
            return true;
        };
        let merged = hygiene::merged_cookie(&session.req_header().headers);
        let rc = capture::read_request(merged.as_deref(), &vrt.names);
        for h in &rc.handles {
            match vrt
                .engine
                .process(h, RequestOptions { may_rotate: false })
                .await
            {
                Ok(Lookup::Session(s)) => {
                    return match vrt
                        .engine
                        .revoke_family(&s.family, RevokeReason::Logout)
                        .await
                    {
                        Ok(_) => true,
                        Err(e) => {
                            self.note_store_error("logout", &e);
                            false
                        }
                    };
                }
                Ok(Lookup::Revoked { .. }) => return true,
                Ok(Lookup::Anonymous(_)) => {}
                Err(e) => {
                    self.note_store_error("logout", &e);
                    return false;
                }
            }
        }
        true
    }
}
