//! Used x402 authorizations (SPEC §7). A top-up writes its `PaymentRecord` and its ledger credit
//! in one transaction, both keyed by `x402:<network>:<payer>:<nonce>`: a replay, a restart or two
//! racing requests can never credit one authorization twice.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ledger::{EntryKind, LedgerError, NewEntry, Posted, post_entry};
use super::tables::X402_AUTHORIZATIONS;
use super::{ReadTx, StoreError, codec, get_record};

/// A settled payment. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PaymentRecord {
    pub organization_id: Uuid,
    /// Lowercase hex of the payer.
    pub payer: String,
    pub network: String,
    pub amount_micros: i64,
    /// The settlement's transaction (or, with `trust-signature`, the authorization digest).
    pub transaction: String,
    pub ledger_entry_id: Uuid,
    pub created_at: i64,
}

pub fn find_payment(txn: &impl ReadTx, key: &str) -> Result<Option<PaymentRecord>, StoreError> {
    get_record(&txn.read_table(X402_AUTHORIZATIONS)?, key)
}

/// Whether the authorization `key` credited before: by a top-up, or by hand (an operator's
/// `orgs grant-credits --idempotency-key <key>` after a settlement that was not credited).
pub fn authorization_used(txn: &impl ReadTx, key: &str) -> Result<bool, StoreError> {
    Ok(find_payment(txn, key)?.is_some() || super::ledger::idempotency_key_used(txn, key)?)
}

/// The outcome of [`record_payment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Credited {
        record: Box<PaymentRecord>,
        posted: Box<Posted>,
    },
    /// The authorization credited before: nothing written.
    AlreadyUsed,
}

/// Credits `amount_micros` to `organization_id` and records the authorization `key`, or, when
/// the key is known, writes nothing.
#[allow(clippy::too_many_arguments)]
pub fn record_payment(
    txn: &WriteTransaction,
    key: &str,
    organization_id: Uuid,
    payer: &str,
    network: &str,
    amount_micros: i64,
    transaction: &str,
    now_millis: i64,
) -> Result<Recorded, StoreError> {
    let mut table = txn.open_table(X402_AUTHORIZATIONS)?;
    if table.get(key)?.is_some() {
        return Ok(Recorded::AlreadyUsed);
    }
    let posted = post_entry(
        txn,
        NewEntry {
            organization_id,
            amount_micros,
            kind: EntryKind::Credit,
            description: "x402 top-up".into(),
            idempotency_key: key.to_string(),
            metadata: vec![
                ("source".into(), "x402".into()),
                ("network".into(), network.into()),
                ("payer".into(), payer.into()),
                ("transaction".into(), transaction.into()),
            ],
        },
        now_millis,
    );
    let posted = match posted {
        Ok(posted) => posted,
        // Credited before under this key (by hand, with another amount or organization).
        Err(LedgerError::IdempotencyConflict) => return Ok(Recorded::AlreadyUsed),
        Err(LedgerError::Store(s)) => return Err(s),
        Err(other) => return Err(StoreError::Corrupt(other.to_string())),
    };
    if let Posted::Replayed { .. } = posted {
        // The ledger knows the key but the record table does not: never credit again.
        return Ok(Recorded::AlreadyUsed);
    }
    let record = PaymentRecord {
        organization_id,
        payer: payer.into(),
        network: network.into(),
        amount_micros,
        transaction: transaction.into(),
        ledger_entry_id: posted.entry().id,
        created_at: now_millis,
    };
    table.insert(key, codec::encode(&record)?.as_slice())?;
    Ok(Recorded::Credited {
        record: Box::new(record),
        posted: Box::new(posted),
    })
}
