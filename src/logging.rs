//! Log set-up (tracing). What is logged is decided at each call site: request lines carry the
//! method, the route name, the path without its query, the status, the latency and the request
//! id, never a header value, a body, a key, a token or a signature.

use tracing_subscriber::filter::LevelFilter;

use crate::config::{LogFormat, LogLevel};

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Installs the global subscriber writing to stderr; a second call (tests) is a no-op.
pub fn init(format: LogFormat, level: LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level_filter(level))
        .with_target(false);
    let _ = match format {
        LogFormat::Plain => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
