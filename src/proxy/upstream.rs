//! The upstream phase: the request as the app sees it.

use http::header::COOKIE;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::{access, hygiene};

use super::{Ctx, Proxy};

impl Proxy {
    /// Rewrites the request for the upstream: strips spoofable and hop-by-hop headers,
    /// sets `X-Forwarded-*`, merges `Cookie` fields.
    pub(super) async fn upstream_request(
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
}
