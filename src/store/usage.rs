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
    /// `<app id>/<end user id>`. Written by schema 8 and 9 only: schema 10 keeps who used an app
    /// in a month in `app_month_users_v1` instead (and its migration moved these rows there).
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

/// Adds to an app's end user, keeping the last-seen index and the app's count; answers whether
/// the user is new to the app.
pub fn add_app_user(
    txn: &WriteTransaction,
    app: Uuid,
    user: &str,
    totals: &AppUserTotals,
) -> Result<bool, StoreError> {
    use super::tables::{APP_USER_COUNTS, APP_USERS, APP_USERS_SEEN};
    let id = app.as_u128();
    let mut table = txn.open_table(APP_USERS)?;
    let mut seen = txn.open_table(APP_USERS_SEEN)?;
    let at = (id, user);
    let found: Option<AppUserTotals> = match table.get(at)? {
        Some(g) => Some(super::codec::decode(g.value())?),
        None => None,
    };
    let (sum, new) = match found {
        Some(mut sum) => {
            seen.remove((id, sum.last_seen, user))?;
            sum.merge(totals);
            (sum, false)
        }
        None => (*totals, true),
    };
    table.insert(at, super::codec::encode(&sum)?.as_slice())?;
    seen.insert((id, sum.last_seen, user), ())?;
    if new {
        let mut counts = txn.open_table(APP_USER_COUNTS)?;
        let n = counts.get(id)?.map_or(0, |g| g.value());
        counts.insert(id, n.saturating_add(1))?;
    }
    Ok(new)
}

/// One app end user's totals.
pub fn app_user(
    txn: &impl ReadTx,
    app: Uuid,
    user: &str,
) -> Result<Option<AppUserTotals>, StoreError> {
    match txn
        .read_table(super::tables::APP_USERS)?
        .get((app.as_u128(), user))?
    {
        Some(g) => Ok(Some(super::codec::decode(g.value())?)),
        None => Ok(None),
    }
}

/// An app's end users, most recently seen first: the first `take`, and how many there are.
pub fn app_users_newest(
    txn: &impl ReadTx,
    app: Uuid,
    take: usize,
) -> Result<(Vec<(String, AppUserTotals)>, u64), StoreError> {
    use super::tables::{APP_USER_COUNTS, APP_USERS, APP_USERS_SEEN};
    let id = app.as_u128();
    let seen = txn.read_table(APP_USERS_SEEN)?;
    let users = txn.read_table(APP_USERS)?;
    let mut out = Vec::new();
    for row in seen
        .range((id, i64::MIN, "")..(id.saturating_add(1), i64::MIN, ""))?
        .rev()
    {
        if out.len() >= take {
            break;
        }
        let (key, _) = row?;
        let (owner, _, user) = key.value();
        if owner != id {
            continue;
        }
        if let Some(g) = users.get((id, user))? {
            out.push((user.to_string(), super::codec::decode(g.value())?));
        }
    }
    let total = txn
        .read_table(APP_USER_COUNTS)?
        .get(id)?
        .map_or(0, |g| g.value());
    Ok((out, total))
}

/// Marks `user` as a user of `app` in `month` (YYYYMM); answers whether that is new.
pub fn add_month_user(
    txn: &WriteTransaction,
    app: Uuid,
    month: u32,
    user: &str,
) -> Result<bool, StoreError> {
    use super::tables::{APP_MONTH_USER_COUNTS, APP_MONTH_USERS};
    let id = app.as_u128();
    let mut users = txn.open_table(APP_MONTH_USERS)?;
    if users.get((id, month, user))?.is_some() {
        return Ok(false);
    }
    users.insert((id, month, user), ())?;
    let mut counts = txn.open_table(APP_MONTH_USER_COUNTS)?;
    let n = counts.get((id, month))?.map_or(0, |g| g.value());
    counts.insert((id, month), n.saturating_add(1))?;
    Ok(true)
}

/// Whether `user` used `app` in `month`, and how many did.
pub fn month_user_known(
    txn: &impl ReadTx,
    app: Uuid,
    month: u32,
    user: &str,
) -> Result<bool, StoreError> {
    Ok(txn
        .read_table(super::tables::APP_MONTH_USERS)?
        .get((app.as_u128(), month, user))?
        .is_some())
}

pub fn month_user_count(txn: &impl ReadTx, app: Uuid, month: u32) -> Result<u64, StoreError> {
    Ok(txn
        .read_table(super::tables::APP_MONTH_USER_COUNTS)?
        .get((app.as_u128(), month))?
        .map_or(0, |g| g.value()))
}

/// The month (YYYYMM) of a day since the epoch.
pub fn month_of_day(day: i64) -> u32 {
    let (year, month, _) = crate::time::civil::civil_from_days(day);
    u32::try_from(year)
        .unwrap_or(0)
        .saturating_mul(100)
        .saturating_add(month)
}

/// Removes everything kept about an app's end users (its usage rows stay).
pub fn delete_app_users(txn: &WriteTransaction, app: Uuid) -> Result<(), StoreError> {
    use super::tables::{
        APP_MONTH_USER_COUNTS, APP_MONTH_USERS, APP_USER_COUNTS, APP_USERS, APP_USERS_SEEN,
    };
    let id = app.as_u128();
    let next = id.saturating_add(1);
    let mut users = txn.open_table(APP_USERS)?;
    let names: Vec<String> = users
        .range((id, "")..(next, ""))?
        .map(|row| row.map(|(k, _)| k.value().1.to_string()))
        .collect::<Result<_, _>>()?;
    for name in &names {
        users.remove((id, name.as_str()))?;
    }
    let mut seen = txn.open_table(APP_USERS_SEEN)?;
    let rows: Vec<(i64, String)> = seen
        .range((id, i64::MIN, "")..(next, i64::MIN, ""))?
        .map(|row| row.map(|(k, _)| (k.value().1, k.value().2.to_string())))
        .collect::<Result<_, _>>()?;
    for (at, name) in rows {
        seen.remove((id, at, name.as_str()))?;
    }
    txn.open_table(APP_USER_COUNTS)?.remove(id)?;
    let mut month_users = txn.open_table(APP_MONTH_USERS)?;
    let rows: Vec<(u32, String)> = month_users
        .range((id, 0, "")..(next, 0, ""))?
        .map(|row| row.map(|(k, _)| (k.value().1, k.value().2.to_string())))
        .collect::<Result<_, _>>()?;
    let mut months = std::collections::BTreeSet::new();
    for (month, name) in rows {
        month_users.remove((id, month, name.as_str()))?;
        months.insert(month);
    }
    let mut counts = txn.open_table(APP_MONTH_USER_COUNTS)?;
    for month in months {
        counts.remove((id, month))?;
    }
    Ok(())
}

/// `check`'s part: the end-user indexes and counts agree with the end users.
pub fn check_app_users(txn: &impl ReadTx) -> Result<Vec<String>, StoreError> {
    use super::tables::{
        APP_MONTH_USER_COUNTS, APP_MONTH_USERS, APP_USER_COUNTS, APP_USERS, APP_USERS_SEEN,
    };
    use std::collections::{BTreeMap, BTreeSet};
    let mut problems = Vec::new();
    let mut expected_seen = BTreeSet::new();
    let mut counts: BTreeMap<u128, u64> = BTreeMap::new();
    for row in txn.read_table(APP_USERS)?.iter()? {
        let (key, value) = row?;
        let (app, user) = key.value();
        match super::codec::decode::<AppUserTotals>(value.value()) {
            Ok(t) => {
                expected_seen.insert((app, t.last_seen, user.to_string()));
                *counts.entry(app).or_default() += 1;
            }
            Err(e) => problems.push(format!("app end users: a record does not decode: {e}")),
        }
    }
    let mut seen = BTreeSet::new();
    for row in txn.read_table(APP_USERS_SEEN)?.iter()? {
        let (key, _) = row?;
        let (a, t, u) = key.value();
        seen.insert((a, t, u.to_string()));
    }
    if seen != expected_seen {
        problems.push("app end users' last-seen index does not match the end users".into());
    }
    let mut stored: BTreeMap<u128, u64> = BTreeMap::new();
    for row in txn.read_table(APP_USER_COUNTS)?.iter()? {
        let (k, v) = row?;
        if v.value() != 0 {
            stored.insert(k.value(), v.value());
        }
    }
    if stored != counts {
        problems.push("app end-user counts do not match the end users".into());
    }
    let mut month_counts: BTreeMap<(u128, u32), u64> = BTreeMap::new();
    for row in txn.read_table(APP_MONTH_USERS)?.iter()? {
        let (key, _) = row?;
        let (a, m, _) = key.value();
        *month_counts.entry((a, m)).or_default() += 1;
    }
    let mut stored_months: BTreeMap<(u128, u32), u64> = BTreeMap::new();
    for row in txn.read_table(APP_MONTH_USER_COUNTS)?.iter()? {
        let (k, v) = row?;
        stored_months.insert(k.value(), v.value());
    }
    if stored_months != month_counts {
        problems.push("apps' monthly end-user counts do not match their end users".into());
    }
    Ok(problems)
}

/// Aggregate rows of `org` over the days `from..=to` of the given dimensions only (a range per
/// day and dimension: the other dimensions' rows are never read).
pub fn metered_dims_between(
    txn: &impl ReadTx,
    org: Uuid,
    from: i64,
    to: i64,
    dims: &[Dimension],
    name_prefix: Option<&str>,
) -> Result<Vec<(MeteredKey, UsageTotals)>, StoreError> {
    let table = txn.read_table(super::tables::USAGE_METERED)?;
    let org_id = org.as_u128();
    let (low, high) = match name_prefix {
        Some(p) => (p.to_string(), format!("{p}\u{10ffff}")),
        None => (String::new(), String::new()),
    };
    let mut out = Vec::new();
    for day in from..=to {
        for dim in dims {
            let code = *dim as u8;
            let range = match name_prefix {
                Some(_) => table
                    .range((org_id, day, code, low.as_str())..(org_id, day, code, high.as_str()))?,
                None => table
                    .range((org_id, day, code, "")..(org_id, day, code.saturating_add(1), ""))?,
            };
            for row in range {
                let (key, value) = row?;
                let (_, day, code, name) = key.value();
                if Dimension::from_code(code) != Some(*dim) {
                    continue;
                }
                out.push((
                    MeteredKey {
                        organization: org,
                        day,
                        dimension: *dim,
                        name: name.to_string(),
                    },
                    super::codec::decode(value.value())?,
                ));
            }
        }
    }
    Ok(out)
}
