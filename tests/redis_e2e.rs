//! Vault sessions shared by two replicas through a real Redis (issue 12): a
//! `redis-server` of the test's own on an ephemeral loopback port (`--appendonly yes
//! --appendfsync always`, temp dir), two real proxies on it, a real upstream and a real
//! HTTP client. Redis is killed and restarted mid-run; waiting is always a poll on a
//! condition with a bounded deadline, never a sleep standing in for synchronisation.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const KEY: &str = "redis-e2e-vault-key-0123456789abcdef-0123456789";
/// Past `rotate_every = "5m"` with its ±10 % jitter.
const PAST_ROTATION: u64 = 331;

/// A `redis-server` child on a fixed loopback port and data directory.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// More arguments (TLS, `--replicaof`).
    extra: Vec<String>,
    /// The port speaks TLS only (`--port 0 --tls-port PORT`).
    tls: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    fn start() -> RedisServer {
        RedisServer::start_with(Vec::new(), false)
    }

    fn start_with(extra: Vec<String>, tls: bool) -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra,
            tls,
        };
        r.spawn(true);
        r
    }

    /// Starts the server on the same port; `persistent`: with the AOF of the data dir
    /// (fsync per write), else empty and without persistence.
    fn spawn(&mut self, persistent: bool) {
        let dir = if persistent {
            self.dir.path().to_path_buf()
        } else {
            let d = self.dir.path().join("volatile");
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let mut cmd = Command::new("redis-server");
        let port = self.port.to_string();
        if self.tls {
            cmd.args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--bind", "127.0.0.1", "--port", &port]);
        }
        cmd.args(&self.extra).arg("--dir").arg(&dir).args([
            "--save",
            "",
            "--protected-mode",
            "no",
            "--maxmemory-policy",
            "noeviction",
        ]);
        if persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: scripts/setup.sh installs Debian's redis-server");
        self.child = Some(child);
        if self.tls {
            poll("redis-server listens for TLS", || {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()
            });
            return;
        }
        poll("redis-server answers PING", || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
            use std::io::{Read, Write};
            s.write_all(b"PING\r\n").ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).ok()?;
            buf[..n].starts_with(b"+PONG").then_some(())
        });
    }

    /// SIGKILL: no shutdown save, only what the AOF already holds survives.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// One command through a plain client (to read counters, inject faults).
    async fn cmd(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.unwrap()
    }

    /// Calls of `command` since the last `CONFIG RESETSTAT` (`INFO commandstats`).
    async fn calls(&self, command: &str) -> u64 {
        let info: String = match self.cmd(&["INFO", "commandstats"]).await {
            redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
            redis::Value::VerbatimString { text, .. } => text,
            other => panic!("unexpected INFO answer {other:?}"),
        };
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it gives `Some`, for at most 20 s (bounded; fails the test then).
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`poll`].
async fn poll_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(upstream: SocketAddr, url: &str, session_extra: &str) -> String {
    format!(
        r#"[listen]
address = "127.0.0.1:0"

[upstream]
url = "http://{upstream}"

[admin]
address = "127.0.0.1:0"
token = "file:admin.token"

[session]
mode = "vault"
rotate_every = "5m"
idle_timeout = "30m"
absolute_timeout = "12h"
slack = "10s"
store = "{url}"
{session_extra}

[session.vault]
cookie = "rg"
capture = ["sid"]
secrets = ["file:vault.key"]

[[route]]
name = "public"
match = "/public/:path*"
bypass = true

[[route]]
name = "app"
match = "/app/:path*"
"#
    )
}

const ADMIN_TOKEN: &str = "redis-e2e-admin-token-0123";

/// The app: `/app/login?user=U` sets `sid`, everything else echoes the Cookie header.
async fn app() -> Upstream {
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    upstream(Arc::new(move |req| {
        let n = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let cookie = req
                .headers()
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let user = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("user="))
                .unwrap_or("ada")
                .to_string();
            let b = hyper::Response::builder()
                .status(200)
                .header("content-type", "text/plain");
            if req.uri().path() == "/app/login" {
                b.header(
                    "set-cookie",
                    format!("sid=sess-{user}-{n}; Path=/; HttpOnly; Max-Age=86400"),
                )
                .header("x-rotagate-claims", format!(r#"{{"sub":"{user}"}}"#))
                .body(full("logged in"))
                .unwrap()
            } else {
                b.body(full(cookie)).unwrap()
            }
        })
    }))
    .await
}

async fn replica(url: &str) -> Harness {
    replica_with(url, "", &[]).await
}

/// A replica with more `[session]` lines and files beside its config (a CA bundle).
async fn replica_with(url: &str, session_extra: &str, files: &[(&str, &[u8])]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.key"), KEY).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let up = app().await;
    let text = config(up.addr, url, session_extra);
    Harness::start_text(dir, up, &text).await
}

async fn get_with(h: &Harness, path: &str, handle: &str) -> reqwest::Response {
    h.client
        .get(h.url(path))
        .header("cookie", format!("rg={handle}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
}

async fn login(h: &Harness, user: &str) -> String {
    let r = h.get(&format!("/app/login?user={user}")).await;
    assert_eq!(r.status(), 200);
    set_value(&r, "rg").expect("the login answer sets the handle")
}

async fn store_status(h: &Harness) -> (u16, serde_json::Value) {
    let r = h.client.get(h.admin_url("/store")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn advance_both(a: &Harness, b: &Harness, secs: u64) {
    a.clock.advance(secs);
    b.clock.advance(secs);
}

#[tokio::test]
async fn fifty_requests_split_over_two_replicas_get_one_successor() {
    let redis = RedisServer::start();
    let (a, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
    // a login on one replica is a session on the other
    let h1 = login(&a, "ada").await;
    assert_eq!(
        get_with(&b, "/app/me", &h1).await.text().await.unwrap(),
        "sid=sess-ada-0"
    );
    advance_both(&a, &b, PAST_ROTATION);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let h = if i % 2 == 0 { &a } else { &b };
        let (c, url, h1) = (h.client.clone(), h.url("/app/page"), h1.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .get(url)
                .header("cookie", format!("rg={h1}"))
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
    let mut successors = std::collections::HashSet::new();
    for t in tasks {
        let (status, next, seen) = within("parallel request", t).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(seen, "sid=sess-ada-0", "every request had the session");
        successors.insert(next.expect("every answer carries the successor"));
    }
    assert_eq!(
        successors.len(),
        1,
        "one successor across both replicas: {successors:?}"
    );
    let h2 = successors.into_iter().next().unwrap();
    assert_ne!(h2, h1);
    let rotations: f64 = [&a, &b]
        .iter()
        .map(|h| async {
            metric_value(&h.metrics().await, "rotagate_vault_rotations_total").unwrap_or(0.0)
        })
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(rotations, 1.0, "exactly one replica rotated");
    // the successor works on both
    for h in [&a, &b] {
        assert_eq!(
            get_with(h, "/app/me", &h2).await.text().await.unwrap(),
            "sid=sess-ada-0"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn concurrent_local_requests_of_one_family_share_one_store_round_trip() {
    let redis = RedisServer::start();
    let a = replica(&redis.url()).await;
    let h1 = login(&a, "ada").await;
    a.clock.advance(PAST_ROTATION);
    redis.cmd(&["CONFIG", "RESETSTAT"]).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, url, h1) = (a.client.clone(), a.url("/app/page"), h1.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .get(url)
                .header("cookie", format!("rg={h1}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), set_value(&r, "rg"))
        }));
    }
    for t in tasks {
        let (status, next) = within("parallel request", t).await.unwrap();
        assert_eq!(status, 200);
        assert!(next.is_some());
    }
    let (reads, writes) = (redis.calls("hmget").await, redis.calls("evalsha").await);
    eprintln!("50 concurrent requests of one family: {reads} HMGET, {writes} EVALSHA");
    assert_eq!(writes, 1, "one rotation, one compare-and-swap");
    assert!(
        reads < 50,
        "{reads} reads for 50 requests: the single-flight folds them"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn a_revocation_through_one_replica_is_seen_by_the_other_at_once() {
    let redis = RedisServer::start();
    let (a, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
    let h1 = login(&a, "ada").await;
    let keep = login(&a, "bob").await;
    // b serves the session first (and so would have cached it, if it cached)
    assert_eq!(get_with(&b, "/app/me", &h1).await.status(), 200);
    let r = a
        .client
        .post(a.admin_url("/sessions/revoke"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(serde_json::json!({ "subject": "ada" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["revoked"], 1);
    let r = get_with(&b, "/app/me", &h1).await;
    assert_eq!(
        r.status(),
        303,
        "the other replica's next request is the logout"
    );
    assert!(deletes(&r, "rg"));
    // the subject index lists the tombstone on both replicas; bob is untouched
    let list = b
        .client
        .get(b.admin_url("/sessions?subject=ada"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(list["families"][0]["revoked"], "admin", "{list}");
    assert_eq!(
        get_with(&b, "/app/me", &keep).await.text().await.unwrap(),
        "sid=sess-bob-1"
    );
    // the family's key carries a TTL, so Redis drops it itself
    let keys = redis.cmd(&["KEYS", "rotagate:f:*"]).await;
    let redis::Value::Array(keys) = keys else {
        panic!("{keys:?}")
    };
    assert_eq!(keys.len(), 2);
    for k in keys {
        let redis::Value::BulkString(k) = k else {
            panic!()
        };
        let ttl = redis.cmd(&["TTL", std::str::from_utf8(&k).unwrap()]).await;
        assert!(matches!(ttl, redis::Value::Int(t) if t > 0), "{ttl:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_killed_and_restarted_gives_503s_then_recovers_with_no_session_lost() {
    let mut redis = RedisServer::start();
    let (a, b) = (replica(&redis.url()).await, replica(&redis.url()).await);
    let h1 = login(&a, "ada").await;
    advance_both(&a, &b, PAST_ROTATION);
    let h2 = set_value(&get_with(&b, "/app/page", &h1).await, "rg").unwrap();
    assert_eq!(store_status(&a).await.0, 200);

    redis.kill();
    for h in [&a, &b] {
        let r = get_with(h, "/app/page", &h2).await;
        assert_eq!(
            r.status(),
            503,
            "a request needing the session waits for the store"
        );
        assert!(
            set_cookies(&r).is_empty(),
            "nothing cleared: {:?}",
            set_cookies(&r)
        );
        // bypass routes and unmatched paths are still served, and so is every request
        // needing no session; on an unmatched path the request goes on without the
        // session (the app sees an anonymous visitor) and the browser keeps its handle
        assert_eq!(get_with(h, "/public/x", &h2).await.status(), 200);
        assert_eq!(h.get("/elsewhere").await.status(), 200);
        assert_eq!(h.get("/app/anonymous").await.status(), 200);
        let r = get_with(h, "/elsewhere", &h2).await;
        assert_eq!(r.status(), 200, "an unmatched path is served");
        assert!(
            set_cookies(&r).is_empty(),
            "nothing cleared: {:?}",
            set_cookies(&r)
        );
        assert_eq!(
            r.text().await.unwrap(),
            "",
            "neither the handle nor the app's cookies went upstream"
        );
        // a logout that cannot be recorded is not claimed: 503, nothing deleted
        let r = h
            .client
            .post(h.url("/.rotagate/logout"))
            .header("cookie", format!("rg={h2}"))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "a logout the store cannot record");
        assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));
        // /readyz stays ready; the store's state is reported
        let r = h.client.get(h.admin_url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let (code, body) = poll_async("store reported down", || async {
            let s = store_status(h).await;
            (s.0 == 503).then_some(s)
        })
        .await;
        assert_eq!(code, 503);
        assert!(
            body["reason"].as_str().unwrap().contains("127.0.0.1"),
            "{body}"
        );
        assert_eq!(
            metric_value(&h.metrics().await, "rotagate_store_up"),
            Some(0.0)
        );
    }

    redis.spawn(true);
    for h in [&a, &b] {
        poll_async("store back up", || async {
            (store_status(h).await.0 == 200).then_some(())
        })
        .await;
        assert_eq!(
            metric_value(&h.metrics().await, "rotagate_store_up"),
            Some(1.0)
        );
    }
    // the rotation written before the crash survived: the current handle works on both,
    // nobody was revoked, and the next rotation goes on from there
    for h in [&a, &b] {
        let r = get_with(h, "/app/page", &h2).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
    }
    advance_both(&a, &b, PAST_ROTATION);
    let r = get_with(&a, "/app/page", &h2).await;
    assert_eq!(r.status(), 200);
    let h3 = set_value(&r, "rg").expect("rotates again");
    assert_eq!(get_with(&b, "/app/page", &h3).await.status(), 200);
    for h in [&a, &b] {
        let m = h.metrics().await;
        assert_eq!(
            metric_value(&m, "rotagate_vault_revocations_total").unwrap_or(0.0),
            0.0
        );
        assert!(
            !m.contains("rotagate_vault_revocations_total{"),
            "no revocation: {m}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_redis_restart_without_persistence_is_reported_and_its_sessions_are_anonymous() {
    let mut redis = RedisServer::start();
    let a = replica(&redis.url()).await;
    let h1 = login(&a, "ada").await;
    assert_eq!(
        get_with(&a, "/app/me", &h1).await.text().await.unwrap(),
        "sid=sess-ada-0"
    );
    redis.kill();
    redis.spawn(false);
    let (code, body) = poll_async("data loss reported", || async {
        let s = store_status(&a).await;
        s.1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lost its data"))
            .then_some(s)
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        metric_value(&a.metrics().await, "rotagate_store_up"),
        Some(0.0)
    );
    assert_eq!(
        a.client
            .get(a.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // the lost session answers as anonymous: served, no app cookie, handle kept (no
    // revocation, no loop); a new login works
    let r = get_with(&a, "/app/me", &h1).await;
    assert_eq!(r.status(), 200);
    assert!(!deletes(&r, "rg"));
    assert_eq!(r.text().await.unwrap(), "");
    let again = login(&a, "ada").await;
    let seen = get_with(&a, "/app/me", &again).await.text().await.unwrap();
    assert!(
        seen.starts_with("sid=sess-ada-") && seen != "sid=sess-ada-0",
        "{seen}"
    );
    let m = a.metrics().await;
    assert!(
        !m.contains("rotagate_vault_revocations_total{"),
        "no revocation: {m}"
    );
    a.shutdown().await;
}

#[test]
fn a_password_inside_the_store_url_is_a_config_error_that_does_not_echo_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.key"), KEY).unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
    let text = config(
        "127.0.0.1:9".parse().unwrap(),
        "redis://app:hunter2secret@127.0.0.1:6379/0",
        "",
    );
    let path = dir.path().join("rotagate.toml");
    std::fs::write(&path, text).unwrap();
    let err = rotagate::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("rotagate.toml"), "{err}");
    assert!(err.contains("store_password"), "{err}");
    assert!(
        err.contains(":17:") || err.contains("line 17"),
        "names the line: {err}"
    );
    assert!(!err.contains("hunter2secret"), "{err}");
}

#[tokio::test]
async fn credentials_come_from_references_and_a_wrong_password_fails_start() {
    let mut redis = RedisServer::start();
    redis.kill();
    // a server that requires a password
    let port = redis.port;
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--requirepass", "s3cret-store-password"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    redis.child = Some(child);
    poll("redis-server listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let start = |password: &'static str| {
        let url = redis.url();
        async move {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("vault.key"), KEY).unwrap();
            std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
            std::fs::write(dir.path().join("redis.pass"), password).unwrap();
            let up = app().await;
            let text = config(up.addr, &url, "").replace(
                "slack = \"10s\"",
                "slack = \"10s\"\nstore_password = \"file:redis.pass\"",
            );
            let path = dir.path().join("rotagate.toml");
            std::fs::write(&path, text).unwrap();
            let cfg = rotagate::config::load(&path).unwrap();
            let opts = rotagate::server::StartOptions {
                clock: Arc::new(rotagate::clock::ManualClock::new(T0)),
                config_path: Some(path),
                drain_timeout: Duration::from_secs(5),
                watch: false,
            };
            rotagate::server::start(cfg, opts).await
        }
    };
    let Err(err) = start("wrong-password").await else {
        panic!("a refused password fails start");
    };
    let msg = format!("{err:#}");
    assert!(
        msg.contains("authentication") || msg.contains("WRONGPASS") || msg.contains("password"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-password"), "{msg}");
    let ok = start("s3cret-store-password")
        .await
        .expect("the right password starts");
    ok.shutdown().await;
}

#[test]
fn a_redis_cluster_node_is_refused_at_start_with_a_clear_message() {
    let mut redis = RedisServer::start();
    redis.kill();
    let port = redis.port;
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--cluster-enabled", "yes"])
        .arg("--cluster-config-file")
        .arg(redis.dir.path().join("nodes.conf"))
        .arg("--dir")
        .arg(redis.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    redis.child = Some(child);
    poll("redis-server listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let cfg =
        rotagate::store::StoreConfig::Redis(rotagate::store::redis::RedisConfig::new(redis.url()));
    let err = rotagate::store::open(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("Redis Cluster") && err.contains(&redis.url()),
        "{err}"
    );
}

#[tokio::test]
async fn the_store_keeps_the_compare_and_swap_contract_on_redis() {
    use rotagate::store::{Cas, FamilyId, FamilyRecord, Revocation, RevokeReason, Store};
    let redis = RedisServer::start();
    let cfg =
        rotagate::store::StoreConfig::Redis(rotagate::store::redis::RedisConfig::new(redis.url()));
    let clock = Arc::new(rotagate::clock::ManualClock::new(T0));
    let store: Arc<dyn Store> = rotagate::store::open_with_clock(&cfg, clock).unwrap();
    let rec = |subject: &str, created: u64| FamilyRecord::sample(Some(subject), created, 40);
    let (a, b) = (FamilyId([1; 16]), FamilyId([2; 16]));
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(
        store
            .compare_and_swap(&a, None, &rec("u1", T0))
            .await
            .unwrap(),
        Cas::Written(1)
    );
    assert_eq!(
        store
            .compare_and_swap(&a, None, &rec("u1", T0))
            .await
            .unwrap(),
        Cas::Conflict
    );
    let mut next = store.get(&a).await.unwrap().unwrap();
    assert_eq!(next.version, 1);
    next.generation = 1;
    assert_eq!(
        store.compare_and_swap(&a, Some(0), &next).await.unwrap(),
        Cas::Conflict
    );
    assert_eq!(
        store.compare_and_swap(&a, Some(1), &next).await.unwrap(),
        Cas::Written(2)
    );
    assert_eq!(store.get(&a).await.unwrap().unwrap().generation, 1);
    // subject index: newest first, follows a subject change
    store
        .compare_and_swap(&b, None, &rec("u1", T0 + 5))
        .await
        .unwrap();
    let ids: Vec<_> = store
        .by_subject("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec![b, a]);
    let mut moved = store.get(&b).await.unwrap().unwrap();
    moved.subject = Some("u2".into());
    store.compare_and_swap(&b, Some(1), &moved).await.unwrap();
    assert_eq!(store.by_subject("u1").await.unwrap().len(), 1);
    assert_eq!(store.by_subject("u2").await.unwrap()[0].0, b);
    // a tombstone lives until the absolute deadline; a live family until its idle end
    let mut dead = store.get(&a).await.unwrap().unwrap();
    dead.revoked = Some(Revocation {
        reason: RevokeReason::Admin,
        at: T0,
    });
    store.compare_and_swap(&a, Some(2), &dead).await.unwrap();
    let ttl = |k: String| {
        let r = &redis;
        async move {
            match r.cmd(&["TTL", &k]).await {
                redis::Value::Int(t) => t,
                other => panic!("{other:?}"),
            }
        }
    };
    let ta = ttl(format!("rotagate:f:{}", a.to_hex())).await;
    let tb = ttl(format!("rotagate:f:{}", b.to_hex())).await;
    assert!((43_190..=43_200).contains(&ta), "tombstone TTL {ta}");
    // b was created at T0 + 5: its idle end is T0 + 1805
    assert!((1_795..=1_805).contains(&tb), "live TTL {tb}");
    assert!(ttl("rotagate:s:u2".into()).await >= 1_790);
    // cleanup only counts (Redis expires by itself)
    assert_eq!(store.cleanup(T0).await.unwrap().live, 1);
    // a NOSCRIPT (script cache flushed) is reloaded on the fly
    redis.cmd(&["SCRIPT", "FLUSH"]).await;
    let cur = store.get(&b).await.unwrap().unwrap();
    assert_eq!(
        store
            .compare_and_swap(&b, Some(cur.version), &cur)
            .await
            .unwrap(),
        Cas::Written(cur.version + 1)
    );
}

/// A CA and a server certificate for 127.0.0.1 / localhost it signed, made now.
struct TestPki {
    ca: String,
    cert: String,
    key: String,
}

impl TestPki {
    fn new(ca_name: &str) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        TestPki {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// `redis-server` arguments serving this certificate (clients need none).
    fn redis_args(&self, dir: &std::path::Path) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, name, body) in [
            ("--tls-cert-file", "server.pem", &self.cert),
            ("--tls-key-file", "server.key", &self.key),
            ("--tls-ca-cert-file", "ca.pem", &self.ca),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, body).unwrap();
            args.push(flag.to_string());
            args.push(path.display().to_string());
        }
        args.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
        args
    }
}

#[tokio::test]
async fn a_tls_redis_signed_by_a_private_ca_keeps_sessions_and_an_untrusted_one_is_refused() {
    let pki = TestPki::new("rotagate test CA");
    let certs = tempfile::tempdir().unwrap();
    let redis = RedisServer::start_with(pki.redis_args(certs.path()), true);
    assert!(redis.url().starts_with("rediss://"));

    let a = replica_with(
        &redis.url(),
        r#"store_ca = "file:ca.pem""#,
        &[("ca.pem", pki.ca.as_bytes())],
    )
    .await;
    assert_eq!(store_status(&a).await.0, 200, "TLS to the store is up");
    let h1 = login(&a, "ada").await;
    a.clock.advance(PAST_ROTATION);
    let r = get_with(&a, "/app/page", &h1).await;
    assert_eq!(r.status(), 200);
    let h2 = set_value(&r, "rg").expect("rotated through the TLS store");
    assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
    assert_eq!(get_with(&a, "/app/page", &h2).await.status(), 200);

    // a replica trusting another CA (the built-in roots, or a stranger's bundle) never
    // talks to this server: the store is reported down, sessions answer 503, nothing
    // is cleared
    let other = TestPki::new("another CA");
    for (extra, files) in [
        ("", Vec::new()),
        (
            r#"store_ca = "file:ca.pem""#,
            vec![("ca.pem", other.ca.as_bytes())],
        ),
    ] {
        let b = replica_with(&redis.url(), extra, &files).await;
        let (code, body) = poll_async("the untrusted store reported down", || async {
            let s = store_status(&b).await;
            (s.0 == 503).then_some(s)
        })
        .await;
        assert_eq!(code, 503);
        let reason = body["reason"].as_str().unwrap().to_lowercase();
        assert!(
            reason.contains("certificate") || reason.contains("issuer"),
            "{body}"
        );
        let r = get_with(&b, "/app/page", &h2).await;
        assert_eq!(r.status(), 503);
        assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));
        b.shutdown().await;
    }
    // the handle still works where the store is trusted
    assert_eq!(get_with(&a, "/app/page", &h2).await.status(), 200);
    a.shutdown().await;
}

/// A `redis-server --sentinel` child watching `master` with quorum 1.
struct Sentinel {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 400\n\
                 sentinel failover-timeout mymaster 2000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        poll("the sentinel listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Sentinel {
            child,
            port,
            _dir: dir,
        }
    }

    async fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?;
        let mut c = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `INFO replication` of a server, as text.
async fn replication(r: &RedisServer) -> String {
    match r.cmd(&["INFO", "replication"]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("unexpected INFO answer {other:?}"),
    }
}

#[tokio::test]
async fn behind_sentinel_a_failover_moves_every_session_to_the_new_master() {
    let mut master = RedisServer::start();
    let replica_server = RedisServer::start_with(
        vec![
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            master.port.to_string(),
        ],
        false,
    );
    poll_async("the replica is in sync", || async {
        replication(&replica_server)
            .await
            .contains("master_link_status:up")
            .then_some(())
    })
    .await;
    let sentinel = Sentinel::start(master.port);
    // the sentinel learns the replica from the master (it can only fail over to one it knows)
    poll_async("the sentinel knows the replica", || async {
        match sentinel.cmd(&["SENTINEL", "replicas", "mymaster"]).await {
            Ok(redis::Value::Array(v)) if !v.is_empty() => Some(()),
            _ => None,
        }
    })
    .await;

    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster/0", sentinel.port);
    let (a, b) = (replica(&url).await, replica(&url).await);
    assert_eq!(
        store_status(&a).await.0,
        200,
        "the sentinel named the master"
    );
    let h1 = login(&a, "ada").await;
    advance_both(&a, &b, PAST_ROTATION);
    let h2 = set_value(&get_with(&b, "/app/page", &h1).await, "rg").expect("rotates");
    // the rotation reached the replica before the master dies (Redis replicates
    // asynchronously: a write the replica never got is lost in any failover)
    match master.cmd(&["WAIT", "1", "5000"]).await {
        redis::Value::Int(n) => assert_eq!(n, 1, "the replica acknowledged"),
        other => panic!("unexpected WAIT answer {other:?}"),
    }

    master.kill();
    // every answer until the failover is done is the session or a 503; never a logout
    let unavailable = std::sync::atomic::AtomicU32::new(0);
    for h in [&a, &b] {
        let (unavailable, h2) = (&unavailable, h2.as_str());
        poll_async("the session is served by the new master", || async move {
            let r = get_with(h, "/app/page", h2).await;
            assert!(
                set_cookies(&r).is_empty(),
                "nothing cleared: {:?}",
                set_cookies(&r)
            );
            match r.status().as_u16() {
                200 => {
                    assert_eq!(r.text().await.unwrap(), "sid=sess-ada-0");
                    Some(())
                }
                503 => {
                    unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                other => panic!("unexpected status {other}"),
            }
        })
        .await;
        assert_eq!(store_status(h).await.0, 200);
    }
    assert!(
        unavailable.into_inner() > 0,
        "the master's death was noticed (503s while it was down)"
    );
    let promoted = replication(&replica_server).await;
    assert!(promoted.contains("role:master"), "{promoted}");
    // rotation goes on, on the new master, seen by both replicas; nobody was revoked
    advance_both(&a, &b, PAST_ROTATION);
    let r = get_with(&a, "/app/page", &h2).await;
    assert_eq!(r.status(), 200);
    let h3 = set_value(&r, "rg").expect("rotates on the new master");
    assert_eq!(get_with(&b, "/app/page", &h3).await.status(), 200);
    for h in [&a, &b] {
        let m = h.metrics().await;
        assert!(
            !m.contains("rotagate_vault_revocations_total{"),
            "no revocation: {m}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn store_url_and_tls_keys_are_checked_with_their_line() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "redis://127.0.0.1:6379/0?password=PWLEAK7",
            "",
            "takes no query string or fragment",
        ),
        (
            "Redis://u:PWLEAK10@127.0.0.1:6379/0",
            "",
            "found an unsupported URL",
        ),
        (
            "redis://127.0.0.1:6379/0",
            r#"store_ca = "file:ca.pem""#,
            "applies to TLS stores only",
        ),
        (
            "rediss://127.0.0.1:6379/0",
            r#"store_ca = "file:ca.pem""#,
            "expected a PEM file of CA certificates",
        ),
        (
            "redis+sentinel://127.0.0.1:26379",
            "",
            "found no master name",
        ),
        ("redis+sentinel://127.0.0.1:0/m", "", "found the port \"0\""),
        (
            "redis://127.0.0.1:6379/0",
            r#"store_sentinel_password = "file:ca.pem""#,
            "applies to store = \"redis+sentinel://…\" only",
        ),
    ];
    for (url, extra, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vault.key"), KEY).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let path = dir.path().join("rotagate.toml");
        std::fs::write(&path, config("127.0.0.1:9".parse().unwrap(), url, extra)).unwrap();
        let err = rotagate::config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("rotagate.toml") && err.contains(want),
            "{url} {extra}: {err}"
        );
        assert!(
            err.contains(":17:") || err.contains(":18:"),
            "names the line: {err}"
        );
    }
}
