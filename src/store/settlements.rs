//! The x402 settlement journal (SPEC §7). Before `/settle` is sent, a [`SettlementRecord`] in
//! state `Settling` commits: the authorization, its amount and whom it is to credit. The task
//! that settles then either credits (removing the record in the crediting transaction), or
//! removes it when the facilitator refused, or marks it `Unknown` when the outcome cannot be
//! known (a timeout, a malformed answer, a settled payment whose credit failed). A server that
//! starts and finds `Settling` records was interrupted between `/settle` and the credit: they
//! become `Unknown`. Unknown records wait for the operator's `eliza-cloud payments resolve`.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::accounts::{Bonus, Wallet, find_or_create_wallet_account};
use super::payments::{Recorded, record_payment};
use super::tables::X402_SETTLEMENTS;
use super::{ReadTx, StoreError, codec, get_record};

/// Where a settlement's credit goes. DISK FORMAT: variant order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CreditTo {
    Organization(Uuid),
    /// A wallet (lowercase hex), whose account is made without a bonus if it has none.
    EvmWallet(String),
    /// A Solana wallet (base58).
    SolanaWallet(String),
}

impl CreditTo {
    pub fn of_wallet(wallet: &Wallet) -> CreditTo {
        match wallet {
            Wallet::Evm(k) => CreditTo::EvmWallet(k.clone()),
            Wallet::Solana(k) => CreditTo::SolanaWallet(k.clone()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            CreditTo::Organization(id) => format!("organization {id}"),
            CreditTo::EvmWallet(w) | CreditTo::SolanaWallet(w) => format!("wallet {w}"),
        }
    }
}

/// DISK FORMAT: variant order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettlementState {
    /// `/settle` may be in flight right now.
    Settling,
    /// Nobody knows whether the money moved: the operator decides.
    Unknown,
}

impl SettlementState {
    pub const fn as_str(self) -> &'static str {
        match self {
            SettlementState::Settling => "settling",
            SettlementState::Unknown => "unknown",
        }
    }
}

/// One journaled settlement. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SettlementRecord {
    /// `x402:<network>:<payer>:<nonce>`, also the credit's idempotency key.
    pub key: String,
    pub network: String,
    /// Lowercase hex of the payer.
    pub payer: String,
    pub amount_micros: i64,
    pub credit_to: CreditTo,
    pub state: SettlementState,
    /// The settlement's transaction, when the facilitator named one.
    pub transaction: Option<String>,
    /// Why the outcome is unknown.
    pub reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub fn find_settlement(
    txn: &impl ReadTx,
    key: &str,
) -> Result<Option<SettlementRecord>, StoreError> {
    get_record(&txn.read_table(X402_SETTLEMENTS)?, key)
}

/// Journals a settlement about to be sent; `false` (nothing written) when one is journaled
/// under that key already.
pub fn begin_settlement(
    txn: &WriteTransaction,
    record: &SettlementRecord,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(X402_SETTLEMENTS)?;
    if table.get(record.key.as_str())?.is_some() {
        return Ok(false);
    }
    table.insert(record.key.as_str(), codec::encode(record)?.as_slice())?;
    Ok(true)
}

/// Forgets a settlement that did not happen (the facilitator refused, or was never reached).
pub fn drop_settlement(txn: &WriteTransaction, key: &str) -> Result<bool, StoreError> {
    Ok(txn.open_table(X402_SETTLEMENTS)?.remove(key)?.is_some())
}

/// Marks a settlement's outcome unknown; answers the record as written.
pub fn mark_unknown(
    txn: &WriteTransaction,
    key: &str,
    reason: &str,
    transaction: Option<&str>,
    now_millis: i64,
) -> Result<Option<SettlementRecord>, StoreError> {
    let mut table = txn.open_table(X402_SETTLEMENTS)?;
    let Some(mut record): Option<SettlementRecord> = get_record(&table, key)? else {
        return Ok(None);
    };
    record.state = SettlementState::Unknown;
    record.reason = Some(reason.to_string());
    if transaction.is_some() {
        record.transaction = transaction.map(str::to_string);
    }
    record.updated_at = now_millis;
    table.insert(key, codec::encode(&record)?.as_slice())?;
    Ok(Some(record))
}

/// Every journaled settlement, by key.
pub fn list_settlements(txn: &impl ReadTx) -> Result<Vec<SettlementRecord>, StoreError> {
    let table = txn.read_table(X402_SETTLEMENTS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, value) = row?;
        out.push(codec::decode(value.value())?);
    }
    Ok(out)
}

/// At start: every `Settling` record was interrupted (no settlement runs before the server
/// accepts), so it becomes `Unknown`. Answers the records now unknown, old and new.
pub fn mark_interrupted(
    txn: &WriteTransaction,
    now_millis: i64,
) -> Result<Vec<SettlementRecord>, StoreError> {
    let mut out = Vec::new();
    for record in list_settlements(txn)? {
        if record.state == SettlementState::Settling {
            if let Some(marked) = mark_unknown(
                txn,
                &record.key,
                "interrupted between /settle and the credit",
                None,
                now_millis,
            )? {
                out.push(marked);
            }
        } else {
            out.push(record);
        }
    }
    Ok(out)
}

/// Credits a journaled settlement to whom it names, records the authorization and removes the
/// journal record, all in this transaction. An authorization that credited before writes
/// nothing but the removal.
pub fn credit_settlement(
    txn: &WriteTransaction,
    record: &SettlementRecord,
    transaction: &str,
    now_millis: i64,
) -> Result<(Recorded, Option<String>), StoreError> {
    let credited = credit_payment(txn, record, transaction, now_millis)?;
    drop_settlement(txn, &record.key)?;
    Ok(credited)
}

/// Credits a settled payment to whom `record` names (making a wallet's account, without a
/// bonus, if it has none) and records its authorization, in this transaction.
pub fn credit_payment(
    txn: &WriteTransaction,
    record: &SettlementRecord,
    transaction: &str,
    now_millis: i64,
) -> Result<(Recorded, Option<String>), StoreError> {
    let (organization_id, wallet) = match &record.credit_to {
        CreditTo::Organization(id) => (*id, None),
        CreditTo::EvmWallet(w) | CreditTo::SolanaWallet(w) => {
            let wallet = match &record.credit_to {
                CreditTo::SolanaWallet(_) => Wallet::Solana(w.clone()),
                _ => Wallet::Evm(w.clone()),
            };
            let account = find_or_create_wallet_account(txn, &wallet, Bonus::None, now_millis)?;
            (account.organization.id, Some(w.clone()))
        }
    };
    let recorded = record_payment(
        txn,
        &record.key,
        organization_id,
        &record.payer,
        &record.network,
        record.amount_micros,
        transaction,
        now_millis,
    )?;
    Ok((recorded, wallet))
}
