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
        let cfg = &ctx.rt.config;
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let trusted_peer = hygiene::is_trusted(peer_ip, &cfg.listen.trusted_proxies);
        // identity headers come only from rotagate, and only for verified sessions
        let identity = &cfg.identity;
        let own = std::iter::once(identity.subject_header.as_str())
            .chain(identity.claim_headers.iter().map(|(n, _)| n.as_str()));
        // what to strip, found in passes over the names the request has: removing each
        // candidate name by lookup cost a parse and two map probes per name, per request
        let mut strip = hygiene::spoofable_names(&up.headers, trusted_peer, own.clone());
        strip.extend(
            up.headers
                .keys()
                .filter(|n| own.clone().any(|w| n.as_str().eq_ignore_ascii_case(w)))
                .cloned(),
        );
        strip.extend(hygiene::hop_by_hop_names(
            &up.headers,
            session.is_upgrade_req(),
        ));
        for name in &strip {
            up.remove_header(name);
        }
        if let Some(claims) = ctx.session.as_ref().and_then(|d| d.claims.as_ref()) {
            let sub = claims.get("sub").and_then(|v| v.as_str()).map(|s| {
                (
                    identity.subject_header.as_str(),
                    std::borrow::Cow::Borrowed(s),
                )
            });
            let others = identity.claim_headers.iter().filter_map(|(name, path)| {
                let v = access::claim(claims, path)?;
                let text = v
                    .as_str()
                    .map_or_else(|| v.to_string().into(), std::borrow::Cow::Borrowed);
                Some((name.as_str(), text))
            });
            for (name, text) in sub.into_iter().chain(others) {
                // a claim the app would not read exactly (control characters, non-ASCII,
                // padding): skip that header rather than fail or mislead the request
                match hygiene::identity_value(&text) {
                    Some(hv) => up.insert_header(name.to_string(), hv)?,
                    None => self.hygiene_events("identity_value_invalid", 1),
                }
            }
        }
        let listen = &cfg.listen;
        let own_proto =
            crate::tls::own_proto(ctx.tls, listen.tls.is_some(), listen.public_origin.as_ref());
        let fwd = hygiene::forwarded(
            &up.headers,
            peer_ip,
            &listen.trusted_proxies,
            own_proto,
            ctx.host.as_ref(),
            listen
                .public_origin
                .as_ref()
                .map(|o| (o, listen.allowed_hosts.as_slice())),
        );
        up.insert_header("x-forwarded-for", fwd.for_)?;
        up.insert_header(
            "x-forwarded-proto",
            http::HeaderValue::from_static(fwd.proto),
        )?;
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
