//! Session rotation through the real proxy (DESIGN §4.1, issue 3). Tokens are minted
//! and read here with an independent HS256 implementation (ring's HMAC directly), not
//! with rotagate's own JWT code; `jwt_interop.rs` does the same against `jose`.

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-test-secret-test-secret-0123";
const OLD_SECRET: &str = "old-secret-old-secret-old-secret-old-0123";

fn hs256_with(secret: &str, header: Value, claims: Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "{input}.{}",
        B64.encode(ring::hmac::sign(&key, input.as_bytes()))
    )
}

fn hs256(claims: Value) -> String {
    hs256_with(SECRET, json!({"alg": "HS256", "typ": "JWT"}), claims)
}

/// Verifies with the test's own HMAC and returns (header, claims).
fn open(token: &str, secret: &str) -> (Value, Value) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, input.as_bytes(), &B64.decode(sig).unwrap())
        .expect("signature verifies");
    let (h, p) = input.split_once('.').unwrap();
    (
        serde_json::from_slice(&B64.decode(h).unwrap()).unwrap(),
        serde_json::from_slice(&B64.decode(p).unwrap()).unwrap(),
    )
}

fn session_config(dir: &std::path::Path, extra_keys: &str) -> String {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    std::fs::write(dir.join("old"), OLD_SECRET).unwrap();
    format!(
        "[session]\nmode = \"reissue\"\nrotate_every = \"5m\"\nabsolute_timeout = \"12h\"\n\n\
         [session.reissue]\ncookie = \"session\"\nformat = \"jwt\"\n\n\
         [[session.reissue.keys]]\nkid = \"new\"\nalg = \"HS256\"\nsecret = \"file:secret\"\n\n{extra_keys}\
         [[route]]\nname = \"static\"\nmatch = \"/static/:path*\"\nbypass = true\n\n\
         [[route]]\nname = \"app\"\nmatch = \"/:path*\"\n"
    )
}

/// An upstream whose answer depends on the path: `/status/NNN`, `/stream`,
/// `/app-cookie`, `/own-session`, `/public`; anything else 200.
async fn app() -> Upstream {
    upstream(Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            if let Some(code) = path.strip_prefix("/status/") {
                let code: u16 = code.parse().unwrap();
                let mut b = hyper::Response::builder().status(code);
                if code == 302 {
                    b = b.header("location", "/elsewhere");
                }
                return b.body(full("status")).unwrap();
            }
            match path.as_str() {
                "/stream" => {
                    let chunks = futures_util::stream::iter(["a", "b", "c"].map(|c| {
                        Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from(c)))
                    }));
                    hyper::Response::builder()
                        .status(200)
                        .body(BodyExt::boxed(StreamBody::new(chunks)))
                        .unwrap()
                }
                "/app-cookie" => hyper::Response::builder()
                    .status(200)
                    .header("set-cookie", "theme=dark; Path=/")
                    .header("set-cookie", "lang=en; Path=/")
                    .body(full("ok"))
                    .unwrap(),
                "/own-session" => hyper::Response::builder()
                    .status(200)
                    .header("set-cookie", "session=app-made; Path=/")
                    .body(full("ok"))
                    .unwrap(),
                "/public" => hyper::Response::builder()
                    .status(200)
                    .header("cache-control", "public, max-age=60, s-maxage=600")
                    .body(full("ok"))
                    .unwrap(),
                _ => text(200, "ok"),
            }
        })
    }))
    .await
}

async fn harness(extra_keys: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let cfg = session_config(dir.path(), extra_keys);
    Harness::start_in(dir, app().await, &cfg).await
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set_cookie: &str) -> (&str, &str) {
    set_cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
}

fn upstream_session(h: &Harness) -> Option<String> {
    h.upstream.last().header("cookie").and_then(|c| {
        c.split("; ")
            .find_map(|kv| kv.strip_prefix("session=").map(str::to_string))
    })
}

#[tokio::test]
async fn rotates_exactly_when_due_and_upstream_sees_the_new_token() {
    let h = harness("").await;
    let token = hs256(json!({"sub": "u1", "name": "Ada", "iat": T0, "exp": T0 + 3600}));
    let cookie = format!("other=1; session={token}");

    // 299 s old: not due
    h.clock.set(T0 + 299);
    let resp = h
        .client
        .get(h.url("/page"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&resp).is_empty());
    assert_eq!(upstream_session(&h).as_deref(), Some(token.as_str()));

    // 300 s old: re-minted, and the upstream already sees the new one
    h.clock.set(T0 + 300);
    let resp = h
        .client
        .get(h.url("/page"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let sc = set_cookies(&resp);
    assert_eq!(sc.len(), 1, "{sc:?}");
    let (name, fresh) = cookie_value(&sc[0]);
    assert_eq!(name, "session");
    assert!(
        sc[0].contains("Path=/") && sc[0].contains("HttpOnly") && sc[0].contains("SameSite=Lax"),
        "{}",
        sc[0]
    );
    assert!(sc[0].contains("Max-Age=3600"), "{}", sc[0]);
    assert_eq!(upstream_session(&h).as_deref(), Some(fresh));
    assert_eq!(
        h.upstream.last().header("cookie").unwrap(),
        format!("other=1; session={fresh}")
    );
    let (header, claims) = open(fresh, SECRET);
    assert_eq!(header["kid"], "new");
    assert_eq!(claims["iat"], T0 + 300);
    assert_eq!(claims["exp"], T0 + 300 + 3600);
    assert_eq!(claims["rg_auth_time"], T0);
    assert_eq!(
        (claims["sub"].as_str(), claims["name"].as_str()),
        (Some("u1"), Some("Ada"))
    );

    let m = h.metrics().await;
    assert!(m.contains("rotagate_session_rotations_total 1"), "{m}");
    h.shutdown().await;
}

#[tokio::test]
async fn set_cookie_arrives_on_every_status_and_streamed_bodies() {
    let h = harness("").await;
    h.clock.set(T0 + 600);
    let token = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}));
    for path in [
        "/status/200",
        "/status/302",
        "/status/404",
        "/status/500",
        "/stream",
    ] {
        let resp = h
            .client
            .get(h.url(path))
            .header("cookie", format!("session={token}"))
            .send()
            .await
            .unwrap();
        let sc = set_cookies(&resp);
        assert_eq!(sc.len(), 1, "{path}: {sc:?}");
        assert!(sc[0].starts_with("session="), "{path}");
        if path == "/stream" {
            assert_eq!(resp.text().await.unwrap(), "abc");
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn the_apps_own_cookies_are_kept_and_its_session_cookie_wins() {
    let h = harness("").await;
    h.clock.set(T0 + 600);
    let token = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}));
    let resp = h
        .client
        .get(h.url("/app-cookie"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    let sc = set_cookies(&resp);
    assert_eq!(sc.len(), 3, "{sc:?}");
    assert!(
        sc.contains(&"theme=dark; Path=/".to_string())
            && sc.contains(&"lang=en; Path=/".to_string())
    );
    assert!(sc.iter().any(|c| c.starts_with("session=")));

    let resp = h
        .client
        .get(h.url("/own-session"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        set_cookies(&resp),
        vec!["session=app-made; Path=/".to_string()]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn key_rotation_logs_nobody_out() {
    let h = harness(
        "[[session.reissue.keys]]\nkid = \"old\"\nalg = \"HS256\"\nsecret = \"file:old\"\n\n",
    )
    .await;
    h.clock.set(T0 + 600);
    let old = hs256_with(
        OLD_SECRET,
        json!({"alg": "HS256", "kid": "old"}),
        json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}),
    );
    let resp = h
        .client
        .get(h.url("/"))
        .header("cookie", format!("session={old}"))
        .send()
        .await
        .unwrap();
    let sc = set_cookies(&resp);
    let (_, fresh) = cookie_value(&sc[0]);
    let (header, claims) = open(fresh, SECRET);
    assert_eq!(header["kid"], "new");
    assert_eq!(claims["sub"], "u1");
    // a token without kid signed by the old key is tried against every HS256 key
    let old_nokid = hs256_with(
        OLD_SECRET,
        json!({"alg": "HS256"}),
        json!({"sub": "u2", "iat": T0 + 590, "exp": T0 + 3600}),
    );
    h.client
        .get(h.url("/"))
        .header("cookie", format!("session={old_nokid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(upstream_session(&h).as_deref(), Some(old_nokid.as_str()));
    h.shutdown().await;
}

#[tokio::test]
async fn refused_tokens_are_never_forwarded_and_only_dead_ones_are_deleted() {
    let h = harness("").await;
    h.clock.set(T0 + 10);
    let good = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}));
    let (hd, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let tampered = format!(
        "{hd}.{}.{sig}",
        B64.encode(json!({"sub": "admin", "iat": T0, "exp": T0 + 3600}).to_string())
    );
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none"}"#),
        B64.encode(json!({"sub": "admin"}).to_string())
    );
    let unknown_kid = hs256_with(
        SECRET,
        json!({"alg": "HS256", "kid": "nope"}),
        json!({"sub": "u1"}),
    );
    for (token, reason) in [
        (tampered, "bad_signature"),
        (none, "bad_signature"),
        (unknown_kid, "unknown_kid"),
        ("garbage".to_string(), "malformed"),
    ] {
        let resp = h
            .client
            .get(h.url("/"))
            .header("cookie", format!("a=1; session={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            h.upstream.last().header("cookie").as_deref(),
            Some("a=1"),
            "{reason}"
        );
        // a misconfigured key must never log users out: no deletion
        assert!(set_cookies(&resp).is_empty(), "{reason}");
        assert!(
            h.metrics().await.contains(&format!(
                "rotagate_session_invalid_total{{reason=\"{reason}\"}}"
            )),
            "{reason}"
        );
    }
    // expired: removed upstream and deleted in the browser
    h.clock.set(T0 + 3600 + 31);
    let resp = h
        .client
        .get(h.url("/"))
        .header("cookie", format!("session={good}"))
        .send()
        .await
        .unwrap();
    assert!(h.upstream.last().header("cookie").is_none());
    let sc = set_cookies(&resp);
    assert_eq!(sc.len(), 1);
    assert!(
        sc[0].starts_with("session=; ")
            && sc[0].contains("Max-Age=0")
            && sc[0].contains("Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
        "{}",
        sc[0]
    );
    assert!(h
        .metrics()
        .await
        .contains("rotagate_session_invalid_total{reason=\"expired\"} 1"));
    // over age: first issue + 12h
    h.clock.set(T0 + 12 * 3600);
    let long = hs256(
        json!({"sub": "u1", "iat": T0 + 12 * 3600 - 10, "exp": T0 + 13 * 3600, "rg_auth_time": T0}),
    );
    let resp = h
        .client
        .get(h.url("/"))
        .header("cookie", format!("session={long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(set_cookies(&resp).len(), 1);
    assert!(h
        .metrics()
        .await
        .contains("rotagate_session_invalid_total{reason=\"over_age\"} 1"));
    h.shutdown().await;
}

#[tokio::test]
async fn hs_rs_confusion_is_refused() {
    // an RSA-only key set: an HS256 token "signed" with the public key PEM must not verify
    let dir = tempfile::tempdir().unwrap();
    let (private, pem) = node_keypair("rsa");
    std::fs::write(dir.path().join("pub.pem"), &pem).unwrap();
    std::fs::write(dir.path().join("priv.pem"), private).unwrap();
    let cfg = "[session]\n[session.reissue]\ncookie = \"session\"\n[[session.reissue.keys]]\nalg = \"RS256\"\nprivate_key = \"file:priv.pem\"\npublic_key = \"file:pub.pem\"\n[[route]]\nmatch = \"/:p*\"\n";
    let h = Harness::start_in(dir, app().await, cfg).await;
    let forged = hs256_with(
        &pem,
        json!({"alg": "HS256"}),
        json!({"sub": "admin", "iat": T0, "exp": T0 + 3600}),
    );
    h.client
        .get(h.url("/"))
        .header("cookie", format!("session={forged}"))
        .send()
        .await
        .unwrap();
    assert!(h.upstream.last().header("cookie").is_none());
    assert!(h
        .metrics()
        .await
        .contains("rotagate_session_invalid_total{reason=\"bad_signature\"} 1"));
    h.shutdown().await;
}

#[tokio::test]
async fn long_tokens_are_chunked_both_ways_and_stale_chunks_deleted() {
    let h = harness("").await;
    h.clock.set(T0 + 600);
    let big = "x".repeat(5000);
    let token = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600, "blob": big}));
    // the browser holds a plain cookie; the re-minted token is longer than 3936 -> chunks
    let resp = h
        .client
        .get(h.url("/"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    let sc = set_cookies(&resp);
    let names: Vec<&str> = sc.iter().map(|c| cookie_value(c).0).collect();
    assert_eq!(names, vec!["session.0", "session.1", "session"], "{sc:?}");
    assert!(
        sc[2].contains("Max-Age=0"),
        "the stale plain cookie is deleted: {}",
        sc[2]
    );
    let joined: String = sc[..2].iter().map(|c| cookie_value(c).1).collect();
    assert_eq!(
        open(&joined, SECRET).1["blob"].as_str().unwrap().len(),
        5000
    );
    let up = h.upstream.last().header("cookie").unwrap();
    assert!(
        up.starts_with("session.0=") && up.contains("; session.1="),
        "{up}"
    );

    // the browser now sends the chunks; reading them back works and nothing is due
    let cookie = sc[..2]
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ");
    let resp = h
        .client
        .get(h.url("/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&resp).is_empty());
    assert_eq!(
        h.upstream.last().header("cookie").as_deref(),
        Some(cookie.as_str())
    );
    h.shutdown().await;
}

#[tokio::test]
async fn never_rotates_prefetch_head_options_or_bypass_routes() {
    let h = harness("").await;
    h.clock.set(T0 + 600);
    let token = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}));
    let c = format!("session={token}");
    let cases: Vec<(reqwest::Method, &str, Option<(&str, &str)>)> = vec![
        (reqwest::Method::GET, "/", Some(("sec-purpose", "prefetch"))),
        (reqwest::Method::GET, "/", Some(("purpose", "prefetch"))),
        (
            reqwest::Method::GET,
            "/",
            Some(("next-router-prefetch", "1")),
        ),
        (reqwest::Method::HEAD, "/", None),
        (reqwest::Method::OPTIONS, "/", None),
        (reqwest::Method::GET, "/static/app.js", None),
    ];
    for (method, path, header) in cases {
        let mut rb = h
            .client
            .request(method.clone(), h.url(path))
            .header("cookie", &c);
        if let Some((k, v)) = header {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.unwrap();
        assert!(set_cookies(&resp).is_empty(), "{method} {path} {header:?}");
        assert_eq!(
            upstream_session(&h).as_deref(),
            Some(token.as_str()),
            "{method} {path} {header:?}"
        );
    }
    assert!(h
        .metrics()
        .await
        .contains("rotagate_session_rotations_total 0"));
    h.shutdown().await;
}

#[tokio::test]
async fn shared_cacheable_responses_with_a_rotated_cookie_become_private() {
    let h = harness("").await;
    h.clock.set(T0 + 600);
    let token = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}));
    let resp = h
        .client
        .get(h.url("/public"))
        .header("cookie", format!("session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(set_cookies(&resp).len(), 1);
    assert_eq!(
        resp.headers().get("cache-control").unwrap(),
        "private, max-age=60"
    );
    // without a cookie to set, the app's caching is left alone
    let resp = h.get("/public").await;
    assert_eq!(
        resp.headers().get("cache-control").unwrap(),
        "public, max-age=60, s-maxage=600"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn h2_cookie_fields_are_merged_and_rotated() {
    let h = harness("").await;
    h.clock.set(T0 + 600);
    let token = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3600}));
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .get(h.url("/"))
        .header("cookie", "a=1")
        .header("cookie", format!("session={token}"))
        .header("cookie", "b=2")
        .send()
        .await
        .unwrap();
    let sc = set_cookies(&resp);
    let (_, fresh) = cookie_value(&sc[0]);
    assert_eq!(
        h.upstream.last().header_all("cookie"),
        vec![format!("a=1; session={fresh}; b=2")]
    );
    h.shutdown().await;
}
