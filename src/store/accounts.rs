//! Wallet accounts (SPEC §3): the first time a wallet is seen it gets an organization
//! `Wallet 0x1234...abcd` (slug `wallet-<address>`), its owner user and, unless the caller says
//! otherwise, the sign-up bonus as one ledger credit. All in the caller's write transaction, and
//! keyed by the wallet index, so two racing first sign-ins make one account and one bonus.

use redb::WriteTransaction;
use uuid::Uuid;

use super::StoreError;
use super::ledger::{EntryKind, LedgerError, NewEntry, post_entry};
use super::orgs::{OrgRecord, Plan, get_org, get_org_by_slug, insert_org};
use super::users::{Role, UserRecord, find_user_by_wallet, insert_user};

/// A wallet, by chain. `key` is its stored form: lowercase hex for EVM, base58 for Solana.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wallet {
    Evm(String),
    Solana(String),
}

impl Wallet {
    pub fn key(&self) -> &str {
        match self {
            Wallet::Evm(k) | Wallet::Solana(k) => k,
        }
    }

    /// `Wallet 0x1234...abcd` (first six and last four characters).
    pub fn organization_name(&self) -> String {
        let key = self.key();
        let head: String = key.chars().take(6).collect();
        let tail: String = key
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("Wallet {head}...{tail}")
    }

    pub fn slug(&self) -> String {
        format!("wallet-{}", self.key().to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletAccount {
    pub user: UserRecord,
    pub organization: OrgRecord,
    pub is_new: bool,
    /// The bonus granted now (0 for an existing account or when disabled).
    pub bonus_micros: i64,
}

/// Whether a newly created account receives the sign-up bonus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bonus {
    Grant(i64),
    None,
}

/// The wallet's existing account, if it has one.
pub fn find_wallet_account(
    txn: &impl super::ReadTx,
    wallet: &Wallet,
) -> Result<Option<WalletAccount>, StoreError> {
    let Some(user) = find_user_by_wallet(txn, wallet.key())? else {
        return Ok(None);
    };
    let organization = get_org(txn, user.organization_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("user {} has no organization", user.id)))?;
    Ok(Some(WalletAccount {
        user,
        organization,
        is_new: false,
        bonus_micros: 0,
    }))
}

pub fn find_or_create_wallet_account(
    txn: &WriteTransaction,
    wallet: &Wallet,
    bonus: Bonus,
    now_millis: i64,
) -> Result<WalletAccount, StoreError> {
    if let Some(account) = find_wallet_account(txn, wallet)? {
        return Ok(account);
    }
    let mut slug = wallet.slug();
    if get_org_by_slug(txn, &slug)?.is_some() {
        // Two Solana addresses equal but for case: keep both, apart.
        slug = format!("{slug}-{}", &Uuid::new_v4().simple().to_string()[..8]);
    }
    let organization = OrgRecord {
        id: Uuid::new_v4(),
        name: wallet.organization_name(),
        slug,
        plan: Plan::Free,
        custom_rate_limit: None,
        is_active: true,
        created_at: now_millis,
        updated_at: now_millis,
    };
    insert_org(txn, &organization)?;
    let (wallet_address, solana_address) = match wallet {
        Wallet::Evm(k) => (Some(k.clone()), None),
        Wallet::Solana(k) => (None, Some(k.clone())),
    };
    let user = UserRecord {
        id: Uuid::new_v4(),
        organization_id: organization.id,
        name: None,
        wallet_address,
        solana_address,
        role: Role::Owner,
        is_active: true,
        created_at: now_millis,
        updated_at: now_millis,
    };
    insert_user(txn, &user)?;
    let bonus_micros = match bonus {
        Bonus::Grant(micros) if micros > 0 => {
            post_entry(
                txn,
                NewEntry {
                    organization_id: organization.id,
                    amount_micros: micros,
                    kind: EntryKind::Credit,
                    description: "Sign-up bonus".into(),
                    idempotency_key: format!("signup-bonus:{}", wallet.key()),
                    metadata: vec![("source".into(), "signup".into())],
                },
                now_millis,
            )
            .map_err(|e| match e {
                LedgerError::Store(s) => s,
                other => StoreError::Corrupt(other.to_string()),
            })?;
            micros
        }
        Bonus::Grant(_) | Bonus::None => 0,
    };
    Ok(WalletAccount {
        user,
        organization,
        is_new: true,
        bonus_micros,
    })
}
