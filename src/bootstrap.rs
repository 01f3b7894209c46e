//! First start: the Operator organization, its owner user and one unrestricted key, created once
//! in one transaction together with the `bootstrapped` mark, so a later start never creates or
//! prints another key, whatever the environment says then.

use uuid::Uuid;

use crate::auth::api_key::{PlainKey, generate_key};
use crate::store::keys::{ApiKeyRecord, KeyType, insert_key};
use crate::store::migrations::{is_bootstrapped, mark_bootstrapped};
use crate::store::orgs::{OrgRecord, Plan, insert_org};
use crate::store::users::{Role, UserRecord, insert_user};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

pub const OPERATOR_ORG_NAME: &str = "Operator";
pub const OPERATOR_ORG_SLUG: &str = "operator";
pub const BOOTSTRAP_KEY_NAME: &str = "Operator bootstrap key";
/// The operator's own requests-per-minute limit (enterprise plan, custom limit).
pub const OPERATOR_RATE_LIMIT: u32 = 6_000;

#[derive(Debug)]
pub enum BootstrapOutcome {
    /// The database was empty: the operator account now exists. `new_key` is the generated key
    /// to print once; `None` when the provided key was registered instead.
    Created {
        organization_id: Uuid,
        new_key: Option<PlainKey>,
    },
    /// A previous start already did this; nothing was created.
    AlreadyDone,
}

pub fn ensure_operator(
    store: &Store,
    provided: Option<&PlainKey>,
    now: Timestamp,
) -> Result<BootstrapOutcome, StoreError> {
    store.write(|txn| {
        if is_bootstrapped(txn)? {
            return Ok(BootstrapOutcome::AlreadyDone);
        }
        let now = now.millis();
        let org = OrgRecord {
            id: Uuid::new_v4(),
            name: OPERATOR_ORG_NAME.into(),
            slug: OPERATOR_ORG_SLUG.into(),
            plan: Plan::Enterprise,
            custom_rate_limit: Some(OPERATOR_RATE_LIMIT),
            is_active: true,
            created_at: now,
            updated_at: now,
        };
        insert_org(txn, &org)?;
        let user = UserRecord {
            id: Uuid::new_v4(),
            organization_id: org.id,
            name: Some("Operator".into()),
            wallet_address: None,
            solana_address: None,
            role: Role::Owner,
            is_active: true,
            created_at: now,
            updated_at: now,
        };
        insert_user(txn, &user)?;
        let (key, new_key) = match provided {
            Some(key) => (key.clone(), None),
            None => {
                let key = generate_key(KeyType::Live);
                (key.clone(), Some(key))
            }
        };
        let record = ApiKeyRecord::fresh(
            org.id,
            user.id,
            BOOTSTRAP_KEY_NAME.into(),
            key.key_type(),
            key.display_prefix(),
            key.hash(),
            now,
        );
        insert_key(txn, &record)?;
        mark_bootstrapped(txn)?;
        Ok(BootstrapOutcome::Created {
            organization_id: org.id,
            new_key,
        })
    })
}
