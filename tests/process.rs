//! The real `rotagate run` binary: signals (SIGHUP reload, SIGTERM drain) and memory
//! bounds while streaming 100 MB each way. Synchronisation is on the process's own
//! output lines and the admin long-poll, never on sleeps.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{mpsc, oneshot};

struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    fn start(config: &std::path::Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["--log-format", "json", "run", "--no-watch", "-c"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addr_of = |prefix: &str| -> SocketAddr {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let rest = line
                .trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            rest.parse().unwrap()
        };
        let proxy = addr_of("rotagate: proxy listening on http://");
        let admin = addr_of("rotagate: admin listening on http://");
        let (tx, stderr) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc {
            child,
            proxy,
            admin,
            stderr,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Blocks until a stderr log line contains `needle` (bounded).
    fn wait_log(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &std::path::Path, upstream: SocketAddr, extra: &str) -> std::path::PathBuf {
    let p = dir.join("rotagate.toml");
    std::fs::write(&p, format!("{}{}", base_config(upstream), extra)).unwrap();
    p
}

#[tokio::test]
async fn sighup_reloads_and_an_invalid_file_is_refused() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        up.addr,
        "[[route]]\nname = \"one\"\nmatch = \"/:path*\"\n",
    );
    let p = Proc::start(&cfg);
    let c = client();
    let status = |q: &'static str| {
        let c = c.clone();
        let url = format!("http://{}/config{q}", p.admin);
        async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(status("").await["generation"], 1);

    write_config(
        dir.path(),
        up.addr,
        "[[route]]\nname = \"two\"\nmatch = \"/:path*\"\n",
    );
    p.signal("HUP");
    let s = status("?after_attempts=0").await;
    assert_eq!(s["generation"], 2, "{s}");
    assert_eq!(s["last_reload_error"], serde_json::Value::Null);

    std::fs::write(&cfg, "[listen]\naddress = 5\n").unwrap();
    p.signal("HUP");
    let s = status("?after_attempts=1").await;
    assert_eq!(s["generation"], 2, "{s}");
    let err = s["last_reload_error"].as_str().unwrap();
    assert!(
        err.contains("rotagate.toml") && err.contains("listen.address"),
        "{err}"
    );

    // still serving on generation 2's rules
    get_and_settle(p.proxy, &["/x"]).await;
    let m = c
        .get(format!("http://{}/metrics", p.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("rotagate_requests_total{route=\"two\",status=\"2xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rotagate_config_reloads_total{result=\"error\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(Some((arrived_tx, release_rx))));
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
    let cfg = write_config(dir.path(), up.addr, "");
    let mut p = Proc::start(&cfg);
    let c = client();
    let inflight = tokio::spawn(c.get(format!("http://{}/slow", p.proxy)).send());
    within("request reaches upstream", arrived_rx)
        .await
        .unwrap();
    p.signal("TERM");
    let line = tokio::task::block_in_place(|| p.wait_log("draining"));
    assert!(line.contains("shutting down"), "{line}");
    release_tx.send(()).unwrap();
    let resp = within("in-flight response", inflight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "finished");
    let status = tokio::task::block_in_place(|| p.child.wait()).unwrap();
    assert!(status.success(), "{status:?}");
}

const HUNDRED_MB: usize = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_each_way_with_bounded_memory() {
    let up = upstream(Arc::new(|req| {
        Box::pin(async move {
            if req.method() == http::Method::POST {
                let mut body = req.into_body();
                let mut n = 0usize;
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        n += d.len();
                    }
                }
                return text(200, &n.to_string());
            }
            let (tx, mut rx) =
                mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(2);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![7u8; 64 * 1024]);
                for _ in 0..HUNDRED_MB / chunk.len() {
                    if tx
                        .send(Ok(hyper::body::Frame::data(chunk.clone())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let body = StreamBody::new(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
            hyper::Response::builder()
                .status(200)
                .body(BodyExt::boxed(body))
                .unwrap()
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), up.addr, "");
    let p = Proc::start(&cfg);
    let c = client();

    // download: count bytes as they arrive, never holding the body
    let mut resp = c
        .get(format!("http://{}/big", p.proxy))
        .send()
        .await
        .unwrap();
    let mut got = 0usize;
    while let Some(chunk) = within("download chunk", resp.chunk()).await.unwrap() {
        got += chunk.len();
    }
    assert_eq!(got, HUNDRED_MB);

    // upload: generated on the fly
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let chunk = Bytes::from(vec![9u8; 64 * 1024]);
        for _ in 0..HUNDRED_MB / chunk.len() {
            if tx.send(Ok(chunk.clone())).await.is_err() {
                return;
            }
        }
    });
    let body =
        reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let resp = within(
        "upload",
        c.post(format!("http://{}/up", p.proxy)).body(body).send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.text().await.unwrap(), HUNDRED_MB.to_string());

    // 200 MB went through; the proxy's peak RSS stays far below one body's size
    let peak_mib = p.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 64,
        "proxy peak RSS {peak_mib} MiB while streaming 100 MB bodies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_line_has_no_query_values_cookies_or_tokens() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        up.addr,
        "[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n",
    );
    let p = Proc::start(&cfg);
    let c = client();
    c.get(format!(
        "http://{}/account/page?token=query-secret-123",
        p.proxy
    ))
    .header("cookie", "session=cookie-secret-456")
    .header("authorization", "Bearer header-secret-789")
    .send()
    .await
    .unwrap();
    let line = tokio::task::block_in_place(|| p.wait_log("rotagate::access"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["path"], "/account/page");
    assert_eq!(v["route"], "app");
    assert_eq!(v["status"], 200);
    assert_eq!(v["method"], "GET");
    assert!(v["duration_ms"].is_number());
    for secret in ["query-secret-123", "cookie-secret-456", "header-secret-789"] {
        assert!(!line.contains(secret), "{line}");
    }
}
