//! Vault mode on the wire (DESIGN §4.2): what the browser's `Cookie` header carries (the
//! handle, captured app cookies it must not send on), the upstream `Cookie` header with
//! the stored app cookies injected, the app's `Set-Cookie` lines that are captured
//! instead of reaching the browser, the handle's own `Set-Cookie`, and the claims the
//! app hands over. Pure functions over header text; the vault engine keeps the state.

use cookie::time::OffsetDateTime;
use serde_json::{Map, Value};

use super::cookies::{self, Family, Part, Prefix};
use crate::config::CookieAttributes;

/// Most handle copies tried from one request (a name may arrive several times, from
/// several paths or a sibling domain).
pub const MAX_HANDLES: usize = 4;
/// Largest `x-rotagate-claims` value read, in bytes (bounded work; larger is ignored).
pub const MAX_CLAIMS_BYTES: usize = 8 * 1024;
/// Most captured cookies kept per family (a chunk set counts each chunk).
pub const MAX_CAPTURED: usize = 64;
/// Upstream control header: JSON claims for access rules and identity headers.
pub const CLAIMS_HEADER: &str = "x-rotagate-claims";
/// Upstream control header: rotate the handle on this response.
pub const ROTATE_HEADER: &str = "x-rotagate-rotate";
/// Upstream control header: end this session (revoke the family, delete the handle).
pub const LOGOUT_HEADER: &str = "x-rotagate-logout";

/// The names vault mode works with: the handle's family and the captured cookies'.
#[derive(Debug, Clone)]
pub struct Names {
    /// The handle cookie's configured name.
    pub handle: String,
    /// Every twin of the handle (all are kept from the upstream).
    pub handle_family: Family,
    /// One family per `capture` entry: the name, its `__Secure-`/`__Host-` twins and
    /// their chunks `name.N`.
    pub capture: Vec<Family>,
}

impl Names {
    /// The names of `handle` and of the `capture` list.
    pub fn new(handle: &str, capture: &[String]) -> Names {
        Names {
            handle: handle.to_string(),
            handle_family: Family::new(handle, false),
            capture: capture.iter().map(|c| Family::new(c, false)).collect(),
        }
    }

    /// True when `name` is one of the captured cookies (any twin, any chunk).
    pub fn is_captured(&self, name: &str) -> bool {
        self.capture.iter().any(|f| f.member(name).is_some())
    }

    /// True when `name` is the handle or one of its twins or chunks.
    pub fn is_handle(&self, name: &str) -> bool {
        self.handle_family.member(name).is_some()
    }
}

/// What a request's `Cookie` header holds, as vault mode reads it.
#[derive(Debug, Default)]
pub struct RequestCookies<'a> {
    /// Values of the handle cookie (its exact name), in order, at most [`MAX_HANDLES`].
    pub handles: Vec<&'a str>,
    /// Captured app cookies the browser sent (never forwarded; read for adoption).
    pub captured: Vec<(&'a str, &'a str)>,
    /// Every other cookie, forwarded as it came.
    pub rest: Vec<(&'a str, &'a str)>,
    /// True when the header carried anything of the handle's or the captured families:
    /// the upstream header must then be rewritten.
    pub rewrite: bool,
    /// More than [`cookies::MAX_COOKIES`] cookies: the rest were neither read nor
    /// forwarded.
    pub too_many_cookies: bool,
}

/// Splits a request's merged `Cookie` value into the handle, the captured cookies and
/// the rest.
pub fn read_request<'a>(header: Option<&'a str>, names: &Names) -> RequestCookies<'a> {
    let Some(header) = header else {
        return RequestCookies::default();
    };
    let (pairs, too_many_cookies) = cookies::pairs_bounded(header, cookies::MAX_COOKIES);
    let mut out = RequestCookies {
        too_many_cookies,
        rewrite: too_many_cookies,
        ..Default::default()
    };
    for (k, v) in pairs {
        if names.is_handle(k) {
            out.rewrite = true;
            if k == names.handle && out.handles.len() < MAX_HANDLES {
                out.handles.push(v);
            }
        } else if names.is_captured(k) {
            out.rewrite = true;
            out.captured.push((k, v));
        } else {
            out.rest.push((k, v));
        }
    }
    out
}

/// The upstream `Cookie` value: the browser's other cookies, then the app cookies kept
/// for this session. `None` when nothing is left (the header is then removed).
pub fn upstream_cookie(rest: &[(&str, &str)], app: &[(String, String)]) -> Option<String> {
    let mut out = String::new();
    let pairs = rest
        .iter()
        .map(|(k, v)| (*k, *v))
        .chain(app.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}

/// One captured cookie as the app set it.
#[derive(Clone, PartialEq, Eq)]
pub struct CapturedSet {
    /// Its name (twin and chunk suffix included).
    pub name: String,
    /// Its value (never formatted by `Debug`).
    pub value: String,
    /// Unix time its own `Max-Age`/`Expires` end it, if it has one: a limit on the
    /// family.
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for CapturedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedSet")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the app's `Set-Cookie` lines did to the captured cookies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseCapture {
    /// Captured cookies set (in order; a later line for one name wins).
    pub set: Vec<CapturedSet>,
    /// Names of captured cookies deleted (empty value, `Max-Age<=0`, or `Expires` past).
    pub deleted: Vec<String>,
    /// Indexes of the `Set-Cookie` lines to drop from the response (the captured ones).
    pub drop: Vec<usize>,
    /// True when the app itself set or deleted a cookie of the handle's name: its word
    /// wins, and rotagate adds no handle `Set-Cookie` of its own on this response.
    pub app_sets_handle: bool,
}

impl ResponseCapture {
    /// True when the response touched no captured cookie.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.deleted.is_empty()
    }
}

/// Reads the response's `Set-Cookie` lines (`lines[i]` is line `i`) for captured
/// cookies at time `now`. Unparsable lines are left alone.
pub fn read_response(lines: &[&str], names: &Names, now: u64) -> ResponseCapture {
    let mut out = ResponseCapture::default();
    for (i, line) in lines.iter().enumerate() {
        let Ok(c) = cookie::Cookie::parse(*line) else {
            // the name is all the line names for sure: still never let a captured one by
            if let Some((n, _)) = line.split_once('=') {
                if names.is_captured(n.trim()) {
                    out.drop.push(i);
                }
            }
            continue;
        };
        let name = c.name();
        if names.is_handle(name) {
            out.app_sets_handle = true;
            continue;
        }
        if !names.is_captured(name) {
            continue;
        }
        out.drop.push(i);
        let expires_at = lifetime_end(&c, now);
        let dead = c.value().is_empty() || expires_at.is_some_and(|t| t <= now);
        // a later line for the same name replaces what an earlier one said
        out.set.retain(|s| s.name != name);
        out.deleted.retain(|d| d != name);
        if dead {
            out.deleted.push(name.to_string());
        } else {
            out.set.push(CapturedSet {
                name: name.to_string(),
                value: c.value().to_string(),
                expires_at,
            });
        }
    }
    out
}

/// When a cookie's own `Max-Age` (which wins) or `Expires` ends it.
fn lifetime_end(c: &cookie::Cookie<'_>, now: u64) -> Option<u64> {
    if let Some(ma) = c.max_age() {
        let secs = ma.whole_seconds();
        return Some(if secs <= 0 {
            0
        } else {
            now.saturating_add(secs as u64)
        });
    }
    c.expires_datetime()
        .map(|t: OffsetDateTime| t.unix_timestamp().max(0) as u64)
}

/// Applies what a response did to the stored cookies of a session (`jar`): sets replace
/// or add, deletions remove; at most [`MAX_CAPTURED`] are kept. Returns the new jar.
pub fn apply(jar: &[(String, String)], r: &ResponseCapture) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = jar
        .iter()
        .filter(|(k, _)| !r.deleted.contains(k) && !r.set.iter().any(|s| &s.name == k))
        .cloned()
        .collect();
    for s in &r.set {
        if out.len() >= MAX_CAPTURED {
            break;
        }
        out.push((s.name.clone(), s.value.clone()));
    }
    // a chunk set that shrank leaves no stale chunk behind: an app that writes
    // `sid.0`, `sid.1` deletes the chunks it no longer needs, and so does the jar
    out
}

/// The earliest end any set captured cookie gives itself: a limit on the family.
pub fn family_limit(r: &ResponseCapture) -> Option<u64> {
    r.set.iter().filter_map(|s| s.expires_at).min()
}

/// The claims an app sent in `x-rotagate-claims`: a JSON object of at most
/// [`MAX_CLAIMS_BYTES`]; anything else is ignored (`None`).
pub fn claims_from_header(value: &[u8]) -> Option<Map<String, Value>> {
    if value.len() > MAX_CLAIMS_BYTES {
        return None;
    }
    match serde_json::from_slice::<Value>(value).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The claims of a captured JWS (a cookie of the jar holding a compact JWT, joined from
/// its chunks when the app chunked it). The token came from the app itself, on the
/// upstream connection, never from a browser, so its payload is what the app says;
/// reading it needs no key. `None` when no captured cookie is a JWS.
pub fn claims_from_jar(jar: &[(String, String)], names: &Names) -> Option<Map<String, Value>> {
    for family in &names.capture {
        for prefix in Prefix::ALL {
            let name = family.name(prefix);
            if let Some((_, v)) = jar.iter().find(|(k, _)| *k == name) {
                if let Some(c) = jws_claims(v) {
                    return Some(c);
                }
            }
            // chunks in index order
            let mut chunks: Vec<(usize, &str)> = jar
                .iter()
                .filter_map(|(k, v)| match family.member(k) {
                    Some(m) if m.prefix == prefix => match m.part {
                        Part::Chunk(i) => Some((i, v.as_str())),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            if chunks.is_empty() {
                continue;
            }
            chunks.sort_by_key(|(i, _)| *i);
            let joined: String = chunks.iter().map(|(_, v)| *v).collect();
            if let Some(c) = jws_claims(&joined) {
                return Some(c);
            }
        }
    }
    None
}

fn jws_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    super::json_segment(payload.as_bytes()).ok()
}

/// The subject of a session: the `sub` claim, if it is a string.
pub fn subject(claims: Option<&Map<String, Value>>) -> Option<String> {
    claims?.get("sub")?.as_str().map(str::to_string)
}

/// True when an upstream control header says yes (`1`, `true`, `yes`).
pub fn control_on(value: Option<&[u8]>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim_ascii();
        v == b"1" || v.eq_ignore_ascii_case(b"true") || v.eq_ignore_ascii_case(b"yes")
    })
}

/// The handle's `Set-Cookie`: `HttpOnly; Path=/; SameSite=Lax`, `Secure` on https,
/// `Max-Age` = `max_age` (what is left of the idle and absolute limits).
pub fn handle_cookie(
    name: &str,
    value: &str,
    attributes: &CookieAttributes,
    max_age: u64,
    now: u64,
) -> String {
    let parts = [(name.to_string(), value.to_string())];
    let max_age = i64::try_from(max_age).unwrap_or(i64::MAX / 4);
    cookies::set_cookies(&parts, attributes, Some(max_age), now, &[])
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The `Set-Cookie` that deletes the handle in the browser.
pub fn handle_deletion(name: &str, attributes: &CookieAttributes) -> String {
    cookies::deletion(name, attributes)
}

/// The `Set-Cookie` lines deleting the captured cookies a browser sent (cookies it
/// held from before vault mode, now kept server-side), each name once.
pub fn captured_deletions(sent: &[(&str, &str)], attributes: &CookieAttributes) -> Vec<String> {
    let names: Vec<&str> = sent.iter().map(|(k, _)| *k).collect();
    cookies::deletions_except(&names, std::iter::empty(), attributes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SameSite;

    const NOW: u64 = 1_000_000;

    fn names() -> Names {
        Names::new(
            "rg",
            &["sid".to_string(), "authjs.session-token".to_string()],
        )
    }

    fn attrs(secure: bool) -> CookieAttributes {
        CookieAttributes {
            path: "/".into(),
            domain: None,
            secure,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    #[test]
    fn the_request_splits_into_handle_captured_and_rest() {
        let n = names();
        let r = read_request(
            Some("a=1; rg=h1; sid=stolen; __Secure-sid.0=x; rg.1=z; __Host-rg=t; b=2; rg=h2"),
            &n,
        );
        assert_eq!(r.handles, vec!["h1", "h2"]);
        assert_eq!(r.captured, vec![("sid", "stolen"), ("__Secure-sid.0", "x")]);
        assert_eq!(r.rest, vec![("a", "1"), ("b", "2")]);
        assert!(r.rewrite);
        let plain = read_request(Some("a=1; sidekick=2"), &n);
        assert!(
            !plain.rewrite,
            "a name that only starts like `sid` is not captured"
        );
        assert_eq!(plain.rest.len(), 2);
    }

    #[test]
    fn the_upstream_gets_the_rest_and_the_stored_cookies() {
        let app = vec![("sid".to_string(), "s3cret".to_string())];
        assert_eq!(
            upstream_cookie(&[("a", "1")], &app).as_deref(),
            Some("a=1; sid=s3cret")
        );
        assert_eq!(upstream_cookie(&[], &[]), None);
    }

    #[test]
    fn captured_lines_are_taken_with_their_limits() {
        let n = names();
        let lines = [
            "theme=dark; Path=/",
            "sid=abc; Path=/; HttpOnly; Max-Age=3600",
            "__Secure-authjs.session-token.0=p0; Path=/; Secure",
            "__Secure-authjs.session-token.1=p1; Path=/; Secure; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            "rg=app-own; Path=/",
        ];
        let r = read_response(&lines, &n, NOW);
        assert_eq!(r.drop, vec![1, 2, 3]);
        assert!(r.app_sets_handle);
        assert_eq!(r.set.len(), 2);
        assert_eq!(r.set[0].expires_at, Some(NOW + 3600));
        assert_eq!(r.set[1].expires_at, None);
        assert_eq!(r.deleted, vec!["__Secure-authjs.session-token.1"]);
        assert_eq!(family_limit(&r), Some(NOW + 3600));
        // the jar follows: sets replace, deletions remove
        let jar = vec![
            ("sid".to_string(), "old".to_string()),
            (
                "__Secure-authjs.session-token.1".to_string(),
                "x".to_string(),
            ),
        ];
        let next = apply(&jar, &r);
        assert_eq!(
            next,
            vec![
                ("sid".to_string(), "abc".to_string()),
                (
                    "__Secure-authjs.session-token.0".to_string(),
                    "p0".to_string()
                ),
            ]
        );
        // a deletion by Max-Age=0 or an empty value
        let r = read_response(&["sid=; Max-Age=0", "x=1"], &n, NOW);
        assert_eq!(
            (r.deleted.as_slice(), r.drop.as_slice()),
            (&["sid".to_string()][..], &[0][..])
        );
        assert!(apply(&[("sid".into(), "v".into())], &r).is_empty());
        // a later line for the same name wins
        let r = read_response(&["sid=a", "sid=; Max-Age=0", "sid=b"], &n, NOW);
        assert!(r.deleted.is_empty());
        assert_eq!(r.set.len(), 1);
        assert_eq!(r.set[0].value, "b");
    }

    #[test]
    fn debug_never_prints_a_captured_value() {
        let r = read_response(&["sid=topsecretvalue"], &names(), NOW);
        assert!(!format!("{r:?}").contains("topsecretvalue"));
    }

    #[test]
    fn claims_from_the_header_or_a_captured_jws() {
        assert_eq!(
            claims_from_header(br#"{"sub":"u1","plan":"pro"}"#)
                .and_then(|c| c.get("plan").cloned()),
            Some(Value::from("pro"))
        );
        assert!(claims_from_header(b"[1]").is_none());
        assert!(claims_from_header(b"not json").is_none());
        assert!(claims_from_header(&vec![b' '; MAX_CLAIMS_BYTES + 1]).is_none());
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jws = format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"HS256"}"#),
            b64.encode(r#"{"sub":"u2"}"#)
        );
        let n = names();
        let jar = vec![("sid".to_string(), jws.clone())];
        assert_eq!(
            subject(claims_from_jar(&jar, &n).as_ref()).as_deref(),
            Some("u2")
        );
        let (a, b) = jws.split_at(10);
        let chunked = vec![
            ("sid.1".to_string(), b.to_string()),
            ("sid.0".to_string(), a.to_string()),
        ];
        assert_eq!(
            subject(claims_from_jar(&chunked, &n).as_ref()).as_deref(),
            Some("u2")
        );
        assert!(claims_from_jar(&[("sid".into(), "opaque".into())], &n).is_none());
    }

    #[test]
    fn handle_cookies_carry_the_attributes_browsers_need() {
        let c = handle_cookie("__Host-Http-rg", "v1.abc", &attrs(true), 1800, NOW);
        assert!(c.starts_with("__Host-Http-rg=v1.abc"), "{c}");
        for want in [
            "HttpOnly",
            "Path=/",
            "SameSite=Lax",
            "Secure",
            "Max-Age=1800",
        ] {
            assert!(c.contains(want), "{want} missing in {c}");
        }
        let c = handle_cookie("rg", "v1.abc", &attrs(false), 60, NOW);
        assert!(!c.contains("Secure"), "{c}");
        let d = handle_deletion("rg", &attrs(false));
        assert!(d.starts_with("rg=;") && d.contains("Max-Age=0"), "{d}");
        assert!(control_on(Some(b" 1")));
        assert!(control_on(Some(b"TRUE")));
        assert!(!control_on(Some(b"0")));
        assert!(!control_on(None));
    }
}
