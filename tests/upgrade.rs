//! Zero-downtime upgrades with the real binary: `rotagate run --upgrade` takes the
//! listening sockets over from the running process while two clients keep sending —
//! one opening a connection per request, one on keep-alive that reconnects after a
//! clean `Connection: close` — and not one request goes without a response.
//! Synchronisation is on real events: the clients' response counts, the announce lines
//! of the new process, the old process's exit. Which process answered is read from each
//! process's own access log (one line per request on its own stderr).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A `rotagate run` process: its announced addresses and its stderr lines.
struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    /// The TLS listener, when the config has one (announced third).
    tls: Option<SocketAddr>,
    stderr: std::sync::mpsc::Receiver<String>,
    /// Kept open: the process may still print.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Proc {
    /// Starts `rotagate run -c config [--upgrade]` and reads its announce lines.
    fn start(config: &Path, upgrade: bool) -> Proc {
        Self::start_with(config, upgrade, false)
    }

    /// [`Proc::start`], reading the TLS listener's announce line too when `tls`.
    fn start_with(config: &Path, upgrade: bool, tls: bool) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotagate"));
        cmd.args(["--log-format", "json", "run", "-c"]).arg(config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addr_of = |prefix: &str| -> SocketAddr {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let rest = line.trim().strip_prefix(prefix).unwrap_or_else(|| {
                let errs: Vec<String> = stderr.try_iter().collect();
                panic!("unexpected line {line:?}; stderr: {errs:#?}")
            });
            rest.parse().unwrap()
        };
        let proxy = addr_of("rotagate: proxy listening on http://");
        let admin = addr_of("rotagate: admin listening on http://");
        let tls = tls.then(|| addr_of("rotagate: tls listening on https://"));
        Proc {
            child,
            proxy,
            admin,
            tls,
            stderr,
            _stdout: out,
        }
    }

    /// Waits (bounded) for the process to exit: its stderr closes when it does. Returns
    /// whether it exited 0, and every line it wrote to stderr.
    fn wait_exit(&mut self) -> (bool, Vec<String>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut lines = Vec::new();
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => lines.push(l),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "process {} did not exit; stderr: {lines:#?}",
                        self.child.id()
                    )
                }
            }
        }
        (self.child.wait().unwrap().success(), lines)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the client loops saw.
#[derive(Default)]
struct Tally {
    /// Requests sent without a complete response (connect failures included).
    failures: Mutex<Vec<String>>,
}

/// Reads one HTTP/1.1 response with a Content-Length body: (status, `Connection:
/// close`?). An error when the connection ends before the response is complete.
async fn read_response(s: &mut TcpStream) -> Result<(u16, bool), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed after {} bytes, before a whole head",
                buf.len()
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not a response: {head:?}"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no content-length: {head:?}"))?;
    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    while buf.len() < head_end + 4 + len {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("body read: {e}"))?;
        if n == 0 {
            return Err("closed inside the body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, close))
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One request on a new connection each time, until `stop`.
async fn new_connection_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    count: watch::Sender<u64>,
) {
    while !stop.load(Ordering::SeqCst) {
        let one = async {
            let mut s = TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            s.write_all(
                b"GET /per-connection HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .map_err(|e| format!("write: {e}"))?;
            read_response(&mut s).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, one).await {
            Ok(Ok((200, _))) => count.send_modify(|n| *n += 1),
            Ok(Ok((status, _))) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("A: status {status}")),
            Ok(Err(e)) => tally.failures.lock().unwrap().push(format!("A: {e}")),
            Err(_) => tally
                .failures
                .lock()
                .unwrap()
                .push("A: no response within 10 s".into()),
        }
    }
}

/// Requests on one keep-alive connection; a new connection only after a response said
/// `Connection: close`. Returns how many such clean closes it saw.
async fn keep_alive_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    count: watch::Sender<u64>,
) -> u64 {
    let mut conn: Option<TcpStream> = None;
    let mut clean_closes = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut s = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr).await {
                Ok(s) => s,
                Err(e) => {
                    tally
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("B: connect: {e}"));
                    continue;
                }
            },
        };
        let one = async {
            s.write_all(b"GET /keep-alive HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .map_err(|e| format!("write: {e}"))?;
            read_response(&mut s).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, one).await {
            Ok(Ok((200, close))) => {
                count.send_modify(|n| *n += 1);
                if close {
                    clean_closes += 1;
                } else {
                    conn = Some(s);
                }
            }
            Ok(Ok((status, _))) => tally
                .failures
                .lock()
                .unwrap()
                .push(format!("B: status {status}")),
            Ok(Err(e)) => tally.failures.lock().unwrap().push(format!("B: {e}")),
            Err(_) => tally
                .failures
                .lock()
                .unwrap()
                .push("B: no response within 10 s".into()),
        }
    }
    clean_closes
}

/// Waits until both loops have `more` responses beyond what they had.
async fn both_answered(a: &mut watch::Receiver<u64>, b: &mut watch::Receiver<u64>, more: u64) {
    let (ta, tb) = (*a.borrow() + more, *b.borrow() + more);
    within("new-connection client progresses", a.wait_for(|n| *n >= ta))
        .await
        .unwrap();
    within("keep-alive client progresses", b.wait_for(|n| *n >= tb))
        .await
        .unwrap();
}

fn access_lines(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter(|l| l.contains("rotagate::access"))
        .count() as u64
}

const UPGRADES: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_under_load_lose_no_request() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("upgrade.sock");
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        config_with_listen(
            up.addr,
            &format!("upgrade_socket = {:?}", socket.display().to_string()),
            "",
        ),
    )
    .unwrap();
    let mut current = tokio::task::block_in_place(|| Proc::start(&cfg, false));
    let (proxy, admin) = (current.proxy, current.admin);

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let (a_tx, mut a_rx) = watch::channel(0u64);
    let (b_tx, mut b_rx) = watch::channel(0u64);
    let a = tokio::spawn(new_connection_loop(
        proxy,
        stop.clone(),
        tally.clone(),
        a_tx,
    ));
    let b = tokio::spawn(keep_alive_loop(proxy, stop.clone(), tally.clone(), b_tx));
    both_answered(&mut a_rx, &mut b_rx, 20).await;

    let mut answered_by = Vec::new();
    for _ in 0..UPGRADES {
        // the successor announces the same addresses: it listens on the same sockets
        let mut next = tokio::task::block_in_place(|| Proc::start(&cfg, true));
        assert_eq!((next.proxy, next.admin), (proxy, admin));
        // the old process stops once the successor accepts, drains and exits 0
        let (ok, lines) = tokio::task::block_in_place(|| current.wait_exit());
        assert!(ok, "{lines:#?}");
        answered_by.push(access_lines(&lines));
        // the clients go on, now served by the successor only
        both_answered(&mut a_rx, &mut b_rx, 20).await;
        std::mem::swap(&mut current, &mut next);
        drop(next); // exited already
    }

    stop.store(true, Ordering::SeqCst);
    within("new-connection client stops", a).await.unwrap();
    let clean_closes = within("keep-alive client stops", b).await.unwrap();
    current.signal("TERM");
    let (ok, lines) = tokio::task::block_in_place(|| current.wait_exit());
    assert!(ok, "{lines:#?}");
    answered_by.push(access_lines(&lines));

    let failures = tally.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests without a response: {failures:#?}"
    );
    // every old process closed the keep-alive connection the clean way
    assert!(
        clean_closes >= UPGRADES as u64,
        "clean closes: {clean_closes}"
    );
    // every process answered some requests, and every response is in one of the logs
    assert!(answered_by.iter().all(|&n| n > 0), "{answered_by:?}");
    let answered = *a_rx.borrow() + *b_rx.borrow();
    assert_eq!(answered_by.iter().sum::<u64>(), answered, "{answered_by:?}");
}

#[tokio::test]
async fn upgrade_without_a_running_process_fails_clearly() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        config_with_listen(
            up.addr,
            &format!("upgrade_socket = {:?}", socket.display().to_string()),
            "",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["run", "--upgrade", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no running rotagate to take over from")
            && stderr.contains(&socket.display().to_string())
            && stderr.contains("start without --upgrade"),
        "{stderr}"
    );
}

/// An app that logs in (`/login?user=U` sets `sid`) and echoes the `Cookie` it got.
async fn vault_app() -> Upstream {
    upstream(Arc::new(|req| {
        Box::pin(async move {
            let cookie = req
                .headers()
                .get("cookie")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            if req.uri().path() == "/login" {
                return hyper::Response::builder()
                    .header("set-cookie", "sid=sess-ada; Path=/; HttpOnly")
                    .header("x-rotagate-claims", r#"{"sub":"ada"}"#)
                    .body(full("in"))
                    .unwrap();
            }
            hyper::Response::builder().body(full(cookie)).unwrap()
        })
    }))
    .await
}

/// The embedded store (one redb file, one process at a time) passes to the successor
/// when the old process has drained and exited; vault requests that reach the successor
/// before that wait for the file (up to the store's request wait) instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_embedded_store_over_without_failing_a_session_request() {
    let up = vault_app().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vault.key"),
        "upgrade-test-key-upgrade-test-key-0123456789",
    )
    .unwrap();
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[listen]
address = "127.0.0.1:0"
upgrade_socket = "upgrade.sock"

[upstream]
url = "http://{}"

[admin]
address = "127.0.0.1:0"

[session]
mode = "vault"
rotate_every = "5m"
store = "embedded"
store_path = "sessions.redb"

[session.vault]
capture = ["sid"]
secrets = ["file:vault.key"]

[[route]]
name = "app"
match = "/:path*"
"#,
            up.addr
        ),
    )
    .unwrap();
    let mut old = tokio::task::block_in_place(|| Proc::start(&cfg, false));
    // a fresh connection per request: none is pooled to the old process
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let login = c
        .get(format!("http://{}/login", old.proxy))
        .send()
        .await
        .unwrap();
    let handle = set_cookies(&login)
        .iter()
        .find_map(|l| Some(l.strip_prefix("rg=")?.split(';').next()?.to_string()))
        .expect("a vault handle");

    let stop = Arc::new(AtomicBool::new(false));
    let (count_tx, mut count) = watch::channel(0u64);
    let proxy = old.proxy;
    let session_loop = tokio::spawn({
        let (c, stop) = (c.clone(), stop.clone());
        async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = c
                    .get(format!("http://{proxy}/page"))
                    .header("cookie", format!("rg={handle}"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        if body == "sid=sess-ada" {
                            count_tx.send_modify(|n| *n += 1);
                        } else {
                            failures.push(format!("the app saw {body:?}"));
                        }
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e}")),
                }
            }
            failures
        }
    });
    let mark = *count.borrow() + 10;
    within("session requests answered", count.wait_for(|n| *n >= mark))
        .await
        .unwrap();

    let mut new = tokio::task::block_in_place(|| Proc::start(&cfg, true));
    let (ok, lines) = tokio::task::block_in_place(|| old.wait_exit());
    assert!(ok, "{lines:#?}");
    // answered by the successor, which holds the store now
    let mark = *count.borrow() + 10;
    within("session requests answered", count.wait_for(|n| *n >= mark))
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let failures = within("session loop stops", session_loop).await.unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    new.signal("TERM");
    let (ok, lines) = tokio::task::block_in_place(|| new.wait_exit());
    assert!(ok, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("session store opened")),
        "the successor waited for the file and opened it: {lines:#?}"
    );
}

#[test]
fn the_upgrade_socket_is_relative_to_the_config_file_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let write = |listen: &str| {
        let p = dir.path().join("rotagate.toml");
        std::fs::write(&p, config_with_listen(up, listen, "")).unwrap();
        p
    };
    let cfg = rotagate::config::load(&write("")).unwrap();
    // not world-writable: a directory of our own user's (see `upgrade::vet`)
    let euid = rustix::process::geteuid().as_raw();
    assert_eq!(
        cfg.listen.upgrade_socket,
        Path::new(&format!("/tmp/rotagate-{euid}/upgrade.sock"))
    );
    assert_eq!(
        cfg.listen.upgrade_socket,
        rotagate::config::default_upgrade_socket()
    );
    let cfg = rotagate::config::load(&write("upgrade_socket = \"run/up.sock\"")).unwrap();
    assert_eq!(cfg.listen.upgrade_socket, dir.path().join("run/up.sock"));

    let e = rotagate::config::load(&write("upgrade_socket = \"\""))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rotagate.toml:3:")
            && e.contains("`listen.upgrade_socket`")
            && e.contains("Unix socket"),
        "{e}"
    );
    let long = format!("upgrade_socket = \"/{}\"", "a".repeat(120));
    let e = rotagate::config::load(&write(&long))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 107 bytes"), "{e}");
}

/// One HTTP/2 frame: (type, flags, stream id, payload).
type Frame = (u8, u8, u32, Vec<u8>);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

async fn read_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

/// Reads frames until `want` says stop (answering SETTINGS and PING as a client must);
/// returns the frames read, or `None` when the connection ended first.
async fn frames_until(s: &mut TcpStream, want: impl Fn(&Frame) -> bool) -> Option<Vec<Frame>> {
    let mut seen = Vec::new();
    loop {
        let f = read_frame(s).await?;
        match f.0 {
            SETTINGS if f.1 & ACK == 0 => s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.ok()?,
            PING if f.1 & ACK == 0 => s.write_all(&frame(PING, ACK, 0, &f.3)).await.ok()?,
            _ => {}
        }
        let done = want(&f);
        seen.push(f);
        if done {
            return Some(seen);
        }
    }
}

/// An HTTP/2 (h2c) connection with a request in flight on the old process: the upgrade
/// sends it GOAWAY (no error), the request still completes, then the old process closes
/// the connection and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_gets_goaway_and_its_request_completes() {
    use tokio::sync::oneshot;
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((arrived_tx, release_rx))));
    let up = upstream(Arc::new(move |_req| {
        let gate = gate.clone();
        Box::pin(async move {
            let g = gate.lock().unwrap().take();
            if let Some((arrived, release)) = g {
                let _ = arrived.send(());
                let _ = release.await;
            }
            text(200, "finished")
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        config_with_listen(up.addr, "upgrade_socket = \"upgrade.sock\"", ""),
    )
    .unwrap();
    let mut old = tokio::task::block_in_place(|| Proc::start(&cfg, false));

    // prior-knowledge HTTP/2: preface, empty SETTINGS, GET /slow on stream 1
    let mut s = TcpStream::connect(old.proxy).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // HPACK: :method GET, :scheme http (static table), :path and :authority literals
    let mut block = vec![0x82, 0x86, 0x04, 5];
    block.extend_from_slice(b"/slow");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"127.0.0.1");
    out.extend(frame(HEADERS, 0x4 | END_STREAM, 1, &block));
    s.write_all(&out).await.unwrap();
    within("request reaches upstream", arrived_rx)
        .await
        .unwrap();

    let _new = tokio::task::block_in_place(|| Proc::start(&cfg, true));
    let goaway = within(
        "GOAWAY from the old process",
        frames_until(&mut s, |f| f.0 == GOAWAY),
    )
    .await
    .expect("the connection stayed open until GOAWAY");
    let g = &goaway.last().unwrap().3;
    assert_eq!(&g[4..8], &[0, 0, 0, 0], "GOAWAY with NO_ERROR: {g:?}");
    // no response yet: the request is still in flight at the upstream
    assert!(!goaway.iter().any(|f| f.0 == HEADERS), "{goaway:?}");

    release_tx.send(()).unwrap();
    let rest = within(
        "the response",
        frames_until(&mut s, |f| f.0 == DATA && f.1 & END_STREAM != 0 && f.2 == 1),
    )
    .await
    .expect("the response came before the connection closed");
    let body: Vec<u8> = rest
        .iter()
        .filter(|f| f.0 == DATA && f.2 == 1)
        .flat_map(|f| f.3.clone())
        .collect();
    assert_eq!(body, b"finished");
    // then the old process closes the connection and exits 0
    let closed = within("connection closes", frames_until(&mut s, |_| false)).await;
    assert!(closed.is_none());
    let (ok, lines) = tokio::task::block_in_place(|| old.wait_exit());
    assert!(ok, "{lines:#?}");
}

/// A second plain `run` on an upgrade socket in use runs without one (with a warning)
/// and does not disturb the first, which `--upgrade` then takes over from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_busy_upgrade_socket_leaves_it_to_the_first() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        config_with_listen(up.addr, "upgrade_socket = \"upgrade.sock\"", ""),
    )
    .unwrap();
    let mut first = tokio::task::block_in_place(|| Proc::start(&cfg, false));
    let mut second = tokio::task::block_in_place(|| Proc::start(&cfg, false));
    assert_ne!(first.proxy, second.proxy);
    let next = tokio::task::block_in_place(|| Proc::start(&cfg, true));
    assert_eq!(next.proxy, first.proxy, "took over from the first");
    let (ok, lines) = tokio::task::block_in_place(|| first.wait_exit());
    assert!(ok, "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("upgrade abandoned")),
        "the second's probe asked for nothing: {lines:#?}"
    );
    second.signal("TERM");
    let (ok, lines) = tokio::task::block_in_place(|| second.wait_exit());
    assert!(ok, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("is in use by a running rotagate")
                && l.contains("cannot be upgraded")),
        "{lines:#?}"
    );
    // the second stopping left the upgrade socket to the process that owns it now
    assert!(dir.path().join("upgrade.sock").exists());
}

/// The TLS listener is handed over like the others: its address stays, and a client
/// opening a new TLS connection per request across the upgrade gets every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_is_handed_over_too() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("app.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("app.key"), cert.key_pair.serialize_pem()).unwrap();
    let socket = dir.path().join("upgrade.sock");
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        config_with_listen(
            up.addr,
            &format!(
                "upgrade_socket = {:?}\n[listen.tls]\naddress = \"127.0.0.1:0\"\n[[listen.tls.certificates]]\ncert = \"file:app.pem\"\nkey = \"file:app.key\"",
                socket.display().to_string()
            ),
            "",
        ),
    )
    .unwrap();
    let mut old = tokio::task::block_in_place(|| Proc::start_with(&cfg, false, true));
    let tls = old.tls.unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", tls)
        .pool_max_idle_per_host(0) // a new TLS connection per request
        // HTTP/1.1 as the other loops (HTTP/2 across an upgrade: GOAWAY, tested above)
        .http1_only()
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/x", tls.port());
    let stop = Arc::new(AtomicBool::new(false));
    let (count_tx, mut count) = watch::channel(0u64);
    let loop_ = {
        let stop = stop.clone();
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        n += 1;
                        let _ = count_tx.send(n);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            failures
        })
    };
    let wait_more = |count: &mut watch::Receiver<u64>, more: u64| {
        let target = *count.borrow() + more;
        let mut count = count.clone();
        async move {
            within("TLS answers", count.wait_for(|n| *n >= target))
                .await
                .unwrap();
        }
    };
    wait_more(&mut count, 10).await;
    let new = tokio::task::block_in_place(|| Proc::start_with(&cfg, true, true));
    assert_eq!(
        new.tls,
        Some(tls),
        "the successor listens on the same TLS socket"
    );
    let (ok, lines) = tokio::task::block_in_place(|| old.wait_exit());
    assert!(ok, "{lines:#?}");
    assert!(access_lines(&lines) > 0, "the old process answered some");
    wait_more(&mut count, 10).await;
    stop.store(true, Ordering::SeqCst);
    let failures = within("TLS client stops", loop_).await.unwrap();
    assert!(
        failures.is_empty(),
        "TLS requests without an answer: {failures:#?}"
    );
    drop(new);
}

/// Runs `rotagate run --upgrade -c config` to its end: (success, stdout, stderr). A
/// process still running after 30 s (one that took over when it should not have) is
/// killed and fails the test, rather than hanging it.
fn run_upgrade(config: &Path) -> (bool, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["run", "--upgrade", "-c"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let out = rx.recv().unwrap().unwrap();
            panic!(
                "`run --upgrade` still ran after 30 s (it took over?); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }
    }
}

/// Waits (bounded) for a stderr line of `p` containing `want`; returns the lines read.
fn stderr_until(p: &Proc, want: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        match p.stderr.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                let done = l.contains(want);
                lines.push(l);
                if done {
                    return lines;
                }
            }
            Err(e) => panic!("no stderr line with {want:?} ({e}); got {lines:#?}"),
        }
    }
}

/// Red-team F1: an instance whose config names another instance's upgrade socket (by
/// mistake, or through a planted symlink) must not take that instance's sockets over
/// and stop it: its proxy address is none of the sockets it gets, so it refuses, says
/// why, and never says `accepting`; the other instance serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_on_another_instances_socket_is_refused_and_that_one_serves_on() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("b-upgrade.sock");
    let listen = format!("upgrade_socket = {:?}", socket.display().to_string());
    let b_cfg = dir.path().join("b.toml");
    std::fs::write(&b_cfg, config_with_listen(up.addr, &listen, "")).unwrap();
    let mut b = tokio::task::block_in_place(|| Proc::start(&b_cfg, false));

    // A: B's upgrade socket, its own ports (held here: not B's, and A binds nothing)
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a_proxy = held.local_addr().unwrap();
    let a_admin = held_admin.local_addr().unwrap();
    let a_text = format!(
        "[listen]\naddress = \"{a_proxy}\"\n{listen}\n\n[upstream]\nurl = \"http://{}\"\n\n[admin]\naddress = \"{a_admin}\"\n",
        up.addr
    );
    let a_cfg = dir.path().join("a.toml");
    std::fs::write(&a_cfg, a_text).unwrap();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| run_upgrade(&a_cfg));
    assert!(!ok, "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("another rotagate instance")
            && stderr.contains(&socket.display().to_string())
            && stderr.contains(&format!("proxy {}", b.proxy))
            && stderr.contains(&a_proxy.to_string()),
        "{stderr}"
    );

    // B saw A go without its word, and serves on, on the same sockets
    let lines = tokio::task::block_in_place(|| stderr_until(&b, "upgrade abandoned, serving on"));
    assert!(
        !lines.iter().any(|l| l.contains("the successor accepts")),
        "{lines:#?}"
    );
    let health = client()
        .get(format!("http://{}/healthz", b.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let r = client()
        .get(format!("http://{}/", b.proxy))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok from upstream");
    // and it can still be upgraded by its own successor
    let next = tokio::task::block_in_place(|| Proc::start(&b_cfg, true));
    assert_eq!(next.proxy, b.proxy);
    let (ok, lines) = tokio::task::block_in_place(|| b.wait_exit());
    assert!(ok, "{lines:#?}");
    drop(next);
}

/// Red-team F1: a symlink at the configured upgrade socket path (here to a running
/// instance's socket, which a plain `--upgrade` would take over) is refused before
/// anything is connected to, and the instance behind it is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_through_a_symlink_is_refused() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.sock");
    let b_cfg = dir.path().join("b.toml");
    let listen = |p: &Path| format!("upgrade_socket = {:?}", p.display().to_string());
    std::fs::write(&b_cfg, config_with_listen(up.addr, &listen(&real), "")).unwrap();
    let mut b = tokio::task::block_in_place(|| Proc::start(&b_cfg, false));

    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // the same listen addresses (port 0): without the symlink check, this takes over
    let a_cfg = dir.path().join("a.toml");
    std::fs::write(&a_cfg, config_with_listen(up.addr, &listen(&link), "")).unwrap();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| run_upgrade(&a_cfg));
    assert!(!ok, "{stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(
        stderr.contains("symbolic link") && stderr.contains(&link.display().to_string()),
        "{stderr}"
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    let health = client()
        .get(format!("http://{}/healthz", b.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    b.signal("TERM");
    let (ok, lines) = tokio::task::block_in_place(|| b.wait_exit());
    assert!(ok, "{lines:#?}");
    // nothing was asked of B: A never connected
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("handed to a successor") || l.contains("upgrade abandoned")),
        "{lines:#?}"
    );
}
