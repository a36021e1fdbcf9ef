//! Issue 9, hosts, paths and headers (points 7, 14, 15, 16, 17): each test performs the
//! attack through the real proxy (real hyper upstream, real clients, loopback) and
//! checks what the app behind rotagate gets to see.

mod common;

use bytes::Bytes;
use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const SECRET: &str = "hosts-test-secret-hosts-test-secret-01234";

/// Starts the proxy with `[listen]` keys of the test's own (the shared harness writes
/// its `[listen]` table itself), then `extra` TOML.
async fn start(upstream: Upstream, listen: &str, extra: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let text = config_with_listen(upstream.addr, listen, extra);
    Harness::start_text(dir, upstream, &text).await
}

/// A JWT session (HS256, cookie `session`), rotated every 5 minutes.
const SESSION: &str = r#"
[session]
rotate_every = "5m"
[session.reissue]
cookie = "session"
format = "jwt"
[[session.reissue.keys]]
alg = "HS256"
secret = "file:secret"
"#;

/// An HS256 token signed with the test's own HMAC (not rotagate's JWT code).
fn hs256(claims: Value) -> String {
    hs256_token(SECRET, &json!({"alg": "HS256", "typ": "JWT"}), &claims)
}

/// The value of a counter line in the Prometheus text (`0` when absent).
fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn hygiene(reason: &str) -> String {
    format!("rotagate_hygiene_total{{reason=\"{reason}\"}}")
}

/// The status code of a raw HTTP/1 response.
fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

/// A header name as apps that fold `_` into `-` read it (CGI, PHP, WSGI, Rack).
fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

// ---------------------------------------------------------------------------------
// 7. identity header values

#[tokio::test]
async fn identity_values_that_are_not_header_values_are_skipped_and_counted() {
    let h = start(
        upstream_ok().await,
        "",
        &format!(
            "{SESSION}\n[identity]\nclaim_headers = {{ \"x-user-email\" = \"email\" }}\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n"
        ),
    )
    .await;
    // a token the key signed, whose `sub` and `email` carry control characters: the
    // attacker's hope is a header split upstream, the operator's fear a 500 for a user
    let token = hs256(json!({
        "sub": "alice\u{7}\r\nx-rotagate-subject: admin",
        "email": "a@b.test\nx",
        "iat": T0,
        "exp": T0 + 3600,
    }));
    let resp = h
        .client
        .get(h.url("/x"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a bad claim value is never a 500");
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-rotagate-subject"), None);
    assert_eq!(seen.header("x-user-email"), None);
    let m = h.metrics().await;
    assert_eq!(counter(&m, &hygiene("identity_value_invalid")), 2, "{m}");

    // a clean subject still goes through
    let token = hs256(json!({"sub": "alice", "email": "a@b.test", "iat": T0, "exp": T0 + 3600}));
    let resp = h
        .client
        .get(h.url("/x"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-rotagate-subject").as_deref(), Some("alice"));
    assert_eq!(seen.header("x-user-email").as_deref(), Some("a@b.test"));
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 14. host poisoning

const PUBLIC: &str =
    "public_origin = \"https://app.example.com\"\nallowed_hosts = [\"www.example.com\"]";
const CATCH_ALL: &str = "[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n";

#[tokio::test]
async fn a_host_that_is_not_the_public_origin_gets_421() {
    let h = start(upstream_ok().await, PUBLIC, CATCH_ALL).await;
    for (host, want) in [
        ("evil.test", 421),
        ("app.example.com.evil.test", 421),
        ("app.example.com:8443", 421),
        ("127.0.0.1", 421),
        ("APP.Example.COM.", 200),
        ("app.example.com:443", 200),
        ("www.example.com", 200),
    ] {
        let resp = within(
            host,
            raw(
                h.addr(),
                format!("GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            ),
        )
        .await;
        assert_eq!(status(&resp), want, "Host: {host}: {resp}");
    }
    // only the three allowed requests reached the app, each with a vetted host
    let seen = h.upstream.seen();
    assert_eq!(seen.len(), 3);
    let hosts: Vec<_> = seen
        .iter()
        .map(|s| s.header("x-forwarded-host").unwrap_or_default())
        .collect();
    assert_eq!(
        hosts,
        ["app.example.com", "app.example.com", "www.example.com"]
    );
    // and the app reads that one spelling in Host too
    let hosts: Vec<_> = seen
        .iter()
        .map(|s| s.header("host").unwrap_or_default())
        .collect();
    assert_eq!(
        hosts,
        ["app.example.com", "app.example.com", "www.example.com"]
    );
    // the scheme the app is told is the public origin's
    assert!(seen
        .iter()
        .all(|s| s.header("x-forwarded-proto").as_deref() == Some("https")));
    let m = h.metrics().await;
    assert_eq!(counter(&m, &hygiene("host_misdirected")), 4, "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn an_absolute_form_target_is_the_host() {
    let h = start(upstream_ok().await, PUBLIC, CATCH_ALL).await;
    // the authority in the request line wins over everything (RFC 9112 §3.2.2)
    let resp = within(
        "absolute-form to another host",
        raw(h.addr(), b"GET http://evil.test/x HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&resp), 421, "{resp}");
    assert_eq!(h.upstream.count(), 0);
    let resp = within(
        "absolute-form to the public origin",
        raw(
            h.addr(),
            b"GET http://APP.example.com/x?q=1 HTTP/1.1\r\nHost: APP.example.com\r\n\r\n",
        ),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    // the app gets origin-form and the vetted host
    let seen = h.upstream.last();
    assert_eq!(seen.uri, "/x?q=1");
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example.com")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn host_rules_read_the_same_host_the_app_reads() {
    // no public origin: hosts are not vetted, but a `hosts` rule must see the host the
    // app will serve, however the client spells it
    let h = start(
        upstream_ok().await,
        "",
        &format!(
            "{SESSION}\n[[route]]\nname = \"admin\"\nmatch = \"/:path*\"\nhosts = [\"admin.test\"]\nrequire = {{ session = true }}\n\n{CATCH_ALL}"
        ),
    )
    .await;
    for request in [
        // absolute-form without Host: pingora gives the app `Host: admin.test`
        "GET http://admin.test/secret HTTP/1.1\r\n\r\n",
        // trailing dot and upper case: the same host to DNS and to the app
        "GET /secret HTTP/1.1\r\nHost: ADMIN.test.\r\n\r\n",
        "GET /secret HTTP/1.1\r\nHost: admin.test.:8080\r\n\r\n",
    ] {
        let resp = within(request, raw(h.addr(), request.as_bytes())).await;
        assert_eq!(status(&resp), 401, "{request:?}: {resp}");
    }
    assert_eq!(
        h.upstream.count(),
        0,
        "the admin app was reached anonymously"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn http2_authority_is_the_host() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let h = start(upstream_ok().await, PUBLIC, CATCH_ALL).await;
    let tcp = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (uri, want) in [
        ("http://evil.test/x", 421),
        ("http://app.example.com/x", 200),
    ] {
        let req = hyper::Request::get(uri)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = within(uri, send.send_request(req)).await.unwrap();
        assert_eq!(resp.status(), want, "{uri}");
    }
    assert_eq!(h.upstream.count(), 1);
    assert_eq!(
        h.upstream.last().header("x-forwarded-host").as_deref(),
        Some("app.example.com")
    );
    // a path rotagate rewrites keeps the request's authority on the way upstream
    let req = hyper::Request::get("http://app.example.com/a/../x?q=1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = within("normalised h2 path", send.send_request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.upstream.last();
    assert_eq!(seen.uri, "/x?q=1");
    assert_eq!(seen.header("host").as_deref(), Some("app.example.com"));
    h.shutdown().await;
}

#[tokio::test]
async fn forwarded_host_from_a_trusted_proxy_is_vetted_too() {
    let h = start(
        upstream_ok().await,
        &format!("{PUBLIC}\ntrusted_proxies = [\"127.0.0.1/32\"]"),
        CATCH_ALL,
    )
    .await;
    for (xfh, want) in [
        ("evil.test", "app.example.com"),
        ("www.example.com", "www.example.com"),
    ] {
        let resp = h
            .client
            .get(h.url("/x"))
            .header("host", "app.example.com")
            .header("x-forwarded-host", xfh)
            .header("x-forwarded-proto", "http")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let seen = h.upstream.last();
        assert_eq!(seen.header("x-forwarded-host").as_deref(), Some(want));
        // the load balancer's scheme is honoured, as before
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn http11_without_host_gets_400_at_once() {
    let h = start(upstream_ok().await, PUBLIC, CATCH_ALL).await;
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    // (Shorter than the HTTP/2 preface, this once left pingora waiting for more bytes.)
    let resp = within(
        "HTTP/1.1 without Host",
        raw(h.addr(), b"GET / HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&resp), 400, "{resp}");
    // the same on a kept-alive connection's second request
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await
        .unwrap();
    let first = within("first request", read_one_response(&mut s)).await;
    assert_eq!(status(&first), 200, "{first}");
    s.write_all(b"GET /b HTTP/1.1\r\nUser-Agent: no-host-at-all/1.0\r\n\r\n")
        .await
        .unwrap();
    let second = within("second request", read_one_response(&mut s)).await;
    assert_eq!(status(&second), 400, "{second}");
    assert_eq!(h.upstream.count(), 1);
    let m = h.metrics().await;
    assert_eq!(counter(&m, &hygiene("host_missing")), 2, "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn http10_without_host_is_served_as_the_public_origin() {
    let h = start(upstream_ok().await, PUBLIC, CATCH_ALL).await;
    let resp = within(
        "HTTP/1.0 without Host",
        raw(h.addr(), b"GET /x HTTP/1.0\r\n\r\n"),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let seen = h.upstream.last();
    assert_eq!(seen.header("host").as_deref(), Some("app.example.com"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example.com")
    );
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 15. spoofable headers, whatever their spelling

/// Headers no client may hand the app, in spellings servers fold into one another.
const SPOOFED: &str = "X_Rotagate_Subject: admin\r\n\
x-rotagate_subject: admin\r\n\
X-Rotagate-Claims: {}\r\n\
X-MIDDLEWARE_SUBREQUEST: middleware\r\n\
x-middleware-subrequest: middleware:middleware\r\n\
x-middleware-rewrite: /premium\r\n\
x_middleware_override_headers: x\r\n\
X-Original-URL: /premium\r\n\
X_Original_URL: /premium\r\n\
X-Rewrite-URL: /premium\r\n\
X-Forwarded-Prefix: /premium\r\n\
x-invoke-path: /premium\r\n\
x_invoke_query: {}\r\n\
x-now-route-matches: 1\r\n\
X_Forwarded_For: 6.6.6.6\r\n\
X_Forwarded_Host: evil.test\r\n\
X_Forwarded_Proto: https\r\n";

/// Headers only a trusted proxy may set.
const PROXY_ONLY: &str = "Forwarded: for=6.6.6.6;host=evil.test\r\n\
X-Real-IP: 6.6.6.6\r\n\
X-Forwarded-Port: 443\r\n";

/// What the app must never see from a client, in any spelling.
const NEVER: [&str; 12] = [
    "x-rotagate-subject",
    "x-rotagate-claims",
    "x-middleware-subrequest",
    "x-middleware-rewrite",
    "x-middleware-override-headers",
    "x-middleware-prefetch",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-invoke-path",
    "x-invoke-query",
    "x-now-route-matches",
];

#[tokio::test]
async fn spoofable_headers_are_stripped_in_every_spelling() {
    let h = start(upstream_ok().await, "", CATCH_ALL).await;
    let request =
        format!("GET /x HTTP/1.1\r\nHost: app.test\r\n{SPOOFED}{PROXY_ONLY}x-keep: 1\r\n\r\n");
    let resp = within("spoofed headers", raw(h.addr(), request.as_bytes())).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let seen = h.upstream.last();
    for (name, value) in &seen.headers {
        let f = folded(name.as_str());
        let managed = ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"];
        if managed.contains(&f.as_str()) {
            // set by rotagate, in its own spelling, with its own values
            assert_eq!(name.as_str(), f, "{name} reached the app");
            assert!(
                !value.to_str().unwrap().contains("6.6.6.6")
                    && !value.to_str().unwrap().contains("evil"),
                "{name}: {value:?}"
            );
            continue;
        }
        assert!(!NEVER.contains(&f.as_str()), "{name} reached the app");
        assert!(
            !["forwarded", "x-real-ip", "x-forwarded-port"].contains(&f.as_str()),
            "{name} from an untrusted client reached the app"
        );
    }
    assert_eq!(seen.header("x-keep").as_deref(), Some("1"));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    h.shutdown().await;
}

#[tokio::test]
async fn proxy_headers_from_a_trusted_peer_are_kept() {
    let h = start(
        upstream_ok().await,
        "trusted_proxies = [\"127.0.0.1/32\"]",
        CATCH_ALL,
    )
    .await;
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: app.test\r\n{SPOOFED}{PROXY_ONLY}X_Real_IP: 7.7.7.7\r\n\r\n"
    );
    let resp = within("trusted peer", raw(h.addr(), request.as_bytes())).await;
    assert_eq!(status(&resp), 200, "{resp}");
    let seen = h.upstream.last();
    assert_eq!(
        seen.header("forwarded").as_deref(),
        Some("for=6.6.6.6;host=evil.test")
    );
    assert_eq!(seen.header_all("x-real-ip"), vec!["6.6.6.6".to_string()]);
    assert_eq!(seen.header("x-forwarded-port").as_deref(), Some("443"));
    for (name, _) in &seen.headers {
        // a `_` spelling is never the trusted proxy's own; path-changing and internal
        // headers go whoever sends them
        assert!(!name.as_str().contains('_'), "{name} reached the app");
        assert!(!NEVER.contains(&folded(name.as_str()).as_str()), "{name}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn x_middleware_prefetch_still_marks_a_prefetch() {
    let h = start(upstream_ok().await, "", &format!("{SESSION}\n{CATCH_ALL}")).await;
    // a token due for rotation: a navigation rotates it, a prefetch must not
    let token = hs256(json!({"sub": "alice", "iat": T0 - 600, "exp": T0 + 3600}));
    let get = |prefetch: bool| {
        let mut rb = h
            .client
            .get(h.url("/x"))
            .header("cookie", format!("session={token}"));
        if prefetch {
            rb = rb.header("x-middleware-prefetch", "1");
        }
        rb.send()
    };
    let resp = get(true).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "a prefetch rotated the session"
    );
    assert_eq!(h.upstream.last().header("x-middleware-prefetch"), None);
    let resp = get(false).await.unwrap();
    assert!(resp.headers().get("set-cookie").is_some(), "no rotation");
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 16. paths that other servers read differently

const PREMIUM: &str = "[[route]]\nname = \"premium\"\nmatch = \"/premium/:path*\"\nrequire = { session = true }\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n";

#[tokio::test]
async fn ambiguous_paths_are_refused_by_reason() {
    let h = start(upstream_ok().await, "", &format!("{SESSION}\n{PREMIUM}")).await;
    let mut seen_reasons = std::collections::HashMap::new();
    for (path, want, reason) in [
        // Tomcat/Jetty read `..;` as `..` and drop `;jsessionid=…`
        ("/x/..;/premium/r", 400, "path_semicolon"),
        ("/premium;jsessionid=1/r", 400, "path_semicolon"),
        // many servers merge slashes
        ("//premium/r", 400, "path_empty_segment"),
        ("/premium//r", 400, "path_empty_segment"),
        // Windows/IIS drop trailing dots and spaces
        ("/premium./r", 400, "path_trailing_dot"),
        ("/premium%2E/r", 400, "path_trailing_dot"),
        ("/premium%20/r", 400, "path_trailing_whitespace"),
        // encoded control characters anywhere
        ("/premium/r%09", 400, "path_control"),
        ("/a%0Db", 400, "path_control"),
        ("/a%7f", 400, "path_control"),
        // still fine
        ("/My%20File.pdf", 200, ""),
        ("/a.b/c..d/", 200, ""),
        ("/docs/", 200, ""),
        ("/a/./b/../c", 200, ""),
    ] {
        let resp = within(
            path,
            raw(
                h.addr(),
                format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            ),
        )
        .await;
        assert_eq!(status(&resp), want, "{path}: {resp}");
        if want == 400 {
            assert!(resp.contains("bad request"), "{path}: {resp}");
            // counted when it was answered, under its own reason
            let m = h.metrics().await;
            *seen_reasons.entry(reason).or_insert(0) += 1;
            assert_eq!(
                counter(&m, &hygiene(reason)),
                seen_reasons[reason],
                "{path}: {m}"
            );
        }
    }
    assert_eq!(h.upstream.count(), 4);
    let m = h.metrics().await;
    for (reason, n) in [
        ("path_semicolon", 2),
        ("path_empty_segment", 2),
        ("path_trailing_dot", 2),
        ("path_trailing_whitespace", 1),
        ("path_control", 3),
    ] {
        assert_eq!(counter(&m, &hygiene(reason)), n, "{reason}: {m}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn lenient_paths_keep_semicolons_and_empty_segments() {
    let h = start(
        upstream_ok().await,
        "path_strictness = \"lenient\"",
        &format!("{SESSION}\n{PREMIUM}"),
    )
    .await;
    for (path, want) in [
        // forwarded as sent, for the Java app that needs its `;jsessionid`
        ("/shop;jsessionid=1/r", 200),
        ("/a//b", 200),
        ("/file.", 200),
        // but rules see the path as such servers read it: no way around `require`
        ("/premium;v=1/r", 401),
        ("//premium/r", 401),
        ("/x/..;/premium/r", 401),
        ("/premium./r", 401),
        // never allowed
        ("/premium%20/r", 400),
        ("/a%00", 400),
        ("/a%01", 400),
    ] {
        let resp = within(
            path,
            raw(
                h.addr(),
                format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            ),
        )
        .await;
        assert_eq!(status(&resp), want, "{path}: {resp}");
    }
    let uris: Vec<String> = h.upstream.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/shop;jsessionid=1/r", "/a//b", "/file."]);
    h.shutdown().await;
}

#[tokio::test]
async fn case_insensitive_paths_for_case_insensitive_apps() {
    // an IIS or Express app serves /PREMIUM/x as /premium/x
    let h = start(
        upstream_ok().await,
        "case_insensitive_paths = true",
        &format!("{SESSION}\n{PREMIUM}"),
    )
    .await;
    for path in ["/premium/x", "/PREMIUM/x", "/Premium/X"] {
        let resp = h.get(path).await;
        assert_eq!(resp.status(), 401, "{path}");
    }
    assert_eq!(h.upstream.count(), 0);
    h.shutdown().await;
    // default: Next.js is case-sensitive, and so is matching
    let h = start(upstream_ok().await, "", &format!("{SESSION}\n{PREMIUM}")).await;
    assert_eq!(h.get("/PREMIUM/x").await.status(), 200);
    assert_eq!(h.get("/premium/x").await.status(), 401);
    h.shutdown().await;
}

#[test]
fn check_explains_case_insensitive_paths() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rotagate.toml");
    std::fs::write(
        &p,
        "[listen]\ncase_insensitive_paths = true\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("case-insensitive"), "{stdout}");
}

// ---------------------------------------------------------------------------------
// 17. the regex engine's backtracking limit

#[tokio::test]
async fn a_regex_limit_on_a_require_rule_fails_closed() {
    // `(?:(?!z)a|a)+b` needs fancy-regex (lookaround) and backtracks exponentially on
    // a run of `a` without `b`: twenty-odd bytes of path exceed its limit
    let h = start(
        upstream_ok().await,
        "",
        &format!(
            "{SESSION}\n[[route]]\nname = \"lookaround-open\"\nmatch = \"/open/((?:(?!z)a|a)+b)\"\n\n\
             [[route]]\nname = \"lookaround-premium\"\nmatch = \"/((?:(?!z)a|a)+b)\"\nrequire = {{ session = true }}\n\n\
             {CATCH_ALL}"
        ),
    )
    .await;
    let run = "a".repeat(40);
    // the require rule: a limit counts as a match
    assert_eq!(h.get(&format!("/{run}")).await.status(), 401);
    // a rule without require: a limit counts as no match (the catch-all serves it)
    assert_eq!(h.get(&format!("/open/{run}")).await.status(), 200);
    // ordinary matching is unchanged
    assert_eq!(h.get("/aab").await.status(), 401);
    assert_eq!(h.get("/other").await.status(), 200);
    let m = h.metrics().await;
    assert!(counter(&m, &hygiene("regex_limit")) >= 2, "{m}");
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// the new `[listen]` keys

fn parse(listen: &str) -> Result<rotagate::config::Config, String> {
    rotagate::config::parse(
        &format!("[listen]\n{listen}\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n"),
        std::path::Path::new("test.toml"),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn listen_keys_are_validated_with_their_location() {
    use rotagate::config::{AllowedHost, PathStrictness};
    let cfg = parse(
        "public_origin = \"https://app.example.com\"\nallowed_hosts = [\"WWW.example.com.\", \"*.internal:8080\", \"api.example.com:443\"]\npath_strictness = \"lenient\"\ncase_insensitive_paths = true",
    )
    .unwrap();
    assert_eq!(
        cfg.listen.allowed_hosts,
        [
            AllowedHost {
                name: "www.example.com".into(),
                port: None
            },
            AllowedHost {
                name: "*.internal".into(),
                port: Some(8080)
            },
            AllowedHost {
                name: "api.example.com".into(),
                port: None
            },
        ]
    );
    assert_eq!(cfg.listen.path_strictness, PathStrictness::Lenient);
    assert!(cfg.listen.case_insensitive_paths);
    // defaults
    let cfg = parse("").unwrap();
    assert!(cfg.listen.allowed_hosts.is_empty());
    assert_eq!(cfg.listen.path_strictness, PathStrictness::Strict);
    assert!(!cfg.listen.case_insensitive_paths);

    let e = parse("allowed_hosts = [\"www.example.com\"]").unwrap_err();
    assert!(
        e.contains("test.toml:2:18") && e.contains("needs `listen.public_origin`"),
        "{e}"
    );
    let e = parse("public_origin = \"https://a.test\"\nallowed_hosts = [\"a b\"]").unwrap_err();
    assert!(
        e.contains("test.toml:3:18") && e.contains("expected a host like"),
        "{e}"
    );
    let e = parse("path_strictness = \"loose\"").unwrap_err();
    assert!(
        e.contains("test.toml:2:19") && e.contains("\"strict\" or \"lenient\""),
        "{e}"
    );
}

// ---------------------------------------------------------------- red-team follow-ups

/// A request target that is neither origin-form nor an http(s) absolute-form target
/// (`x:/premium/x`, `premium/x`) is parsed by pingora as `/` while its raw form goes
/// upstream, where `urlsplit`-style servers read `/premium/x`: refused with 400.
#[tokio::test]
async fn targets_that_are_not_paths_are_refused() {
    let h = start(
        upstream_ok().await,
        "",
        &format!("{SESSION}\n[[route]]\nname = \"premium\"\nmatch = \"/premium/:path*\"\nrequire = {{ session = true }}\n\n{CATCH_ALL}"),
    )
    .await;
    for target in [
        "x:/premium/x",
        "premium/x",
        "mailto:/premium/x",
        "javascript:/premium/x",
    ] {
        let resp = within(
            target,
            raw(
                h.addr(),
                format!("GET {target} HTTP/1.1\r\nHost: app.example.com\r\n\r\n").as_bytes(),
            ),
        )
        .await;
        assert_eq!(status(&resp), 400, "{target}: {resp}");
        assert!(
            resp.contains("the request target must be a path"),
            "{target}: {resp}"
        );
    }
    assert_eq!(h.upstream.count(), 0);
    let m = h.metrics().await;
    assert_eq!(counter(&m, &hygiene("path_not_origin_form")), 4, "{m}");
    h.shutdown().await;
}

/// Behind a trusted load balancer the app reads `X-Forwarded-Host`: a `hosts` rule must
/// judge that same host, not the balancer's `Host`.
#[tokio::test]
async fn a_trusted_forwarded_host_is_the_host_rules_see() {
    let h = start(
        upstream_ok().await,
        "public_origin = \"https://app.example.com\"\nallowed_hosts = [\"admin.example.com\"]\ntrusted_proxies = [\"127.0.0.1/32\"]",
        &format!("{SESSION}\n[[route]]\nname = \"admin\"\nmatch = \"/:path*\"\nhosts = [\"admin.example.com\"]\nrequire = {{ session = true }}\n\n{CATCH_ALL}"),
    )
    .await;
    let resp = h
        .client
        .get(h.url("/x"))
        .header("host", "app.example.com")
        .header("x-forwarded-host", "admin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the admin rule applies");
    assert_eq!(h.upstream.count(), 0);
    // a forwarded host rotagate does not serve is replaced, and rules see the Host
    let resp = h
        .client
        .get(h.url("/x"))
        .header("host", "app.example.com")
        .header("x-forwarded-host", "evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        h.upstream.last().header("x-forwarded-host").as_deref(),
        Some("app.example.com")
    );
    h.shutdown().await;
}

/// Identity values the app would read differently from the claim (non-ASCII, padded)
/// are not sent; method-override and other proxy headers never come from clients.
#[tokio::test]
async fn inexact_identity_values_and_override_headers_never_reach_the_app() {
    let h = start(
        upstream_ok().await,
        "",
        &format!(
            "{SESSION}\n[identity]\nclaim_headers = {{ \"x-user-name\" = \"name\" }}\n\n{CATCH_ALL}"
        ),
    )
    .await;
    let token =
        hs256(json!({"sub": "  alice  ", "name": "caf\u{e9}", "iat": T0, "exp": T0 + 3600}));
    let resp = h
        .client
        .get(h.url("/x"))
        .header("cookie", format!("session={token}"))
        .header("x-http-method-override", "DELETE")
        .header("x-method-override", "DELETE")
        .header("true-client-ip", "1.2.3.4")
        .header("x-client-ip", "1.2.3.4")
        .header("x-original-host", "evil.test")
        .header("x-forwarded-scheme", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = h.upstream.last();
    for name in [
        "x-rotagate-subject",
        "x-user-name",
        "x-http-method-override",
        "x-method-override",
        "true-client-ip",
        "x-client-ip",
        "x-original-host",
        "x-forwarded-scheme",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the app");
    }
    h.shutdown().await;
}
