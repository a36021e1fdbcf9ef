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

use pingora::apps::{HttpServerApp, HttpServerOptions, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::ALPN;
use pingora::protocols::SocketDigest;
use pingora::protocols::{GetSocketDigest, Ssl};
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::admin;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConnLimits};
use crate::conn::{
    self,
    stream::{ClientIo, ConnCounters, ConnSlot, GuardedStream},
};
use crate::listeners::{self, BindError, Handover, Listeners};
use crate::proxy::Proxy;
use crate::state::{Env, Runtime, RuntimeError, Shared};

/// The worker runtimes, one set per process: pingora keeps a process-wide handle to the
/// first no-steal runtime it sees (`pingora_runtime::current_handle`, used to spawn
/// HTTP/2 stream tasks), so a second set would leave that handle pointing at the first.
/// `listen.threads` therefore takes effect at process start only.
static WORKERS: std::sync::OnceLock<pingora_runtime::Runtime> = std::sync::OnceLock::new();

/// How long a graceful shutdown waits for in-flight requests by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a process that handed its sockets to a successor lets idle keep-alive
/// connections send one more request (answered with `Connection: close`) before it
/// closes them. Closing an idle connection at once loses a request the client is
/// sending at that moment (the keep-alive race); a client that sends nothing within
/// this time is closed as an idle timeout would. Short, because the embedded session
/// store passes to the successor only when this process has exited.
pub const UPGRADE_IDLE_GRACE: Duration = Duration::from_secs(1);

/// How to start a proxy.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The clock; tests pass a [`crate::clock::ManualClock`].
    pub clock: Arc<dyn Clock>,
    /// The file to re-read on reload (`None` for built-in configs such as the demo).
    pub config_path: Option<PathBuf>,
    /// Longest wait for in-flight requests on shutdown.
    pub drain_timeout: Duration,
    /// Reload when the config file or a file it reads changes (needs `config_path`).
    pub watch: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            clock: Arc::new(SystemClock),
            config_path: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            watch: false,
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The configuration could not be turned into a runtime.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The TLS listener's configuration was refused by rustls.
    #[error("cannot set up the TLS listener: {0}")]
    Tls(String),
    /// The start-up task failed.
    #[error("start-up failed: {0}")]
    Task(String),
}

/// A running proxy (and admin listener). Dropping it does not stop it: call
/// [`RunningProxy::shutdown`].
#[derive(Debug)]
pub struct RunningProxy {
    /// Where the proxy listens (the real port when the config said 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// Where the TLS listener listens, if `[listen.tls]` is configured.
    pub tls_addr: Option<SocketAddr>,
    /// The shared state (reload, metrics).
    pub shared: Arc<Shared>,
    handover: Handover,
    stop: watch::Sender<Option<Duration>>,
    stop_side: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    /// Graceful shutdown: stop accepting, close idle keep-alive connections, let
    /// in-flight requests finish (up to the drain timeout), then return.
    pub async fn shutdown(self) {
        self.stop_with(Duration::ZERO).await;
    }

    /// Shutdown after a successor took over the listening sockets (see
    /// [`crate::upgrade`]): stop accepting (the successor accepts on the same sockets,
    /// so nothing queued is lost), answer the next request of every keep-alive
    /// connection with `Connection: close` (HTTP/2: GOAWAY), close those still idle after
    /// [`UPGRADE_IDLE_GRACE`], let in-flight requests finish (up to the drain timeout).
    pub async fn shutdown_after_upgrade(self) {
        self.stop_with(UPGRADE_IDLE_GRACE).await;
    }

    async fn stop_with(self, idle_grace: Duration) {
        // our duplicates would keep the sockets listening (and queueing) until exit
        drop(self.handover);
        let _ = self.stop_side.send(true);
        let _ = self.stop.send(Some(idle_grace));
        let _ = self.done.await;
        // no more requests: the upstream health checks end too
        self.shared.current().upstreams.stop();
    }

    /// The listening sockets, by name, for a successor (`rotagate run --upgrade`).
    pub fn handover(&self) -> &Handover {
        &self.handover
    }
}

/// Binds the listeners and starts serving `config` on the current tokio runtime.
pub async fn start(config: Config, opts: StartOptions) -> Result<RunningProxy, StartError> {
    start_with(config, opts, Listeners::fresh()).await
}

/// [`start`] on the sockets a predecessor handed over where they match the config
/// (`rotagate run --upgrade`); the others are bound.
pub async fn start_with(
    config: Config,
    opts: StartOptions,
    mut sockets: Listeners,
) -> Result<RunningProxy, StartError> {
    let listen = config.listen.address;
    let admin_cfg = config.admin.clone();
    let h2c = config.listen.h2c;
    let threads = config.listen.threads;
    let max_header_bytes = config.listen.max_header_bytes;
    let tls_address = config.listen.tls.as_ref().map(|t| t.address);
    let env = Arc::new(Env::new(opts.clock.clone()));
    // opening the embedded store may wait for a previous process to let go of it
    let env2 = env.clone();
    let runtime = tokio::task::spawn_blocking(move || Runtime::build(config, 1, &env2))
        .await
        .map_err(|e| StartError::Task(e.to_string()))??;
    let shared = Arc::new(Shared::new(runtime, env, opts.config_path.clone()));

    // every listener is bound through `sockets` (it hands them on at an upgrade)
    let listener = sockets.bind(listeners::PROXY, listen).await?;
    let proxy_addr = local_addr(&listener, listeners::PROXY, listen)?;
    let tls = match tls_address {
        Some(addr) => {
            let l = sockets.bind(listeners::TLS, addr).await?;
            let bound = local_addr(&l, listeners::TLS, addr)?;
            // the certificates are read from the configuration in force at each
            // handshake, so a reload swaps them for new connections only
            let resolver = Arc::new(crate::tls::Resolver::new(shared.clone()));
            let cfg =
                crate::tls::server_config(resolver).map_err(|e| StartError::Tls(e.to_string()))?;
            let acceptor = Arc::new(Acceptor::from_server_config(Arc::new(cfg)));
            Some((l, bound, acceptor))
        }
        None => None,
    };
    let tls_addr = tls.as_ref().map(|(_, a, _)| *a);
    let tls = tls.map(|(l, _, a)| (l, a));
    let admin_listener = match &admin_cfg {
        Some(a) => Some((sockets.bind(listeners::ADMIN, a.address).await?, a.address)),
        None => None,
    };
    let handover = sockets.finish();

    let (stop, stop_rx) = watch::channel(None);
    // the admin listener and the config watcher stop at shutdown too
    let (stop_side, stop_side_rx) = watch::channel(false);
    let admin_addr = match admin_listener {
        Some((l, configured)) => {
            let addr = local_addr(&l, listeners::ADMIN, configured)?;
            tokio::spawn(admin::serve(l, shared.clone(), stop_side_rx.clone()));
            Some(addr)
        }
        None => None,
    };

    if let (true, Some(path)) = (opts.watch, opts.config_path.clone()) {
        tokio::spawn(crate::watch::run(shared.clone(), path, stop_side_rx));
    }

    let limits = runtime_limits(&shared);
    // NOTE: as pingora's own Server does, connections run on single-threaded runtimes
    // without work stealing (measured: a work-stealing runtime serves ~25% fewer
    // requests/s on 2 cores); accepting, admin and signals stay on the caller's runtime
    let workers = WORKERS
        .get_or_init(|| pingora_runtime::Runtime::new_no_steal(threads.max(1), "rotagate-worker"));
    // pingora sizes its shutdown notification's shards by `threads` (one per thread)
    let conf = Arc::new(ServerConf {
        threads: worker_count(workers),
        ..ServerConf::default()
    });
    // one HttpProxy per worker thread: each has its own upstream connection pool, so a
    // pooled connection is taken back and reused on the thread whose reactor drives it
    let apps = (0..worker_count(workers))
        .map(|_| Arc::new(http_proxy(&shared, &conf, h2c, &limits, max_header_bytes)))
        .collect();
    let done = tokio::spawn(accept_loop(
        listener,
        tls,
        apps,
        workers,
        AcceptOptions {
            shared: shared.clone(),
            counters: ConnCounters::new(&shared.metrics),
            max_connections: limits.max_connections,
            h2c,
        },
        stop_rx,
        opts.drain_timeout,
    ));
    Ok(RunningProxy {
        proxy_addr,
        admin_addr,
        tls_addr,
        shared,
        handover,
        stop,
        stop_side,
        done,
    })
}

fn local_addr(
    l: &TcpListener,
    name: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| BindError { name, addr, source }.into())
}

/// One pingora proxy service over `shared`, with rotagate's server and HTTP/2 options.
fn http_proxy(
    shared: &Arc<Shared>,
    conf: &Arc<ServerConf>,
    h2c: bool,
    limits: &ConnLimits,
    max_header_bytes: usize,
) -> HttpProxy<Proxy> {
    let mut app = HttpProxy::new(Proxy::new(shared.clone()), conf.clone());
    let mut server_opts = HttpServerOptions::default();
    server_opts.h2c = h2c;
    // an HTTP/2 connection without streams is idle like a keep-alive one
    server_opts.h2_idle_timeout = Some(limits.keepalive_timeout);
    app.server_options = Some(server_opts);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(limits.h2_max_concurrent_streams);
    h2.max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    app.h2_options = Some(h2);
    app.handle_init_modules();
    app
}

/// How many single-threaded runtimes `workers` has (1 for a work-stealing one).
fn worker_count(workers: &pingora_runtime::Runtime) -> usize {
    match workers {
        pingora_runtime::Runtime::NoSteal(r) => r.threads(),
        _ => 1,
    }
}

/// The runtime of worker `i` (connections are dealt to them in turn).
fn worker_at(workers: &pingora_runtime::Runtime, i: usize) -> &tokio::runtime::Handle {
    match workers {
        pingora_runtime::Runtime::NoSteal(r) => r.get_runtime_at(i),
        _ => workers.get_handle(),
    }
}

/// The connection limits in force now (a reload applies them to new connections).
fn runtime_limits(shared: &Shared) -> ConnLimits {
    shared.current().config.listen.limits
}

/// What the accept loop needs besides the listener.
struct AcceptOptions {
    shared: Arc<Shared>,
    counters: Arc<ConnCounters>,
    max_connections: usize,
    h2c: bool,
}

/// The TLS listener and its handshake settings.
type TlsListener = (TcpListener, Arc<Acceptor>);

/// The next connection of the TLS listener; never, when there is none.
async fn accept_tls(
    tls: &Option<TlsListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match tls {
        Some((l, _)) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Accepts on the plain listener and, when configured, the TLS listener; both share
/// the `max_connections` slots, the worker runtimes and the drain.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsListener>,
    apps: Vec<Arc<HttpProxy<Proxy>>>,
    workers: &'static pingora_runtime::Runtime,
    opts: AcceptOptions,
    mut stop: watch::Receiver<Option<Duration>>,
    drain_timeout: Duration,
) {
    // pingora's own shutdown watch: true tells sessions not to keep connections alive
    let (pingora_shutdown_tx, pingora_shutdown) = watch::channel(false);
    let mut conns = JoinSet::new();
    // one permit per open connection; without one we stop accepting and new
    // connections wait in the kernel's backlog (listen.max_connections)
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let counters = opts.counters;
    let mut backoff: Option<Duration> = None;
    // the worker the next connection goes to (round robin: even with few connections)
    let mut next_worker = 0usize;
    'accept: loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                counters.limit_wait.inc();
                loop {
                    tokio::select! {
                        p = slots.clone().acquire_owned() => match p {
                            Ok(p) => break p,
                            Err(_) => break 'accept, // closed: cannot happen while we hold it
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                        changed = stop.changed() => {
                            if changed.is_err() || stop.borrow().is_some() {
                                break 'accept;
                            }
                        }
                    }
                }
            }
        };
        let (accepted, acceptor) = tokio::select! {
            accepted = listener.accept() => (accepted, None),
            accepted = accept_tls(&tls) => (accepted, tls.as_ref().map(|(_, a)| a.clone())),
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            changed = stop.changed() => {
                if changed.is_err() || stop.borrow().is_some() {
                    break;
                }
                continue;
            }
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => {
                backoff = None;
                tcp
            }
            Err(e) => {
                counters.accept_error.inc();
                let Some(pause) = conn::accept_backoff(e.kind(), backoff) else {
                    continue;
                };
                if backoff.is_none() {
                    // once per episode: EMFILE would otherwise log in a loop
                    tracing::warn!(error = %e, "accept failed; pausing accepts until it clears");
                }
                backoff = Some(pause);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    changed = stop.changed() => {
                        if changed.is_err() || stop.borrow().is_some() {
                            break 'accept;
                        }
                    }
                }
                continue;
            }
        };
        let accepted_at = tokio::time::Instant::now();
        let _ = tcp.set_nodelay(true);
        let slot = ConnSlot::new(permit, counters.clone());
        let limits = runtime_limits(&opts.shared);
        let worker = next_worker;
        next_worker = (next_worker + 1) % apps.len();
        let app = apps[worker].clone();
        let shutdown = pingora_shutdown.clone();
        let h2c = opts.h2c;
        let counters = counters.clone();
        // re-register the socket with the worker's own reactor, so its I/O is
        // driven on the thread that serves it
        let Ok(std_tcp) = tcp.into_std() else {
            continue;
        };
        conns.spawn_on(
            async move {
                let Ok(tcp) = tokio::net::TcpStream::from_std(std_tcp) else {
                    return;
                };
                let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                let mut l4 = L4Stream::from(tcp);
                l4.set_socket_digest(SocketDigest::from_raw_fd(fd));
                match acceptor {
                    None => {
                        let stream = GuardedStream::new(l4, limits, slot);
                        serve_connection(&app, stream, h2c, &shutdown, &limits).await;
                    }
                    Some(acceptor) => {
                        // the handshake counts against the first request's header
                        // deadline: a client that stalls it holds nothing for longer
                        let due = accepted_at + limits.header_timeout;
                        // kept here, not in the timeout: the socket closes only after the
                        // timeout is counted
                        let handshake = acceptor.tls_handshake(l4);
                        tokio::pin!(handshake);
                        let tls = match tokio::time::timeout_at(due, &mut handshake).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                counters.tls_handshake_error.inc();
                                tracing::debug!(error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                counters.header_timeout.inc();
                                return;
                            }
                        };
                        let stream = GuardedStream::accepted_at(tls, limits, slot, accepted_at);
                        serve_connection(&app, stream, false, &shutdown, &limits).await;
                    }
                }
            },
            worker_at(workers, worker),
        );
    }
    drop(listener);
    drop(tls);
    let idle_grace = stop.borrow().unwrap_or_default().min(drain_timeout);
    let started = tokio::time::Instant::now();
    // from now on answers say `Connection: close` and HTTP/2 connections get GOAWAY
    let _ = pingora_shutdown_tx.send(true);
    if !idle_grace.is_zero() {
        // keep-alive connections get to send their next request (see UPGRADE_IDLE_GRACE)
        let _ = tokio::time::timeout(idle_grace, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
    }
    // wakes keep-alive connections idling in read_request so they close now
    for app in &apps {
        app.cleanup().await;
    }
    let drained = tokio::time::timeout(drain_timeout.saturating_sub(started.elapsed()), async {
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

/// Serves one accepted connection: HTTP/2 when TLS negotiated `h2` (ALPN) or, with
/// `h2c`, when the client opens with the HTTP/2 preface; HTTP/1 otherwise, after the
/// first request line is screened.
async fn serve_connection<S: ClientIo>(
    app: &Arc<HttpProxy<Proxy>>,
    mut stream: GuardedStream<S>,
    h2c: bool,
    shutdown: &watch::Receiver<bool>,
    limits: &ConnLimits,
) {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        stream.set_busy();
        let _ = app.process_new(Box::new(stream), shutdown).await;
        return;
    }
    match screen_first_request_line(&mut stream).await {
        Some(Opening::H2) if h2c => {
            stream.set_busy();
            let _ = app.process_new(Box::new(stream), shutdown).await;
        }
        Some(_) => serve_http1(app, stream, shutdown, limits).await,
        None => {}
    }
}

/// Serves the HTTP/1 requests of one connection in order, as pingora's own
/// `ServerApp::process_new` does, with what it does not do: the idle deadline between
/// requests, `body_timeout` on every request (pingora resets it to 60 s per request),
/// and pipelining (RFC 9112 §9.3.2: requests a client sends before reading the previous
/// answer are answered one after another, in order; without it pingora answers the
/// first, drops the rest and closes).
async fn serve_http1<S: ClientIo>(
    app: &Arc<HttpProxy<Proxy>>,
    stream: GuardedStream<S>,
    shutdown: &watch::Receiver<bool>,
    limits: &ConnLimits,
) {
    let mut session = ServerSession::new_http1(Box::new(stream));
    // our stream times header reads; pingora's per-read keep-alive timer is not needed
    session.set_keepalive(if *shutdown.borrow() { None } else { Some(0) });
    session.set_pipelining_enabled(true);
    let mut next = serve_one(app, session, shutdown, limits).await;
    while let Some(reused) = next {
        let (stream, settings) = reused.consume();
        // the stream is the one we made: take it back to start its idle deadline
        let Ok(mut stream) = stream.into_any().downcast::<GuardedStream<S>>() else {
            return;
        };
        stream.set_idle();
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            // keep-alive state and pipelined bytes already read
            settings.apply_to_session(&mut session);
        }
        next = serve_one(app, session, shutdown, limits).await;
    }
}

async fn serve_one(
    app: &Arc<HttpProxy<Proxy>>,
    mut session: ServerSession,
    shutdown: &watch::Receiver<bool>,
    limits: &ConnLimits,
) -> Option<pingora::apps::ReusedHttpStream> {
    session.set_read_timeout(Some(limits.body_timeout));
    session.set_write_timeout(Some(limits.body_timeout));
    app.process_new_http(session, shutdown).await
}

/// How a connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    /// An HTTP/1 request line.
    Http1,
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    H2,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads a new connection's first request line (under its header deadline) and answers
/// 400 and closes when it is malformed (see [`crate::hygiene::request_line_ok`]).
/// Otherwise the bytes read are put back for pingora, and the opening is returned; an
/// HTTP/2 preface is read whole first, so that pingora's peek for it cannot wait.
/// `None` when the connection is done (closed, timed out, or answered).
async fn screen_first_request_line<S: ClientIo>(stream: &mut GuardedStream<S>) -> Option<Opening> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MAX: usize = 4096;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let opening = loop {
        let room = (MAX - buf.len()).min(chunk.len());
        // a header deadline that passes fails the read: the connection is closed
        let n = stream.read(&mut chunk[..room]).await.ok()?;
        if n == 0 {
            return None; // closed before a whole line
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.starts_with(b"PRI * HTTP/2.0\r\n") {
            if buf.len() >= H2_PREFACE.len() {
                break Opening::H2;
            }
            continue;
        }
        match crate::hygiene::request_line_ok(&buf) {
            Some(true) => break Opening::Http1,
            // a line longer than we look at: let pingora judge it
            None if buf.len() >= MAX => break Opening::Http1,
            None => {}
            Some(false) => {
                let body = b"bad request: malformed request line\n";
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body).await;
                let _ = stream.flush().await;
                // dropping the stream closes it the lingering way
                return None;
            }
        }
    };
    stream.rewind(&buf);
    Some(opening)
}
