//! The response phase: hop-by-hop headers, the logout rewrite, rotated cookies.

use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::hygiene;
use crate::session::cookies;

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
}
