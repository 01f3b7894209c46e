//! eliza-cloud: the self-hosted elizaOS Cloud identity and app layer. `main.rs` parses the
//! command line and calls [`run`]; everything else lives in the modules below (see
//! ARCHITECTURE.md for the map and the invariants).

pub mod api;
pub mod auth;
pub mod background;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod dns;
pub mod domains;
pub mod gateway;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod money;
pub mod offline;
pub mod server;
pub mod state;
pub mod store;
pub mod time;
pub mod usage;
pub mod web;
pub mod webhooks;
pub mod x402;

use std::process::ExitCode;
use std::sync::Arc;

use bootstrap::BootstrapOutcome;
use cli::{Cli, Command, ServeArgs};
use config::ServeConfig;
use time::SystemClock;

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Runs one command to completion and answers the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let result = match cli.command {
        Command::Serve(args) => return serve(&args),
        Command::Keys(args) => offline::keys(args, &env_var, &mut stdout),
        Command::Orgs(args) => offline::orgs(args, &env_var, &mut stdout),
        Command::Payments(args) => offline::payments(args, &env_var, &mut stdout),
        Command::Ca(args) => offline::ca(args, &env_var, &mut stdout),
        Command::Check(args) => offline::check(args, &env_var, &mut stdout),
        Command::Backup(args) => offline::backup(args, &env_var, &mut stdout),
        Command::Version(_) => offline::version(&mut stdout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eliza-cloud: {}", e.message());
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match ServeConfig::resolve(args, &env_var) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("eliza-cloud: {e}");
            return ExitCode::from(1);
        }
    };
    // Held to the end of `serve`: dropping it writes the log lines still queued.
    let _log_writer = logging::init(config.log_format, config.log_level);
    // The default hook prints the panic message, which may hold request data; log the place only.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(location = location.as_deref().unwrap_or("unknown"), "panic");
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("eliza-cloud: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(serve_until_signal(config))
}

async fn serve_until_signal(config: ServeConfig) -> ExitCode {
    let mut server = match server::start(config, Arc::new(SystemClock)).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("eliza-cloud: {e}");
            let locked = matches!(
                e,
                server::StartError::Store(store::StoreError::Locked { .. })
            );
            return ExitCode::from(if locked { 2 } else { 1 });
        }
    };
    if let Some(BootstrapOutcome::Created {
        new_key: Some(key), ..
    }) = server.take_bootstrap()
    {
        // Printed straight to stderr, never through the logger: this is the one time the
        // operator's key is shown.
        eprintln!(
            "\nCreated the Operator organization. Its API key (unrestricted, live):\n\n    {}\n\n\
             Store it now: it will not be shown again.\n",
            key.expose()
        );
    }
    // The handlers are installed before the "listening" line, so a signal sent as soon as a
    // supervisor (or a test) sees that line is a drain, never the default kill.
    let signals = Signals::install();
    eprintln!("eliza-cloud listening on http://{}", server.local_addr());
    signals.wait().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, listened for from the moment of `install`.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(self.interrupt) => {}
                _ = next(self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
