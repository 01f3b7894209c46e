//! Apps' custom domains (SPEC §11): claims with their TXT tokens, and verified domains. Several
//! organizations may claim one name, each with its own token; the first to verify owns it and
//! the other claims go; a verified name stays verified until its app deletes it.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{APP_DOMAINS, DOMAIN_CLAIMS, DOMAINS};
use super::{ReadTx, StoreError, codec, get_record};

/// An unverified claim. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DomainClaim {
    pub organization_id: Uuid,
    /// `eliza-verify-<32 hex>`.
    pub token: String,
    pub created_at: i64,
}

/// A verified domain. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DomainRecord {
    pub app_id: Uuid,
    pub organization_id: Uuid,
    pub token: String,
    pub created_at: i64,
    pub verified_at: i64,
}

/// One domain of an app, as its routes show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDomain {
    pub name: String,
    pub token: String,
    pub verified_at: Option<i64>,
    pub created_at: i64,
}

/// The TXT record's name for a domain.
pub fn record_name(domain: &str) -> String {
    format!("_eliza-cloud-verify.{domain}")
}

#[derive(Debug)]
pub enum ClaimError {
    /// Another organization verified the name.
    TakenElsewhere,
    /// Another app of this organization holds it verified.
    OtherApp,
    Store(StoreError),
}

impl From<StoreError> for ClaimError {
    fn from(e: StoreError) -> Self {
        ClaimError::Store(e)
    }
}

pub fn verified(txn: &impl ReadTx, domain: &str) -> Result<Option<DomainRecord>, StoreError> {
    get_record(&txn.read_table(DOMAINS)?, domain)
}

pub fn claim_of(
    txn: &impl ReadTx,
    domain: &str,
    app: Uuid,
) -> Result<Option<DomainClaim>, StoreError> {
    get_record(&txn.read_table(DOMAIN_CLAIMS)?, (domain, app.as_u128()))
}

/// Adds `app`'s claim on `domain` (or answers the one it has); a name verified by another
/// organization, or by another app, is refused.
pub fn add_claim(
    txn: &WriteTransaction,
    app: Uuid,
    organization: Uuid,
    domain: &str,
    now: i64,
) -> Result<AppDomain, ClaimError> {
    if let Some(done) = verified(txn, domain)? {
        if done.organization_id != organization {
            return Err(ClaimError::TakenElsewhere);
        }
        if done.app_id != app {
            return Err(ClaimError::OtherApp);
        }
        return Ok(AppDomain {
            name: domain.to_string(),
            token: done.token,
            verified_at: Some(done.verified_at),
            created_at: done.created_at,
        });
    }
    if let Some(claim) = claim_of(txn, domain, app)? {
        return Ok(AppDomain {
            name: domain.to_string(),
            token: claim.token,
            verified_at: None,
            created_at: claim.created_at,
        });
    }
    let claim = DomainClaim {
        organization_id: organization,
        token: format!("eliza-verify-{:032x}", rand::random::<u128>()),
        created_at: now,
    };
    write_claim(txn, app, domain, &claim)?;
    Ok(AppDomain {
        name: domain.to_string(),
        token: claim.token,
        verified_at: None,
        created_at: now,
    })
}

fn write_claim(
    txn: &WriteTransaction,
    app: Uuid,
    domain: &str,
    claim: &DomainClaim,
) -> Result<(), StoreError> {
    txn.open_table(DOMAIN_CLAIMS)?
        .insert((domain, app.as_u128()), codec::encode(claim)?.as_slice())?;
    txn.open_table(APP_DOMAINS)?
        .insert((app.as_u128(), domain), ())?;
    Ok(())
}

/// Marks `app`'s claim on `domain` verified: the name is the app's, every other claim on it goes.
/// Answers the apps whose claims were removed.
pub fn mark_verified(
    txn: &WriteTransaction,
    app: Uuid,
    domain: &str,
    now: i64,
) -> Result<Vec<Uuid>, StoreError> {
    let Some(claim) = claim_of(txn, domain, app)? else {
        return Ok(Vec::new());
    };
    let mut claims = txn.open_table(DOMAIN_CLAIMS)?;
    let holders: Vec<u128> = claims
        .range((domain, 0u128)..=(domain, u128::MAX))?
        .map(|row| row.map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    let mut index = txn.open_table(APP_DOMAINS)?;
    let mut others = Vec::new();
    for holder in holders {
        claims.remove((domain, holder))?;
        if holder != app.as_u128() {
            index.remove((holder, domain))?;
            others.push(Uuid::from_u128(holder));
        }
    }
    let record = DomainRecord {
        app_id: app,
        organization_id: claim.organization_id,
        token: claim.token,
        created_at: claim.created_at,
        verified_at: now,
    };
    txn.open_table(DOMAINS)?
        .insert(domain, codec::encode(&record)?.as_slice())?;
    Ok(others)
}

/// An app's domains, claimed and verified, by name.
pub fn of_app(txn: &impl ReadTx, app: Uuid) -> Result<Vec<AppDomain>, StoreError> {
    let id = app.as_u128();
    let index = txn.read_table(APP_DOMAINS)?;
    let mut out = Vec::new();
    for row in index.range((id, "")..(id.saturating_add(1), ""))? {
        let (key, _) = row?;
        let (owner, name) = key.value();
        if owner != id {
            continue;
        }
        if let Some(done) = verified(txn, name)?.filter(|d| d.app_id == app) {
            out.push(AppDomain {
                name: name.to_string(),
                token: done.token,
                verified_at: Some(done.verified_at),
                created_at: done.created_at,
            });
        } else if let Some(claim) = claim_of(txn, name, app)? {
            out.push(AppDomain {
                name: name.to_string(),
                token: claim.token,
                verified_at: None,
                created_at: claim.created_at,
            });
        }
    }
    Ok(out)
}

/// Removes `domain` from `app` (its claim, or the verified name, which is then free); answers
/// whether the app had it and whether it was verified.
pub fn remove(txn: &WriteTransaction, app: Uuid, domain: &str) -> Result<Option<bool>, StoreError> {
    let id = app.as_u128();
    let had = txn.open_table(APP_DOMAINS)?.remove((id, domain))?.is_some();
    if !had {
        return Ok(None);
    }
    txn.open_table(DOMAIN_CLAIMS)?.remove((domain, id))?;
    let was_verified = verified(txn, domain)?.is_some_and(|d| d.app_id == app);
    if was_verified {
        txn.open_table(DOMAINS)?.remove(domain)?;
    }
    Ok(Some(was_verified))
}

/// Removes every domain of an app; answers the verified names it served.
pub fn remove_all_of_app(txn: &WriteTransaction, app: Uuid) -> Result<Vec<String>, StoreError> {
    let names: Vec<String> = of_app(txn, app)?.into_iter().map(|d| d.name).collect();
    let mut served = Vec::new();
    for name in names {
        if remove(txn, app, &name)? == Some(true) {
            served.push(name);
        }
    }
    Ok(served)
}

/// Every verified domain and its app (the host map at start).
pub fn all_verified(txn: &impl ReadTx) -> Result<Vec<(String, Uuid)>, StoreError> {
    let mut out = Vec::new();
    for row in txn.read_table(DOMAINS)?.iter()? {
        let (key, value) = row?;
        let record: DomainRecord = codec::decode(value.value())?;
        out.push((key.value().to_string(), record.app_id));
    }
    Ok(out)
}

/// `check`'s part: every claim and verified name is in its app's index and the other way round.
pub fn check(txn: &impl ReadTx) -> Result<Vec<String>, StoreError> {
    use std::collections::BTreeSet;
    let mut problems = Vec::new();
    let mut expected = BTreeSet::new();
    for row in txn.read_table(DOMAIN_CLAIMS)?.iter()? {
        let (key, value) = row?;
        let (name, app) = key.value();
        if codec::decode::<DomainClaim>(value.value()).is_err() {
            problems.push("domain claims: a record does not decode".into());
        }
        expected.insert((app, name.to_string()));
    }
    for row in txn.read_table(DOMAINS)?.iter()? {
        let (key, value) = row?;
        match codec::decode::<DomainRecord>(value.value()) {
            Ok(d) => {
                expected.insert((d.app_id.as_u128(), key.value().to_string()));
            }
            Err(_) => problems.push("domains: a record does not decode".into()),
        }
    }
    let mut index = BTreeSet::new();
    for row in txn.read_table(APP_DOMAINS)?.iter()? {
        let (key, _) = row?;
        let (app, name) = key.value();
        index.insert((app, name.to_string()));
    }
    if index != expected {
        problems.push("app domain index does not match the claims and verified domains".into());
    }
    Ok(problems)
}
