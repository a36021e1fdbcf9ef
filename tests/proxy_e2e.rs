//! End-to-end: a real upstream, the real proxy on loopback, real HTTP clients.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

#[tokio::test]
async fn proxies_get_and_reuses_keepalive_connection() {
    let h = Harness::start(upstream_ok().await, "").await;
    // two requests on one raw connection: both answered, connection kept
    let mut s = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /hello?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let resp = read_one_response(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("ok from upstream"), "{resp}");
    }
    assert_eq!(h.upstream.count(), 2);
    assert_eq!(h.upstream.last().uri, "/hello?x=1");
    assert_eq!(
        h.upstream.last().header("host").as_deref(),
        Some("app.test")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_and_cookie_fields_merged() {
    let h = Harness::start(upstream_ok().await, "").await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = c
        .get(h.url("/x"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // pingora #892: several Cookie fields from an h2 client reach the h1 upstream as one
    assert_eq!(
        h.upstream.last().header_all("cookie"),
        vec!["a=1; b=2".to_string()]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn download_is_streamed_before_the_body_ends() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let up = upstream(Arc::new(move |_req| {
        let release_rx = release_rx.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"first;"))))
                    .await;
                // the second chunk waits until the client has seen the first one
                if let Some(rx) = release_rx.lock().await.take() {
                    let _ = rx.await;
                }
                let _ = tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"second"))))
                    .await;
            });
            let body = StreamBody::new(tokio_stream_from(rx));
            hyper::Response::builder()
                .status(200)
                .body(BodyExt::boxed(body))
                .unwrap()
        })
    }))
    .await;
    let h = Harness::start(up, "").await;
    let mut resp = h.get("/stream").await;
    let first = within("first chunk through the proxy", resp.chunk())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first;");
    release_tx.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(c) = within("rest of body", resp.chunk()).await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"second");
    h.shutdown().await;
}

#[tokio::test]
async fn upload_is_streamed_before_the_body_ends() {
    let (got_first_tx, got_first_rx) = oneshot::channel::<Bytes>();
    let got_first_tx = Arc::new(std::sync::Mutex::new(Some(got_first_tx)));
    let up = upstream(Arc::new(move |req| {
        let got_first_tx = got_first_tx.clone();
        Box::pin(async move {
            let mut body = req.into_body();
            let mut all = Vec::new();
            let mut first = true;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    if first && !data.is_empty() {
                        first = false;
                        if let Some(tx) = got_first_tx.lock().unwrap().take() {
                            let _ = tx.send(data.clone());
                        }
                    }
                    all.extend_from_slice(&data);
                }
            }
            text(200, &String::from_utf8_lossy(&all))
        })
    }))
    .await;
    let h = Harness::start(up, "").await;
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(body_rx));
    let req = tokio::spawn(h.client.post(h.url("/upload")).body(body).send());
    body_tx
        .send(Ok(Bytes::from_static(b"part-one;")))
        .await
        .unwrap();
    // the upstream receives part one while the client still holds part two
    let first = within("first upload chunk at the upstream", got_first_rx)
        .await
        .unwrap();
    assert!(first.starts_with(b"part-one;"));
    body_tx
        .send(Ok(Bytes::from_static(b"part-two")))
        .await
        .unwrap();
    drop(body_tx);
    let resp = within("upload response", req).await.unwrap().unwrap();
    assert_eq!(resp.text().await.unwrap(), "part-one;part-two");
    h.shutdown().await;
}

/// Adapts an mpsc receiver into a `Stream`.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn websocket_upgrade_is_proxied() {
    let up = upstream(Arc::new(|mut req| {
        Box::pin(async move {
            let key = req.headers().get("sec-websocket-key").cloned();
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    io,
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() {
                        let _ = ws
                            .send(tokio_tungstenite::tungstenite::Message::text(format!(
                                "echo:{}",
                                msg.to_text().unwrap_or("")
                            )))
                            .await;
                    }
                }
            });
            let accept = key
                .map(|k| tokio_tungstenite::tungstenite::handshake::derive_accept_key(k.as_bytes()))
                .unwrap_or_default();
            hyper::Response::builder()
                .status(101)
                .header("connection", "Upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(full(""))
                .unwrap()
        })
    }))
    .await;
    let h = Harness::start(up, "").await;
    let (mut ws, resp) = within(
        "websocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/ws", h.addr())),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    let reply = within("websocket echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(reply.to_text().unwrap(), "echo:hi");
    // close it, or shutdown would rightly wait for this in-flight connection
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    h.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_from_untrusted_peer_are_replaced() {
    let h = Harness::start(upstream_ok().await, "").await;
    h.client
        .get(h.url("/"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("host", "app.test:8080")
        .send()
        .await
        .unwrap();
    let seen = h.upstream.last();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.test:8080")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_from_trusted_peer_are_honoured() {
    let up = upstream_ok().await;
    let dir = tempfile::tempdir().unwrap();
    // trusted_proxies lives in [listen], which the harness writes; rewrite the whole file
    let h = Harness::start_in(dir, up, "").await;
    let cfg = common::base_config(h.upstream.addr).replace(
        "address = \"127.0.0.1:0\"\n\n[upstream]",
        "address = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n\n[upstream]",
    );
    std::fs::write(&h.config_path, cfg).unwrap();
    assert_eq!(h.proxy().shared.reload().await, Ok(2));
    h.client
        .get(h.url("/"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await
        .unwrap();
    let seen = h.upstream.last();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example.com")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_and_spoofable_headers_are_stripped() {
    let up = upstream(Arc::new(|_req| {
        Box::pin(async {
            hyper::Response::builder()
                .status(200)
                .header("keep-alive", "timeout=5")
                .header("connection", "x-internal")
                .header("x-internal", "secret-routing")
                .header("x-app", "kept")
                .body(full("ok"))
                .unwrap()
        })
    }))
    .await;
    let h = Harness::start(up, "").await;
    let resp = h
        .client
        .get(h.url("/"))
        .header("connection", "x-drop-me")
        .header("x-drop-me", "1")
        .header("te", "trailers")
        .header(
            "x-middleware-subrequest",
            "middleware:middleware:middleware",
        )
        .header("x-rotagate-subject", "admin")
        .header("x-rotagate-claims", "{\"has_access\":true}")
        .header("x-kept", "1")
        .send()
        .await
        .unwrap();
    let seen = h.upstream.last();
    for gone in [
        "x-drop-me",
        "te",
        "x-middleware-subrequest",
        "x-rotagate-subject",
        "x-rotagate-claims",
    ] {
        assert!(seen.header(gone).is_none(), "{gone} reached the upstream");
    }
    assert_eq!(seen.header("x-kept").as_deref(), Some("1"));
    assert!(resp.headers().get("x-internal").is_none());
    assert!(resp.headers().get("keep-alive").is_none());
    assert_eq!(resp.headers().get("x-app").unwrap(), "kept");
    h.shutdown().await;
}

#[tokio::test]
async fn refused_upstream_connection_is_502() {
    // bind and drop a listener to get a loopback port nothing listens on
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut up = upstream_ok().await;
    up.addr = closed;
    let h = Harness::start(up, "").await;
    let resp = h.get("/").await;
    assert_eq!(resp.status(), 502);
    h.shutdown().await;
}

#[tokio::test]
async fn silent_upstream_is_504_after_read_timeout() {
    let up = upstream(Arc::new(|_req| {
        Box::pin(async {
            std::future::pending::<()>().await;
            unreachable!()
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start_in(dir, up, "").await;
    let cfg = common::base_config(h.upstream.addr)
        .replace("\n\n[admin]", "\nread_timeout = \"300ms\"\n\n[admin]");
    std::fs::write(&h.config_path, cfg).unwrap();
    assert_eq!(h.proxy().shared.reload().await, Ok(2));
    let resp = within("504 from read timeout", h.get("/slow")).await;
    assert_eq!(resp.status(), 504);
    h.shutdown().await;
}

#[tokio::test]
async fn oversized_header_block_is_431() {
    let h = Harness::start(upstream_ok().await, "").await;
    let big = "x".repeat(70 * 1024);
    let resp = h
        .client
        .get(h.url("/"))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(h.upstream.count(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn malformed_request_line_is_400() {
    let h = Harness::start(upstream_ok().await, "").await;
    let resp = raw(h.addr(), b"GARBAGE\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = raw(h.addr(), b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(h.upstream.count(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn encoded_separators_and_bad_escapes_are_400_and_dot_segments_resolved() {
    let h = Harness::start(upstream_ok().await, "").await;
    for bad in ["/x/..%2Fpremium", "/a%5Cb", "/a%00", "/a%zz", "/a%2"] {
        let resp = raw(
            h.addr(),
            format!("GET {bad} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{bad}: {resp}");
    }
    assert_eq!(h.upstream.count(), 0);
    let resp = raw(
        h.addr(),
        b"GET /x/../premium/./a?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(h.upstream.last().uri, "/premium/a?q=1");
    h.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let h = Harness::start(
        upstream_ok().await,
        "[[route]]\nname = \"static\"\nmatch = \"/_next/static/:path*\"\nbypass = true\n",
    )
    .await;
    get_and_settle(h.addr(), &["/_next/static/chunk.js", "/other"]).await;
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_requests_total{route=\"static\",status=\"2xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rotagate_requests_total{route=\"-\",status=\"2xx\"} 1"),
        "{m}"
    );
    assert!(m.contains("rotagate_config_generation 1"), "{m}");
    let health = h.client.get(h.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = h.client.get(h.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_rules_but_in_flight_requests_finish_on_the_old_ones() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(Some((arrived_tx, release_rx))));
    let up = upstream(Arc::new(move |req| {
        let gate = gate.clone();
        Box::pin(async move {
            if req.uri().path() == "/slow" {
                let g = gate.lock().unwrap().take();
                if let Some((arrived, release)) = g {
                    let _ = arrived.send(());
                    let _ = release.await;
                }
            }
            text(200, "ok")
        })
    }))
    .await;
    let h = Harness::start(up, "[[route]]\nname = \"old\"\nmatch = \"/:path*\"\n").await;
    // the slow request and a settling one share a connection (see get_and_settle)
    let slow = tokio::spawn(get_and_settle(h.addr(), &["/slow"]));
    within("slow request reaches upstream", arrived_rx)
        .await
        .unwrap();
    h.rewrite_config("[[route]]\nname = \"new\"\nmatch = \"/:path*\"\n");
    assert_eq!(h.proxy().shared.reload().await, Ok(2));
    release_tx.send(()).unwrap();
    let answers = within("slow request", slow).await.unwrap();
    assert!(answers[0].starts_with("HTTP/1.1 200"), "{}", answers[0]);
    get_and_settle(h.addr(), &["/fast"]).await;
    let m = h.metrics().await;
    assert!(
        m.contains("rotagate_requests_total{route=\"old\",status=\"2xx\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rotagate_requests_total{route=\"new\",status=\"2xx\"} 1"),
        "{m}"
    );
    // an invalid file is refused and the rules in force stay
    std::fs::write(&h.config_path, "[listen]\nbogus = 1\n").unwrap();
    let err = h.proxy().shared.reload().await.unwrap_err();
    assert!(err.contains("bogus"), "{err}");
    let status: serde_json::Value = h
        .client
        .get(h.admin_url("/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["reload_attempts"], 2);
    get_and_settle(h.addr(), &["/fast"]).await;
    assert!(h
        .metrics()
        .await
        .contains("rotagate_requests_total{route=\"new\",status=\"2xx\"} 2"));
    h.shutdown().await;
}
