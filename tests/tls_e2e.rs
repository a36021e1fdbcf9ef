//! The TLS listener end to end: certificates made at test time (rcgen, a private CA),
//! real TLS clients (reqwest with rustls, a tokio-rustls + hyper client that shows each
//! connection's certificate, curl, openssl s_client), the real proxy and upstream.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// A private CA that signs leaf certificates for the names asked.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate (PEM) and its key (PEM).
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "rotagate tls test CA");
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }
    fn pem(&self) -> String {
        self.cert.pem()
    }
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

/// `[listen.tls]` on an ephemeral port with the given extra keys and certificate files.
fn tls_section(extra: &str, certs: &[(&str, &str)]) -> String {
    let mut s = format!("[listen.tls]\naddress = \"127.0.0.1:0\"\n{extra}\n");
    for (cert, key) in certs {
        s.push_str(&format!(
            "[[listen.tls.certificates]]\ncert = \"file:{cert}\"\nkey = \"file:{key}\"\n"
        ));
    }
    s
}

/// The full config: `[listen]` keys, then `[listen.tls]` (a sub-table of `[listen]`).
fn config(upstream: SocketAddr, listen: &str, tls: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{listen}\n{tls}\n[upstream]\nurl = \"http://{upstream}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n"
    )
}

fn tls_addr(h: &Harness) -> SocketAddr {
    h.proxy().tls_addr.expect("the TLS listener is announced")
}

/// A rustls client trusting `ca` only, offering `alpn`.
fn client_config(ca: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

use rustls::pki_types::pem::PemObject;

/// One HTTP/1.1 keep-alive connection over TLS, and the certificate it was made with.
struct TlsConn {
    send: hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    peer_leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
}

async fn tls_connect(addr: SocketAddr, ca: &str, sni: &str) -> TlsConn {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca, &[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (_, conn) = tls.get_ref();
    let peer_leaf = conn.peer_certificates().unwrap()[0].to_vec();
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    let (send, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(driver);
    TlsConn {
        send,
        peer_leaf,
        alpn,
    }
}

impl TlsConn {
    /// GET `path` with `Host: host`; status and response headers.
    async fn get(&mut self, host: &str, path: &str) -> (u16, http::HeaderMap) {
        self.send_with("GET", host, path, &[]).await
    }

    /// `method` `path` with `Host: host` and `headers`; status and response headers.
    async fn send_with(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap) {
        self.send.ready().await.unwrap();
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        let resp = self.send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let _ = resp.into_body().collect().await.unwrap();
        (status, headers)
    }
}

#[tokio::test]
async fn https_with_sni_alpn_h2_hsts_and_forwarded_proto() {
    let ca = Ca::new();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test", "*.wild.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pem", &a.cert);
    write(dir.path(), "a.key", &a.key);
    write(dir.path(), "b.pem", &b.cert);
    write(dir.path(), "b.key", &b.key);
    let up = upstream_ok().await;
    let text = config(
        up.addr,
        "",
        &tls_section(
            "hsts = \"max-age=31536000\"",
            &[("a.pem", "a.key"), ("b.pem", "b.key")],
        ),
    );
    let h = Harness::start_text(dir, up, &text).await;
    let addr = tls_addr(&h);

    // reqwest over rustls: ALPN picks HTTP/2, the app sees https
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .resolve("a.test", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = within(
        "https GET",
        client
            .get(format!("https://a.test:{}/hello", addr.port()))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=31536000")
    );
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    // the plain listener: no HSTS, and the app sees http
    let resp = h.get("/plain").await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("strict-transport-security").is_none());
    assert_eq!(
        h.upstream.last().header("x-forwarded-proto").as_deref(),
        Some("http")
    );

    // SNI picks the certificate; HTTP/1.1 over TLS when only it is offered
    let mut ca_conn = within("tls a.test", tls_connect(addr, &ca.pem(), "a.test")).await;
    assert_eq!(ca_conn.peer_leaf, a.der);
    assert_eq!(ca_conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (status, headers) = within("h1 over tls", ca_conn.get("a.test", "/h1")).await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("strict-transport-security"));
    assert_eq!(
        h.upstream.last().header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    let cb = within("tls b.test", tls_connect(addr, &ca.pem(), "b.test")).await;
    assert_eq!(cb.peer_leaf, b.der);
    let cw = within("tls wildcard", tls_connect(addr, &ca.pem(), "x.wild.test")).await;
    assert_eq!(cw.peer_leaf, b.der);

    // curl negotiates HTTP/2 by ALPN
    let ca_file = h.dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let out = within(
        "curl",
        tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("b.test:{}:127.0.0.1", addr.port()))
            .arg(format!("https://b.test:{}/curl", addr.port()))
            .output(),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");

    // TLS 1.1 is refused, TLS 1.2 accepted (the client's own floor lowered, so the
    // refusal is the server's)
    let s_client = |version: &'static str| {
        tokio::process::Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(addr.to_string())
            .args([
                "-servername",
                "a.test",
                version,
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let old = within("openssl tls1.1", s_client("-tls1_1")).await.unwrap();
    let old_out = String::from_utf8_lossy(&old.stdout).to_string();
    // (this client does speak TLS 1.1 to a server that accepts it: the failure is ours)
    let old_err = String::from_utf8_lossy(&old.stderr).to_string();
    // rustls answers a hello with no version it speaks with a handshake_failure alert
    assert!(old_err.contains("alert handshake failure"), "{old_err}");
    assert!(
        old_out.contains("no peer certificate available"),
        "{old_out}"
    );
    assert!(!old_out.contains("BEGIN CERTIFICATE"), "{old_out}");
    let ok = within("openssl tls1.2", s_client("-tls1_2")).await.unwrap();
    let ok_out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok_out.contains("TLSv1.2"), "{ok_out}");
    assert_eq!(leaf_base64(&ok_out), leaf_base64(&a.cert));

    // an unknown name, and no name at all, get the first certificate
    for sni in [
        ["-servername", "unknown.test"],
        ["-noservername", "-tls1_3"],
    ] {
        let out = within(
            "openssl default certificate",
            tokio::process::Command::new("openssl")
                .args(["s_client", "-connect"])
                .arg(addr.to_string())
                .args(sni)
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(leaf_base64(&text), leaf_base64(&a.cert), "{sni:?}: {text}");
        assert_ne!(leaf_base64(&text), leaf_base64(&b.cert));
    }
    drop((ca_conn, cb, cw));
    // counted once the server has sent its alert: wait for the count itself
    within("the refused handshake is counted", async {
        loop {
            let m = h.metrics().await;
            if m.lines()
                .any(|l| l.contains("event=\"tls_handshake_error\"") && !l.ends_with(" 0"))
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    h.shutdown().await;
}

#[tokio::test]
async fn redirect_http_answers_308_to_the_public_origin_only() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["app.test", "www.app.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "c.pem", &leaf.cert);
    write(dir.path(), "c.key", &leaf.key);
    let up = upstream_ok().await;
    let text = config(
        up.addr,
        "public_origin = \"https://app.test\"\nallowed_hosts = [\"www.app.test\"]",
        &tls_section(
            "redirect_http = true\nhsts = \"max-age=60\"",
            &[("c.pem", "c.key")],
        ),
    );
    let h = Harness::start_text(dir, up, &text).await;
    let plain = h.addr();
    for (host, want) in [
        ("evil.test", "https://app.test/p?q=1"),
        ("app.test:8080", "https://app.test/p?q=1"),
        ("www.app.test", "https://www.app.test/p?q=1"),
    ] {
        let req = format!("GET /p?q=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let resp = within("plain redirect", raw(plain, req.as_bytes())).await;
        assert!(resp.starts_with("HTTP/1.1 308"), "{resp}");
        let location = resp
            .lines()
            .find_map(|l| {
                l.strip_prefix("location: ")
                    .or_else(|| l.strip_prefix("Location: "))
            })
            .unwrap_or_else(|| panic!("no Location: {resp}"));
        assert_eq!(location, want, "{host}");
        assert!(!resp.contains("evil.test"), "{resp}");
        assert!(
            !resp
                .to_ascii_lowercase()
                .contains("strict-transport-security"),
            "{resp}"
        );
    }
    assert_eq!(h.upstream.count(), 0, "the plain listener serves nothing");

    let mut c = within("tls", tls_connect(tls_addr(&h), &ca.pem(), "app.test")).await;
    let (status, headers) = within("tls get", c.get("app.test", "/p")).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap()),
        Some("max-age=60")
    );
    assert_eq!(h.upstream.count(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_open_connections() {
    let ca = Ca::new();
    let first = ca.leaf(&["a.test"]);
    let second = ca.leaf(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pem", &first.cert);
    write(dir.path(), "a.key", &first.key);
    let up = upstream_ok().await;
    let text = config(up.addr, "", &tls_section("", &[("a.pem", "a.key")]));
    let h = Harness::start_text(dir, up, &text).await;
    let addr = tls_addr(&h);

    let mut open = within("first conn", tls_connect(addr, &ca.pem(), "a.test")).await;
    assert_eq!(open.peer_leaf, first.der);
    assert_eq!(within("get", open.get("a.test", "/1")).await.0, 200);

    write(h.dir.path(), "a.pem", &second.cert);
    write(h.dir.path(), "a.key", &second.key);
    assert_eq!(h.proxy().shared.reload().await, Ok(2));
    // the connection made before goes on
    assert_eq!(
        within("get after reload", open.get("a.test", "/2")).await.0,
        200
    );
    let fresh = within("new conn", tls_connect(addr, &ca.pem(), "a.test")).await;
    assert_eq!(fresh.peer_leaf, second.der);

    // a certificate that does not match its key is refused; the one in force stays
    let third = ca.leaf(&["a.test"]);
    write(h.dir.path(), "a.pem", &third.cert);
    let err = h.proxy().shared.reload().await.unwrap_err();
    assert!(err.contains("does not match the certificate"), "{err}");
    assert!(err.contains("key"), "{err}");
    assert!(!err.contains("PRIVATE KEY-----"), "no key material: {err}");
    // and so is a file that is not PEM
    write(h.dir.path(), "a.pem", "not a certificate");
    let err = h.proxy().shared.reload().await.unwrap_err();
    assert!(err.contains("expected a PEM certificate chain"), "{err}");
    assert_eq!(h.proxy().shared.status().borrow().generation, 2);
    // the listener itself is bound at start: removing [listen.tls] takes a restart
    std::fs::write(&h.config_path, config(h.upstream.addr, "", "")).unwrap();
    let err = h.proxy().shared.reload().await.unwrap_err();
    assert!(err.contains("[listen.tls] was removed"), "{err}");
    write(h.dir.path(), "a.pem", &second.cert);
    write(h.dir.path(), "a.key", &second.key);
    std::fs::write(
        &h.config_path,
        config(h.upstream.addr, "", &tls_section("", &[("a.pem", "a.key")])),
    )
    .unwrap();
    let after = within(
        "conn after bad reload",
        tls_connect(addr, &ca.pem(), "a.test"),
    )
    .await;
    assert_eq!(after.peer_leaf, second.der);
    assert_eq!(within("get", open.get("a.test", "/3")).await.0, 200);
    drop((fresh, after));
    // the drain closes the idle keep-alive TLS connection: shutdown is quick
    let t0 = std::time::Instant::now();
    h.shutdown().await;
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        t0.elapsed()
    );
}

/// The error of `[listen.tls]` `tls` (files in `dir`).
fn config_err(dir: &Path, listen: &str, tls: &str) -> String {
    let path = dir.join("rotagate.toml");
    std::fs::write(
        &path,
        config("127.0.0.1:3000".parse().unwrap(), listen, tls),
    )
    .unwrap();
    rotagate::config::load(&path).unwrap_err().to_string()
}

#[test]
fn bad_tls_configs_name_the_key_and_what_was_expected() {
    let ca = Ca::new();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "a.pem", &a.cert);
    write(d, "a.key", &a.key);
    write(d, "b.key", &b.key);
    write(d, "junk.pem", "hello\n");

    let e = config_err(d, "", &tls_section("", &[("missing.pem", "a.key")]));
    assert!(
        e.contains("`listen.tls.certificates.cert`") || e.contains("cert"),
        "{e}"
    );
    assert!(
        e.contains("cannot read secret file") && e.contains("missing.pem"),
        "{e}"
    );

    let e = config_err(d, "", &tls_section("", &[("junk.pem", "a.key")]));
    assert!(e.contains("cert"), "{e}");
    assert!(
        e.contains("file:junk.pem") && e.contains("expected a PEM certificate chain"),
        "{e}"
    );

    let e = config_err(d, "", &tls_section("", &[("a.pem", "junk.pem")]));
    assert!(
        e.contains("key") && e.contains("expected a PEM private key"),
        "{e}"
    );

    let e = config_err(d, "", &tls_section("", &[("a.pem", "b.key")]));
    assert!(
        e.contains("file:b.key") && e.contains("does not match the certificate"),
        "{e}"
    );
    assert!(!e.contains("BEGIN"), "no key material in errors: {e}");

    let e = config_err(d, "", &tls_section("sni = true", &[("a.pem", "a.key")]));
    assert!(e.contains("`listen.tls.sni`: unknown field `sni`"), "{e}");

    let e = config_err(d, "", "[listen.tls]\naddress = \"127.0.0.1:0\"\n");
    assert!(
        e.contains("expected at least one [[listen.tls.certificates]]"),
        "{e}"
    );

    let e = config_err(
        d,
        "",
        &tls_section("redirect_http = true", &[("a.pem", "a.key")]),
    );
    assert!(
        e.contains("listen.tls.redirect_http") && e.contains("public_origin"),
        "{e}"
    );

    let e = config_err(
        d,
        "public_origin = \"http://app.test\"",
        &tls_section("", &[("a.pem", "a.key")]),
    );
    assert!(
        e.contains("listen.public_origin") && e.contains("https://"),
        "{e}"
    );

    let e = config_err(
        d,
        "",
        &tls_section("hsts = \"1 year\"", &[("a.pem", "a.key")]),
    );
    assert!(
        e.contains("`listen.tls.hsts`") && e.contains("max-age"),
        "{e}"
    );

    let e = config_err(
        d,
        "",
        "[listen.tls]\naddress = \"127.0.0.1:0\"\n[[listen.tls.certificates]]\ncert = \"file:a.pem\"\nkey = \"file:a.key\"\nnames = [\"https://a.test\"]\n",
    );
    assert!(e.contains("expected a DNS name"), "{e}");

    // a good one: the certificate and key files are watched
    let path = d.join("rotagate.toml");
    std::fs::write(
        &path,
        config(
            "127.0.0.1:3000".parse().unwrap(),
            "",
            &tls_section("", &[("a.pem", "a.key")]),
        ),
    )
    .unwrap();
    let cfg = rotagate::config::load(&path).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}");
    assert!(
        out.contains("tls: 127.0.0.1:0 with 1 certificate(s) [a.test]"),
        "{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert!(cfg.files.contains(&d.join("a.pem")), "{:?}", cfg.files);
    assert!(cfg.files.contains(&d.join("a.key")), "{:?}", cfg.files);
    let tls = cfg.listen.tls.unwrap();
    assert_eq!(tls.certificates.list[0].names, vec!["a.test"]);
}

#[tokio::test]
async fn a_stalled_handshake_ends_at_the_header_deadline() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pem", &leaf.cert);
    write(dir.path(), "a.key", &leaf.key);
    let up = upstream_ok().await;
    let text = config(
        up.addr,
        "header_timeout = \"300ms\"",
        &tls_section("", &[("a.pem", "a.key")]),
    );
    let h = Harness::start_text(dir, up, &text).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // half a ClientHello record header, then nothing
    let mut s = tokio::net::TcpStream::connect(tls_addr(&h)).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = within("server closes the stalled handshake", s.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_connection_events_total{event=\"header_timeout\"} 1"),
        "{m}"
    );
    h.shutdown().await;
}

/// A vault session over every path, no public origin: the site is whatever Host the
/// client asked for, over TLS its https origin.
fn vault_site(upstream: SocketAddr, tls: &str) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{tls}\n[upstream]\nurl = \"http://{upstream}\"\n\n[admin]\naddress = \"127.0.0.1:0\"\n\n[session]\nmode = \"vault\"\nstore = \"memory\"\n\n[session.vault]\nsecrets = [\"file:vault.key\"]\n\n[[route]]\nname = \"app\"\nmatch = \"/:path*\"\n"
    )
}

#[tokio::test]
async fn over_tls_cookies_are_secure_and_an_http_origin_is_cross_site() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pem", &leaf.cert);
    write(dir.path(), "a.key", &leaf.key);
    write(
        dir.path(),
        "vault.key",
        "tls-e2e-vault-key-of-at-least-32-bytes-0123",
    );
    let up = upstream_ok().await;
    let text = vault_site(up.addr, &tls_section("", &[("a.pem", "a.key")]));
    // the Secure defaults: rotagate terminates TLS, so the site is https
    let cfg = rotagate::config::parse(&text, &dir.path().join("rotagate.toml")).unwrap();
    let vault = cfg.session.as_ref().unwrap().mode.vault().unwrap();
    assert_eq!(vault.cookie, "__Host-Http-rg");
    assert!(vault.attributes.secure);
    let h = Harness::start_text(dir, up, &text).await;

    let mut c = within("tls", tls_connect(tls_addr(&h), &ca.pem(), "a.test")).await;
    let post = |origin: &'static str| [("origin", origin), ("content-length", "0")];
    let (status, _) = within(
        "http origin over tls",
        c.send_with("POST", "a.test", "/form", &post("http://a.test")),
    )
    .await;
    assert_eq!(status, 403, "an http:// page is not the https site");
    let (status, _) = within(
        "https origin over tls",
        c.send_with("POST", "a.test", "/form", &post("https://a.test")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.count(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn the_real_binary_announces_tls_and_sighup_swaps_the_certificate() {
    use std::io::{BufRead, BufReader};
    let ca = Ca::new();
    let first = ca.leaf(&["a.test"]);
    let second = ca.leaf(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pem", &first.cert);
    write(dir.path(), "a.key", &first.key);
    let up = upstream_ok().await;
    let path = dir.path().join("rotagate.toml");
    std::fs::write(
        &path,
        config(up.addr, "", &tls_section("", &[("a.pem", "a.key")])),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["--log-format", "json", "run", "--no-watch", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let child = Kill(child);
    let (tx, logs) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let tls: SocketAddr = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(out).lines();
        loop {
            let line = lines.next().expect("the process announces").unwrap();
            if let Some(a) = line.strip_prefix("rotagate: tls listening on https://") {
                return a.parse().unwrap();
            }
        }
    })
    .await
    .unwrap();
    let c = within("first conn", tls_connect(tls, &ca.pem(), "a.test")).await;
    assert_eq!(c.peer_leaf, first.der);

    write(dir.path(), "a.pem", &second.cert);
    write(dir.path(), "a.key", &second.key);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    tokio::task::spawn_blocking(move || loop {
        let line = logs
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("a reload log line");
        if line.contains("configuration reloaded") {
            return;
        }
        assert!(!line.contains("reload refused"), "{line}");
    })
    .await
    .unwrap();
    let c = within("conn after SIGHUP", tls_connect(tls, &ca.pem(), "a.test")).await;
    assert_eq!(c.peer_leaf, second.der);
    drop(child);
}

#[tokio::test]
async fn a_changed_certificate_file_is_reloaded_by_the_watcher() {
    let ca = Ca::new();
    let first = ca.leaf(&["a.test"]);
    let second = ca.leaf(&["a.test"]);
    let dir = tempfile::tempdir().unwrap();
    // chain and key in one file, so one rename swaps both
    write(dir.path(), "a.pem", &format!("{}{}", first.cert, first.key));
    let up = upstream_ok().await;
    let path = dir.path().join("rotagate.toml");
    std::fs::write(
        &path,
        config(up.addr, "", &tls_section("", &[("a.pem", "a.pem")])),
    )
    .unwrap();
    let cfg = rotagate::config::load(&path).unwrap();
    let opts = rotagate::server::StartOptions {
        config_path: Some(path.clone()),
        drain_timeout: std::time::Duration::from_secs(5),
        watch: true,
        ..Default::default()
    };
    let running = rotagate::server::start(cfg, opts).await.unwrap();
    let tls = running.tls_addr.unwrap();
    let c = within("first conn", tls_connect(tls, &ca.pem(), "a.test")).await;
    assert_eq!(c.peer_leaf, first.der);
    drop(c);

    let mut status = running.shared.status();
    write(
        dir.path(),
        "a.pem.new",
        &format!("{}{}", second.cert, second.key),
    );
    std::fs::rename(dir.path().join("a.pem.new"), dir.path().join("a.pem")).unwrap();
    within(
        "the watcher reloads",
        status.wait_for(|s| s.generation >= 2),
    )
    .await
    .unwrap();
    let c = within(
        "conn after the change",
        tls_connect(tls, &ca.pem(), "a.test"),
    )
    .await;
    assert_eq!(c.peer_leaf, second.der);
    drop(c);
    running.shutdown().await;
}

/// The base64 body of the first PEM certificate in `text` (s_client output or a PEM file).
fn leaf_base64(text: &str) -> String {
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate in {text}"));
    let rest = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
    let end = rest.find("-----END CERTIFICATE-----").unwrap();
    rest[..end].split_whitespace().collect()
}

/// Raw bytes over one TLS connection (HTTP/1.1, SNI `sni`): what came back until the
/// server closed or the first response head and its Content-Length body were read.
async fn tls_raw(addr: SocketAddr, ca: &str, sni: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(client_config(ca, &[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        match within("a TLS answer", tls.read(&mut chunk)).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&buf).to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// DESIGN §10 on the TLS listener: the same screening as the plain one — malformed
/// request lines, oversized header blocks, ambiguous paths, foreign hosts, spoofed
/// identity and internal headers — and the connection limit shared by both listeners.
#[tokio::test]
async fn the_tls_listener_holds_the_hardening_rules() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["app.test"]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.pem", &leaf.cert);
    write(dir.path(), "a.key", &leaf.key);
    let up = upstream_ok().await;
    let text = config(
        up.addr,
        "public_origin = \"https://app.test\"\nmax_header_bytes = 8192\nmax_connections = 1",
        &tls_section("", &[("a.pem", "a.key")]),
    );
    let h = Harness::start_text(dir, up, &text).await;
    let addr = tls_addr(&h);
    let ca = ca.pem();
    let get = |extra: &str, path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{extra}\r\n")
    };

    let r = tls_raw(
        addr,
        &ca,
        "app.test",
        b"GET /x HTTP/1.1 junk\r\nHost: app.test\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 400"), "malformed request line: {r}");
    let big = format!("x-big: {}\r\n", "a".repeat(9000));
    let r = tls_raw(addr, &ca, "app.test", get(&big, "/x").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "oversized header block: {r}");
    for path in ["/x/..%2Fpremium", "/x/..;/premium", "/a//b"] {
        let r = tls_raw(addr, &ca, "app.test", get("", path).as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{path}: {r}");
    }
    // SNI names the site, Host another one: the Host is what is judged
    let r = tls_raw(
        addr,
        &ca,
        "app.test",
        b"GET /x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 421"), "foreign host: {r}");
    assert_eq!(h.upstream.count(), 0, "nothing refused reached the app");

    let spoofed = "x-rotagate-subject: admin\r\nx-middleware-subrequest: middleware\r\nx-forwarded-proto: http\r\nx-forwarded-host: evil.test\r\n";
    let r = tls_raw(addr, &ca, "app.test", get(spoofed, "/x").as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-rotagate-subject"), None);
    assert_eq!(seen.header("x-middleware-subrequest"), None);
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_ne!(
        seen.header("x-forwarded-host").as_deref(),
        Some("evil.test")
    );

    // the plain listener beside the TLS one is plain: the app must not take it for https
    let r = raw(
        h.addr(),
        b"GET /plain HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(
        h.upstream.last().header("x-forwarded-proto").as_deref(),
        Some("http")
    );

    // max_connections = 1 for both listeners: a held plain connection makes the TLS
    // client wait (counted), and it is served once the plain one closes
    let mut plain = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        plain
            .write_all(b"GET /held HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
    }
    let held = read_one_response(&mut plain).await;
    assert!(held.starts_with("HTTP/1.1 200"), "{held}");
    let mut waiting = {
        let ca = ca.clone();
        let req = get("", "/after");
        tokio::spawn(async move { tls_raw(addr, &ca, "app.test", req.as_bytes()).await })
    };
    // not answered while the plain connection holds the one slot (with a slot of its
    // own the TLS listener would answer in a few milliseconds)
    let early = tokio::time::timeout(std::time::Duration::from_millis(500), &mut waiting).await;
    assert!(
        early.is_err(),
        "the TLS listener served past max_connections: {early:?}"
    );
    let m = h.metrics().await;
    assert!(
        metric_value(&m, "rotagate_connection_events_total{event=\"limit_wait\"}")
            .is_some_and(|v| v >= 1.0),
        "{m}"
    );
    drop(plain);
    let r = within("served once the slot frees", waiting).await.unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    h.shutdown().await;
}
