//! Browser sessions: only the sha256 of the cookie's token is stored, with its expiry.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keys::KeyHash;
use super::tables::{SESSION_KEYS, SESSIONS};
use super::{ReadTx, StoreError, codec, get_record};

/// Stored session. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_hash: KeyHash,
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
}

pub fn insert_session(txn: &WriteTransaction, session: &SessionRecord) -> Result<(), StoreError> {
    let mut table = txn.open_table(SESSIONS)?;
    if table.get(&session.token_hash.0)?.is_some() {
        return Err(StoreError::Conflict("session token"));
    }
    table.insert(&session.token_hash.0, codec::encode(session)?.as_slice())?;
    Ok(())
}

/// The session for a token hash if it exists and has not expired at `now_millis`.
pub fn find_live_session(
    txn: &impl ReadTx,
    hash: &KeyHash,
    now_millis: i64,
) -> Result<Option<SessionRecord>, StoreError> {
    let found: Option<SessionRecord> = get_record(&txn.read_table(SESSIONS)?, &hash.0)?;
    Ok(found.filter(|s| s.expires_at > now_millis))
}

pub fn delete_session(txn: &WriteTransaction, hash: &KeyHash) -> Result<bool, StoreError> {
    txn.open_table(SESSION_KEYS)?.remove(&hash.0)?;
    Ok(txn.open_table(SESSIONS)?.remove(&hash.0)?.is_some())
}

/// Binds a session to the API key it was exchanged for (SPEC §13).
pub fn bind_session_key(
    txn: &WriteTransaction,
    session: &KeyHash,
    key: &KeyHash,
) -> Result<(), StoreError> {
    txn.open_table(SESSION_KEYS)?.insert(&session.0, &key.0)?;
    Ok(())
}

/// The key a session was exchanged for, if it was.
pub fn session_key(txn: &impl ReadTx, session: &KeyHash) -> Result<Option<KeyHash>, StoreError> {
    Ok(txn
        .read_table(SESSION_KEYS)?
        .get(&session.0)?
        .map(|v| KeyHash(*v.value())))
}

/// Removes every session expired at `now_millis`; answers how many.
pub fn purge_expired_sessions(txn: &WriteTransaction, now_millis: i64) -> Result<u64, StoreError> {
    let mut table = txn.open_table(SESSIONS)?;
    let mut removed = 0;
    table.retain(|_, value| match codec::decode::<SessionRecord>(value) {
        Ok(s) if s.expires_at > now_millis => true,
        Ok(_) => {
            removed += 1;
            false
        }
        // A record we cannot read is left for `check` to report, never silently dropped.
        Err(_) => true,
    })?;
    // Bindings of sessions that are gone.
    let live: std::collections::HashSet<[u8; 32]> = table
        .iter()?
        .filter_map(|row| row.ok().map(|(k, _)| *k.value()))
        .collect();
    txn.open_table(SESSION_KEYS)?
        .retain(|session, _| live.contains(session))?;
    Ok(removed)
}
