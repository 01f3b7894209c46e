//! The credit ledger. Every balance change is one row; the balance is the sum of the rows, kept
//! beside them in the same transaction; it never goes below zero, and a debit that would overdraw
//! is refused inside the transaction that would have written it. Idempotency keys are unique: a
//! retry with the same key answers the original row and changes nothing.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{BALANCES, LEDGER, LEDGER_IDEMPOTENCY, ORGS};
use super::{ReadTx, StoreError, codec, get_record};

/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Money in (sign-up bonus, grant, top-up): amount > 0.
    Credit,
    /// Money out (metered usage): amount < 0.
    Debit,
    /// Money returned after a debit: amount > 0.
    Refund,
}

impl EntryKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::Debit => "debit",
            EntryKind::Refund => "refund",
        }
    }

    /// Whether `amount_micros` has the sign this kind requires (never zero).
    pub const fn accepts(self, amount_micros: i64) -> bool {
        match self {
            EntryKind::Credit | EntryKind::Refund => amount_micros > 0,
            EntryKind::Debit => amount_micros < 0,
        }
    }
}

/// Stored ledger row. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub seq: u64,
    pub amount_micros: i64,
    pub kind: EntryKind,
    pub description: String,
    pub idempotency_key: String,
    pub metadata: Vec<(String, String)>,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEntry {
    pub organization_id: Uuid,
    pub amount_micros: i64,
    pub kind: EntryKind,
    pub description: String,
    pub idempotency_key: String,
    pub metadata: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Posted {
    /// A new row was written; `balance_micros` is the balance after it.
    New {
        entry: LedgerEntry,
        balance_micros: i64,
    },
    /// The idempotency key was used before for the same change: nothing was written.
    Replayed {
        entry: LedgerEntry,
        balance_micros: i64,
    },
}

impl Posted {
    pub fn entry(&self) -> &LedgerEntry {
        match self {
            Posted::New { entry, .. } | Posted::Replayed { entry, .. } => entry,
        }
    }

    pub fn balance_micros(&self) -> i64 {
        match self {
            Posted::New { balance_micros, .. } | Posted::Replayed { balance_micros, .. } => {
                *balance_micros
            }
        }
    }
}

#[derive(Debug)]
pub enum LedgerError {
    InsufficientCredits {
        balance_micros: i64,
        needed_micros: i64,
    },
    InvalidAmount(&'static str),
    InvalidIdempotencyKey,
    /// The key was used before for a different organization, amount or kind.
    IdempotencyConflict,
    UnknownOrganization,
    Store(StoreError),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerError::InsufficientCredits {
                balance_micros,
                needed_micros,
            } => write!(
                f,
                "insufficient credits: balance {} micro-dollars, needed {}",
                balance_micros, needed_micros
            ),
            LedgerError::InvalidAmount(why) => write!(f, "invalid amount: {why}"),
            LedgerError::InvalidIdempotencyKey => {
                write!(f, "idempotency key must be 1..={MAX_IDEMPOTENCY_KEY} bytes")
            }
            LedgerError::IdempotencyConflict => {
                write!(f, "idempotency key already used for a different change")
            }
            LedgerError::UnknownOrganization => write!(f, "unknown organization"),
            LedgerError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LedgerError {}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Store(e)
    }
}

impl From<redb::StorageError> for LedgerError {
    fn from(e: redb::StorageError) -> Self {
        LedgerError::Store(e.into())
    }
}

impl From<redb::TableError> for LedgerError {
    fn from(e: redb::TableError) -> Self {
        LedgerError::Store(e.into())
    }
}

impl From<super::CodecError> for LedgerError {
    fn from(e: super::CodecError) -> Self {
        LedgerError::Store(e.into())
    }
}

/// Writes one ledger row and the new balance, or refuses and writes nothing. Runs inside the
/// caller's transaction so the row can commit together with whatever paid for it.
pub fn post_entry(
    txn: &WriteTransaction,
    new: NewEntry,
    now_millis: i64,
) -> Result<Posted, LedgerError> {
    if !new.kind.accepts(new.amount_micros) {
        return Err(LedgerError::InvalidAmount(match new.kind {
            EntryKind::Debit => "a debit must be negative",
            EntryKind::Credit | EntryKind::Refund => "a credit or refund must be positive",
        }));
    }
    if new.idempotency_key.is_empty() || new.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(LedgerError::InvalidIdempotencyKey);
    }
    let org = new.organization_id.as_u128();
    let mut balances = txn.open_table(BALANCES)?;
    let balance = balances.get(org)?.map(|g| g.value()).unwrap_or(0);

    let mut index = txn.open_table(LEDGER_IDEMPOTENCY)?;
    let mut ledger = txn.open_table(LEDGER)?;
    if let Some(at) = index.get(new.idempotency_key.as_str())?.map(|g| g.value()) {
        let entry: LedgerEntry = get_record(&ledger, at)?.ok_or_else(|| {
            StoreError::Corrupt("idempotency index points at no ledger row".into())
        })?;
        if entry.organization_id != new.organization_id
            || entry.amount_micros != new.amount_micros
            || entry.kind != new.kind
        {
            return Err(LedgerError::IdempotencyConflict);
        }
        return Ok(Posted::Replayed {
            entry,
            balance_micros: balance,
        });
    }
    if txn.open_table(ORGS)?.get(org)?.is_none() {
        return Err(LedgerError::UnknownOrganization);
    }
    let balance_after = balance
        .checked_add(new.amount_micros)
        .ok_or(LedgerError::InvalidAmount("balance would overflow"))?;
    if balance_after < 0 {
        return Err(LedgerError::InsufficientCredits {
            balance_micros: balance,
            needed_micros: new.amount_micros.saturating_neg(),
        });
    }
    let seq = match ledger.range((org, 0)..=(org, u64::MAX))?.next_back() {
        Some(row) => row?.0.value().1 + 1,
        None => 1,
    };
    let entry = LedgerEntry {
        id: Uuid::new_v4(),
        organization_id: new.organization_id,
        seq,
        amount_micros: new.amount_micros,
        kind: new.kind,
        description: new.description,
        idempotency_key: new.idempotency_key,
        metadata: new.metadata,
        created_at: now_millis,
    };
    ledger.insert((org, seq), codec::encode(&entry)?.as_slice())?;
    index.insert(entry.idempotency_key.as_str(), (org, seq))?;
    balances.insert(org, balance_after)?;
    Ok(Posted::New {
        entry,
        balance_micros: balance_after,
    })
}

/// Posts many rows with the rules of [`post_entry`], each row answered on its own (a refused row
/// writes nothing and stops nothing else), with every table opened once and each organization's
/// balance and sequence read once: the grouped commit of metered debits (SPEC §9).
pub fn post_entries(
    txn: &WriteTransaction,
    entries: Vec<NewEntry>,
    now_millis: i64,
) -> Result<Vec<Result<Posted, LedgerError>>, StoreError> {
    struct Account {
        balance: i64,
        next_seq: u64,
        exists: bool,
        changed: bool,
    }
    let mut balances = txn.open_table(BALANCES)?;
    let mut index = txn.open_table(LEDGER_IDEMPOTENCY)?;
    let mut ledger = txn.open_table(LEDGER)?;
    let orgs = txn.open_table(ORGS)?;
    let mut accounts: std::collections::HashMap<u128, Account> = Default::default();
    let mut out = Vec::with_capacity(entries.len());
    for new in entries {
        if !new.kind.accepts(new.amount_micros) {
            out.push(Err(LedgerError::InvalidAmount("wrong sign for the kind")));
            continue;
        }
        if new.idempotency_key.is_empty() || new.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
            out.push(Err(LedgerError::InvalidIdempotencyKey));
            continue;
        }
        let org = new.organization_id.as_u128();
        let account = match accounts.entry(org) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let next_seq = match ledger.range((org, 0)..=(org, u64::MAX))?.next_back() {
                    Some(row) => row?.0.value().1 + 1,
                    None => 1,
                };
                e.insert(Account {
                    balance: balances.get(org)?.map(|g| g.value()).unwrap_or(0),
                    next_seq,
                    exists: orgs.get(org)?.is_some(),
                    changed: false,
                })
            }
        };
        if let Some(at) = index.get(new.idempotency_key.as_str())?.map(|g| g.value()) {
            let entry: LedgerEntry = get_record(&ledger, at)?.ok_or_else(|| {
                StoreError::Corrupt("idempotency index points at no ledger row".into())
            })?;
            out.push(
                if entry.organization_id != new.organization_id
                    || entry.amount_micros != new.amount_micros
                    || entry.kind != new.kind
                {
                    Err(LedgerError::IdempotencyConflict)
                } else {
                    Ok(Posted::Replayed {
                        entry,
                        balance_micros: account.balance,
                    })
                },
            );
            continue;
        }
        if !account.exists {
            out.push(Err(LedgerError::UnknownOrganization));
            continue;
        }
        let Some(balance_after) = account.balance.checked_add(new.amount_micros) else {
            out.push(Err(LedgerError::InvalidAmount("balance would overflow")));
            continue;
        };
        if balance_after < 0 {
            out.push(Err(LedgerError::InsufficientCredits {
                balance_micros: account.balance,
                needed_micros: new.amount_micros.saturating_neg(),
            }));
            continue;
        }
        let entry = LedgerEntry {
            id: Uuid::new_v4(),
            organization_id: new.organization_id,
            seq: account.next_seq,
            amount_micros: new.amount_micros,
            kind: new.kind,
            description: new.description,
            idempotency_key: new.idempotency_key,
            metadata: new.metadata,
            created_at: now_millis,
        };
        ledger.insert((org, entry.seq), codec::encode(&entry)?.as_slice())?;
        index.insert(entry.idempotency_key.as_str(), (org, entry.seq))?;
        account.balance = balance_after;
        account.next_seq += 1;
        account.changed = true;
        out.push(Ok(Posted::New {
            entry,
            balance_micros: balance_after,
        }));
    }
    for (org, account) in accounts {
        if account.changed {
            balances.insert(org, account.balance)?;
        }
    }
    Ok(out)
}

/// Whether an idempotency key has been used by any row.
pub fn idempotency_key_used(txn: &impl ReadTx, key: &str) -> Result<bool, StoreError> {
    Ok(txn.read_table(LEDGER_IDEMPOTENCY)?.get(key)?.is_some())
}

pub fn balance_of(txn: &impl ReadTx, org: Uuid) -> Result<i64, StoreError> {
    Ok(txn
        .read_table(BALANCES)?
        .get(org.as_u128())?
        .map(|g| g.value())
        .unwrap_or(0))
}

/// One page (1-based) of an organization's rows, newest first, and the total row count.
pub fn list_entries(
    txn: &impl ReadTx,
    org: Uuid,
    page: u64,
    per_page: u64,
) -> Result<(Vec<LedgerEntry>, u64), StoreError> {
    let org = org.as_u128();
    let ledger = txn.read_table(LEDGER)?;
    let total = match ledger.range((org, 0)..=(org, u64::MAX))?.next_back() {
        Some(row) => row?.0.value().1,
        None => 0,
    };
    let skip = page.saturating_sub(1).saturating_mul(per_page);
    let mut out = Vec::new();
    for row in ledger
        .range((org, 0)..=(org, u64::MAX))?
        .rev()
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
    {
        let (_, value) = row?;
        out.push(codec::decode(value.value())?);
    }
    Ok((out, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::orgs::{OrgRecord, Plan, insert_org};
    use proptest::prelude::*;

    fn store_with_org() -> (tempfile::TempDir, Store, Uuid) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let id = Uuid::new_v4();
        store
            .write(|txn| {
                insert_org(
                    txn,
                    &OrgRecord {
                        id,
                        name: "Acme".into(),
                        slug: format!("acme-{id}"),
                        plan: Plan::Free,
                        custom_rate_limit: None,
                        is_active: true,
                        created_at: 0,
                        updated_at: 0,
                    },
                )
            })
            .unwrap();
        (tmp, store, id)
    }

    fn entry(org: Uuid, amount: i64, key: &str) -> NewEntry {
        NewEntry {
            organization_id: org,
            amount_micros: amount,
            kind: if amount < 0 {
                EntryKind::Debit
            } else {
                EntryKind::Credit
            },
            description: "test".into(),
            idempotency_key: key.into(),
            metadata: vec![],
        }
    }

    fn post(store: &Store, e: NewEntry) -> Result<Posted, LedgerError> {
        store.write(|txn| post_entry(txn, e, 1))
    }

    #[test]
    fn overdraft_is_refused_and_writes_nothing() {
        let (_tmp, store, org) = store_with_org();
        post(&store, entry(org, 1_000, "a")).unwrap();
        let err = post(&store, entry(org, -1_001, "b")).unwrap_err();
        assert!(matches!(
            err,
            LedgerError::InsufficientCredits {
                balance_micros: 1_000,
                needed_micros: 1_001
            }
        ));
        let (rows, total) = store.read(|t| list_entries(t, org, 1, 10)).unwrap();
        assert_eq!(total, 1);
        assert_eq!(rows.len(), 1);
        // The refused key stays free for a later, affordable debit.
        assert!(matches!(
            post(&store, entry(org, -1_000, "b")).unwrap(),
            Posted::New {
                balance_micros: 0,
                ..
            }
        ));
    }

    #[test]
    fn retry_with_same_key_is_replayed_and_conflict_detected() {
        let (_tmp, store, org) = store_with_org();
        let first = post(&store, entry(org, 500, "k")).unwrap();
        let again = post(&store, entry(org, 500, "k")).unwrap();
        assert!(matches!(again, Posted::Replayed { .. }));
        assert_eq!(first.entry(), again.entry());
        assert!(matches!(
            post(&store, entry(org, 600, "k")),
            Err(LedgerError::IdempotencyConflict)
        ));
        assert_eq!(store.read(|t| balance_of(t, org)).unwrap(), 500);
    }

    #[test]
    fn wrong_signs_unknown_org_and_bad_keys_are_refused() {
        let (_tmp, store, org) = store_with_org();
        let mut e = entry(org, 5, "x");
        e.kind = EntryKind::Debit;
        assert!(matches!(
            post(&store, e),
            Err(LedgerError::InvalidAmount(_))
        ));
        assert!(matches!(
            post(&store, entry(org, 0, "y")),
            Err(LedgerError::InvalidAmount(_))
        ));
        assert!(matches!(
            post(&store, entry(Uuid::new_v4(), 5, "z")),
            Err(LedgerError::UnknownOrganization)
        ));
        assert!(matches!(
            post(&store, entry(org, 5, "")),
            Err(LedgerError::InvalidIdempotencyKey)
        ));
        assert!(matches!(
            post(&store, entry(org, i64::MAX, "m1")),
            Ok(Posted::New { .. })
        ));
        assert!(matches!(
            post(&store, entry(org, 1, "m2")),
            Err(LedgerError::InvalidAmount(_))
        ));
    }

    #[test]
    fn pages_newest_first() {
        let (_tmp, store, org) = store_with_org();
        for i in 1..=5 {
            post(&store, entry(org, i, &format!("p{i}"))).unwrap();
        }
        let (rows, total) = store.read(|t| list_entries(t, org, 1, 2)).unwrap();
        assert_eq!(total, 5);
        assert_eq!(
            rows.iter().map(|r| r.amount_micros).collect::<Vec<_>>(),
            [5, 4]
        );
        let (rows, _) = store.read(|t| list_entries(t, org, 3, 2)).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.amount_micros).collect::<Vec<_>>(),
            [1]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn a_batch_posts_what_the_rows_one_by_one_would(ops in proptest::collection::vec(op(), 1..30)) {
            let (_tmp_a, one, org_a) = store_with_org();
            let (_tmp_b, batch, org_b) = store_with_org();
            let rows = |org: Uuid| -> Vec<NewEntry> {
                ops.iter().map(|op| match op {
                    Op::Credit(a, k) => entry(org, *a, &format!("k{k}")),
                    Op::Debit(a, k) => entry(org, -a, &format!("k{k}")),
                }).collect()
            };
            let singles: Vec<bool> = rows(org_a)
                .into_iter()
                .map(|e| post(&one, e).is_ok())
                .collect();
            let batched: Vec<bool> = batch
                .write(|txn| post_entries(txn, rows(org_b), 1))
                .unwrap()
                .iter()
                .map(Result::is_ok)
                .collect();
            prop_assert_eq!(singles, batched);
            prop_assert_eq!(
                one.read(|t| balance_of(t, org_a)).unwrap(),
                batch.read(|t| balance_of(t, org_b)).unwrap()
            );
            let report = batch.read(crate::store::check::check_store).unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Credit(i64, u8),
        Debit(i64, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct idempotency keys, so retries and conflicts happen often.
        prop_oneof![
            (1i64..5_000, 0u8..12).prop_map(|(a, k)| Op::Credit(a, k)),
            (1i64..5_000, 0u8..12).prop_map(|(a, k)| Op::Debit(a, k)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn balance_is_sum_of_rows_and_never_negative(ops in proptest::collection::vec(op(), 1..40)) {
            let (_tmp, store, org) = store_with_org();
            let mut model: std::collections::HashMap<u8, i64> = Default::default();
            let mut model_balance = 0i64;
            for op in ops {
                let (amount, key) = match op {
                    Op::Credit(a, k) => (a, k),
                    Op::Debit(a, k) => (-a, k),
                };
                let result = post(&store, entry(org, amount, &format!("key-{key}")));
                match model.get(&key) {
                    Some(&used) if used == amount => {
                        let replayed = matches!(result, Ok(Posted::Replayed { .. }));
                        prop_assert!(replayed);
                    }
                    Some(_) => {
                        let conflict = matches!(result, Err(LedgerError::IdempotencyConflict));
                        prop_assert!(conflict);
                    }
                    None if model_balance + amount < 0 => {
                        let refused = matches!(result, Err(LedgerError::InsufficientCredits { .. }));
                        prop_assert!(refused);
                    }
                    None => {
                        let posted = matches!(result, Ok(Posted::New { .. }));
                        prop_assert!(posted);
                        model.insert(key, amount);
                        model_balance += amount;
                    }
                }
                let balance = store.read(|t| balance_of(t, org)).unwrap();
                prop_assert_eq!(balance, model_balance);
                prop_assert!(balance >= 0);
            }
            let (rows, total) = store.read(|t| list_entries(t, org, 1, 1000)).unwrap();
            prop_assert_eq!(total as usize, rows.len());
            prop_assert_eq!(rows.iter().map(|r| r.amount_micros).sum::<i64>(), model_balance);
            let report = store.read(crate::store::check::check_store).unwrap();
            prop_assert!(report.problems.is_empty(), "{:?}", report.problems);
        }
    }
}
