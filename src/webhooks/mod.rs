//! Sending apps' webhooks (SPEC §10). Deliveries are rows of the durable outbox
//! (`store::webhooks`), written in the transaction of the event that caused them; this module's
//! [`Sender`] is the only thing that sends them. It wakes when a delivery is queued or every
//! [`TICK`], takes the due deliveries (by the server's clock, so tests step a manual clock instead
//! of waiting), and runs each attempt in a task of its own under a bounded pool of workers, so a
//! slow receiver never holds up a request or another receiver beyond the pool. Each attempt's
//! outcome is written back: delivered, failed, or due again on the retry schedule
//! (`schedule`). A delivery whose attempt was cut by a crash is still due after the restart: at
//! least once, with the same `webhook-id` every time.
//!
//! `sign` signs (Standard Webhooks and the hosted cloud's `X-Eliza-Signature`), `target` parses
//! URLs and refuses private addresses after resolution, `deliver` makes one attempt.

pub mod deliver;
pub mod schedule;
pub mod sign;
pub mod target;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use crate::dns::Resolver;
use crate::store::Store;
use crate::store::webhooks::{
    DeliveryRecord, DeliveryStatus, WebhookRecord, delivery_name, due, get_delivery, get_webhook,
    put_webhook, save_delivery,
};
use crate::time::{Clock, Timestamp};
use deliver::Outcome;
use target::{Target, checked, parse_target};

/// How often the sender looks for due deliveries when nothing woke it.
pub const TICK: Duration = Duration::from_millis(200);

/// The sender's settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub allow_private: bool,
    pub timeout: Duration,
    pub workers: usize,
}

/// Where the sender looks things up and connects: a resolver, the TLS client.
pub struct Sender {
    store: Store,
    clock: Arc<dyn Clock>,
    resolver: Resolver,
    tls: tokio_rustls::TlsConnector,
    config: SenderConfig,
    workers: Arc<Semaphore>,
    wake: Notify,
    in_flight: Mutex<HashSet<Uuid>>,
    attempts: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a target is refused before any connection.
pub async fn resolve_target(
    resolver: &Resolver,
    target: &Target,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    let addresses = resolver.addresses(target.bare_host()).await?;
    checked(&addresses, target.port, allow_private)
}

impl Sender {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        resolver: Resolver,
        config: SenderConfig,
    ) -> Result<Sender, String> {
        Ok(Sender {
            store,
            clock,
            resolver,
            tls: deliver::tls_connector()?,
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            config,
            wake: Notify::new(),
            in_flight: Mutex::default(),
            attempts: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub fn allow_private(&self) -> bool {
        self.config.allow_private
    }

    /// Attempts made by this process (tests and metrics).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deliveries being attempted right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().map_or(0, |s| s.len())
    }

    /// Something was queued: look now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The sender's loop, until `stop` says so. Attempts running then are left to end or be
    /// dropped with the runtime; their deliveries stay due and are sent after the restart.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.dispatch().await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// Starts an attempt for every due delivery a free worker can take.
    async fn dispatch(self: &Arc<Self>) {
        let free = self.workers.available_permits();
        if free == 0 {
            return;
        }
        let now = self.clock.now().millis();
        let busy = self.in_flight();
        let store = self.store.clone();
        let found =
            tokio::task::spawn_blocking(move || store.read(|txn| due(txn, now, free + busy))).await;
        let due = match found {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading due webhook deliveries failed");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook dispatch task failed");
                return;
            }
        };
        for (_, id) in due {
            let Ok(permit) = self.workers.clone().try_acquire_owned() else {
                break;
            };
            let fresh = self.in_flight.lock().is_ok_and(|mut s| s.insert(id));
            if !fresh {
                continue;
            }
            let sender = self.clone();
            tokio::spawn(async move {
                sender.attempt(id).await;
                if let Ok(mut s) = sender.in_flight.lock() {
                    s.remove(&id);
                }
                drop(permit);
                sender.wake();
            });
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Option<T> {
        match self.store.read_blocking(f).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(error = %e, "reading a webhook delivery failed");
                None
            }
        }
    }

    /// One attempt of one delivery, and its outcome written back.
    async fn attempt(&self, id: Uuid) {
        let Some(Some((delivery, hook))) = self
            .read(move |txn| {
                let Some(d) = get_delivery(txn, id)? else {
                    return Ok(None);
                };
                let hook = get_webhook(txn, d.app)?;
                Ok(Some((d, hook)))
            })
            .await
        else {
            return;
        };
        if delivery.status != DeliveryStatus::Pending {
            return;
        }
        let manual = delivery.manual;
        let now = self.clock.now();
        let outcome = match &hook {
            None => Outcome::Failed("the app has no webhook any more".into()),
            Some(h) if h.disabled => {
                Outcome::Failed("the webhook is disabled (a receiver answered 410)".into())
            }
            Some(h) => self.send(&delivery, h, now).await,
        };
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let gave_up = hook.as_ref().is_none_or(|h| h.disabled);
        let store = self.store.clone();
        let written = store
            .write_blocking(move |txn| {
                record_outcome(
                    txn,
                    id,
                    &outcome,
                    manual,
                    gave_up,
                    now.millis(),
                    rand::random(),
                )
            })
            .await;
        match written {
            Ok(Some((status, attempts))) => tracing::info!(
                delivery = %delivery_name(id),
                app = %delivery.app,
                event = %delivery.event,
                status = status.as_str(),
                attempts,
                "webhook attempt"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, delivery = %delivery_name(id), "recording a webhook attempt failed; it will be tried again")
            }
        }
    }

    async fn send(
        &self,
        delivery: &DeliveryRecord,
        hook: &WebhookRecord,
        now: Timestamp,
    ) -> Outcome {
        let target = match parse_target(&hook.url) {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(format!("the webhook URL {e}")),
        };
        let addresses =
            match resolve_target(&self.resolver, &target, self.config.allow_private).await {
                Ok(a) => a,
                Err(e) => return Outcome::Failed(e),
            };
        let name = delivery_name(delivery.id);
        let seconds = now.unix_seconds();
        let iso = now.to_rfc3339();
        let secrets = hook.signing_secrets(now.millis());
        let headers = vec![
            ("webhook-id", name.clone()),
            ("webhook-timestamp", seconds.to_string()),
            (
                "webhook-signature",
                sign::standard_header(&secrets, &name, seconds, &delivery.body),
            ),
            ("x-eliza-event", delivery.event.clone()),
            ("x-eliza-delivery", name),
            (
                "x-eliza-signature",
                sign::eliza_signature(&hook.secret, &iso, &delivery.body),
            ),
            ("x-eliza-timestamp", iso),
        ];
        deliver::send(
            &target,
            &addresses,
            headers,
            Bytes::from(delivery.body.clone()),
            self.config.timeout,
            &self.tls,
        )
        .await
    }
}

/// Longest `lastError` kept.
const MAX_ERROR: usize = 300;

/// Writes an attempt's outcome (SPEC §10's rules) and answers the delivery's status and
/// attempts, or `None` when the delivery went meanwhile (its app was deleted).
fn record_outcome(
    txn: &redb::WriteTransaction,
    id: Uuid,
    outcome: &Outcome,
    manual: bool,
    gave_up: bool,
    now: i64,
    jitter: u16,
) -> Result<Option<(DeliveryStatus, u32)>, crate::store::StoreError> {
    let Some(mut d) = get_delivery(txn, id)? else {
        return Ok(None);
    };
    let was_due = d.next_attempt_at;
    d.attempts = d.attempts.saturating_add(1);
    d.updated_at = now;
    let (delivered, status, retry_after) = match outcome {
        Outcome::Answered {
            status,
            retry_after,
            body,
        } => {
            d.last_response_status = Some(*status);
            d.last_response_body = Some(body.clone());
            d.last_error = (!(200..300).contains(status)).then(|| format!("HTTP {status}"));
            (
                (200..300).contains(status),
                Some(*status),
                retry_after.clone(),
            )
        }
        Outcome::Failed(why) => {
            d.last_response_status = None;
            d.last_response_body = None;
            d.last_error = Some(why.chars().take(MAX_ERROR).collect());
            (false, None, None)
        }
    };
    // A manual redelivery asked for while this automatic attempt ran: it stays due.
    let redelivery_waits = d.manual && !manual;
    let next = if delivered || status == Some(410) || gave_up {
        None
    } else if manual {
        d.resume_at
    } else if d.attempts >= schedule::MAX_ATTEMPTS {
        None
    } else {
        let asked = match (status, &retry_after) {
            (Some(429 | 503), Some(value)) => schedule::retry_after(value, now.div_euclid(1000)),
            _ => None,
        };
        let wait = asked.or_else(|| schedule::next_delay(d.attempts, jitter % 201));
        wait.map(|w| now.saturating_add(i64::try_from(w.as_millis()).unwrap_or(i64::MAX)))
    };
    if status == Some(410)
        && let Some(mut hook) = get_webhook(txn, d.app)?
    {
        hook.disabled = true;
        hook.updated_at = now;
        put_webhook(txn, d.app, &hook)?;
    }
    if redelivery_waits {
        d.resume_at = next;
    } else {
        d.manual = false;
        d.resume_at = None;
        d.next_attempt_at = next;
        d.status = if delivered {
            DeliveryStatus::Delivered
        } else if next.is_some() {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Failed
        };
    }
    save_delivery(txn, &d, was_due)?;
    Ok(Some((d.status, d.attempts)))
}
