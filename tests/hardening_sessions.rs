//! Issue 9, sessions and logout (points 1–6), attacked end to end: a real upstream, the
//! real proxy and real clients on loopback. Tokens are minted and read here with an
//! independent HS256 implementation (ring's HMAC directly) or with the real
//! `@auth/core` (`tests/interop`), never with rotagate's own token code.
//!
//! Needs `npm ci --prefix tests/interop` for the Auth.js cases (scripts/test.sh runs it).

mod common;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const SECRET: &str = "hardening-secret-hardening-secret-0123";
const OTHER_SECRET: &str = "someone-elses-secret-someone-elses-0123";
const AUTH_SECRET: &str = "hardening-auth-secret-hardening-auth-00";
const ORIGIN: &str = "https://app.example.com";

// ---------------------------------------------------------------- harness helpers

/// Starts the proxy on a config of our own: `listen` goes into `[listen]` (the shared
/// harness header cannot take more `[listen]` keys), `rest` after `[admin]`.
async fn start(dir: tempfile::TempDir, upstream: Upstream, listen: &str, rest: &str) -> Harness {
    let text = config_with_listen(upstream.addr, listen, rest);
    Harness::start_text(dir, upstream, &text).await
}

fn hs256_with(secret: &str, kid: &str, claims: &Value) -> String {
    hs256_token(
        secret,
        &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        claims,
    )
}

fn hs256(claims: Value) -> String {
    hs256_with(SECRET, "k1", &claims)
}

/// Verifies with the test's own HMAC and returns the claims.
fn claims_of(token: &str) -> Value {
    hs256_claims(SECRET, token)
}

fn name_of(set_cookie: &str) -> &str {
    set_cookie.split_once('=').map_or("", |(k, _)| k.trim())
}

fn value_of(set_cookie: &str) -> &str {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map_or("", |(_, v)| v)
}

/// The browser's jar after it applies `lines` (names only; these tests use one Path).
fn apply(jar: &mut Vec<(String, String)>, lines: &[String]) {
    for line in lines {
        let name = name_of(line).to_string();
        jar.retain(|(k, _)| *k != name);
        let deleted = line.contains("Max-Age=0") || value_of(line).is_empty();
        if !deleted {
            jar.push((name, value_of(line).to_string()));
        }
    }
}

/// The value of `rotagate_session_events_total{event="…"}` (0 when absent).
fn event(metrics: &str, name: &str) -> u64 {
    let key = format!("rotagate_session_events_total{{event=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |n| n.trim().parse().unwrap())
}

fn real_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn authjs(request: Value) -> Value {
    node_tool("authjs-tool.mjs", "@auth/core", request)
}

/// A v5 session token made by the real `@auth/core` for cookie `salt`.
fn authjs_token(claims: Value, salt: &str) -> String {
    authjs(json!({"op": "v5-encode", "secret": AUTH_SECRET, "salt": salt, "token": claims, "maxAge": 30 * 86400}))["jwt"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------- the jwt app

const JWT_ROUTES: &str =
    "[[route]]\nname = \"premium\"\nmatch = \"/premium/:path*\"\nrequire = { session = true }\n\n\
     [[route]]\nname = \"app\"\nmatch = \"/:path*\"\n";

fn jwt_session(extra_reissue: &str) -> String {
    format!(
        "[session]\nrotate_every = \"5m\"\nabsolute_timeout = \"12h\"\n\n\
         [session.reissue]\ncookie = \"session\"\nformat = \"jwt\"\n{extra_reissue}\n\
         [[session.reissue.keys]]\nkid = \"k1\"\nalg = \"HS256\"\nsecret = \"file:secret\"\n\n"
    )
}

/// An upstream whose answer depends on the path (see the match arms).
async fn jwt_app() -> Upstream {
    upstream(Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let b = hyper::Response::builder();
            let b = match path.as_str() {
                "/status/401" => {
                    return b
                        .status(401)
                        .header("www-authenticate", "Bearer")
                        .header("content-type", "text/plain")
                        .body(full("upstream 401 body"))
                        .unwrap()
                }
                "/cache/public" => b
                    .header("cache-control", "public, max-age=60, s-maxage=600")
                    .header("cdn-cache-control", "max-age=600")
                    .header("surrogate-control", "max-age=600")
                    .header("cloudflare-cdn-cache-control", "max-age=600"),
                "/cache/no-store" => b
                    .header("cache-control", "no-store")
                    .header("cdn-cache-control", "max-age=600"),
                "/cache/quoted" => b.header(
                    "cache-control",
                    "private=\"set-cookie, x-user\", max-age=60, stale-while-revalidate=30",
                ),
                "/cache/found" => b
                    .status(302)
                    .header("location", "/elsewhere")
                    .header("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                "/cache/see-other" => b.status(303).header("location", "/elsewhere"),
                "/premium/cached" => b
                    .header("cache-control", "max-age=600")
                    .header("cdn-cache-control", "max-age=600"),
                "/app-sets-host-twin" => b.header(
                    "set-cookie",
                    "__Host-session=app-made; Path=/; Secure; HttpOnly",
                ),
                "/app-sets-chunk" => b.header("set-cookie", "session.3=; Path=/; Max-Age=0"),
                _ => b,
            };
            b.body(full("ok")).unwrap()
        })
    }))
    .await
}

async fn jwt_harness_with(listen: &str, extra_reissue: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let rest = format!("{}{JWT_ROUTES}", jwt_session(extra_reissue));
    start(dir, jwt_app().await, listen, &rest).await
}

async fn jwt_harness() -> Harness {
    jwt_harness_with("", "").await
}

/// GET `path` with `cookie`; returns the response and the Cookie header the upstream saw.
async fn get_with(h: &Harness, path: &str, cookie: &str) -> (reqwest::Response, Option<String>) {
    let before = h.upstream.count();
    let resp = h
        .client
        .get(h.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let seen = (h.upstream.count() > before)
        .then(|| h.upstream.last().header("cookie"))
        .flatten();
    (resp, seen)
}

// ---------------------------------------------------------------- 1. the app wins

/// Auth.js' own `signOut` on an https origin: the cookie is `__Secure-authjs.session-token`
/// while the config names `authjs.session-token`. The token is due for rotation; the app's
/// deletion must not be followed by a fresh token from rotagate.
#[tokio::test]
async fn app_signout_wins_over_rotation_on_https() {
    let app = upstream(Arc::new(|req| {
        Box::pin(async move {
            // the app runs @auth/core's real sign-out on the cookies rotagate forwarded
            let cookie = req
                .headers()
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if req.uri().path() != "/api/auth/signout" {
                return text(200, "ok");
            }
            let out = tokio::task::spawn_blocking(move || {
                authjs(json!({"op": "v5-signout", "secret": AUTH_SECRET, "origin": ORIGIN, "cookie": cookie}))
            })
            .await
            .unwrap();
            let mut b = hyper::Response::builder().status(out["status"].as_u64().unwrap() as u16);
            if let Some(l) = out["location"].as_str() {
                b = b.header("location", l);
            }
            for c in out["set_cookies"].as_array().unwrap() {
                b = b.header("set-cookie", c.as_str().unwrap());
            }
            b.body(full("")).unwrap()
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("auth"), AUTH_SECRET).unwrap();
    let h = start(
        dir,
        app,
        &format!("public_origin = \"{ORIGIN}\""),
        "[session]\nrotate_every = \"5m\"\n[session.reissue]\nformat = \"authjs\"\ncookie = \"authjs.session-token\"\nsecrets = [\"file:auth\"]\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n",
    )
    .await;

    for big in [false, true] {
        let name = "__Secure-authjs.session-token";
        let mut claims = json!({"sub": "user-1", "name": "Ada"});
        if big {
            claims["blob"] = Value::String("z".repeat(6000));
        }
        let token = authjs_token(claims, name);
        // the browser holds it as Auth.js stores it: chunked above 3936 characters
        let mut jar: Vec<(String, String)> = if token.len() > 3936 {
            token
                .as_bytes()
                .chunks(3936)
                .enumerate()
                .map(|(i, c)| {
                    (
                        format!("{name}.{i}"),
                        String::from_utf8(c.to_vec()).unwrap(),
                    )
                })
                .collect()
        } else {
            vec![(name.to_string(), token.clone())]
        };
        assert_eq!(big, jar.len() > 1);
        let cookie = jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        // ten minutes after issue: due for rotation
        h.clock.set(real_now() + 600);
        let resp = h
            .client
            .post(h.url("/api/auth/signout"))
            .header("host", "app.example.com")
            .header("origin", ORIGIN)
            .header("sec-fetch-site", "same-origin")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            302,
            "Auth.js answers its sign-out with a redirect"
        );
        let lines = set_cookies(&resp);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(name) && l.contains("Max-Age=0")),
            "Auth.js deleted its cookie: {lines:#?}"
        );
        apply(&mut jar, &lines);
        let left: Vec<&String> = jar
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.contains("authjs.session-token"))
            .collect();
        assert!(
            left.is_empty(),
            "the user is still logged in after signOut (big={big}): {left:?} from {lines:#?}"
        );
    }
    h.shutdown().await;
}

/// An app that deletes only one chunk, or sets a twin name, still wins: rotagate adds no
/// session cookie of its own to that response.
#[tokio::test]
async fn app_wins_for_every_session_name() {
    // Auth.js, chunked, __Secure- on https; the app deletes only chunk 1
    let app = upstream(Arc::new(|_req| {
        Box::pin(async move {
            hyper::Response::builder()
                .header(
                    "set-cookie",
                    "__Secure-authjs.session-token.1=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax",
                )
                .body(full("ok"))
                .unwrap()
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("auth"), AUTH_SECRET).unwrap();
    let h = start(
        dir,
        app,
        &format!("public_origin = \"{ORIGIN}\""),
        "[session]\nrotate_every = \"5m\"\n[session.reissue]\nformat = \"authjs\"\nsecrets = [\"file:auth\"]\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n",
    )
    .await;
    let name = "__Secure-authjs.session-token";
    let token = authjs_token(json!({"sub": "u1", "blob": "y".repeat(5000)}), name);
    let (a, b) = token.split_at(3936);
    h.clock.set(real_now() + 600);
    let resp = h
        .client
        .get(h.url("/page"))
        .header("host", "app.example.com")
        .header("cookie", format!("{name}.0={a}; {name}.1={b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        h.upstream.last().header("cookie").unwrap() != format!("{name}.0={a}; {name}.1={b}"),
        "the token was due and re-minted upstream"
    );
    assert_eq!(
        set_cookies(&resp),
        vec!["__Secure-authjs.session-token.1=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax"],
        "only the app's own line"
    );
    h.shutdown().await;

    // jwt: the app sets the __Host- twin, or a chunk, of the configured name
    let h = jwt_harness().await;
    for path in ["/app-sets-host-twin", "/app-sets-chunk"] {
        let token = hs256(json!({"sub": "u1", "iat": T0 - 600, "exp": T0 + 3000}));
        let (resp, _) = get_with(&h, path, &format!("session={token}")).await;
        let lines = set_cookies(&resp);
        assert_eq!(
            lines.len(),
            1,
            "{path}: only the app's own line: {lines:#?}"
        );
        assert!(!lines[0].starts_with("session="), "{path}: {lines:#?}");
    }
    h.shutdown().await;
}

// ---------------------------------------------------------------- 2. one truth upstream

#[tokio::test]
async fn upstream_sees_only_the_verified_session_cookie() {
    let h = jwt_harness().await;
    let valid = hs256(json!({"sub": "victim", "iat": T0, "exp": T0 + 3000}));
    let forged = hs256_with(
        OTHER_SECRET,
        "k1",
        &json!({"sub": "attacker", "iat": T0, "exp": T0 + 3000}),
    );
    let (v0, v1) = valid.split_at(valid.len() / 2);
    let (f0, f1) = forged.split_at(forged.len() / 2);
    let cases: Vec<(String, String)> = vec![
        // duplicates of the plain name, the verified one in either place
        (
            format!("session={forged}; a=1; session={valid}"),
            format!("session={valid}; a=1"),
        ),
        (
            format!("session={valid}; session={forged}; a=1"),
            format!("session={valid}; a=1"),
        ),
        // plain plus chunks: the one that verifies wins, not "chunks always"
        (
            format!("session.0={f0}; session={valid}; session.1={f1}"),
            format!("session={valid}"),
        ),
        (
            format!("session=junk; session.0={v0}; session.1={v1}; b=2"),
            format!("session.0={v0}; session.1={v1}; b=2"),
        ),
        // two chunk sets (two paths); stray chunks are dropped
        (
            format!("session.0={f0}; session.1={f1}; session.0={v0}; session.1={v1}; session.7=x"),
            format!("session.0={v0}; session.1={v1}"),
        ),
        // twin names the app may also read
        (
            format!("__Host-session={forged}; session={valid}; __Secure-session.0=x"),
            format!("session={valid}"),
        ),
    ];
    for (sent, want) in cases {
        let (resp, seen) = get_with(&h, "/page", &sent).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(seen.as_deref(), Some(want.as_str()), "sent {sent}");
        assert_eq!(
            h.upstream.last().header("x-rotagate-subject").as_deref(),
            Some("victim"),
            "sent {sent}"
        );
    }
    // nothing verifies: no session cookie of any name reaches the app
    let (_, seen) = get_with(
        &h,
        "/page",
        &format!("__Host-session={forged}; session={forged}; session.3=x; other=1"),
    )
    .await;
    assert_eq!(seen.as_deref(), Some("other=1"));
    assert_eq!(h.upstream.last().header("x-rotagate-subject"), None);
    h.shutdown().await;

    // Auth.js twins: an unverifiable __Secure- cookie does not hide the valid plain one,
    // and the app never gets the one rotagate could not verify
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("auth"), AUTH_SECRET).unwrap();
    let h = start(
        dir,
        upstream_ok().await,
        "",
        "[session]\nrotate_every = \"5m\"\n[session.reissue]\nformat = \"authjs\"\nsecrets = [\"file:auth\"]\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n",
    )
    .await;
    h.clock.set(real_now());
    let plain = authjs_token(json!({"sub": "victim"}), "authjs.session-token");
    let other = authjs_token(json!({"sub": "attacker"}), "__Secure-authjs.session-token");
    for (sent, want) in [
        (
            format!("__Secure-authjs.session-token=garbage; authjs.session-token={plain}"),
            format!("authjs.session-token={plain}"),
        ),
        (
            format!("authjs.session-token={plain}; __Secure-authjs.session-token={other}AAAA"),
            format!("authjs.session-token={plain}"),
        ),
    ] {
        let (_, seen) = get_with(&h, "/page", &sent).await;
        assert_eq!(seen.as_deref(), Some(want.as_str()));
        assert_eq!(
            h.upstream.last().header("x-rotagate-subject").as_deref(),
            Some("victim")
        );
    }
    h.shutdown().await;
}

// ---------------------------------------------------------------- 3. lifetimes

#[tokio::test]
async fn token_without_iat_keeps_its_own_exp() {
    let h = jwt_harness().await;
    let mut token = hs256(json!({"sub": "u1", "exp": T0 + 600}));
    for at in [T0, T0 + 400] {
        h.clock.set(at);
        let (resp, seen) = get_with(&h, "/page", &format!("session={token}")).await;
        let lines = set_cookies(&resp);
        assert_eq!(lines.len(), 1, "re-minted at {at}: {lines:#?}");
        token = value_of(&lines[0]).to_string();
        assert_eq!(seen, Some(format!("session={token}")));
        let c = claims_of(&token);
        assert_eq!(c["iat"], at);
        assert!(
            c["exp"].as_u64().unwrap() <= T0 + 600,
            "the lifetime was stretched at {at}: {c}"
        );
        let max_age: u64 = lines[0]
            .split("; ")
            .find_map(|a| a.strip_prefix("Max-Age="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(max_age <= T0 + 600 - at, "{}", lines[0]);
    }
    // once its own exp has passed, it is dead however often it was re-minted
    h.clock.set(T0 + 600 + 31);
    let (_, seen) = get_with(&h, "/page", &format!("session={token}")).await;
    assert_eq!(seen, None);
    h.shutdown().await;
}

#[tokio::test]
async fn jwt_without_exp_is_refused_unless_configured() {
    let h = jwt_harness().await;
    let token = hs256(json!({"sub": "u1", "iat": T0 - 60}));
    let (resp, seen) = get_with(&h, "/page", &format!("session={token}; a=1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen.as_deref(),
        Some("a=1"),
        "an exp-less token is not a session"
    );
    assert_eq!(h.upstream.last().header("x-rotagate-subject"), None);
    assert!(
        set_cookies(&resp).is_empty(),
        "and it is not deleted either"
    );
    assert!(
        h.metrics()
            .await
            .contains("rotagate_session_invalid_total{reason=\"missing_exp\"} 1"),
        "counted"
    );
    h.shutdown().await;

    // require_exp = false: accepted, and its re-mint carries no exp (a session cookie)
    let h = jwt_harness_with("", "require_exp = false\n").await;
    let token = hs256(json!({"sub": "u1", "iat": T0 - 600}));
    let (resp, seen) = get_with(&h, "/page", &format!("session={token}")).await;
    let lines = set_cookies(&resp);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        !lines[0].contains("Max-Age") && !lines[0].contains("Expires"),
        "a session cookie: {}",
        lines[0]
    );
    let fresh = value_of(&lines[0]);
    assert_eq!(seen, Some(format!("session={fresh}")));
    let c = claims_of(fresh);
    assert_eq!(c["iat"], T0);
    assert!(c.get("exp").is_none(), "no exp invented: {c}");
    // absolute_timeout still ends it, counted from its first issue
    h.clock.set(T0 - 600 + 12 * 3600);
    let (_, seen) = get_with(&h, "/page", &format!("session={fresh}")).await;
    assert_eq!(seen, None, "over age");
    h.shutdown().await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_set() {
    let h = jwt_harness_with(
        "",
        "issuer = \"https://issuer.example\"\naudience = \"app\"\n",
    )
    .await;
    let base = json!({"sub": "u1", "iat": T0, "exp": T0 + 3000});
    let with = |extra: Value| {
        let mut c = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        hs256(c)
    };
    let cases = [
        (json!({"iss": "https://issuer.example", "aud": "app"}), true),
        (
            json!({"iss": "https://issuer.example", "aud": ["other", "app"]}),
            true,
        ),
        (json!({"iss": "https://evil.example", "aud": "app"}), false),
        (
            json!({"iss": "https://issuer.example", "aud": "other"}),
            false,
        ),
        (json!({"iss": "https://issuer.example"}), false),
        (json!({"aud": "app"}), false),
    ];
    for (claims, ok) in cases {
        let (_, seen) = get_with(&h, "/page", &format!("session={}", with(claims.clone()))).await;
        assert_eq!(seen.is_some(), ok, "{claims}");
    }
    // a re-mint keeps them
    h.clock.set(T0 + 600);
    let (resp, _) = get_with(
        &h,
        "/page",
        &format!(
            "session={}",
            with(json!({"iss": "https://issuer.example", "aud": "app"}))
        ),
    )
    .await;
    let lines = set_cookies(&resp);
    let c = claims_of(value_of(&lines[0]));
    assert_eq!(
        (c["iss"].as_str(), c["aud"].as_str()),
        (Some("https://issuer.example"), Some("app"))
    );
    h.shutdown().await;
}

#[test]
fn check_warns_when_a_jwt_session_checks_neither_issuer_nor_audience() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let check = |reissue: &str| {
        let p = dir.path().join("rotagate.toml");
        std::fs::write(
            &p,
            format!(
                "[upstream]\nurl = \"http://127.0.0.1:3000\"\n{}",
                jwt_session(reissue)
            ),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["check", "-c", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = check("");
    assert!(
        out.contains("warning: session.reissue: neither `issuer` nor `audience` is set"),
        "{out}"
    );
    for set in [
        "issuer = \"https://issuer.example\"\n",
        "audience = \"app\"\n",
    ] {
        let out = check(set);
        assert!(!out.contains("issuer"), "{set}: {out}");
    }
}

// ---------------------------------------------------------------- 4. no mass logout

/// Tokens rotagate refused because of its own keys (bad signature, unknown kid,
/// malformed) were stripped, so the upstream 401 that follows is rotagate's doing: it
/// passes through unrewritten and nothing is deleted. Tokens that are certainly dead, and
/// valid sessions the app refuses, are still logged out.
#[tokio::test]
async fn refused_token_401_passes_through_unrewritten() {
    let h = jwt_harness().await;
    let claims = json!({"sub": "u1", "iat": T0, "exp": T0 + 3000});
    let refused = [
        hs256_with(OTHER_SECRET, "k1", &claims),
        hs256_with(SECRET, "k-unknown", &claims),
        "not-a-jwt".to_string(),
    ];
    for token in &refused {
        let resp = h
            .client
            .get(h.url("/status/401"))
            .header("sec-fetch-mode", "navigate")
            .header("cookie", format!("session={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "not rewritten");
        assert!(
            set_cookies(&resp).is_empty(),
            "nothing deleted: {:?}",
            set_cookies(&resp)
        );
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert_eq!(resp.text().await.unwrap(), "upstream 401 body");
        assert_eq!(h.upstream.last().header("cookie"), None, "it was stripped");
    }
    assert_eq!(event(&h.metrics().await, "passed_401_refused_token"), 3);
    // certainly dead, or valid and refused by the app: logged out as before
    for token in [
        hs256(json!({"sub": "u1", "iat": T0 - 7200, "exp": T0 - 3600})),
        hs256(claims.clone()),
    ] {
        let resp = h
            .client
            .get(h.url("/status/401"))
            .header("sec-fetch-mode", "navigate")
            .header("cookie", format!("session={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 303);
        assert!(set_cookies(&resp)
            .iter()
            .any(|c| c.starts_with("session=;") && c.contains("Max-Age=0")));
    }
    assert_eq!(event(&h.metrics().await, "passed_401_refused_token"), 3);
    h.shutdown().await;
}

// ---------------------------------------------------------------- 5. bounds

/// A valid plain session plus 4,300 junk `session.N` cookies, answered by an upstream
/// 401: a bounded logout, and the app never sees the junk.
#[tokio::test]
async fn junk_chunks_give_a_bounded_logout() {
    let h = jwt_harness_with("max_header_bytes = 131072", "").await;
    let valid = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3000}));
    let mut cookie = format!("session={valid}");
    for i in 0..4300 {
        cookie.push_str(&format!("; session.{i}=x"));
    }
    let resp = within(
        "the junk request",
        raw(
            h.addr(),
            format!(
                "GET /status/401 HTTP/1.1\r\nHost: t\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n"
            )
            .as_bytes(),
        ),
    )
    .await;
    assert!(
        resp.starts_with("HTTP/1.1 303"),
        "{}",
        &resp[..resp.len().min(300)]
    );
    let lines = resp
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .count();
    assert!(
        (4..=40).contains(&lines),
        "{lines} Set-Cookie lines for one logout"
    );
    assert!(resp.contains("Set-Cookie: session=;") || resp.contains("set-cookie: session=;"));
    assert_eq!(
        h.upstream.last().header("cookie"),
        Some(format!("session={valid}")),
        "the app got the verified session only"
    );
    let m = h.metrics().await;
    for limit in ["cookie_limit", "deletion_limit"] {
        assert_eq!(event(&m, limit), 1, "{limit} counted");
    }
    h.shutdown().await;
}

/// At most 64 chunks are read; a chunk set with more is malformed.
#[tokio::test]
async fn more_than_64_chunks_is_malformed() {
    let h = jwt_harness().await;
    let valid = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3000}));
    for (n, ok) in [(64usize, true), (65, false)] {
        let len = valid.len();
        let parts: Vec<String> = (0..n)
            .map(|i| format!("session.{i}={}", &valid[i * len / n..(i + 1) * len / n]))
            .collect();
        assert_eq!(parts.len(), n);
        let (_, seen) = get_with(&h, "/page", &parts.join("; ")).await;
        assert_eq!(seen.is_some(), ok, "{n} chunks");
        assert_eq!(
            h.upstream.last().header("x-rotagate-subject").is_some(),
            ok,
            "{n} chunks"
        );
    }
    assert!(event(&h.metrics().await, "chunk_limit") >= 1);
    h.shutdown().await;
}

// ---------------------------------------------------------------- 6. caches

#[tokio::test]
async fn responses_with_rotated_cookies_are_never_shared_cacheable() {
    let h = jwt_harness().await;
    let due = || hs256(json!({"sub": "u1", "iat": T0 - 600, "exp": T0 + 3000}));
    let cases: [(&str, Option<&str>); 6] = [
        // heuristically cacheable status, nothing said: private added
        ("/page", Some("private")),
        ("/cache/public", Some("private, max-age=60")),
        // already unstorable: left alone
        ("/cache/no-store", Some("no-store")),
        // a qualified private lets shared caches store the rest
        (
            "/cache/quoted",
            Some("private, max-age=60, stale-while-revalidate=30"),
        ),
        // Expires makes a 302 storable
        ("/cache/found", Some("private")),
        // a 303 without freshness is not storable
        ("/cache/see-other", None),
    ];
    for (path, want) in cases {
        let (resp, _) = get_with(&h, path, &format!("session={}", due())).await;
        assert_eq!(set_cookies(&resp).len(), 1, "{path}: rotated");
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            want,
            "{path}"
        );
        for n in [
            "cdn-cache-control",
            "surrogate-control",
            "cloudflare-cdn-cache-control",
        ] {
            assert!(resp.headers().get(n).is_none(), "{path}: {n} kept");
        }
    }
    // without a rotated cookie, on a route without `require`, the app's caching stands
    let fresh = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3000}));
    let (resp, _) = get_with(&h, "/cache/public", &format!("session={fresh}")).await;
    assert!(set_cookies(&resp).is_empty());
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=60, s-maxage=600"
    );
    assert_eq!(resp.headers()["cdn-cache-control"], "max-age=600");
    assert!(event(&h.metrics().await, "made_private") >= 4);
    h.shutdown().await;
}

#[tokio::test]
async fn require_route_answers_are_never_shared_cacheable() {
    let h = jwt_harness().await;
    let fresh = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3000}));
    let (resp, _) = get_with(&h, "/premium/cached", &format!("session={fresh}")).await;
    assert_eq!(resp.status(), 200);
    assert!(set_cookies(&resp).is_empty(), "no rotation here");
    assert_eq!(resp.headers()["cache-control"], "private, max-age=600");
    assert!(resp.headers().get("cdn-cache-control").is_none());
    // rotagate's own answers that carry Set-Cookie (here: the dead token's deletion) say
    // no-store
    let dead = hs256(json!({"sub": "u1", "iat": T0 - 7200, "exp": T0 - 3600}));
    let resp = h
        .client
        .get(h.url("/premium/cached"))
        .header("sec-fetch-mode", "navigate")
        .header("cookie", format!("session={dead}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(!set_cookies(&resp).is_empty());
    assert_eq!(resp.headers()["cache-control"], "no-store");
    h.shutdown().await;
}

#[test]
fn an_empty_issuer_or_audience_is_a_located_config_error() {
    for key in ["issuer", "audience"] {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:3000\"\n[session]\n[session.reissue]\nformat = \"authjs\"\nsecrets = [\"env:PATH\"]\n{key} = \" \"\n"
        );
        let e = rotagate::config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("t.toml:7:{}", key.len() + 4)), "{e}");
        assert!(e.contains("found an empty string"), "{e}");
    }
}

// ---------------------------------------------------------------- red-team follow-ups

/// An app that refuses the token rotagate just re-minted (it lacks rotagate's new
/// signing key after a rollover, or wants a header rotagate does not write): its 401
/// answers rotagate's re-mint, not the user's session. It passes through, and the
/// browser keeps the token the app knows: no mass logout at everyone's next rotation.
#[tokio::test]
async fn a_401_to_a_token_reminted_on_that_request_is_not_a_logout() {
    let h = jwt_harness().await;
    let due = hs256(json!({"sub": "u1", "iat": T0 - 600, "exp": T0 + 3000}));
    let resp = h
        .client
        .get(h.url("/status/401"))
        .header("sec-fetch-mode", "navigate")
        .header("cookie", format!("session={due}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "not rewritten");
    assert!(set_cookies(&resp).is_empty(), "{:?}", set_cookies(&resp));
    let seen = h.upstream.last().header("cookie").unwrap_or_default();
    assert!(
        seen.starts_with("session=") && seen != format!("session={due}"),
        "re-minted upstream"
    );
    assert_eq!(event(&h.metrics().await, "passed_401_reminted_token"), 1);
    h.shutdown().await;
}

/// The config names `session`, the app uses `__Host-session`: rotagate does not read
/// that twin and strips it, so the app's 401 answers a request rotagate emptied. It
/// passes through and nothing is deleted.
#[tokio::test]
async fn a_401_after_rotagate_stripped_an_unread_twin_is_not_a_logout() {
    let h = jwt_harness().await;
    let valid = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3000}));
    let resp = h
        .client
        .get(h.url("/status/401"))
        .header("sec-fetch-mode", "navigate")
        .header("cookie", format!("__Host-session={valid}; other=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "not rewritten");
    assert!(set_cookies(&resp).is_empty(), "{:?}", set_cookies(&resp));
    assert_eq!(
        h.upstream.last().header("cookie").as_deref(),
        Some("other=1")
    );
    assert_eq!(event(&h.metrics().await, "passed_401_stripped_cookies"), 1);
    // a refused token passed through still has its certainly dead companion deleted
    let dead = hs256(json!({"sub": "u1", "iat": T0 - 7200, "exp": T0 - 3600}));
    let resp = h
        .client
        .get(h.url("/status/401"))
        .header("cookie", format!("session=not-a-jwt; session.0={dead}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let lines = set_cookies(&resp);
    assert!(
        lines
            .iter()
            .any(|c| c.starts_with("session.0=;") && c.contains("Max-Age=0")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|c| c.starts_with("session=;")),
        "{lines:?}"
    );
    h.shutdown().await;
}

/// A byte that is not visible ASCII in the `Cookie` header must not hide the session
/// cookies next to it from rotagate while the header goes upstream untouched.
#[tokio::test]
async fn a_non_ascii_byte_does_not_smuggle_an_unverified_token() {
    let h = jwt_harness().await;
    let valid = hs256(json!({"sub": "u1", "iat": T0, "exp": T0 + 3000}));
    let forged = hs256_with(
        OTHER_SECRET,
        "k1",
        &json!({"sub": "admin", "iat": T0, "exp": T0 + 3000}),
    );
    for raw in [
        format!("x=\u{fffd}; session={forged}").into_bytes(),
        [b"x=\xff; session=".as_slice(), forged.as_bytes()].concat(),
        [
            format!("session={valid}; x=").as_bytes(),
            b"\xe9; session=",
            forged.as_bytes(),
        ]
        .concat(),
    ] {
        let before = h.upstream.count();
        let resp = h
            .client
            .get(h.url("/x"))
            .header("cookie", http::HeaderValue::from_bytes(&raw).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h.upstream.count(), before + 1);
        let sent = h
            .upstream
            .last()
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            !sent.contains(&forged),
            "forged token reached the app: {sent}"
        );
    }
    // the valid one still goes through next to the junk byte
    let last = h.upstream.last();
    let sent = String::from_utf8_lossy(last.headers["cookie"].as_bytes()).into_owned();
    assert!(sent.contains(&valid), "{sent}");
    h.shutdown().await;
}

/// Cookie tossing: four expired tokens of the attacker's own account, set from a sibling
/// site with more specific paths, fill the candidate limit in front of the victim's valid
/// cookie. A deletion names a cookie, not a value: rotagate must not delete `session`,
/// which would hit the victim's own cookie.
#[tokio::test]
async fn tossed_duplicate_cookies_never_get_the_victims_cookie_deleted() {
    let h = jwt_harness().await;
    let victim = hs256(json!({"sub": "victim", "iat": T0, "exp": T0 + 3000}));
    let mut cookie = String::new();
    for i in 0..4 {
        let dead = hs256(json!({"sub": "attacker", "iat": T0 - 7200 - i, "exp": T0 - 3600}));
        cookie.push_str(&format!("session={dead}; "));
    }
    cookie.push_str(&format!("session={victim}"));
    let (resp, _) = get_with(&h, "/x", &cookie).await;
    assert_eq!(resp.status(), 200);
    let lines = set_cookies(&resp);
    assert!(
        !lines.iter().any(|c| c.starts_with("session=;")),
        "{lines:?}"
    );
    // a single dead cookie is still deleted
    let dead = hs256(json!({"sub": "u1", "iat": T0 - 7200, "exp": T0 - 3600}));
    let (resp, _) = get_with(&h, "/x", &format!("session={dead}")).await;
    assert!(set_cookies(&resp)
        .iter()
        .any(|c| c.starts_with("session=;")));
    h.shutdown().await;
}

/// A CORS-shaped `OPTIONS` on a session route without `require` is still a request with
/// cookies: the app gets only what rotagate verified.
#[tokio::test]
async fn a_preflight_shaped_options_gets_one_truth_upstream() {
    let h = jwt_harness().await;
    let forged = hs256_with(
        OTHER_SECRET,
        "k1",
        &json!({"sub": "admin", "iat": T0, "exp": T0 + 3000}),
    );
    let resp = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/x"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("cookie", format!("session={forged}; other=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        h.upstream.last().header("cookie").as_deref(),
        Some("other=1")
    );
    h.shutdown().await;
}

/// The app's own session line with a non-ASCII byte in it still wins.
#[tokio::test]
async fn the_apps_non_ascii_session_line_still_wins() {
    let app = upstream(Arc::new(|_req| {
        Box::pin(async {
            hyper::Response::builder()
                .header(
                    "set-cookie",
                    http::HeaderValue::from_bytes(b"session=x; Max-Age=0; Comment=caf\xc3\xa9")
                        .unwrap(),
                )
                .body(full("ok"))
                .unwrap()
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let rest = format!("{}{JWT_ROUTES}", jwt_session(""));
    let h = start(dir, app, "", &rest).await;
    let due = hs256(json!({"sub": "u1", "iat": T0 - 600, "exp": T0 + 3000}));
    let (resp, _) = get_with(&h, "/x", &format!("session={due}")).await;
    let lines: Vec<Vec<u8>> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    assert_eq!(lines.len(), 1, "only the app's own line");
    h.shutdown().await;
}
