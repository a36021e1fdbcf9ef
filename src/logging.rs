//! Log setup: `tracing` with a JSON or pretty formatter. `RUST_LOG` filters as usual
//! (default `info`). Nothing in rotagate logs a cookie, token or secret value.

use tracing_subscriber::EnvFilter;

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
/// `RUST_LOG` says: a debugging session must not write session cookies to disk.
const CAPPED: [&str; 3] = ["pingora", "h2", "hyper"];

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

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(format: LogFormat) {
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
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    let _ = match format {
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(filter))
            .try_init(),
        LogFormat::Pretty => registry
            .with(layer.compact().with_filter(filter))
            .try_init(),
    };
}
