//! An upstream 401 becomes a clean logout (DESIGN §5, issue 4), end to end.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::AsyncWriteExt;

const CFG: &str = r#"
[session]
rotate_every = "5m"
[session.reissue]
cookie = "session"
format = "jwt"
[[session.reissue.keys]]
alg = "HS256"
secret = "file:secret"

[logout]
login_url = "/login"
clear_cookies = ["authjs.csrf-token", { name = "legacy_sid", domain = ".example.com", path = "/app" }]
loop_max = 3
loop_window = "30s"

[[route]]
name = "static"
match = "/static/:path*"
bypass = true

[[route]]
name = "passthrough"
match = "/raw/:path*"
on_401 = "pass"

[[route]]
name = "forbidden"
match = "/forbidden/:path*"
on_403 = "logout"

[[route]]
name = "app"
match = "/:path*"
"#;

/// `/…/empty` answers 401 with no body, `/…/chunked` with a chunked body, anything
/// else 401 with a Content-Length body, CORS headers and an app cookie; `/ok` is 200;
/// `/forbidden/…` is 403.
async fn app() -> Upstream {
    upstream(Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if path == "/ok" {
                return text(200, "fine");
            }
            let status = if path.starts_with("/forbidden") {
                403
            } else {
                401
            };
            let b = hyper::Response::builder()
                .status(status)
                .header("www-authenticate", "Bearer")
                .header("etag", "\"abc\"")
                .header("access-control-allow-origin", "https://app.example.com")
                .header("access-control-allow-credentials", "true")
                .header("set-cookie", "app_note=seen; Path=/");
            if path.ends_with("/empty") {
                b.body(full("")).unwrap()
            } else if path.ends_with("/chunked") {
                let chunks =
                    futures_util::stream::iter(["secret ", "upstream ", "body"].map(|c| {
                        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(c)))
                    }));
                b.header("content-type", "text/html")
                    .body(BodyExt::boxed(StreamBody::new(chunks)))
                    .unwrap()
            } else {
                b.header("content-type", "text/html")
                    .body(full("<h1>secret upstream 401 page</h1>"))
                    .unwrap()
            }
        })
    }))
    .await
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secret"),
        "logout-test-secret-logout-test-secret-1234",
    )
    .unwrap();
    Harness::start_in(dir, app().await, CFG).await
}

/// A session rotagate verifies (HS256 with the test secret, `iat` = T0, `exp` in 2036):
/// an upstream 401 becomes a logout only for a token rotagate did not refuse itself
/// (issue 9: a misconfigured key must never log everyone out).
const SESSION: &str = "session=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsImlhdCI6MTc5MzQ5MTIwMCwiZXhwIjoyMTA4ODUxMjAwfQ.dBpx-VFiPMNMzTV7n8XUHhQjXigJaxqGXI8uocy8028";

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn deletions_of(sc: &[String]) -> Vec<String> {
    sc.iter()
        .filter(|c| c.contains("Max-Age=0"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn navigation_gets_303_to_login_with_every_session_cookie_deleted() {
    let h = harness().await;
    let resp = h
        .client
        .get(h.url("/account/settings?tab=2"))
        .header("sec-fetch-mode", "navigate")
        .header(
            "cookie",
            "session.0=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsImlhdCI6MTc5MzQ5M; session.1=TIwMCwiZXhwIjoyMTA4ODUxMjAwfQ.dBpx-VFiPMNMzTV7n8XUHhQjXigJaxqGXI8uocy8028; authjs.csrf-token=x; legacy_sid=1; other=keep",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/login?callbackUrl=/account/settings%3Ftab%3D2"
    );
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-length"], "0");
    for gone in ["www-authenticate", "etag", "content-type"] {
        assert!(resp.headers().get(gone).is_none(), "{gone} kept");
    }
    let sc = set_cookies(&resp);
    assert!(
        sc.contains(&"app_note=seen; Path=/".to_string()),
        "the app's own cookie is kept: {sc:?}"
    );
    let expected = [
        "session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "session.0=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "session.1=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Secure-session=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Host-session=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "authjs.csrf-token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Secure-authjs.csrf-token=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Host-authjs.csrf-token=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "legacy_sid=; HttpOnly; SameSite=Lax; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "legacy_sid=; HttpOnly; SameSite=Lax; Path=/app; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Secure-legacy_sid=; HttpOnly; SameSite=Lax; Secure; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Secure-legacy_sid=; HttpOnly; SameSite=Lax; Secure; Path=/app; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        "__Host-legacy_sid=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
    ];
    assert_eq!(deletions_of(&sc), expected, "{sc:#?}");
    assert!(sc.iter().any(|c| c.starts_with("rg_login_loop=1.")));
    assert_eq!(
        resp.text().await.unwrap(),
        "",
        "the upstream body never reaches the client"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn fetch_gets_json_401_with_cors_kept() {
    let h = harness().await;
    for path in ["/api/data", "/api/empty", "/api/chunked"] {
        let resp = h
            .client
            .get(h.url(path))
            .header("accept", "application/json")
            .header("cookie", SESSION)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(
            resp.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert!(
            !set_cookies(&resp)
                .iter()
                .any(|c| c.starts_with("rg_login_loop")),
            "fetches do not count as login redirects"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "session_expired", "login_url": format!("/login?callbackUrl={path}")}),
            "{path}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn server_action_rsc_pages_data_and_prefetch() {
    let h = harness().await;
    let action = h
        .client
        .post(h.url("/dashboard"))
        .header("next-action", "7f3a")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", SESSION)
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(action.status(), 200);
    assert_eq!(
        action.headers()["x-action-redirect"],
        "/login?callbackUrl=/dashboard;replace"
    );
    assert!(action.headers().get("location").is_none());
    assert_eq!(
        action.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(action.text().await.unwrap(), "");

    let rsc = h
        .client
        .get(h.url("/dashboard?_rsc=1x2y"))
        .header("rsc", "1")
        .header("cookie", SESSION)
        .send()
        .await
        .unwrap();
    assert_eq!(rsc.status(), 303);
    assert_eq!(rsc.headers()["location"], "/login?callbackUrl=/dashboard");

    let data = h
        .client
        .get(h.url("/_next/data/build7/dashboard.json"))
        .header("x-nextjs-data", "1")
        .header("cookie", SESSION)
        .send()
        .await
        .unwrap();
    assert_eq!(data.status(), 307);
    assert_eq!(
        data.headers()["x-nextjs-redirect"],
        "/login?callbackUrl=/dashboard"
    );
    assert!(data.headers().get("location").is_none());

    let prefetch = h
        .client
        .get(h.url("/dashboard"))
        .header("next-router-prefetch", "1")
        .header("cookie", SESSION)
        .send()
        .await
        .unwrap();
    assert_eq!(prefetch.status(), 401);
    assert!(
        deletions_of(&set_cookies(&prefetch)).is_empty(),
        "a prefetch clears nothing"
    );
    assert_eq!(
        prefetch.text().await.unwrap(),
        "<h1>secret upstream 401 page</h1>"
    );

    let m = h.metrics().await;
    for kind in ["server_action", "rsc", "pages_data"] {
        assert!(
            m.contains(&format!(
                "rotagate_logouts_total{{kind=\"{kind}\",reason=\"upstream_401\"}} 1"
            )),
            "{kind}: {m}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn the_401_is_the_apps_business_in_these_cases() {
    let h = harness().await;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/dashboard",
            vec![("cookie", SESSION), ("authorization", "Bearer abc")],
        ),
        ("/dashboard", vec![("cookie", "unrelated=1")]),
        ("/dashboard", vec![]),
        ("/login", vec![("cookie", SESSION)]),
        ("/raw/thing", vec![("cookie", SESSION)]),
        ("/static/x", vec![("cookie", SESSION)]),
    ];
    for (path, headers) in cases {
        let mut rb = h
            .client
            .get(h.url(path))
            .header("sec-fetch-mode", "navigate");
        for (k, v) in &headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} {headers:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            resp.text().await.unwrap(),
            "<h1>secret upstream 401 page</h1>"
        );
    }
    // on_403 = "logout" rewrites a 403 too; elsewhere a 403 passes
    let resp = h
        .client
        .get(h.url("/forbidden/x"))
        .header("sec-fetch-mode", "navigate")
        .header("cookie", SESSION)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    h.shutdown().await;
}

#[tokio::test]
async fn return_path_never_leaves_the_origin() {
    let h = harness().await;
    // every return path is a validated same-origin path (the full list is unit-tested
    // in logout.rs); through the proxy, an encoded CRLF cannot inject a header and
    // encoded separators never get that far
    for bad in [
        "/%5Cevil.com",
        "/%2F%2Fevil.com",
        "/x%0d%0aSet-Cookie:%20a=1",
        "/%0d%0aLocation:%20evil.example",
    ] {
        let resp = raw(h.addr(), format!("GET {bad} HTTP/1.1\r\nHost: t\r\nSec-Fetch-Mode: navigate\r\nCookie: {SESSION}\r\n\r\n").as_bytes()).await;
        let location = resp
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("location:"));
        assert!(
            resp.starts_with("HTTP/1.1 400") || location == Some("location: /login?callbackUrl=/"),
            "{bad}: {resp}"
        );
        assert!(
            !resp.contains("\r\nSet-Cookie: a=1"),
            "{bad}: header injection"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn loop_breaker_stops_a_login_cycle() {
    let h = harness().await;
    let mut loop_cookie = String::new();
    for round in 1..=4 {
        let cookie = if loop_cookie.is_empty() {
            SESSION.to_string()
        } else {
            format!("{SESSION}; {loop_cookie}")
        };
        let resp = h
            .client
            .get(h.url("/dashboard"))
            .header("sec-fetch-mode", "navigate")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        let sc = set_cookies(&resp);
        loop_cookie = sc
            .iter()
            .find(|c| c.starts_with("rg_login_loop="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        if round <= 3 {
            assert_eq!(resp.status(), 303, "round {round}");
        } else {
            assert_eq!(resp.status(), 409, "round {round}");
            assert!(!deletions_of(&sc).is_empty(), "cookies are still cleared");
            let page = resp.text().await.unwrap();
            assert!(page.contains("Sign-in loop stopped"), "{page}");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn connections_stay_healthy_after_rewrites() {
    let h = harness().await;
    // HTTP/1.1: several rewrites and a normal response on one connection
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let reqs = [
        (
            "GET /p/cl HTTP/1.1",
            "sec-fetch-mode: navigate",
            "HTTP/1.1 303",
            "",
        ),
        (
            "GET /p/chunked HTTP/1.1",
            "sec-fetch-mode: navigate",
            "HTTP/1.1 303",
            "",
        ),
        (
            "GET /api/empty HTTP/1.1",
            "accept: application/json",
            "HTTP/1.1 401",
            "session_expired",
        ),
        (
            "GET /api/chunked HTTP/1.1",
            "accept: application/json",
            "HTTP/1.1 401",
            "session_expired",
        ),
        (
            "HEAD /p/cl HTTP/1.1",
            "sec-fetch-mode: navigate",
            "HTTP/1.1 303",
            "",
        ),
        ("GET /ok HTTP/1.1", "accept: */*", "HTTP/1.1 200", "fine"),
    ];
    for (line, header, want, body) in reqs {
        s.write_all(
            format!("{line}\r\nHost: t\r\n{header}\r\nCookie: {SESSION}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let resp = within(line, read_one_response(&mut s)).await;
        assert!(resp.starts_with(want), "{line}: {resp}");
        let (_, got_body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(got_body.contains(body), "{line}: {resp}");
        if line.starts_with("HEAD") || want.ends_with("303") {
            assert_eq!(got_body, "", "{line}");
        }
        assert!(
            !resp.to_ascii_lowercase().contains("transfer-encoding"),
            "{line}: {resp}"
        );
        assert!(!resp.contains("secret upstream"), "{line}: {resp}");
    }
    // h2c: the same on one connection
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in ["/api/empty", "/api/data", "/api/chunked", "/ok"] {
        let resp = c
            .get(h.url(path))
            .header("accept", "application/json")
            .header("cookie", SESSION)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        let status = resp.status();
        let body = resp.text().await.unwrap();
        if path == "/ok" {
            assert_eq!((status.as_u16(), body.as_str()), (200, "fine"));
        } else {
            assert_eq!(status, 401, "{path}");
            assert!(body.contains("session_expired"), "{path}: {body}");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn logout_endpoint_clears_cookies_behind_a_csrf_check() {
    let h = harness().await;
    let resp = h
        .client
        .post(h.url("/.rotagate/logout"))
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .header("cookie", "session=abc; authjs.csrf-token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let sc = set_cookies(&resp);
    assert!(sc.iter().any(|c| c.starts_with("session=; ")), "{sc:?}");
    assert!(
        sc.iter().any(|c| c.starts_with("authjs.csrf-token=; ")),
        "{sc:?}"
    );
    assert_eq!(
        h.upstream.count(),
        0,
        "the endpoint is answered by rotagate"
    );

    let json = h
        .client
        .post(h.url("/.rotagate/logout"))
        .header("origin", format!("http://{}", h.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 200);
    assert_eq!(
        json.json::<serde_json::Value>().await.unwrap()["logged_out"],
        true
    );

    let cross = h
        .client
        .post(h.url("/.rotagate/logout"))
        .header("sec-fetch-site", "cross-site")
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert!(set_cookies(&cross).is_empty());
    let evil = h
        .client
        .post(h.url("/.rotagate/logout"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);

    let get = h
        .client
        .get(h.url("/.rotagate/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_logouts_total{kind=\"navigation\",reason=\"endpoint\"} 1"),
        "{m}"
    );
    h.shutdown().await;
}
