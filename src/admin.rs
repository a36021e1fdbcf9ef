//! The admin listener: `/healthz`, `/readyz`, `/metrics` and `/config`.
//!
//! `/config` reports the configuration generation and reload attempts as JSON; with
//! `?after_attempts=N` it waits (up to 10 s) until more than `N` reload attempts have
//! been made, so operators and tests can wait for a SIGHUP to take effect instead of
//! sleeping.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::{ReloadStatus, Shared};

/// Longest a `/config?after_attempts=N` request waits.
const LONG_POLL: Duration = Duration::from_secs(10);

/// Serves the admin endpoints on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn status_json(s: &ReloadStatus) -> String {
    serde_json::json!({
        "generation": s.generation,
        "reload_attempts": s.attempts,
        "last_reload_error": s.last_error,
    })
    .to_string()
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".to_string()),
        // no store yet: ready as soon as a configuration is in force
        "/readyz" => reply(StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(),
        ),
        "/config" => {
            let after = req
                .uri()
                .query()
                .and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix("after_attempts="))
                })
                .and_then(|v| v.parse::<u64>().ok());
            let mut rx = shared.status();
            if let Some(n) = after {
                let _ = tokio::time::timeout(LONG_POLL, rx.wait_for(|s| s.attempts > n)).await;
            }
            let s = rx.borrow().clone();
            reply(StatusCode::OK, "application/json", status_json(&s))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    }
}
