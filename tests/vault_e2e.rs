//! Vault mode through the real proxy (issue 11 point 6): a real upstream that logs users
//! in by setting its own `sid` cookie, the real proxy on loopback with a manual clock,
//! and a real HTTP client holding only what the browser would hold: the handle.

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::Notify;

/// Every log line the proxies of this test binary write (rotagate's own filter, with its
/// debug lines too), for the "nothing secret in logs" and security event checks.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogSink;
impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let filter = format!("{},rotagate=debug", rotagate::logging::DEFAULT_FILTER);
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(|| LogSink)
        .try_init();
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// Past `rotate_every = "5m"` with its ±10 % jitter.
const PAST_ROTATION: u64 = 331;

const KEY: &str = "vault-e2e-key-vault-e2e-key-0123456789abcdef";
const KEY2: &str = "vault-e2e-second-key-for-rollover-0123456789";

fn vault_config(upstream: std::net::SocketAddr, secrets: &str, admin_token: bool) -> String {
    let token = if admin_token {
        "token = \"file:admin.token\"\n"
    } else {
        ""
    };
    format!(
        r#"[listen]
address = "127.0.0.1:0"

[upstream]
url = "http://{upstream}"

[admin]
address = "127.0.0.1:0"
{token}
[session]
mode = "vault"
rotate_every = "5m"
idle_timeout = "30m"
absolute_timeout = "12h"
slack = "10s"
store = "memory"

[session.vault]
cookie = "rg"
capture = ["sid"]
secrets = [{secrets}]

[[route]]
name = "public"
match = "/public/:path*"
bypass = true

[[route]]
name = "paid"
match = "/paid/:path*"
require = {{ session = true, claims = {{ plan = "pro" }} }}

[[route]]
name = "app"
match = "/:path*"
"#
    )
}

const ADMIN_TOKEN: &str = "vault-e2e-admin-token-0123";

/// The test app: `/login?user=U` sets `sid` (with claims for rotagate), `/whoami`
/// answers with the `Cookie` header it received, `/logout-app` deletes `sid`,
/// `/refresh` re-sets `sid` for the same user, `/switch` sets it for another user,
/// `/api` answers 401 without a `sid`, `/hold` waits for `release`.
struct App {
    arrived: Arc<Notify>,
    release: Arc<Notify>,
}

fn resp(status: u16) -> http::response::Builder {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
}

async fn app() -> (Upstream, App) {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (a2, r2) = (arrived.clone(), release.clone());
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let up = upstream(Arc::new(move |req| {
        let (arrived, release, counter) = (a2.clone(), r2.clone(), counter.clone());
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let cookie = req
                .headers()
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let user = query.strip_prefix("user=").unwrap_or("ada").to_string();
            match path.as_str() {
                "/login" | "/switch" => resp(200)
                    .header(
                        "set-cookie",
                        format!("sid=sess-{user}-{n}; Path=/; HttpOnly; Max-Age=86400"),
                    )
                    .header("set-cookie", "theme=dark; Path=/")
                    .header(
                        "x-rotagate-claims",
                        format!(r#"{{"sub":"{user}","plan":"pro"}}"#),
                    )
                    .body(full("logged in"))
                    .unwrap(),
                // an app whose session id says nothing rotagate can read (no claims)
                "/login-opaque" => resp(200)
                    .header("set-cookie", format!("sid=opaque-{n}; Path=/; HttpOnly"))
                    .body(full("logged in"))
                    .unwrap(),
                "/refresh" => resp(200)
                    .header(
                        "set-cookie",
                        format!("sid=sess-{user}-refreshed-{n}; Path=/; HttpOnly"),
                    )
                    .body(full("refreshed"))
                    .unwrap(),
                "/cacheable" => resp(200)
                    .header("cache-control", "public, max-age=600")
                    .body(full(cookie))
                    .unwrap(),
                "/own-rg" => resp(200)
                    .header("set-cookie", "rg=the-apps-own; Path=/")
                    .body(full(cookie))
                    .unwrap(),
                "/logout-app" => resp(200)
                    .header("set-cookie", "sid=; Path=/; Max-Age=0")
                    .body(full("bye"))
                    .unwrap(),
                "/end" => resp(200)
                    .header("x-rotagate-logout", "1")
                    .body(full("ended"))
                    .unwrap(),
                "/rotate" => resp(200)
                    .header("x-rotagate-rotate", "1")
                    .header("x-rotagate-debug", "internal")
                    .body(full(cookie))
                    .unwrap(),
                "/api" if !cookie.contains("sid=") => resp(401).body(full("no session")).unwrap(),
                // the app's session died on its side; it also clears its cookie
                "/denied" => resp(401)
                    .header("set-cookie", "sid=; Path=/; Max-Age=0")
                    .body(full("denied"))
                    .unwrap(),
                "/hold" => {
                    arrived.notify_one();
                    release.notified().await;
                    resp(200).body(full(cookie)).unwrap()
                }
                _ => resp(200).body(full(cookie)).unwrap(),
            }
        })
    }))
    .await;
    (up, App { arrived, release })
}

async fn start_with(secrets: &[&str]) -> (Harness, App) {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut refs = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        std::fs::write(dir.path().join(format!("vault{i}.key")), s).unwrap();
        refs.push(format!("\"file:vault{i}.key\""));
    }
    std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
    let (up, app) = app().await;
    let text = vault_config(up.addr, &refs.join(", "), true);
    let h = Harness::start_text(dir, up, &text).await;
    (h, app)
}

async fn start() -> (Harness, App) {
    start_with(&[KEY]).await
}

async fn get_with(h: &Harness, path: &str, handle: &str) -> reqwest::Response {
    h.client
        .get(h.url(path))
        .header("cookie", format!("rg={handle}"))
        .send()
        .await
        .unwrap()
}

/// Logs `user` in and returns the handle the browser got.
async fn login(h: &Harness, user: &str) -> String {
    let r = h.get(&format!("/login?user={user}")).await;
    assert_eq!(r.status(), 200);
    set_value(&r, "rg").expect("the login answer sets the handle")
}

fn metric(text: &str, line_start: &str) -> f64 {
    metric_value(text, line_start).unwrap_or(0.0)
}

#[tokio::test]
async fn the_browser_holds_only_the_handle_and_the_app_gets_its_cookie() {
    let (h, _app) = start().await;
    let r = h.get("/login?user=ada").await;
    let lines = set_cookies(&r);
    // the app's own cookie is captured; its other cookies pass; the handle is added
    assert!(!lines.iter().any(|l| l.starts_with("sid=")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("theme=dark")),
        "{lines:?}"
    );
    let handle_line = lines.iter().find(|l| l.starts_with("rg=")).unwrap();
    for want in ["HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=1800"] {
        assert!(handle_line.contains(want), "{want} in {handle_line}");
    }
    assert!(
        !handle_line.contains("Secure"),
        "plain http origin: {handle_line}"
    );
    // control headers never reach the browser; the answer is not for shared caches
    assert!(r.headers().get("x-rotagate-claims").is_none());
    assert!(r
        .headers()
        .get("cache-control")
        .is_some_and(|v| v.to_str().unwrap().contains("private")));
    let handle = set_value(&r, "rg").unwrap();
    assert!(handle.starts_with("v1."), "{handle}");

    // next request: the handle stays here, the stored cookie goes upstream, and a `sid`
    // the client sends itself is never forwarded
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", format!("a=1; sid=forged; rg={handle}; b=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = r.text().await.unwrap();
    assert_eq!(seen, "a=1; b=2; sid=sess-ada-0");
    assert!(!seen.contains("rg="));
    // claims from x-rotagate-claims drive access rules
    assert_eq!(get_with(&h, "/paid/x", &handle).await.status(), 200);
    // the identity header carries the subject
    assert_eq!(
        h.upstream.last().header("x-rotagate-subject").as_deref(),
        Some("ada")
    );
    // without a handle: no session, a forged `sid` never reaches the app
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", "sid=forged; rg=v1.garbage")
        .send()
        .await
        .unwrap();
    assert!(deletes(&r, "rg"), "a handle that is not ours is deleted");
    assert_eq!(r.text().await.unwrap(), "");
    // bypass routes get neither the app's cookie nor the handle
    let r = get_with(&h, "/public/x", &handle).await;
    assert_eq!(r.text().await.unwrap(), "");
    h.shutdown().await;
}

#[tokio::test]
async fn fifty_parallel_requests_at_the_rotation_instant_get_one_successor() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url, h1) = (h.client.clone(), h.url("/whoami"), h1.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .get(url)
                .header("cookie", format!("rg={h1}"))
                .send()
                .await
                .unwrap();
            let next = set_value(&r, "rg");
            (r.status().as_u16(), next, r.text().await.unwrap())
        }));
    }
    let mut successors = std::collections::HashSet::new();
    for t in tasks {
        let (status, next, seen) = within("parallel request", t).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(seen, "sid=sess-ada-0", "every request had the session");
        successors.insert(next.expect("every answer carries the successor"));
    }
    assert_eq!(successors.len(), 1, "byte-identical successor for all");
    assert!(!successors.contains(&h1));
    let m = h.metrics().await;
    assert_eq!(metric(&m, "rotagate_vault_rotations_total"), 1.0);
    h.shutdown().await;
}

#[tokio::test]
async fn a_nextjs_fan_out_with_the_old_handle_after_rotation_stays_logged_in() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    // the navigation rotates; the browser stores the successor and uses it at once
    let r = get_with(&h, "/page", &h1).await;
    let h2 = set_value(&r, "rg").unwrap();
    assert_eq!(get_with(&h, "/page", &h2).await.status(), 200);
    // … while the 8 RSC/data requests it fanned out left with the old handle
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (c, url, h1) = (h.client.clone(), h.url(&format!("/rsc/{i}")), h1.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .get(url)
                .header("cookie", format!("rg={h1}"))
                .header("rsc", "1")
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                set_value(&r, "rg"),
                r.text().await.unwrap(),
            )
        }));
    }
    for t in tasks {
        let (status, next, seen) = within("fan-out", t).await.unwrap();
        assert_eq!((status, seen.as_str()), (200, "sid=sess-ada-0"));
        assert_eq!(
            next.as_deref(),
            Some(h2.as_str()),
            "the same successor again"
        );
    }
    assert_eq!(
        get_with(&h, "/page", &h2).await.text().await.unwrap(),
        "sid=sess-ada-0"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rotagate_vault_predecessor_accepts_total{window=\"slack\"}"
        ),
        8.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_lost_rotation_response_and_20_idle_minutes_still_work() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    let lost = set_value(&get_with(&h, "/page", &h1).await, "rg").unwrap();
    // the browser never got `lost`; it comes back 20 minutes later with the old handle
    h.clock.advance(20 * 60);
    let r = get_with(&h, "/page", &h1).await;
    assert_eq!(r.status(), 200);
    assert_eq!(set_value(&r, "rg").as_deref(), Some(lost.as_str()));
    assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rotagate_vault_predecessor_accepts_total{window=\"unseen\"}"
        ),
        1.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_replay_after_the_successor_was_seen_and_slack_passed_revokes_the_family() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    let h2 = set_value(&get_with(&h, "/page", &h1).await, "rg").unwrap();
    assert_eq!(get_with(&h, "/page", &h2).await.status(), 200);
    h.clock.advance(11);
    // the thief replays the old handle: the navigation gets the logout answer
    let r = h
        .client
        .get(h.url("/page"))
        .header("cookie", format!("rg={h1}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers().get("location").unwrap(),
        "/login?callbackUrl=/page"
    );
    assert!(deletes(&r, "rg"));
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    // the user's next request (current handle) gets the logout answer too
    let r = h
        .client
        .get(h.url("/api/me"))
        .header("cookie", format!("rg={h2}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(deletes(&r, "rg"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "session_expired");
    let n = h.upstream.count();
    let m = h.metrics().await;
    assert_eq!(metric(&m, "rotagate_vault_reuse_detected_total"), 1.0);
    assert_eq!(
        metric(&m, "rotagate_vault_revocations_total{reason=\"reuse\"}"),
        1.0
    );
    assert!(!m.contains(&h1) && !m.contains(&h2), "no handle in metrics");
    // the app never saw the replayed requests
    assert_eq!(n, 3);
    // one security event names the login and the user; no log line holds a secret
    let log = logs();
    let event = log
        .lines()
        .find(|l| l.contains("vault_reuse_detected") && l.contains("\"subject\":\"ada\""))
        .unwrap_or_else(|| panic!("no security event in {log}"));
    assert!(event.contains("\"level\":\"WARN\""), "{event}");
    assert!(
        event.contains("\"target\":\"rotagate::security\""),
        "{event}"
    );
    for secret in [h1.as_str(), h2.as_str(), "sess-ada", KEY] {
        assert!(!log.contains(secret), "a secret in the logs");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_thief_keeping_an_idle_session_alive_is_caught_when_the_user_comes_back() {
    let (h, _app) = start().await;
    let user = login(&h, "ada").await;
    // the user walks away; the thief, holding a copy, keeps the session alive
    let mut thief = user.clone();
    for _ in 0..4 {
        h.clock.advance(PAST_ROTATION);
        let r = get_with(&h, "/page", &thief).await;
        assert_eq!(r.status(), 200);
        if let Some(next) = set_value(&r, "rg") {
            thief = next;
        }
    }
    assert_ne!(thief, user);
    // the user comes back with the handle they hold: a reuse, the family is revoked
    let r = h
        .client
        .get(h.url("/page"))
        .header("cookie", format!("rg={user}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    // and the thief is out
    let r = h
        .client
        .get(h.url("/page"))
        .header("cookie", format!("rg={thief}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        metric(&h.metrics().await, "rotagate_vault_reuse_detected_total"),
        1.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_out_of_order_stale_set_cookie_is_suppressed() {
    let (h, app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    // request A rotates to generation 2 and is held at the app
    let (c, url, a1) = (h.client.clone(), h.url("/hold"), h1.clone());
    let a = tokio::spawn(async move {
        c.get(url)
            .header("cookie", format!("rg={a1}"))
            .send()
            .await
            .unwrap()
    });
    within("A reaches the app", app.arrived.notified()).await;
    // request B (same old handle) gets the same successor and comes back first
    let h2 = set_value(&get_with(&h, "/page", &h1).await, "rg").unwrap();
    // the browser moves on: generation 3
    h.clock.advance(PAST_ROTATION);
    let h3 = set_value(&get_with(&h, "/page", &h2).await, "rg").unwrap();
    assert_ne!(h2, h3);
    // A's answer arrives last: it must not set generation 2 again
    app.release.notify_one();
    let r = within("A answers", a).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(set_value(&r, "rg"), None, "{:?}", set_cookies(&r));
    assert_eq!(
        metric(
            &h.metrics().await,
            "rotagate_vault_handle_withheld_total{why=\"stale\"}"
        ),
        1.0
    );
    assert_eq!(get_with(&h, "/page", &h3).await.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn key_rollover_with_live_families_logs_nobody_out() {
    let (h, _app) = start_with(&[KEY]).await;
    let old = login(&h, "ada").await;
    // the new key goes first, the old one stays to verify
    std::fs::write(h.dir.path().join("vault1.key"), KEY).unwrap();
    std::fs::write(h.dir.path().join("vault0.key"), KEY2).unwrap();
    let text = std::fs::read_to_string(&h.config_path).unwrap().replace(
        "\"file:vault0.key\"]",
        "\"file:vault0.key\", \"file:vault1.key\"]",
    );
    std::fs::write(&h.config_path, text).unwrap();
    h.proxy().shared.reload().await.unwrap();
    let r = get_with(&h, "/page", &old).await;
    assert_eq!(
        r.text().await.unwrap(),
        "sid=sess-ada-0",
        "the old key still verifies"
    );
    // the next rotation re-mints under the new key …
    h.clock.advance(PAST_ROTATION);
    let new = set_value(&get_with(&h, "/page", &old).await, "rg").unwrap();
    // … so the old key can go
    let text = std::fs::read_to_string(&h.config_path)
        .unwrap()
        .replace(", \"file:vault1.key\"]", "]");
    std::fs::write(&h.config_path, text).unwrap();
    h.proxy().shared.reload().await.unwrap();
    let r = get_with(&h, "/page", &new).await;
    assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
    // a handle only the retired key made is no session now (and nobody was revoked)
    let r = get_with(&h, "/page", &old).await;
    assert_eq!(r.text().await.unwrap(), "");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "rotagate_vault_reuse_detected_total"), 0.0);
    h.shutdown().await;
}

#[tokio::test]
async fn app_updates_logout_and_subject_changes() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    // the app refreshes its cookie: the record follows, the handle stays
    let r = get_with(&h, "/refresh", &h1).await;
    assert!(set_cookies(&r).iter().all(|l| !l.starts_with("sid=")));
    assert_eq!(set_value(&r, "rg"), None);
    let seen = get_with(&h, "/whoami", &h1).await.text().await.unwrap();
    assert!(seen.starts_with("sid=sess-ada-refreshed-"), "{seen}");
    // another user logs in on this browser: a new family, never the old one
    let r = get_with(&h, "/switch?user=bob", &h1).await;
    let bob = set_value(&r, "rg").expect("a new family's handle");
    assert_ne!(bob, h1);
    assert!(get_with(&h, "/whoami", &bob)
        .await
        .text()
        .await
        .unwrap()
        .starts_with("sid=sess-bob-"));
    // the app deletes its cookie: the family is revoked, the handle deleted
    let r = get_with(&h, "/logout-app", &bob).await;
    assert!(deletes(&r, "rg"), "{:?}", set_cookies(&r));
    assert!(!set_cookies(&r).iter().any(|l| l.starts_with("sid=")));
    assert_eq!(
        h.client
            .get(h.url("/whoami"))
            .header("cookie", format!("rg={bob}"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    // x-rotagate-logout ends a session too, and is never shown to the browser
    let carol = login(&h, "carol").await;
    let r = get_with(&h, "/end", &carol).await;
    assert!(r.headers().get("x-rotagate-logout").is_none());
    assert!(deletes(&r, "rg"));
    // x-rotagate-rotate rotates now
    let dave = login(&h, "dave").await;
    let r = get_with(&h, "/rotate", &dave).await;
    let next = set_value(&r, "rg").expect("rotated on the app's word");
    assert_ne!(next, dave);
    assert!(r.headers().get("x-rotagate-rotate").is_none());
    assert!(
        r.headers().get("x-rotagate-debug").is_none(),
        "rotagate's header namespace never reaches the browser"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rotagate_vault_revocations_total{reason=\"app_logout\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "rotagate_vault_revocations_total{reason=\"subject_changed\"}"
        ),
        1.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn an_upstream_401_logs_out_and_revokes_the_family() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    assert_eq!(
        get_with(&h, "/api", &h1).await.status(),
        200,
        "the app sees its cookie"
    );
    // the app rejects the session on its side: the 401 becomes the logout answer …
    let r = h
        .client
        .get(h.url("/denied"))
        .header("cookie", format!("rg={h1}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(deletes(&r, "rg"));
    assert_eq!(
        set_value(&r, "sid"),
        None,
        "the app's cookie never reaches the browser"
    );
    // … and the login is over server-side too: the handle is no session any more
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", format!("rg={h1}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "rotagate_vault_revocations_total{reason=\"logout\"}"),
        1.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn prefetches_and_websocket_upgrades_never_rotate() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    let r = h
        .client
        .get(h.url("/page"))
        .header("cookie", format!("rg={h1}"))
        .header("next-router-prefetch", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(set_value(&r, "rg"), None, "no rotation on a prefetch");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "rotagate_vault_rotations_total"), 0.0);
    let r = get_with(&h, "/page", &h1).await;
    assert!(set_value(&r, "rg").is_some(), "the navigation rotates");
    h.shutdown().await;
}

#[tokio::test]
async fn adopting_a_cookie_from_before_vault_mode_happens_once() {
    let (h, _app) = start().await;
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", "sid=pre-vault-session")
        .send()
        .await
        .unwrap();
    let handle = set_value(&r, "rg").expect("adopted into a new family");
    assert!(deletes(&r, "sid"), "the browser's copy goes away");
    assert_eq!(r.text().await.unwrap(), "sid=pre-vault-session");
    assert_eq!(
        get_with(&h, "/whoami", &handle).await.text().await.unwrap(),
        "sid=pre-vault-session"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "rotagate_vault_logins_total{how=\"adopted\"}"),
        1.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn the_sessions_api_lists_and_revokes_only_for_the_operator() {
    let (h, _app) = start().await;
    let a1 = login(&h, "ada").await;
    let a2 = login(&h, "ada").await;
    let b = login(&h, "bob").await;
    let c = &h.client;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    // no token, a wrong one, or a browser: refused
    let list = h.admin_url("/sessions?subject=ada");
    assert_eq!(c.get(&list).send().await.unwrap().status(), 401);
    assert_eq!(
        c.get(&list)
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for (k, v) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = c
            .get(&list)
            .header("authorization", &auth)
            .header(k, v)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{k}");
    }
    let r = c
        .get(&list)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for secret in [a1.as_str(), a2.as_str(), "sess-ada"] {
        assert!(!text.contains(secret), "no secrets listed: {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let families = v["families"].as_array().unwrap();
    assert_eq!(families.len(), 2);
    for f in families {
        assert!(f["generation"].as_u64().is_some());
        assert!(f["created"].as_u64().is_some() && f["last_seen"].as_u64().is_some());
    }
    // revoke one family by id, then every login of bob by subject (the CLI does this)
    let id = families[0]["id"].as_str().unwrap().to_string();
    let r = c
        .post(h.admin_url("/sessions/revoke"))
        .header("authorization", &auth)
        .body(serde_json::json!({ "family": id }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["revoked"], 1);
    let alive: Vec<bool> = futures_util::future::join_all([&a1, &a2].map(|hd| async {
        get_with(&h, "/whoami", hd)
            .await
            .text()
            .await
            .unwrap()
            .starts_with("sid=sess-ada")
    }))
    .await;
    assert_eq!(
        alive.iter().filter(|a| **a).count(),
        1,
        "one of ada's logins ended"
    );

    // the CLI reads the admin address and token from a config file
    let cli_cfg = h.dir.path().join("cli.toml");
    let text = std::fs::read_to_string(&h.config_path).unwrap().replacen(
        "[admin]\naddress = \"127.0.0.1:0\"",
        &format!("[admin]\naddress = \"{}\"", h.proxy().admin_addr.unwrap()),
        1,
    );
    std::fs::write(&cli_cfg, text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["sessions", "revoke", "--subject", "bob", "-c"])
        .arg(&cli_cfg)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"revoked\":1"), "{stdout}");
    assert!(!stdout.contains(ADMIN_TOKEN));
    let r = get_with(&h, "/whoami", &b).await;
    assert_eq!(r.status(), 401, "bob's login is over");
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "rotagate_vault_revocations_total{reason=\"admin\"}"),
        2.0
    );
    h.shutdown().await;
}

#[tokio::test]
async fn without_an_admin_token_the_sessions_api_is_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault0.key"), KEY).unwrap();
    let (up, _app) = app().await;
    let text = vault_config(up.addr, "\"file:vault0.key\"", false);
    let h = Harness::start_text(dir, up, &text).await;
    let r = h
        .client
        .get(h.admin_url("/sessions?subject=ada"))
        .header("authorization", "Bearer anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    h.shutdown().await;
}

#[tokio::test]
async fn hardening_rules_hold_on_the_vault_path() {
    let (h, _app) = start().await;
    let h1 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    // no storable secrets: a cacheable answer that carries the rotated handle is private
    let r = get_with(&h, "/cacheable", &h1).await;
    let h2 = set_value(&r, "rg").expect("rotated");
    let cc = r.headers().get("cache-control").unwrap().to_str().unwrap();
    assert!(cc.contains("private") && !cc.contains("public"), "{cc}");
    // the app wins: a cookie of the handle's name set by the app suppresses rotagate's
    h.clock.advance(PAST_ROTATION);
    let r = get_with(&h, "/own-rg", &h2).await;
    let lines = set_cookies(&r);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("rg=")).count(),
        1,
        "{lines:?}"
    );
    assert!(lines[0].starts_with("rg=the-apps-own"), "{lines:?}");
    let m = h.metrics().await;
    assert_eq!(
        metric(
            &m,
            "rotagate_vault_handle_withheld_total{why=\"app_cookie_won\"}"
        ),
        1.0
    );
    // the browser still holds h2, whose successor it never saw: still a session
    let r = get_with(&h, "/whoami", &h2).await;
    let h3 = set_value(&r, "rg").expect("the successor it missed");
    assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
    // one truth upstream: a bogus copy of the handle next to the real one changes
    // nothing, and no copy goes upstream
    let r = h
        .client
        .get(h.url("/whoami"))
        .header(
            "cookie",
            format!("rg=v1.bogus; x=1; rg={h3}; __Host-rg=t; rg.0=q"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "x=1; sid=sess-ada-0");
    // bounded work: the cookies past the limit are neither read nor forwarded
    let mut many = format!("rg={h3}");
    for i in 0..300 {
        many.push_str(&format!("; c{i}=v"));
    }
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", many)
        .send()
        .await
        .unwrap();
    let seen = r.text().await.unwrap();
    assert!(
        seen.ends_with("sid=sess-ada-0") && !seen.contains("c299="),
        "{seen}"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "rotagate_session_events_total{event=\"cookie_limit\"}"),
        1.0
    );
    h.shutdown().await;
}

/// An unsigned JWT naming whoever the client likes.
fn forged_jwt(claims: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.",
        b.encode(r#"{"alg":"none","typ":"JWT"}"#),
        b.encode(claims)
    )
}

#[tokio::test]
async fn an_adopted_cookie_is_believed_for_nothing() {
    // red team F1: a pre-vault cookie comes from the client, so its payload names no one
    let (h, _app) = start().await;
    let forged = forged_jwt(r#"{"sub":"admin","plan":"pro"}"#);
    let r = h
        .client
        .get(h.url("/paid/report"))
        .header("cookie", format!("sid={forged}"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "a forged claim opened a paid route");
    // adopted on an open page, the family still carries no claims onto the paid one
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", format!("sid={forged}"))
        .send()
        .await
        .unwrap();
    let handle = set_value(&r, "rg").expect("adopted");
    assert_ne!(get_with(&h, "/paid/report", &handle).await.status(), 200);
    // the control: claims the app itself sent do open it
    let ada = login(&h, "ada").await;
    assert_eq!(get_with(&h, "/paid/report", &ada).await.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn an_opaque_login_on_a_planted_handle_starts_a_new_family() {
    // red team F2: the attacker plants their own handle, the victim logs in on it
    let (h, _app) = start().await;
    let r = h.get("/login-opaque").await;
    let planted = set_value(&r, "rg").expect("the attacker's own login");
    let r = get_with(&h, "/login-opaque", &planted).await;
    let victims = set_value(&r, "rg").expect("the victim's login gets a handle of its own");
    assert_ne!(victims, planted);
    let seen_by_attacker = get_with(&h, "/whoami", &planted)
        .await
        .text()
        .await
        .unwrap();
    let seen_by_victim = get_with(&h, "/whoami", &victims)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        seen_by_attacker, "sid=opaque-0",
        "the attacker's handle got the victim's session"
    );
    assert_eq!(seen_by_victim, "sid=opaque-1");
    h.shutdown().await;
}

#[tokio::test]
async fn a_junk_copy_of_the_handle_does_not_delete_the_live_one() {
    // red team F4: a Max-Age=0 names a cookie, not a value
    let (h, _app) = start().await;
    let ada = login(&h, "ada").await;
    let r = h
        .client
        .get(h.url("/whoami"))
        .header("cookie", format!("rg=junk; rg={ada}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!deletes(&r, "rg"), "{:?}", set_cookies(&r));
    assert!(r.text().await.unwrap().starts_with("sid=sess-ada-"));
    // alone, the junk handle is deleted as before
    let r = get_with(&h, "/whoami", "junk").await;
    assert!(deletes(&r, "rg"));
    h.shutdown().await;
}

#[tokio::test]
async fn an_app_rotation_answered_to_a_predecessor_revokes_nobody() {
    // red team F9: parallel requests on the old handle, one of them asks to rotate
    let (h, _app) = start().await;
    let h0 = login(&h, "ada").await;
    h.clock.advance(PAST_ROTATION);
    let h1 = set_value(&get_with(&h, "/page", &h0).await, "rg").expect("rotated");
    assert_eq!(get_with(&h, "/page", &h1).await.status(), 200); // successor seen
    let r = get_with(&h, "/rotate", &h0).await; // a sibling still on h0, within slack
    assert_eq!(r.status(), 200);
    assert_eq!(set_value(&r, "rg").as_deref(), Some(h1.as_str()));
    let r = get_with(&h, "/page", &h0).await; // another sibling
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
    let m = h.metrics().await;
    assert_eq!(
        metric(&m, "rotagate_vault_revocations_total{reason=\"reuse\"}"),
        0.0
    );
    // the current handle still rotates on the app's word
    let r = get_with(&h, "/rotate", &h1).await;
    assert_ne!(set_value(&r, "rg").expect("rotated on the app's word"), h1);
    h.shutdown().await;
}
