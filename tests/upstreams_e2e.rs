//! Several upstreams behind one rotagate (issue 13, items 2 and 3): routes choosing
//! named upstreams, round robin over `urls`, passive ejection and connect retries for
//! idempotent requests only, https upstreams verified against a CA made at test time,
//! active health checks and `/readyz`, the state in `/metrics` and `/config`, and
//! `explain`. Real upstream servers, the real proxy, real clients; no sleeps.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An upstream that answers `200 <name>` to everything.
async fn named(name: &'static str) -> Upstream {
    upstream(Arc::new(move |_req| {
        Box::pin(async move { text(200, name) })
    }))
    .await
}

/// A loopback address that refuses connections: a port that was bound, then closed.
async fn refusing_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn body(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

#[tokio::test]
async fn routes_choose_their_upstream_and_the_rest_go_to_the_default() {
    let default = named("default app").await;
    let api = named("api app").await;
    let extra = format!(
        "[upstreams.api]\nurl = \"http://{}\"\n\n[[route]]\nname = \"api\"\nmatch = \"/api/:p*\"\nupstream = \"api\"\n\n[[route]]\nname = \"pages\"\nmatch = \"/pages/:p*\"\n",
        api.addr
    );
    let h = Harness::start(default, &extra).await;
    assert_eq!(
        body(h.get("/api/users").await).await,
        (200, "api app".into())
    );
    // a route without `upstream`, and a request no route matches: the default
    assert_eq!(
        body(h.get("/pages/a").await).await,
        (200, "default app".into())
    );
    assert_eq!(
        body(h.get("/other").await).await,
        (200, "default app".into())
    );
    assert_eq!(api.count(), 1);
    assert_eq!(api.last().uri, "/api/users");
    assert_eq!(h.upstream.count(), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn urls_are_served_in_turn() {
    let (a, b) = (named("a").await, named("b").await);
    let extra = format!(
        "[upstreams.pair]\nurls = [\"http://{}\", \"http://{}\"]\n\n[[route]]\nmatch = \"/:p*\"\nupstream = \"pair\"\n",
        a.addr, b.addr
    );
    let h = Harness::start(upstream_ok().await, &extra).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(body(h.get("/x").await).await.1);
    }
    assert_eq!(answers, ["a", "b", "a", "b", "a", "b"]);
    assert_eq!((a.count(), b.count()), (3, 3));
    h.shutdown().await;
}

#[tokio::test]
async fn a_refusing_address_is_retried_for_gets_never_for_posts() {
    let good = named("good").await;
    let dead = refusing_addr().await;
    // eject_for = "0s": no ejection, so requests keep reaching the dead address and
    // the retry rule alone decides
    let extra = format!(
        "[upstreams.pair]\nurls = [\"http://{dead}\", \"http://{}\"]\neject_for = \"0s\"\n\n[[route]]\nmatch = \"/:p*\"\nupstream = \"pair\"\n",
        good.addr
    );
    let h = Harness::start(upstream_ok().await, &extra).await;
    // every GET gets an answer: one whose turn is the dead address is sent again
    for _ in 0..4 {
        assert_eq!(body(h.get("/read").await).await, (200, "good".into()));
    }
    let m = h.metrics().await;
    let failures =
        format!("rotagate_upstream_connect_failures_total{{address=\"{dead}\",upstream=\"pair\"}}");
    assert_eq!(metric_value(&m, &failures), Some(2.0), "{m}");
    assert_eq!(
        metric_value(&m, "rotagate_upstream_retries_total{upstream=\"pair\"}"),
        Some(2.0),
        "{m}"
    );
    // two POSTs: the one whose turn is the dead address is not sent again (502)
    let before = good.count();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = h
            .client
            .post(h.url("/write"))
            .body("x=1")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(
        good.count() - before,
        1,
        "the failed POST went nowhere else"
    );
    let m = h.metrics().await;
    assert_eq!(
        metric_value(&m, "rotagate_upstream_retries_total{upstream=\"pair\"}"),
        Some(2.0),
        "no retry for a POST: {m}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_refusing_address_is_ejected_for_a_while() {
    let good = named("good").await;
    let dead = refusing_addr().await;
    let extra = format!(
        "[upstreams.pair]\nurls = [\"http://{dead}\", \"http://{}\"]\neject_for = \"1h\"\n\n[[route]]\nmatch = \"/:p*\"\nupstream = \"pair\"\n",
        good.addr
    );
    let h = Harness::start(upstream_ok().await, &extra).await;
    assert_eq!(body(h.get("/first").await).await, (200, "good".into()));
    let cfg: serde_json::Value = h
        .client
        .get(h.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pair = &cfg["upstreams"][1];
    assert_eq!(pair["name"], "pair", "{cfg}");
    assert_eq!(pair["addresses"][0]["address"], dead.to_string());
    assert_eq!(pair["addresses"][0]["ejected"], true, "{cfg}");
    assert_eq!(pair["addresses"][1]["ejected"], false, "{cfg}");
    // while ejected, the dead address gets no turn: a POST now reaches the good one,
    // and no further connect fails
    for _ in 0..4 {
        let r = h.client.post(h.url("/w")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = h.metrics().await;
    let failures =
        format!("rotagate_upstream_connect_failures_total{{address=\"{dead}\",upstream=\"pair\"}}");
    assert_eq!(metric_value(&m, &failures), Some(1.0), "{m}");
    assert_eq!(good.count(), 5);
    h.shutdown().await;
}

/// A CA and a server certificate it signed for `names` (DNS names or IP literals).
struct Pki {
    ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn pki(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rotagate upstream test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// An https upstream (tokio-rustls + hyper) serving `pki`'s certificate, answering
/// `200 <name>`; returns its address and how many requests it answered.
async fn tls_upstream(
    pki: &Pki,
    name: &'static str,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    tls_upstream_with(pki, name, Arc::new(|_| 200)).await
}

/// Like [`tls_upstream`], answering with the status `status(path)` gives.
async fn tls_upstream_with(
    pki: &Pki,
    name: &'static str,
    status: Arc<dyn Fn(&str) -> u16 + Send + Sync>,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let s = serve_tls(pki, "127.0.0.1".parse().unwrap(), name, status).await;
    (s.addr, s.served)
}

/// A running https test upstream.
struct TlsServer {
    addr: SocketAddr,
    /// Requests answered.
    served: Arc<std::sync::atomic::AtomicUsize>,
    /// The server name (SNI) of each handshake that completed.
    sni: Arc<std::sync::Mutex<Vec<Option<String>>>>,
}

async fn serve_tls(
    pki: &Pki,
    bind: std::net::IpAddr,
    name: &'static str,
    status: Arc<dyn Fn(&str) -> u16 + Send + Sync>,
) -> TlsServer {
    use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(pki.cert_der.clone())],
        PrivatePkcs8KeyDer::from(pki.key_der.clone()).into(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((bind, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sni: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let (served2, sni2) = (served.clone(), sni.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, served, status, sni) = (
                acceptor.clone(),
                served2.clone(),
                status.clone(),
                sni2.clone(),
            );
            tokio::spawn(async move {
                // a client that refuses the certificate ends the handshake: not an error here
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                sni.lock()
                    .unwrap()
                    .push(tls.get_ref().1.server_name().map(str::to_string));
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    served.fetch_add(1, Ordering::SeqCst);
                    let code = status(req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(text(code, name)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsServer { addr, served, sni }
}

#[tokio::test]
async fn the_server_name_is_the_url_host() {
    // where `localhost` resolves first here (127.0.0.1 or ::1): the proxy connects there
    let ip = std::net::ToSocketAddrs::to_socket_addrs("localhost:1")
        .unwrap()
        .next()
        .unwrap()
        .ip();
    let pki = pki(&["localhost"]);
    let server = serve_tls(&pki, ip, "by name", Arc::new(|_| 200)).await;
    let port = server.addr.port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let extra = format!(
        "[upstreams.named]\nurl = \"https://localhost:{port}\"\nca = \"file:ca.pem\"\n\n[[route]]\nmatch = \"/n\"\nupstream = \"named\"\n"
    );
    let h = Harness::start_in(dir, upstream_ok().await, &extra).await;
    assert_eq!(body(h.get("/n").await).await, (200, "by name".into()));
    assert_eq!(*server.sni.lock().unwrap(), [Some("localhost".to_string())]);
    h.shutdown().await;
}

#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca() {
    let trusted = pki(&["127.0.0.1"]);
    let stranger = pki(&["127.0.0.1"]);
    let wrong_name = pki(&["other.example"]);
    let (good, good_served) = tls_upstream(&trusted, "over tls").await;
    let (untrusted, untrusted_served) = tls_upstream(&stranger, "untrusted").await;
    let (misnamed, _) = tls_upstream(&wrong_name, "misnamed").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &trusted.ca_pem).unwrap();
    std::fs::write(dir.path().join("wrong-name-ca.pem"), &wrong_name.ca_pem).unwrap();
    let extra = format!(
        "[upstreams.secure]\nurl = \"https://{good}\"\nca = \"file:ca.pem\"\n\n\
         [upstreams.untrusted]\nurl = \"https://{untrusted}\"\nca = \"file:ca.pem\"\n\n\
         [upstreams.misnamed]\nurl = \"https://{misnamed}\"\nca = \"file:wrong-name-ca.pem\"\n\n\
         [upstreams.system]\nurl = \"https://{good}\"\n\n\
         [[route]]\nmatch = \"/secure\"\nupstream = \"secure\"\n\
         [[route]]\nmatch = \"/untrusted\"\nupstream = \"untrusted\"\n\
         [[route]]\nmatch = \"/misnamed\"\nupstream = \"misnamed\"\n\
         [[route]]\nmatch = \"/system\"\nupstream = \"system\"\n"
    );
    let h = Harness::start_in(dir, upstream_ok().await, &extra).await;
    assert_eq!(body(h.get("/secure").await).await, (200, "over tls".into()));
    // a certificate from another CA, one for another name, and the test CA against
    // the system roots: each refused before any request is sent
    for path in ["/untrusted", "/misnamed", "/system"] {
        let r = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
    }
    assert_eq!(good_served.load(Ordering::SeqCst), 1);
    assert_eq!(untrusted_served.load(Ordering::SeqCst), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn health_probes_over_tls_trust_what_requests_trust() {
    let trusted = pki(&["127.0.0.1"]);
    let stranger = pki(&["127.0.0.1"]);
    let up_flag = Arc::new(AtomicBool::new(false));
    let flag = up_flag.clone();
    let (good, _) = tls_upstream_with(
        &trusted,
        "secure",
        Arc::new(move |_| {
            if flag.load(Ordering::SeqCst) {
                200
            } else {
                503
            }
        }),
    )
    .await;
    let (untrusted, _) = tls_upstream(&stranger, "untrusted").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &trusted.ca_pem).unwrap();
    let health = "health_path = \"/h\"\nhealth_interval = \"200ms\"\nhealth_timeout = \"200ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let extra = format!(
        "[upstreams.secure]\nurl = \"https://{good}\"\nca = \"file:ca.pem\"\n{health}\n\
         [upstreams.untrusted]\nurl = \"https://{untrusted}\"\nca = \"file:ca.pem\"\n{health}\n"
    );
    let h = Harness::start_in(dir, upstream_ok().await, &extra).await;
    // both go down: one answers 503, the other's certificate is refused
    let cfg = within("both down", config_json(&h, "?after_health_changes=1")).await;
    let healthy = |cfg: &serde_json::Value, name: &str| {
        cfg["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .map(|u| u["addresses"][0]["healthy"].clone())
            .unwrap()
    };
    assert_eq!(healthy(&cfg, "secure"), false, "{cfg}");
    assert_eq!(healthy(&cfg, "untrusted"), false, "{cfg}");
    // the trusted one answers 200 again: a probe over TLS with the `ca` passes
    up_flag.store(true, Ordering::SeqCst);
    let cfg = within("secure up", config_json(&h, "?after_health_changes=2")).await;
    assert_eq!(cfg["health_changes"], 3, "{cfg}");
    assert_eq!(healthy(&cfg, "secure"), true, "{cfg}");
    assert_eq!(healthy(&cfg, "untrusted"), false, "{cfg}");
    h.shutdown().await;
}

/// The complete config of the health tests: the default upstream health-checked.
fn health_config(up: SocketAddr) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"http://{up}\"\nhealth_path = \"/healthz\"\nhealth_interval = \"100ms\"\nhealth_timeout = \"100ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 2\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )
}

async fn config_json(h: &Harness, query: &str) -> serde_json::Value {
    h.client
        .get(h.admin_url(&format!("/config{query}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_checks_take_the_default_upstream_out_of_readiness_and_back() {
    let up_flag = Arc::new(AtomicBool::new(true));
    let flag = up_flag.clone();
    let app = upstream(Arc::new(move |req| {
        let healthy = flag.load(Ordering::SeqCst);
        Box::pin(async move {
            match (req.uri().path(), healthy) {
                ("/healthz", true) => text(200, "ok"),
                ("/healthz", false) => text(503, "down"),
                _ => text(200, "page"),
            }
        })
    }))
    .await;
    let addr = app.addr;
    let h = Harness::start_text(tempfile::tempdir().unwrap(), app, &health_config(addr)).await;
    let ready = |h: &Harness| {
        let c = h.client.get(h.admin_url("/readyz"));
        async move { c.send().await.unwrap().status().as_u16() }
    };
    // addresses start healthy: ready from the start
    assert_eq!(ready(&h).await, 200);
    // the app's health endpoint fails: after two failed probes the address is down
    up_flag.store(false, Ordering::SeqCst);
    let cfg = within(
        "the address going down",
        config_json(&h, "?after_health_changes=0"),
    )
    .await;
    assert_eq!(cfg["health_changes"], 1, "{cfg}");
    assert_eq!(cfg["upstreams"][0]["name"], "default");
    assert_eq!(
        cfg["upstreams"][0]["addresses"][0]["healthy"], false,
        "{cfg}"
    );
    assert_eq!(cfg["upstreams"][0]["health_check"]["path"], "/healthz");
    assert_eq!(ready(&h).await, 503);
    // the probes are plain GETs of the health path, with rotagate's agent
    let probe = h
        .upstream
        .seen()
        .into_iter()
        .find(|s| s.uri == "/healthz")
        .unwrap();
    assert_eq!(probe.method, "GET");
    assert_eq!(
        probe.header("user-agent").as_deref(),
        Some("rotagate-health-check")
    );
    let m = h.metrics().await;
    let gauge = format!("rotagate_upstream_healthy{{address=\"{addr}\",upstream=\"default\"}}");
    assert_eq!(metric_value(&m, &gauge), Some(0.0), "{m}");
    let fails = format!(
        "rotagate_upstream_health_checks_total{{address=\"{addr}\",result=\"fail\",upstream=\"default\"}}"
    );
    assert!(metric_value(&m, &fails).unwrap_or(0.0) >= 2.0, "{m}");
    // fail open: with no healthy address requests are still tried (and served here)
    assert_eq!(body(h.get("/page").await).await, (200, "page".into()));

    // it recovers: one passed probe brings it back
    up_flag.store(true, Ordering::SeqCst);
    let cfg = within(
        "the address coming back",
        config_json(&h, "?after_health_changes=1"),
    )
    .await;
    assert_eq!(
        cfg["upstreams"][0]["addresses"][0]["healthy"], true,
        "{cfg}"
    );
    assert_eq!(ready(&h).await, 200);
    assert_eq!(metric_value(&h.metrics().await, &gauge), Some(1.0));
    h.shutdown().await;
}

#[tokio::test]
async fn an_unhealthy_address_gets_no_requests_while_another_is_healthy() {
    let sick = upstream(Arc::new(|req| {
        Box::pin(async move {
            if req.uri().path() == "/healthz" {
                text(500, "sick")
            } else {
                text(200, "sick")
            }
        })
    }))
    .await;
    let well = named("well").await;
    let extra = format!(
        "[upstreams.pair]\nurls = [\"http://{}\", \"http://{}\"]\nhealth_path = \"/healthz\"\nhealth_interval = \"200ms\"\nhealth_timeout = \"200ms\"\nunhealthy_threshold = 1\n\n[[route]]\nmatch = \"/:p*\"\nupstream = \"pair\"\n",
        sick.addr, well.addr
    );
    let h = Harness::start(upstream_ok().await, &extra).await;
    let cfg = within(
        "the sick address going down",
        config_json(&h, "?after_health_changes=0"),
    )
    .await;
    assert_eq!(
        cfg["upstreams"][1]["addresses"][0]["healthy"], false,
        "{cfg}"
    );
    for _ in 0..4 {
        assert_eq!(body(h.get("/x").await).await, (200, "well".into()));
    }
    assert!(sick.seen().iter().all(|s| s.uri == "/healthz"));
    // the default upstream has no health checks: readiness is not about `pair`
    assert_eq!(
        h.client
            .get(h.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_what_is_known_of_an_address() {
    let up_flag = Arc::new(AtomicBool::new(false));
    let flag = up_flag.clone();
    let app = upstream(Arc::new(move |_req| {
        let healthy = flag.load(Ordering::SeqCst);
        Box::pin(async move { text(if healthy { 200 } else { 503 }, "x") })
    }))
    .await;
    let addr = app.addr;
    let h = Harness::start_text(tempfile::tempdir().unwrap(), app, &health_config(addr)).await;
    within("down", config_json(&h, "?after_health_changes=0")).await;
    assert_eq!(
        h.client
            .get(h.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    // a reload of the same file: the address stays down (no fresh start as healthy)
    let generation = h.proxy().shared.reload().await.unwrap();
    assert_eq!(generation, 2);
    let cfg = config_json(&h, "").await;
    assert_eq!(cfg["generation"], 2);
    assert_eq!(
        cfg["upstreams"][0]["addresses"][0]["healthy"], false,
        "{cfg}"
    );
    assert_eq!(
        h.client
            .get(h.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    // the new generation's probes bring it back
    up_flag.store(true, Ordering::SeqCst);
    let cfg = within("up again", config_json(&h, "?after_health_changes=1")).await;
    assert_eq!(
        cfg["upstreams"][0]["addresses"][0]["healthy"], true,
        "{cfg}"
    );
    h.shutdown().await;
}

#[test]
fn explain_names_the_chosen_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotagate.toml");
    std::fs::write(
        &path,
        "[upstream]\nurl = \"http://127.0.0.1:3000\"\n\n[upstreams.api]\nurls = [\"http://127.0.0.1:4001\", \"http://127.0.0.1:4002\"]\n\n[[route]]\nname = \"api\"\nmatch = \"/api/:p*\"\nupstream = \"api\"\n",
    )
    .unwrap();
    let explain = |target: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
            .args(["explain", "-c", path.to_str().unwrap(), "GET", target])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = explain("/api/users");
    assert!(
        out.contains("upstream: \"api\" (the route's `upstream`): http://127.0.0.1:4001, http://127.0.0.1:4002 (round robin)"),
        "{out}"
    );
    let out = explain("/home");
    assert!(
        out.contains("upstream: \"default\" (no route matched: the default, [upstream]): http://127.0.0.1:3000"),
        "{out}"
    );
}

// configuration mistakes, in the style of tests/config_files.rs

fn err(text: &str) -> String {
    rotagate::config::parse(text, Path::new("test.toml"))
        .unwrap_err()
        .to_string()
}

const UP: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

#[test]
fn an_unknown_upstream_name_is_an_error_at_the_route_key() {
    let e = err(&format!(
        "{UP}[upstreams.api]\nurl = \"http://127.0.0.1:4000\"\n[[route]]\nmatch = \"/x\"\nupstream = \"apj\"\n"
    ));
    assert_eq!(
        e,
        "test.toml:7:12: `route[0].upstream`: expected the name of an upstream (default, api), found \"apj\""
    );
}

#[test]
fn url_and_urls_both_or_neither_are_errors() {
    let e = err(&format!(
        "{UP}[upstreams.api]\nurl = \"http://127.0.0.1:4000\"\nurls = [\"http://127.0.0.1:4001\"]\n"
    ));
    assert!(
        e.starts_with("test.toml:5:8: `upstreams.api.urls`: give either `url` or `urls`, not both"),
        "{e}"
    );
    let e = err(&format!("{UP}[upstreams.api]\nconnect_timeout = \"1s\"\n"));
    assert!(
        e.contains("`upstreams.api`: expected `url = \"http://host:port\"` or `urls = [...]`"),
        "{e}"
    );
    let e = err(&format!("{UP}[upstreams.api]\nurls = []\n"));
    assert!(
        e.contains("`upstreams.api.urls`: expected at least one URL"),
        "{e}"
    );
    let e = err(&format!(
        "{UP}[upstreams.api]\nurls = [\"http://127.0.0.1:1\", \"https://127.0.0.1:2\"]\n"
    ));
    assert!(
        e.contains("`upstreams.api.urls[1]`: every URL of one upstream uses the same scheme"),
        "{e}"
    );
}

#[test]
fn bad_names_and_ca_are_errors() {
    let e = err(&format!(
        "{UP}[upstreams.default]\nurl = \"http://127.0.0.1:4000\"\n"
    ));
    assert!(
        e.contains("`upstreams.default`: the name \"default\" is the `[upstream]` section's"),
        "{e}"
    );
    let e = err(&format!(
        "{UP}[upstreams.\"a b\"]\nurl = \"http://127.0.0.1:4000\"\n"
    ));
    assert!(
        e.contains("expected a name of letters, digits, `-` and `_`, found \"a b\""),
        "{e}"
    );
    let e = err(&format!(
        "{UP}[upstreams.api]\nurl = \"http://127.0.0.1:4000\"\nca = \"file:ca.pem\"\n"
    ));
    assert!(
        e.contains("`upstreams.api.ca`: `ca` applies to https:// upstreams only"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let e = rotagate::config::parse(
        &format!("{UP}[upstreams.api]\nurl = \"https://127.0.0.1:4000\"\nca = \"file:ca.pem\"\n"),
        &dir.path().join("rotagate.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`upstreams.api.ca`: expected a PEM file of CA certificates"),
        "{e}"
    );
}

#[test]
fn bad_health_keys_are_errors() {
    let e = err(&format!("{UP}healthy_threshold = 2\n"));
    assert!(
        e.contains("`upstream.healthy_threshold`: `healthy_threshold` configures active health checks: it needs `health_path`"),
        "{e}"
    );
    let e = err(&format!("{UP}health_path = \"healthz\"\n"));
    assert!(
        e.contains("`upstream.health_path`: expected a path starting with a single \"/\""),
        "{e}"
    );
    let e = err(&format!(
        "{UP}health_path = \"/h\"\nhealth_interval = \"0s\"\n"
    ));
    assert!(
        e.contains("`upstream.health_interval`: expected a duration greater than zero"),
        "{e}"
    );
    let e = err(&format!(
        "{UP}health_path = \"/h\"\nhealth_interval = \"1s\"\nhealth_timeout = \"5s\"\n"
    ));
    assert!(
        e.contains("`upstream.health_timeout`: expected at most `health_interval` (1000ms)"),
        "{e}"
    );
    let e = err(&format!(
        "{UP}health_path = \"/h\"\nunhealthy_threshold = 0\n"
    ));
    assert!(
        e.contains("`upstream.unhealthy_threshold`: expected a count between 1 and 100, found 0"),
        "{e}"
    );
}

#[test]
fn defaults_are_the_documented_ones() {
    let cfg = rotagate::config::parse(
        &format!(
            "{UP}health_path = \"/healthz\"\n[upstreams.api]\nurl = \"https://api.internal\"\n"
        ),
        Path::new("test.toml"),
    )
    .unwrap();
    let d = cfg.upstream();
    assert_eq!(d.name, "default");
    assert_eq!(d.eject_for, rotagate::config::DEFAULT_EJECT_FOR);
    let hc = d.health.as_ref().unwrap();
    assert_eq!(hc.interval.as_secs(), 10);
    assert_eq!(hc.timeout.as_secs(), 2);
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (2, 3));
    let api = &cfg.upstreams[1];
    assert!(api.tls && api.ca.is_none() && api.health.is_none());
    assert_eq!(api.urls[0].authority, "api.internal:443");
    assert_eq!(api.urls[0].host, "api.internal");
}

#[tokio::test]
async fn an_error_answer_on_a_keep_alive_connection_says_it_closes() {
    let dead = refusing_addr().await;
    let extra = format!(
        "[upstreams.dead]\nurl = \"http://{dead}\"\n[[route]]\nmatch = \"/dead\"\nupstream = \"dead\"\n"
    );
    let h = Harness::start(upstream_ok().await, &extra).await;
    // two requests on one connection: the 502 ends it, and says so
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    use tokio::io::AsyncWriteExt as _;
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let first = read_one_response(&mut s).await;
    s.write_all(b"GET /dead HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let second = read_one_response(&mut s).await;
    assert!(first.contains("Connection: keep-alive"), "{first}");
    assert!(second.starts_with("HTTP/1.1 502"), "{second}");
    assert!(second.contains("Connection: close"), "{second}");
    // a pooled client's next request then goes on a new connection and is answered
    for p in ["/ok", "/dead", "/dead", "/ok"] {
        assert!(h.client.get(h.url(p)).send().await.is_ok(), "{p}");
    }
    h.shutdown().await;
}

/// An upstream that answers the first request of each connection (keep-alive) and
/// closes the connection, unanswered, after reading its second: the pooled-connection
/// race, where the request was sent. Every request line it read is logged.
async fn closes_after_second_request() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let log = log2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut served = 0;
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        log.lock()
                            .unwrap()
                            .push(head.lines().next().unwrap_or_default().to_string());
                        served += 1;
                        if served == 2 {
                            return; // closes, unanswered
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, log)
}

#[tokio::test]
async fn a_request_sent_on_a_connection_that_broke_is_resent_only_when_safe() {
    let (addr, log) = closes_after_second_request().await;
    let up = upstream_ok().await; // unused: the harness wants one
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\nthreads = 1\n\n[upstream]\nurl = \"http://{addr}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    );
    let h = Harness::start_text(tempfile::tempdir().unwrap(), up, &text).await;
    let c = client();
    let send = |method: reqwest::Method, path: &str| {
        let req = c.request(method, h.url(path)).header("content-length", "0");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // a PUT (idempotent, not safe) on the pooled connection, which then breaks
    assert_eq!(send(reqwest::Method::GET, "/warm").await, 200);
    assert_eq!(send(reqwest::Method::PUT, "/put").await, 502);
    let puts = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("PUT"))
        .count();
    assert_eq!(puts, 1, "the PUT was sent once: {:?}", log.lock().unwrap());
    // a DELETE likewise
    assert_eq!(send(reqwest::Method::GET, "/warm2").await, 200);
    assert_eq!(send(reqwest::Method::DELETE, "/del").await, 502);
    let dels = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("DELETE"))
        .count();
    assert_eq!(dels, 1, "{:?}", log.lock().unwrap());
    // a GET is resent on a fresh connection and answered
    assert_eq!(send(reqwest::Method::GET, "/warm3").await, 200);
    assert_eq!(send(reqwest::Method::GET, "/get").await, 200);
    let gets = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("GET /get "))
        .count();
    assert_eq!(gets, 2, "{:?}", log.lock().unwrap());
    h.shutdown().await;
}
