//! The real `rotagate run` binary's access log: one line per request through the
//! non-blocking writer, none dropped in a normal run (`rotagate_log_lines_dropped_total`
//! is 0), every queued line written out at shutdown, and `log.access = false` writes
//! none. Synchronisation is on the process's exit and its own output, never on sleeps.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;

/// The binary on `config` (JSON logs, the default filter), with its two addresses.
struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Proc {
    fn start(config: &std::path::Path) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut addr_of = |prefix: &str| -> SocketAddr {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .parse()
                .unwrap()
        };
        let proxy = addr_of("rotagate: proxy listening on http://");
        let admin = addr_of("rotagate: admin listening on http://");
        Proc {
            child,
            proxy,
            admin,
        }
    }

    /// SIGTERM, then every line the process wrote to stderr until it exited.
    fn stop(mut self) -> Vec<String> {
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "rotagate exited with {status}");
        err.lines().map(str::to_string).collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &tempfile::TempDir, upstream: SocketAddr, log: &str) -> std::path::PathBuf {
    let path = dir.path().join("rotagate.toml");
    std::fs::write(
        &path,
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nthreads = 2\n\n[upstream]\nurl = \"http://{upstream}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n{log}[[route]]\nname = \"app\"\nmatch = \"/app/:rest*\"\n"
        ),
    )
    .unwrap();
    path
}

/// `n` requests to `/app/<i>?q=<i>`, all answered 200.
async fn requests(proxy: SocketAddr, n: usize) {
    let c = client();
    for i in 0..n {
        let r = within(
            "request",
            c.get(format!("http://{proxy}/app/{i}?q={i}")).send(),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 200);
    }
}

fn access_lines(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.contains("\"target\":\"rotagate::access\""))
        .collect()
}

#[tokio::test]
async fn one_access_line_per_request_none_dropped_all_written_at_shutdown() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&config(&dir, up.addr, ""));
    requests(p.proxy, 200).await;
    let m = within(
        "metrics",
        client().get(format!("http://{}/metrics", p.admin)).send(),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        m.contains("rotagate_requests_total{route=\"app\",status=\"2xx\"} 200"),
        "{m}"
    );
    assert!(m.contains("rotagate_log_lines_dropped_total 0"), "{m}");
    let lines = p.stop();
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"stopped\"")),
        "the last line, written at exit: {lines:#?}"
    );
    let access = access_lines(&lines);
    assert_eq!(access.len(), 200, "one line per request: {lines:#?}");
    for i in [0, 99, 199] {
        let needle = format!("\"path\":\"/app/{i}\"");
        assert!(
            access.iter().any(|l| l.contains(&needle)),
            "the access line of /app/{i}"
        );
    }
    assert!(
        access.iter().all(|l| !l.contains("q=")),
        "no query in an access line"
    );
}

#[tokio::test]
async fn log_access_false_writes_no_access_line() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(&config(&dir, up.addr, "[log]\naccess = false\n\n"));
    requests(p.proxy, 20).await;
    let lines = p.stop();
    assert!(access_lines(&lines).is_empty(), "{lines:#?}");
    // the log itself is written, to its last line at exit
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"stopped\"")),
        "{lines:#?}"
    );
    assert_eq!(up.count(), 20, "the requests were served");
}
