//! Sessions: verify the session cookie a request carries, re-mint it when due, and say
//! what to send upstream and what to append to the response (DESIGN §4).
//!
//! The [`SessionEngine`] is built once per configuration and called once per request
//! by the proxy glue; everything it decides is a pure function of the request's cookies
//! and the time.

pub mod authjs;
pub mod cookies;
pub mod jwt;
pub mod rotate;

use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::config::{CookieAttributes, Reissue, Session, SessionMode, TokenFormat};
use rotate::Timing;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// `exp` passed (or idle too long).
    Expired,
    /// First issue + `absolute_timeout` passed.
    OverAge,
    /// Signature or decryption failed, or the header named another algorithm.
    BadSignature,
    /// `kid` names no configured key.
    UnknownKid,
    /// Not a token of the configured format.
    Malformed,
    /// `nbf` in the future.
    NotYetValid,
}

impl Invalid {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Expired => "expired",
            Invalid::OverAge => "over_age",
            Invalid::BadSignature => "bad_signature",
            Invalid::UnknownKid => "unknown_kid",
            Invalid::Malformed => "malformed",
            Invalid::NotYetValid => "not_yet_valid",
        }
    }

    /// True only for tokens that are certainly dead (expired, over age): those are
    /// deleted in the browser. Anything else may be rotagate's own misconfiguration
    /// (a missing key), and must never log every user out.
    pub fn certainly_dead(self) -> bool {
        matches!(self, Invalid::Expired | Invalid::OverAge)
    }
}

/// Decodes one base64url JSON-object segment of a JOSE token (a header or a JWS
/// payload); anything else is a malformed token.
pub(crate) fn json_segment(segment: &[u8]) -> Result<Map<String, Value>, Invalid> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Invalid::Malformed)
}

/// What happened to the session of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No session cookie.
    None,
    /// Valid, not due for rotation.
    Valid,
    /// Valid and re-minted.
    Rotated,
    /// Refused.
    Invalid(Invalid),
}

impl Outcome {
    /// Short word for the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::None => "none",
            Outcome::Valid => "valid",
            Outcome::Rotated => "rotated",
            Outcome::Invalid(i) => i.as_str(),
        }
    }
}

/// The engine's decision for one request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What happened.
    pub outcome: Outcome,
    /// Claims of a verified token (only ever from a token whose signature verified).
    pub claims: Option<Arc<Map<String, Value>>>,
    /// The upstream `Cookie` header: `None` = leave as sent; `Some(None)` = remove it;
    /// `Some(Some(v))` = replace it with `v`.
    pub upstream_cookie: Option<Option<String>>,
    /// `Set-Cookie` values to append to the response.
    pub set_cookies: Vec<String>,
}

impl Decision {
    fn none() -> Decision {
        Decision {
            outcome: Outcome::None,
            claims: None,
            upstream_cookie: None,
            set_cookies: Vec::new(),
        }
    }
}

/// Why a session engine could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] jwt::KeyError),
    /// A format this build does not handle yet.
    #[error("`session.reissue.format`: {0} is not supported yet")]
    Unsupported(&'static str),
}

enum Codec {
    Jwt(jwt::KeySet),
    Authjs(authjs::AuthjsCodec),
}

/// Verifies and re-mints the session cookie of one configuration.
pub struct SessionEngine {
    cookie: String,
    /// Names the session cookie may have, in preference order (Auth.js picks
    /// `__Secure-` by protocol, so both are read).
    names: Vec<String>,
    attributes: CookieAttributes,
    chunk_size: usize,
    timing: Timing,
    codec: Codec,
}

impl std::fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEngine")
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

/// Rotation never happens on prefetches, HEAD, OPTIONS or WebSocket upgrades: their
/// responses are often discarded, and a rotated cookie must reach the browser.
pub fn rotation_allowed(method: &http::Method, headers: &HeaderMap) -> bool {
    if method == http::Method::HEAD || method == http::Method::OPTIONS {
        return false;
    }
    let has = |name: &str, want: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains(want))
        })
    };
    !(has("sec-purpose", "prefetch")
        || has("purpose", "prefetch")
        || headers.contains_key("next-router-prefetch")
        || has("x-middleware-prefetch", "1")
        || has("upgrade", "websocket"))
}

impl SessionEngine {
    /// Builds the engine for `[session]`.
    pub fn new(s: &Session) -> Result<SessionEngine, EngineError> {
        let SessionMode::Reissue(r) = &s.mode;
        let names = cookie_names(r);
        let codec = Self::codec(r, &names)?;
        Ok(SessionEngine {
            cookie: r.cookie.clone(),
            names,
            attributes: r.attributes.clone(),
            chunk_size: r.chunk_size,
            timing: Timing {
                rotate_every: s.rotate_every,
                absolute_timeout: s.absolute_timeout,
                idle_timeout: s.idle_timeout,
                leeway: s.leeway,
            },
            codec,
        })
    }

    fn codec(r: &Reissue, names: &[String]) -> Result<Codec, EngineError> {
        let authjs = |v| {
            authjs::AuthjsCodec::new(v, &r.secrets, names)
                .map(Codec::Authjs)
                .ok_or(EngineError::Unsupported("deriving Auth.js keys"))
        };
        match r.format {
            TokenFormat::Jwt => Ok(Codec::Jwt(jwt::KeySet::from_specs(&r.keys)?)),
            TokenFormat::Authjs => authjs(authjs::Version::V5),
            TokenFormat::AuthjsV4 => authjs(authjs::Version::V4),
        }
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// Deletion `Set-Cookie`s for every session cookie name in `names`.
    pub fn deletions(&self, names: &[String]) -> Vec<String> {
        names
            .iter()
            .map(|n| cookies::deletion(n, &self.attributes))
            .collect()
    }

    fn open(&self, token: &str, cookie: &str) -> Result<Map<String, Value>, Invalid> {
        match &self.codec {
            Codec::Jwt(k) => k.verify(token),
            Codec::Authjs(c) => c.open(token, cookie),
        }
    }

    /// Seals `claims` into a token for `cookie` with the active key (also used by
    /// benchmarks to make realistic tokens).
    pub fn seal(&self, claims: &Map<String, Value>, cookie: &str) -> Option<String> {
        match &self.codec {
            Codec::Jwt(k) => k.mint(claims),
            Codec::Authjs(c) => c.seal(claims, cookie),
        }
    }

    /// Decides for one request. `cookie_header` is the request's merged `Cookie` value.
    pub fn process(&self, cookie_header: Option<&str>, now: u64, may_rotate: bool) -> Decision {
        let Some(header) = cookie_header else {
            return Decision::none();
        };
        let pairs = cookies::pairs(header);
        let Some((name, carried)) = self
            .names
            .iter()
            .find_map(|n| cookies::read(&pairs, n).map(|c| (n.as_str(), c)))
        else {
            return Decision::none();
        };
        let verified = self
            .open(&carried.token, name)
            .and_then(|c| rotate::check_times(&c, now, &self.timing).map(|_| c));
        let claims = match verified {
            Ok(c) => c,
            Err(why) => {
                // never forwarded as if valid; deleted in the browser only when certainly dead
                let set_cookies = if why.certainly_dead() {
                    self.deletions(&carried.names)
                } else {
                    Vec::new()
                };
                return Decision {
                    outcome: Outcome::Invalid(why),
                    claims: None,
                    upstream_cookie: Some(cookies::rewrite(&pairs, name, &[])),
                    set_cookies,
                };
            }
        };
        if !(may_rotate && rotate::due(&claims, now, &self.timing)) {
            return Decision {
                outcome: Outcome::Valid,
                claims: Some(Arc::new(claims)),
                upstream_cookie: None,
                set_cookies: Vec::new(),
            };
        }
        let always_jti = matches!(self.codec, Codec::Authjs(_));
        let (next, lifetime) = rotate::reissue(&claims, now, &self.timing, always_jti);
        let Some(token) = self.seal(&next, name) else {
            // signing failed (no entropy?): keep the valid session as it is
            return Decision {
                outcome: Outcome::Valid,
                claims: Some(Arc::new(claims)),
                upstream_cookie: None,
                set_cookies: Vec::new(),
            };
        };
        let parts = cookies::split(name, &token, self.chunk_size);
        let set_cookies = cookies::set_cookies(
            &parts,
            &self.attributes,
            lifetime as i64,
            now,
            &carried.names,
        );
        Decision {
            outcome: Outcome::Rotated,
            claims: Some(Arc::new(next)),
            upstream_cookie: Some(cookies::rewrite(&pairs, name, &parts)),
            set_cookies,
        }
    }
}

/// The cookie names a session may be carried under: the configured one, and for the
/// Auth.js formats also its `__Secure-` twin (Auth.js picks the prefix by protocol).
fn cookie_names(r: &Reissue) -> Vec<String> {
    match r.format {
        TokenFormat::Jwt => vec![r.cookie.clone()],
        TokenFormat::Authjs | TokenFormat::AuthjsV4 => {
            let base = r.cookie.strip_prefix("__Secure-").unwrap_or(&r.cookie);
            vec![format!("__Secure-{base}"), base.to_string()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Method};

    #[test]
    fn rotation_is_never_attempted_on_prefetch_head_options_or_upgrades() {
        let h = |k: &'static str, v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(k, HeaderValue::from_static(v));
            m
        };
        assert!(rotation_allowed(&Method::GET, &HeaderMap::new()));
        assert!(rotation_allowed(&Method::POST, &h("next-action", "abc")));
        assert!(!rotation_allowed(&Method::HEAD, &HeaderMap::new()));
        assert!(!rotation_allowed(&Method::OPTIONS, &HeaderMap::new()));
        assert!(!rotation_allowed(
            &Method::GET,
            &h("sec-purpose", "prefetch;prerender")
        ));
        assert!(!rotation_allowed(&Method::GET, &h("purpose", "prefetch")));
        assert!(!rotation_allowed(
            &Method::GET,
            &h("next-router-prefetch", "1")
        ));
        assert!(!rotation_allowed(&Method::GET, &h("upgrade", "websocket")));
    }
}
