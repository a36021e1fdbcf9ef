//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config`, and in vault mode
//! the sessions API (`GET /sessions?subject=`, `POST /sessions/revoke`), which is on only
//! with `admin.token` (see [`auth`]).
//!
//! `/config` reports the configuration generation and reload attempts as JSON; with
//! `?after_attempts=N` it waits (up to 10 s) until more than `N` reload attempts have
//! been made, so operators and tests can wait for a SIGHUP to take effect instead of
//! sleeping. It also shows every upstream's addresses and their state (`healthy`,
//! `ejected`), and with `?after_health_changes=N` waits until more than `N` upstream
//! health flips happened (`health_changes`).

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

pub mod auth;

/// Largest `POST /sessions/revoke` body read.
const MAX_REVOKE_BODY: usize = 4096;

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

fn status_json(s: &ReloadStatus) -> serde_json::Value {
    serde_json::json!({
        "generation": s.generation,
        "reload_attempts": s.attempts,
        "last_reload_error": s.last_error,
    })
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", format!("{v}\n"))
}

/// The sessions API: `GET /sessions?subject=S` and `POST /sessions/revoke` with
/// `{"family": ID}` or `{"subject": S}`.
async fn sessions(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let rt = shared.current();
    let token = rt.config.admin.as_ref().and_then(|a| a.token.as_ref());
    if let Err(refusal) = auth::authorize(req.headers(), token) {
        let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
        let mut r = reply(status, "text/plain", refusal.text().to_string());
        if refusal == auth::Refusal::Unauthorized {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        return r;
    }
    let Some(vault) = rt.vault.as_ref() else {
        return json(
            StatusCode::CONFLICT,
            serde_json::json!({ "error": "sessions live in the vault: session.mode is not \"vault\"" }),
        );
    };
    let engine = vault.engine.clone();
    let unavailable = |e: crate::store::StoreError| {
        tracing::error!(target: "rotagate::admin", error = %e, "session store error in the sessions API");
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "session store unavailable" }),
        )
    };
    let bad = |msg: &str| json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": msg }));
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/sessions") => {
            let subject = req.uri().query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let v = kv.strip_prefix("subject=")?;
                    Some(
                        percent_encoding::percent_decode_str(v)
                            .decode_utf8_lossy()
                            .into_owned(),
                    )
                })
            });
            let Some(subject) = subject.filter(|s| !s.is_empty()) else {
                return bad("expected ?subject=S");
            };
            match engine.list_subject(&subject).await {
                Ok(list) => json(
                    StatusCode::OK,
                    serde_json::json!({ "subject": subject, "families": list }),
                ),
                Err(e) => unavailable(e),
            }
        }
        ("POST", "/sessions/revoke") => {
            use http_body_util::BodyExt as _;
            let body = match http_body_util::Limited::new(req.into_body(), MAX_REVOKE_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => return bad("the body must be a JSON object of at most 4 KiB"),
            };
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return bad("expected {\"family\": \"<id>\"} or {\"subject\": \"<subject>\"}")
                }
            };
            let family = v.get("family").and_then(|f| f.as_str());
            let subject = v.get("subject").and_then(|f| f.as_str());
            let reason = crate::store::RevokeReason::Admin;
            match (family, subject) {
                (Some(id), None) => {
                    let Some(fid) = crate::store::FamilyId::from_hex(id) else {
                        return bad(
                            "`family`: expected a family id as /sessions lists it (32 hex digits)",
                        );
                    };
                    match engine.revoke_family(&fid, reason).await {
                        Ok(done) => {
                            tracing::info!(target: "rotagate::admin", family = %fid.to_hex(), revoked = done, "family revoked by an operator");
                            json(
                                StatusCode::OK,
                                serde_json::json!({ "revoked": u32::from(done) }),
                            )
                        }
                        Err(e) => unavailable(e),
                    }
                }
                (None, Some(s)) if !s.is_empty() => match engine.revoke_subject(s, reason).await {
                    Ok(n) => {
                        tracing::info!(target: "rotagate::admin", subject = s, revoked = n, "subject's families revoked by an operator");
                        json(StatusCode::OK, serde_json::json!({ "revoked": n }))
                    }
                    Err(e) => unavailable(e),
                },
                _ => bad("expected exactly one of `family` or `subject`"),
            }
        }
        (_, "/sessions") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "GET only" }),
        ),
        (_, "/sessions/revoke") => json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({ "error": "POST only" }),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    }
}

/// The session store's state (vault mode), also written to `rotagate_store_up`.
fn store_status(shared: &Shared) -> Option<Result<(), crate::store::StoreError>> {
    let status = shared
        .current()
        .vault
        .as_ref()
        .map(|v| v.engine.store().status())?;
    shared.metrics.vault.store_up.set(i64::from(status.is_ok()));
    Some(status)
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.uri().path() == "/sessions" || req.uri().path().starts_with("/sessions/") {
        return sessions(req, shared).await;
    }
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".to_string()),
        // ready once a configuration is in force, its session store (if any) serves and
        // its default upstream (when health-checked) has a healthy address
        "/readyz" => {
            let rt = shared.current();
            let store = match rt.vault.as_ref().map(|v| v.engine.store().ready()) {
                Some(Err(e)) => Err(e.to_string()),
                _ => Ok(()),
            };
            match store.and_then(|()| rt.upstreams.ready()) {
                Err(e) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {e}\n"),
                ),
                Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".to_string()),
            }
        }
        "/metrics" => {
            store_status(shared);
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                shared.metrics.render(),
            )
        }
        "/store" => match store_status(shared) {
            None => json(
                StatusCode::OK,
                serde_json::json!({ "store": null, "up": true }),
            ),
            Some(Ok(())) => json(StatusCode::OK, serde_json::json!({ "up": true })),
            Some(Err(e)) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "up": false, "reason": e.to_string() }),
            ),
        },
        "/config" => {
            let param = |name: &str| {
                req.uri()
                    .query()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(name)))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let mut rx = shared.status();
            if let Some(n) = param("after_attempts=") {
                let _ = tokio::time::timeout(LONG_POLL, rx.wait_for(|s| s.attempts > n)).await;
            }
            let mut health = shared.health_changes();
            if let Some(n) = param("after_health_changes=") {
                let _ = tokio::time::timeout(LONG_POLL, health.wait_for(|c| *c > n)).await;
            }
            let s = rx.borrow().clone();
            let changes = *health.borrow();
            let mut v = status_json(&s);
            v["health_changes"] = serde_json::json!(changes);
            v["upstreams"] = shared.current().upstreams.status_json();
            reply(StatusCode::OK, "application/json", format!("{v}"))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    }
}
