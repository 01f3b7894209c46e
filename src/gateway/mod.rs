//! The metered gateway (SPEC §9): the model table and its prices (`models`), the counting rule
//! (`tokens`), request bodies (`request`), the providers (`providers::dev`,
//! `providers::openai_compatible`), server-sent events in and out (`stream`), and billing
//! (`billing`: reservations and debits). The route handlers that use them are `api::gateway`.
//!
//! Every metered call goes through a [`Meter`]: it holds the call's reservation, counts what the
//! provider produced, and when the call ends, however it ends (an answer, an error, a panic, a
//! client that hung up: its `Drop` runs then), it turns the reservation into one debit and one
//! usage event. Nothing that must follow a call depends on the request's future staying alive.

pub mod billing;
pub mod models;
pub mod providers;
pub mod request;
pub mod stream;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use billing::{Billing, CommitMode, Debit, Reservation};
use models::{Kind, Model, ModelTable};
use providers::openai_compatible::{Upstream, UpstreamKey};
use stream::Usage;

use crate::metrics::Metrics;
use crate::store::earnings::Earning;
use crate::time::Clock;
use crate::usage::{MeteredEvent, UsageRecorder};

/// Default `--upstream-timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// A stream silent for this long gets a `: keep-alive` comment line (SPEC §9).
pub const KEEP_ALIVE_AFTER: Duration = Duration::from_secs(15);

/// The gateway's part of the configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub models: Arc<ModelTable>,
    /// Added to every platform price, 0..=1000.
    pub markup_percent: u32,
    pub upstream_url: Option<String>,
    pub upstream_key: Option<UpstreamKey>,
    /// Bounds the wait for the upstream's answer head and each silence between its chunks.
    pub upstream_timeout: Duration,
    pub commit: CommitMode,
    /// Not a flag: SPEC §9's 15 s; tests shorten it.
    pub keep_alive_after: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            models: Arc::new(ModelTable::builtin(models::Provider::Dev)),
            markup_percent: 0,
            upstream_url: None,
            upstream_key: None,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            commit: CommitMode::Grouped,
            keep_alive_after: KEEP_ALIVE_AFTER,
        }
    }
}

/// The gateway's running parts.
#[derive(Debug)]
pub struct Gateway {
    pub config: GatewayConfig,
    pub upstream: Option<Upstream>,
    pub billing: Arc<Billing>,
}

impl Gateway {
    pub fn new(config: GatewayConfig, billing: Arc<Billing>) -> Result<Gateway, String> {
        let upstream = match &config.upstream_url {
            Some(url) => Some(Upstream::new(
                url,
                config.upstream_key.as_ref(),
                config.upstream_timeout,
            )?),
            None => None,
        };
        if config.models.uses_upstream() && upstream.is_none() {
            return Err(
                "a model uses the openai-compatible provider but no --upstream-url is set".into(),
            );
        }
        Ok(Gateway {
            config,
            upstream,
            billing,
        })
    }
}

/// Who a metered call is billed to and recorded for.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub call_id: Uuid,
    pub request_id: String,
    pub organization: Uuid,
    pub key: Option<Uuid>,
    pub app: Option<Uuid>,
    pub end_user: Option<String>,
    /// `chat.completions`, `embeddings` or `images.generations`.
    pub endpoint: &'static str,
    pub model: Model,
    pub markup: u32,
    /// An `ek_test_` key: the dev provider, never debited.
    pub test: bool,
    /// A call made through someone's app (`X-App-Id`, SPEC §10): the app's price on top.
    pub through: Option<Through>,
}

/// The app a call is made through with `X-App-Id`, and its price (SPEC §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Through {
    pub app: Uuid,
    /// The app's owner: its earnings.
    pub owner: Uuid,
    /// Zero when the app's monetization is off.
    pub per_request_micros: i64,
    pub per_token_micros: i64,
}

impl Through {
    /// The app's price of a call of `tokens` tokens in all: `perRequest + perToken × tokens`,
    /// exact in micro-dollars.
    pub fn fee(&self, tokens: u64) -> i64 {
        let per_token = i128::from(self.per_token_micros).saturating_mul(i128::from(tokens));
        let fee = i128::from(self.per_request_micros).saturating_add(per_token);
        i64::try_from(fee).unwrap_or(i64::MAX).max(0)
    }
}

/// How a metered call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The provider's whole answer went out.
    Completed,
    /// The client went away (or the answer was dropped) before the end: charged for the input
    /// and for what the provider had produced (SPEC §9), never zero.
    ClientGone,
    /// The provider failed: charged for what it produced, nothing when it produced nothing.
    Failed,
    /// Our own fault (a panic unwound through the call): charged nothing.
    Fault,
}

impl End {
    pub const fn as_str(self) -> &'static str {
        match self {
            End::Completed => "completed",
            End::ClientGone => "client_gone",
            End::Failed => "failed",
            End::Fault => "fault",
        }
    }
}

/// What a [`Meter`] needs of the server, owned so its `Drop` can run anywhere.
#[derive(Clone)]
pub struct MeterSinks {
    pub usage: Arc<UsageRecorder>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

/// One metered call's account of itself (module docs).
pub struct Meter {
    context: CallContext,
    reservation: Option<Reservation>,
    sinks: MeterSinks,
    /// Input tokens by the counting rule.
    counted_input: u64,
    /// Bytes of content the provider produced so far.
    output_bytes: u64,
    /// What the provider reported, when it did.
    reported: Option<Usage>,
    /// Images: the price of the call, charged whole once the provider was asked.
    fixed_cost: Option<i64>,
    /// Set once the call has been charged.
    charged: Option<i64>,
    /// How a failed call was answered (status, code), for the app's `error.occurred`.
    failure: Option<(u16, &'static str)>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter")
            .field("call_id", &self.context.call_id)
            .field("output_bytes", &self.output_bytes)
            .finish_non_exhaustive()
    }
}

impl Meter {
    pub fn new(
        context: CallContext,
        reservation: Option<Reservation>,
        sinks: MeterSinks,
        counted_input: u64,
        fixed_cost: Option<i64>,
    ) -> Meter {
        Meter {
            context,
            reservation,
            sinks,
            counted_input,
            output_bytes: 0,
            reported: None,
            fixed_cost,
            charged: None,
            failure: None,
        }
    }

    /// Names the answer of a call that failed (its status and code).
    pub fn set_failure(&mut self, status: u16, code: &'static str) {
        self.failure = Some((status, code));
    }

    /// Ends a call that failed with `error`: charged as [`End::Failed`].
    pub fn fail(&mut self, error: &crate::web::error::ApiError) {
        self.set_failure(error.status().as_u16(), error.code());
        self.finish(End::Failed);
    }

    pub fn add_output_bytes(&mut self, bytes: u64) {
        self.output_bytes = self.output_bytes.saturating_add(bytes);
    }

    pub fn report(&mut self, usage: Usage) {
        self.reported = Some(usage);
    }

    pub fn produced_output(&self) -> bool {
        self.output_bytes > 0 || self.reported.is_some_and(|u| u.completion_tokens > 0)
    }

    /// The tokens the call is charged for: the provider's report, else the counting rule.
    pub fn tokens(&self) -> (u64, u64) {
        match self.reported {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (
                self.counted_input,
                tokens::count_len(usize::try_from(self.output_bytes).unwrap_or(usize::MAX)),
            ),
        }
    }

    /// Whether a call that ended so is charged at all: never a test key's, never our own
    /// fault's, never a failure that produced nothing (an image failure produced nothing).
    fn billable(&self, end: End) -> bool {
        !(self.context.test
            || end == End::Fault
            || end == End::Failed && (self.fixed_cost.is_some() || !self.produced_output()))
    }

    /// The platform's price of the call (the app's price is [`Meter::app_fee`]).
    fn cost(&self, end: End) -> i64 {
        if !self.billable(end) {
            return 0;
        }
        if let Some(fixed) = self.fixed_cost {
            return fixed;
        }
        let (input, output) = self.tokens();
        models::token_cost(&self.context.model, input, output, self.context.markup)
    }

    /// The app's price of the call when it went through a monetized app: charged exactly when
    /// the call is (an image call counts no tokens, so it pays `perRequest`).
    fn app_fee(&self, end: End) -> i64 {
        let Some(through) = &self.context.through else {
            return 0;
        };
        if !self.billable(end) {
            return 0;
        }
        let tokens = if self.fixed_cost.is_some() {
            0
        } else {
            let (input, output) = self.tokens();
            input.saturating_add(output)
        };
        through.fee(tokens)
    }

    /// Charges the call (once): the debit of its cost, its usage event, its reservation released.
    /// Answers the cost and, in per-call commit mode, the handle of the debit's commit.
    pub fn finish(&mut self, end: End) -> (i64, Option<tokio::task::JoinHandle<()>>) {
        if let Some(cost) = self.charged {
            return (cost, None);
        }
        let mut fee = self.app_fee(end);
        let mut cost = self.cost(end).saturating_add(fee);
        if let Some(reservation) = &self.reservation
            && cost > reservation.amount()
        {
            // The provider reported more than the cap the gateway sent it allows: a debit
            // never exceeds its reservation (SPEC §9).
            tracing::warn!(
                request_id = %self.context.request_id,
                cost_micros = cost,
                reserved_micros = reservation.amount(),
                "a provider reported more usage than reserved; debited the reservation"
            );
            self.sinks.metrics.record_over_reservation();
            cost = reservation.amount();
            fee = fee.min(cost);
        }
        self.charged = Some(cost);
        let (input, output) = self.tokens();
        let (input, output) = if self.fixed_cost.is_some() {
            (0, 0)
        } else {
            (input, output)
        };
        let now = self.sinks.clock.now();
        let c = &self.context;
        let debit = (cost > 0).then(|| {
            let mut metadata = vec![
                ("model".to_string(), c.model.id.clone()),
                ("route".to_string(), c.endpoint.to_string()),
                ("input_tokens".to_string(), input.to_string()),
                ("output_tokens".to_string(), output.to_string()),
                ("request_id".to_string(), c.request_id.clone()),
                ("end".to_string(), end.as_str().to_string()),
            ];
            if let Some(key) = c.key {
                metadata.push(("key".to_string(), key.to_string()));
            }
            if let Some(app) = c.app {
                metadata.push(("app".to_string(), app.to_string()));
            }
            Debit {
                call_id: c.call_id,
                organization: c.organization,
                amount_micros: cost,
                description: format!("{} {}", c.endpoint, c.model.id),
                metadata,
                at_millis: now.millis(),
                earning: c.through.map(|t| Earning {
                    app: t.app,
                    organization: t.owner,
                    call: c.call_id,
                    amount_micros: fee,
                }),
            }
        });
        self.sinks.usage.record_metered(&MeteredEvent {
            organization: c.organization,
            key: c.key,
            app: c.app.or(c.through.map(|t| t.app)),
            app_owner: c.through.map(|t| t.owner),
            end_user: c.end_user.clone(),
            endpoint: c.endpoint,
            model: c.model.id.clone(),
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
            ok: end == End::Completed,
            at: now,
            failure: match end {
                End::Failed => Some(self.failure.unwrap_or((502, "UPSTREAM_ERROR"))),
                End::Fault => Some((500, "INTERNAL_ERROR")),
                End::Completed | End::ClientGone => None,
            }
            .map(|(status, code)| crate::usage::Failure {
                status,
                code,
                request_id: c.request_id.clone(),
            }),
        });
        self.sinks
            .metrics
            .record_gateway_call(c.endpoint, end.as_str());
        if cost > 0 {
            self.sinks
                .metrics
                .record_credits_charged(cost.unsigned_abs());
        }
        if end != End::Completed {
            tracing::info!(
                request_id = %c.request_id,
                endpoint = c.endpoint,
                end = end.as_str(),
                cost_micros = cost,
                "metered call ended early"
            );
        }
        let commit = match self.reservation.take() {
            Some(reservation) => reservation.settle(debit),
            None => None,
        };
        (cost, commit)
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.charged.is_none() {
            // Unwinding from a panic is our failure, not the caller's going away.
            let end = if std::thread::panicking() {
                End::Fault
            } else {
                End::ClientGone
            };
            self.finish(end);
        }
    }
}

/// The model `id` of `kind`, or the error the caller sees (404 with `param: "model"`, or 400 for
/// a model of another kind).
pub fn model_of<'a>(
    table: &'a ModelTable,
    id: &str,
    kind: Kind,
) -> Result<&'a Model, crate::web::error::ApiError> {
    let model = table
        .get(id)
        .ok_or_else(|| crate::web::error::ApiError::ModelNotFound {
            model: id.chars().take(128).collect(),
        })?;
    if model.kind != kind {
        return Err(crate::web::error::ApiError::Validation {
            message: format!(
                "model: {} is a {} model; this route needs a {} model",
                model.id,
                model.kind.as_str(),
                kind.as_str()
            ),
            details: serde_json::json!({ "model": format!("must be a {} model", kind.as_str()) }),
        });
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::ledger::{EntryKind, NewEntry, balance_of, post_entry};
    use crate::store::orgs::{OrgRecord, Plan, insert_org};
    use crate::time::{ManualClock, Timestamp};

    fn funded(micros: i64) -> (tempfile::TempDir, Arc<Billing>, MeterSinks, Uuid, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let org = Uuid::new_v4();
        store
            .write(|txn| {
                insert_org(
                    txn,
                    &OrgRecord {
                        id: org,
                        name: "A".into(),
                        slug: format!("a-{org}"),
                        plan: Plan::Free,
                        custom_rate_limit: None,
                        is_active: true,
                        created_at: 0,
                        updated_at: 0,
                    },
                )?;
                post_entry(
                    txn,
                    NewEntry {
                        organization_id: org,
                        amount_micros: micros,
                        kind: EntryKind::Credit,
                        description: "grant".into(),
                        idempotency_key: "grant".into(),
                        metadata: vec![],
                    },
                    0,
                )
                .map_err(|e| crate::store::StoreError::Db(e.to_string()))
            })
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let billing = Arc::new(Billing::new(
            store.clone(),
            metrics.clone(),
            crate::background::Tasks::default(),
            CommitMode::Grouped,
        ));
        let sinks = MeterSinks {
            usage: Arc::new(UsageRecorder::default()),
            metrics,
            clock: Arc::new(ManualClock::new(Timestamp(0))),
        };
        (tmp, billing, sinks, org, store)
    }

    fn meter(billing: &Arc<Billing>, sinks: &MeterSinks, org: Uuid, reserve: i64) -> Meter {
        let model = ModelTable::builtin(models::Provider::Dev)
            .get("gpt-4o")
            .unwrap()
            .clone();
        let context = CallContext {
            call_id: Uuid::new_v4(),
            request_id: "req_t".into(),
            organization: org,
            key: None,
            app: None,
            end_user: None,
            endpoint: "chat.completions",
            model,
            markup: 0,
            test: false,
            through: None,
        };
        let reservation = billing.reserve(org, reserve).unwrap();
        Meter::new(context, Some(reservation), sinks.clone(), 1000, None)
    }

    #[test]
    fn a_panic_releases_the_reservation_and_charges_nothing() {
        let (_tmp, billing, sinks, org, store) = funded(1_000_000);
        let held = meter(&billing, &sinks, org, 600_000);
        assert_eq!(billing.reserved(org), 600_000);
        assert!(matches!(
            billing.reserve(org, 600_000),
            Err(billing::ReserveError::Short(_))
        ));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut held = held;
            held.add_output_bytes(400);
            panic!("a bug mid-call");
        }));
        assert!(unwound.is_err());
        assert_eq!(billing.reserved(org), 0);
        assert_eq!(
            billing.balance(org).unwrap(),
            1_000_000,
            "a panic costs nothing"
        );
        // A client gone is charged for what was produced: input 1000 + output 100 at gpt-4o.
        let mut gone = meter(&billing, &sinks, org, 600_000);
        gone.add_output_bytes(400);
        drop(gone);
        let charged = 1_000_000 - billing.balance(org).unwrap();
        assert_eq!(
            charged,
            models::token_cost(
                ModelTable::builtin(models::Provider::Dev)
                    .get("gpt-4o")
                    .unwrap(),
                1000,
                100,
                0
            )
        );
        assert_eq!(billing.flush().unwrap(), 1);
        assert_eq!(
            store.read(|t| balance_of(t, org)).unwrap(),
            1_000_000 - charged
        );
        assert_eq!(
            billing.balance(org).unwrap(),
            1_000_000 - charged,
            "counted once after the flush"
        );
    }
}
