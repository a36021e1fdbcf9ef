//! Protected and paid routes enforced at the edge (DESIGN §6, issue 6), end to end.

mod common;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

const SECRET: &str = "access-test-secret-access-test-secret-42";

const MANIFEST: &str = r#"{
  "node": {
    "aaa111": { "workers": { "app/premium/page": { "moduleId": 11, "async": false } }, "layer": { "app/premium/page": "action-browser" } },
    "bbb222": { "workers": { "app/page": { "moduleId": 12, "async": false } }, "layer": { "app/page": "action-browser" } }
  },
  "edge": {},
  "encryptionKey": "NEXT-ACTION-KEY-never-log-this-value"
}"#;

const CFG: &str = r#"
[session]
rotate_every = "5m"
[session.reissue]
cookie = "session"
[[session.reissue.keys]]
alg = "HS256"
secret = "file:secret"

[nextjs]
server_reference_manifest = "manifest.json"
unknown_actions = "deny"

[identity]
claim_headers = { "x-user-email" = "email", "x-user-plan" = "plan" }

[[route]]
name = "premium"
match = "/premium/:path*"
require = { claims = { has_access = true } }
on_deny = { redirect = "/pricing" }

[[route]]
name = "admin"
match = "/admin/:path*"
require = { claims = { roles = { contains = "admin" } } }
on_deny = { status = 403 }

[[route]]
name = "account"
match = "/account/:path*"
require = { session = true }

[[route]]
name = "app"
match = "/:path*"
"#;

fn token(claims: Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!(
        "{input}.{}",
        B64.encode(ring::hmac::sign(&key, input.as_bytes()))
    )
}

fn free() -> String {
    format!(
        "session={}",
        token(
            json!({"sub": "free-user", "email": "free@example.com", "plan": "free", "has_access": false, "roles": ["reader"], "iat": T0, "exp": T0 + 3600})
        )
    )
}

fn paid() -> String {
    format!(
        "session={}",
        token(
            json!({"sub": "paid-user", "email": "paid@example.com", "plan": "pro", "has_access": true, "roles": ["reader", "admin"], "iat": T0, "exp": T0 + 3600})
        )
    )
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("manifest.json"), MANIFEST).unwrap();
    let h = Harness::start_in(
        dir,
        upstream(Arc::new(|_req| {
            Box::pin(async { text(200, "from upstream") })
        }))
        .await,
        CFG,
    )
    .await;
    h.clock.set(T0 + 10);
    h
}

enum K {
    Nav,
    Fetch,
    Action(&'static str),
    Rsc,
}

async fn send(h: &Harness, path: &str, cookie: Option<&str>, kind: K) -> reqwest::Response {
    let rb = match kind {
        K::Nav => h
            .client
            .get(h.url(path))
            .header("sec-fetch-mode", "navigate"),
        K::Fetch => h
            .client
            .get(h.url(path))
            .header("accept", "application/json"),
        K::Rsc => h.client.get(h.url(path)).header("rsc", "1"),
        K::Action(id) => h
            .client
            .post(h.url(path))
            .header("next-action", id)
            .header("sec-fetch-site", "same-origin")
            .body("[]"),
    };
    let rb = match cookie {
        Some(c) => rb.header("cookie", c),
        None => rb,
    };
    rb.send().await.unwrap()
}

#[tokio::test]
async fn anonymous_free_and_paid_users_on_a_paid_route_by_request_kind() {
    let h = harness().await;
    // anonymous: the login answer, and the upstream never sees the request
    let r = send(&h, "/premium/report", None, K::Nav).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/login?callbackUrl=/premium/report")
    );
    let r = send(&h, "/premium/report", None, K::Fetch).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_expired");
    let r = send(&h, "/premium/report", None, K::Action("aaa111")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-action-redirect"],
        "/login?callbackUrl=/premium/report;replace"
    );
    let r = send(&h, "/premium/report", None, K::Rsc).await;
    assert_eq!(r.status(), 303);
    assert_eq!(h.upstream.count(), 0);

    // authenticated without the paid claim: on_deny = redirect /pricing, by kind
    let f = free();
    let r = send(&h, "/premium/report", Some(&f), K::Nav).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/pricing")
    );
    let r = send(&h, "/premium/report", Some(&f), K::Fetch).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "forbidden", "redirect": "/pricing"})
    );
    let r = send(&h, "/premium/report", Some(&f), K::Action("aaa111")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-action-redirect"], "/pricing;push");
    assert!(r.headers().get("location").is_none());
    assert_eq!(h.upstream.count(), 0);

    // with the claim: through
    let p = paid();
    for kind in [K::Nav, K::Fetch, K::Action("aaa111"), K::Rsc] {
        let r = send(&h, "/premium/report", Some(&p), kind).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "from upstream");
    }
    assert_eq!(h.upstream.count(), 4);
    h.shutdown().await;
}

#[tokio::test]
async fn status_denials_and_plain_session_requirements() {
    let h = harness().await;
    let f = free();
    let r = send(&h, "/admin/users", Some(&f), K::Nav).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let r = send(&h, "/admin/users", Some(&f), K::Action("zzz")).await;
    assert_eq!(
        r.status(),
        404,
        "unknown action ids are refused (unknown_actions = \"deny\")"
    );
    let r = h
        .client
        .post(h.url("/admin/users"))
        .header("next-action", "bbb222")
        .header("sec-fetch-site", "same-origin")
        .header("cookie", &f)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "forbidden");
    assert_eq!(
        send(&h, "/admin/users", Some(&paid()), K::Nav)
            .await
            .status(),
        200
    );
    // session = true: any valid session will do; an expired one is a login answer that deletes it
    assert_eq!(
        send(&h, "/account/me", Some(&f), K::Nav).await.status(),
        200
    );
    h.clock.set(T0 + 3600 + 60);
    let r = send(&h, "/account/me", Some(&f), K::Nav).await;
    assert_eq!(r.status(), 303);
    let sc: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        sc.iter()
            .any(|c| c.starts_with("session=; ") && c.contains("Max-Age=0")),
        "{sc:?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_paid_action_posted_to_another_page_is_still_refused() {
    let h = harness().await;
    let f = free();
    // the paid page's action id posted to the public home page
    let r = send(&h, "/", Some(&f), K::Action("aaa111")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-action-redirect"], "/pricing;push");
    let r = send(&h, "/some/static/page", None, K::Action("aaa111")).await;
    assert_eq!(
        r.headers()["x-action-redirect"],
        "/login?callbackUrl=/some/static/page;replace"
    );
    // the home page's own action is public
    assert_eq!(
        send(&h, "/", Some(&f), K::Action("bbb222"))
            .await
            .text()
            .await
            .unwrap(),
        "from upstream"
    );
    // without JavaScript the id is in the form body: held to the strictest action rule
    let r = h
        .client
        .post(h.url("/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .header("sec-fetch-mode", "navigate")
        .header("cookie", &f)
        .body("%24ACTION_ID_aaa111=&title=x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/pricing")
    );
    // and the paid user gets through
    assert_eq!(
        send(&h, "/", Some(&paid()), K::Action("aaa111"))
            .await
            .text()
            .await
            .unwrap(),
        "from upstream"
    );
    assert_eq!(h.upstream.count(), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn identity_headers_come_only_from_verified_sessions() {
    let h = harness().await;
    let spoof = |rb: reqwest::RequestBuilder| {
        rb.header("x-rotagate-subject", "admin")
            .header("x-user-email", "ceo@example.com")
            .header("x-user-plan", "enterprise")
    };
    spoof(h.client.get(h.url("/public"))).send().await.unwrap();
    let seen = h.upstream.last();
    for name in ["x-rotagate-subject", "x-user-email", "x-user-plan"] {
        assert!(seen.header(name).is_none(), "{name} spoofed through");
    }
    spoof(h.client.get(h.url("/public")).header("cookie", paid()))
        .send()
        .await
        .unwrap();
    let seen = h.upstream.last();
    assert_eq!(
        seen.header("x-rotagate-subject").as_deref(),
        Some("paid-user")
    );
    assert_eq!(
        seen.header("x-user-email").as_deref(),
        Some("paid@example.com")
    );
    assert_eq!(seen.header("x-user-plan").as_deref(), Some("pro"));
    h.shutdown().await;
}

#[tokio::test]
async fn csrf_on_session_routes_and_preflights_are_exempt() {
    let h = harness().await;
    let p = paid();
    let post = |extra: &[(&'static str, String)]| {
        let mut rb = h
            .client
            .post(h.url("/account/settings"))
            .header("cookie", &p)
            .body("x=1");
        for (k, v) in extra {
            rb = rb.header(*k, v.clone());
        }
        rb.send()
    };
    let r = post(&[("sec-fetch-site", "cross-site".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "csrf_rejected");
    assert_eq!(
        post(&[("origin", "https://evil.example".into())])
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(&[("origin", format!("http://{}", h.addr()))])
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(&[("sec-fetch-site", "same-origin".into())])
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(&[]).await.unwrap().status(),
        200,
        "non-browser clients without either header pass"
    );
    let pre = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/premium/x"))
        .header("access-control-request-method", "POST")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 200, "a preflight is not refused");
    assert!(h
        .metrics()
        .await
        .contains("rotagate_access_denied_total{reason=\"csrf\"} 2"));
    h.shutdown().await;
}

#[tokio::test]
async fn a_rotated_cookie_is_not_lost_on_a_denial() {
    let h = harness().await;
    h.clock.set(T0 + 600);
    let r = send(&h, "/premium/x", Some(&free()), K::Nav).await;
    assert_eq!(r.status(), 303);
    let sc: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        sc.iter()
            .any(|c| c.starts_with("session=ey") && c.contains("Max-Age=")),
        "{sc:?}"
    );
    h.shutdown().await;
}

#[test]
fn explain_shows_the_requirement_a_request_would_fail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("manifest.json"), MANIFEST).unwrap();
    let path = dir.path().join("rotagate.toml");
    std::fs::write(
        &path,
        format!("[upstream]\nurl = \"http://127.0.0.1:9\"\n{CFG}"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .arg("explain")
            .arg("-c")
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = run(&["GET", "/premium/x"]);
    assert!(out.contains("requires: claims has_access = true"), "{out}");
    assert!(
        out.contains("no session cookie: would get the login answer"),
        "{out}"
    );
    // explain reads the real clock: a token valid now
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cookie = format!(
        "cookie: session={}",
        token(json!({"sub": "free-user", "has_access": false, "iat": now, "exp": now + 3600}))
    );
    let out = run(&["GET", "/premium/x", "-H", &cookie]);
    assert!(
        out.contains("fails claims has_access = true: would get on_deny redirect /pricing"),
        "{out}"
    );
    let out = run(&["POST", "/", "-H", "next-action: aaa111"]);
    assert!(
        out.contains("Server Action aaa111 is defined by a page of route[0] \"premium\""),
        "{out}"
    );
    assert!(
        !out.contains("NEXT-ACTION-KEY"),
        "the manifest's key never appears"
    );
    assert!(!out.contains(SECRET));
}
