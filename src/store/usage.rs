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
