//! Red-team findings F4, F7 (session lifetimes) and F10 (shared caches), attacked end to
//! end: a real upstream, the real proxy and a real client on loopback. Tokens are minted
//! and read with an independent HS256 implementation (ring's HMAC directly), never with
//! rotagate's own token code.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "lifetimes-secret-lifetimes-secret-0123";
const ABS: u64 = 12 * 3600;

fn hs256(claims: Value) -> String {
    hs256_token(
        SECRET,
        &json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
        &claims,
    )
}

/// Verifies with the test's own HMAC and returns the claims.
fn claims_of(token: &str) -> Value {
    hs256_claims(SECRET, token)
}

fn value_of(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map_or("", |(_, v)| v)
}

fn invalid(metrics: &str, reason: &str) -> u64 {
    let key = format!("rotagate_session_invalid_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// An upstream whose answer depends on the path (see the match arms).
async fn app() -> Upstream {
    upstream(Arc::new(|req| {
        Box::pin(async move {
            let b = hyper::Response::builder();
            let b = match req.uri().path() {
                "/cc/non-ascii" => b.status(302).header("location", "/x").header(
                    "cache-control",
                    http::HeaderValue::from_bytes("public, max-age=600, x=\"é\"".as_bytes())
                        .unwrap(),
                ),
                "/cc/open-quote" => b
                    .status(302)
                    .header("location", "/x")
                    .header("cache-control", "x=\"a, public, max-age=600"),
                "/cc/x-accel" => b
                    .status(302)
                    .header("location", "/x")
                    .header("x-accel-expires", "600"),
                "/cc/must-understand" => b.header("cache-control", "no-store, must-understand"),
                "/cc/not-modified" => b.status(304).header("etag", "\"v1\""),
                _ => b,
            };
            b.body(full("")).unwrap()
        })
    }))
    .await
}

async fn harness(session_extra: &str, reissue_extra: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let extra = format!(
        "[session]\nrotate_every = \"5m\"\nabsolute_timeout = \"12h\"\n{session_extra}\n\
         [session.reissue]\ncookie = \"session\"\nformat = \"jwt\"\n{reissue_extra}\n\
         [[session.reissue.keys]]\nkid = \"k1\"\nalg = \"HS256\"\nsecret = \"file:secret\"\n\n\
         [[route]]\nname = \"app\"\nmatch = \"/:path*\"\n"
    );
    Harness::start_in(dir, app().await, &extra).await
}

/// GET `path` with `cookie`; returns the response and the Cookie header the upstream saw.
async fn get_with(h: &Harness, path: &str, cookie: &str) -> (reqwest::Response, Option<String>) {
    let before = h.upstream.count();
    let resp = within(
        path,
        h.client.get(h.url(path)).header("cookie", cookie).send(),
    )
    .await
    .unwrap();
    let seen = (h.upstream.count() > before)
        .then(|| h.upstream.last().header("cookie"))
        .flatten();
    (resp, seen)
}

/// Follows a browser that keeps coming back every 50 minutes with its newest token,
/// starting at `T0` with `token`; returns the last time the upstream saw a session.
async fn last_session_seen(h: &Harness, mut token: String, until: u64) -> Option<u64> {
    let mut last = None;
    let mut at = T0;
    while at <= until {
        h.clock.set(at);
        let (resp, seen) = get_with(h, "/page", &format!("session={token}")).await;
        if seen.is_some_and(|c| c.starts_with("session=")) {
            last = Some(at);
        }
        if let Some(line) = set_cookies(&resp)
            .iter()
            .find(|l| l.starts_with("session=") && !value_of(l).is_empty())
        {
            token = value_of(line).to_string();
        }
        at += 50 * 60;
    }
    last
}

// ---------------------------------------------------------------- F4

/// F4a: an `auth_time` that is not a readable number must not let re-mints count
/// `absolute_timeout` from each previous `iat`.
#[tokio::test]
async fn an_unreadable_auth_time_never_outlives_absolute_timeout() {
    let h = harness("", "").await;
    for bad in [json!(null), json!("yesterday"), json!(-1)] {
        let token =
            hs256(json!({"sub": "u1", "iat": T0 - 600, "exp": T0 + 3000, "auth_time": bad}));
        let last = last_session_seen(&h, token, T0 + 2 * ABS).await;
        assert!(
            last.is_none_or(|t| t < T0 - 600 + ABS),
            "auth_time {bad}: still a session at {last:?}, past first issue + absolute_timeout"
        );
    }
    h.shutdown().await;
}

/// F4b: with `require_exp = false`, a token with neither `exp` nor any first issue time
/// must not be re-minted as if first seen on every replay.
#[tokio::test]
async fn a_token_without_exp_or_iat_is_refused_even_without_require_exp() {
    let h = harness("", "require_exp = false\n").await;
    let old = hs256(json!({"sub": "u1"}));
    for at in [T0, T0 + ABS, T0 + 10 * ABS] {
        h.clock.set(at);
        let (resp, seen) = get_with(&h, "/page", &format!("session={old}; a=1")).await;
        assert_eq!(seen.as_deref(), Some("a=1"), "replayed at {at}");
        assert!(set_cookies(&resp).is_empty(), "not re-minted at {at}");
    }
    assert_eq!(invalid(&h.metrics().await, "missing_exp"), 3);
    // one with an iat is still a session, bounded from it
    h.clock.set(T0);
    let ok = hs256(json!({"sub": "u1", "iat": T0 - 60}));
    let (_, seen) = get_with(&h, "/page", &format!("session={ok}")).await;
    assert_eq!(seen, Some(format!("session={ok}")));
    h.shutdown().await;
}

// ---------------------------------------------------------------- F7

/// F7a: a token with `exp <= iat` that is still within leeway gets no lifetime at all
/// from its re-mint, let alone a full `absolute_timeout`.
#[tokio::test]
async fn a_token_with_exp_not_after_iat_gets_no_lifetime_on_remint() {
    let h = harness("leeway = \"10m\"\n", "").await;
    for (iat, exp) in [(T0 - 400, T0 - 400), (T0 - 400, T0 - 500)] {
        h.clock.set(T0);
        let token = hs256(json!({"sub": "u1", "iat": iat, "exp": exp}));
        let (resp, _) = get_with(&h, "/page", &format!("session={token}")).await;
        for line in set_cookies(&resp) {
            let c = claims_of(value_of(&line));
            let new_exp = c["exp"].as_u64().unwrap();
            assert!(
                new_exp <= T0,
                "iat {iat} exp {exp}: re-minted to live until {new_exp} ({line})"
            );
        }
    }
    h.shutdown().await;
}

/// F7b: an `iat` in the future (beyond leeway) is refused as not yet valid, and the
/// cookie is not deleted (it is not certainly dead).
#[tokio::test]
async fn a_token_issued_in_the_future_is_not_yet_valid() {
    let h = harness("", "").await;
    let token = hs256(json!({"sub": "u1", "iat": T0 + 3600, "exp": T0 + 7200}));
    let (resp, seen) = get_with(&h, "/page", &format!("session={token}; a=1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(seen.as_deref(), Some("a=1"), "not a session");
    assert!(set_cookies(&resp).is_empty(), "and not deleted");
    assert_eq!(invalid(&h.metrics().await, "not_yet_valid"), 1);
    // a clock a little ahead (within leeway) is fine
    let token = hs256(json!({"sub": "u1", "iat": T0 + 20, "exp": T0 + 3600}));
    let (_, seen) = get_with(&h, "/page", &format!("session={token}")).await;
    assert_eq!(seen, Some(format!("session={token}")));
    h.shutdown().await;
}

// ---------------------------------------------------------------- F10

/// GETs `path` with a token due for rotation and checks the answer carries the re-mint.
async fn rotated(h: &Harness, path: &str) -> reqwest::Response {
    let due = hs256(json!({"sub": "u1", "iat": T0 - 600, "exp": T0 + 3000}));
    let (resp, _) = get_with(h, path, &format!("session={due}")).await;
    assert_eq!(set_cookies(&resp).len(), 1, "{path}: rotated");
    resp
}

fn cache_control(resp: &reqwest::Response) -> Vec<&[u8]> {
    resp.headers()
        .get_all("cache-control")
        .iter()
        .map(|v| v.as_bytes())
        .collect()
}

/// F10a: a `Cache-Control` rotagate cannot read (non-ASCII bytes, an open quoted string)
/// on a response with a rotated cookie: fail closed.
#[tokio::test]
async fn an_unreadable_cache_control_on_a_rotated_response_fails_closed() {
    let h = harness("", "").await;
    for path in ["/cc/non-ascii", "/cc/open-quote"] {
        let resp = rotated(&h, path).await;
        assert_eq!(resp.status(), 302, "{path}");
        assert_eq!(
            cache_control(&resp),
            vec![b"private, no-store".as_slice()],
            "{path}"
        );
    }
    h.shutdown().await;
}

/// F10b: nginx obeys `X-Accel-Expires` over `Cache-Control`.
#[tokio::test]
async fn x_accel_expires_is_removed_from_rotated_responses() {
    let h = harness("", "").await;
    let resp = rotated(&h, "/cc/x-accel").await;
    assert!(resp.headers().get("x-accel-expires").is_none(), "kept");
    h.shutdown().await;
}

/// F10c: a cache that understands the status may ignore `no-store` next to
/// `must-understand` (RFC 9111 §5.2.2.3).
#[tokio::test]
async fn no_store_with_must_understand_is_made_private() {
    let h = harness("", "").await;
    let resp = rotated(&h, "/cc/must-understand").await;
    assert_eq!(
        cache_control(&resp),
        vec![b"private, no-store, must-understand".as_slice()]
    );
    h.shutdown().await;
}

/// F10d: a cache updates its stored response's headers from a 304 (RFC 9111 §4.3.4),
/// the rotated Set-Cookie included.
#[tokio::test]
async fn a_304_with_a_rotated_cookie_is_made_private() {
    let h = harness("", "").await;
    let resp = rotated(&h, "/cc/not-modified").await;
    assert_eq!(resp.status(), 304);
    assert_eq!(cache_control(&resp), vec![b"private".as_slice()]);
    h.shutdown().await;
}
