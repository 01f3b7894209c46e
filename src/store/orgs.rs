//! Organizations: the unit that owns users, keys, apps and a credit balance.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{ORG_SLUGS, ORGS};
use super::{ReadTx, StoreError, codec, get_record};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

impl Plan {
    pub const fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "free" => Some(Plan::Free),
            "pro" => Some(Plan::Pro),
            "enterprise" => Some(Plan::Enterprise),
            _ => None,
        }
    }
}

/// Stored organization. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub plan: Plan,
    /// Requests per minute for an enterprise organization; ignored for other plans.
    pub custom_rate_limit: Option<u32>,
    pub is_active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Inserts a new organization; a taken slug is [`StoreError::Conflict`].
pub fn insert_org(txn: &WriteTransaction, org: &OrgRecord) -> Result<(), StoreError> {
    let mut slugs = txn.open_table(ORG_SLUGS)?;
    if slugs.get(org.slug.as_str())?.is_some() {
        return Err(StoreError::Conflict("organization slug"));
    }
    slugs.insert(org.slug.as_str(), org.id.as_u128())?;
    txn.open_table(ORGS)?
        .insert(org.id.as_u128(), codec::encode(org)?.as_slice())?;
    Ok(())
}

/// Rewrites an existing organization (its slug cannot change here).
pub fn update_org(txn: &WriteTransaction, org: &OrgRecord) -> Result<(), StoreError> {
    let mut orgs = txn.open_table(ORGS)?;
    let old: OrgRecord = get_record(&orgs, org.id.as_u128())?
        .ok_or_else(|| StoreError::Corrupt(format!("organization {} vanished", org.id)))?;
    if old.slug != org.slug {
        return Err(StoreError::Corrupt(
            "an organization's slug cannot change".into(),
        ));
    }
    orgs.insert(org.id.as_u128(), codec::encode(org)?.as_slice())?;
    Ok(())
}

pub fn get_org(txn: &impl ReadTx, id: Uuid) -> Result<Option<OrgRecord>, StoreError> {
    get_record(&txn.read_table(ORGS)?, id.as_u128())
}

pub fn get_org_by_slug(txn: &impl ReadTx, slug: &str) -> Result<Option<OrgRecord>, StoreError> {
    let id = txn.read_table(ORG_SLUGS)?.get(slug)?.map(|g| g.value());
    match id {
        Some(id) => get_org(txn, Uuid::from_u128(id)),
        None => Ok(None),
    }
}

/// An organization named by id or by slug, as the CLI accepts it.
pub fn find_org(txn: &impl ReadTx, id_or_slug: &str) -> Result<Option<OrgRecord>, StoreError> {
    match Uuid::parse_str(id_or_slug) {
        Ok(id) => get_org(txn, id),
        Err(_) => get_org_by_slug(txn, id_or_slug),
    }
}

pub fn list_orgs(txn: &impl ReadTx) -> Result<Vec<OrgRecord>, StoreError> {
    let table = txn.read_table(ORGS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, value) = row?;
        out.push(codec::decode(value.value())?);
    }
    Ok(out)
}
