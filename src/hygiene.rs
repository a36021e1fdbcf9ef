//! Request hygiene that runs on every request, matched or not: header limits, stripping
//! of spoofable and hop-by-hop headers, `X-Forwarded-*`, and the merge of several
//! `Cookie` fields into one.
//!
//! Everything here is a pure function over header maps; `proxy.rs` applies the results
//! to pingora's headers (through its methods, which keep the case map in sync).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, CONNECTION, COOKIE, HOST, UPGRADE};
use ipnet::IpNet;

use crate::config::{AllowedHost, Origin};

/// Header-name prefixes no client may send, whoever the peer: rotagate's own identity
/// headers, and Next.js' internal `x-middleware-*` (`x-middleware-subrequest` makes Next
/// skip middleware entirely, CVE-2025-29927) and `x-invoke-*`.
const ALWAYS_STRIPPED_PREFIXES: [&str; 3] = ["x-rotagate-", "x-middleware-", "x-invoke-"];

/// Headers no client may send, whoever the peer, because they change the path or route
/// the app reads (IIS/Symfony/Spring honour `X-Original-URL`, `X-Rewrite-URL`,
/// `X-Forwarded-Prefix`; Next's minimal mode trusts `x-now-route-matches` and
/// `x-matched-path`): a path rule in rotagate would judge one path, the app serve another.
const ALWAYS_STRIPPED: [&str; 8] = [
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-now-route-matches",
    "x-matched-path",
    // the method the app reads (Express' method-override, Rails, Symfony, ASP.NET):
    // a `methods = [...]` rule would judge one method, the app run another
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers only a trusted proxy may send: they tell the app the client's address, host
/// or port.
const PROXY_ONLY: [&str; 15] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    // client addresses other libraries read first (`request-ip`, CDNs)
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    // hosts and schemes other frameworks read
    "x-host",
    "x-original-host",
    "x-forwarded-server",
    "x-forwarded-scheme",
    "x-url-scheme",
    "front-end-https",
    "x-forwarded-ssl",
];

/// Headers rotagate sets itself; any other spelling of them (`X_Forwarded_For`) is
/// stripped, because servers that fold `_` into `-` (CGI, PHP, WSGI, Rack) would read it
/// as rotagate's.
const MANAGED: [&str; 3] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"];

/// `name` equals `want` when `_` and `-` are the same character (names are lower-case).
fn folded_eq(name: &str, want: &str) -> bool {
    name.len() == want.len() && folded_starts_with(name, want)
}

/// `name` starts with `prefix` when `_` and `-` are the same character.
fn folded_starts_with(name: &str, prefix: &str) -> bool {
    let (n, p) = (name.as_bytes(), prefix.as_bytes());
    n.len() >= p.len()
        && n.iter().zip(p).all(|(a, b)| {
            let fold = |c: u8| if c == b'_' { b'-' } else { c };
            fold(*a) == fold(*b)
        })
}

/// Headers a client must never be able to send to the upstream, compared with `_` and
/// `-` treated alike (header names are already lower-case): see
/// [`ALWAYS_STRIPPED_PREFIXES`], [`ALWAYS_STRIPPED`]; [`PROXY_ONLY`] unless the peer is
/// a trusted proxy (and even then not in a `_` spelling, which no proxy writes); and
/// any `_` spelling of the headers rotagate sets itself ([`MANAGED`] and `own`, the
/// configured identity headers), whose `-` spelling the caller replaces.
///
/// Must run after the request kind is decided (`x-middleware-prefetch: 1` marks a
/// prefetch): it looks at the copy of the request that goes upstream.
pub fn spoofable_names<'a>(
    headers: &HeaderMap,
    trusted_peer: bool,
    own: impl Iterator<Item = &'a str> + Clone,
) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        let underscore = n.contains('_');
        let strip = ALWAYS_STRIPPED_PREFIXES
            .iter()
            .any(|p| folded_starts_with(n, p))
            || ALWAYS_STRIPPED.iter().any(|w| folded_eq(n, w))
            || ((!trusted_peer || underscore) && PROXY_ONLY.iter().any(|w| folded_eq(n, w)))
            || (underscore
                && (MANAGED.iter().any(|w| folded_eq(n, w))
                    || own.clone().any(|w| folded_eq(n, w))));
        if strip {
            out.push(name.clone());
        }
    }
    out
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) to drop before forwarding: the fixed list plus
/// every name listed in `Connection`. For an upgrade (WebSocket) the `Connection` and
/// `Upgrade` headers are kept, because pingora needs them to switch protocols.
pub fn hop_by_hop_names(headers: &HeaderMap, keep_upgrade: bool) -> Vec<HeaderName> {
    // one pass over the names present (a handful) instead of a lookup per listed name
    let mut out: Vec<HeaderName> = Vec::new();
    let (mut connection, mut upgrade) = (false, false);
    for name in headers.keys() {
        match name.as_str() {
            "connection" => connection = true,
            "upgrade" => upgrade = true,
            // the fixed list, as one match on the name: a lookup per listed name (and
            // parsing the names) showed in profiles
            "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "proxy-authorization"
            | "proxy-authenticate" => out.push(name.clone()),
            _ => {}
        }
    }
    if !connection && !upgrade {
        return out;
    }
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
    /// `X-Forwarded-Proto`: `http` or `https`.
    pub proto: &'static str,
    /// `X-Forwarded-Host`, when the request had a host.
    pub host: Option<String>,
}

/// An identity claim as a header value, when the app would read exactly the claim:
/// visible ASCII with inner spaces only. Control characters and line breaks are no header
/// value; non-ASCII bytes reach apps in whatever encoding their server guesses; leading
/// or trailing spaces are dropped on the wire. Any of them: the header is not sent.
pub fn identity_value(text: &str) -> Option<http::HeaderValue> {
    let exact = text.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' ')
        && text.trim_matches(' ').len() == text.len();
    exact
        .then(|| http::HeaderValue::from_str(text).ok())
        .flatten()
}

/// Behind a trusted load balancer, the host its client asked for: the first
/// `X-Forwarded-Host` value, when the peer is trusted and sent one. The request phase
/// vets it like any host and, when it is allowed, makes it the request's one host — so
/// rules, CSRF and the app (which reads this header) judge the same host.
pub fn trusted_forwarded_host(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &[IpNet],
) -> Option<HostReading> {
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return None;
    }
    let value = headers.get("x-forwarded-host")?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| HostReading::parse(first))
}

/// True when `peer` is inside one of the `trusted` networks.
pub fn is_trusted(peer: Option<IpAddr>, trusted: &[IpNet]) -> bool {
    peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)))
}

/// Computes `X-Forwarded-*`. Incoming values are honoured (appended to / kept) only
/// when the peer is inside `trusted`; otherwise they are replaced, so a client cannot
/// choose the address or scheme the app believes in. `own_proto` is the scheme of the
/// public origin (`http` without one); `host` the request's vetted host. With a public
/// origin (`vet`), even a trusted proxy's `X-Forwarded-Host` is kept only when it names
/// an allowed host: a load balancer passes on whatever Host its client sent.
pub fn forwarded(
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    trusted: &[IpNet],
    own_proto: &str,
    host: Option<&RequestHost>,
    vet: Option<(&Origin, &[AllowedHost])>,
) -> Forwarded {
    let peer_s = peer
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let own_host = || host.map(RequestHost::authority);
    // a static value: the header is then built without an allocation
    let own_proto = if own_proto.eq_ignore_ascii_case("https") {
        "https"
    } else {
        "http"
    };
    if !is_trusted(peer, trusted) {
        return Forwarded {
            for_: peer_s,
            proto: own_proto,
            host: own_host(),
        };
    }
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
    let for_ = match header("x-forwarded-for") {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer_s}"),
        _ => peer_s,
    };
    let proto = header("x-forwarded-proto")
        .and_then(|p| {
            let first = p.split(',').next()?.trim();
            ["http", "https"]
                .into_iter()
                .find(|s| first.eq_ignore_ascii_case(s))
        })
        .unwrap_or(own_proto);
    let first_host = header("x-forwarded-host")
        .and_then(|h| h.split(',').next().map(|s| s.trim().to_string()))
        .filter(|h| !h.is_empty());
    let host = match (first_host, vet) {
        (None, _) => own_host(),
        (Some(h), None) => Some(h),
        (Some(h), Some((public, allowed))) => match HostReading::parse(&h) {
            HostReading::Host(h) => {
                match vet_host(HostReading::Host(h), false, Some(public), allowed) {
                    Ok(Some(h)) => Some(h.authority()),
                    _ => own_host(),
                }
            }
            _ => own_host(),
        },
    };
    Forwarded { for_, proto, host }
}

/// All `Cookie` fields of a request merged into one value (`a=1; b=2`), or `None` when
/// there are none. HTTP/2 clients send one field per cookie; HTTP/1.1 upstreams expect
/// a single field (pingora #892).
pub fn merged_cookie(headers: &HeaderMap) -> Option<String> {
    let mut out = String::new();
    for v in headers.get_all(COOKIE) {
        // a field with bytes that are not visible ASCII is still read (lossily): skipping
        // it would hide the session cookies in it from the session decision while the
        // field itself went upstream untouched
        let s = String::from_utf8_lossy(v.as_bytes());
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

/// A request's host as rotagate reads it (DESIGN §10, "one reading of the request"):
/// lower-case, without a trailing dot, IPv6 literals without brackets, and the port
/// when the client wrote a non-default one. Route `hosts`, `has` host items, CSRF and
/// `X-Forwarded-Host` all use this one reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHost {
    /// Host name or IP literal, lower-case, no trailing dot, no brackets.
    pub name: String,
    /// The port, when one was written (after vetting: only when not the public
    /// origin's default port).
    pub port: Option<u16>,
}

impl RequestHost {
    /// True when `value` is exactly [`RequestHost::authority`] (checked without
    /// building it).
    pub fn is_spelled(&self, value: &[u8]) -> bool {
        let rest = if self.name.contains(':') {
            value
                .strip_prefix(b"[")
                .and_then(|v| v.strip_prefix(self.name.as_bytes()))
                .and_then(|v| v.strip_prefix(b"]"))
        } else {
            value.strip_prefix(self.name.as_bytes())
        };
        match (rest, self.port) {
            (Some(rest), None) => rest.is_empty(),
            // exactly the port's decimal text (`:0080` is not, `:0` is)
            (Some(rest), Some(p)) => rest
                .strip_prefix(b":")
                .is_some_and(|digits| digits == p.to_string().as_bytes()),
            (None, _) => false,
        }
    }

    /// `host[:port]` as a `Host` header value (IPv6 literals in brackets).
    pub fn authority(&self) -> String {
        let name = if self.name.contains(':') {
            format!("[{}]", self.name)
        } else {
            self.name.clone()
        };
        match self.port {
            Some(p) => format!("{name}:{p}"),
            None => name,
        }
    }
}

/// What a request says about its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostReading {
    /// No host at all (no absolute-form authority, no `:authority`, no or an empty
    /// `Host`).
    Missing,
    /// A host that is not a host name, IP literal or port (`a b`, `x:99999`, `[::1`).
    Invalid,
    /// A well-formed host.
    Host(RequestHost),
}

impl HostReading {
    /// Parses an authority (`Host` value): `name[:port]` or `[v6][:port]`. Names are
    /// RFC 3986 reg-names without percent-encoding or sub-delims (letters, digits, `-`,
    /// `.`, `_`, `~`), which is every name DNS or a browser produces.
    pub fn parse(authority: &str) -> HostReading {
        let raw = authority.trim();
        if raw.is_empty() {
            return HostReading::Missing;
        }
        let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
            let Some((v6, after)) = rest.split_once(']') else {
                return HostReading::Invalid;
            };
            // an IP-literal is an IPv6 address (RFC 3986 §3.2.2): `[cafe.de]` is no host
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return HostReading::Invalid;
            }
            match after {
                "" => (v6, None),
                p => match p.strip_prefix(':') {
                    Some(p) => (v6, Some(p)),
                    None => return HostReading::Invalid,
                },
            }
        } else {
            match raw.rsplit_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (raw, None),
            }
        };
        let port = match port {
            // `host:` is an empty port (RFC 3986 §3.2.3): the scheme's default
            None | Some("") => None,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u16>() {
                    Ok(p) => Some(p),
                    Err(_) => return HostReading::Invalid,
                }
            }
            Some(_) => return HostReading::Invalid,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let reg_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if name.is_empty() || (!raw.starts_with('[') && !name.bytes().all(reg_name)) {
            return HostReading::Invalid;
        }
        // an empty label (`a..b`, `.a`, `a..` after the one trailing dot) is no DNS
        // name: read as written it would miss `hosts` rules that the app behind, which
        // may drop the dots, still serves (tests/fuzz_findings.rs)
        let empty_label = name.starts_with('.') || name.ends_with('.') || name.contains("..");
        if !raw.starts_with('[') && empty_label {
            return HostReading::Invalid;
        }
        HostReading::Host(RequestHost {
            name: name.to_ascii_lowercase(),
            port,
        })
    }

    /// The host, when there is a well-formed one.
    pub fn into_host(self) -> Option<RequestHost> {
        match self {
            HostReading::Host(h) => Some(h),
            _ => None,
        }
    }
}

/// True when a request target has a form rotagate serves (RFC 9112 §3.2): origin-form
/// (`/path`), or absolute-form with an `http` / `https` scheme.
///
/// NOTE: pingora parses any other target (`x:/premium/x`, `premium/x`,
/// `mailto:/admin`) as the path `/` and forwards the raw target, which apps that split
/// targets with `urlsplit` (Werkzeug, gunicorn) read as `/premium/x`: a path no rule
/// ever saw. Such targets are refused with 400.
pub fn request_target_ok(raw_target: &[u8]) -> bool {
    if raw_target.first() == Some(&b'/') {
        return true;
    }
    let scheme_ok = |s: &[u8]| {
        raw_target
            .get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    (scheme_ok(b"http://") || scheme_ok(b"https://"))
        && absolute_form_authority(raw_target).is_some()
}

/// The authority of an absolute-form request target (`http://host:port/path`), if the
/// target is one. pingora keeps it only in the raw target: the parsed URI of an HTTP/1
/// request carries the path alone.
pub fn absolute_form_authority(raw_target: &[u8]) -> Option<&str> {
    if raw_target.first() == Some(&b'/') {
        return None;
    }
    let s = std::str::from_utf8(raw_target).ok()?;
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The one reading of a request's host (DESIGN §10): the absolute-form target's
/// authority, else the HTTP/2 `:authority` (`uri_authority`), else `Host`. pingora has
/// already refused a `Host` that differs from either authority, or appears twice.
///
/// The proxy reads it with `request_host(req.raw_path(), req.uri.authority().map(|a|
/// a.as_str()), &req.headers)`; every user of the host (matching, CSRF, forwarding)
/// must call this, not read `Host` itself.
pub fn request_host(
    raw_target: &[u8],
    uri_authority: Option<&str>,
    headers: &HeaderMap,
) -> HostReading {
    if let Some(a) = absolute_form_authority(raw_target).or(uri_authority) {
        return HostReading::parse(a);
    }
    match headers.get(HOST).map(|v| v.to_str()) {
        None => HostReading::Missing,
        Some(Ok(v)) => HostReading::parse(v),
        Some(Err(_)) => HostReading::Invalid,
    }
}

/// Why a request's host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// HTTP/1.1 (or later) without a host: 400 (RFC 9112 §3.2).
    Missing,
    /// A `Host` that is not a host: 400.
    Invalid,
    /// Not the public origin's host nor an allowed one: 421 Misdirected Request.
    Misdirected,
}

impl HostRefusal {
    /// The status code of the answer.
    pub fn status(self) -> u16 {
        match self {
            HostRefusal::Missing | HostRefusal::Invalid => 400,
            HostRefusal::Misdirected => 421,
        }
    }
    /// The metric reason and answer text.
    pub fn reason(self) -> &'static str {
        match self {
            HostRefusal::Missing => "host_missing",
            HostRefusal::Invalid => "host_invalid",
            HostRefusal::Misdirected => "host_misdirected",
        }
    }
}

/// The default port of `scheme`.
fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// Vets a request's host. With a public origin, the host must be the origin's (same
/// name and port, the scheme's default port written or not) or match an entry of
/// `allowed` (`name`, `*.domain` for any subdomain, optional port); anything else is
/// [`HostRefusal::Misdirected`], so a poisoned `Host` never reaches the app's password
/// reset links or caches. An HTTP/1.0 request without a host is served as the public
/// origin (`Ok(Some(origin host))`), or with no host when none is configured. Returns
/// the host to use, its port dropped when it is the public origin's default.
pub fn vet_host(
    reading: HostReading,
    http10: bool,
    public: Option<&Origin>,
    allowed: &[AllowedHost],
) -> Result<Option<RequestHost>, HostRefusal> {
    let mut host = match reading {
        HostReading::Host(h) => h,
        HostReading::Invalid => return Err(HostRefusal::Invalid),
        HostReading::Missing if http10 => {
            return Ok(public.map(|o| RequestHost {
                name: o.host.trim_end_matches('.').to_string(),
                port: o.port,
            }))
        }
        HostReading::Missing => return Err(HostRefusal::Missing),
    };
    let Some(origin) = public else {
        return Ok(Some(host));
    };
    if host.port == Some(default_port(&origin.scheme)) {
        host.port = None;
    }
    let is_origin = host.name == origin.host.trim_end_matches('.') && host.port == origin.port;
    if is_origin || allowed.iter().any(|a| a.matches(&host.name, host.port)) {
        Ok(Some(host))
    } else {
        Err(HostRefusal::Misdirected)
    }
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
/// allocating. Returns false, and stops, at the first field that cannot be read: bytes
/// that are not visible ASCII, or a quoted string left open. Directives of that field
/// may already have been passed to `f`: a caller that gets false must not use them.
fn each_directive<'h>(headers: &'h HeaderMap, mut f: impl FnMut(&'h str)) -> bool {
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        // to_str refuses bytes >= 0x80 and controls: a field rotagate cannot read
        let Ok(value) = value.to_str() else {
            return false;
        };
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
        if quoted {
            return false;
        }
        emit(&value[start..]);
    }
    true
}

/// What replaces a `Cache-Control` rotagate cannot read: it cannot tell what the app
/// asked for, so nothing may store it (a `no-store` of the app's may hide in the part
/// it could not read; `private` alone would let the browser's cache keep it).
const UNREADABLE_CACHE_CONTROL: &str = "private, no-store";

fn directive_name(d: &str) -> &str {
    d.split('=').next().unwrap_or("").trim()
}

/// For a response that carries a session cookie or answers a `require` route: if a
/// shared cache could store it (RFC 9111 §3: no `no-store` or unqualified `private`,
/// and explicit freshness — `max-age`, `s-maxage`, `Expires`, `public` — or a
/// heuristically cacheable status), the `Cache-Control` that makes it private:
/// `public` and `s-maxage` dropped, `private` first, the app's other directives kept
/// (a qualified `private="…"` only hides fields, so it becomes a plain `private`).
/// A `304` counts as storable too: a cache updates its stored response's headers from
/// it (RFC 9111 §4.3.4), `Set-Cookie` included. So does `no-store` next to
/// `must-understand`: a cache that understands the status may ignore the `no-store`
/// (RFC 9111 §5.2.2.3). A `Cache-Control` rotagate cannot read (not visible ASCII, an
/// open quoted string) is replaced by `private, no-store`: fail closed. The
/// CDN-targeted headers (`CDN-Cache-Control` and vendor `*-CDN-Cache-Control`, RFC
/// 9213; `Surrogate-Control`; Akamai's `Edge-Control`; nginx's `X-Accel-Expires`) are
/// always removed: a CDN or nginx obeys them over `Cache-Control`.
pub fn private_for_shared_caches(status: u16, headers: &HeaderMap) -> PrivateCache {
    let remove: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            n == "cdn-cache-control"
                || n.ends_with("-cdn-cache-control")
                || n == "surrogate-control"
                || n == "edge-control"
                || n == "x-accel-expires"
        })
        .cloned()
        .collect();
    let (mut no_store, mut must_understand, mut private, mut fresh) = (false, false, false, false);
    let readable = each_directive(headers, |d| {
        let n = directive_name(d);
        let is = |want: &str| n.eq_ignore_ascii_case(want);
        no_store |= is("no-store");
        must_understand |= is("must-understand");
        // a qualified private="field" still lets shared caches store the rest
        private |= d.eq_ignore_ascii_case("private");
        fresh |= is("public") || is("s-maxage") || is("max-age");
    });
    if !readable {
        return PrivateCache {
            cache_control: Some(UNREADABLE_CACHE_CONTROL.to_string()),
            remove,
        };
    }
    // a cache that understands the status may ignore no-store next to must-understand
    let storable = (!no_store || must_understand)
        && !private
        && (fresh
            || must_understand
            || status == 304
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

    fn names(h: &HeaderMap, trusted: bool, own: &[&str]) -> Vec<String> {
        spoofable_names(h, trusted, own.iter().copied())
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn identity_values_are_sent_only_when_exact() {
        assert!(identity_value("user-1").is_some());
        assert!(identity_value("Ada Lovelace").is_some());
        for bad in [
            "a\r\nx: y",
            "caf\u{e9}",
            "\u{2028}",
            " padded ",
            "tab\there",
            "nul\0",
        ] {
            assert!(identity_value(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn only_origin_and_http_absolute_targets_are_served() {
        for ok in [
            &b"/"[..],
            b"/premium/x?a=1",
            b"http://app.test/x",
            b"HTTPS://app.test",
        ] {
            assert!(request_target_ok(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"x:/premium/x"[..],
            b"premium/x",
            b"mailto:/premium/x",
            b"javascript:/account/x",
            b"ftp://app.test/premium",
            b"app.test:443",
            b"*",
            b"",
        ] {
            assert!(!request_target_ok(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
    #[test]
    fn strips_spoofable_headers_in_every_spelling() {
        let h = map(&[
            ("x-rotagate-subject", "admin"),
            ("x_rotagate_subject", "admin"),
            ("x-rotagate_claims", "{}"),
            ("x-middleware-subrequest", "m"),
            ("x-middleware_subrequest", "m"),
            ("x-middleware-prefetch", "1"),
            ("x-invoke-path", "/p"),
            ("x_invoke_query", "q"),
            ("x-now-route-matches", "1"),
            ("x-matched-path", "/p"),
            ("x-original-url", "/p"),
            ("x_rewrite_url", "/p"),
            ("x-forwarded-prefix", "/p"),
            ("x_forwarded_for", "6.6.6.6"),
            ("x-user_email", "e"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-port", "443"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-user-email", "e"),
            ("x-other", "1"),
            ("x-rotagatex", "1"),
        ]);
        let untrusted = names(&h, false, &["x-user-email"]);
        assert_eq!(untrusted.len(), 18, "{untrusted:?}");
        // the `-` spellings of what rotagate sets are replaced by the caller, not here
        for kept in ["x-forwarded-for", "x-user-email", "x-other", "x-rotagatex"] {
            assert!(!untrusted.iter().any(|n| n == kept), "{kept}");
        }
        let trusted = names(&h, true, &["x-user-email"]);
        for kept in ["forwarded", "x-real-ip", "x-forwarded-port"] {
            assert!(!trusted.iter().any(|n| n == kept), "{kept}");
        }
        assert_eq!(trusted.len(), 15);
        let h = map(&[("x_real_ip", "7.7.7.7")]);
        assert_eq!(names(&h, true, &[]), ["x_real_ip"]);
        assert!(names(&HeaderMap::new(), false, &[]).is_empty());
    }

    #[test]
    fn folded_comparisons() {
        assert!(folded_eq("x_a-b", "x-a-b"));
        assert!(!folded_eq("x-a-bc", "x-a-b"));
        assert!(folded_starts_with("x_middleware_x", "x-middleware-"));
        assert!(!folded_starts_with("x-mid", "x-middleware-"));
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

    fn rh(name: &str, port: Option<u16>) -> RequestHost {
        RequestHost {
            name: name.into(),
            port,
        }
    }

    fn origin() -> Origin {
        Origin {
            scheme: "https".into(),
            host: "app.example.com".into(),
            port: None,
        }
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
            Some(&rh("app.test", Some(8080))),
            None,
        );
        assert_eq!(
            f,
            Forwarded {
                for_: "10.1.2.3".into(),
                proto: "http",
                host: Some("app.test:8080".into())
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
            Some(&rh("internal", None)),
            None,
        );
        assert_eq!(f.for_, "1.2.3.4, 10.1.2.3");
        assert_eq!(f.proto, "https");
        assert_eq!(f.host.as_deref(), Some("app.example.com"));
    }

    #[test]
    fn forwarded_host_from_a_trusted_peer_is_vetted() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let o = origin();
        let allowed = [AllowedHost {
            name: "*.example.com".into(),
            port: None,
        }];
        let vet = Some((&o, &allowed[..]));
        let peer = Some("10.1.2.3".parse().unwrap());
        let own = rh("app.example.com", None);
        for (xfh, want) in [
            ("evil.test", "app.example.com"),
            ("WWW.example.com.", "www.example.com"),
            ("www.example.com:443", "www.example.com"),
            ("www.example.com:8443", "app.example.com"),
            ("a b", "app.example.com"),
        ] {
            let h = map(&[("x-forwarded-host", xfh)]);
            let f = forwarded(&h, peer, &trusted, "https", Some(&own), vet);
            assert_eq!(f.host.as_deref(), Some(want), "{xfh}");
        }
    }

    #[test]
    fn host_readings() {
        for (raw, want) in [
            (
                "App.Example.com:8080",
                HostReading::Host(rh("app.example.com", Some(8080))),
            ),
            (
                "app.example.com.",
                HostReading::Host(rh("app.example.com", None)),
            ),
            (
                "APP.example.com.:443",
                HostReading::Host(rh("app.example.com", Some(443))),
            ),
            ("[::1]:80", HostReading::Host(rh("::1", Some(80)))),
            ("[::1]", HostReading::Host(rh("::1", None))),
            ("10.0.0.1", HostReading::Host(rh("10.0.0.1", None))),
            ("host:", HostReading::Host(rh("host", None))),
            ("my_host", HostReading::Host(rh("my_host", None))),
            ("", HostReading::Missing),
            ("  ", HostReading::Missing),
            ("a b", HostReading::Invalid),
            ("x:99999", HostReading::Invalid),
            ("x:8o", HostReading::Invalid),
            ("[::1", HostReading::Invalid),
            ("[::1]x", HostReading::Invalid),
            ("::1", HostReading::Invalid),
            (".", HostReading::Invalid),
            ("a@b", HostReading::Invalid),
            ("a%2eb", HostReading::Invalid),
        ] {
            assert_eq!(HostReading::parse(raw), want, "{raw:?}");
        }
        assert_eq!(rh("::1", Some(80)).authority(), "[::1]:80");
        assert_eq!(rh("a.test", None).authority(), "a.test");
        for h in [
            rh("::1", Some(80)),
            rh("a.test", None),
            rh("a.test", Some(8080)),
        ] {
            assert!(h.is_spelled(h.authority().as_bytes()), "{h:?}");
        }
        for (h, not) in [
            (rh("a.test", None), "A.test"),
            (rh("a.test", None), "a.test."),
            (rh("a.test", None), "a.test:80"),
            (rh("a.test", Some(80)), "a.test:080"),
            (rh("a.test", Some(80)), "a.test:"),
            (rh("::1", None), "::1"),
        ] {
            assert!(!h.is_spelled(not.as_bytes()), "{not}");
        }
    }

    #[test]
    fn the_one_reading_of_the_host() {
        let h = map(&[("host", "App.Example.com:8080")]);
        let host = |target: &[u8], auth: Option<&str>, h: &HeaderMap| {
            request_host(target, auth, h).into_host()
        };
        assert_eq!(
            host(b"/x", None, &h),
            Some(rh("app.example.com", Some(8080)))
        );
        // HTTP/2 :authority, then absolute-form, win over Host
        assert_eq!(host(b"/x", Some("[::1]:80"), &h), Some(rh("::1", Some(80))));
        assert_eq!(
            host(b"http://Other.test/x?y", Some("[::1]:80"), &h),
            Some(rh("other.test", None))
        );
        assert_eq!(
            request_host(b"/", None, &HeaderMap::new()),
            HostReading::Missing
        );
        assert_eq!(
            absolute_form_authority(b"https://a.test:1/x"),
            Some("a.test:1")
        );
        assert_eq!(absolute_form_authority(b"http://a.test?x"), Some("a.test"));
        assert_eq!(absolute_form_authority(b"http://a.test"), Some("a.test"));
        assert_eq!(absolute_form_authority(b"/http://a.test"), None);
        assert_eq!(absolute_form_authority(b"*"), None);
        assert_eq!(absolute_form_authority(b"a.test:443"), None);
    }

    #[test]
    fn hosts_are_vetted_against_the_public_origin() {
        let o = origin();
        let allowed = [
            AllowedHost {
                name: "www.example.com".into(),
                port: None,
            },
            AllowedHost {
                name: "*.internal".into(),
                port: Some(8080),
            },
        ];
        let vet = |r: HostReading| vet_host(r, false, Some(&o), &allowed);
        let p = HostReading::parse;
        assert_eq!(
            vet(p("app.example.com")),
            Ok(Some(rh("app.example.com", None)))
        );
        assert_eq!(
            vet(p("App.example.com.:443")),
            Ok(Some(rh("app.example.com", None)))
        );
        assert_eq!(
            vet(p("www.example.com")),
            Ok(Some(rh("www.example.com", None)))
        );
        assert_eq!(
            vet(p("rg.svc.internal:8080")),
            Ok(Some(rh("rg.svc.internal", Some(8080))))
        );
        for bad in [
            "evil.test",
            "app.example.com:80",
            "internal:8080",
            "rg.internal",
            "127.0.0.1",
            "example.com",
        ] {
            assert_eq!(vet(p(bad)), Err(HostRefusal::Misdirected), "{bad}");
        }
        assert_eq!(vet(p("a b")), Err(HostRefusal::Invalid));
        assert_eq!(vet(HostReading::Missing), Err(HostRefusal::Missing));
        // HTTP/1.0 without a host is served as the public origin
        assert_eq!(
            vet_host(HostReading::Missing, true, Some(&o), &allowed),
            Ok(Some(rh("app.example.com", None)))
        );
        // without a public origin nothing is vetted
        assert_eq!(
            vet_host(p("evil.test"), false, None, &[]),
            Ok(Some(rh("evil.test", None)))
        );
        assert_eq!(vet_host(HostReading::Missing, true, None, &[]), Ok(None));
        assert_eq!(
            vet_host(HostReading::Missing, false, None, &[]),
            Err(HostRefusal::Missing)
        );
        assert_eq!(HostRefusal::Misdirected.status(), 421);
        assert_eq!(HostRefusal::Missing.status(), 400);
    }

    #[test]
    fn merges_cookie_fields() {
        let h = map(&[("cookie", "a=1"), ("cookie", "b=2;"), ("cookie", "")]);
        assert_eq!(merged_cookie(&h).as_deref(), Some("a=1; b=2"));
        assert_eq!(merged_cookie(&HeaderMap::new()), None);
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
    fn unreadable_cache_control_fails_closed() {
        let fixed = Some(UNREADABLE_CACHE_CONTROL.to_string());
        let mut h = HeaderMap::new();
        h.append(
            "cache-control",
            HeaderValue::from_bytes("public, max-age=600, x=\"é\"".as_bytes()).unwrap(),
        );
        for status in [200, 302] {
            assert_eq!(private_for_shared_caches(status, &h).cache_control, fixed);
        }
        // one unreadable field among readable ones
        let mut h = map(&[("cache-control", "no-cache")]);
        h.append(
            "cache-control",
            HeaderValue::from_bytes(b"max-age=6\xff").unwrap(),
        );
        assert_eq!(private_for_shared_caches(302, &h).cache_control, fixed);
        for open in [
            "x=\"a, public, max-age=600",
            "public, x=\"a\\\"",
            "max-age=60, x=\"\\",
        ] {
            let h = map(&[("cache-control", open)]);
            assert_eq!(
                private_for_shared_caches(302, &h).cache_control,
                fixed,
                "{open}"
            );
        }
        // a closed quoted string with an escaped quote is readable
        let h = map(&[("cache-control", "x=\"a\\\", b\", max-age=5")]);
        assert_eq!(
            private_for_shared_caches(302, &h).cache_control.as_deref(),
            Some("private, x=\"a\\\", b\", max-age=5")
        );
    }

    #[test]
    fn no_store_with_must_understand_and_304s_become_private() {
        let cc = |status: u16, pairs: &[(&str, &str)]| {
            private_for_shared_caches(status, &map(pairs)).cache_control
        };
        assert_eq!(
            cc(200, &[("cache-control", "no-store, must-understand")]),
            Some("private, no-store, must-understand".into())
        );
        assert_eq!(
            cc(302, &[("cache-control", "Must-Understand, no-store")]),
            Some("private, Must-Understand, no-store".into())
        );
        assert_eq!(
            cc(
                200,
                &[("cache-control", "private, no-store, must-understand")]
            ),
            None
        );
        assert_eq!(cc(304, &[("etag", "\"v1\"")]), Some("private".into()));
        assert_eq!(
            cc(304, &[("cache-control", "max-age=60, public")]),
            Some("private, max-age=60".into())
        );
        assert_eq!(cc(304, &[("cache-control", "no-store")]), None);
    }

    #[test]
    fn x_accel_expires_is_removed() {
        let fix = private_for_shared_caches(
            302,
            &map(&[("x-accel-expires", "600"), ("cache-control", "no-store")]),
        );
        assert_eq!(fix.cache_control, None);
        assert_eq!(fix.remove, vec![HeaderName::from_static("x-accel-expires")]);
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
