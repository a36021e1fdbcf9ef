//! Logout (DESIGN §5): which kind of request this is, when an upstream 401/403 becomes
//! a logout, the answer each kind can follow, the cookie deletions browsers honour,
//! the return path, and the loop breaker. Pure functions; `proxy.rs` applies them.

use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::HeaderMap;

use crate::config::{ClearCookie, CookieAttributes, Logout, SameSite};
use crate::session::cookies;

/// The kind of request, decided in this order: prefetch, Server Action, RSC, pages
/// data, navigation, fetch/JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Next-Router-Prefetch`, `Purpose`/`Sec-Purpose: prefetch`.
    Prefetch,
    /// `Next-Action` header.
    ServerAction,
    /// `RSC: 1`.
    Rsc,
    /// `x-nextjs-data: 1`.
    PagesData,
    /// A document navigation.
    Navigation,
    /// Anything else: fetch, XHR, API clients.
    Fetch,
}

impl Kind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Prefetch => "prefetch",
            Kind::ServerAction => "server_action",
            Kind::Rsc => "rsc",
            Kind::PagesData => "pages_data",
            Kind::Navigation => "navigation",
            Kind::Fetch => "fetch",
        }
    }
}

fn header_is(headers: &HeaderMap, name: &str, want: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.trim().eq_ignore_ascii_case(want))
    })
}

/// Classifies a request by its headers.
pub fn classify(headers: &HeaderMap) -> Kind {
    let purpose_prefetch = ["purpose", "sec-purpose"].iter().any(|n| {
        headers.get_all(*n).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("prefetch"))
        })
    });
    // `x-middleware-prefetch: 1` is the Pages router's prefetch (stripped before the
    // upstream sees it, after this decision)
    if headers.contains_key("next-router-prefetch")
        || purpose_prefetch
        || header_is(headers, "x-middleware-prefetch", "1")
    {
        return Kind::Prefetch;
    }
    if headers.contains_key("next-action") {
        return Kind::ServerAction;
    }
    if header_is(headers, "rsc", "1") {
        return Kind::Rsc;
    }
    if header_is(headers, "x-nextjs-data", "1") {
        return Kind::PagesData;
    }
    if header_is(headers, "sec-fetch-mode", "navigate")
        || header_is(headers, "sec-fetch-dest", "document")
    {
        return Kind::Navigation;
    }
    if !headers.contains_key("sec-fetch-mode") && prefers_html(headers) {
        return Kind::Navigation;
    }
    Kind::Fetch
}

/// True when `Accept` ranks `text/html` at least as high as JSON (browsers' document
/// requests; API clients ask for JSON or `*/*`).
fn prefers_html(headers: &HeaderMap) -> bool {
    let mut html = None::<f32>;
    let mut json = None::<f32>;
    for v in headers.get_all(http::header::ACCEPT) {
        let Ok(s) = v.to_str() else { continue };
        for item in s.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "text/html" | "application/xhtml+xml" => html = Some(html.map_or(q, |h| h.max(q))),
                "application/json" => json = Some(json.map_or(q, |j| j.max(q))),
                _ => {}
            }
        }
    }
    matches!((html, json), (Some(h), j) if h > 0.0 && h >= j.unwrap_or(0.0))
}

/// A validated same-origin relative path, or `/`: no scheme, no `//` or `/\` start,
/// nothing that decodes to them, no control characters (CR/LF injection).
pub fn safe_return_to(candidate: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(candidate).decode_utf8_lossy();
    let ok = |s: &str| {
        s.starts_with('/')
            && !s.starts_with("//")
            && !s.starts_with("/\\")
            && !s.chars().any(|c| c.is_control() || c == '\\')
    };
    if ok(candidate) && ok(&decoded) {
        candidate.to_string()
    } else {
        "/".to_string()
    }
}

/// The canonical page a request was for: `base_path` kept, the `/_next/data/<id>`
/// prefix and `.json` / `.rsc` suffix stripped, `_rsc` dropped from the query.
pub fn return_path(path: &str, query: Option<&str>, base_path: &str) -> String {
    let (base, rest) = match path.strip_prefix(base_path) {
        Some(r) if !base_path.is_empty() && (r.is_empty() || r.starts_with('/')) => (base_path, r),
        _ => ("", path),
    };
    let mut page = rest.to_string();
    if let Some(after) = page.strip_prefix("/_next/data/") {
        if let Some((_build, p)) = after.split_once('/') {
            page = format!("/{p}");
            if let Some(p) = page.strip_suffix(".json") {
                page = p.to_string();
            }
            if page == "/index" {
                page = "/".to_string();
            }
        }
    }
    if let Some((p, _)) = page.split_once(".segments/") {
        page = p.to_string();
    }
    if let Some(p) = page.strip_suffix(".rsc") {
        page = if p.is_empty() || p == "/index" {
            "/".to_string()
        } else {
            p.to_string()
        };
    }
    if page.is_empty() {
        page = "/".to_string();
    }
    let mut out = format!("{base}{page}");
    if !base.is_empty() && page == "/" {
        out = base.to_string();
    }
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some("_rsc"))
        .collect();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    safe_return_to(&out)
}

const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// `login_url?<param>=<return_to>` (or `&` when the login URL has a query already).
pub fn login_location(cfg: &Logout, return_to: &str) -> String {
    let sep = if cfg.login_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{sep}{}={}",
        cfg.login_url,
        cfg.return_to_param,
        percent_encoding::utf8_percent_encode(return_to, QUERY_VALUE)
    )
}

fn strip_base<'a>(path: &'a str, base_path: &str) -> &'a str {
    match path.strip_prefix(base_path) {
        Some(r)
            if !base_path.is_empty()
                && (r.is_empty() || r.starts_with('/') || r.starts_with('?')) =>
        {
            if r.is_empty() {
                "/"
            } else {
                r
            }
        }
        _ => path,
    }
}

/// A complete answer rotagate sends instead of (or in front of) the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers to set (lower-case names). `Set-Cookie` values go in `set_cookies`.
    pub headers: Vec<(&'static str, String)>,
    /// `Set-Cookie` values to append.
    pub set_cookies: Vec<String>,
    /// Body (empty for redirects).
    pub body: Bytes,
}

/// The answer that sends a client of `kind` to the login page; `None` for prefetches
/// (their 401 passes through and nothing is cleared). `return_to` is the canonical
/// return path (with `base_path`); paths in `x-action-redirect` / `x-nextjs-redirect`
/// are written without `base_path`, which Next's client adds.
pub fn login_answer(kind: Kind, cfg: &Logout, base_path: &str, return_to: &str) -> Option<Answer> {
    let location = login_location(cfg, return_to);
    let client_location = || strip_base(&location, base_path).to_string();
    let redirect = |status| Answer {
        status,
        headers: vec![("location", location.clone())],
        set_cookies: Vec::new(),
        body: Bytes::new(),
    };
    let mut a = match kind {
        Kind::Prefetch => return None,
        Kind::Navigation | Kind::Rsc => redirect(303),
        Kind::ServerAction => Answer {
            status: 200,
            headers: vec![
                (
                    "x-action-redirect",
                    format!("{};replace", client_location()),
                ),
                ("content-type", "text/plain; charset=utf-8".into()),
            ],
            set_cookies: Vec::new(),
            body: Bytes::new(),
        },
        // as Next's own middleware answers a redirected data request: no Location
        Kind::PagesData => Answer {
            status: 307,
            headers: vec![("x-nextjs-redirect", client_location())],
            set_cookies: Vec::new(),
            body: Bytes::new(),
        },
        Kind::Fetch => Answer {
            status: 401,
            headers: vec![("content-type", "application/json".into())],
            set_cookies: Vec::new(),
            body: Bytes::from(
                serde_json::json!({ "error": "session_expired", "login_url": location })
                    .to_string(),
            ),
        },
    };
    a.headers.push(("cache-control", "no-store".into()));
    if cfg.clear_site_data {
        a.headers.push(("clear-site-data", "\"cookies\"".into()));
    }
    Some(a)
}

/// A cookie to delete on logout: the session cookie (with its configured attributes)
/// or a `clear_cookies` entry.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name as configured (may carry a `__Secure-`/`__Host-` prefix).
    pub name: String,
    /// Attributes it was set with.
    pub attributes: CookieAttributes,
    /// Most chunks `name.N` deleted: the chunks a valid session could have
    /// ([`cookies::max_valid_chunks`]); junk past them is never echoed back.
    pub max_chunks: usize,
}

impl Target {
    /// From a `clear_cookies` entry, deleting at most `max_chunks` chunks of it.
    pub fn from_clear(c: &ClearCookie, max_chunks: usize) -> Target {
        Target {
            name: c.name.clone(),
            attributes: CookieAttributes {
                path: c.path.clone(),
                domain: c.domain.clone(),
                secure: false,
                http_only: true,
                same_site: SameSite::Lax,
            },
            max_chunks,
        }
    }

    fn base(&self) -> &str {
        self.name
            .strip_prefix("__Secure-")
            .or_else(|| self.name.strip_prefix("__Host-"))
            .unwrap_or(&self.name)
    }
}

/// True when the request carried any of the targets' cookies (any prefix variant, the
/// plain name with a value or the first chunk), in one pass over the cookies.
pub fn carries_any(pairs: &[(&str, &str)], targets: &[Target]) -> bool {
    pairs.iter().any(|(k, v)| {
        targets.iter().any(|t| {
            matches!(
                cookies::member(k, t.base(), false).map(|m| m.part),
                Some(cookies::Part::Plain) if !v.is_empty()
            ) || matches!(
                cookies::member(k, t.base(), false).map(|m| m.part),
                Some(cookies::Part::Chunk(0))
            )
        })
    })
}

/// Deletion `Set-Cookie`s for every target: the plain, `__Secure-` and `__Host-`
/// variants, every chunk of them the request carried, with the target's Path and
/// Domain (and host-only too when a Domain is configured, since a cookie set without
/// one is a different cookie), `Max-Age=0` and an `Expires` in the past. `__Host-`
/// deletions are `Secure; Path=/` without Domain, `__Secure-` ones are `Secure`, as
/// browsers require before they accept them.
pub fn deletions(pairs: &[(&str, &str)], targets: &[Target]) -> Vec<String> {
    deletions_bounded(pairs, targets).0
}

/// [`deletions`], and whether chunks past a target's `max_chunks` were carried (and not
/// echoed back). Linear in the cookies: chunk indexes are collected in a bit set per
/// variant, so each name is written once, and lines several targets share are
/// de-duplicated with a hash set.
pub fn deletions_bounded(pairs: &[(&str, &str)], targets: &[Target]) -> (Vec<String>, bool) {
    let mut out: Vec<String> = Vec::new();
    // one target writes each line once; only several targets can repeat one
    let dedupe = targets.len() > 1;
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut capped = false;
    for t in targets {
        let base = t.base();
        let limit = t.max_chunks.min(cookies::MAX_CHUNKS);
        // bit i of chunks[v] = chunk i of variant v was carried (MAX_CHUNKS fits a u64)
        let mut chunks = [0u64; 3];
        for (k, _) in pairs {
            if let Some(cookies::Member {
                prefix,
                part: cookies::Part::Chunk(i),
            }) = cookies::member(k, base, false)
            {
                if i < limit {
                    let v = cookies::Prefix::ALL
                        .iter()
                        .position(|p| *p == prefix)
                        .unwrap_or(0);
                    chunks[v] |= 1u64 << i;
                } else {
                    capped = true;
                }
            }
        }
        let mut scopes = vec![t.attributes.clone()];
        if t.attributes.domain.is_some() {
            scopes.push(CookieAttributes {
                domain: None,
                ..t.attributes.clone()
            });
        }
        // one writer per scope: the attribute text is formatted once per prefix
        let mut writers: Vec<cookies::DeletionWriter<'_>> =
            scopes.iter().map(cookies::DeletionWriter::new).collect();
        for (v, prefix) in cookies::Prefix::ALL.iter().enumerate() {
            let variant = format!("{}{base}", prefix.as_str());
            let carried = (0..limit).filter(|i| chunks[v] & (1u64 << i) != 0);
            let names =
                std::iter::once(variant.clone()).chain(carried.map(|i| format!("{variant}.{i}")));
            for name in names {
                for (scope, w) in writers.iter_mut().enumerate() {
                    if *prefix == cookies::Prefix::Host && scope > 0 {
                        // __Host- cookies have no Domain: every scope is the same line
                        continue;
                    }
                    let line = w.line(&name);
                    if !dedupe || seen.insert(line.clone()) {
                        out.push(line);
                    }
                }
            }
        }
    }
    (out, capped)
}

/// Counts redirects to the login page in a short-lived signed cookie (not per IP:
/// many users share one behind a load balancer), so a login → 401 → login cycle ends
/// in an explanatory page instead of a redirect storm.
pub struct LoopBreaker {
    key: ring::hmac::Key,
}

impl std::fmt::Debug for LoopBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoopBreaker")
    }
}

/// Name of the loop breaker's cookie.
pub const LOOP_COOKIE: &str = "rg_login_loop";

/// Whether a login answer from an access rule counts toward the loop breaker: only
/// when rotagate's own session decision caused it — the request carried a session
/// cookie that rotagate found dead, or could not verify (a key it lacks makes every
/// fresh login fail again: exactly the loop the breaker is for). An anonymous visitor
/// opening several protected links is sent to login each time and is no loop.
/// (Rewritten upstream 401/403s always count: rotagate logged that session out.)
pub fn login_counts_toward_loop(outcome: Option<crate::session::Outcome>) -> bool {
    matches!(outcome, Some(crate::session::Outcome::Invalid(_)))
}

impl LoopBreaker {
    /// A breaker with a fresh random key (per process: a count that fails to verify
    /// after a restart or on another replica simply starts again).
    pub fn new() -> LoopBreaker {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"rotagate-loop-breaker-fallback")
        });
        LoopBreaker { key }
    }

    /// A breaker whose key is derived from a configured secret (HKDF-SHA256 with its
    /// own purpose label, so the key says nothing about the secret and signs nothing
    /// else): every replica with the same configuration honours the others' cookies.
    pub fn derived(secret: &[u8]) -> LoopBreaker {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"rotagate loop breaker v1");
        let prk = salt.extract(secret);
        let mut key = [0u8; 32];
        // expand/fill only fail for an output longer than 255 hash lengths
        let ok = prk
            .expand(&[b"rotagate-login-loop-breaker"], Len)
            .and_then(|okm| okm.fill(&mut key))
            .is_ok();
        if !ok {
            return LoopBreaker::new();
        }
        LoopBreaker {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        }
    }

    fn mac(&self, count: u32, start: u64) -> String {
        B64.encode(ring::hmac::sign(
            &self.key,
            format!("{count}.{start}").as_bytes(),
        ))
    }

    /// Records one more redirect to login. Returns whether the loop is broken (the
    /// caller answers with [`loop_page`]) and the cookie to append.
    pub fn record(
        &self,
        pairs: &[(&str, &str)],
        now: u64,
        cfg: &Logout,
        secure: bool,
    ) -> (bool, String) {
        let window = cfg.loop_window.as_secs().max(1);
        let previous = pairs
            .iter()
            .find(|(k, _)| *k == LOOP_COOKIE)
            .and_then(|(_, v)| {
                let mut it = v.splitn(3, '.');
                let count: u32 = it.next()?.parse().ok()?;
                let start: u64 = it.next()?.parse().ok()?;
                let mac = B64.decode(it.next()?).ok()?;
                ring::hmac::verify(&self.key, format!("{count}.{start}").as_bytes(), &mac).ok()?;
                (now < start.saturating_add(window)).then_some((count, start))
            });
        let (count, start) = match previous {
            Some((c, s)) => (c.saturating_add(1), s),
            None => (1, now),
        };
        let remaining = start.saturating_add(window).saturating_sub(now).max(1);
        let mut cookie = format!(
            "{LOOP_COOKIE}={count}.{start}.{}; Path=/; Max-Age={remaining}; HttpOnly; SameSite=Lax",
            self.mac(count, start)
        );
        if secure {
            cookie.push_str("; Secure");
        }
        (count > cfg.loop_max, cookie)
    }
}

impl Default for LoopBreaker {
    fn default() -> Self {
        Self::new()
    }
}

/// The page shown instead of yet another redirect to login.
pub fn loop_page(cfg: &Logout) -> Answer {
    let mut body = String::new();
    let _ = write!(
        body,
        "<!doctype html><html><head><meta charset=utf-8><title>Sign-in loop stopped</title></head><body>\
         <h1>Sign-in loop stopped</h1>\
         <p>This browser was sent to the sign-in page more than {} times in {} seconds, and the \
         application rejected the session each time, so the proxy stopped redirecting.</p>\
         <p>Wait a minute and <a href=\"{}\">sign in again</a>. If this keeps happening, the \
         application and its proxy disagree about sessions: please tell the site's operators.</p>\
         </body></html>",
        cfg.loop_max,
        cfg.loop_window.as_secs(),
        html_escape(&cfg.login_url),
    );
    Answer {
        status: 409,
        headers: vec![
            ("content-type", "text/html; charset=utf-8".into()),
            ("cache-control", "no-store".into()),
        ],
        set_cookies: Vec::new(),
        body: Bytes::from(body),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn cfg() -> Logout {
        Logout {
            login_url: "/login".into(),
            return_to_param: "callbackUrl".into(),
            endpoint: "/.rotagate/logout".into(),
            allow_get: false,
            after_logout: "/".into(),
            clear_cookies: vec![],
            clear_site_data: false,
            loop_max: 3,
            loop_window: Duration::from_secs(30),
        }
    }

    #[test]
    fn kinds_in_order() {
        assert_eq!(
            classify(&h(&[("next-router-prefetch", "1"), ("next-action", "x")])),
            Kind::Prefetch
        );
        assert_eq!(
            classify(&h(&[("sec-purpose", "prefetch;prerender")])),
            Kind::Prefetch
        );
        assert_eq!(
            classify(&h(&[("next-action", "abc"), ("rsc", "1")])),
            Kind::ServerAction
        );
        assert_eq!(
            classify(&h(&[("rsc", "1"), ("sec-fetch-mode", "navigate")])),
            Kind::Rsc
        );
        assert_eq!(classify(&h(&[("x-nextjs-data", "1")])), Kind::PagesData);
        assert_eq!(
            classify(&h(&[("sec-fetch-mode", "navigate")])),
            Kind::Navigation
        );
        assert_eq!(
            classify(&h(&[("sec-fetch-dest", "document")])),
            Kind::Navigation
        );
        assert_eq!(
            classify(&h(&[(
                "accept",
                "text/html,application/xhtml+xml,*/*;q=0.8"
            )])),
            Kind::Navigation
        );
        assert_eq!(classify(&h(&[("accept", "application/json")])), Kind::Fetch);
        assert_eq!(classify(&h(&[("accept", "*/*")])), Kind::Fetch);
        assert_eq!(
            classify(&h(&[("sec-fetch-mode", "cors"), ("accept", "text/html")])),
            Kind::Fetch
        );
        assert_eq!(classify(&h(&[])), Kind::Fetch);
    }

    #[test]
    fn return_paths_are_canonical() {
        assert_eq!(return_path("/premium/a", Some("x=1"), ""), "/premium/a?x=1");
        assert_eq!(
            return_path("/_next/data/b1/premium/a.json", Some("slug=a"), ""),
            "/premium/a?slug=a"
        );
        assert_eq!(return_path("/_next/data/b1/index.json", None, ""), "/");
        assert_eq!(
            return_path("/premium/a.rsc", Some("_rsc=abc&x=1"), ""),
            "/premium/a?x=1"
        );
        assert_eq!(
            return_path("/premium/a", Some("_rsc=abc"), ""),
            "/premium/a"
        );
        assert_eq!(
            return_path("/docs/_next/data/b1/a.json", None, "/docs"),
            "/docs/a"
        );
        assert_eq!(return_path("/docs", None, "/docs"), "/docs");
        assert_eq!(return_path("/x.segments/_tree.segment.rsc", None, ""), "/x");
    }

    #[test]
    fn open_redirects_fall_back_to_root() {
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "https://evil.com",
            "%2F%2Fevil.com",
            "/%2F/evil.com",
            "/%5Cevil.com",
            "/a\r\nSet-Cookie: x=1",
            "/a%0d%0aX: y",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_return_to("/ok/path?x=1"), "/ok/path?x=1");
    }

    #[test]
    fn login_location_encodes_the_return_path() {
        assert_eq!(
            login_location(&cfg(), "/premium/a?x=1&y=2"),
            "/login?callbackUrl=/premium/a%3Fx%3D1%26y%3D2"
        );
        let mut c = cfg();
        c.login_url = "/auth?mode=signin".into();
        assert_eq!(login_location(&c, "/"), "/auth?mode=signin&callbackUrl=/");
    }

    #[test]
    fn answers_by_kind() {
        let c = cfg();
        assert_eq!(login_answer(Kind::Prefetch, &c, "", "/a"), None);
        let nav = login_answer(Kind::Navigation, &c, "", "/a").unwrap();
        assert_eq!(nav.status, 303);
        assert!(nav
            .headers
            .contains(&("location", "/login?callbackUrl=/a".into())));
        assert!(nav.headers.contains(&("cache-control", "no-store".into())));
        let act = login_answer(Kind::ServerAction, &c, "", "/a").unwrap();
        assert_eq!(act.status, 200);
        assert!(act
            .headers
            .contains(&("x-action-redirect", "/login?callbackUrl=/a;replace".into())));
        assert!(!act.headers.iter().any(|(k, _)| *k == "location"));
        let mut based = c.clone();
        based.login_url = "/docs/login".into();
        let data = login_answer(Kind::PagesData, &based, "/docs", "/docs/a").unwrap();
        assert!(data
            .headers
            .contains(&("x-nextjs-redirect", "/login?callbackUrl=/docs/a".into())));
        let mut csd = c.clone();
        csd.clear_site_data = true;
        assert!(login_answer(Kind::Navigation, &csd, "", "/a")
            .unwrap()
            .headers
            .contains(&("clear-site-data", "\"cookies\"".into())));
        assert!(
            !nav.headers.iter().any(|(k, _)| *k == "clear-site-data"),
            "off by default"
        );
        let json = login_answer(Kind::Fetch, &c, "", "/a").unwrap();
        assert_eq!(json.status, 401);
        let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "session_expired", "login_url": "/login?callbackUrl=/a"})
        );
    }

    fn target(name: &str, domain: Option<&str>, max_chunks: usize) -> Target {
        Target {
            name: name.into(),
            attributes: CookieAttributes {
                path: "/".into(),
                domain: domain.map(str::to_string),
                secure: false,
                http_only: true,
                same_site: SameSite::Lax,
            },
            max_chunks,
        }
    }

    #[test]
    fn deletions_are_bounded_and_written_once() {
        let junk: Vec<String> = (0..4300).map(|i| format!("s.{i}=x")).collect();
        let header = format!("s=tok; {}; __Secure-s.1=y; s.3=dup", junk.join("; "));
        let pairs = cookies::pairs(&header);
        let (lines, capped) = deletions_bounded(&pairs, &[target("s", None, 17)]);
        assert!(capped);
        // 3 variants + 17 plain chunks + 1 __Secure- chunk
        assert_eq!(lines.len(), 3 + 17 + 1, "{lines:#?}");
        let mut sorted = lines.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), lines.len(), "no line twice");
        // a Domain adds the host-only twin, except for __Host- (it has no Domain)
        let (lines, _) = deletions_bounded(&cookies::pairs("s=1"), &[target("s", Some("a.b"), 17)]);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        // two targets of one name: each line still once
        let both = [target("s", None, 17), target("__Secure-s", None, 17)];
        let (lines, _) = deletions_bounded(&cookies::pairs("s.0=1"), &both);
        assert_eq!(lines.len(), 4, "{lines:#?}");
    }

    #[test]
    fn carrying_a_session_means_a_value_or_a_first_chunk() {
        let t = [target("s", None, 17)];
        assert!(carries_any(&cookies::pairs("a=1; __Secure-s=v"), &t));
        assert!(carries_any(&cookies::pairs("s.0=v"), &t));
        assert!(!carries_any(&cookies::pairs("s=; s.4=v; sx=1"), &t));
    }

    #[test]
    fn only_refused_sessions_count_toward_the_loop() {
        use crate::session::{Invalid, Outcome};
        assert!(!login_counts_toward_loop(None));
        assert!(!login_counts_toward_loop(Some(Outcome::None)));
        assert!(login_counts_toward_loop(Some(Outcome::Invalid(
            Invalid::Expired
        ))));
        assert!(login_counts_toward_loop(Some(Outcome::Invalid(
            Invalid::BadSignature
        ))));
    }

    #[test]
    fn derived_loop_breakers_honour_each_other_only_with_the_same_secret() {
        let cfg = cfg();
        let a = LoopBreaker::derived(b"one-configured-secret-0123456789abcdef");
        let b = LoopBreaker::derived(b"one-configured-secret-0123456789abcdef");
        let other = LoopBreaker::derived(b"another-secret-0123456789abcdef-xyz");
        let (_, c1) = a.record(&[], 100, &cfg, false);
        let v1 = c1
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string();
        let (_, c2) = b.record(&[(LOOP_COOKIE, v1.as_str())], 101, &cfg, false);
        assert!(c2.starts_with(&format!("{LOOP_COOKIE}=2.100.")), "{c2}");
        let (_, c3) = other.record(&[(LOOP_COOKIE, v1.as_str())], 101, &cfg, false);
        assert!(c3.starts_with(&format!("{LOOP_COOKIE}=1.101.")), "{c3}");
        // the key is not the secret itself
        let plain = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            b"one-configured-secret-0123456789abcdef",
        );
        let mac = B64.decode(v1.rsplit('.').next().unwrap()).unwrap();
        assert!(ring::hmac::verify(&plain, b"1.100", &mac).is_err());
    }

    #[test]
    fn loop_breaker_counts_in_a_signed_cookie() {
        let b = LoopBreaker::new();
        let c = cfg();
        let mut cookie = String::new();
        for i in 1..=4u32 {
            let pairs_s = cookie.split(';').next().unwrap_or("").to_string();
            let pairs = cookies::pairs(&pairs_s);
            let (broken, next) = b.record(&pairs, 1000 + i as u64, &c, false);
            assert_eq!(broken, i > 3, "round {i}");
            assert!(
                next.starts_with(&format!("{LOOP_COOKIE}={i}.1001.")),
                "{next}"
            );
            cookie = next;
        }
        // a forged count is ignored
        let (broken, next) = b.record(
            &cookies::pairs("rg_login_loop=99.1000.AAAA"),
            1001,
            &c,
            false,
        );
        assert!(!broken && next.starts_with("rg_login_loop=1."));
        // after the window the count starts again
        let pairs_s = cookie.split(';').next().unwrap().to_string();
        let (broken, _) = b.record(&cookies::pairs(&pairs_s), 1001 + 31, &c, false);
        assert!(!broken);
    }
}
