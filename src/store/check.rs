//! `eliza-cloud check`: every record decodes, every index agrees with its table, the ledger
//! invariants hold (balance = sum of rows, no running balance below zero, idempotency keys unique
//! and indexed), and the settlements left in the journal are listed for the operator. It runs in
//! a read transaction of a read-only open (`ReadOnlyStore`): nothing is written, migrated or
//! repaired. The file's structure is checked as far as reading every record of every table
//! checks it, and redb refuses, at open, a file that needs the repair of an unclean shutdown;
//! redb's own structural check (`Database::check_integrity`) needs a writable handle and is not
//! run.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::ReadableTable;
use uuid::Uuid;

use super::keys::ApiKeyRecord;
use super::ledger::LedgerEntry;
use super::orgs::OrgRecord;
use super::sessions::SessionRecord;
use super::tables::*;
use super::users::UserRecord;
use super::{ReadTx, StoreError, codec};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub organizations: u64,
    pub users: u64,
    pub api_keys: u64,
    pub sessions: u64,
    pub ledger_rows: u64,
    /// x402 settlements waiting for the operator: not damage, but `check` reports them.
    pub unresolved_settlements: Vec<String>,
    pub problems: Vec<String>,
}

/// Every row of a table of encoded records; rows that do not decode become problems.
fn decode_all<K, KO, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    what: &str,
    problems: &mut Vec<String>,
    key_of: impl Fn(K::SelfType<'_>) -> KO,
) -> Result<Vec<(KO, T)>, StoreError>
where
    K: redb::Key + 'static,
    T: serde::de::DeserializeOwned,
{
    let mut out = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        match codec::decode::<T>(value.value()) {
            Ok(record) => out.push((key_of(key.value()), record)),
            Err(e) => problems.push(format!("{what}: a record does not decode: {e}")),
        }
    }
    Ok(out)
}

pub fn check_store(txn: &impl ReadTx) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    let p = &mut report.problems;

    let orgs: Vec<(u128, OrgRecord)> =
        decode_all(&txn.read_table(ORGS)?, "organizations", p, |k| k)?;
    report.organizations = orgs.len() as u64;
    let org_ids: HashSet<u128> = orgs.iter().map(|(k, _)| *k).collect();
    let mut slugs_seen = HashMap::new();
    for (key, org) in &orgs {
        if org.id.as_u128() != *key {
            p.push(format!("organization {} stored under another id", org.id));
        }
        slugs_seen.insert(org.slug.clone(), *key);
    }
    let mut slug_index = HashMap::new();
    for row in txn.read_table(ORG_SLUGS)?.iter()? {
        let (slug, id) = row?;
        slug_index.insert(slug.value().to_string(), id.value());
    }
    if slug_index != slugs_seen {
        p.push("organization slug index does not match the organizations".into());
    }

    let users: Vec<(u128, UserRecord)> = decode_all(&txn.read_table(USERS)?, "users", p, |k| k)?;
    report.users = users.len() as u64;
    let mut wallets_seen = HashMap::new();
    for (key, user) in &users {
        if user.id.as_u128() != *key {
            p.push(format!("user {} stored under another id", user.id));
        }
        if !org_ids.contains(&user.organization_id.as_u128()) {
            p.push(format!("user {} belongs to no organization", user.id));
        }
        for w in user.wallet_address.iter().chain(user.solana_address.iter()) {
            wallets_seen.insert(w.clone(), *key);
        }
    }
    let mut wallet_index = HashMap::new();
    for row in txn.read_table(USER_WALLETS)?.iter()? {
        let (wallet, id) = row?;
        wallet_index.insert(wallet.value().to_string(), id.value());
    }
    if wallet_index != wallets_seen {
        p.push("wallet index does not match the users".into());
    }

    let keys: Vec<(u128, ApiKeyRecord)> =
        decode_all(&txn.read_table(API_KEYS)?, "API keys", p, |k| k)?;
    report.api_keys = keys.len() as u64;
    let mut hashes_seen = HashMap::new();
    let mut orgs_seen = HashSet::new();
    for (key, record) in &keys {
        orgs_seen.insert((record.organization_id.as_u128(), *key));
        if record.id.as_u128() != *key {
            p.push(format!("API key {} stored under another id", record.id));
        }
        if !org_ids.contains(&record.organization_id.as_u128()) {
            p.push(format!("API key {} belongs to no organization", record.id));
        }
        hashes_seen.insert(record.key_hash.0, *key);
    }
    let mut hash_index = HashMap::new();
    for row in txn.read_table(API_KEY_HASHES)?.iter()? {
        let (hash, id) = row?;
        hash_index.insert(*hash.value(), id.value());
    }
    if hash_index != hashes_seen {
        p.push("API key hash index does not match the keys".into());
    }
    let mut org_index = HashSet::new();
    for row in txn.read_table(API_KEYS_BY_ORG)?.iter()? {
        let (pair, _) = row?;
        org_index.insert(pair.value());
    }
    if org_index != orgs_seen {
        p.push("API key organization index does not match the keys".into());
    }

    // The settlement journal (SPEC §7): every record left is a payment whose outcome nobody
    // knows, and an operator must resolve it (`eliza-cloud payments resolve`).
    let journal: Vec<(String, super::settlements::SettlementRecord)> = decode_all(
        &txn.read_table(X402_SETTLEMENTS)?,
        "x402 settlements",
        p,
        |k| k.to_string(),
    )?;
    for (key, record) in &journal {
        report.unresolved_settlements.push(format!(
            "x402 settlement {key} ({}, {} micro-dollars for {}) is {}: resolve it with \
             `eliza-cloud payments resolve {key} credit|refuse`",
            record.network,
            record.amount_micros,
            record.credit_to.describe(),
            record.state.as_str(),
        ));
    }

    let sessions: Vec<([u8; 32], SessionRecord)> =
        decode_all(&txn.read_table(SESSIONS)?, "sessions", p, |k| *k)?;
    report.sessions = sessions.len() as u64;
    for (key, session) in &sessions {
        if session.token_hash.0 != *key {
            p.push("a session is stored under another hash".into());
        }
    }

    let from_ledger = check_ledger(txn, &org_ids, &mut report)?;
    check_earnings(txn, &from_ledger, &mut report.problems)?;
    report.problems.extend(super::webhooks::check(txn)?);
    report.problems.extend(super::usage::check_app_users(txn)?);
    report.problems.extend(super::domains::check(txn)?);
    report.problems.extend(crate::domains::certs::check(txn)?);
    Ok(report)
}

/// What the ledger says of each app's earnings: the app fees its callers paid (the debits'
/// `app_fee_micros`) and the withdrawals credited to its owner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct AppMoney {
    fees: i64,
    withdrawn: i64,
}

/// Every app's earnings equal the sum of their rows and the fees of the debits they come from;
/// its withdrawals equal their ledger credits (SPEC §10).
fn check_earnings(
    txn: &impl ReadTx,
    from_ledger: &BTreeMap<u128, AppMoney>,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    problems.extend(super::earnings::check(txn)?);
    let mut apps: HashSet<u128> = from_ledger.keys().copied().collect();
    for row in txn.read_table(EARNINGS_TOTALS)?.iter()? {
        apps.insert(row?.0.value());
    }
    for app in apps {
        let id = Uuid::from_u128(app);
        let totals = super::earnings::totals_of(txn, id)?.unwrap_or_default();
        let ledger = from_ledger.get(&app).copied().unwrap_or_default();
        if ledger.fees != totals.accrued_micros {
            problems.push(format!(
                "app {id}: callers paid {} µ$ of its price but it earned {} µ$",
                ledger.fees, totals.accrued_micros
            ));
        }
        if ledger.withdrawn != totals.withdrawn_micros {
            problems.push(format!(
                "app {id}: {} µ$ of withdrawals credited but {} µ$ withdrawn",
                ledger.withdrawn, totals.withdrawn_micros
            ));
        }
    }
    Ok(())
}

fn metadata<'a>(entry: &'a LedgerEntry, name: &str) -> Option<&'a str> {
    entry
        .metadata
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn check_ledger(
    txn: &impl ReadTx,
    org_ids: &HashSet<u128>,
    report: &mut CheckReport,
) -> Result<BTreeMap<u128, AppMoney>, StoreError> {
    let mut apps: BTreeMap<u128, AppMoney> = BTreeMap::new();
    let p = &mut report.problems;
    let rows: Vec<((u128, u64), LedgerEntry)> =
        decode_all(&txn.read_table(LEDGER)?, "ledger", p, |k| k)?;
    report.ledger_rows = rows.len() as u64;

    let mut sums: BTreeMap<u128, (i128, u64)> = BTreeMap::new();
    let mut keys_seen: HashMap<String, (u128, u64)> = HashMap::new();
    // Rows come in key order: per organization, in sequence order.
    for ((org, seq), entry) in &rows {
        let (running, last_seq) = sums.entry(*org).or_insert((0, 0));
        if entry.organization_id.as_u128() != *org || entry.seq != *seq {
            p.push(format!("ledger row {} stored under another key", entry.id));
        }
        if *seq != *last_seq + 1 {
            p.push(format!(
                "ledger of {} skips from sequence {last_seq} to {seq}",
                Uuid::from_u128(*org)
            ));
        }
        *last_seq = *seq;
        if !entry.kind.accepts(entry.amount_micros) {
            p.push(format!(
                "ledger row {} has the wrong sign for its kind",
                entry.id
            ));
        }
        *running += i128::from(entry.amount_micros);
        if let Some(app) = metadata(entry, "through_app").and_then(|a| a.parse::<Uuid>().ok()) {
            let fee = metadata(entry, "app_fee_micros")
                .and_then(|f| f.parse::<i64>().ok())
                .unwrap_or(0);
            let money = apps.entry(app.as_u128()).or_default();
            money.fees = money.fees.saturating_add(fee);
        }
        if entry.idempotency_key.starts_with("withdraw:")
            && let Some(app) = metadata(entry, "app").and_then(|a| a.parse::<Uuid>().ok())
        {
            let money = apps.entry(app.as_u128()).or_default();
            money.withdrawn = money.withdrawn.saturating_add(entry.amount_micros);
        }
        if *running < 0 {
            p.push(format!(
                "balance of {} goes below zero at row {}",
                Uuid::from_u128(*org),
                entry.id
            ));
        }
        if !org_ids.contains(org) {
            p.push(format!(
                "ledger row {} belongs to no organization",
                entry.id
            ));
        }
        if keys_seen
            .insert(entry.idempotency_key.clone(), (*org, *seq))
            .is_some()
        {
            p.push(format!("idempotency key used twice (row {})", entry.id));
        }
    }

    let mut index = HashMap::new();
    for row in txn.read_table(LEDGER_IDEMPOTENCY)?.iter()? {
        let (key, at) = row?;
        index.insert(key.value().to_string(), at.value());
    }
    if index != keys_seen {
        p.push("ledger idempotency index does not match the rows".into());
    }

    let mut balances = BTreeMap::new();
    for row in txn.read_table(BALANCES)?.iter()? {
        let (org, balance) = row?;
        balances.insert(org.value(), balance.value());
    }
    for (org, (sum, _)) in &sums {
        let stored = balances.get(org).copied().unwrap_or(0);
        if i128::from(stored) != *sum {
            p.push(format!(
                "balance of {} is {stored} but its rows sum to {sum}",
                Uuid::from_u128(*org)
            ));
        }
    }
    for (org, balance) in &balances {
        if !sums.contains_key(org) && *balance != 0 {
            p.push(format!(
                "balance of {} is {balance} with no ledger rows",
                Uuid::from_u128(*org)
            ));
        }
        if *balance < 0 {
            p.push(format!("balance of {} is negative", Uuid::from_u128(*org)));
        }
    }
    Ok(apps)
}
