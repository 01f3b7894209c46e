//! The accept loop: a connection semaphore, a per-client-address connection cap, HTTP/1.1 and
//! h2c on one port (hyper-util's auto builder), a header-read deadline, an idle timeout for both
//! protocols, and a graceful drain with a deadline on shutdown, after which the promised work
//! (`background::Tasks`) is awaited.
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
    /// The webhook sender's loop (SPEC §10), stopped with the accept loop.
    sender: Option<tokio::task::JoinHandle<()>>,
    /// The TLS listener's address and accept loop (`--tls-listen`).
    tls_addr: Option<SocketAddr>,
    tls_task: Option<tokio::task::JoinHandle<()>>,
}

/// How often certificates are checked for renewal (by the server's clock).
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Renews the certificates that are due at the server's clock now and swaps them into the SNI
/// map after the commit (SPEC §11: at two thirds of their lifetime). Answers how many.
pub async fn renew_certificates(state: &Arc<AppState>) -> usize {
    let renewing = state.clone();
    let renewed = blocking(move || {
        let now = renewing.clock.now().millis();
        let acme = renewing.acme.is_some();
        if !renewing
            .store
            .read(|txn| crate::domains::certs::any_due(txn, now, acme))?
        {
            return Ok(Vec::new());
        }
        renewing
            .store
            .write(|txn| crate::domains::certs::renew_due(txn, now, acme))
    })
    .await;
    match renewed {
        Ok(list) => {
            let n = list.len();
            for (name, cert) in list {
                tracing::info!(name = %name, "certificate renewed");
                state.certs.insert(name, &cert);
            }
            n
        }
        Err(e) => {
            // Retried at the next check (every minute): a backoff by the interval itself.
            tracing::error!(error = %e, "renewing certificates failed; will retry");
            0
        }
    }
}

async fn certificate_renewer(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CERT_CHECK_INTERVAL) => {}
            _ = stop.changed() => return,
        }
        renew_certificates(&state).await;
    }
}

/// The ACME issuer's passes (SPEC §11): at start, after a verify, and every minute (renewals
/// and retries fall due by the server's clock). A pass in flight when the server stops is
/// dropped with the runtime; its name stays queued and is ordered again at the next start.
async fn acme_orderer(
    state: Arc<AppState>,
    acme: Arc<crate::domains::acme::Acme>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let pass = crate::domains::acme::run_pass(&state);
        tokio::select! {
            _ = pass => {}
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(CERT_CHECK_INTERVAL) => {}
            _ = acme.woken() => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often batched usage counters reach the store (SPEC §1: at least every second).
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

async fn flush_usage(state: &Arc<AppState>) {
    let state = state.clone();
    let flushed = tokio::task::spawn_blocking(move || {
        // The metered debits of the interval, then the counters (SPEC §1, §9).
        if let Err(e) = state.gateway.billing.flush() {
            tracing::error!(error = %e, "debit flush failed; will retry");
        }
        state.usage.flush(&state.store)
    })
    .await;
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
    // No settlement runs before the server accepts: one still `settling` was interrupted
    // between `/settle` and its credit (SPEC §7). It becomes unknown, for the operator.
    let journal_store = store.clone();
    let unknown = blocking(move || {
        journal_store.write(|txn| crate::store::settlements::mark_interrupted(txn, now.millis()))
    })
    .await?;
    for record in &unknown {
        tracing::error!(
            key = %record.key,
            amount_micros = record.amount_micros,
            credit_to = %record.credit_to.describe(),
            reason = record.reason.as_deref().unwrap_or(""),
            "x402 settlement outcome unknown; resolve it with `eliza-cloud payments resolve`"
        );
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(format!("cannot listen on {}: {e}", config.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(e.to_string()))?;
    store.write_server_marker(&local_addr.to_string())?;
    let tls_listener = match config.apps.tls_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| StartError::Bind(format!("cannot listen for TLS on {addr}: {e}")))?,
        ),
        None => None,
    };
    let state = Arc::new(AppState::new(config, store, clock));
    // Certificates (SPEC §11): issued when missing or due, loaded into the SNI map.
    {
        let preparing = state.clone();
        let certs = blocking(move || {
            let state = preparing;
            let apps_domain = state.hosts.apps_domain().to_string();
            let public = crate::domains::name::host_key(&state.config.public_url.host);
            let apps = &state.config.apps;
            let how = crate::domains::certs::Issuing {
                apps_domain: &apps_domain,
                public_host: public.as_deref(),
                own: apps.tls_cert.as_ref(),
                wildcard: apps.apps_wildcard.as_ref(),
                acme_directory: apps.acme.as_ref().map(|a| a.directory.as_str()),
            };
            if how.acme_directory.is_some() && how.wildcard.is_none() {
                tracing::warn!(
                    "app subdomains are served with the local CA's wildcard: give --apps-wildcard-cert and --apps-wildcard-key for one that browsers trust"
                );
            }
            let now = state.clock.now().millis();
            state
                .store
                .write(|txn| crate::domains::certs::prepare(txn, &how, now))
        })
        .await?;
        for (name, cert) in certs {
            state.certs.insert(name, &cert);
        }
    }
    state
        .metrics
        .set_settlements_unknown(u64::try_from(unknown.len()).unwrap_or(u64::MAX));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        state.clone(),
        shutdown_rx.clone(),
        None,
    ));
    let mut tls_addr = None;
    let tls_task = match tls_listener {
        Some(listener) => {
            tls_addr = listener.local_addr().ok();
            let mut tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| StartError::Bind(format!("TLS setup failed: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(state.certs.clone());
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            if let Some(addr) = tls_addr {
                tracing::info!(address = %addr, "listening for TLS");
            }
            Some(tokio::spawn(accept_loop(
                listener,
                state.clone(),
                shutdown_rx.clone(),
                Some(acceptor),
            )))
        }
        None => None,
    };
    // Its handle is not kept: it holds no promise, and it ends with the shutdown signal.
    tokio::spawn(certificate_renewer(state.clone(), shutdown.subscribe()));
    if let Some(acme) = state.acme.clone() {
        tracing::info!(directory = %acme.directory(), "certificates for verified domains come from the ACME CA");
        tokio::spawn(acme_orderer(state.clone(), acme, shutdown.subscribe()));
    }
    let (stop_flusher, stop_rx) = tokio::sync::oneshot::channel();
    let flusher = tokio::spawn(usage_flusher(state.clone(), stop_rx));
    let sender = state
        .webhooks
        .clone()
        .map(|sender| tokio::spawn(sender.run(shutdown.subscribe())));
    tracing::info!(address = %local_addr, "listening");
    Ok(RunningServer {
        local_addr,
        state,
        bootstrap: Some(outcome),
        shutdown,
        task,
        stop_flusher,
        flusher,
        sender,
        tls_addr,
        tls_task,
    })
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The TLS listener's address, with `--tls-listen`.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
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
        if let Some(task) = self.tls_task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "TLS accept loop ended abnormally");
        }
        // Settlements and credits a response promised finish even when their client is gone.
        let running = self.state.tasks.running();
        if running > 0 {
            tracing::info!(running, "waiting for promised work to finish");
        }
        self.state.tasks.idle().await;
        let _ = self.stop_flusher.send(());
        if let Err(e) = self.flusher.await {
            tracing::error!(error = %e, "usage flusher ended abnormally");
        }
        if let Some(sender) = self.sender
            && let Err(e) = sender.await
        {
            tracing::error!(error = %e, "webhook sender ended abnormally");
        }
        self.state.store.remove_server_marker();
        tracing::info!("stopped");
    }
}

/// Connections held per client address (an IPv6 /64 is one address).
#[derive(Default)]
struct AddressCounts(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection of `address`, counted until dropped.
struct AddressSlot {
    counts: Arc<AddressCounts>,
    address: std::net::IpAddr,
}

impl AddressCounts {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one more connection of `peer`, or `None` when it holds `cap` already.
    fn claim(self: &Arc<Self>, peer: std::net::IpAddr, cap: usize) -> Option<AddressSlot> {
        let address = crate::limits::client_address(peer);
        let mut map = self.map();
        let held = map.entry(address).or_insert(0);
        if *held >= cap {
            return None;
        }
        *held += 1;
        Some(AddressSlot {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.map();
        if let Some(held) = map.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// What a connection is doing, for its idle timer: requests in flight (a request counts until
/// its response body has been sent, or dropped) and a counter bumped whenever a request starts or
/// ends. Atomics only: the timer does the clock reading, not the requests.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    changes: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            changes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn start(self: &Arc<Self>) -> RequestActivity {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        RequestActivity(self.clone())
    }

    /// Returns once a whole `timeout` passed with no request in flight and none starting or
    /// ending: an idle connection is closed between one and two timeouts after its last answer.
    async fn idle_for(&self, timeout: Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let seen = self.changes.load(SeqCst);
            tokio::time::sleep(timeout).await;
            if self.in_flight.load(SeqCst) == 0 && self.changes.load(SeqCst) == seen {
                return;
            }
        }
    }
}

/// One request of a connection, in flight until dropped.
struct RequestActivity(Arc<Activity>);

impl Drop for RequestActivity {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.0.in_flight.fetch_sub(1, SeqCst);
        self.0.changes.fetch_add(1, SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until hyper has sent (or
/// dropped) it, so a streamed answer is never cut by the idle timer.
struct Tracked {
    body: crate::web::body::Body,
    _activity: RequestActivity,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let semaphore = Arc::new(Semaphore::new(state.config.max_connections));
    let per_address = Arc::new(AddressCounts::default());
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
        // Behind the operator's proxy every peer is the proxy: no per-address cap then.
        let slot = if state.config.trust_proxy {
            None
        } else {
            match per_address.claim(peer.ip(), state.config.max_connections_per_address) {
                Some(slot) => Some(slot),
                None => {
                    state.metrics.record_connection_refused();
                    tracing::debug!("connection refused: its address holds the most it may");
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let state = state.clone();
        let mut conn_shutdown = shutdown.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            // hyper's header timer starts once it knows the protocol; until the first byte
            // arrives the deadline is ours.
            tokio::select! {
                biased;
                _ = conn_shutdown.changed() => return,
                ready = first_byte(&stream, state.config.header_timeout) => if !ready { return },
            }
            match tls {
                None => serve_io(TokioIo::new(stream), &builder, state, peer, conn_shutdown).await,
                Some(acceptor) => {
                    // The handshake gets the header deadline too; a refused one (an unknown
                    // name: no certificate) just ends the connection.
                    let handshake =
                        tokio::time::timeout(state.config.header_timeout, acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            serve_io(
                                TokioIo::new(tls_stream),
                                &builder,
                                state,
                                peer,
                                conn_shutdown,
                            )
                            .await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let deadline = state.config.shutdown_timeout;
    let drained = tokio::time::timeout(deadline, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// Serves one connection (plain or TLS) until it ends, drains on shutdown, or idles out.
async fn serve_io<I>(
    io: TokioIo<I>,
    builder: &auto::Builder<TokioExecutor>,
    state: Arc<AppState>,
    peer: SocketAddr,
    mut conn_shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let service_activity = activity.clone();
    let idle_timeout = state.config.idle_timeout;
    let service = service_fn(move |req| {
        let state = state.clone();
        let request = service_activity.start();
        async move {
            let response = serve_request(&state, req, peer).await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _activity: request,
            }))
        }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        break;
            }
            _ = conn_shutdown.changed(), if !closing => {
        conn.as_mut().graceful_shutdown();
        closing = true;
            }
            _ = activity.idle_for(idle_timeout), if !closing => {
        tracing::debug!("idle connection closed");
        conn.as_mut().graceful_shutdown();
        closing = true;
            }
        }
    }
}

/// Waits until the client has sent something, at most `deadline`.
async fn first_byte(stream: &TcpStream, deadline: Duration) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        tokio::time::timeout(deadline, stream.peek(&mut probe)).await,
        Ok(Ok(n)) if n > 0
    )
}
