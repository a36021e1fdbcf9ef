//! Test harness: a real upstream HTTP server and the real proxy on loopback ephemeral
//! ports, and helpers for real HTTP clients. No sleeps: tests synchronise on channels,
//! on the proxy's own announcements, and on the admin listener's long-poll.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rotagate::clock::ManualClock;
use rotagate::server::{self, RunningProxy, StartOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A response body type any handler can build.
pub type Body = BoxBody<Bytes, std::io::Error>;
/// Upstream request handler.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<bin>").to_string())
    }
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<bin>").to_string())
            .collect()
    }
}

/// A real HTTP/1.1 (and h2c) upstream on 127.0.0.1:0.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn text(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(full(body.to_string()))
        .unwrap()
}

/// An upstream answering 200 "ok from upstream" to everything.
pub async fn upstream_ok() -> Upstream {
    upstream(Arc::new(|_req| {
        Box::pin(async { text(200, "ok from upstream") })
    }))
    .await
}

/// Starts an upstream with `handler`; every request is recorded before the handler runs.
pub async fn upstream(handler: Handler) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen2, conns2) = (seen.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            conns2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let handler = handler.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    seen.lock().unwrap().push(Seen {
                        method: req.method().to_string(),
                        uri: req.uri().to_string(),
                        headers: req.headers().clone(),
                    });
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        seen,
        connections,
    }
}

/// A proxy in front of an upstream, with a manual clock and its config in a temp dir.
pub struct Harness {
    pub proxy: Option<RunningProxy>,
    pub upstream: Upstream,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub config_path: std::path::PathBuf,
    pub client: reqwest::Client,
}

/// Unix time the manual clock starts at in tests (2026-11-01T00:00:00Z).
pub const T0: u64 = 1_793_491_200;

/// The config header every test shares: loopback ephemeral listeners and the upstream.
pub fn base_config(upstream: SocketAddr) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"http://{upstream}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n"
    )
}

/// Like [`base_config`], with `[listen]` keys of the test's own (`listen`), then `rest`.
pub fn config_with_listen(upstream: SocketAddr, listen: &str, rest: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{listen}\n\n[upstream]\nurl = \"http://{upstream}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n{rest}"
    )
}

impl Harness {
    /// Starts the proxy with `base_config(upstream)` followed by `extra` TOML.
    pub async fn start(upstream: Upstream, extra: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, upstream, extra).await
    }

    /// Like [`Harness::start`] with files (secrets, keys) already written in `dir`.
    pub async fn start_in(dir: tempfile::TempDir, upstream: Upstream, extra: &str) -> Harness {
        let text = format!("{}{}", base_config(upstream.addr), extra);
        Self::start_text(dir, upstream, &text).await
    }

    /// Starts the proxy on the complete config file `text` (for tests with `[listen]`
    /// keys of their own, see [`config_with_listen`]), files already written in `dir`.
    pub async fn start_text(dir: tempfile::TempDir, upstream: Upstream, text: &str) -> Harness {
        let config_path = dir.path().join("rotagate.toml");
        std::fs::write(&config_path, text).unwrap();
        let cfg = rotagate::config::load(&config_path)
            .unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let clock = Arc::new(ManualClock::new(T0));
        let opts = StartOptions {
            clock: clock.clone(),
            config_path: Some(config_path.clone()),
            drain_timeout: Duration::from_secs(5),
            watch: false,
        };
        let proxy = server::start(cfg, opts).await.unwrap();
        Harness {
            proxy: Some(proxy),
            upstream,
            clock,
            dir,
            config_path,
            client: client(),
        }
    }

    pub fn proxy(&self) -> &RunningProxy {
        self.proxy.as_ref().unwrap()
    }
    pub fn addr(&self) -> SocketAddr {
        self.proxy().proxy_addr
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy().admin_addr.unwrap(), path)
    }
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    /// Replaces the config file body after the shared header.
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(
            &self.config_path,
            format!("{}{}", base_config(self.upstream.addr), extra),
        )
        .unwrap();
    }
    pub async fn shutdown(mut self) {
        if let Some(p) = self.proxy.take() {
            p.shutdown().await;
        }
    }
}

/// A client that never follows redirects and keeps no cookies (tests read them raw).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sends raw bytes on a fresh connection and reads until the server closes or
/// `Content-Length` bytes of body arrived. Returns the raw response text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_one_response(&mut s).await
}

/// Reads exactly one HTTP/1.1 response (headers + Content-Length body) from `s`.
pub async fn read_one_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap();
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return String::from_utf8_lossy(&buf).to_string();
        }
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            return String::from_utf8_lossy(&buf).to_string();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bounds a step that must complete; a hang becomes a test failure, not a stuck CI.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A fresh key pair made by Node's crypto (`rsa`, `ec` P-256 or `ed25519`), as
/// (PKCS#8 private PEM, SPKI public PEM). Test keys are made per run, never committed.
pub fn node_keypair(kind: &str) -> (String, String) {
    let opts = match kind {
        "rsa" => "{modulusLength: 2048}",
        "ec" => "{namedCurve: 'P-256'}",
        _ => "{}",
    };
    let script = format!(
        "const c=require('crypto');const k=c.generateKeyPairSync('{kind}',{opts});\
         process.stdout.write(JSON.stringify([k.privateKey.export({{type:'pkcs8',format:'pem'}}),k.publicKey.export({{type:'spki',format:'pem'}})]))"
    );
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(script)
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: (String, String) = serde_json::from_slice(&out.stdout).unwrap();
    v
}

/// Sends GET requests for `paths` one after another on one keep-alive connection,
/// then one more. The proxy serves a connection's requests in order and records a
/// request's metrics before it reads the next, so when the last answer arrives the
/// metrics of `paths` are in: a synchronisation point, not a sleep.
pub async fn get_and_settle(addr: SocketAddr, paths: &[&str]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    // the settling request is refused with 400 before any rule runs, so it never counts
    // as a 2xx or under a test's route names
    for p in paths.iter().chain(std::iter::once(&"/%2Fsettle")) {
        s.write_all(format!("GET {p} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        out.push(read_one_response(&mut s).await);
    }
    out.pop();
    out
}

/// Runs `tests/interop/<script>` with Node: one JSON request on stdin, one JSON
/// answer on stdout. Fails with a clear message when the npm packages are missing
/// (`npm ci --prefix tests/interop`, which the test command runs) or the tool errs.
pub fn node_tool(script: &str, package: &str, request: serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    assert!(
        std::path::Path::new("tests/interop/node_modules")
            .join(package)
            .exists(),
        "{package} is not installed: run `npm ci --prefix tests/interop` (scripts/test.sh does)"
    );
    let mut child = std::process::Command::new("node")
        .arg(format!("tests/interop/{script}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("node is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{script} said {:?}", String::from_utf8_lossy(&out.stdout)));
    assert!(v.get("error").is_none(), "{script}: {v}");
    v
}

/// An HS256 JWS signed with the test's own HMAC (not rotagate's JWT code).
pub fn hs256_token(secret: &str, header: &serde_json::Value, claims: &serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "{input}.{}",
        b64.encode(ring::hmac::sign(&key, input.as_bytes()))
    )
}

/// The claims of an HS256 token, after checking its signature with the test's own HMAC.
pub fn hs256_claims(secret: &str, token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (input, sig) = token.rsplit_once('.').unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, input.as_bytes(), &b64.decode(sig).unwrap())
        .expect("signature verifies");
    let (_, p) = input.split_once('.').unwrap();
    serde_json::from_slice(&b64.decode(p).unwrap()).unwrap()
}

/// Every `Set-Cookie` line of a response, in order.
pub fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The value of cookie `name` among a response's `Set-Cookie` lines, if set (not deleted).
pub fn set_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(resp).iter().find_map(|l| {
        let (k, rest) = l.split_once('=')?;
        let v = rest.split(';').next()?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// True when the response deletes cookie `name` (an empty value with `Max-Age=0`).
pub fn deletes(resp: &reqwest::Response, name: &str) -> bool {
    set_cookies(resp)
        .iter()
        .any(|l| l.starts_with(&format!("{name}=;")) && l.contains("Max-Age=0"))
}

/// The value of the first line of a Prometheus text that starts with `line_start`.
pub fn metric_value(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
