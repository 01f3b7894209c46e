//! The state every request sees: configuration, store, clock, metrics, and the in-memory parts
//! (key cache, rate-limit buckets, usage counters).

use std::sync::Arc;

use crate::auth::key_cache::KeyCache;
use crate::auth::nonce::{NonceKey, Nonces};
use crate::config::ServeConfig;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::time::{Clock, Timestamp};
use crate::usage::UsageRecorder;

/// Most keys kept in the lookup cache.
pub const KEY_CACHE_CAPACITY: u64 = 100_000;
/// Most wallet-signature marks remembered in memory (the store keeps them all).
pub const WALLET_MARKS_CAPACITY: u64 = 100_000;
/// Most rate-limit buckets kept at once.
pub const MAX_BUCKETS: u64 = 200_000;

pub struct AppState {
    pub config: ServeConfig,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub started_at: Timestamp,
    pub key_cache: KeyCache,
    pub limiter: RateLimiter,
    pub usage: Arc<UsageRecorder>,
    /// The metered gateway: models, providers, reservations and debits (SPEC §9).
    pub gateway: crate::gateway::Gateway,
    /// Sign-in nonces: stateless (a MAC under the stored key); only used ones are remembered.
    pub nonces: Nonces,
    /// Wallet-signature marks accepted by this process (SPEC §1): a replay is refused without a
    /// store transaction. The store's `wallet_replay_v1` is the authority, across restarts too.
    pub wallet_marks: moka::sync::Cache<[u8; 32], ()>,
    /// The x402 facilitator client, when payments settle through one.
    pub facilitator: Option<crate::x402::facilitator::Facilitator>,
    pub x402_in_flight: crate::x402::settlement::InFlight,
    /// Work a response promised, running in tasks of its own (settlements, credits).
    pub tasks: crate::background::Tasks,
    /// Apps' webhook sender (SPEC §10); `None` only when its resolver or TLS client could not
    /// be made (logged at start), and then webhook settings answer 503.
    pub webhooks: Option<Arc<crate::webhooks::Sender>>,
    /// Certificates by name, for the TLS listener's SNI (SPEC §11).
    pub certs: Arc<crate::domains::certs::CertMap>,
    /// Names for outbound calls: webhook targets, domain verification (SPEC §10, §11).
    pub resolver: Option<crate::dns::Resolver>,
    /// Host → app for app subdomains and verified domains (SPEC §11), from memory.
    pub hosts: Arc<crate::domains::HostMap>,
    /// The `acme` issuer (SPEC §11), when `--acme-directory` is set; `None` otherwise (the
    /// `local` issuer), or when its client could not be made (logged at start).
    pub acme: Option<Arc<crate::domains::acme::Acme>>,
}

impl AppState {
    pub fn new(config: ServeConfig, store: Store, clock: Arc<dyn Clock>) -> AppState {
        let started_at = clock.now();
        let facilitator =
            crate::x402::settlement::facilitator_of(&config.x402).unwrap_or_else(|e| {
                // `config::resolve` built it once already; this only fails for a hand-made config.
                tracing::error!(error = %e, "x402 facilitator unusable; top-ups will answer 503");
                None
            });
        let limiter = RateLimiter::new(config.max_buckets);
        let nonce_key = store
            .read(crate::store::migrations::nonce_key)
            .unwrap_or_else(|e| {
                // Only a database damaged by hand lacks it: sign-ins still work until a restart.
                tracing::error!(error = %e, "sign-in nonce key unreadable; using a key for this process only");
                rand::random()
            });
        let metrics = Arc::new(Metrics::default());
        let tasks = crate::background::Tasks::default();
        let billing = Arc::new(crate::gateway::billing::Billing::new(
            store.clone(),
            metrics.clone(),
            tasks.clone(),
            config.gateway.commit,
        ));
        let gateway = crate::gateway::Gateway::new(config.gateway.clone(), billing.clone())
            .unwrap_or_else(|e| {
                // `config::resolve` checked this already; only a hand-made config gets here.
                tracing::error!(error = %e, "gateway configuration unusable; upstream models will fail");
                crate::gateway::Gateway {
                    config: config.gateway.clone(),
                    upstream: None,
                    billing,
                }
            });
        let resolver = crate::dns::Resolver::new(config.apps.dns_resolver)
            .map_err(|e| tracing::error!(error = %e, "the DNS resolver is unusable; webhooks and domain checks answer 503"))
            .ok();
        let webhooks = resolver
            .clone()
            .ok_or_else(|| "no resolver".to_string())
            .and_then(|resolver| {
                crate::webhooks::Sender::new(
                    store.clone(),
                    clock.clone(),
                    resolver,
                    crate::webhooks::SenderConfig {
                        allow_private: config.apps.allow_private_webhooks,
                        timeout: config.apps.webhook_timeout,
                        workers: config.apps.webhook_workers,
                    },
                )
            })
            .map(Arc::new)
            .map_err(|e| tracing::error!(error = %e, "webhooks unavailable"))
            .ok();
        let hosts = crate::domains::HostMap::load(&store, &config.apps.apps_domain)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the host map could not be read; app hosts are not served");
                crate::domains::HostMap::load_empty(&config.apps.apps_domain)
            });
        let acme = config.apps.acme.clone().and_then(|c| {
            crate::domains::acme::Acme::new(c)
                .map(Arc::new)
                .map_err(|e| tracing::error!(error = %e, "the ACME issuer is unusable; no certificate will be ordered"))
                .ok()
        });
        AppState {
            acme,
            hosts: Arc::new(hosts),
            certs: Arc::default(),
            resolver,
            webhooks,
            gateway,
            config,
            store,
            clock,
            metrics,
            started_at,
            key_cache: KeyCache::new(KEY_CACHE_CAPACITY),
            limiter,
            usage: Arc::new(UsageRecorder::default()),
            nonces: Nonces::new(NonceKey::new(nonce_key), started_at),
            wallet_marks: moka::sync::Cache::builder()
                .max_capacity(WALLET_MARKS_CAPACITY)
                .time_to_live(std::time::Duration::from_secs(600))
                .build(),
            facilitator,
            x402_in_flight: crate::x402::settlement::InFlight::default(),
            tasks,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// What a settlement task needs, owned (`x402::settlement`).
    pub fn settler(&self) -> crate::x402::settlement::Settler {
        crate::x402::settlement::Settler {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            settlement: self.config.x402.settlement.clone(),
            facilitator: self.facilitator.clone(),
            in_flight: self.x402_in_flight.clone(),
        }
    }
}
