//! Listening, accepting and draining: our own accept loop in front of pingora's
//! `HttpProxy`.
//!
//! NOTE: pingora's `Server` binds listeners itself, cannot report the port it bound and
//! only panics a background task when a bind fails; `run_forever` ends in
//! `process::exit`. We bind with tokio ourselves (so a bind error is a clear error and
//! port 0 works), hand each accepted socket to `HttpProxy` (the constructor pingora
//! provides for custom accept loops), and drain on shutdown ourselves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::GetSocketDigest;
use pingora::protocols::SocketDigest;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::proxy::Proxy;
use crate::state::{Runtime, RuntimeError, Shared};

/// The worker runtimes, one set per process: pingora keeps a process-wide handle to the
/// first no-steal runtime it sees (`pingora_runtime::current_handle`, used to spawn
/// HTTP/2 stream tasks), so a second set would leave that handle pointing at the first.
/// `listen.threads` therefore takes effect at process start only.
static WORKERS: std::sync::OnceLock<pingora_runtime::Runtime> = std::sync::OnceLock::new();

/// How long a graceful shutdown waits for in-flight requests by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a proxy.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The clock; tests pass a [`crate::clock::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// The file to re-read on reload (`None` for built-in configs such as the demo).
    pub config_path: Option<PathBuf>,
    /// Longest wait for in-flight requests on shutdown.
    pub drain_timeout: Duration,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: Arc::new(SystemClock),
            config_path: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration could not be turned into a runtime.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A running proxy (and admin listener). Dropping it does not stop it: call
/// [`RunningProxy::shutdown`].
#[derive(Debug)]
pub struct RunningProxy {
    /// Where the proxy listens (the real port when the config said 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// The shared state (reload, metrics).
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Graceful shutdown: stop accepting, let in-flight requests finish (up to the drain
    /// timeout), close idle keep-alive connections, then return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Binds the listeners and starts serving `config` on the current tokio runtime.
pub async fn start(config: Config, opts: StartOptions) -> Result<RunningProxy, StartError> {
    let listen = config.listen.address;
    let admin_cfg = config.admin.clone();
    let h2c = config.listen.h2c;
    let threads = config.listen.threads;
    let runtime = Runtime::build(config, 1)?;
    let shared = Arc::new(Shared::new(
        runtime,
        opts.clock.clone(),
        opts.config_path.clone(),
    ));

    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "proxy",
            addr: listen,
            source,
        })?;
    let proxy_addr = listener.local_addr().map_err(|source| StartError::Bind {
        what: "proxy",
        addr: listen,
        source,
    })?;

    let (stop, stop_rx) = watch::channel(false);
    let admin_addr = match admin_cfg {
        Some(a) => {
            let l = TcpListener::bind(a.address)
                .await
                .map_err(|source| StartError::Bind {
                    what: "admin",
                    addr: a.address,
                    source,
                })?;
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                what: "admin",
                addr: a.address,
                source,
            })?;
            tokio::spawn(admin::serve(l, shared.clone(), stop_rx.clone()));
            Some(addr)
        }
        None => None,
    };

    let mut app = HttpProxy::new(Proxy::new(shared.clone()), Arc::new(ServerConf::default()));
    let mut server_opts = HttpServerOptions::default();
    server_opts.h2c = h2c;
    app.server_options = Some(server_opts);
    app.handle_init_modules();
    let app = Arc::new(app);

    // NOTE: as pingora's own Server does, connections run on single-threaded runtimes
    // without work stealing (measured: a work-stealing runtime serves ~25% fewer
    // requests/s on 2 cores); accepting, admin and signals stay on the caller's runtime
    let workers = WORKERS
        .get_or_init(|| pingora_runtime::Runtime::new_no_steal(threads.max(1), "rotagate-worker"));
    let done = tokio::spawn(accept_loop(
        listener,
        app,
        workers,
        stop_rx,
        opts.drain_timeout,
    ));
    Ok(RunningProxy {
        proxy_addr,
        admin_addr,
        shared,
        stop,
        done,
    })
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<HttpProxy<Proxy>>,
    workers: &'static pingora_runtime::Runtime,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    // pingora's own shutdown watch: true tells sessions not to keep connections alive
    let (pingora_shutdown_tx, pingora_shutdown) = watch::channel(false);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: log and keep accepting rather than die
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let app = app.clone();
                let shutdown = pingora_shutdown.clone();
                // re-register the socket with the worker's own reactor, so its I/O is
                // driven on the thread that serves it
                let Ok(std_tcp) = tcp.into_std() else { continue };
                conns.spawn_on(async move {
                    let Ok(tcp) = tokio::net::TcpStream::from_std(std_tcp) else { return };
                    let Some((tcp, mut head)) = screen_first_request_line(tcp).await else { return };
                    crate::hygiene::pad_for_h2c_peek(&mut head);
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                    let mut stream = L4Stream::from(tcp);
                    stream.set_socket_digest(SocketDigest::from_raw_fd(fd));
                    stream.rewind(&head);
                    let mut next = app.process_new(Box::new(stream), &shutdown).await;
                    while let Some(s) = next {
                        next = app.process_new(s, &shutdown).await;
                    }
                }, workers.get_handle());
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = pingora_shutdown_tx.send(true);
    // wakes keep-alive connections idling in read_request so they close now
    app.cleanup().await;
    let drained = tokio::time::timeout(drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "drain timeout: closing the remaining connections"
        );
        conns.abort_all();
    }
}

/// Longest wait for a new connection's first request line before pingora takes over.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers 400 and closes when a new connection's first request line is malformed
/// (see [`crate::hygiene::request_line_ok`]). Otherwise returns the socket with the
/// bytes read so far, which the caller rewinds into pingora's stream.
async fn screen_first_request_line(
    mut tcp: tokio::net::TcpStream,
) -> Option<(tokio::net::TcpStream, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX: usize = 4096;
    let mut buf = Vec::with_capacity(1024);
    let verdict = tokio::time::timeout(FIRST_LINE_TIMEOUT, async {
        loop {
            let mut chunk = [0u8; 1024];
            let room = (MAX - buf.len()).min(chunk.len());
            let n = tcp.read(&mut chunk[..room]).await.ok()?;
            if n == 0 {
                return None; // closed before a whole line
            }
            buf.extend_from_slice(&chunk[..n]);
            match crate::hygiene::request_line_ok(&buf) {
                Some(ok) => return Some(ok),
                // a line longer than we look at: let pingora judge it
                None if buf.len() >= MAX => return Some(true),
                None => {}
            }
        }
    })
    .await;
    match verdict {
        // on timeout pingora gets the partial line and applies its own timeouts
        Ok(Some(true)) | Err(_) => Some((tcp, buf)),
        Ok(None) => None,
        Ok(Some(false)) => {
            let body = b"bad request: malformed request line\n";
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tcp.write_all(body).await;
            let _ = tcp.shutdown().await;
            None
        }
    }
}
