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

/// Installs the global subscriber writing to stderr through a writer thread of its own (a request
/// hands its line over and goes on; it never waits for a write to stderr). Lines are never
/// dropped: when the thread's queue is full, the logging thread waits. Keep the guard until the
/// process ends: dropping it writes what is queued. A second call (tests) installs nothing.
pub fn init(format: LogFormat, level: LogLevel) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("eliza-cloud-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level_filter(level))
        .with_target(false);
    let _ = match format {
        LogFormat::Plain => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}
