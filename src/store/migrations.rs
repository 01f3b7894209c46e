//! Schema versions and the ordered migrations that reach the newest one. They run at open, each
//! in its own write transaction that also records the version it reached, so a crash leaves the
//! database at some whole version. A database newer than this binary is refused.

use redb::{Database, ReadableDatabase, ReadableTable, TableHandle, WriteTransaction};

use super::StoreError;
use super::tables::*;

/// The schema this binary writes. Bump it only by appending to [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 14;

const SCHEMA_VERSION_KEY: &str = "schema_version";

type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` takes a database at version `i` to version `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [
    create_tables_v1,
    add_usage_daily_v2,
    add_wallet_replay_v3,
    add_x402_authorizations_v4,
    index_keys_by_org_v5,
    add_settlements_and_secrets_v6,
    add_usage_metered_v7,
    add_apps_v8,
    add_earnings_v9,
    add_webhooks_v10,
    add_domains_v11,
    add_certificates_v12,
    add_acme_pending_v13,
    add_session_keys_v14,
];

/// Version 1: every table exists (redb creates a table on first open in a write transaction).
fn create_tables_v1(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(ORGS)?;
    txn.open_table(ORG_SLUGS)?;
    txn.open_table(USERS)?;
    txn.open_table(USER_WALLETS)?;
    txn.open_table(API_KEYS)?;
    txn.open_table(API_KEY_HASHES)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(LEDGER)?;
    txn.open_table(LEDGER_IDEMPOTENCY)?;
    txn.open_table(BALANCES)?;
    Ok(())
}

/// Version 2: per-organization daily request counts for the dashboard.
fn add_usage_daily_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USAGE_DAILY)?;
    Ok(())
}

/// Version 3: the single-use marks of wallet-signature requests.
fn add_wallet_replay_v3(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(WALLET_REPLAY)?;
    Ok(())
}

/// Version 4: used x402 authorizations.
fn add_x402_authorizations_v4(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(X402_AUTHORIZATIONS)?;
    Ok(())
}

/// Version 5: the organization → keys index, built from the keys already stored. A record that
/// does not decode is left out (`eliza-cloud check` reports it as unreadable) rather than
/// stopping the start.
fn index_keys_by_org_v5(txn: &WriteTransaction) -> Result<(), StoreError> {
    let keys = txn.open_table(API_KEYS)?;
    let mut index = txn.open_table(API_KEYS_BY_ORG)?;
    for row in keys.iter()? {
        let (id, value) = row?;
        match super::codec::decode::<super::keys::ApiKeyRecord>(value.value()) {
            Ok(key) => {
                index.insert((key.organization_id.as_u128(), id.value()), ())?;
            }
            Err(e) => {
                tracing::warn!(key = id.value(), error = %e, "unreadable API key not indexed")
            }
        }
    }
    Ok(())
}

/// Version 6: the x402 settlement journal, and the server's secrets with the sign-in nonce MAC
/// key, made here once (a stateless nonce is a MAC under it, SPEC §5.1).
fn add_settlements_and_secrets_v6(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(X402_SETTLEMENTS)?;
    let mut secrets = txn.open_table(SECRETS)?;
    if secrets.get(NONCE_KEY_SECRET)?.is_none() {
        let key: [u8; 32] = rand::random();
        secrets.insert(NONCE_KEY_SECRET, key.as_slice())?;
    }
    Ok(())
}

/// Version 7: the metered calls' daily aggregates and the debit batch markers.
fn add_usage_metered_v7(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(USAGE_METERED)?;
    txn.open_table(DEBIT_BATCHES)?;
    Ok(())
}

/// Version 8: apps, their slug, subdomain and organization indexes, and their end users.
fn add_apps_v8(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(APPS)?;
    txn.open_table(APP_SLUGS)?;
    txn.open_table(APP_SUBDOMAINS)?;
    txn.open_table(APPS_BY_ORG)?;
    txn.open_table(APP_USERS)?;
    Ok(())
}

/// Version 9: apps' earnings, by call, by day, their totals and withdrawals.
fn add_earnings_v9(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EARNINGS)?;
    txn.open_table(EARNINGS_DAILY)?;
    txn.open_table(EARNINGS_TOTALS)?;
    txn.open_table(EARNINGS_WITHDRAWALS)?;
    Ok(())
}

/// Version 10: webhook settings, the delivery outbox and its indexes, thresholds sent; apps' end
/// users indexed by last seen and counted, and who used an app in each month (built from the
/// end users and from the end-user rows of `usage_metered_v1`, which are removed).
fn add_webhooks_v10(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(WEBHOOKS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(DELIVERIES_BY_APP)?;
    txn.open_table(DELIVERIES_DUE)?;
    txn.open_table(THRESHOLDS_FIRED)?;
    txn.open_table(APP_USERS_SEEN)?;
    txn.open_table(APP_USER_COUNTS)?;
    txn.open_table(APP_MONTH_USERS)?;
    txn.open_table(APP_MONTH_USER_COUNTS)?;
    let users: Vec<((u128, String), super::usage::AppUserTotals)> = {
        let table = txn.open_table(APP_USERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let (app, user) = k.value();
            out.push(((app, user.to_string()), super::codec::decode(v.value())?));
        }
        out
    };
    {
        let mut seen = txn.open_table(APP_USERS_SEEN)?;
        let mut counts = txn.open_table(APP_USER_COUNTS)?;
        for ((app, user), totals) in &users {
            seen.insert((*app, totals.last_seen, user.as_str()), ())?;
            let n = counts.get(*app)?.map_or(0, |g| g.value());
            counts.insert(*app, n.saturating_add(1))?;
        }
    }
    const END_USER: u8 = super::usage::Dimension::EndUser as u8;
    let end_user_rows: Vec<(u128, i64, String)> = {
        let table = txn.open_table(USAGE_METERED)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, _) = row?;
            let (org, day, code, name) = k.value();
            if code == END_USER {
                out.push((org, day, name.to_string()));
            }
        }
        out
    };
    for (org, day, name) in &end_user_rows {
        if let Some((app, user)) = name.split_once('/')
            && let Ok(app) = app.parse::<uuid::Uuid>()
        {
            super::usage::add_month_user(txn, app, super::usage::month_of_day(*day), user)?;
        }
        txn.open_table(USAGE_METERED)?
            .remove((*org, *day, END_USER, name.as_str()))?;
    }
    Ok(())
}

/// Version 11: apps' custom domains, claimed and verified.
fn add_domains_v11(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(DOMAIN_CLAIMS)?;
    txn.open_table(DOMAINS)?;
    txn.open_table(APP_DOMAINS)?;
    Ok(())
}

/// Version 12: certificates and their keys.
fn add_certificates_v12(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CERTIFICATES)?;
    Ok(())
}

/// Version 13: the ACME issuer's queue.
fn add_acme_pending_v13(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACME_PENDING)?;
    Ok(())
}

/// Version 14: sessions bound to the key they were exchanged for.
fn add_session_keys_v14(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(SESSION_KEYS)?;
    Ok(())
}

/// Name in `secrets_v1` of the sign-in nonce MAC key.
pub const NONCE_KEY_SECRET: &str = "signin_nonce_mac_key";

/// The sign-in nonce MAC key (made by migration 6).
pub fn nonce_key(txn: &impl super::ReadTx) -> Result<[u8; 32], StoreError> {
    let table = txn.read_table(SECRETS)?;
    let found = table.get(NONCE_KEY_SECRET)?;
    found
        .and_then(|v| <[u8; 32]>::try_from(v.value()).ok())
        .ok_or_else(|| StoreError::Corrupt("the sign-in nonce key is missing".into()))
}

/// The version recorded in the database; 0 for a new file.
pub fn stored_version(db: &impl ReadableDatabase) -> Result<u64, StoreError> {
    let txn = db.begin_read()?;
    let exists = txn.list_tables()?.any(|t| t.name() == META.name());
    if !exists {
        return Ok(0);
    }
    let meta = txn.open_table(META)?;
    Ok(meta
        .get(SCHEMA_VERSION_KEY)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Brings the database to [`SCHEMA_VERSION`], or refuses one that is newer.
pub fn migrate(db: &Database) -> Result<(), StoreError> {
    migrate_to(db, SCHEMA_VERSION)
}

/// Runs the migrations up to `target` (tests use it to build an older database).
pub fn migrate_to(db: &Database, target: u64) -> Result<(), StoreError> {
    let found = stored_version(db)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let steps = target.saturating_sub(found) as usize;
    for (index, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(found as usize)
        .take(steps)
    {
        let reached = index as u64 + 1;
        let txn = db.begin_write()?;
        migration(&txn)?;
        txn.open_table(META)?.insert(SCHEMA_VERSION_KEY, reached)?;
        txn.commit()?;
        tracing::info!(version = reached, "database migrated");
    }
    Ok(())
}

/// Key in `meta_v1` set once the operator account exists (see `bootstrap`).
const BOOTSTRAPPED_KEY: &str = "bootstrapped";

/// Whether the first start's operator account was created already.
pub fn is_bootstrapped(txn: &WriteTransaction) -> Result<bool, StoreError> {
    Ok(txn.open_table(META)?.get(BOOTSTRAPPED_KEY)?.is_some())
}

/// Records, inside the transaction that created it, that the operator account exists.
pub fn mark_bootstrapped(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?.insert(BOOTSTRAPPED_KEY, 1)?;
    Ok(())
}

/// Test support: writes a schema version as if a newer binary had migrated the file.
pub fn force_schema_version(db: &Database, version: u64) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(SCHEMA_VERSION_KEY, version)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::orgs::{OrgRecord, Plan, get_org, insert_org};

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_records() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(crate::store::DATABASE_FILE);
        let id = uuid::Uuid::new_v4();
        {
            let db = Database::create(&path).unwrap();
            migrate_to(&db, 1).unwrap();
            assert_eq!(stored_version(&db).unwrap(), 1);
            let txn = db.begin_write().unwrap();
            insert_org(
                &txn,
                &OrgRecord {
                    id,
                    name: "Old".into(),
                    slug: "old".into(),
                    plan: Plan::Pro,
                    custom_rate_limit: None,
                    is_active: true,
                    created_at: 1,
                    updated_at: 1,
                },
            )
            .unwrap();
            txn.commit().unwrap();
            let read = db.begin_read().unwrap();
            assert!(
                read.open_table(USAGE_DAILY).is_err(),
                "v1 has no usage table"
            );
        }
        let store = crate::store::Store::open(tmp.path()).unwrap();
        assert_eq!(stored_version(store.database()).unwrap(), SCHEMA_VERSION);
        let org = store.read(|txn| get_org(txn, id)).unwrap().unwrap();
        assert_eq!(org.name, "Old");
        store
            .read(|txn| {
                txn.open_table(USAGE_DAILY)?;
                Ok::<_, StoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn version_5_indexes_the_keys_a_version_4_database_already_holds() {
        use crate::store::keys::{ApiKeyRecord, KeyHash, KeyType, list_keys_of_org};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(crate::store::DATABASE_FILE);
        let (org, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let key = |org, n: u8| {
            ApiKeyRecord::fresh(
                org,
                uuid::Uuid::new_v4(),
                format!("k{n}"),
                KeyType::Live,
                format!("ek_live_{n:04}"),
                KeyHash([n; 32]),
                i64::from(n),
            )
        };
        let keys = [key(org, 1), key(other, 2), key(org, 3)];
        {
            let db = Database::create(&path).unwrap();
            migrate_to(&db, 4).unwrap();
            // Written as a version-4 binary did: the record and its hash, no organization index.
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(API_KEYS).unwrap();
                let mut hashes = txn.open_table(API_KEY_HASHES).unwrap();
                for k in &keys {
                    let bytes = crate::store::codec::encode(k).unwrap();
                    table.insert(k.id.as_u128(), bytes.as_slice()).unwrap();
                    hashes.insert(&k.key_hash.0, k.id.as_u128()).unwrap();
                }
                let mut orgs = txn.open_table(ORGS).unwrap();
                for id in [org, other] {
                    let record = OrgRecord {
                        id,
                        name: "Old".into(),
                        slug: id.to_string(),
                        plan: Plan::Free,
                        custom_rate_limit: None,
                        is_active: true,
                        created_at: 1,
                        updated_at: 1,
                    };
                    let bytes = crate::store::codec::encode(&record).unwrap();
                    orgs.insert(id.as_u128(), bytes.as_slice()).unwrap();
                }
                let mut slugs = txn.open_table(ORG_SLUGS).unwrap();
                for id in [org, other] {
                    slugs.insert(id.to_string().as_str(), id.as_u128()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = crate::store::Store::open(tmp.path()).unwrap();
        let listed = store.read(|txn| list_keys_of_org(txn, org)).unwrap();
        let names: Vec<_> = listed.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(
            names,
            ["k3", "k1"],
            "newest first, only this organization's"
        );
        let report = store.read(crate::store::check::check_store).unwrap();
        assert!(
            !report
                .problems
                .iter()
                .any(|p| p.contains("organization index")),
            "{:?}",
            report.problems
        );
    }

    #[test]
    fn version_10_indexes_end_users_and_moves_their_monthly_rows() {
        use crate::store::usage::{
            AppUserTotals, Dimension, UsageTotals, app_users_newest, month_user_count,
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(crate::store::DATABASE_FILE);
        let (org, app) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        // 2026-01-05 and 2026-02-03, as days since the epoch.
        let (jan, feb) = (20_458_i64, 20_487_i64);
        {
            let db = Database::create(&path).unwrap();
            migrate_to(&db, 9).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut users = txn.open_table(APP_USERS).unwrap();
                for (name, seen) in [("alice", 5), ("bob", 9)] {
                    let t = AppUserTotals {
                        first_seen: 1,
                        last_seen: seen,
                        requests: 1,
                        cost_micros: 1,
                    };
                    let bytes = crate::store::codec::encode(&t).unwrap();
                    users
                        .insert((app.as_u128(), name), bytes.as_slice())
                        .unwrap();
                }
                let mut metered = txn.open_table(USAGE_METERED).unwrap();
                let bytes = crate::store::codec::encode(&UsageTotals::default()).unwrap();
                let code = Dimension::EndUser as u8;
                for (day, user) in [
                    (jan, "alice"),
                    (jan + 1, "alice"),
                    (jan, "bob"),
                    (feb, "bob"),
                ] {
                    let name = format!("{app}/{user}");
                    metered
                        .insert((org.as_u128(), day, code, name.as_str()), bytes.as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = crate::store::Store::open(tmp.path()).unwrap();
        let (newest, total) = store.read(|t| app_users_newest(t, app, 10)).unwrap();
        assert_eq!(total, 2);
        assert_eq!(newest[0].0, "bob", "most recently seen first");
        assert_eq!(store.read(|t| month_user_count(t, app, 202601)).unwrap(), 2);
        assert_eq!(store.read(|t| month_user_count(t, app, 202602)).unwrap(), 1);
        let left = store
            .read(|t| {
                let table = t.open_table(USAGE_METERED)?;
                Ok::<_, StoreError>(table.iter()?.count())
            })
            .unwrap();
        assert_eq!(left, 0, "the end-user rows moved out of the aggregates");
        let report = store.read(crate::store::check::check_store).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }
}
