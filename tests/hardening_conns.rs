//! Issue 9, points 18-20: slow or greedy clients, request desync, secrets in logs.
//! Every test performs the attack on raw loopback sockets against the real proxy (and,
//! for the log test, the real binary) in front of a real upstream.
//!
//! Waits are bounded: a close is awaited as EOF with a deadline, never slept for. The
//! only fixed windows are the assertions that something does NOT happen for a while
//! (a held-back connection is not served, the accept loop does not spin), which cannot
//! be observed any other way; each is short and can only fail, never flake into a pass.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Like [`within`], with a tighter bound for steps whose timeout is configured short.
async fn within_secs<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// Reads until the peer closes (EOF or reset) and returns everything read.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An upstream that answers `200` with the request path as body.
async fn echo_path_upstream() -> Upstream {
    upstream(Arc::new(|req| {
        Box::pin(async move {
            let path = req.uri().path().to_string();
            // read the whole body so request framing is exercised upstream too
            let _ = http_body_util::BodyExt::collect(req.into_body()).await;
            text(200, &path)
        })
    }))
    .await
}

fn all_routes() -> &'static str {
    "[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n"
}

/// Sends `head` at once, then dribbles `X-Slow` header bytes every 200 ms until the
/// proxy closes the connection. Returns how long the proxy held the connection.
async fn dribble_until_closed(s: TcpStream, head: &'static [u8]) -> Duration {
    let started = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(head).await.unwrap();
    let dribbler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        for b in b"X-Slow: ".iter().chain(std::iter::repeat(&b'a')) {
            tick.tick().await;
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
        }
    });
    // the proxy has nothing to answer: the first read returns only when it closes
    let mut buf = [0u8; 1024];
    if let Ok(n @ 1..) = rd.read(&mut buf).await {
        panic!(
            "the proxy answered a request still in its headers: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    dribbler.abort();
    started.elapsed()
}

#[tokio::test]
async fn slowloris_header_dribble_is_closed_after_header_timeout() {
    // header_timeout counts for the whole header block, from its first byte
    let h = start_listen(
        upstream_ok().await,
        "header_timeout = \"1s\"\nkeepalive_timeout = \"30s\"\n",
        all_routes(),
    )
    .await;

    // 1. the first request of a connection: a request line, then one header byte at a
    //    time, each well inside any per-read timeout
    let s = TcpStream::connect(h.addr()).await.unwrap();
    let held = within_secs(
        6,
        "slowloris on the first request is cut off",
        dribble_until_closed(s, b"GET / HTTP/1.1\r\nHost: x\r\n"),
    )
    .await;
    assert!(
        held >= Duration::from_millis(900),
        "closed too early: {held:?}"
    );

    // 2. the second request on a keep-alive connection gets the same limit
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = within_secs(5, "first request", read_one_response(&mut s)).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    within_secs(
        6,
        "slowloris on a keep-alive request is cut off",
        dribble_until_closed(s, b"GET /second HTTP/1.1\r\nHost: x\r\n"),
    )
    .await;

    // 3. a connection that never sends a byte is a slow header too
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    let got = within_secs(6, "silent connection is closed", read_to_close(&mut s)).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));

    // the refusals are counted, and an honest client is still served
    let r = h.get("/after").await;
    assert_eq!(r.status(), 200);
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_connection_events_total{event=\"header_timeout\"} 3"),
        "{m}"
    );
    h.shutdown().await;
}

/// Starts a proxy from a complete config text (the shared header is not added).
async fn start_raw_config(dir: tempfile::TempDir, upstream: Upstream, cfg: &str) -> Harness {
    Harness::start_text(dir, upstream, cfg).await
}

/// A config with `[listen]` keys of the test's choosing.
fn listen_config(upstream: SocketAddr, listen_extra: &str, rest: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{listen_extra}\n[upstream]\nurl = \"http://{upstream}\"\nread_timeout = \"20s\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n{rest}"
    )
}

async fn start_listen(upstream: Upstream, listen_extra: &str, rest: &str) -> Harness {
    let cfg = listen_config(upstream.addr, listen_extra, rest);
    start_raw_config(tempfile::tempdir().unwrap(), upstream, &cfg).await
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let h = start_listen(
        upstream_ok().await,
        "keepalive_timeout = \"1s\"\n",
        all_routes(),
    )
    .await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = within_secs(5, "first answer", read_one_response(&mut s)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("connection: keep-alive"),
        "{r}"
    );
    // an idle keep-alive connection is closed without an answer
    let rest = within_secs(6, "idle connection is closed", read_to_close(&mut s)).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_connection_events_total{event=\"idle_timeout\"} 1"),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn slow_request_body_gets_408_after_body_timeout() {
    let h = start_listen(
        echo_path_upstream().await,
        "body_timeout = \"1s\"\n",
        all_routes(),
    )
    .await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    // the other 90 bytes never come
    let got = within_secs(6, "a stalled body is given up", read_to_close(&mut s)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_connection_events_total{event=\"body_timeout\"} 1"),
        "{m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn max_connections_holds_further_connections_in_the_backlog() {
    let h = start_listen(upstream_ok().await, "max_connections = 2\n", all_routes()).await;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut a = TcpStream::connect(h.addr()).await.unwrap();
    let mut b = TcpStream::connect(h.addr()).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(req).await.unwrap();
        let r = within_secs(5, "served below the limit", read_one_response(s)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }
    // the third connection completes its TCP handshake in the kernel's backlog, but the
    // proxy does not take it while two are open
    let mut c = TcpStream::connect(h.addr()).await.unwrap();
    c.write_all(req).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(700), c.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a connection beyond max_connections was served: {early:?}"
    );
    let m = h.metrics().await;
    assert!(m.contains("rotagate_connections_open 2"), "{m}");
    assert!(
        m.contains("rotagate_connection_events_total{event=\"limit_wait\"}"),
        "{m}"
    );
    // one closes: the waiting connection is taken and served
    drop(a);
    let r = within_secs(5, "held connection served", read_one_response(&mut c)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    b.write_all(req).await.unwrap();
    let r = within_secs(5, "still serving", read_one_response(&mut b)).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    h.shutdown().await;
}

// ---- HTTP/2 (h2c) with hand-written frames: the client must be able to break the rules

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `GET /` with `:authority: x`, HPACK without indexing (static table names only).
fn h2_get_headers() -> Vec<u8> {
    // :method GET (2), :scheme http (6), :path / (4), :authority literal (name 1)
    vec![0x82, 0x86, 0x84, 0x01, 0x01, b'x']
}

async fn read_h2_frame(s: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], stream, payload))
}

#[tokio::test]
async fn h2c_streams_and_header_list_are_bounded() {
    // the upstream holds every request until told to answer, so streams stay open
    let (release, held) = tokio::sync::watch::channel(false);
    let up = upstream(Arc::new(move |_req| {
        let mut held = held.clone();
        Box::pin(async move {
            let _ = held.wait_for(|go| *go).await;
            text(200, "released")
        })
    }))
    .await;
    let h = start_listen(
        up,
        "max_header_bytes = 4096\nh2_max_concurrent_streams = 5\n",
        all_routes(),
    )
    .await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    // six requests at once: one more than the proxy allows
    for i in 0..6u32 {
        out.extend(h2_frame(0x1, 0x5, 2 * i + 1, &h2_get_headers()));
    }
    s.write_all(&out).await.unwrap();

    let mut settings = None;
    let mut refused = None;
    within_secs(5, "server SETTINGS and the refusal", async {
        while settings.is_none() || refused.is_none() {
            let Some((kind, flags, stream, payload)) = read_h2_frame(&mut s).await else {
                panic!("connection closed before the refusal");
            };
            match kind {
                0x4 if flags & 1 == 0 => {
                    let mut map = std::collections::HashMap::new();
                    for e in payload.chunks_exact(6) {
                        map.insert(
                            u16::from_be_bytes([e[0], e[1]]),
                            u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                        );
                    }
                    settings = Some(map);
                }
                0x3 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    refused = Some((stream, code));
                }
                0x7 => panic!("GOAWAY instead of a stream refusal: {payload:?}"),
                _ => {}
            }
        }
    })
    .await;
    let settings = settings.unwrap();
    // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) and SETTINGS_MAX_HEADER_LIST_SIZE (0x6)
    assert_eq!(settings.get(&0x3), Some(&5), "{settings:?}");
    assert_eq!(settings.get(&0x6), Some(&4096), "{settings:?}");
    // RFC 9113 §5.1.2: the stream beyond the limit is refused (REFUSED_STREAM = 0x7)
    assert_eq!(refused, Some((11, 0x7)));

    // the five admitted streams are answered once the upstream lets go
    release.send(true).unwrap();
    let mut answered = 0;
    within_secs(5, "admitted streams answered", async {
        while answered < 5 {
            let (kind, flags, _, _) = read_h2_frame(&mut s).await.expect("frames");
            if kind == 0x0 && flags & 1 == 1 {
                answered += 1;
            }
        }
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn h2c_defaults_are_100_streams_and_max_header_bytes() {
    let h = start_listen(upstream_ok().await, "", all_routes()).await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    s.write_all(&out).await.unwrap();
    let (kind, _, _, payload) = within_secs(5, "server SETTINGS", read_h2_frame(&mut s))
        .await
        .expect("a frame");
    assert_eq!(kind, 0x4);
    let entries: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            )
        })
        .collect();
    assert!(entries.contains(&(0x3, 100)), "{entries:?}");
    assert!(entries.contains(&(0x6, 65536)), "{entries:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn idle_h2c_connection_is_closed_after_keepalive_timeout() {
    let h = start_listen(
        upstream_ok().await,
        "keepalive_timeout = \"1s\"\n",
        all_routes(),
    )
    .await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    let mut out = H2_PREFACE.to_vec();
    out.extend(h2_frame(0x4, 0, 0, &[]));
    out.extend(h2_frame(0x1, 0x5, 1, &h2_get_headers()));
    s.write_all(&out).await.unwrap();
    // one request answered, then nothing: the connection is closed (pingora drops an
    // idle h2 connection without a GOAWAY)
    let mut answered = false;
    within_secs(6, "idle h2 connection closed", async {
        while let Some((kind, flags, stream, _)) = read_h2_frame(&mut s).await {
            answered |= kind == 0x0 && stream == 1 && flags & 1 == 1;
        }
    })
    .await;
    assert!(
        answered,
        "the request before the idle period was not answered"
    );
    h.shutdown().await;
}

#[test]
fn connection_limits_are_validated_with_their_position() {
    let parse = |listen: &str| {
        rotagate::config::parse(
            &format!("[listen]\n{listen}\n[upstream]\nurl = \"http://127.0.0.1:3000\"\n"),
            std::path::Path::new("t.toml"),
        )
    };
    let c = parse("").unwrap();
    let l = c.listen.limits;
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.keepalive_timeout, Duration::from_secs(60));
    assert_eq!(l.body_timeout, Duration::from_secs(60));
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.h2_max_concurrent_streams, 100);
    let c = parse("header_timeout = \"1500ms\"\nmax_connections = 3\n").unwrap();
    assert_eq!(c.listen.limits.header_timeout, Duration::from_millis(1500));
    assert_eq!(c.listen.limits.max_connections, 3);
    for (bad, want) in [
        ("header_timeout = \"0s\"", "t.toml:2:18: `listen.header_timeout`: expected a duration above zero"),
        ("keepalive_timeout = \"soon\"", "t.toml:2:21: `listen.keepalive_timeout`: expected a duration"),
        ("max_connections = 0", "t.toml:2:19: `listen.max_connections`: expected a count between 1 and 1000000, found 0"),
        ("h2_max_concurrent_streams = 100000", "`listen.h2_max_concurrent_streams`: expected a count between 1 and 10000"),
        ("body_timeout = 5", "`listen.body_timeout`"),
    ] {
        let e = parse(bad).expect_err(bad).to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

// ---- desync

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let h = start_listen(echo_path_upstream().await, "", all_routes()).await;
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    // three requests in one write, the middle one with a body
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    for want in ["/one", "/two", "/three"] {
        let r = within_secs(5, "pipelined answer", read_one_response(&mut s)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{want}: {r:?}");
        assert!(
            r.ends_with(want),
            "answers out of order: wanted {want}, got {r:?}"
        );
    }
    // and the connection stays usable
    s.write_all(b"GET /four HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = within_secs(5, "after pipelining", read_one_response(&mut s)).await;
    assert!(r.ends_with("/four"), "{r:?}");
    let seen: Vec<String> = h.upstream.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(seen, ["/one", "/two", "/three", "/four"]);
    h.shutdown().await;
}

/// A request rotagate refuses itself, with a second request hidden in its body.
async fn smuggle(h: &Harness, refused_head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(h.addr()).await.unwrap();
    let mut req = refused_head.as_bytes().to_vec();
    req.extend_from_slice(body);
    s.write_all(&req).await.unwrap();
    let got = within_secs(5, "refusal then close", read_to_close(&mut s)).await;
    String::from_utf8_lossy(&got).to_string()
}

#[tokio::test]
async fn a_refused_request_never_runs_the_request_hidden_in_its_body() {
    let h = start_listen(
        echo_path_upstream().await,
        "public_origin = \"https://app.example.com\"\nmax_header_bytes = 2048\n",
        all_routes(),
    )
    .await;
    let hidden = b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n";

    // CSRF refusal, Content-Length body
    let head = format!(
        "POST /account HTTP/1.1\r\nHost: app.example.com\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        hidden.len()
    );
    let got = smuggle(&h, &head, hidden).await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");

    // CSRF refusal, chunked body
    let mut chunked = format!("{:x}\r\n", hidden.len()).into_bytes();
    chunked.extend_from_slice(hidden);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let got = smuggle(
        &h,
        "POST /account HTTP/1.1\r\nHost: app.example.com\r\nOrigin: https://evil.example\r\nTransfer-Encoding: chunked\r\n\r\n",
        &chunked,
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 403"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");

    // 431 for a header block over the limit, with a body
    let head = format!(
        "POST /account HTTP/1.1\r\nHost: app.example.com\r\nX-Big: {}\r\nContent-Length: {}\r\n\r\n",
        "b".repeat(3000),
        hidden.len()
    );
    let got = smuggle(&h, &head, hidden).await;
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got}");

    let seen: Vec<String> = h.upstream.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(
        !seen.iter().any(|u| u.contains("secret")),
        "the hidden request reached the upstream: {seen:?}"
    );
    assert!(seen.is_empty(), "{seen:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_refused_upload_still_reads_its_answer() {
    // RFC 9112 §9.6: closing with unread request bytes makes the kernel reset the
    // connection, and a client still sending its body gets EPIPE instead of the answer.
    // A real client (hyper, via reqwest) uploads 8 MB that rotagate refuses (CSRF)
    // after the header: every attempt must come back as the 403.
    let h = start_listen(
        echo_path_upstream().await,
        "public_origin = \"https://app.example.com\"\n",
        all_routes(),
    )
    .await;
    for attempt in 0..8 {
        let r = within(
            "refused upload",
            h.client
                .post(h.url("/account"))
                .header("host", "app.example.com")
                .header("origin", "https://evil.example")
                .body(vec![b'z'; 8 * 1024 * 1024])
                .send(),
        )
        .await;
        match r {
            Ok(r) => assert_eq!(r.status(), 403, "attempt {attempt}"),
            Err(e) => panic!("attempt {attempt}: the answer was lost: {e:?}"),
        }
    }
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_connection_events_total{event=\"lingering_close\"}"),
        "{m}"
    );
    assert!(h.upstream.seen().is_empty());
    h.shutdown().await;
}

// ---- the real binary: accept errors and logs

struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    lines: std::sync::mpsc::Receiver<String>,
    all: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    /// Runs `rotagate run` through `sh -c` (so a test can set `ulimit`), with `env`.
    fn start(
        config: &std::path::Path,
        shell_prefix: &str,
        format: &str,
        env: &[(&str, &str)],
    ) -> Proc {
        let bin = env!("CARGO_BIN_EXE_rotagate");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "{shell_prefix} exec \"{bin}\" --log-format {format} run -c \"{}\"",
                config.display()
            ))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
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
        let (tx, lines) = std::sync::mpsc::channel();
        let all = Arc::new(std::sync::Mutex::new(Vec::new()));
        let all2 = all.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                all2.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            proxy,
            admin,
            lines,
            all,
        }
    }

    /// Blocks until a log line contains `needle` (bounded).
    fn wait_log(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no log line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// CPU time (user + system) the process has used so far.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // fields after the parenthesised command name; utime and stime are 14 and 15
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on Linux
        Duration::from_millis(ticks * 10)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a log line without terminal colour codes (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

async fn metrics_of(admin: SocketAddr) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn accept_errors_back_off_instead_of_spinning() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        listen_config(
            up.addr,
            "threads = 1\nheader_timeout = \"60s\"\n",
            all_routes(),
        ),
    )
    .unwrap();
    // few file descriptors: the proxy runs out of them long before max_connections
    let p = Proc::start(&cfg, "ulimit -n 48 &&", "json", &[]);
    // hold more connections than the process has descriptors; the kernel completes
    // their handshakes (listen backlog), the proxy cannot accept them all
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(TcpStream::connect(p.proxy).await.unwrap());
    }
    // wait until the proxy reports running out, then watch its CPU for a second
    p.wait_log("accept failed");
    let cpu_before = p.cpu_time();
    let wall = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let busy = p.cpu_time().saturating_sub(cpu_before);
    let wall = wall.elapsed();
    assert!(
        busy < wall / 5,
        "the accept loop spins on EMFILE: {busy:?} CPU in {wall:?}"
    );
    // descriptors come back: the proxy recovers and serves
    drop(held);
    let r = within(
        "served after EMFILE",
        client().get(format!("http://{}/ok", p.proxy)).send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let m = within("metrics", metrics_of(p.admin)).await;
    let errors: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("rotagate_connection_events_total{event=\"accept_error\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("accept errors not counted: {m}"));
    assert!(
        (1..200).contains(&errors),
        "{errors} accept errors in about a second"
    );
}

/// An upstream that misbehaves by path: `/hang` never answers, `/cut` closes in the
/// middle of its body, `/garbage` sends an unparsable header after a `Set-Cookie`,
/// everything else gets a normal answer that sets a cookie.
async fn bad_upstream(set_cookie_secret: String) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                a = l.accept() => match a { Ok(a) => a, Err(_) => return },
                _ = &mut stopped => return, // drops the listener: connects are refused
            };
            let secret = set_cookie_secret.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let path = path.split('?').next().unwrap_or("/").to_string();
                match path.as_str() {
                    "/hang" => {
                        // hold the connection open, silent, until the proxy gives up
                        let _ = s.read(&mut chunk).await;
                    }
                    "/cut" => {
                        let _ = s
                            .write_all(format!("HTTP/1.1 200 OK\r\nSet-Cookie: app={secret}\r\nContent-Length: 100\r\n\r\nonly part").as_bytes())
                            .await;
                    }
                    "/garbage" => {
                        let _ = s
                            .write_all(format!("HTTP/1.1 200 OK\r\nSet-Cookie: app={secret}\r\nthis is not a header\r\n\r\n").as_bytes())
                            .await;
                    }
                    _ => {
                        let _ = s
                            .write_all(format!("HTTP/1.1 200 OK\r\nSet-Cookie: app={secret}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes())
                            .await;
                    }
                }
            });
        }
    });
    (addr, stop)
}

/// A value that appears nowhere else: a tag and 192 random bits.
fn random_token(tag: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = tag.to_string();
    for _ in 0..3 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// What identifies the access line of a request for `path` in each log format.
fn access_needle(format: &str, path: &str) -> String {
    if format == "json" {
        format!("\"path\":\"{path}\"")
    } else {
        format!("path={path} ")
    }
}

/// One run of the real binary with `filter` (`None` = the default filter): requests
/// that carry secrets hit failing upstreams; returns every log line.
async fn log_run(format: &str, filter: Option<&str>) -> (Vec<String>, [String; 4]) {
    let q = random_token("QRY");
    let c = random_token("CKE");
    let b = random_token("BRR");
    let sc = random_token("SET");
    let (up, stop_upstream) = bad_upstream(sc.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rotagate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\nthreads = 1\n\n[upstream]\nurl = \"http://{up}\"\nread_timeout = \"1s\"\nconnect_timeout = \"1s\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
            all_routes()
        ),
    )
    .unwrap();
    let env: Vec<(&str, &str)> = filter.map(|f| ("RUST_LOG", f)).into_iter().collect();
    let p = Proc::start(&cfg, "", format, &env);
    let send = |path: &str| {
        let url = format!("http://{}{path}?token={q}&x=1", p.proxy);
        client()
            .get(url)
            .header("cookie", format!("authjs.session-token={c}; other={c}"))
            .header("authorization", format!("Bearer {b}"))
            .send()
    };
    let mut status = Vec::new();
    for path in ["/hang", "/cut", "/garbage", "/fine"].iter() {
        let r = within("request", send(path)).await;
        status.push(r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0));
        // the access line is written after pingora's own error line for the request
        p.wait_log(&access_needle(format, path));
    }
    // a client that goes away while its request waits on the upstream
    let mut s = TcpStream::connect(p.proxy).await.unwrap();
    s.write_all(
        format!("GET /hang-gone?token={q} HTTP/1.1\r\nHost: x\r\nCookie: authjs.session-token={c}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    drop(s);
    p.wait_log(&access_needle(format, "/hang-gone"));
    // then the upstream goes away entirely: connect refused
    stop_upstream.send(()).unwrap();
    let r = within("request", send("/refused")).await;
    status.push(r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0));
    p.wait_log(&access_needle(format, "/refused"));
    // a request pingora itself refuses as malformed, carrying the secrets
    let mut s = TcpStream::connect(p.proxy).await.unwrap();
    s.write_all(
        format!(
            "GET /bad?token={q} HTTP/1.1\r\nHost: x\r\nCookie: authjs.session-token={c}\r\nBad\x01Header: {b}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let bad = within("malformed request answered", read_to_close(&mut s)).await;
    // a last ordinary request: its access line comes after every line before it
    let r = within("request", send("/last")).await;
    status.push(r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0));
    p.wait_log(&access_needle(format, "/last"));
    // /hang times out (504); /garbage and /refused are bad gateways; /cut's header
    // got through before its body broke off
    assert_eq!(
        (status[0], status[1], status[2], status[4]),
        (504, 200, 502, 502),
        "{status:?}"
    );
    assert!(String::from_utf8_lossy(&bad).starts_with("HTTP/1.1 400"));
    let lines = p.all.lock().unwrap().clone();
    (lines, [q, c, b, sc])
}

fn assert_no_secret(lines: &[String], secrets: &[String; 4], what: &str) {
    assert!(lines.len() > 5, "{what}: too few log lines: {lines:?}");
    for line in lines {
        for s in secrets {
            assert!(
                !line.contains(s.as_str()),
                "{what}: a secret ({}…) is in a log line: {line}",
                &s[..3]
            );
        }
        assert!(
            !line.contains("token="),
            "{what}: a query string is logged: {line}"
        );
    }
}

#[tokio::test]
async fn no_token_or_cookie_value_in_any_log_line() {
    let (lines, secrets) = log_run("json", None).await;
    assert_no_secret(&lines, &secrets, "default filter");
    assert!(
        lines.iter().any(|l| l.contains("upstream")),
        "the failures are logged at all: {lines:#?}"
    );
    let (lines, secrets) = log_run("pretty", Some("debug")).await;
    assert_no_secret(&lines, &secrets, "RUST_LOG=debug");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("client side of the request failed")),
        "debug lines are written: {lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| (l.contains("DEBUG") || l.contains("TRACE")) && l.contains("pingora")),
        "pingora's debug lines print raw headers and stay off: {lines:#?}"
    );
    let (lines, secrets) = log_run("json", Some("trace")).await;
    assert_no_secret(&lines, &secrets, "RUST_LOG=trace");
}
