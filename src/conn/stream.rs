//! The client socket as pingora sees it: pingora's own L4 stream, wrapped so that the
//! header and idle deadlines of [`super::Phase`] hold on every read, and so that the
//! connection is closed the gentle way (shut down, drain briefly, close) and frees its
//! `max_connections` slot only when the socket is really gone.
//!
//! Writes are buffered as pingora's own listener buffers them
//! (`L4BufferSettings`, [`WRITE_BUFFER`] bytes): pingora flushes at the end of each
//! response header without a body and each body, so a small answer leaves in one send
//! instead of one for its header and one for its body. pingora's `Stream::set_buffer`
//! is crate-private, so the buffer is ours, in front of its stream.
//!
//! The socket under the deadlines is pingora's L4 stream for the plain listener, and
//! pingora's TLS stream over it for the TLS listener ([`TlsGuardedStream`]): the TLS
//! handshake runs before, under the same header deadline (see `crate::server`).
//!
//! NOTE: pingora 0.9 times each header *read* (its keep-alive timeout, or none at all
//! after a first HTTP/1.1 request: `KeepaliveStatus::Infinite`), never a whole header
//! block, so a client dribbling one header byte at a time holds a connection for as long
//! as it likes. The deadline has to live under pingora, in the stream it reads from.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::{Stream as L4Stream, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, TlsStream, ALPN};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

use super::{deadline, Phase, LINGER};
use crate::config::ConnLimits;
use crate::metrics::Metrics;

/// The write buffer of a client connection: pingora's default (about one MSS).
pub const WRITE_BUFFER: usize = DEFAULT_L4_WRITE_BUFFER_SIZE;

/// The client socket under its write buffer.
type Inner<S> = BufWriter<S>;

/// What a [`GuardedStream`] can wrap: a client connection as pingora sees it.
pub trait ClientIo:
    AsyncRead
    + AsyncWrite
    + Shutdown
    + UniqueID
    + Ssl
    + GetTimingDigest
    + GetProxyDigest
    + GetSocketDigest
    + Unpin
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> ClientIo for T where
    T: AsyncRead
        + AsyncWrite
        + Shutdown
        + UniqueID
        + Ssl
        + GetTimingDigest
        + GetProxyDigest
        + GetSocketDigest
        + Unpin
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// A connection of the TLS listener: the deadlines over pingora's TLS stream.
pub type TlsGuardedStream = GuardedStream<TlsStream<L4Stream>>;

/// The connection counters, resolved once at start so a connection only bumps atomics.
#[derive(Debug)]
pub struct ConnCounters {
    /// Header blocks not complete within `header_timeout`.
    pub header_timeout: IntCounter,
    /// Keep-alive connections idle past `keepalive_timeout`.
    pub idle_timeout: IntCounter,
    /// Closes that drained the client's unread bytes first.
    pub lingering_close: IntCounter,
    /// Times the accept loop paused at `max_connections`.
    pub limit_wait: IntCounter,
    /// Failed `accept` calls.
    pub accept_error: IntCounter,
    /// TLS handshakes that failed (protocol version, no shared cipher, bad record).
    pub tls_handshake_error: IntCounter,
    /// Connections open now.
    pub open: IntGauge,
}

impl ConnCounters {
    /// The counters of `m`.
    pub fn new(m: &Metrics) -> Arc<ConnCounters> {
        let ev = |e: &str| m.connection_events.with_label_values(&[e]);
        Arc::new(ConnCounters {
            header_timeout: ev("header_timeout"),
            idle_timeout: ev("idle_timeout"),
            lingering_close: ev("lingering_close"),
            limit_wait: ev("limit_wait"),
            accept_error: ev("accept_error"),
            tls_handshake_error: ev("tls_handshake_error"),
            open: m.connections_open.clone(),
        })
    }
}

/// One `max_connections` slot, held for as long as the socket is open.
#[derive(Debug)]
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    counters: Arc<ConnCounters>,
}

impl ConnSlot {
    /// Takes `permit` for one connection and counts it as open.
    pub fn new(permit: OwnedSemaphorePermit, counters: Arc<ConnCounters>) -> ConnSlot {
        counters.open.inc();
        ConnSlot {
            _permit: permit,
            counters,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.counters.open.dec();
    }
}

/// A client connection with deadlines (see the module docs).
#[derive(Debug)]
pub struct GuardedStream<S: ClientIo = L4Stream> {
    /// `None` only once `Drop` has handed the socket to the lingering close.
    inner: Option<Inner<S>>,
    /// Bytes already read and put back ([`GuardedStream::rewind`]), read again first.
    unread: Vec<u8>,
    /// A [`Phase`]; atomic because the request hook marks the header block done
    /// through a shared reference (`Session::stream`).
    phase: AtomicU8,
    /// When the current timed phase began.
    since: Instant,
    limits: ConnLimits,
    /// Wakes the connection at its deadline while a read is pending; made on first need.
    timer: Option<Pin<Box<Sleep>>>,
    /// Set once a deadline has fired: the phase it fired in.
    expired: Option<Phase>,
    /// The client closed its side: nothing unread can be left, no lingering needed.
    eof: bool,
    slot: Option<ConnSlot>,
}

impl<S: ClientIo> GuardedStream<S> {
    /// Wraps a freshly accepted connection: its first request's header block is due
    /// `limits.header_timeout` after now.
    pub fn new(inner: S, limits: ConnLimits, slot: ConnSlot) -> GuardedStream<S> {
        Self::accepted_at(inner, limits, slot, Instant::now())
    }

    /// Wraps a connection accepted at `since` (before its TLS handshake): the header
    /// deadline counts from then, so the handshake and the first header block share it.
    pub fn accepted_at(
        inner: S,
        limits: ConnLimits,
        slot: ConnSlot,
        since: Instant,
    ) -> GuardedStream<S> {
        GuardedStream {
            inner: Some(BufWriter::with_capacity(WRITE_BUFFER, inner)),
            unread: Vec::new(),
            phase: AtomicU8::new(Phase::Header.as_u8()),
            since,
            limits,
            timer: None,
            expired: None,
            eof: false,
            slot: Some(slot),
        }
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    fn set_phase(&mut self, p: Phase) {
        self.phase.store(p.as_u8(), Ordering::Relaxed);
        self.since = Instant::now();
    }

    /// A request is done and the connection is kept alive: the idle deadline starts.
    pub fn set_idle(&mut self) {
        self.set_phase(Phase::Idle);
    }

    /// The connection is handed to a protocol with its own timeouts (HTTP/2).
    pub fn set_busy(&mut self) {
        self.set_phase(Phase::Busy);
    }

    /// The request's header block has been read: its deadline no longer applies.
    pub fn header_done(&self) {
        self.phase.store(Phase::Busy.as_u8(), Ordering::Relaxed);
    }

    /// Puts bytes already read back in front of the stream (pingora parses them first).
    /// Kept here rather than in pingora's L4 stream so a TLS stream can be rewound too.
    pub fn rewind(&mut self, data: &[u8]) {
        self.unread.splice(0..0, data.iter().copied());
    }

    fn expire(&mut self, phase: Phase) -> Poll<io::Result<()>> {
        if self.expired.is_none() {
            self.expired = Some(phase);
            if let Some(slot) = &self.slot {
                match phase {
                    Phase::Header => slot.counters.header_timeout.inc(),
                    Phase::Idle => slot.counters.idle_timeout.inc(),
                    Phase::Busy => {}
                }
            }
        }
        match phase {
            // an idle connection simply ends: pingora sees a clean close before a request
            Phase::Idle => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request header timeout",
            ))),
        }
    }
}

/// Marks the request header block of `session` as read (called from the first request
/// hook): from here on pingora's per-read `body_timeout` governs the connection.
pub fn header_done(session: &Session) {
    let Some(s) = session.downstream_session.stream() else {
        return;
    };
    if let Some(g) = s.as_any().downcast_ref::<GuardedStream>() {
        g.header_done();
    } else if let Some(g) = s.as_any().downcast_ref::<TlsGuardedStream>() {
        g.header_done();
    }
}

impl<S: ClientIo> AsyncRead for GuardedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(phase) = this.expired {
            return this.expire(phase);
        }
        if !this.unread.is_empty() {
            // read before, under the deadline of its phase: no phase change here
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let before = buf.filled().len();
        match Pin::new(inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let phase = this.phase();
                    if phase.on_bytes() != phase {
                        this.set_phase(phase.on_bytes());
                    }
                } else if buf.remaining() > 0 {
                    this.eof = true;
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let phase = this.phase();
        let Some(due) = deadline(phase, this.since, &this.limits) else {
            return Poll::Pending;
        };
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        // A timer set for an earlier instant stays as it is: it fires early and is moved
        // on then. Moving it to each new deadline (every keep-alive request pushes the
        // idle deadline on) re-registered it in tokio's timer wheel on every request.
        if timer.deadline() > due {
            timer.as_mut().reset(due);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= due {
                return this.expire(phase);
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

impl<S: ClientIo> AsyncWrite for GuardedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner.as_mut() {
            Some(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

#[async_trait]
impl<S: ClientIo> Shutdown for GuardedStream<S> {
    async fn shutdown(&mut self) {
        if let Some(s) = self.inner.as_mut() {
            // what is still buffered goes out first
            let _ = s.flush().await;
            Shutdown::shutdown(s.get_mut()).await;
        }
    }
}

impl<S: ClientIo> UniqueID for GuardedStream<S> {
    fn id(&self) -> UniqueIDType {
        self.inner.as_ref().map_or(-1, |s| s.get_ref().id())
    }
}

/// The TLS facts pingora reads (the request's scheme, ALPN for HTTP/2) come from the
/// stream underneath: none for plain connections.
impl<S: ClientIo> Ssl for GuardedStream<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.as_ref().and_then(|s| s.get_ref().get_ssl())
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner
            .as_ref()
            .and_then(|s| s.get_ref().get_ssl_digest())
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner
            .as_ref()
            .and_then(|s| s.get_ref().selected_alpn_proto())
    }
}

impl<S: ClientIo> GetTimingDigest for GuardedStream<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner
            .as_ref()
            .map(|s| s.get_ref().get_timing_digest())
            .unwrap_or_default()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_ref().get_read_pending_time())
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_ref().get_write_pending_time())
    }
}

impl<S: ClientIo> GetProxyDigest for GuardedStream<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner
            .as_ref()
            .and_then(|s| s.get_ref().get_proxy_digest())
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.get_mut().set_proxy_digest(digest);
        }
    }
}

impl<S: ClientIo> GetSocketDigest for GuardedStream<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner
            .as_ref()
            .and_then(|s| s.get_ref().get_socket_digest())
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.get_mut().set_socket_digest(digest);
        }
    }
}

#[async_trait]
impl<S: ClientIo> Peek for GuardedStream<S> {
    /// pingora peeks for the HTTP/2 preface; the accept loop has already read it (under
    /// the header deadline) and rewound it, so this never waits on the client.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let Some(s) = self.inner.as_mut() else {
            return Ok(false);
        };
        let mut chunk = [0u8; 1024];
        while self.unread.len() < buf.len() {
            let want = (buf.len() - self.unread.len()).min(chunk.len());
            let n = s.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.unread.extend_from_slice(&chunk[..n]);
        }
        buf.copy_from_slice(&self.unread[..buf.len()]);
        Ok(true)
    }
}

impl<S: ClientIo> Drop for GuardedStream<S> {
    fn drop(&mut self) {
        let (Some(inner), slot) = (self.inner.take(), self.slot.take()) else {
            return;
        };
        // after the client's FIN nothing can be left unread; after a deadline there is
        // no answer to protect: close at once
        if self.eof || self.expired.is_some() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            if let Some(s) = &slot {
                s.counters.lingering_close.inc();
            }
            rt.spawn(linger(inner, slot));
        }
    }
}

/// The lingering close of RFC 9112 §9.6: shut down our sending side (the client reads
/// our last answer, then EOF), read and discard what the client still sends for up to
/// [`LINGER`], then close. The connection's slot is freed only then. Shutting down
/// the buffered stream writes out what is still buffered first.
async fn linger<S: ClientIo>(mut s: Inner<S>, slot: Option<ConnSlot>) {
    let _ = AsyncWriteExt::shutdown(&mut s).await;
    let until = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut scratch)).await {
        if n == 0 {
            break;
        }
    }
    drop(s);
    drop(slot);
}
