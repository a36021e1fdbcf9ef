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

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(format: LogFormat) {
    // NOTE: with several worker threads, pingora's upstream pool sometimes cannot take
    // back an idle connection whose watcher runs on another thread; it logs that at
    // error level and opens a fresh connection (about 0.1% of requests under load).
    // Nothing fails, so that module is silenced by default. Likewise pingora's h1 server
    // warns when a response header is written twice, which the logout rewrite does on
    // purpose for an upstream 401 without a body (see `Proxy::rewrite_to_logout`); that
    // is its only warning. RUST_LOG overrides both.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,pingora_core=warn,pingora_proxy=warn,pingora_core::connectors=off,\
             pingora_core::protocols::http::v1::server=error",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
