//! Users: members of one organization, optionally tied to a wallet.

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{USER_WALLETS, USERS};
use super::{ReadTx, StoreError, codec, get_record};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }
}

/// Stored user. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: Option<String>,
    /// EVM address, lowercase `0x` + 40 hex.
    pub wallet_address: Option<String>,
    /// Solana address, base58.
    pub solana_address: Option<String>,
    pub role: Role,
    pub is_active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserRecord {
    fn wallet_keys(&self) -> impl Iterator<Item = &str> {
        self.wallet_address
            .iter()
            .chain(self.solana_address.iter())
            .map(String::as_str)
    }
}

/// Inserts a user and indexes its wallets; a wallet that already has an account is a conflict.
pub fn insert_user(txn: &WriteTransaction, user: &UserRecord) -> Result<(), StoreError> {
    let mut wallets = txn.open_table(USER_WALLETS)?;
    for wallet in user.wallet_keys() {
        if wallets.get(wallet)?.is_some() {
            return Err(StoreError::Conflict("wallet address"));
        }
        wallets.insert(wallet, user.id.as_u128())?;
    }
    txn.open_table(USERS)?
        .insert(user.id.as_u128(), codec::encode(user)?.as_slice())?;
    Ok(())
}

pub fn update_user(txn: &WriteTransaction, user: &UserRecord) -> Result<(), StoreError> {
    let mut users = txn.open_table(USERS)?;
    let old: UserRecord = get_record(&users, user.id.as_u128())?
        .ok_or_else(|| StoreError::Corrupt(format!("user {} vanished", user.id)))?;
    if old.wallet_address != user.wallet_address || old.solana_address != user.solana_address {
        return Err(StoreError::Corrupt("a user's wallet cannot change".into()));
    }
    users.insert(user.id.as_u128(), codec::encode(user)?.as_slice())?;
    Ok(())
}

pub fn get_user(txn: &impl ReadTx, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
    get_record(&txn.read_table(USERS)?, id.as_u128())
}

pub fn find_user_by_wallet(
    txn: &impl ReadTx,
    wallet: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let id = txn
        .read_table(USER_WALLETS)?
        .get(wallet)?
        .map(|g| g.value());
    match id {
        Some(id) => get_user(txn, Uuid::from_u128(id)),
        None => Ok(None),
    }
}

pub fn list_users(txn: &impl ReadTx) -> Result<Vec<UserRecord>, StoreError> {
    let table = txn.read_table(USERS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, value) = row?;
        out.push(codec::decode(value.value())?);
    }
    Ok(out)
}

pub fn list_users_of_org(txn: &impl ReadTx, org: Uuid) -> Result<Vec<UserRecord>, StoreError> {
    Ok(list_users(txn)?
        .into_iter()
        .filter(|u| u.organization_id == org)
        .collect())
}

/// The organization's first owner, the user that offline-created keys belong to.
pub fn owner_of_org(txn: &impl ReadTx, org: Uuid) -> Result<Option<UserRecord>, StoreError> {
    let mut owners: Vec<UserRecord> = list_users_of_org(txn, org)?
        .into_iter()
        .filter(|u| u.role == Role::Owner)
        .collect();
    owners.sort_by_key(|u| u.created_at);
    Ok(owners.into_iter().next())
}
