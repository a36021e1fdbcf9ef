//! The response phase: hop-by-hop headers, the logout rewrite, rotated cookies.

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::hygiene;

use super::{Ctx, Proxy};

impl Proxy {
    /// Final response headers: drop hop-by-hop headers and append rotated cookies.
    /// 1xx responses (including 101 for WebSocket) pass untouched.
    pub(super) async fn response(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        if ctx.preflight {
            return self.preflight_response(resp, ctx);
        }
        let hsts = ctx
            .rt
            .config
            .listen
            .tls
            .as_ref()
            .and_then(|t| t.hsts.as_deref());
        // looked up only when there is an HSTS value to add
        let app_set = hsts.is_some()
            && resp
                .headers
                .contains_key(http::header::STRICT_TRANSPORT_SECURITY);
        if let Some(v) = crate::tls::hsts_to_add(ctx.tls, hsts, app_set) {
            resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, v)?;
        }
        for name in hygiene::hop_by_hop_names(&resp.headers, false) {
            if name != http::header::CONNECTION && name != http::header::UPGRADE {
                resp.remove_header(&name);
            }
        }
        let status = resp.status.as_u16();
        // an answer on a `require` route is someone's own page: never for shared caches
        let on_require_route = ctx.held_to_require
            || ctx
                .route
                .and_then(|i| ctx.rt.config.routes.get(i))
                .is_some_and(|r| r.handles_sessions() && r.require.is_some());
        if on_require_route {
            self.make_private(resp)?;
        }
        // vault: the app's captured cookies never reach the browser, on any answer
        let rt = ctx.rt.clone();
        let vault = match rt.vault.as_ref() {
            Some(vrt) => Some(self.vault_strip(resp, vrt)?),
            None => None,
        };
        let rewrite = ctx
            .logout
            .as_ref()
            .is_some_and(|p| (status == 401 && p.on_401) || (status == 403 && p.on_403));
        if rewrite {
            return self.rewrite_to_logout(session, resp, ctx).await;
        }
        if let Some((cap, control)) = vault {
            return self.vault_response(resp, ctx, cap, control).await;
        }
        let (Some(decision), Some(engine)) = (ctx.session.as_mut(), ctx.rt.session.as_ref()) else {
            return Ok(());
        };
        if decision.set_cookies.is_empty() {
            return Ok(());
        }
        // when the app sets or deletes any cookie of the session itself (any twin, any
        // chunk) on this response, its word wins and rotagate adds none
        let app_sets_it = resp
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            // read lossily: a non-ASCII byte in the app's line must not hide it
            .any(|v| engine.sets_session_cookie(&String::from_utf8_lossy(v.as_bytes())));
        if app_sets_it {
            decision.set_cookies.clear();
            self.session_event("app_cookie_won");
            return Ok(());
        }
        for value in decision.set_cookies.drain(..) {
            // append, never insert: insert would wipe the app's own Set-Cookie headers
            resp.append_header(http::header::SET_COOKIE, value)?;
        }
        if !on_require_route {
            self.make_private(resp)?;
        }
        Ok(())
    }

    /// Counts one `rotagate_session_events_total{event}`.
    pub(super) fn session_event(&self, event: &str) {
        self.shared
            .metrics
            .session_events
            .with_label_values(&[event])
            .inc();
    }

    /// Makes `resp` unstorable for shared caches when it could be stored (DESIGN §10
    /// "No storable secrets"): decided by [`hygiene::private_for_shared_caches`].
    pub(super) fn make_private(&self, resp: &mut ResponseHeader) -> Result<()> {
        let fix = hygiene::private_for_shared_caches(resp.status.as_u16(), &resp.headers);
        if fix.is_empty() {
            return Ok(());
        }
        for name in &fix.remove {
            resp.remove_header(name);
        }
        if let Some(cc) = fix.cache_control {
            resp.insert_header(http::header::CACHE_CONTROL, cc)?;
        }
        self.session_event("made_private");
        Ok(())
    }
}
