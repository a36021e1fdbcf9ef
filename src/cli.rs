//! What the `run` and `keygen` commands do (the binary only parses arguments).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

use crate::clock::SystemClock;
use crate::listeners::Listeners;
use crate::server::{self, RunningProxy, StartOptions};
use crate::upgrade::{self, UpgradeSocket};

/// How `rotagate run` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Reload when the config or a file it reads changes (besides SIGHUP).
    pub watch: bool,
    /// Take the listening sockets over from the running process (`--upgrade`).
    pub upgrade: bool,
}

/// `rotagate run -c FILE [--upgrade]`: loads the config, serves until SIGTERM/SIGINT
/// (graceful drain) or until a successor takes over (`--upgrade`, see
/// [`crate::upgrade`]), reloads on SIGHUP and (`watch`) when the config or a file it
/// reads changes. With `upgrade`, the listening sockets are taken over from the process
/// on `listen.upgrade_socket`; without one there, this fails (it does not start fresh:
/// a deployment step that meant to replace a process should learn that there was none).
pub fn run(config_path: &Path, run: RunOptions) -> Result<(), String> {
    let cfg = crate::config::load(config_path).map_err(|e| e.to_string())?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rotagate")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        // handlers first: a SIGHUP that arrives before them would kill the process
        let signals = Signals::install()?;
        let socket_path = cfg.listen.upgrade_socket.clone();
        let (sockets, predecessor) = if run.upgrade {
            let (sockets, predecessor) =
                upgrade::take_over(&socket_path, cfg.listen.address).await?;
            (sockets, Some(predecessor))
        } else {
            (Listeners::fresh(), None)
        };
        let opts = StartOptions {
            clock: Arc::new(SystemClock),
            config_path: Some(config_path.to_path_buf()),
            watch: run.watch,
            ..Default::default()
        };
        // on an error here the predecessor sees us go and serves on
        let running = server::start_with(cfg, opts, sockets)
            .await
            .map_err(|e| e.to_string())?;
        let upgrades = match predecessor {
            Some(p) => {
                if let Err(e) = p.accepting().await {
                    tracing::warn!("{e}");
                }
                // the predecessor has our word and stops: its upgrade socket is ours now
                UpgradeSocket::replace(&socket_path)
            }
            None => UpgradeSocket::bind(&socket_path).await,
        };
        let upgrades = upgrades
            .map_err(|e| tracing::warn!("{e}; this process cannot be upgraded with --upgrade"))
            .ok();
        announce(&running);
        signals.serve_upgradable(running, upgrades).await
    })
}

/// Prints where the listeners are (the real ports, also when the config said 0).
pub fn announce(running: &RunningProxy) {
    // stdout, one line each, so scripts and tests can read the bound addresses
    println!("rotagate: proxy listening on http://{}", running.proxy_addr);
    if let Some(a) = running.admin_addr {
        println!("rotagate: admin listening on http://{a}");
    }
    // after the admin line, so readers of the first two lines stay as they were
    if let Some(a) = running.tls_addr {
        println!("rotagate: tls listening on https://{a}");
    }
    tracing::info!(proxy = %running.proxy_addr, tls = ?running.tls_addr, admin = ?running.admin_addr, "rotagate started");
}

/// The signals `run` and `demo` react to, installed before anything is announced.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a tokio runtime).
    pub fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let sig = |k| signal(k).map_err(|e| format!("cannot install signal handler: {e}"));
        Ok(Signals {
            hup: sig(SignalKind::hangup())?,
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
        })
    }

    /// Reloads on SIGHUP until SIGTERM or SIGINT, then drains and returns.
    pub async fn serve(self, running: RunningProxy) -> Result<(), String> {
        self.serve_upgradable(running, None).await
    }

    /// [`Signals::serve`], and also ends when a successor took the listening sockets
    /// over through `upgrades`: then this process stops accepting, drains and returns.
    pub async fn serve_upgradable(
        mut self,
        running: RunningProxy,
        upgrades: Option<UpgradeSocket>,
    ) -> Result<(), String> {
        let upgraded = {
            let successor = async {
                match &upgrades {
                    Some(u) => u.successor(running.handover()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(successor);
            loop {
                tokio::select! {
                    _ = self.hup.recv() => {
                        // errors are logged and counted by reload itself; the old config stays
                        let _ = running.shared.reload().await;
                    }
                    _ = self.term.recv() => break false,
                    _ = self.int.recv() => break false,
                    () = &mut successor => break true,
                }
            }
        };
        if upgraded {
            // the successor owns the upgrade socket's path now: leave it
            drop(upgrades);
            tracing::info!("upgraded: draining in-flight requests");
            running.shutdown_after_upgrade().await;
        } else {
            if let Some(u) = upgrades {
                u.remove();
            }
            tracing::info!("shutting down: draining in-flight requests");
            running.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// 32 random bytes, base64url without padding: a secret for `env:`/`file:` references.
pub fn keygen() -> Result<String, String> {
    let mut buf = [0u8; 32];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| "the system random generator failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// What `rotagate sessions …` asks the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionsCommand {
    /// `sessions revoke --family ID`.
    RevokeFamily(String),
    /// `sessions revoke --subject S`: every login of that user.
    RevokeSubject(String),
    /// `sessions list --subject S`.
    List(String),
}

/// `rotagate sessions …`: calls the admin listener's sessions API of the proxy that
/// runs `config_path` (its `admin.address` and `admin.token`) and returns the answer's
/// body. The token goes in the `Authorization` header only, never in output.
pub fn sessions(config_path: &Path, cmd: &SessionsCommand) -> Result<String, String> {
    let cfg = crate::config::load(config_path).map_err(|e| e.to_string())?;
    let file = config_path.display();
    let admin = cfg.admin.as_ref().ok_or_else(|| {
        format!("{file}: `admin.address`: the sessions API needs an [admin] section")
    })?;
    let token = admin.token.as_ref().ok_or_else(|| {
        format!("{file}: `admin.token`: the sessions API is off without it (set `token = \"env:ROTAGATE_ADMIN_TOKEN\"` in [admin])")
    })?;
    let addr = reachable(admin.address);
    let (method, target, body) = match cmd {
        SessionsCommand::RevokeFamily(id) => (
            "POST",
            "/sessions/revoke".to_string(),
            serde_json::json!({ "family": id }).to_string(),
        ),
        SessionsCommand::RevokeSubject(s) => (
            "POST",
            "/sessions/revoke".to_string(),
            serde_json::json!({ "subject": s }).to_string(),
        ),
        SessionsCommand::List(s) => (
            "GET",
            format!(
                "/sessions?subject={}",
                percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
            ),
            String::new(),
        ),
    };
    let (status, text) = admin_request(addr, method, &target, Some(token.expose()), &body)
        .map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
    if status == 200 {
        Ok(text)
    } else {
        Err(format!(
            "the admin listener at {addr} answered {status}: {}",
            text.trim()
        ))
    }
}

/// A listener on every interface is reached on loopback.
fn reachable(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// Where `rotagate health` looks when `--admin` is not given.
pub const DEFAULT_HEALTH_ADMIN: &str = "127.0.0.1:9091";

/// `rotagate health [--admin ADDR] [-c FILE]`: asks the admin listener's `/healthz`
/// (liveness) and succeeds on 200, so a container image needs no curl for its
/// `HEALTHCHECK`. The address is `--admin` (`host:port` or `http://host:port`), else
/// the config file's `admin.address` when that file exists, else
/// [`DEFAULT_HEALTH_ADMIN`].
pub fn health(admin: Option<&str>, config_path: &Path) -> Result<String, String> {
    let addr = match admin {
        Some(a) => {
            let a = a.strip_prefix("http://").unwrap_or(a).trim_end_matches('/');
            std::net::ToSocketAddrs::to_socket_addrs(a)
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| {
                    format!("--admin: expected an address like 127.0.0.1:9091, found {a:?}")
                })?
        }
        None if config_path.exists() => {
            let cfg = crate::config::load(config_path).map_err(|e| e.to_string())?;
            cfg.admin.map(|a| a.address).ok_or_else(|| {
                format!(
                    "{}: `admin.address`: the health check needs an [admin] section (or --admin ADDR)",
                    config_path.display()
                )
            })?
        }
        None => DEFAULT_HEALTH_ADMIN
            .parse()
            .expect("a valid default address"),
    };
    let addr = reachable(addr);
    let timeout = std::time::Duration::from_secs(3);
    match admin_request_within(addr, "GET", "/healthz", None, "", timeout) {
        Ok((200, _)) => Ok(format!("healthy: http://{addr}/healthz answered 200")),
        Ok((status, _)) => Err(format!(
            "unhealthy: http://{addr}/healthz answered {status}"
        )),
        Err(e) => Err(format!(
            "unhealthy: cannot reach http://{addr}/healthz: {e}"
        )),
    }
}

/// One HTTP/1.1 request to the admin listener; returns status and body.
fn admin_request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    token: Option<&[u8]>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    admin_request_within(
        addr,
        method,
        target,
        token,
        body,
        std::time::Duration::from_secs(10),
    )
}

fn admin_request_within(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    token: Option<&[u8]>,
    body: &str,
    timeout: std::time::Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if let Some(token) = token {
        req.extend_from_slice(b"Authorization: Bearer ");
        req.extend_from_slice(token);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.as_bytes());
    s.write_all(&req)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    Ok((status, rest.to_string()))
}
