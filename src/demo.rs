//! `rotagate demo`: a small built-in app with rotagate in front of it, on loopback.
//!
//! The app is deliberately naive, like the apps rotagate is built for: it issues a
//! session token (an HS256 JWT) at login and checks it on each page, but never rotates
//! it, and its API answers 401 when it dislikes a token. rotagate does the rest:
//! rotation every few seconds (watch `iat` change on the protected page), and (once the
//! logout work lands) the 401 turning into a clean logout.
//!
//! ```text
//! cargo run -- demo            # then open the printed proxy URL
//! curl -i http://127.0.0.1:8080/
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::secret::Secret;
use crate::server::{self, StartOptions};

/// Cookie the demo app uses for its session.
const COOKIE: &str = "demo_session";
/// How often rotagate re-mints the demo token (short, so you can watch it).
const ROTATE_EVERY: &str = "10s";

/// Runs the demo until Ctrl-C; `vault` runs it in vault mode (the browser holds only
/// rotagate's handle, the app's token stays in rotagate's memory store).
pub fn run(port: u16, vault: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let signals = crate::cli::Signals::install()?;
        let dir = std::env::temp_dir().join(format!("rotagate-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let secret = crate::cli::keygen()?;
        let secret_path = dir.join("secret");
        std::fs::write(&secret_path, &secret).map_err(|e| format!("{}: {e}", secret_path.display()))?;
        let secret = Secret::new(secret.into_bytes());
        let vault_secret_path = dir.join("vault-secret");
        std::fs::write(&vault_secret_path, crate::cli::keygen()?)
            .map_err(|e| format!("{}: {e}", vault_secret_path.display()))?;

        let app_listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("demo app: {e}"))?;
        let app_addr = app_listener.local_addr().map_err(|e| e.to_string())?;
        let app = Arc::new(DemoApp { secret, clock: Arc::new(SystemClock) });
        tokio::spawn(serve_app(app_listener, app));

        let config_path = dir.join("rotagate.toml");
        let text = if vault {
            vault_config(port, app_addr, &vault_secret_path.display().to_string())
        } else {
            demo_config(port, app_addr, &secret_path.display().to_string())
        };
        std::fs::write(&config_path, &text).map_err(|e| format!("{}: {e}", config_path.display()))?;
        let cfg = crate::config::load(&config_path).map_err(|e| e.to_string())?;
        let opts = StartOptions { config_path: Some(config_path.clone()), ..Default::default() };
        let running = server::start(cfg, opts).await.map_err(|e| e.to_string())?;
        let proxy = running.proxy_addr;
        println!("rotagate demo");
        println!("  app (behind the proxy)  http://{app_addr}");
        println!("  rotagate                http://{proxy}   <- open this");
        if let Some(a) = running.admin_addr {
            println!("  admin                   http://{a}/metrics");
        }
        println!("  config                  {}", config_path.display());
        println!();
        if vault {
            print_vault_steps(proxy);
            let result = signals.serve(running).await;
            let _ = std::fs::remove_dir_all(&dir);
            return result;
        }
        println!("  1. open http://{proxy}/login and log in");
        println!("  2. reload http://{proxy}/protected: the token's iat moves every {ROTATE_EVERY}");
        println!("     (rotagate re-mints it; the app never does)");
        println!("  3. open http://{proxy}/expire: the app answers 401 (a backend rejected the session);");
        println!("     rotagate turns it into a clean logout: cookie deleted, sent to /login");
        println!("  4. http://{proxy}/api/whoami: JSON; after logout, a JSON 401 with the login URL");
        println!();
        println!("  Ctrl-C to stop.");
        let result = signals.serve(running).await;
        // the demo's secret and config live only as long as the demo
        let _ = std::fs::remove_dir_all(&dir);
        result
    })
}

/// The steps of `demo --vault`, with the curl commands that replay an old handle.
fn print_vault_steps(proxy: SocketAddr) {
    println!("  vault mode: the app's own token never reaches the browser");
    println!();
    println!("  1. open http://{proxy}/login and log in; your browser's cookies now hold only");
    println!("     `rg` (rotagate's handle), never `{COOKIE}` (the app's token, kept by rotagate)");
    println!("  2. open http://{proxy}/protected in two tabs: the app sees its token on every");
    println!("     request; the handle rotates every {ROTATE_EVERY} and both tabs stay logged in");
    println!("  3. play the thief with curl: log in, keep the first handle, use the next one");
    println!("     (wait {ROTATE_EVERY}+ between the second and third command):");
    println!();
    println!("     H1=$(curl -s -o /dev/null -D - -d user=ada http://{proxy}/login | sed -n 's/^set-cookie: \\(rg=[^;]*\\).*/\\1/ip')");
    println!("     sleep 11; H2=$(curl -s -o /dev/null -D - -H \"cookie: $H1\" http://{proxy}/protected | sed -n 's/^set-cookie: \\(rg=[^;]*\\).*/\\1/ip')");
    println!("     curl -s -o /dev/null -H \"cookie: $H2\" http://{proxy}/protected   # the user moves on");
    println!("     sleep 11; curl -si -H \"cookie: $H1\" -H 'accept: text/html' http://{proxy}/protected   # replay: 303 to /login");
    println!("     curl -si -H \"cookie: $H2\" -H 'accept: text/html' http://{proxy}/protected   # the whole login is revoked");
    println!();
    println!("  rotagate_vault_reuse_detected_total on the admin /metrics counts the replay.");
    println!("  Ctrl-C to stop.");
}

/// The demo's rotagate configuration in vault mode (memory store: the demo keeps
/// nothing on disk).
fn vault_config(port: u16, app: SocketAddr, secret_path: &str) -> String {
    format!(
        r#"# rotagate demo configuration, vault mode (generated)
[listen]
address = "127.0.0.1:{port}"

[upstream]
url = "http://{app}"

[admin]
address = "127.0.0.1:0"

[session]
mode = "vault"
rotate_every = "{ROTATE_EVERY}"
idle_timeout = "30m"
absolute_timeout = "1h"
slack = "5s"
store = "memory"

[session.vault]
cookie = "rg"
capture = ["{COOKIE}"]
secrets = ["file:{secret_path}"]

[[route]]
name = "assets"
match = "/favicon.ico"
bypass = true

[[route]]
name = "app"
match = "/:path*"
"#
    )
}

/// The demo's rotagate configuration.
fn demo_config(port: u16, app: SocketAddr, secret_path: &str) -> String {
    format!(
        r#"# rotagate demo configuration (generated)
[listen]
address = "127.0.0.1:{port}"

[upstream]
url = "http://{app}"

[admin]
address = "127.0.0.1:0"

[session]
mode = "reissue"
rotate_every = "{ROTATE_EVERY}"
absolute_timeout = "1h"

[session.reissue]
cookie = "{COOKIE}"
format = "jwt"

[[session.reissue.keys]]
alg = "HS256"
secret = "file:{secret_path}"

[[route]]
name = "assets"
match = "/favicon.ico"
bypass = true

[[route]]
name = "app"
match = "/:path*"
"#
    )
}

struct DemoApp {
    secret: Secret,
    clock: Arc<dyn Clock>,
}

async fn serve_app(listener: TcpListener, app: Arc<DemoApp>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn html(status: u16, body: &str, set_cookie: Option<String>) -> Response<Full<Bytes>> {
    let page = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>rotagate demo</title>\
         <style>body{{font:16px system-ui;margin:2em auto;max-width:44em}}code,pre{{background:#f4f4f4;padding:.2em}}</style>\
         </head><body><h1>rotagate demo app</h1>\
         <p><a href=/>home</a> · <a href=/login>login</a> · <a href=/protected>protected</a> · <a href=/api/whoami>api</a> · <a href=/expire>simulate a backend 401</a></p>{body}</body></html>"
    );
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "text/html; charset=utf-8");
    if let Some(c) = set_cookie {
        b = b.header("set-cookie", c);
    }
    b.body(Full::new(Bytes::from(page)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn cookie_value<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == name).then_some(val)
            })
        })
}

impl DemoApp {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let token = cookie_value(&req, COOKIE).map(str::to_string);
        let claims = token.as_deref().and_then(|t| self.verify(t));
        match (req.method().as_str(), path.as_str()) {
            ("GET", "/") => html(
                200,
                &match &claims {
                    Some(c) => format!("<p>Logged in as <b>{}</b>.</p>", esc(c["sub"].as_str().unwrap_or("?"))),
                    None => "<p>Not logged in. <a href=/login>Log in</a>.</p>".to_string(),
                },
                None,
            ),
            ("GET", "/login") => html(
                200,
                "<form method=post action=/login><label>name <input name=user value=ada></label> <button>log in</button></form>",
                None,
            ),
            ("POST", "/login") => {
                let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let user = form_value(&body, "user").unwrap_or_else(|| "ada".to_string());
                let now = self.clock.now_unix();
                let claims = serde_json::json!({ "sub": user, "name": user, "iat": now, "exp": now + 3600 });
                let token = self.sign(&claims);
                let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600");
                let mut r = html(303, "<p>logged in</p>", Some(cookie));
                r.headers_mut().insert(http::header::LOCATION, http::HeaderValue::from_static("/protected"));
                r
            }
            ("GET", "/protected") => match &claims {
                Some(c) => html(
                    200,
                    &format!(
                        "<p>The app sees this token on this very request:</p><pre>{}</pre>\
                         <p>Reload after {ROTATE_EVERY}: rotagate re-mints it (new <code>iat</code>, same claims), \
                         and the app sees the new one at once.</p>",
                        esc(&serde_json::to_string_pretty(c).unwrap_or_default())
                    ),
                    None,
                ),
                None => html(401, "<p>401: no valid session. <a href=/login>Log in</a>.</p>", None),
            },
            // what a backend does when it rejects a session the app still holds
            ("GET", "/expire") => html(401, "<p>401: the backend rejected this session.</p>", None),
            ("GET", "/api/whoami") => {
                let body = match &claims {
                    Some(c) => serde_json::json!({ "sub": c["sub"] }).to_string(),
                    None => serde_json::json!({ "error": "unauthorized" }).to_string(),
                };
                let status = if claims.is_some() { 200 } else { 401 };
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
            }
            _ => html(404, "<p>not found</p>", None),
        }
    }

    /// The app's own token check (it trusts only its own key).
    fn verify(&self, token: &str) -> Option<serde_json::Value> {
        let (signing_input, sig) = token.rsplit_once('.')?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret.expose());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()?;
        ring::hmac::verify(&key, signing_input.as_bytes(), &sig).ok()?;
        let payload = signing_input.split('.').nth(1)?;
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()?,
        )
        .ok()?;
        let exp = claims.get("exp").and_then(|v| v.as_u64())?;
        (exp > self.clock.now_unix()).then_some(claims)
    }

    /// The app's own token minting at login.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.to_string().as_bytes())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.secret.expose());
        let sig = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
