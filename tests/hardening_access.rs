//! Issue 9, access rules: each test performs an attack through the real proxy (real
//! upstream, real client, loopback ephemeral ports) and checks that it is refused —
//! the loop breaker, locales, Server Action owners, every requirement of an action,
//! no-JS form actions read from the body, and CSRF (same-site, WebSocket, preflights).

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "hardening-access-secret-hardening-access-42";

const JWT_SESSION: &str = r#"
[session]
rotate_every = "5m"
[session.reissue]
cookie = "session"
[[session.reissue.keys]]
alg = "HS256"
secret = "file:secret"
"#;

fn token(claims: Value) -> String {
    hs256_token(SECRET, &json!({"alg": "HS256", "typ": "JWT"}), &claims)
}

/// A signed-in user without the paid claim.
fn free() -> String {
    format!(
        "session={}",
        token(
            json!({"sub": "free", "has_access": false, "plan": "free", "roles": ["reader"], "iat": T0, "exp": T0 + 3600})
        )
    )
}

/// A signed-in user with every claim the tests ask for.
fn paid() -> String {
    format!(
        "session={}",
        token(
            json!({"sub": "paid", "has_access": true, "plan": "pro", "roles": ["reader", "admin"], "team": true, "iat": T0, "exp": T0 + 3600})
        )
    )
}

/// A manifest listing `(action id, [defining entries])`, with Next's encryption key.
fn manifest(actions: &[(&str, &[&str])]) -> String {
    let mut node = serde_json::Map::new();
    for (i, (id, entries)) in actions.iter().enumerate() {
        let workers: serde_json::Map<String, Value> = entries
            .iter()
            .map(|e| (e.to_string(), json!({"moduleId": i, "async": false})))
            .collect();
        let layer: serde_json::Map<String, Value> = entries
            .iter()
            .map(|e| (e.to_string(), json!("action-browser")))
            .collect();
        node.insert(id.to_string(), json!({"workers": workers, "layer": layer}));
    }
    json!({"node": node, "edge": {}, "encryptionKey": "NEXT-KEY-never-log-me"}).to_string()
}

/// Starts the proxy with `extra` after the shared header, a secret file and, when
/// given, a manifest. The clock is a little after T0, so the test tokens are fresh.
async fn start(up: Upstream, extra: &str, manifest_json: Option<&str>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    if let Some(m) = manifest_json {
        std::fs::write(dir.path().join("manifest.json"), m).unwrap();
    }
    let h = Harness::start_in(dir, up, extra).await;
    h.clock.set(T0 + 10);
    h
}

/// Starts the proxy on a complete config file (for configs with their own `[listen]`).
async fn start_full(dir: tempfile::TempDir, up: Upstream, text: &str, clock_at: u64) -> Harness {
    let h = Harness::start_text(dir, up, text).await;
    h.clock.set(clock_at);
    h
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// A browser's no-JavaScript form submission body (multipart/form-data), fields in
/// document order.
fn multipart(fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let boundary = "----rotagateFormBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Posts a form as a browser without JavaScript does (a same-origin navigation).
async fn post_form(
    h: &Harness,
    path: &str,
    cookie: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut rb = h
        .client
        .post(h.url(path))
        .header("content-type", content_type)
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .body(body);
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    rb.send().await.unwrap()
}

/// Posts a Server Action as the Next client does (`Next-Action` header).
async fn post_action(
    h: &Harness,
    path: &str,
    id: &str,
    cookie: Option<&str>,
    host: Option<&str>,
) -> reqwest::Response {
    let mut rb = h
        .client
        .post(h.url(path))
        .header("next-action", id)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "text/plain;charset=UTF-8")
        .body("[]");
    if let Some(c) = cookie {
        rb = rb.header("cookie", c);
    }
    if let Some(host) = host {
        rb = rb.header("host", host);
    }
    rb.send().await.unwrap()
}

/// The `name=value` of the `rg_login_loop` cookie a response set, if any.
fn loop_cookie(r: &reqwest::Response) -> Option<String> {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with("rg_login_loop="))
        .and_then(|c| c.split(';').next().map(str::to_string))
}

// ---------------------------------------------------------------------------------
// 8. The loop breaker counts only redirects that rotagate's own logouts caused.

const LOOP_CFG: &str = r#"
[logout]
loop_max = 3
loop_window = "30s"

[[route]]
name = "account"
match = "/account/:path*"
require = { session = true }

[[route]]
name = "app"
match = "/:path*"
"#;

#[tokio::test]
async fn loop_breaker_ignores_anonymous_visitors_opening_protected_links() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{LOOP_CFG}"),
        None,
    )
    .await;
    // an anonymous visitor opens six protected links in a row, carrying whatever
    // cookies the proxy set (as a browser does): each is a plain redirect to login
    let mut jar: Option<String> = None;
    for round in 1..=6 {
        let mut rb = h
            .client
            .get(h.url(&format!("/account/page{round}")))
            .header("sec-fetch-mode", "navigate");
        if let Some(c) = &jar {
            rb = rb.header("cookie", c);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 303, "round {round}: {}", header(&r, "location"));
        assert_eq!(
            header(&r, "location"),
            format!("/login?callbackUrl=/account/page{round}")
        );
        if let Some(c) = loop_cookie(&r) {
            jar = Some(c);
        }
    }
    assert!(
        !h.metrics().await.contains("kind=\"loop_breaker\""),
        "no loop was broken"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn loop_breaker_still_stops_a_loop_of_dead_sessions() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{LOOP_CFG}"),
        None,
    )
    .await;
    // a browser whose session rotagate finds dead on every visit (here: expired)
    let dead = format!(
        "session={}",
        token(json!({"sub": "u", "iat": T0 - 7200, "exp": T0 - 3600}))
    );
    let mut loop_c: Option<String> = None;
    for round in 1..=4 {
        let cookie = match &loop_c {
            Some(l) => format!("{dead}; {l}"),
            None => dead.clone(),
        };
        let r = h
            .client
            .get(h.url("/account/me"))
            .header("sec-fetch-mode", "navigate")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        loop_c = loop_cookie(&r);
        assert!(loop_c.is_some(), "round {round} is counted");
        if round <= 3 {
            assert_eq!(r.status(), 303, "round {round}");
        } else {
            assert_eq!(r.status(), 409, "round {round}");
            assert!(r.text().await.unwrap().contains("Sign-in loop stopped"));
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn loop_breaker_counts_across_two_replicas_with_one_configuration() {
    // a load balancer spreads one browser over two replicas: each honours the count
    // the other signed (the key is derived from the configured session secret)
    let a = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{LOOP_CFG}"),
        None,
    )
    .await;
    let b = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{LOOP_CFG}"),
        None,
    )
    .await;
    let dead = format!(
        "session={}",
        token(json!({"sub": "u", "iat": T0 - 7200, "exp": T0 - 3600}))
    );
    let mut loop_c: Option<String> = None;
    for round in 1..=4 {
        let h = if round % 2 == 1 { &a } else { &b };
        let cookie = match &loop_c {
            Some(l) => format!("{dead}; {l}"),
            None => dead.clone(),
        };
        let r = h
            .client
            .get(h.url("/account/me"))
            .header("sec-fetch-mode", "navigate")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        loop_c = loop_cookie(&r);
        let count = loop_c
            .as_deref()
            .and_then(|c| c.strip_prefix("rg_login_loop="))
            .and_then(|v| v.split('.').next())
            .map(str::to_string);
        assert_eq!(
            count.as_deref(),
            Some(round.to_string().as_str()),
            "round {round} continues the other replica's count"
        );
        if round <= 3 {
            assert_eq!(r.status(), 303, "round {round}");
        } else {
            assert_eq!(
                r.status(),
                409,
                "round {round}: the loop is stopped on the other replica"
            );
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 9. Locales: a path without a locale prefix is matched with the default locale added.

#[tokio::test]
async fn unprefixed_paths_get_the_rule_of_the_default_locale() {
    let cfg = format!(
        r#"{JWT_SESSION}
[nextjs]
locales = ["en", "fr"]

[[route]]
name = "premium"
match = "/premium/:path*"
require = {{ session = true }}

[[route]]
name = "legacy"
match = {{ source = "/en/legacy/:path*", locale = false }}
require = {{ session = true }}

[[route]]
name = "app"
match = "/:path*"
"#
    );
    let h = start(upstream_ok().await, &cfg, None).await;
    for path in [
        "/premium/x",
        "/en/premium/x",
        "/fr/premium/x",
        "/EN/premium/x",
        "/premium",
        "/legacy/a",
        "/en/legacy/a",
    ] {
        let r = h
            .client
            .get(h.url(path))
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path} must get the protected rule");
        // the return path is the one the browser asked for
        assert_eq!(header(&r, "location"), format!("/login?callbackUrl={path}"));
    }
    assert_eq!(h.upstream.count(), 0);
    // other pages still go through, with the path as sent
    for path in ["/about", "/fr/legacy/a", "/"] {
        let r = h.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(h.upstream.last().uri, path);
    }
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 10. Action owners resolve for every page shape; unresolvable ones get the strictest rule.

const SHAPES_CFG: &str = r#"
[nextjs]
base_path = "/b"
server_reference_manifest = "manifest.json"

[[route]]
name = "item"
match = "/shop/:id(\\d+)"
require = { claims = { has_access = true } }
on_deny = { status = 402 }

[[route]]
name = "docs"
match = "/docs/:path+"
require = { session = true }

[[route]]
name = "cart"
match = "/cart/:path*"
require = { session = true }

[[route]]
name = "settings"
match = "/settings/:path*"
hosts = ["admin.test"]
require = { claims = { roles = { contains = "admin" } } }
on_deny = { status = 403 }

[[route]]
name = "team"
match = { source = "/team/:path*", has = [{ type = "cookie", key = "team" }] }
require = { claims = { team = true } }
on_deny = { status = 403 }

[[route]]
name = "app"
match = "/:path*"
"#;

fn shapes_manifest() -> String {
    manifest(&[
        ("item1", &["app/(shop)/shop/[id]/page"]),
        ("docs1", &["app/docs/[...slug]/page"]),
        ("cart1", &["app/(store)/cart/[[...slug]]/page"]),
        ("settings1", &["app/settings/page"]),
        ("team1", &["app/team/page"]),
        ("home1", &["app/page"]),
        ("odd1", &["app/odd/template"]),
    ])
}

#[tokio::test]
async fn action_owners_resolve_for_every_page_shape() {
    let up = upstream_ok().await;
    let h = start(
        up,
        &format!("{JWT_SESSION}{SHAPES_CFG}"),
        Some(&shapes_manifest()),
    )
    .await;
    let f = free();
    // typed param in the owning rule, route group, base_path
    let r = post_action(&h, "/b", "item1", Some(&f), None).await;
    assert_eq!(r.status(), 402, "item1 is held to /shop/:id(\\d+)");
    // catch-all and optional catch-all pages: anonymous gets the login answer
    for id in ["docs1", "cart1"] {
        let r = post_action(&h, "/b", id, None, None).await;
        assert_eq!(r.status(), 200, "{id}");
        assert!(
            header(&r, "x-action-redirect").starts_with("/login?callbackUrl=/b"),
            "{id}: {:?}",
            r.headers()
        );
    }
    // a hosts rule: its requirement follows the action on that host
    let r = post_action(&h, "/b", "settings1", Some(&f), Some("admin.test")).await;
    assert_eq!(r.status(), 403, "settings1 on admin.test");
    // a has rule: its requirement follows the action when the condition holds
    let with_team = format!("{f}; team=1");
    let r = post_action(&h, "/b", "team1", Some(&with_team), None).await;
    assert_eq!(r.status(), 403, "team1 with the team cookie");
    // an action whose page cannot be resolved gets the strictest action rule: every
    // owner's requirement together, the first failing route in file order answers
    let r = post_action(&h, "/b", "odd1", Some(&f), None).await;
    assert_eq!(r.status(), 402, "odd1 falls back to the strictest rule");
    let r = post_action(&h, "/b", "odd1", None, None).await;
    assert!(header(&r, "x-action-redirect").starts_with("/login"));
    assert_eq!(h.upstream.count(), 0, "nothing above reached the app");

    // what is allowed stays allowed
    let p = paid();
    for id in [
        "item1",
        "docs1",
        "cart1",
        "settings1",
        "team1",
        "odd1",
        "home1",
    ] {
        let r = post_action(&h, "/b", id, Some(&p), Some("admin.test")).await;
        assert_eq!(r.status(), 200, "{id} for an entitled user");
        assert_eq!(r.text().await.unwrap(), "ok from upstream");
    }
    let r = post_action(&h, "/b", "settings1", Some(&f), Some("other.test")).await;
    assert_eq!(r.status(), 200, "settings is protected on admin.test only");
    let r = post_action(&h, "/b", "team1", Some(&f), None).await;
    assert_eq!(r.status(), 200, "team applies only with the team cookie");
    let r = post_action(&h, "/b", "home1", None, None).await;
    assert_eq!(r.status(), 200, "the home page's action is public");
    h.shutdown().await;
}

#[tokio::test]
async fn action_owners_resolve_with_locales() {
    let cfg = format!(
        r#"{JWT_SESSION}
[nextjs]
locales = ["en", "de"]
server_reference_manifest = "manifest.json"

[[route]]
name = "premium"
match = "/premium/:path*"
require = {{ claims = {{ has_access = true }} }}
on_deny = {{ status = 402 }}

[[route]]
name = "app"
match = "/:path*"
"#
    );
    let m = manifest(&[("prem1", &["app/premium/[id]/page"])]);
    let h = start(upstream_ok().await, &cfg, Some(&m)).await;
    let r = post_action(&h, "/", "prem1", Some(&free()), None).await;
    assert_eq!(r.status(), 402);
    let r = post_action(&h, "/de/about", "prem1", Some(&paid()), None).await;
    assert_eq!(r.status(), 200);
    h.shutdown().await;
}

#[test]
fn check_and_explain_say_which_actions_fell_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("manifest.json"), shapes_manifest()).unwrap();
    let path = dir.path().join("rotagate.toml");
    std::fs::write(
        &path,
        format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n{JWT_SESSION}{SHAPES_CFG}"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let p = path.to_str().unwrap();
    let out = run(&["check", "-c", p]);
    assert!(
        out.contains("Server Action odd1")
            && out.contains("app/odd/template")
            && out.contains("strictest"),
        "{out}"
    );
    assert!(
        !out.contains("Server Action item1"),
        "resolved actions are not reported: {out}"
    );
    let out = run(&["explain", "-c", p, "POST", "/b", "-H", "next-action: odd1"]);
    assert!(
        out.contains("odd1") && out.contains("strictest") && out.contains("app/odd/template"),
        "{out}"
    );
    assert!(out.contains("route[0] \"item\""), "{out}");
    let out = run(&["explain", "-c", p, "POST", "/b", "-H", "next-action: item1"]);
    assert!(out.contains("route[0] \"item\" requires"), "{out}");
    assert!(
        !out.contains("NEXT-KEY"),
        "the manifest's key never appears"
    );
}

// ---------------------------------------------------------------------------------
// 11. A Server Action request gets every requirement that applies.

const EVERY_CFG: &str = r#"
[nextjs]
server_reference_manifest = "manifest.json"

[[route]]
name = "auth"
match = "/api/auth/:path*"
bypass = true

[[route]]
name = "premium"
match = "/premium/:path*"
require = { claims = { has_access = true } }
on_deny = { status = 402 }

[[route]]
name = "billing"
match = { source = "/:path*", has = [{ type = "header", key = "next-action", value = "bill.*" }] }
methods = ["POST"]
require = { claims = { plan = "pro" } }
on_deny = { redirect = "/pricing" }

[[route]]
name = "app"
match = "/:path*"
"#;

#[tokio::test]
async fn a_server_action_gets_the_requirements_of_every_matching_route() {
    let m = manifest(&[("bill42", &["app/page"]), ("pub1", &["app/page"])]);
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{EVERY_CFG}"),
        Some(&m),
    )
    .await;
    // a bypass route first in file order does not exempt the action from later rules
    let r = post_action(&h, "/api/auth/signin", "bill42", None, None).await;
    assert!(
        header(&r, "x-action-redirect").starts_with("/login"),
        "{:?}",
        r.headers()
    );
    // the first matching route passes, a later one does not: refused
    let has_access_not_pro = format!(
        "session={}",
        token(json!({"sub": "x", "has_access": true, "plan": "free", "iat": T0, "exp": T0 + 3600}))
    );
    let r = post_action(&h, "/premium/x", "bill42", Some(&has_access_not_pro), None).await;
    assert_eq!(header(&r, "x-action-redirect"), "/pricing;push");
    // both fail: the first failing route in file order answers with its on_deny
    let r = post_action(&h, "/premium/x", "bill42", Some(&free()), None).await;
    assert_eq!(r.status(), 402);
    assert_eq!(h.upstream.count(), 0);
    // allowed: a pro user, and a public action on the bypass route
    let r = post_action(&h, "/premium/x", "bill42", Some(&paid()), None).await;
    assert_eq!(r.status(), 200);
    let r = post_action(&h, "/api/auth/signin", "pub1", None, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h.upstream.count(), 2);
    h.shutdown().await;
}

// The shipped example, run against its own comments.

fn authjs_token(claims: Value, cookie: &str, secret: &str) -> String {
    let now = real_now();
    let mut t = claims;
    t["iat"] = json!(now);
    node_tool(
        "authjs-tool.mjs",
        "@auth/core",
        json!({"op": "v5-encode", "secret": secret, "salt": cookie, "token": t, "maxAge": 30 * 86400}),
    )["jwt"]
        .as_str()
        .unwrap()
        .to_string()
}

fn real_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Replaces `from` with `to` in `text`, insisting that `from` is there (so the test
/// breaks loudly if the example changes under it).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example no longer contains {from:?}"
    );
    text.replacen(from, to, 1)
}

#[tokio::test]
async fn the_paid_area_example_keeps_the_promises_its_comments_make() {
    const AUTH_SECRET: &str = "paid-area-example-auth-secret-0123456789";
    const COOKIE: &str = "__Secure-authjs.session-token";
    let example = std::fs::read_to_string("config/examples/paid-area.toml").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("auth_secret"), AUTH_SECRET).unwrap();
    std::fs::write(
        dir.path().join("manifest.json"),
        manifest(&[
            ("premact1", &["app/premium/page"]),
            ("homeact1", &["app/page"]),
            ("7f3a9c01", &["app/page"]),
        ]),
    )
    .unwrap();
    let up = upstream_ok().await;
    // only what a test machine needs changes: ports, the upstream, the secret and the
    // manifest paths (the manifest and unknown_actions lines are uncommented)
    let mut text = edit(
        &example,
        "address = \"0.0.0.0:8080\"",
        "address = \"127.0.0.1:0\"",
    );
    text = edit(
        &text,
        "url = \"http://127.0.0.1:3000\"",
        &format!("url = \"http://{}\"", up.addr),
    );
    text = edit(&text, "\"env:AUTH_SECRET\"", "\"file:auth_secret\"");
    text = edit(
        &text,
        "# server_reference_manifest = \"/app/.next/server/server-reference-manifest.json\"",
        "server_reference_manifest = \"manifest.json\"",
    );
    text = edit(
        &text,
        "# unknown_actions = \"deny\"",
        "unknown_actions = \"deny\"",
    );
    let h = start_full(dir, up, &text, real_now()).await;

    let make = |claims: Value| format!("{COOKIE}={}", authjs_token(claims, COOKIE, AUTH_SECRET));
    let free = make(
        json!({"sub": "free-1", "email": "f@example.com", "plan": "free", "has_access": false}),
    );
    let paid = make(
        json!({"sub": "paid-1", "email": "p@example.com", "plan": "pro", "has_access": true, "roles": ["reader"]}),
    );
    let admin = make(
        json!({"sub": "admin-1", "email": "a@example.com", "plan": "pro", "has_access": true, "roles": ["admin"], "org": {"tier": "gold"}}),
    );
    const HOST: &str = "app.example.com";
    const ORIGIN: &str = "https://app.example.com";
    let get = |path: &str, cookie: Option<&str>, accept_json: bool| {
        let mut rb = h.client.get(h.url(path)).header("host", HOST);
        rb = if accept_json {
            rb.header("accept", "application/json")
        } else {
            rb.header("sec-fetch-mode", "navigate")
        };
        if let Some(c) = cookie {
            rb = rb.header("cookie", c.to_string());
        }
        rb.send()
    };
    let action = |path: &str, id: &str, cookie: Option<&str>| {
        let mut rb = h
            .client
            .post(h.url(path))
            .header("host", HOST)
            .header("origin", ORIGIN)
            .header("next-action", id)
            .body("[]");
        if let Some(c) = cookie {
            rb = rb.header("cookie", c.to_string());
        }
        rb.send()
    };

    // "Paid: a valid session whose token says has_access = true. Others go to /pricing
    // (a redirect for pages, x-action-redirect for Server Actions, JSON 403 for fetch)."
    for path in ["/premium/report", "/api/premium/data"] {
        let r = get(path, Some(&free), false).await.unwrap();
        assert_eq!(
            (r.status().as_u16(), header(&r, "location")),
            (303, "/pricing".into()),
            "{path}"
        );
        let r = get(path, Some(&free), true).await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["redirect"], "/pricing");
        assert_eq!(
            get(path, Some(&paid), false).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let r = action("/premium/report", "premact1", Some(&free))
        .await
        .unwrap();
    assert_eq!(header(&r, "x-action-redirect"), "/pricing;push");

    // "Next.js runs a Server Action for whatever action id is POSTed (header
    // `Next-Action`) to ANY page path ... the `require` of the route that owns the page
    // defining an action follows that action wherever it is posted."
    for path in ["/", "/account/settings", "/api/auth/session"] {
        let r = action(path, "premact1", Some(&free)).await.unwrap();
        assert_eq!(header(&r, "x-action-redirect"), "/pricing;push", "{path}");
    }
    assert_eq!(
        action("/", "homeact1", Some(&free)).await.unwrap().status(),
        200
    );

    // "unknown_actions = "deny": refuse action ids the manifest does not list"
    assert_eq!(
        action("/", "feedbeef", Some(&paid)).await.unwrap().status(),
        404
    );

    // "Also protect Server Actions by id directly, without a manifest" — wherever the
    // id is posted, also on routes listed before this rule
    for path in [
        "/",
        "/account/settings",
        "/api/auth/callback",
        "/premium/report",
    ] {
        let r = action(path, "7f3a9c01", Some(&free)).await.unwrap();
        assert!(
            header(&r, "x-action-redirect").starts_with("/pricing")
                || header(&r, "x-action-redirect").starts_with("/login")
                || r.status() == 403,
            "{path}: {} {:?}",
            r.status(),
            r.headers()
        );
        assert_ne!(r.status(), 500);
    }
    assert_eq!(
        action("/account/settings", "7f3a9c01", Some(&paid))
            .await
            .unwrap()
            .status(),
        200
    );

    // "Admins: a role list that contains "admin"; others get a plain 403."
    let r = get("/admin/users", Some(&paid), false).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        get("/admin/users", Some(&admin), false)
            .await
            .unwrap()
            .status(),
        200
    );

    // "Signed-in users only; anonymous requests get the login answer."
    let r = get("/account/profile", None, false).await.unwrap();
    assert_eq!(
        (r.status().as_u16(), header(&r, "location")),
        (303, "/login?callbackUrl=/account/profile".into())
    );
    assert_eq!(
        get("/account/profile", Some(&free), false)
            .await
            .unwrap()
            .status(),
        200
    );

    // "public_origin ... CSRF: unsafe requests must come from here"
    let post = |origin: &str| {
        h.client
            .post(h.url("/account/settings"))
            .header("host", HOST)
            .header("origin", origin.to_string())
            .header("cookie", free.clone())
            .body("x=1")
            .send()
    };
    assert_eq!(post("https://evil.example").await.unwrap().status(), 403);
    assert_eq!(post(ORIGIN).await.unwrap().status(), 200);
    // "require_origin = false: ... refuse unsafe requests with neither ..." is off
    let r = h
        .client
        .post(h.url("/account/settings"))
        .header("host", HOST)
        .header("cookie", free.clone())
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // "the app can trust these: client copies are stripped"
    h.client
        .get(h.url("/account/profile"))
        .header("host", HOST)
        .header("cookie", paid.clone())
        .header("x-rotagate-subject", "someone-else")
        .header("x-rotagate-plan", "enterprise")
        .send()
        .await
        .unwrap();
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-rotagate-subject").as_deref(), Some("paid-1"));
    assert_eq!(seen.header("x-rotagate-plan").as_deref(), Some("pro"));
    assert_eq!(
        seen.header("x-rotagate-email").as_deref(),
        Some("p@example.com")
    );
    h.client
        .get(h.url("/"))
        .header("host", HOST)
        .header("x-rotagate-subject", "someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(h.upstream.last().header("x-rotagate-subject"), None);

    // static and auth routes: "bypass = true" — no session work: the cookie reaches the
    // app as sent and no identity headers are added
    for path in ["/_next/static/chunk.js", "/api/auth/session"] {
        let r = get(path, Some(&paid), false).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(set_cookies(&r).is_empty(), "{path}");
        assert_eq!(
            h.upstream.last().header("x-rotagate-subject"),
            None,
            "{path}"
        );
    }

    // "read at start and on every reload; its encryption key is never logged or kept"
    std::fs::write(
        h.dir.path().join("manifest.json"),
        manifest(&[("premact2", &["app/premium/page"])]),
    )
    .unwrap();
    h.proxy().shared.reload().await.unwrap();
    let r = action("/", "premact2", Some(&free)).await.unwrap();
    assert_eq!(header(&r, "x-action-redirect"), "/pricing;push");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args([
            "explain",
            "-c",
            h.config_path.to_str().unwrap(),
            "POST",
            "/",
        ])
        .args(["-H", "next-action: premact2"])
        .output()
        .unwrap();
    let out =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.contains("route[2] \"premium\""), "{out}");
    assert!(
        !out.contains("NEXT-KEY") && !out.contains(AUTH_SECRET),
        "{out}"
    );
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 12. No-JS form actions are judged by the id in their body.

const FORM_CFG: &str = r#"
[logout]
login_url = "/login"

[nextjs]
server_reference_manifest = "manifest.json"

[[route]]
name = "premium"
match = "/premium/:path*"
require = { claims = { has_access = true } }
on_deny = { redirect = "/pricing" }

[[route]]
name = "app"
match = "/:path*"
"#;

fn form_manifest() -> String {
    manifest(&[
        ("signin1", &["app/login/page"]),
        ("prem1", &["app/premium/page"]),
        ("home1", &["app/page"]),
    ])
}

/// An upstream that records every request body it receives.
async fn body_recorder() -> (Upstream, Arc<Mutex<Vec<Bytes>>>) {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let b = bodies.clone();
    let up = upstream(Arc::new(move |req| {
        let b = b.clone();
        Box::pin(async move {
            let body = req.into_body().collect().await.map(|c| c.to_bytes());
            b.lock().unwrap().push(body.unwrap_or_default());
            text(200, "ok from upstream")
        })
    }))
    .await;
    (up, bodies)
}

fn is_login_redirect(r: &reqwest::Response) -> bool {
    r.status() == 303 && header(r, "location").starts_with("/login?")
}

#[tokio::test]
async fn no_js_form_actions_are_judged_by_the_id_in_their_body() {
    let (up, bodies) = body_recorder().await;
    let h = start(
        up,
        &format!("{JWT_SESSION}{FORM_CFG}"),
        Some(&form_manifest()),
    )
    .await;
    let f = free();

    // Auth.js' <form action={signIn}> on the login page: anonymous, and it works
    let (ct, body) = multipart(&[("$ACTION_ID_signin1", ""), ("provider", "github")]);
    let r = post_form(&h, "/login", None, &ct, body).await;
    assert_eq!(r.status(), 200, "the sign-in form works anonymously");
    // the same public action posted to another page: still public
    let (ct, body) = multipart(&[("$ACTION_ID_signin1", "")]);
    assert_eq!(post_form(&h, "/", None, &ct, body).await.status(), 200);
    // an ordinary form post (no action id) is not an action
    let (ct, body) = multipart(&[("title", "hello")]);
    assert_eq!(
        post_form(&h, "/api/notes", None, &ct, body).await.status(),
        200
    );
    let served = h.upstream.count();

    // a premium action's id posted to the login page does not get through
    let (ct, body) = multipart(&[("$ACTION_ID_prem1", "")]);
    let r = post_form(&h, "/login", None, &ct, body).await;
    assert!(is_login_redirect(&r), "{} {:?}", r.status(), r.headers());
    let (ct, body) = multipart(&[("$ACTION_ID_prem1", "")]);
    let r = post_form(&h, "/login", Some(&f), &ct, body).await;
    assert_eq!(
        (r.status().as_u16(), header(&r, "location")),
        (303, "/pricing".into())
    );
    // urlencoded, percent-encoded name
    let r = post_form(
        &h,
        "/login",
        None,
        "application/x-www-form-urlencoded",
        b"%24ACTION_ID_prem1=&x=1".to_vec(),
    )
    .await;
    assert!(is_login_redirect(&r), "urlencoded");
    // a later id overrides an earlier one in React's decodeAction: both count
    let (ct, body) = multipart(&[("$ACTION_ID_home1", ""), ("$ACTION_ID_prem1", "")]);
    assert!(
        is_login_redirect(&post_form(&h, "/", None, &ct, body).await),
        "override"
    );
    // a bound action ($ACTION_REF_) carries its id in a JSON field
    let (ct, body) = multipart(&[
        ("$ACTION_REF_1", ""),
        ("$ACTION_1:0", r#"{"id":"prem1","bound":"$@1"}"#),
        ("$ACTION_1:1", "[]"),
        ("$ACTION_KEY", "k1"),
    ]);
    assert!(
        is_login_redirect(&post_form(&h, "/", None, &ct, body).await),
        "bound"
    );
    // an empty Next-Action header is a form action
    let (ct, body) = multipart(&[("$ACTION_ID_prem1", "")]);
    let r = h
        .client
        .post(h.url("/login"))
        .header("next-action", "")
        .header("content-type", ct)
        .header("sec-fetch-site", "same-origin")
        .body(body)
        .send()
        .await
        .unwrap();
    // (a header action: the login answer is the action redirect)
    assert!(
        header(&r, "x-action-redirect").starts_with("/login?"),
        "empty Next-Action header: {:?}",
        r.headers()
    );
    // a body too long to read whole: the id cannot be trusted (a later field could
    // override it), so the strictest action rule applies
    let pad = "p".repeat(20 * 1024);
    let (ct, body) = multipart(&[("$ACTION_ID_signin1", ""), ("pad", &pad)]);
    assert!(
        is_login_redirect(&post_form(&h, "/login", None, &ct, body).await),
        "long body"
    );
    assert_eq!(
        h.upstream.count(),
        served,
        "none of the refused posts reached the app"
    );

    // the paid user passes all of them, and the app gets every body unchanged
    let (ct, body) = multipart(&[("$ACTION_ID_signin1", ""), ("pad", &pad)]);
    let before = bodies.lock().unwrap().len();
    assert_eq!(
        post_form(&h, "/login", Some(&paid()), &ct, body.clone())
            .await
            .status(),
        200
    );
    assert_eq!(bodies.lock().unwrap()[before], body);
    h.shutdown().await;
}

#[tokio::test]
async fn form_bodies_reach_the_app_byte_identical_over_h1_and_h2c() {
    let (up, bodies) = body_recorder().await;
    let h = start(
        up,
        &format!("{JWT_SESSION}{FORM_CFG}"),
        Some(&form_manifest()),
    )
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let noise: String = (0..40_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    let cases = [
        multipart(&[("$ACTION_ID_home1", ""), ("note", "small \u{e9}")]),
        multipart(&[("$ACTION_ID_home1", ""), ("note", &noise[..15_000])]),
        multipart(&[("$ACTION_ID_home1", ""), ("note", &noise)]),
        (
            "application/x-www-form-urlencoded".to_string(),
            format!("%24ACTION_ID_home1=&note={}", &noise[..900]).into_bytes(),
        ),
    ];
    let mut expected = Vec::new();
    for (ct, body) in &cases {
        for client in [&h.client, &h2] {
            let r = client
                .post(h.url("/"))
                .header("content-type", ct.as_str())
                .header("sec-fetch-site", "same-origin")
                .header("cookie", paid())
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{} bytes", body.len());
            expected.push(Bytes::from(body.clone()));
        }
    }
    // HTTP/1.1 with Expect: 100-continue: the client waits for the go-ahead
    let (ct, body) = multipart(&[("$ACTION_ID_home1", ""), ("note", "expect")]);
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: test\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nCookie: {}\r\nSec-Fetch-Site: same-origin\r\n\r\n",
            body.len(),
            paid()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = within("100 Continue", s.read(&mut buf)).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(&body).await.unwrap();
    let resp = within("answer", read_one_response(&mut s)).await;
    assert!(resp.contains(" 200 "), "{resp}");
    expected.push(Bytes::from(body));
    assert_eq!(*bodies.lock().unwrap(), expected);
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// 13. CSRF: same-site, the Origin fallback, WebSockets and CORS preflights.

const CSRF_CFG: &str = r#"
[csrf]
allowed_origins = ["https://admin.example.com"]

[[route]]
name = "account"
match = "/account/:path*"
require = { session = true }

[[route]]
name = "app"
match = "/:path*"
"#;

async fn post_with(h: &Harness, pairs: &[(&str, &str)]) -> u16 {
    let mut rb = h
        .client
        .post(h.url("/account/settings"))
        .header("cookie", paid())
        .body("x=1");
    for (k, v) in pairs {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn csrf_same_site_needs_the_flag_and_other_sites_fall_back_to_the_allow_list() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{CSRF_CFG}"),
        None,
    )
    .await;
    // a sibling subdomain is "same-site": not the same origin
    assert_eq!(post_with(&h, &[("sec-fetch-site", "same-site")]).await, 403);
    assert_eq!(
        post_with(
            &h,
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://blog.example.com")
            ]
        )
        .await,
        403
    );
    // an allowed origin on another site passes the allow-list check
    assert_eq!(
        post_with(
            &h,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://admin.example.com")
            ]
        )
        .await,
        200
    );
    assert_eq!(
        post_with(
            &h,
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example")
            ]
        )
        .await,
        403
    );
    assert_eq!(
        post_with(&h, &[("sec-fetch-site", "cross-site")]).await,
        403
    );
    assert_eq!(
        post_with(&h, &[("sec-fetch-site", "same-origin")]).await,
        200
    );
    assert!(h
        .metrics()
        .await
        .contains("rotagate_access_denied_total{reason=\"csrf\"} 4"));
    h.shutdown().await;

    // with csrf.allow_same_site = true, same-site passes
    let cfg = format!(
        "{JWT_SESSION}{}",
        CSRF_CFG.replace("[csrf]\n", "[csrf]\nallow_same_site = true\n")
    );
    let h = start(upstream_ok().await, &cfg, None).await;
    assert_eq!(post_with(&h, &[("sec-fetch-site", "same-site")]).await, 200);
    h.shutdown().await;
}

fn upgrade_request(addr: std::net::SocketAddr, origin: &str) -> String {
    format!(
        "GET /account/live HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nCookie: {}\r\n\r\n",
        paid()
    )
}

#[tokio::test]
async fn cross_site_websocket_upgrades_are_refused_on_session_routes() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{CSRF_CFG}"),
        None,
    )
    .await;
    let resp = within(
        "cross-site upgrade",
        raw(
            h.addr(),
            upgrade_request(h.addr(), "https://evil.example").as_bytes(),
        ),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(
        h.upstream.count(),
        0,
        "the hijacking handshake never reached the app"
    );
    // the page's own origin goes through to the app
    let own = format!("http://{}", h.addr());
    let resp = within(
        "same-origin upgrade",
        raw(h.addr(), upgrade_request(h.addr(), &own).as_bytes()),
    )
    .await;
    assert!(!resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(h.upstream.count(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn preflights_on_require_routes_carry_no_credentials_and_return_only_cors() {
    let up = upstream(Arc::new(|_req| {
        Box::pin(async {
            hyper::Response::builder()
                .status(200)
                .header("access-control-allow-origin", "https://app.example.com")
                .header("access-control-allow-methods", "POST")
                .header("vary", "Origin")
                .header("x-internal", "build-7")
                .header("set-cookie", "tracker=1; Path=/")
                .header("content-type", "text/plain")
                .body(full("upstream preflight body with account data"))
                .unwrap()
        })
    }))
    .await;
    let h = start(up, &format!("{JWT_SESSION}{CSRF_CFG}"), None).await;
    let r = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/account/settings"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("cookie", paid())
        .header("authorization", "Bearer secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = h.upstream.last();
    assert_eq!(seen.method, "OPTIONS");
    assert_eq!(seen.header("cookie"), None, "no Cookie upstream");
    assert_eq!(
        seen.header("authorization"),
        None,
        "no Authorization upstream"
    );
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(header(&r, "access-control-allow-methods"), "POST");
    assert_eq!(header(&r, "vary"), "Origin");
    assert_eq!(header(&r, "content-length"), "0");
    for name in ["x-internal", "set-cookie", "content-type"] {
        assert!(r.headers().get(name).is_none(), "{name} leaked");
    }
    assert_eq!(r.bytes().await.unwrap().len(), 0, "never the upstream body");
    // an OPTIONS without Origin is no preflight: the route's require applies
    let r = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/account/settings"))
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "anonymous non-preflight OPTIONS is refused"
    );
    assert_eq!(h.upstream.count(), 1);
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// The new keys are validated with located errors.

#[test]
fn new_keys_are_validated() {
    let parse = |extra: &str| {
        rotagate::config::parse(
            &format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n{extra}"),
            std::path::Path::new("t.toml"),
        )
    };
    let err = parse("[nextjs]\nlocales = [\"en\", \"fr\"]\ndefault_locale = \"de\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml:5:")
            && err.contains("`nextjs.default_locale`")
            && err.contains("expected one of `locales` (en, fr)"),
        "{err}"
    );
    let err = parse("[nextjs]\ndefault_locale = \"en\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs `locales`"), "{err}");
    let err = parse("[[route]]\nmatch = { source = \"/x\", locale = true }\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("route[0].match.locale") && err.contains("locale = false"),
        "{err}"
    );
    let cfg = parse("[nextjs]\nlocales = [\"fr\", \"en\"]\n").unwrap();
    assert_eq!(cfg.nextjs.default_locale, "fr");
    assert!(cfg
        .warnings
        .iter()
        .any(|w| w.contains("nextjs.default_locale is not set")));
    let cfg = parse("[nextjs]\nlocales = [\"fr\", \"en\"]\ndefault_locale = \"en\"\n").unwrap();
    assert_eq!(cfg.nextjs.default_locale, "en");
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let cfg = parse("[csrf]\nallow_same_site = true\n").unwrap();
    assert!(cfg.csrf.allow_same_site);
    assert!(!parse("").unwrap().csrf.allow_same_site, "off by default");
}

/// A Server Action posted to a route without session work (here `bypass`) but held to
/// an owner's `require`: the app gets only the cookie rotagate verified, and its answer
/// is never for shared caches — as on the owner's own route.
#[tokio::test]
async fn an_action_on_a_bypass_route_gets_one_truth_upstream_and_a_private_answer() {
    let up = upstream(Arc::new(|_req| {
        Box::pin(async {
            hyper::Response::builder()
                .status(200)
                .header("cache-control", "public, max-age=60")
                .header("cdn-cache-control", "max-age=600")
                .body(full("action result"))
                .unwrap()
        })
    }))
    .await;
    let m = manifest(&[("paid1", &["app/premium/page"])]);
    let h = start(up, &format!("{JWT_SESSION}{EVERY_CFG}"), Some(&m)).await;
    // a forged second `session` cookie rides along with the paid user's real one
    let forged = "session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.forged";
    let cookie = format!("{forged}; {}; other=1", paid());
    let r = post_action(&h, "/api/auth/signin", "paid1", Some(&cookie), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "private, max-age=60");
    assert!(r.headers().get("cdn-cache-control").is_none());
    let seen = h.upstream.last().header("cookie").unwrap_or_default();
    assert_eq!(seen, format!("{}; other=1", paid()), "{seen}");
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------
// Red-team follow-ups: Content-Type bytes, part headers and charsets, h2 preflights.

/// Posts `body` anonymously as a same-origin form navigation, with a Content-Type
/// given as raw bytes (it may hold bytes that are not ASCII).
async fn post_raw_type(
    h: &Harness,
    path: &str,
    content_type: &[u8],
    body: Vec<u8>,
) -> reqwest::Response {
    h.client
        .post(h.url(path))
        .header(
            "content-type",
            reqwest::header::HeaderValue::from_bytes(content_type).unwrap(),
        )
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_non_ascii_content_type_does_not_hide_a_form_action() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{FORM_CFG}"),
        Some(&form_manifest()),
    )
    .await;
    let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"$ACTION_ID_prem1\"\r\n\r\n\r\n--XyZ--\r\n";
    // Next checks `startsWith('multipart/form-data')` on the latin1 string: a form
    let r = post_raw_type(
        &h,
        "/",
        b"multipart/form-data; boundary=XyZ; x=\xe9",
        body.to_vec(),
    )
    .await;
    assert!(is_login_redirect(&r), "{} {:?}", r.status(), r.headers());
    // a boundary rotagate cannot read: the strictest action rule
    let r = post_raw_type(
        &h,
        "/",
        b"multipart/form-data; boundary=X\xe9Z",
        body.to_vec(),
    )
    .await;
    assert!(is_login_redirect(&r), "{} {:?}", r.status(), r.headers());
    // the public action with the same odd byte still works anonymously
    let public = b"--XyZ\r\nContent-Disposition: form-data; name=\"$ACTION_ID_home1\"\r\n\r\n\r\n--XyZ--\r\n";
    let r = post_raw_type(
        &h,
        "/",
        b"multipart/form-data; boundary=XyZ; x=\xe9",
        public.to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        h.upstream.count(),
        1,
        "only the public action reached the app"
    );
    h.shutdown().await;
}

/// One multipart part with extra part headers.
fn part(name: &str, headers: &str, value: &str) -> String {
    format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n{headers}\r\n{value}\r\n")
}

#[tokio::test]
async fn part_encodings_and_charsets_make_form_action_ids_unreadable() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{FORM_CFG}"),
        Some(&form_manifest()),
    )
    .await;
    let mp = b"multipart/form-data; boundary=XyZ";
    // Node 20's `Request.formData()` base64-decodes this value to {"id":"prem1"}
    // (checked with node); a reader that ignores the encoding sees "home1"
    let body = format!(
        "{}{}--XyZ--\r\n",
        part("$ACTION_REF_1", "", ""),
        part(
            "$ACTION_1:0",
            "Content-Transfer-Encoding: base64\r\n",
            r#"{"eyJpZCI6InByZW0xIn0=":0,"id":"home1"}"#
        )
    );
    let r = post_raw_type(&h, "/", mp, body.into_bytes()).await;
    assert!(
        is_login_redirect(&r),
        "base64 part: {} {:?}",
        r.status(),
        r.headers()
    );
    for headers in [
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "Content-Type: application/json; charset=utf-16le\r\n",
        "X-Odd: 1\r\n",
    ] {
        let body = format!(
            "{}{}--XyZ--\r\n",
            part("$ACTION_REF_1", "", ""),
            part("$ACTION_1:0", headers, r#"{"id":"home1"}"#)
        );
        let r = post_raw_type(&h, "/", mp, body.into_bytes()).await;
        assert!(
            is_login_redirect(&r),
            "{headers:?}: {} {:?}",
            r.status(),
            r.headers()
        );
    }
    // a urlencoded body in another charset: its ids cannot be read as UTF-8
    let utf16: Vec<u8> = "$ACTION_ID_prem1="
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let r = post_raw_type(
        &h,
        "/",
        b"application/x-www-form-urlencoded; charset=utf-16le",
        utf16,
    )
    .await;
    assert!(
        is_login_redirect(&r),
        "utf-16 urlencoded: {} {:?}",
        r.status(),
        r.headers()
    );
    assert_eq!(h.upstream.count(), 0, "none of them reached the app");
    // the harmless encodings a browser may name still read as usual
    let body = format!(
        "{}{}--XyZ--\r\n",
        part(
            "$ACTION_ID_home1",
            "Content-Transfer-Encoding: 8bit\r\n",
            ""
        ),
        part("note", "Content-Type: text/plain; charset=UTF-8\r\n", "hi")
    );
    assert_eq!(
        post_raw_type(&h, "/", mp, body.into_bytes()).await.status(),
        200
    );
    let r = post_raw_type(
        &h,
        "/",
        b"application/x-www-form-urlencoded; charset=utf-8",
        b"%24ACTION_ID_home1=".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn an_h2_options_with_a_body_but_no_length_is_no_preflight() {
    let h = start(
        upstream_ok().await,
        &format!("{JWT_SESSION}{CSRF_CFG}"),
        None,
    )
    .await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(b"x=1"))];
    let r = h2
        .request(reqwest::Method::OPTIONS, h.url("/account/settings"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        r.status(),
        401,
        "a body makes it no preflight: require applies"
    );
    assert_eq!(h.upstream.count(), 0, "the body never reached the app");
    // a real h2 preflight (no body) is still one
    let r = h2
        .request(reqwest::Method::OPTIONS, h.url("/account/settings"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.upstream.count(), 1);
    h.shutdown().await;
}
