//! The accept loop: a connection semaphore, HTTP/1.1 and h2c on one port (hyper-util's auto
//! builder), a header-read deadline, and a graceful drain with a deadline on shutdown.
//!
//! Invariant: when [`RunningServer::shutdown`] returns, every connection task has ended, so the
//! database handle is released and the data directory can be opened again (a restart in tests,
//! an offline command in production).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::bootstrap::{self, BootstrapOutcome};
use crate::config::ServeConfig;
use crate::state::AppState;
use crate::store::{Store, StoreError};
use crate::time::Clock;
use crate::web::serve_request;

#[derive(Debug)]
pub enum StartError {
    Store(StoreError),
    Bind(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Bind(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Store(e)
    }
}

/// A server that is accepting connections.
pub struct RunningServer {
    local_addr: SocketAddr,
    state: Arc<AppState>,
    bootstrap: Option<BootstrapOutcome>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stop_flusher: tokio::sync::oneshot::Sender<()>,
    flusher: tokio::task::JoinHandle<()>,
}

/// How often batched usage counters reach the store (SPEC §1: at least every second).
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

async fn flush_usage(state: &Arc<AppState>) {
    let state = state.clone();
    let flushed = tokio::task::spawn_blocking(move || state.usage.flush(&state.store)).await;
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "usage flush failed; will retry"),
        Err(e) => tracing::error!(error = %e, "usage flush task failed"),
    }
}

/// How often, by the server's clock, expired sessions are deleted (they are refused from the
/// moment they expire; this only reclaims their rows).
pub const SESSION_PURGE_INTERVAL_MS: i64 = 3_600_000;

/// Deletes the sessions expired at `now`, in one write transaction; `false` when that failed
/// (the next tick tries again).
async fn purge_sessions(state: &Arc<AppState>, now: crate::time::Timestamp) -> bool {
    let purged = state
        .store
        .write_blocking(move |txn| {
            crate::store::sessions::purge_expired_sessions(txn, now.millis())
        })
        .await;
    match purged {
        Ok(0) => true,
        Ok(n) => {
            tracing::info!(sessions = n, "expired sessions deleted");
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "expired-session purge failed; will retry");
            false
        }
    }
}

/// Flushes usage counters every interval, and once more when told to stop (after the drain).
/// The same task deletes expired sessions at its first tick and then every
/// [`SESSION_PURGE_INTERVAL_MS`] of the server's clock, before the flush of that tick.
async fn usage_flusher(state: Arc<AppState>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    // The first tick one period after start, not at once: nothing is pending yet, and a test
    // that lengthens the period then sees no flush it did not ask for.
    let period = state.config.usage_flush_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_purge: Option<crate::time::Timestamp> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let now = state.now();
                let due = last_purge.is_none_or(|at| {
                    now.millis().saturating_sub(at.millis()) >= SESSION_PURGE_INTERVAL_MS
                });
                if due && purge_sessions(&state, now).await {
                    last_purge = Some(now);
                }
                flush_usage(&state).await;
            }
        }
    }
    flush_usage(&state).await;
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Db(format!("start-up task failed: {e}")))?
}

/// Opens the store, bootstraps the operator on an empty database, binds and starts accepting.
pub async fn start(
    config: ServeConfig,
    clock: Arc<dyn Clock>,
) -> Result<RunningServer, StartError> {
    let data_dir = config.data_dir.clone();
    let store = blocking(move || Store::open(&data_dir)).await?;
    let now = clock.now();
    let provided = config.bootstrap_key.clone();
    let bootstrap_store = store.clone();
    let outcome =
        blocking(move || bootstrap::ensure_operator(&bootstrap_store, provided.as_ref(), now))
            .await?;
    if matches!(outcome, BootstrapOutcome::AlreadyDone) && config.bootstrap_key.is_some() {
        tracing::warn!(
            "ELIZA_CLOUD_BOOTSTRAP_KEY ignored: the database was bootstrapped on an earlier start"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(format!("cannot listen on {}: {e}", config.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    store.write_server_marker(&local_addr.to_string())?;
    let state = Arc::new(AppState::new(config, store, clock));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, state.clone(), shutdown_rx));
    let (stop_flusher, stop_rx) = tokio::sync::oneshot::channel();
    let flusher = tokio::spawn(usage_flusher(state.clone(), stop_rx));
    tracing::info!(address = %local_addr, "listening");
    Ok(RunningServer {
        local_addr,
        state,
        bootstrap: Some(outcome),
        shutdown,
        task,
        stop_flusher,
        flusher,
    })
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// What the start did about the operator account (taken once).
    pub fn take_bootstrap(&mut self) -> Option<BootstrapOutcome> {
        self.bootstrap.take()
    }

    /// Stops accepting, lets in-flight requests finish until the shutdown deadline, closes the
    /// rest, flushes the usage counters, and releases the database.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "accept loop ended abnormally");
        }
        let _ = self.stop_flusher.send(());
        if let Err(e) = self.flusher.await {
            tracing::error!(error = %e, "usage flusher ended abnormally");
        }
        self.state.store.remove_server_marker();
        tracing::info!("stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let semaphore = Arc::new(Semaphore::new(state.config.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();

    loop {
        // A permit first: past the cap, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let state = state.clone();
        let mut conn_shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            // hyper's header timer starts once it knows the protocol; until the first byte
            // arrives the deadline is ours.
            tokio::select! {
                biased;
                _ = conn_shutdown.changed() => return,
                ready = first_byte(&stream, state.config.header_timeout) => if !ready { return },
            }
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(serve_request(&state, req, peer).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let deadline = state.config.shutdown_timeout;
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Waits until the client has sent something, at most `deadline`.
async fn first_byte(stream: &TcpStream, deadline: Duration) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        tokio::time::timeout(deadline, stream.peek(&mut probe)).await,
        Ok(Ok(n)) if n > 0
    )
}
