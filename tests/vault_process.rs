//! Vault mode on the embedded store with the real `rotagate run` binary: a restart keeps
//! every session, `kill -9` in the middle of rotating load loses no rotation whose
//! `Set-Cookie` left, and a corrupted store file fails start-up naming the file.
//! Synchronisation is on the process's own output and exit, never on sleeps.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::*;

const KEY: &str = "vault-process-key-vault-process-key-0123456";

struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Proc {
    fn start(config: &std::path::Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let proxy = line
            .trim()
            .strip_prefix("rotagate: proxy listening on http://")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .parse()
            .unwrap();
        let text = std::fs::read_to_string(config).unwrap();
        let admin = text.contains("[admin]").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix("rotagate: admin listening on http://")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .unwrap()
        });
        // keep reading stdout so the process never blocks on a full pipe
        std::thread::spawn(move || for _ in out.lines() {});
        Proc {
            child,
            proxy,
            admin,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// SIGTERM, then wait for the drain to finish and the process to exit.
    fn stop(mut self) {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(self.child.wait().unwrap().success());
    }

    /// `kill -9`: no drain, no close of the store.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An app that logs in (`/login?user=U` sets `sid`) and echoes the `Cookie` it got.
async fn app() -> Upstream {
    upstream(Arc::new(|req| {
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
            if req.uri().path() == "/login" {
                return hyper::Response::builder()
                    .header("set-cookie", format!("sid=sess-{user}; Path=/; HttpOnly"))
                    .header("x-rotagate-claims", format!(r#"{{"sub":"{user}"}}"#))
                    .body(full("in"))
                    .unwrap();
            }
            hyper::Response::builder().body(full(cookie)).unwrap()
        })
    }))
    .await
}

fn write_config(
    dir: &std::path::Path,
    upstream: SocketAddr,
    rotate_every: &str,
) -> std::path::PathBuf {
    std::fs::write(dir.join("vault.key"), KEY).unwrap();
    let p = dir.join("rotagate.toml");
    std::fs::write(
        &p,
        format!(
            r#"[listen]
address = "127.0.0.1:0"

[upstream]
url = "http://{upstream}"

[session]
mode = "vault"
rotate_every = "{rotate_every}"
store = "embedded"
store_path = "data/sessions.redb"

[session.vault]
capture = ["sid"]
secrets = ["file:vault.key"]

[[route]]
name = "app"
match = "/:path*"
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    p
}

fn handle_of(resp: &reqwest::Response) -> Option<String> {
    set_cookies(resp).iter().find_map(|l| {
        let v = l.strip_prefix("rg=")?.split(';').next()?;
        (!v.is_empty()).then(|| v.to_string())
    })
}

async fn seen_with(c: &reqwest::Client, p: &Proc, handle: &str) -> (String, Option<String>) {
    let r = c
        .get(p.url("/page"))
        .header("cookie", format!("rg={handle}"))
        .send()
        .await
        .unwrap();
    let next = handle_of(&r);
    (r.text().await.unwrap(), next)
}

#[tokio::test]
async fn a_restart_on_the_embedded_store_keeps_every_session() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), up.addr, "5m");
    let c = client();
    let p = Proc::start(&cfg);
    let mut handles = Vec::new();
    for user in ["ada", "bob", "cy", "dee", "eve"] {
        let r = c
            .get(p.url(&format!("/login?user={user}")))
            .send()
            .await
            .unwrap();
        handles.push((user, handle_of(&r).expect("a handle")));
    }
    p.stop();
    assert!(dir.path().join("data/sessions.redb").exists());
    let p = Proc::start(&cfg);
    for (user, h) in &handles {
        let (seen, _) = seen_with(&c, &p, h).await;
        assert_eq!(
            seen,
            format!("sid=sess-{user}"),
            "{user}'s session survived"
        );
    }
    p.stop();
}

#[tokio::test]
async fn kill_9_in_the_middle_of_rotating_load_loses_no_committed_rotation() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    // rotations every second of the real clock, so load rotates all the time
    let cfg = write_config(dir.path(), up.addr, "1s");
    let c = client();
    let p = Proc::start(&cfg);
    let users = ["ada", "bob", "cy", "dee"];
    let mut latest = Vec::new();
    for user in users {
        let r = c
            .get(p.url(&format!("/login?user={user}")))
            .send()
            .await
            .unwrap();
        latest.push(Arc::new(std::sync::Mutex::new(handle_of(&r).unwrap())));
    }
    let rotations = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let (c, url, latest, rotations, mut stop) = (
            c.clone(),
            p.url("/page"),
            latest[i].clone(),
            rotations.clone(),
            stop_rx.clone(),
        );
        let want = format!("sid=sess-{user}");
        loops.push(tokio::spawn(async move {
            loop {
                let h = latest.lock().unwrap().clone();
                let req = c.get(&url).header("cookie", format!("rg={h}")).send();
                let r = tokio::select! {
                    r = req => r,
                    _ = stop.changed() => return,
                };
                let Ok(r) = r else { return };
                // a handle counts as given to the browser once its whole answer arrived
                if let Some(next) = handle_of(&r) {
                    if r.text().await.is_ok_and(|t| t == want) {
                        *latest.lock().unwrap() = next;
                        rotations.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    // load runs until a dozen rotations reached the clients, then the process dies
    within("rotations under load", async {
        while rotations.load(std::sync::atomic::Ordering::SeqCst) < 12 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    p.kill9();
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let p = Proc::start(&cfg);
    for (i, user) in users.iter().enumerate() {
        let h = latest[i].lock().unwrap().clone();
        let (seen, _) = seen_with(&c, &p, &h).await;
        assert_eq!(
            seen,
            format!("sid=sess-{user}"),
            "{user}: the last handle a client got is still a session after kill -9"
        );
    }
    p.stop();
}

#[tokio::test]
async fn a_corrupted_store_file_fails_start_up_naming_the_file() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), up.addr, "5m");
    let store = dir.path().join("data/sessions.redb");
    for garbage in [
        &b"this is not a redb file at all, just garbage bytes"[..],
        &[0u8; 4096][..],
    ] {
        std::fs::write(&store, garbage).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["run", "-c"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&store.display().to_string()) && err.contains("corrupt"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            String::from_utf8_lossy(&out.stdout).is_empty(),
            "it never started listening"
        );
    }
    // a real store file cut short fails the same way
    let p = Proc::start(&cfg_fresh(dir.path(), up.addr));
    let r = client().get(p.url("/login?user=ada")).send().await.unwrap();
    drop(r);
    p.stop();
    let fresh = dir.path().join("data/fresh.redb");
    let len = std::fs::metadata(&fresh).unwrap().len();
    let bytes = std::fs::read(&fresh).unwrap();
    std::fs::write(&store, &bytes[..(len as usize / 3)]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["run", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&store.display().to_string()), "{err}");
}

/// The same config with the store at `data/fresh.redb`.
fn cfg_fresh(dir: &std::path::Path, upstream: SocketAddr) -> std::path::PathBuf {
    let text = std::fs::read_to_string(write_config(dir, upstream, "5m"))
        .unwrap()
        .replace("data/sessions.redb", "data/fresh.redb");
    let p = dir.join("fresh.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn a_second_process_waits_for_the_store_and_answers_503_meanwhile() {
    let up = app().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), up.addr, "5m");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{text}\n[admin]\naddress = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let c = client();
    let old = Proc::start(&cfg);
    let r = c.get(old.url("/login?user=ada")).send().await.unwrap();
    let handle = handle_of(&r).unwrap();
    // an upgrade starts the new process while the old one still holds the file
    let new = Proc::start(&cfg);
    let ready = format!("http://{}/readyz", new.admin.unwrap());
    assert_eq!(c.get(&ready).send().await.unwrap().status(), 503);
    let r = c
        .get(new.url("/page"))
        .header("cookie", format!("rg={handle}"))
        .send()
        .await
        .unwrap();
    // the store is not there yet: 503, and nothing of the session is touched
    assert_eq!(r.status(), 503);
    assert!(set_cookies(&r).is_empty(), "{:?}", set_cookies(&r));
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    // the old process drains and lets go; the new one takes the store over
    old.stop();
    within("the new process becomes ready", async {
        while c.get(&ready).send().await.unwrap().status() != 200 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let (seen, _) = seen_with(&c, &new, &handle).await;
    assert_eq!(seen, "sid=sess-ada", "the session survived the handover");
    new.stop();
}
