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
pub mod vault;
pub mod vault_capture;

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
    /// No `exp`, and `session.reissue.require_exp` is on.
    MissingExp,
    /// `iss` is not `session.reissue.issuer`.
    WrongIssuer,
    /// `aud` does not name `session.reissue.audience`.
    WrongAudience,
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
            Invalid::MissingExp => "missing_exp",
            Invalid::WrongIssuer => "wrong_issuer",
            Invalid::WrongAudience => "wrong_audience",
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
    /// Limits this request hit (counted by the glue).
    pub limits: Limits,
}

/// Bounds on the work one request may cause that this request reached (DESIGN §10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// A chunk set had more than [`cookies::MAX_CHUNKS`] chunks (refused as malformed).
    pub too_many_chunks: bool,
    /// More tokens than [`cookies::MAX_CANDIDATES`] were carried; the rest were not tried.
    pub too_many_candidates: bool,
    /// More cookies than [`cookies::MAX_COOKIES`]: the rest were neither read nor
    /// forwarded.
    pub too_many_cookies: bool,
}

impl Decision {
    fn none() -> Decision {
        Decision {
            outcome: Outcome::None,
            claims: None,
            upstream_cookie: None,
            set_cookies: Vec::new(),
            limits: Limits::default(),
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
    /// Every name the session may have: removed upstream unless verified, and the app's
    /// own `Set-Cookie` for any of them wins.
    family: cookies::Family,
    /// The twins read, in preference order (Auth.js picks `__Secure-` by protocol, so
    /// both are read) …
    read: Vec<cookies::Prefix>,
    /// … and their full names (the Auth.js key salt).
    names: Vec<String>,
    attributes: CookieAttributes,
    chunk_size: usize,
    timing: Timing,
    policy: rotate::Policy,
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
        let SessionMode::Reissue(r) = &s.mode else {
            return Err(EngineError::Unsupported(
                "mode \"vault\" (its engine is the vault's, not this one)",
            ));
        };
        let read = read_prefixes(r);
        let family = cookies::Family::new(&r.cookie, r.format != TokenFormat::Jwt);
        let names: Vec<String> = read.iter().map(|p| family.name(*p)).collect();
        let codec = Self::codec(r, &names)?;
        Ok(SessionEngine {
            cookie: r.cookie.clone(),
            family,
            read,
            names,
            attributes: r.attributes.clone(),
            chunk_size: r.chunk_size,
            policy: rotate::Policy {
                require_exp: r.require_exp,
                issuer: r.issuer.clone(),
                audience: r.audience.clone(),
            },
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

    /// Every name the session may have.
    pub fn family(&self) -> &cookies::Family {
        &self.family
    }

    /// True when a response `Set-Cookie` value sets or deletes any cookie of the session
    /// (any twin, any chunk): the app wins, and rotagate adds none of its own.
    pub fn sets_session_cookie(&self, set_cookie: &str) -> bool {
        cookies::sets_session_cookie(set_cookie, &self.family)
    }

    fn open(&self, token: &str, cookie: &str) -> Result<Map<String, Value>, Invalid> {
        match &self.codec {
            Codec::Jwt(k) => k.verify(token),
            Codec::Authjs(c) => c.open(token, cookie),
        }
    }

    /// Opens a candidate and checks its claims and times.
    fn verify(&self, c: &cookies::Candidate<'_>, now: u64) -> Result<Map<String, Value>, Invalid> {
        if c.too_many_chunks {
            return Err(Invalid::Malformed);
        }
        let name = self.names.get(c.name).ok_or(Invalid::Malformed)?;
        let claims = self.open(&c.token(), name)?;
        rotate::check_claims(&claims, &self.policy)?;
        rotate::check_times(&claims, now, &self.timing)?;
        Ok(claims)
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
    ///
    /// Every token the request carries under a name that is read (duplicates, chunk
    /// sets, plain and chunked, twins) is tried in order until one verifies (at most
    /// [`cookies::MAX_CANDIDATES`]); the upstream then sees exactly that one, or no
    /// session cookie at all: every other cookie of the family is removed. Tokens that
    /// failed are deleted in the browser only when certainly dead.
    pub fn process(&self, cookie_header: Option<&str>, now: u64, may_rotate: bool) -> Decision {
        let Some(header) = cookie_header else {
            return Decision::none();
        };
        let (pairs, too_many_cookies) = cookies::pairs_bounded(header, cookies::MAX_COOKIES);
        let scan = cookies::scan(&pairs, &self.family, &self.read);
        let mut limits = Limits {
            too_many_chunks: false,
            too_many_candidates: scan.dropped,
            too_many_cookies,
        };
        if scan.members == 0 {
            let mut d = Decision::none();
            if too_many_cookies {
                // the cookies past the limit were never looked at: they do not go on
                d.upstream_cookie = Some(cookies::rewrite(&pairs, &self.family, &[]));
                d.limits = limits;
            }
            return d;
        }
        let mut failure: Option<Invalid> = None;
        let mut dead: Vec<&str> = Vec::new();
        let mut verified = None;
        for c in &scan.candidates {
            limits.too_many_chunks |= c.too_many_chunks;
            match self.verify(c, now) {
                Ok(claims) => {
                    verified = Some((c, claims));
                    break;
                }
                Err(why) => {
                    if why.certainly_dead() {
                        dead.extend(c.cookies().iter().map(|(k, _)| *k));
                    }
                    // a refusal that may be rotagate's own doing (its keys, its policy)
                    // is what the request reports: it must never turn into a logout
                    if failure.is_none_or(|f| f.certainly_dead() && !why.certainly_dead()) {
                        failure = Some(why);
                    }
                }
            }
        }
        // a deletion names a cookie, not a value: a name the request carries twice
        // (cookies of other paths or domains, perhaps tossed by a sibling site) could be
        // deleted in its other, untried copy, so such names are left alone in the browser;
        // and when candidates were left untried, nothing is deleted at all
        if !dead.is_empty() {
            if scan.dropped && verified.is_none() {
                dead.clear();
            } else {
                let mut seen: std::collections::HashMap<&str, u32> =
                    std::collections::HashMap::with_capacity(dead.len());
                for (k, _) in &pairs {
                    if let Some(n) = seen.get_mut(k) {
                        *n += 1;
                    } else if dead.contains(k) {
                        seen.insert(k, 1);
                    }
                }
                dead.retain(|n| seen.get(n).is_some_and(|c| *c == 1));
            }
        }
        let Some((carried, claims)) = verified else {
            // never forwarded as if valid; deleted in the browser only when certainly dead
            return Decision {
                outcome: failure.map_or(Outcome::None, Outcome::Invalid),
                claims: None,
                upstream_cookie: Some(cookies::rewrite(&pairs, &self.family, &[])),
                set_cookies: cookies::deletions_except(&dead, std::iter::empty(), &self.attributes),
                limits,
            };
        };
        let kept = carried.cookies();
        if !(may_rotate && rotate::due(&claims, now, &self.timing)) {
            return Decision {
                outcome: Outcome::Valid,
                claims: Some(Arc::new(claims)),
                // one truth upstream: untouched only when nothing else of the family came
                upstream_cookie: (scan.members != kept.len() || too_many_cookies)
                    .then(|| cookies::rewrite(&pairs, &self.family, kept)),
                set_cookies: cookies::deletions_except(
                    &dead,
                    kept.iter().map(|(k, _)| *k),
                    &self.attributes,
                ),
                limits,
            };
        }
        let always_jti = matches!(self.codec, Codec::Authjs(_));
        let (next, lifetime) = rotate::reissue(&claims, now, &self.timing, always_jti);
        let name = self
            .names
            .get(carried.name)
            .map_or(self.cookie.as_str(), String::as_str);
        let parts = self
            .seal(&next, name)
            .map(|token| cookies::split(name, &token, self.chunk_size))
            // a new token too large for the chunks anyone reads back (it grew in the
            // re-mint, or came in fewer, larger chunks) would be malformed on the very
            // next request: rotagate's own work must never end a session
            .filter(|parts| parts.len() <= cookies::MAX_CHUNKS);
        let Some(parts) = parts else {
            // signing failed (no entropy?), or the re-mint is too large to be read
            // back: keep the valid session as it is
            return Decision {
                outcome: Outcome::Valid,
                claims: Some(Arc::new(claims)),
                upstream_cookie: (scan.members != kept.len() || too_many_cookies)
                    .then(|| cookies::rewrite(&pairs, &self.family, kept)),
                set_cookies: Vec::new(),
                limits,
            };
        };
        let mut stale: Vec<&str> = kept.iter().map(|(k, _)| *k).collect();
        stale.extend_from_slice(&dead);
        let set_cookies = cookies::set_cookies(
            &parts,
            &self.attributes,
            lifetime.map(|l| l as i64),
            now,
            &stale,
        );
        let forwarded: Vec<(&str, &str)> = parts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Decision {
            outcome: Outcome::Rotated,
            claims: Some(Arc::new(next)),
            upstream_cookie: Some(cookies::rewrite(&pairs, &self.family, &forwarded)),
            set_cookies,
            limits,
        }
    }
}

/// The twins a session is read under, in preference order: the configured one, and for
/// the Auth.js formats also the `__Secure-` and plain twins (Auth.js picks the prefix
/// by protocol).
fn read_prefixes(r: &Reissue) -> Vec<cookies::Prefix> {
    use cookies::Prefix;
    let configured = Prefix::split(&r.cookie).0;
    match (r.format, configured) {
        (TokenFormat::Jwt, p) | (_, p @ Prefix::Host) => vec![p],
        (TokenFormat::Authjs | TokenFormat::AuthjsV4, _) => vec![Prefix::Secure, Prefix::None],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeySpec, SameSite};
    use crate::secret::Secret;
    use http::{HeaderValue, Method};
    use serde_json::json;
    use std::time::Duration;

    const NOW: u64 = 1_000_000;

    fn engine(require_exp: bool) -> SessionEngine {
        SessionEngine::new(&Session {
            rotate_every: Duration::from_secs(300),
            absolute_timeout: Duration::from_secs(12 * 3600),
            idle_timeout: None,
            leeway: Duration::from_secs(30),
            mode: SessionMode::Reissue(Reissue {
                cookie: "s".into(),
                format: TokenFormat::Jwt,
                attributes: CookieAttributes {
                    path: "/".into(),
                    domain: None,
                    secure: false,
                    http_only: true,
                    same_site: SameSite::Lax,
                },
                chunk_size: 3936,
                keys: vec![KeySpec {
                    kid: None,
                    alg: "HS256".into(),
                    secret: Some(Secret::new(
                        b"unit-secret-unit-secret-unit-secret!".to_vec(),
                    )),
                    private_key_pem: None,
                    public_key_pem: None,
                    origin: "test".into(),
                }],
                secrets: vec![],
                require_exp,
                issuer: None,
                audience: None,
            }),
        })
        .unwrap()
    }

    fn token(e: &SessionEngine, claims: Value) -> String {
        e.seal(claims.as_object().unwrap(), "s").unwrap()
    }

    #[test]
    fn one_truth_upstream() {
        let e = engine(true);
        let good = token(&e, json!({"sub": "a", "iat": NOW, "exp": NOW + 60}));
        // alone: the header is left as sent, no allocation for the upstream
        let d = e.process(Some(&format!("x=1; s={good}")), NOW, true);
        assert_eq!((d.outcome, d.upstream_cookie), (Outcome::Valid, None));
        // with junk of the family around it: only the verified one goes on
        let d = e.process(
            Some(&format!("s=bad; x=1; s={good}; __Host-s=z; s.9=q")),
            NOW,
            true,
        );
        assert_eq!(d.outcome, Outcome::Valid);
        assert_eq!(d.upstream_cookie, Some(Some(format!("s={good}; x=1"))));
        assert!(
            d.set_cookies.is_empty(),
            "nothing certainly dead was carried"
        );
        // nothing verifies: the whole family is removed
        let d = e.process(Some("s=bad; x=1; s.0=a"), NOW, true);
        assert_eq!(d.outcome, Outcome::Invalid(Invalid::Malformed));
        assert_eq!(d.upstream_cookie, Some(Some("x=1".into())));
        // only strays: no session, and still nothing of the family forwarded
        let d = e.process(Some("s.3=a; x=1; s="), NOW, true);
        assert_eq!(d.outcome, Outcome::None);
        assert_eq!(d.upstream_cookie, Some(Some("x=1".into())));
    }

    #[test]
    fn a_refusal_rotagate_may_have_caused_outranks_a_dead_token() {
        let e = engine(true);
        let dead = token(
            &e,
            json!({"sub": "a", "iat": NOW - 7200, "exp": NOW - 3600}),
        );
        let d = e.process(Some(&format!("s={dead}; s=forged")), NOW, true);
        assert_eq!(d.outcome, Outcome::Invalid(Invalid::Malformed));
        // two cookies of one name: a deletion could hit the other copy, so none is sent
        assert!(d.set_cookies.is_empty());
        // a dead chunk set next to a forged plain cookie is deleted (its names are unique)
        let d = e.process(Some(&format!("s=forged; s.0={dead}")), NOW, true);
        assert_eq!(d.outcome, Outcome::Invalid(Invalid::Malformed));
        assert_eq!(d.set_cookies.len(), 1);
        assert!(d.set_cookies[0].starts_with("s.0=; "));
        let d = e.process(Some(&format!("s={dead}")), NOW, true);
        assert_eq!(d.outcome, Outcome::Invalid(Invalid::Expired));
        assert!(d.set_cookies[0].starts_with("s=; "));
    }

    #[test]
    fn a_dead_twin_is_deleted_next_to_a_rotation_but_never_the_new_cookie() {
        let e = engine(true);
        let dead = token(
            &e,
            json!({"sub": "a", "iat": NOW - 7200, "exp": NOW - 3600}),
        );
        let due = token(&e, json!({"sub": "a", "iat": NOW - 600, "exp": NOW + 3000}));
        let d = e.process(Some(&format!("s={dead}; s={due}")), NOW, true);
        assert_eq!(d.outcome, Outcome::Rotated);
        assert_eq!(d.set_cookies.len(), 1, "{:?}", d.set_cookies);
        assert!(d.set_cookies[0].contains("Max-Age=3600"));
    }

    #[test]
    fn missing_exp_is_refused_unless_allowed() {
        let claims = json!({"sub": "a", "iat": NOW - 600});
        let strict = engine(true);
        let t = token(&strict, claims.clone());
        assert_eq!(
            strict.process(Some(&format!("s={t}")), NOW, true).outcome,
            Outcome::Invalid(Invalid::MissingExp)
        );
        let lax = engine(false);
        let d = lax.process(Some(&format!("s={t}")), NOW, true);
        assert_eq!(d.outcome, Outcome::Rotated);
        assert!(
            !d.set_cookies[0].contains("Max-Age"),
            "{}",
            d.set_cookies[0]
        );
        assert!(!d.claims.unwrap().contains_key("exp"));
    }

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
