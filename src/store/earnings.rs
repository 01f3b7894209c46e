//! Apps' earnings (SPEC §10): the app's part of every monetized call made through it, written in
//! the same transaction as the caller's debit it comes from (`gateway::billing`), so a caller is
//! never charged an app's price without the app's owner earning it, nor the other way round. An
//! earning is pending for the hold (`--earnings-hold`) after its call, then available; a
//! withdrawal moves available earnings into the owner organization's credits, once per
//! idempotency key, in one transaction with its ledger credit.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ledger::{EntryKind, LedgerError, NewEntry, Posted, post_entry};
use super::tables::{EARNINGS, EARNINGS_DAILY, EARNINGS_TOTALS, EARNINGS_WITHDRAWALS};
use super::{ReadTx, StoreError, codec, get_record};

const DAY_MILLIS: i64 = 86_400_000;

/// An app's sums. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarningsTotals {
    /// The owner organization (the app may be deleted; its earnings stay).
    pub organization_id: Uuid,
    pub accrued_micros: i64,
    pub withdrawn_micros: i64,
    /// Monetized calls.
    pub requests: u64,
}

/// One day of an app's earnings. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarningsDay {
    pub amount_micros: i64,
    pub requests: u64,
}

/// A withdrawal. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Withdrawal {
    pub amount_micros: i64,
    pub created_at: i64,
    /// The ledger row's idempotency key.
    pub ledger_key: String,
}

/// One earning: `amount` for the app `app` owned by `organization`, from call `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earning {
    pub app: Uuid,
    pub organization: Uuid,
    pub call: Uuid,
    pub amount_micros: i64,
}

pub fn totals_of(txn: &impl ReadTx, app: Uuid) -> Result<Option<EarningsTotals>, StoreError> {
    get_record(&txn.read_table(EARNINGS_TOTALS)?, app.as_u128())
}

/// Writes one earning (its row, its day, its app's totals). Zero or negative amounts are no
/// earning and write nothing.
pub fn accrue(txn: &WriteTransaction, earning: &Earning, at_millis: i64) -> Result<(), StoreError> {
    if earning.amount_micros <= 0 {
        return Ok(());
    }
    let app = earning.app.as_u128();
    let mut rows = txn.open_table(EARNINGS)?;
    let key = (app, at_millis, earning.call.as_u128());
    let before = rows.get(key)?.map(|g| g.value());
    if before.is_some() {
        // The same call's earning twice (never: a debit is posted once): keep the first.
        return Ok(());
    }
    rows.insert(key, earning.amount_micros)?;
    let mut days = txn.open_table(EARNINGS_DAILY)?;
    let day_key = (app, at_millis.div_euclid(DAY_MILLIS));
    let mut day: EarningsDay = match days.get(day_key)? {
        Some(found) => codec::decode(found.value())?,
        None => EarningsDay::default(),
    };
    day.amount_micros = day.amount_micros.saturating_add(earning.amount_micros);
    day.requests = day.requests.saturating_add(1);
    days.insert(day_key, codec::encode(&day)?.as_slice())?;
    let mut totals_table = txn.open_table(EARNINGS_TOTALS)?;
    let mut totals: EarningsTotals = match totals_table.get(app)? {
        Some(found) => codec::decode(found.value())?,
        None => EarningsTotals {
            organization_id: earning.organization,
            ..EarningsTotals::default()
        },
    };
    totals.accrued_micros = totals.accrued_micros.saturating_add(earning.amount_micros);
    totals.requests = totals.requests.saturating_add(1);
    totals_table.insert(app, codec::encode(&totals)?.as_slice())?;
    Ok(())
}

/// Earnings made after `since_millis` (the pending part, with `since` = now − hold).
pub fn earned_since(txn: &impl ReadTx, app: Uuid, since_millis: i64) -> Result<i64, StoreError> {
    let id = app.as_u128();
    let table = txn.read_table(EARNINGS)?;
    let mut sum = 0i64;
    for row in table.range((id, since_millis.saturating_add(1), 0)..=(id, i64::MAX, u128::MAX))? {
        sum = sum.saturating_add(row?.1.value());
    }
    Ok(sum)
}

/// An app's earnings by day over `from..=to` (days since the epoch), oldest first.
pub fn daily(
    txn: &impl ReadTx,
    app: Uuid,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, EarningsDay)>, StoreError> {
    let id = app.as_u128();
    let table = txn.read_table(EARNINGS_DAILY)?;
    let mut out = Vec::new();
    for row in table.range((id, from)..=(id, to))? {
        let (key, value) = row?;
        out.push((key.value().1, codec::decode(value.value())?));
    }
    Ok(out)
}

/// What an app holds now: (total accrued, pending, available, withdrawn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balances {
    pub total: i64,
    pub pending: i64,
    pub available: i64,
    pub withdrawn: i64,
}

pub fn balances(
    txn: &impl ReadTx,
    app: Uuid,
    now_millis: i64,
    hold_millis: i64,
) -> Result<Balances, StoreError> {
    let Some(totals) = totals_of(txn, app)? else {
        return Ok(Balances::default());
    };
    let pending = earned_since(txn, app, now_millis.saturating_sub(hold_millis))?;
    let available = totals
        .accrued_micros
        .saturating_sub(pending)
        .saturating_sub(totals.withdrawn_micros)
        .max(0);
    Ok(Balances {
        total: totals.accrued_micros,
        pending,
        available,
        withdrawn: totals.withdrawn_micros,
    })
}

#[derive(Debug)]
pub enum WithdrawError {
    /// More than is available (the amount available).
    TooMuch {
        available_micros: i64,
    },
    /// The idempotency key was used for another amount.
    KeyReused,
    Store(StoreError),
}

impl From<StoreError> for WithdrawError {
    fn from(e: StoreError) -> Self {
        WithdrawError::Store(e)
    }
}

/// Moves `amount` of `app`'s available earnings into its owner's credits: one ledger credit and
/// one withdrawal row, once per `key` (a replay answers the first withdrawal and changes
/// nothing). Answers the withdrawal and whether it is new.
pub fn withdraw(
    txn: &WriteTransaction,
    app: Uuid,
    key: &str,
    amount_micros: i64,
    now_millis: i64,
    hold_millis: i64,
) -> Result<(Withdrawal, bool), WithdrawError> {
    let id = app.as_u128();
    if let Some(done) = withdrawal_of(txn, id, key)? {
        if done.amount_micros != amount_micros {
            return Err(WithdrawError::KeyReused);
        }
        return Ok((done, false));
    }
    let now = balances(txn, app, now_millis, hold_millis)?;
    let Some(mut totals) = totals_of(txn, app)? else {
        return Err(WithdrawError::TooMuch {
            available_micros: 0,
        });
    };
    if amount_micros <= 0 || amount_micros > now.available {
        return Err(WithdrawError::TooMuch {
            available_micros: now.available,
        });
    }
    let ledger_key = format!("withdraw:{app}:{key}");
    let posted = post_entry(
        txn,
        NewEntry {
            organization_id: totals.organization_id,
            amount_micros,
            kind: EntryKind::Credit,
            description: "App earnings withdrawn".into(),
            idempotency_key: ledger_key.clone(),
            metadata: vec![("app".into(), app.to_string())],
        },
        now_millis,
    );
    match posted {
        Ok(Posted::New { .. }) => {}
        // The withdrawal row and the ledger row are written together: a ledger row without its
        // withdrawal row is damage.
        Ok(Posted::Replayed { .. }) | Err(LedgerError::IdempotencyConflict) => {
            return Err(WithdrawError::Store(StoreError::Corrupt(
                "a withdrawal's ledger row exists without its withdrawal".into(),
            )));
        }
        Err(LedgerError::Store(e)) => return Err(WithdrawError::Store(e)),
        Err(other) => return Err(WithdrawError::Store(StoreError::Db(other.to_string()))),
    }
    let done = Withdrawal {
        amount_micros,
        created_at: now_millis,
        ledger_key,
    };
    record_withdrawal(txn, id, key, &done, &mut totals)?;
    Ok((done, true))
}

fn withdrawal_of(
    txn: &impl ReadTx,
    app: u128,
    key: &str,
) -> Result<Option<Withdrawal>, StoreError> {
    get_record(&txn.read_table(EARNINGS_WITHDRAWALS)?, (app, key))
}

fn record_withdrawal(
    txn: &WriteTransaction,
    app: u128,
    key: &str,
    done: &Withdrawal,
    totals: &mut EarningsTotals,
) -> Result<(), StoreError> {
    txn.open_table(EARNINGS_WITHDRAWALS)?
        .insert((app, key), codec::encode(done)?.as_slice())?;
    totals.withdrawn_micros = totals.withdrawn_micros.saturating_add(done.amount_micros);
    txn.open_table(EARNINGS_TOTALS)?
        .insert(app, codec::encode(&*totals)?.as_slice())?;
    Ok(())
}

/// `check`'s part: every app's totals equal the sums of its rows, days and withdrawals, and no
/// more was withdrawn than earned. Answers the problems found.
pub fn check(txn: &impl ReadTx) -> Result<Vec<String>, StoreError> {
    use std::collections::BTreeMap;
    let mut problems = Vec::new();
    let mut rows: BTreeMap<u128, (i64, u64)> = BTreeMap::new();
    for row in txn.read_table(EARNINGS)?.iter()? {
        let (key, amount) = row?;
        let sum = rows.entry(key.value().0).or_default();
        sum.0 = sum.0.saturating_add(amount.value());
        sum.1 += 1;
    }
    let mut days: BTreeMap<u128, (i64, u64)> = BTreeMap::new();
    for row in txn.read_table(EARNINGS_DAILY)?.iter()? {
        let (key, value) = row?;
        match codec::decode::<EarningsDay>(value.value()) {
            Ok(day) => {
                let sum = days.entry(key.value().0).or_default();
                sum.0 = sum.0.saturating_add(day.amount_micros);
                sum.1 += day.requests;
            }
            Err(e) => problems.push(format!("earnings by day: a record does not decode: {e}")),
        }
    }
    let mut withdrawn: BTreeMap<u128, i64> = BTreeMap::new();
    for row in txn.read_table(EARNINGS_WITHDRAWALS)?.iter()? {
        let (key, value) = row?;
        match codec::decode::<Withdrawal>(value.value()) {
            Ok(w) => {
                let sum = withdrawn.entry(key.value().0).or_default();
                *sum = sum.saturating_add(w.amount_micros);
            }
            Err(e) => problems.push(format!("withdrawals: a record does not decode: {e}")),
        }
    }
    let mut totals: BTreeMap<u128, EarningsTotals> = BTreeMap::new();
    for row in txn.read_table(EARNINGS_TOTALS)?.iter()? {
        let (key, value) = row?;
        match codec::decode::<EarningsTotals>(value.value()) {
            Ok(t) => {
                totals.insert(key.value(), t);
            }
            Err(e) => problems.push(format!("earnings totals: a record does not decode: {e}")),
        }
    }
    let apps: std::collections::BTreeSet<u128> = rows
        .keys()
        .chain(days.keys())
        .chain(withdrawn.keys())
        .chain(totals.keys())
        .copied()
        .collect();
    for app in apps {
        let t = totals.get(&app).copied().unwrap_or_default();
        let name = Uuid::from_u128(app);
        let (row_sum, row_count) = rows.get(&app).copied().unwrap_or_default();
        if row_sum != t.accrued_micros || row_count != t.requests {
            problems.push(format!(
                "app {name}: earnings total {} µ$ over {} calls, its rows sum to {row_sum} µ$ over {row_count}",
                t.accrued_micros, t.requests
            ));
        }
        if days.get(&app).copied().unwrap_or_default() != (row_sum, row_count) {
            problems.push(format!(
                "app {name}: earnings by day do not sum to its rows"
            ));
        }
        let w = withdrawn.get(&app).copied().unwrap_or_default();
        if w != t.withdrawn_micros {
            problems.push(format!(
                "app {name}: {} µ$ withdrawn, its withdrawals sum to {w} µ$",
                t.withdrawn_micros
            ));
        }
        if w > row_sum {
            problems.push(format!(
                "app {name}: {w} µ$ withdrawn of {row_sum} µ$ earned"
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::ledger::balance_of;
    use crate::store::orgs::{OrgRecord, Plan, insert_org};

    fn store_with_org() -> (tempfile::TempDir, Store, Uuid) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let org = Uuid::new_v4();
        store
            .write(|txn| {
                insert_org(
                    txn,
                    &OrgRecord {
                        id: org,
                        name: "Owner".into(),
                        slug: format!("o-{org}"),
                        plan: Plan::Free,
                        custom_rate_limit: None,
                        is_active: true,
                        created_at: 0,
                        updated_at: 0,
                    },
                )
            })
            .unwrap();
        (tmp, store, org)
    }

    #[test]
    fn pending_then_available_then_withdrawn_once() {
        let (_tmp, store, org) = store_with_org();
        let app = Uuid::new_v4();
        let hold = 7 * DAY_MILLIS;
        store
            .write(|txn| {
                for (i, at) in [0i64, DAY_MILLIS, 8 * DAY_MILLIS].into_iter().enumerate() {
                    let earning = Earning {
                        app,
                        organization: org,
                        call: Uuid::from_u128(i as u128 + 1),
                        amount_micros: 100,
                    };
                    accrue(txn, &earning, at)?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let now = 9 * DAY_MILLIS;
        let b = store.read(|t| balances(t, app, now, hold)).unwrap();
        assert_eq!(
            (b.total, b.pending, b.available, b.withdrawn),
            (300, 100, 200, 0)
        );
        let too_much = store.write(|t| -> Result<i64, StoreError> {
            match withdraw(t, app, "k", 201, now, hold) {
                Err(WithdrawError::TooMuch { available_micros }) => Ok(available_micros),
                other => panic!("{other:?}"),
            }
        });
        assert_eq!(too_much.unwrap(), 200);
        for _ in 0..2 {
            store
                .write(|t| {
                    withdraw(t, app, "k", 150, now, hold)
                        .map_err(|e| StoreError::Db(format!("{e:?}")))
                })
                .unwrap();
        }
        assert_eq!(
            store.read(|t| balance_of(t, org)).unwrap(),
            150,
            "credited once"
        );
        let reused = store.write(|t| -> Result<(), StoreError> {
            match withdraw(t, app, "k", 10, now, hold) {
                Err(WithdrawError::KeyReused) => Ok(()),
                other => panic!("{other:?}"),
            }
        });
        assert!(reused.is_ok());
        let b = store.read(|t| balances(t, app, now, hold)).unwrap();
        assert_eq!((b.available, b.withdrawn), (50, 150));
        let days = store.read(|t| daily(t, app, 0, 30)).unwrap();
        assert_eq!(days.len(), 3);
        assert!(store.read(check).unwrap().is_empty());
    }
}
