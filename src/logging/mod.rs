//! Log setup: `tracing` with a JSON or pretty formatter. `RUST_LOG` filters as usual
//! (default `info`). Nothing in rotagate logs a cookie, token or secret value.
//!
//! Lines go to stderr through a non-blocking writer (`tracing-appender`): a worker
//! thread formats the line and hands it to a bounded queue that a writer thread
//! drains, in batches: buffered, one write for what is queued, flushed whenever the
//! queue is empty. When the queue is full (stderr slower than the traffic), the line is
//! dropped and counted ([`dropped_lines`], `rotagate_log_lines_dropped_total`) rather
//! than a request waiting on a pipe. The queue is flushed when the [`LogGuard`] from
//! [`init`] is dropped, at exit.

mod line;

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines the queue holds before it drops: at ~200 bytes a line, about 3 MB.
pub const QUEUE_LINES: usize = 16_384;

/// The drop counter of the process's writer, once [`init`] has installed it.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the writer's queue was full (0 before [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Keeps the log writer thread running; dropping it writes out the lines still queued.
/// Hold it until the process exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _guard: Option<WorkerGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// How long the writer thread lingers after writing out its queue before it waits for
/// the next line: at most this much later a line is written, and the threads that log
/// wake it at most this often (one wake and write per request at full load halved the
/// throughput with the default access line).
pub const WRITE_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// The writer thread's side of stderr: lines buffered (one `write` for what the queue
/// held), and after each flush, a [`WRITE_LINGER`] pause in which lines queue up
/// without waking it. tracing-appender's worker flushes whenever it has emptied the
/// queue and at exit, so nothing stays in the buffer.
struct Batched<W: std::io::Write> {
    out: std::io::BufWriter<W>,
}

impl<W: std::io::Write> Batched<W> {
    fn new(w: W) -> Batched<W> {
        Batched {
            out: std::io::BufWriter::with_capacity(64 * 1024, w),
        }
    }
}

impl<W: std::io::Write> std::io::Write for Batched<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.out.flush();
        std::thread::sleep(WRITE_LINGER);
        r
    }
}

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// Libraries whose debug and trace lines print whole request or response headers
/// (pingora: "Sending header to upstream {req:?}", "Response header: {resp:?}", raw
/// header bytes of an unparsable request). They never log below `info`, whatever
/// `RUST_LOG` says: a debugging session must not write session cookies to disk. mio
/// (its `log` feature comes with the file watcher) and rustls are capped too: their
/// trace lines are poller tokens and handshake steps, noise in a debugging session.
const CAPPED: [&str; 5] = ["pingora", "h2", "hyper", "mio", "rustls"];

/// The filter used when `RUST_LOG` is not set.
///
/// NOTE: with several worker threads, pingora's upstream pool sometimes cannot take
/// back an idle connection whose watcher runs on another thread; it logs that at error
/// level and opens a fresh connection (about 0.1% of requests under load). Nothing
/// fails, so that module is silenced. Likewise pingora's h1 server warns when a
/// response header is written twice, which the logout rewrite does on purpose for an
/// upstream 401 without a body. `pingora_proxy`'s own lines are replaced by rotagate's
/// (`rotagate::proxy`, one per failed request, without query or raw bytes); what it
/// would still print is about clients that went away or ran out of time, which
/// `rotagate_connection_events_total` counts instead.
pub const DEFAULT_FILTER: &str = "info,pingora_core=warn,pingora_proxy=off,\
     pingora_core::connectors=off,pingora_core::protocols::http::v1::server=error";

/// The fmt layer of `format` writing to `writer`: tracing-subscriber's compact or
/// flattened JSON format, with the access line written by [`line::Fast`].
fn layer<S, W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            layer
                .json()
                .flatten_event(true)
                .map_event_format(|f| line::Fast::new(f, line::Form::Json)),
        ),
        LogFormat::Pretty => Box::new(
            layer
                .compact()
                .map_event_format(|f| line::Fast::new(f, line::Form::Compact)),
        ),
    }
}

/// Installs the global subscriber (once per process; later calls are ignored and
/// return a guard that holds nothing).
pub fn init(format: LogFormat) -> LogGuard {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let cap = CAPPED.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, name| t.with_target(*name, LevelFilter::INFO),
    );
    let filter = filter.and(cap);
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUE_LINES)
        .lossy(true)
        .thread_name("rotagate-log")
        .finish(Batched::new(std::io::stderr()));
    let dropped = writer.error_counter();
    // colour codes only for a terminal: not into a file or a log shipper's pipe
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let installed = tracing_subscriber::registry()
        .with(layer(format, ansi, writer).with_filter(filter))
        .try_init();
    if installed.is_err() {
        return LogGuard { _guard: None };
    }
    let _ = DROPPED.set(dropped);
    LogGuard {
        _guard: Some(guard),
    }
}

/// The access line of one request (target [`line::ACCESS_TARGET`]): method, the
/// normalised path without its query, the route's name, the status sent, the session
/// outcome, the time taken and, for a failed request, pingora's error kind.
pub fn access(
    method: &http::Method,
    path: &str,
    route: &str,
    status: u16,
    session: &str,
    elapsed: std::time::Duration,
    error: Option<&str>,
) {
    tracing::info!(
        target: line::ACCESS_TARGET,
        method = %method,
        path = %path,
        route = %route,
        status,
        session,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        error,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<u8>>>);

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Memory {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// tracing-subscriber's own layer of `format`, as `init` configured it before the
    /// access line had a formatter of its own.
    fn stock<S>(
        format: LogFormat,
        out: Memory,
    ) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || out.clone());
        match format {
            LogFormat::Json => Box::new(layer.json().flatten_event(true)),
            LogFormat::Pretty => Box::new(layer.compact()),
        }
    }

    /// The line with its timestamp cut out, and the timestamp.
    fn untimed(format: LogFormat, line: &str) -> (String, String) {
        let (at, len) = match format {
            LogFormat::Pretty => (0, 27),
            LogFormat::Json => ("{\"timestamp\":\"".len(), 27),
        };
        let stamp = line[at..at + len].to_string();
        (format!("{}{}", &line[..at], &line[at + len..]), stamp)
    }

    /// Access lines of every shape (odd methods, paths, sessions, durations in
    /// exponent notation, with and without an error), another event, and an access
    /// line inside a span, through both layers: the same lines but for the time.
    #[test]
    fn access_lines_are_written_as_tracing_subscriber_writes_them() {
        let method = |m: &str| http::Method::from_bytes(m.as_bytes()).unwrap();
        let lines = || {
            access(
                &method("GET"),
                "/",
                "-",
                200,
                "-",
                Duration::from_micros(1234),
                None,
            );
            access(
                &method("PURGE"),
                "/a \"b\" \\c\td\r\u{1b}[31m\u{7f}\u{85}é✓",
                "pages \"x\"",
                502,
                "re\"issued\u{1b}\n",
                Duration::from_nanos(1),
                Some("ConnectRefused"),
            );
            access(
                &method("POST"),
                "/x",
                "r",
                0,
                "valid",
                Duration::from_secs(1 << 40),
                Some("-"),
            );
            access(&method("GET"), "/", "-", 404, "none", Duration::ZERO, None);
            tracing::warn!(target: "rotagate::proxy", path = "/p", n = 3, ok = true, "upstream \u{1b} failed");
            let span = tracing::info_span!("outer", id = 7);
            let _in = span.enter();
            access(
                &method("GET"),
                "/in-span",
                "-",
                200,
                "-",
                Duration::from_millis(3),
                None,
            );
        };
        for format in [LogFormat::Pretty, LogFormat::Json] {
            let (ours, theirs) = (Memory::default(), Memory::default());
            let w = ours.clone();
            let subscriber =
                tracing_subscriber::registry().with(layer(format, false, move || w.clone()));
            let fast = line::FAST_LINES.with(|n| n.get());
            tracing::subscriber::with_default(subscriber, lines);
            // the four access lines outside the span took the fast path, nothing else did
            assert_eq!(line::FAST_LINES.with(|n| n.get()) - fast, 4);
            let subscriber = tracing_subscriber::registry().with(stock(format, theirs.clone()));
            tracing::subscriber::with_default(subscriber, lines);
            let (ours, theirs) = (ours.lines(), theirs.lines());
            assert_eq!(ours.len(), 6, "{ours:#?}");
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                let ((a, stamp), (b, _)) = (untimed(format, a), untimed(format, b));
                assert_eq!(a, b, "{format:?}");
                let shape = stamp.char_indices().all(|(i, c)| match i {
                    4 | 7 => c == '-',
                    10 => c == 'T',
                    13 | 16 => c == ':',
                    19 => c == '.',
                    26 => c == 'Z',
                    _ => c.is_ascii_digit(),
                });
                assert!(shape, "timestamp {stamp:?}");
            }
        }
    }
}
