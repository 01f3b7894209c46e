//! Settling a verified payment and crediting it (SPEC §7), as work that survives its caller: the
//! top-up route hands a [`Job`] to [`Settler::run`] in a task of its own (`background::Tasks`) and
//! only awaits the [`Outcome`], so a client that hangs up, an HTTP/2 reset or the shutdown drain
//! cannot stop a payment half-way.
//!
//! With a facilitator: `/verify`, then the journal record (`store::settlements`) commits, then
//! `/settle`, then the credit, which removes the record in its own transaction. An outcome that
//! cannot be known (a timeout or a malformed answer from `/settle`, a settled payment whose credit
//! failed) leaves the record `unknown`: logged at error level, counted in `/metrics`, listed by
//! `eliza-cloud payments pending`, finished by `eliza-cloud payments resolve`. With
//! `trust-signature` nothing leaves the process, so the credit is one transaction and needs no
//! journal.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::facilitator::{CallError, Facilitator};
use super::verify::Reason;
use super::{Settlement, X402Config};
use crate::metrics::Metrics;
use crate::store::ledger::Posted;
use crate::store::payments::{PaymentRecord, Recorded, authorization_used};
use crate::store::settlements::{
    SettlementRecord, SettlementState, begin_settlement, credit_payment, credit_settlement,
    drop_settlement, find_settlement, mark_unknown,
};
use crate::store::{Store, StoreError};
use crate::time::Clock;

/// The facilitator client of the configuration, if it settles through one.
pub fn facilitator_of(config: &X402Config) -> Result<Option<Facilitator>, String> {
    match &config.settlement {
        Settlement::Facilitator(url) => Facilitator::new(
            url,
            config.facilitator_timeout,
            config.facilitator_ca_pem.as_deref(),
        )
        .map(Some),
        Settlement::TrustSignature | Settlement::None => Ok(None),
    }
}

/// Authorizations being settled right now: a second submission of one of them waits for
/// nothing and is refused at once, so one authorization is never settled twice concurrently.
#[derive(Default, Clone)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

/// A claim on one authorization; released when dropped.
pub struct Claim {
    set: InFlight,
    key: String,
}

impl InFlight {
    pub fn claim(&self, key: &str) -> Option<Claim> {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(key.to_string()).then(|| Claim {
            set: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&self.key);
    }
}

/// What settling needs, owned, so it can run in a task of its own.
#[derive(Clone)]
pub struct Settler {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub settlement: Settlement,
    pub facilitator: Option<Facilitator>,
    pub in_flight: InFlight,
}

/// One verified payment to settle and credit.
pub struct Job {
    /// The journal record as it is to be written (state `Settling`).
    pub record: SettlementRecord,
    /// `{x402Version, paymentPayload, paymentRequirements}` for the facilitator.
    pub request: Value,
    /// The `trust-signature` settlement's name for it: the authorization digest.
    pub digest_transaction: String,
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    Credited {
        record: Box<PaymentRecord>,
        posted: Box<Posted>,
        /// The wallet credited, when the credit went to a wallet.
        wallet: Option<String>,
        transaction: String,
    },
    /// Refused before or by settlement: a 402 with this reason; nothing moved.
    Refused(Reason),
    /// The facilitator could not be asked; nothing moved (503).
    Unavailable(&'static str),
    /// The outcome is unknown and journaled for the operator (503).
    Unknown,
    /// The store failed before anything was sent (500).
    Failed(StoreError),
}

impl Settler {
    fn now(&self) -> i64 {
        self.clock.now().millis()
    }

    /// Runs the job to its end (module docs). Never panics; every path says what happened.
    pub async fn run(self, job: Job) -> Outcome {
        let key = job.record.key.clone();
        let Some(_claim) = self.in_flight.claim(&key) else {
            return Outcome::Refused(Reason::InvalidTransactionState);
        };
        match (&self.settlement, &self.facilitator) {
            (Settlement::TrustSignature, _) => self.credit_trusted(job).await,
            (Settlement::Facilitator(_), Some(facilitator)) => {
                let facilitator = facilitator.clone();
                self.settle_through(&facilitator, job).await
            }
            (Settlement::Facilitator(_), None) | (Settlement::None, _) => {
                Outcome::Unavailable("settle")
            }
        }
    }

    async fn credit_trusted(&self, job: Job) -> Outcome {
        let now = self.now();
        let record = job.record;
        let transaction = job.digest_transaction;
        let tx = transaction.clone();
        let written = self
            .store
            .write_blocking(move |txn| {
                if authorization_used(txn, &record.key)? {
                    return Ok::<_, StoreError>(None);
                }
                credit_payment(txn, &record, &tx, now).map(Some)
            })
            .await;
        match written {
            Ok(None) => Outcome::Refused(Reason::InvalidTransactionState),
            Ok(Some((recorded, wallet))) => credited(recorded, wallet, transaction),
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn settle_through(&self, facilitator: &Facilitator, job: Job) -> Outcome {
        let key = job.record.key.clone();
        let checked = match facilitator.verify(&job.request).await {
            Ok(checked) => checked,
            Err(e) => {
                tracing::warn!(step = "verify", error = %e, key = %key, "x402 facilitator call failed");
                return Outcome::Unavailable("verify");
            }
        };
        if !checked.is_valid {
            let reason = checked.invalid_reason.unwrap_or_default();
            return Outcome::Refused(Reason::from_facilitator(
                &reason,
                Reason::UnexpectedVerifyError,
            ));
        }
        // The journal record commits before `/settle` is sent.
        let mut record = job.record.clone();
        record.state = SettlementState::Settling;
        let journaled = self
            .store
            .write_blocking(move |txn| {
                if authorization_used(txn, &record.key)? {
                    return Ok::<_, StoreError>(false);
                }
                begin_settlement(txn, &record)
            })
            .await;
        match journaled {
            Ok(true) => {}
            Ok(false) => return Outcome::Refused(Reason::InvalidTransactionState),
            Err(e) => return Outcome::Failed(e),
        }
        let settled = facilitator.settle(&job.request).await;
        let answer = match settled {
            Ok(answer) => answer,
            // Never reached the facilitator: nothing can have moved. Anything later (no answer,
            // a timeout, a malformed answer) may have moved the money: unknown.
            Err(e @ (CallError::Connect | CallError::Tls)) => {
                tracing::warn!(step = "settle", error = %e, key = %key, "x402 facilitator call failed");
                self.forget(&key).await;
                return Outcome::Unavailable("settle");
            }
            Err(e) => {
                return self.unknown(&key, &format!("/settle {e}"), None).await;
            }
        };
        if !answer.success {
            self.forget(&key).await;
            let reason = answer.error_reason.unwrap_or_default();
            return Outcome::Refused(Reason::from_facilitator(
                &reason,
                Reason::UnexpectedSettleError,
            ));
        }
        let transaction = answer.transaction;
        let now = self.now();
        let (credit_key, tx) = (key.clone(), transaction.clone());
        let written = self
            .store
            .write_blocking(move |txn| {
                let record = find_settlement(txn, &credit_key)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("settlement {credit_key} left the journal"))
                })?;
                credit_settlement(txn, &record, &tx, now)
            })
            .await;
        match written {
            Ok((recorded, wallet)) => credited(recorded, wallet, transaction),
            Err(e) => {
                self.unknown(
                    &key,
                    &format!("settled, but the credit failed: {e}"),
                    Some(&transaction),
                )
                .await
            }
        }
    }

    /// Removes the journal record of a settlement that did not happen.
    async fn forget(&self, key: &str) {
        let owned = key.to_string();
        if let Err(e) = self
            .store
            .write_blocking(move |txn| drop_settlement(txn, &owned))
            .await
        {
            // The record stays; the next start marks it unknown for the operator.
            tracing::error!(key, error = %e, "x402 settlement journal: could not remove a refused settlement");
        }
    }

    /// Journals the outcome as unknown, loudly.
    async fn unknown(&self, key: &str, reason: &str, transaction: Option<&str>) -> Outcome {
        tracing::error!(
            key,
            reason,
            transaction,
            "x402 settlement outcome unknown; resolve it with `eliza-cloud payments resolve`"
        );
        self.metrics.add_settlement_unknown();
        let (owned, why, tx) = (
            key.to_string(),
            reason.to_string(),
            transaction.map(str::to_string),
        );
        let now = self.now();
        if let Err(e) = self
            .store
            .write_blocking(move |txn| mark_unknown(txn, &owned, &why, tx.as_deref(), now))
            .await
        {
            // Still `settling` in the journal: the next start marks it unknown.
            tracing::error!(key, error = %e, "x402 settlement journal: could not mark unknown");
        }
        Outcome::Unknown
    }
}

fn credited(recorded: Recorded, wallet: Option<String>, transaction: String) -> Outcome {
    match recorded {
        Recorded::Credited { record, posted } => Outcome::Credited {
            record,
            posted,
            wallet,
            transaction,
        },
        Recorded::AlreadyUsed => {
            tracing::error!(
                transaction,
                "x402 payment settled, but its authorization had already credited"
            );
            Outcome::Refused(Reason::InvalidTransactionState)
        }
    }
}

/// The facilitator request body for a payment and its requirement.
pub fn facilitator_request(version: u64, payload: &Value, requirements: Value) -> Value {
    json!({
        "x402Version": version,
        "paymentPayload": payload,
        "paymentRequirements": requirements,
    })
}
