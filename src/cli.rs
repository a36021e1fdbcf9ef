//! What the `run` and `keygen` commands do (the binary only parses arguments).

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

use crate::clock::SystemClock;
use crate::server::{self, RunningProxy, StartOptions};

/// `rotagate run -c FILE`: loads the config, serves until SIGTERM/SIGINT (graceful
/// drain), reloads on SIGHUP.
pub fn run(config_path: &Path) -> Result<(), String> {
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
        let opts = StartOptions {
            clock: Arc::new(SystemClock),
            config_path: Some(config_path.to_path_buf()),
            ..Default::default()
        };
        let running = server::start(cfg, opts).await.map_err(|e| e.to_string())?;
        announce(&running);
        signals.serve(running).await
    })
}

/// Prints where the listeners are (the real ports, also when the config said 0).
pub fn announce(running: &RunningProxy) {
    // stdout, one line each, so scripts and tests can read the bound addresses
    println!("rotagate: proxy listening on http://{}", running.proxy_addr);
    if let Some(a) = running.admin_addr {
        println!("rotagate: admin listening on http://{a}");
    }
    tracing::info!(proxy = %running.proxy_addr, admin = ?running.admin_addr, "rotagate started");
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
    pub async fn serve(mut self, running: RunningProxy) -> Result<(), String> {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    // errors are logged and counted by reload itself; the old config stays
                    let _ = running.shared.reload().await;
                }
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        running.shutdown().await;
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
