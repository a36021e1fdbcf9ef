//! Request hygiene that runs on every request, matched or not: header limits, stripping
//! of spoofable and hop-by-hop headers, `X-Forwarded-*`, and the merge of several
//! `Cookie` fields into one.
//!
//! Everything here is a pure function over header maps; `proxy.rs` applies the results
//! to pingora's headers (through its methods, which keep the case map in sync).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, CONNECTION, COOKIE, HOST, UPGRADE};
use ipnet::IpNet;

/// Headers a client must never be able to send to the upstream: our own identity
/// headers (`x-rotagate-*`) and Next.js' internal `x-middleware-subrequest`
/// (CVE-2025-29927: it makes Next skip middleware entirely).
pub fn spoofable_names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut out: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let s = n.as_str();
            s.starts_with("x-rotagate-") || s == "x-middleware-subrequest"
        })
        .cloned()
        .collect();
    out.dedup();
    out
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) to drop before forwarding: the fixed list plus
/// every name listed in `Connection`. For an upgrade (WebSocket) the `Connection` and
/// `Upgrade` headers are kept, because pingora needs them to switch protocols.
pub fn hop_by_hop_names(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    const FIXED: [&str; 6] = [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
    ];
    let mut out: Vec<HeaderName> = FIXED
        .iter()
        .map(|n| HeaderName::from_static(n))
        .filter(|n| headers.contains_key(n))
        .collect();
    for value in headers.get_all(CONNECTION) {
        let Ok(list) = value.to_str() else { continue };
        for token in list.split(',') {
            let token = token.trim();
            if token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.to_ascii_lowercase().as_bytes()) {
                if name != HOST && headers.contains_key(&name) && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    if !keep_upgrade {
        for n in [CONNECTION, UPGRADE] {
            if headers.contains_key(&n) && !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// Checks the first request line of a new HTTP/1 connection, from the bytes peeked so
/// far: `Some(true)` well-formed (`METHOD SP TARGET SP HTTP/d.d`, or the HTTP/2
/// preface), `Some(false)` malformed, `None` not a whole line yet.
///
/// NOTE: pingora answers most malformed heads with 400, but a request line without
/// an HTTP version (`GARBAGE`, `GET /`) makes it wait for more bytes until the
/// keep-alive timeout, and then close without an answer. This check lets the proxy
/// answer 400 at once instead.
pub fn request_line_ok(peeked: &[u8]) -> Option<bool> {
    // leading empty lines are tolerated by RFC 9112 §2.2
    let start = peeked.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let rest = &peeked[start..];
    let end = rest.iter().position(|b| *b == b'\n')?;
    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
    if line == b"PRI * HTTP/2.0" {
        return Some(true);
    }
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(false);
    };
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let version_ok = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    Some(!method.is_empty() && method.iter().all(tchar) && !target.is_empty() && version_ok)
}

/// Approximate size of a request header block as it came over the wire: request line
/// plus `name: value\r\n` per field. Used for the `max_header_bytes` limit (→ 431),
/// which pingora does not enforce at our size.
pub fn header_block_size(method: &str, raw_path: usize, headers: &HeaderMap) -> usize {
    let mut n = method.len() + 1 + raw_path + " HTTP/1.1\r\n".len();
    for (name, value) in headers {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    n + 2
}

/// The `X-Forwarded-*` values to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// `X-Forwarded-For`.
    pub for_: String,
    /// `X-Forwarded-Proto`.
    pub proto: String,
    /// `X-Forwarded-Host`, when the request had a host.
    pub host: Option<String>,
}

/// Computes `X-Forwarded-*`. Incoming values are honoured (appended to / kept) only
/// when the peer is inside `trusted`; otherwise they are replaced, so a client cannot
/// choose the address or scheme the app believes in.
pub fn forwarded(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    own_proto: &str,
    host: Option<&str>,
) -> Forwarded {
    let trusted_peer = peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)));
    let peer_s = peer
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let header = |name: &str| -> Option<String> {
        let vals: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(", "))
        }
    };
    if trusted_peer {
        let for_ = match header("x-forwarded-for") {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer_s}"),
            _ => peer_s,
        };
        let proto = header("x-forwarded-proto")
            .and_then(|p| p.split(',').next().map(|s| s.trim().to_ascii_lowercase()))
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| own_proto.to_string());
        let host = header("x-forwarded-host")
            .and_then(|h| h.split(',').next().map(|s| s.trim().to_string()))
            .filter(|h| !h.is_empty())
            .or_else(|| host.map(str::to_string));
        Forwarded { for_, proto, host }
    } else {
        Forwarded {
            for_: peer_s,
            proto: own_proto.to_string(),
            host: host.map(str::to_string),
        }
    }
}

/// All `Cookie` fields of a request merged into one value (`a=1; b=2`), or `None` when
/// there are none. HTTP/2 clients send one field per cookie; HTTP/1.1 upstreams expect
/// a single field (pingora #892).
pub fn merged_cookie(headers: &HeaderMap) -> Option<String> {
    let mut out = String::new();
    for v in headers.get_all(COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        let s = s.trim().trim_end_matches(';').trim();
        if s.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(s);
    }
    (!out.is_empty()).then_some(out)
}

/// Number of `Cookie` fields in a request.
pub fn cookie_field_count(headers: &HeaderMap) -> usize {
    headers.get_all(COOKIE).iter().count()
}

/// The host a request is for (authority for HTTP/2, else `Host`), lower-cased and
/// without port; IPv6 literals keep their brackets stripped.
pub fn request_host(authority: Option<&str>, headers: &HeaderMap) -> Option<String> {
    let raw = authority.or_else(|| headers.get(HOST).and_then(|v| v.to_str().ok()))?;
    let raw = raw.trim();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                raw
            }
        })
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// What a response must change so that no shared cache (CDN, reverse proxy) can store
/// it: DESIGN §10 "No storable secrets". See [`private_for_shared_caches`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrivateCache {
    /// The `Cache-Control` to send instead; `None`: keep it as it is.
    pub cache_control: Option<String>,
    /// CDN-targeted cache headers to remove.
    pub remove: Vec<HeaderName>,
}

impl PrivateCache {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.cache_control.is_none() && self.remove.is_empty()
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1).
const HEURISTICALLY_CACHEABLE: [u16; 12] =
    [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Calls `f` with each directive of every `Cache-Control` field, split at commas
/// outside quoted strings (`private="set-cookie, x-user"` is one directive), without
/// allocating. Fields that are not visible ASCII are skipped.
fn each_directive<'h>(headers: &'h HeaderMap, mut f: impl FnMut(&'h str)) {
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        let mut emit = |d: &'h str| {
            let d = d.trim();
            if !d.is_empty() {
                f(d);
            }
        };
        for (i, b) in value.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    emit(&value[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        emit(&value[start..]);
    }
}

fn directive_name(d: &str) -> &str {
    d.split('=').next().unwrap_or("").trim()
}

/// For a response that carries a session cookie or answers a `require` route: if a
/// shared cache could store it (RFC 9111 §3: no `no-store` or unqualified `private`,
/// and explicit freshness — `max-age`, `s-maxage`, `Expires`, `public` — or a
/// heuristically cacheable status), the `Cache-Control` that makes it private:
/// `public` and `s-maxage` dropped, `private` first, the app's other directives kept
/// (a qualified `private="…"` only hides fields, so it becomes a plain `private`). The
/// CDN-targeted headers (`CDN-Cache-Control` and vendor `*-CDN-Cache-Control`, RFC
/// 9213; `Surrogate-Control`; Akamai's `Edge-Control`) are always removed: a CDN obeys
/// them over `Cache-Control`.
pub fn private_for_shared_caches(status: u16, headers: &HeaderMap) -> PrivateCache {
    let remove: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n == "cdn-cache-control"
                || n.ends_with("-cdn-cache-control")
                || n == "surrogate-control"
                || n == "edge-control"
        })
        .cloned()
        .collect();
    let (mut no_store, mut private, mut fresh) = (false, false, false);
    each_directive(headers, |d| {
        let n = directive_name(d);
        let is = |want: &str| n.eq_ignore_ascii_case(want);
        no_store |= is("no-store");
        // a qualified private="field" still lets shared caches store the rest
        private |= d.eq_ignore_ascii_case("private");
        fresh |= is("public") || is("s-maxage") || is("max-age");
    });
    let storable = !no_store
        && !private
        && (fresh
            || headers.contains_key(http::header::EXPIRES)
            || HEURISTICALLY_CACHEABLE.contains(&status));
    let cache_control = storable.then(|| {
        let mut out = String::from("private");
        each_directive(headers, |d| {
            let n = directive_name(d);
            if !["public", "s-maxage", "private"]
                .iter()
                .any(|x| n.eq_ignore_ascii_case(x))
            {
                out.push_str(", ");
                out.push_str(d);
            }
        });
        out
    });
    PrivateCache {
        cache_control,
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_spoofable_headers() {
        let h = map(&[
            ("x-rotagate-subject", "admin"),
            ("x-middleware-subrequest", "m"),
            ("x-other", "1"),
        ]);
        let names = spoofable_names(&h);
        assert_eq!(names.len(), 2);
        assert!(!names.iter().any(|n| n == "x-other"));
    }

    #[test]
    fn hop_by_hop_includes_connection_listed() {
        let h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("te", "trailers"),
        ]);
        let names: Vec<String> = hop_by_hop_names(&h, false)
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.contains(&"x-secret".to_string()));
        assert!(names.contains(&"keep-alive".to_string()));
        assert!(names.contains(&"connection".to_string()));
        assert!(names.contains(&"te".to_string()));
    }

    #[test]
    fn upgrade_keeps_connection_and_upgrade() {
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(hop_by_hop_names(&h, true).is_empty());
        assert_eq!(hop_by_hop_names(&h, false).len(), 2);
    }

    #[test]
    fn forwarded_untrusted_replaces() {
        let h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ]);
        let f = forwarded(
            &h,
            Some("10.1.2.3".parse().unwrap()),
            &[],
            "http",
            Some("app.test"),
        );
        assert_eq!(
            f,
            Forwarded {
                for_: "10.1.2.3".into(),
                proto: "http".into(),
                host: Some("app.test".into())
            }
        );
    }

    #[test]
    fn forwarded_trusted_appends() {
        let h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ]);
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let f = forwarded(
            &h,
            Some("10.1.2.3".parse().unwrap()),
            &trusted,
            "http",
            Some("internal"),
        );
        assert_eq!(f.for_, "1.2.3.4, 10.1.2.3");
        assert_eq!(f.proto, "https");
        assert_eq!(f.host.as_deref(), Some("app.example.com"));
    }

    #[test]
    fn merges_cookie_fields() {
        let h = map(&[("cookie", "a=1"), ("cookie", "b=2;"), ("cookie", "")]);
        assert_eq!(merged_cookie(&h).as_deref(), Some("a=1; b=2"));
        assert_eq!(merged_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn host_parsing() {
        let h = map(&[("host", "App.Example.com:8080")]);
        assert_eq!(request_host(None, &h).as_deref(), Some("app.example.com"));
        assert_eq!(request_host(Some("[::1]:80"), &h).as_deref(), Some("::1"));
    }

    #[test]
    fn shared_cacheable_responses_become_private() {
        let cc = |status: u16, pairs: &[(&str, &str)]| {
            private_for_shared_caches(status, &map(pairs)).cache_control
        };
        let p = |s: &str| Some(s.to_string());
        assert_eq!(
            cc(200, &[("cache-control", "public, max-age=60")]),
            p("private, max-age=60")
        );
        assert_eq!(
            cc(200, &[("cache-control", "max-age=60, S-Maxage=600")]),
            p("private, max-age=60")
        );
        assert_eq!(
            cc(
                302,
                &[
                    ("cache-control", "max-age=60"),
                    ("cache-control", "must-revalidate")
                ]
            ),
            p("private, max-age=60, must-revalidate"),
            "several fields are one list"
        );
        assert_eq!(
            cc(
                200,
                &[("cache-control", "private=\"set-cookie, x\", no-cache")]
            ),
            p("private, no-cache"),
            "a qualified private lets shared caches store the rest"
        );
        // heuristically cacheable statuses need nothing said
        assert_eq!(cc(200, &[]), p("private"));
        assert_eq!(cc(404, &[]), p("private"));
        assert_eq!(cc(308, &[]), p("private"));
        // others only with explicit freshness
        assert_eq!(cc(302, &[]), None);
        assert_eq!(cc(401, &[]), None);
        assert_eq!(
            cc(302, &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")]),
            p("private")
        );
        assert_eq!(cc(303, &[("cache-control", "public")]), p("private"));
        // already unstorable
        assert_eq!(cc(200, &[("cache-control", "no-store")]), None);
        assert_eq!(cc(200, &[("cache-control", "private, max-age=5")]), None);
        assert_eq!(cc(200, &[("cache-control", "Private")]), None);
    }

    #[test]
    fn cdn_targeted_cache_headers_are_removed() {
        let h = map(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
            ("cloudflare-cdn-cache-control", "max-age=600"),
            ("surrogate-control", "max-age=600"),
            ("edge-control", "max-age=600"),
            ("x-other", "1"),
        ]);
        let fix = private_for_shared_caches(200, &h);
        assert_eq!(fix.cache_control, None);
        assert_eq!(fix.remove.len(), 4);
        assert!(private_for_shared_caches(200, &map(&[("cache-control", "no-store")])).is_empty());
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line_ok(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Some(true)
        );
        assert_eq!(request_line_ok(b"\r\nPOST /a?b HTTP/1.0\r\n"), Some(true));
        assert_eq!(request_line_ok(b"PRI * HTTP/2.0\r\n\r\nSM"), Some(true));
        assert_eq!(request_line_ok(b"GARBAGE\r\n\r\n"), Some(false));
        assert_eq!(request_line_ok(b"GET /\r\n"), Some(false));
        assert_eq!(request_line_ok(b"GET / HTTP/1.1 x\r\n"), Some(false));
        assert_eq!(request_line_ok(b"\x01\x02 / HTTP/1.1\r\n"), Some(false));
        assert_eq!(request_line_ok(b"GET / HTT"), None);
        assert_eq!(request_line_ok(b""), None);
    }

    #[test]
    fn header_block_size_counts_everything() {
        let h = map(&[("a", "bc")]);
        assert_eq!(
            header_block_size("GET", 1, &h),
            3 + 1 + 1 + 11 + 1 + 2 + 2 + 2 + 2
        );
    }
}
