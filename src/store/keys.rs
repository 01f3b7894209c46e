//! API key records. Only `sha256(key)` and the 12-character display prefix are stored; the
//! plaintext exists in memory only while it is being shown once.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{API_KEY_HASHES, API_KEYS, API_KEYS_BY_ORG};
use super::{ReadTx, StoreError, codec, get_record};

/// sha256 of a key or token. Not secret by itself, but `Debug` still prints only a short tag so
/// logs never carry anything that identifies a credential.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Live,
    Test,
}

impl KeyType {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyType::Live => "live",
            KeyType::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        match s {
            "live" => Some(KeyType::Live),
            "test" => Some(KeyType::Test),
            _ => None,
        }
    }
}

/// Stored API key. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    /// Set for an app's own key (scoped to that app).
    pub app_id: Option<Uuid>,
    pub name: String,
    pub description: Option<String>,
    /// The first 12 characters of the plaintext, for people to recognise a key.
    pub key_prefix: String,
    pub key_hash: KeyHash,
    pub key_type: KeyType,
    /// Normalised permission names; empty means unrestricted.
    pub permissions: Vec<String>,
    /// Requests per minute; `None` means the organization's plan default.
    pub rate_limit: Option<u32>,
    pub is_active: bool,
    pub usage_count: u64,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: Option<i64>,
}

impl ApiKeyRecord {
    /// A new, active, unrestricted key record with no usage yet.
    pub fn fresh(
        organization_id: Uuid,
        user_id: Uuid,
        name: String,
        key_type: KeyType,
        key_prefix: String,
        key_hash: KeyHash,
        now_millis: i64,
    ) -> ApiKeyRecord {
        ApiKeyRecord {
            id: Uuid::new_v4(),
            organization_id,
            user_id,
            app_id: None,
            name,
            description: None,
            key_prefix,
            key_hash,
            key_type,
            permissions: Vec::new(),
            rate_limit: None,
            is_active: true,
            usage_count: 0,
            last_used_at: None,
            created_at: now_millis,
            updated_at: now_millis,
            expires_at: None,
        }
    }
}

/// Inserts a key and its hash index; a hash already registered is a conflict.
pub fn insert_key(txn: &WriteTransaction, key: &ApiKeyRecord) -> Result<(), StoreError> {
    let mut hashes = txn.open_table(API_KEY_HASHES)?;
    if hashes.get(&key.key_hash.0)?.is_some() {
        return Err(StoreError::Conflict("API key"));
    }
    hashes.insert(&key.key_hash.0, key.id.as_u128())?;
    txn.open_table(API_KEYS_BY_ORG)?
        .insert((key.organization_id.as_u128(), key.id.as_u128()), ())?;
    txn.open_table(API_KEYS)?
        .insert(key.id.as_u128(), codec::encode(key)?.as_slice())?;
    Ok(())
}

/// Rewrites a key; when its hash changed (regeneration) the index follows in the same transaction.
pub fn update_key(txn: &WriteTransaction, key: &ApiKeyRecord) -> Result<(), StoreError> {
    let mut keys = txn.open_table(API_KEYS)?;
    let old: ApiKeyRecord = get_record(&keys, key.id.as_u128())?
        .ok_or_else(|| StoreError::Corrupt(format!("API key {} vanished", key.id)))?;
    if old.key_hash != key.key_hash {
        let mut hashes = txn.open_table(API_KEY_HASHES)?;
        if hashes.get(&key.key_hash.0)?.is_some() {
            return Err(StoreError::Conflict("API key"));
        }
        hashes.remove(&old.key_hash.0)?;
        hashes.insert(&key.key_hash.0, key.id.as_u128())?;
    }
    if old.organization_id != key.organization_id {
        let mut by_org = txn.open_table(API_KEYS_BY_ORG)?;
        by_org.remove((old.organization_id.as_u128(), key.id.as_u128()))?;
        by_org.insert((key.organization_id.as_u128(), key.id.as_u128()), ())?;
    }
    keys.insert(key.id.as_u128(), codec::encode(key)?.as_slice())?;
    Ok(())
}

/// Deletes a key and its hash index; answers the deleted record, if there was one.
pub fn delete_key(txn: &WriteTransaction, id: Uuid) -> Result<Option<ApiKeyRecord>, StoreError> {
    let old: Option<ApiKeyRecord> = {
        let mut keys = txn.open_table(API_KEYS)?;
        let removed = keys.remove(id.as_u128())?;
        match removed {
            Some(guard) => Some(codec::decode(guard.value())?),
            None => None,
        }
    };
    if let Some(old) = &old {
        txn.open_table(API_KEY_HASHES)?.remove(&old.key_hash.0)?;
        txn.open_table(API_KEYS_BY_ORG)?
            .remove((old.organization_id.as_u128(), id.as_u128()))?;
    }
    Ok(old)
}

pub fn get_key(txn: &impl ReadTx, id: Uuid) -> Result<Option<ApiKeyRecord>, StoreError> {
    get_record(&txn.read_table(API_KEYS)?, id.as_u128())
}

/// The only way a presented key is found: by the hash of what was presented.
pub fn find_key_by_hash(
    txn: &impl ReadTx,
    hash: &KeyHash,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let id = txn
        .read_table(API_KEY_HASHES)?
        .get(&hash.0)?
        .map(|g| g.value());
    match id {
        Some(id) => get_key(txn, Uuid::from_u128(id)),
        None => Ok(None),
    }
}

pub fn list_keys(txn: &impl ReadTx) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let table = txn.read_table(API_KEYS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, value) = row?;
        out.push(codec::decode(value.value())?);
    }
    Ok(out)
}

/// An organization's keys, newest first: a range of the organization index, then each record.
pub fn list_keys_of_org(txn: &impl ReadTx, org: Uuid) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let org = org.as_u128();
    let index = txn.read_table(API_KEYS_BY_ORG)?;
    let keys_table = txn.read_table(API_KEYS)?;
    let mut keys = Vec::new();
    for row in index.range((org, 0)..=(org, u128::MAX))? {
        let (entry, _) = row?;
        let (_, id) = entry.value();
        let key: ApiKeyRecord = get_record(&keys_table, id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("the organization index names a missing key {id}"))
        })?;
        keys.push(key);
    }
    keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
    Ok(keys)
}
