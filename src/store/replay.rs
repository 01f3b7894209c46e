//! Single-use marks of wallet-signature requests (SPEC §6), kept in redb so a replay is refused
//! after a restart too. A mark is recorded in the same write transaction that finds (or makes)
//! the wallet's account, so of two racing requests with one signature exactly one commits.

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::tables::WALLET_REPLAY;

/// Records `mark` for a request signed at `timestamp_millis`; `false` if it was already there.
/// Drops every mark signed before `prune_before_millis` (they are outside the window anyway).
pub fn record_mark(
    txn: &WriteTransaction,
    timestamp_millis: i64,
    mark: &[u8; 32],
    prune_before_millis: i64,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(WALLET_REPLAY)?;
    table.retain_in(..(prune_before_millis, &[0u8; 32]), |_, _| false)?;
    if table.get((timestamp_millis, mark))?.is_some() {
        return Ok(false);
    }
    table.insert((timestamp_millis, mark), ())?;
    Ok(true)
}
