//! Per-organization request counts by day (schema 2), fed by the batched usage flusher.

use redb::{ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::tables::USAGE_DAILY;
use super::{ReadTx, StoreError};

pub fn add_org_requests(
    txn: &WriteTransaction,
    org: Uuid,
    day: i64,
    count: u64,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(USAGE_DAILY)?;
    let key = (org.as_u128(), day);
    let now = table.get(key)?.map(|g| g.value()).unwrap_or(0);
    table.insert(key, now.saturating_add(count))?;
    Ok(())
}

/// Requests of an organization over the days `from..=to`.
pub fn org_requests_between(
    txn: &impl ReadTx,
    org: Uuid,
    from: i64,
    to: i64,
) -> Result<u64, StoreError> {
    let table = txn.read_table(USAGE_DAILY)?;
    let mut total = 0u64;
    for row in table.range((org.as_u128(), from)..=(org.as_u128(), to))? {
        total = total.saturating_add(row?.1.value());
    }
    Ok(total)
}

/// What the name of a metered aggregate row is. DISK FORMAT: the numbers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The organization's total; the name is empty.
    Total = 0,
    Key = 1,
    App = 2,
    /// `<app id>/<end user id>`.
    EndUser = 3,
    Model = 4,
    /// The route kind, e.g. `chat.completions`.
    Endpoint = 5,
    /// `<app id>/<route kind>`: an app's calls by route (its analytics).
    AppEndpoint = 6,
}

impl Dimension {
    pub const ALL: [Dimension; 7] = [
        Dimension::Total,
        Dimension::Key,
        Dimension::App,
        Dimension::EndUser,
        Dimension::Model,
        Dimension::Endpoint,
        Dimension::AppEndpoint,
    ];

    pub fn from_code(code: u8) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| *d as u8 == code)
    }
}

/// The sums of one aggregate row. DISK FORMAT: field order is part of the encoding.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: i64,
    /// Calls that ended in an error (charged or not).
    pub errors: u64,
}

impl UsageTotals {
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.errors = self.errors.saturating_add(other.errors);
    }
}

/// The key of one aggregate row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeteredKey {
    pub organization: Uuid,
    pub day: i64,
    pub dimension: Dimension,
    pub name: String,
}

pub fn add_metered(
    txn: &WriteTransaction,
    key: &MeteredKey,
    totals: &UsageTotals,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(super::tables::USAGE_METERED)?;
    let at = (
        key.organization.as_u128(),
        key.day,
        key.dimension as u8,
        key.name.as_str(),
    );
    let mut sum: UsageTotals = match table.get(at)? {
        Some(found) => super::codec::decode(found.value())?,
        None => UsageTotals::default(),
    };
    sum.add(totals);
    table.insert(at, super::codec::encode(&sum)?.as_slice())?;
    Ok(())
}

/// Every aggregate row of an organization over the days `from..=to`.
pub fn metered_between(
    txn: &impl ReadTx,
    org: Uuid,
    from: i64,
    to: i64,
) -> Result<Vec<(MeteredKey, UsageTotals)>, StoreError> {
    let table = txn.read_table(super::tables::USAGE_METERED)?;
    let org_id = org.as_u128();
    let mut out = Vec::new();
    for row in table.range((org_id, from, 0u8, "")..(org_id, to.saturating_add(1), 0u8, ""))? {
        let (key, value) = row?;
        let (_, day, code, name) = key.value();
        let Some(dimension) = Dimension::from_code(code) else {
            continue;
        };
        out.push((
            MeteredKey {
                organization: org,
                day,
                dimension,
                name: name.to_string(),
            },
            super::codec::decode(value.value())?,
        ));
    }
    Ok(out)
}

/// One end user of one app (SPEC §10). DISK FORMAT: field order is part of the encoding.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppUserTotals {
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: u64,
    pub cost_micros: i64,
}

impl AppUserTotals {
    pub fn merge(&mut self, other: &AppUserTotals) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.requests = self.requests.saturating_add(other.requests);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
    }
}

/// Adds to an app's end user; answers whether the user is new to the app.
pub fn add_app_user(
    txn: &WriteTransaction,
    app: Uuid,
    user: &str,
    totals: &AppUserTotals,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(super::tables::APP_USERS)?;
    let at = (app.as_u128(), user);
    let (sum, new) = match table.get(at)? {
        Some(found) => {
            let mut sum: AppUserTotals = super::codec::decode(found.value())?;
            sum.merge(totals);
            (sum, false)
        }
        None => (*totals, true),
    };
    table.insert(at, super::codec::encode(&sum)?.as_slice())?;
    Ok(new)
}

/// Requests of `app` (owned by `org`) over the days `from..=to`: its rows by route.
pub fn app_requests_between(
    txn: &impl ReadTx,
    org: Uuid,
    app: Uuid,
    from: i64,
    to: i64,
) -> Result<u64, StoreError> {
    let table = txn.read_table(super::tables::USAGE_METERED)?;
    let (low, high) = (format!("{app}/"), format!("{app}0"));
    let code = Dimension::AppEndpoint as u8;
    let mut total = 0u64;
    for day in from..=to {
        let range =
            (org.as_u128(), day, code, low.as_str())..(org.as_u128(), day, code, high.as_str());
        for row in table.range(range)? {
            let totals: UsageTotals = super::codec::decode(row?.1.value())?;
            total = total.saturating_add(totals.requests);
        }
    }
    Ok(total)
}

/// Every end user of an app.
pub fn app_users(txn: &impl ReadTx, app: Uuid) -> Result<Vec<(String, AppUserTotals)>, StoreError> {
    let table = txn.read_table(super::tables::APP_USERS)?;
    let id = app.as_u128();
    let mut out = Vec::new();
    for row in table.range((id, "")..(id.saturating_add(1), ""))? {
        let (key, value) = row?;
        let (owner, user) = key.value();
        if owner == id {
            out.push((user.to_string(), super::codec::decode(value.value())?));
        }
    }
    Ok(out)
}
