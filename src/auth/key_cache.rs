//! The key-lookup cache: sha256(key) → the key with its organization and user, so a valid key
//! costs no database read after its first use. Every change to a key, an organization or a user
//! invalidates after its commit, so the next request sees it.
//!
//! A lookup that read the database before an invalidation must not put its stale answer back
//! afterwards: inserts carry the epoch they started in and are dropped if an invalidation came
//! between (the check and the insert happen under the same lock as the invalidation).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::keys::{ApiKeyRecord, KeyHash};
use crate::store::orgs::OrgRecord;
use crate::store::users::UserRecord;

/// Who a credential speaks for, as one immutable snapshot: the user, the organization and,
/// for an API key, the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key: Option<ApiKeyRecord>,
    pub organization: OrgRecord,
    pub user: UserRecord,
}

pub struct KeyCache {
    entries: moka::sync::Cache<KeyHash, Arc<Identity>>,
    epoch: Mutex<u64>,
}

impl KeyCache {
    pub fn new(capacity: u64) -> KeyCache {
        KeyCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            epoch: Mutex::new(0),
        }
    }

    pub fn get(&self, hash: &KeyHash) -> Option<Arc<Identity>> {
        self.entries.get(hash)
    }

    /// The epoch to pass to [`KeyCache::insert_if_current`]; read it before the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.lock().map(|e| *e).unwrap_or(u64::MAX)
    }

    pub fn insert_if_current(&self, hash: KeyHash, identity: Arc<Identity>, epoch: u64) {
        if let Ok(current) = self.epoch.lock()
            && *current == epoch
        {
            self.entries.insert(hash, identity);
        }
    }

    /// Forgets one key. Call after the commit that changed it.
    pub fn invalidate(&self, hash: &KeyHash) {
        if let Ok(mut epoch) = self.epoch.lock() {
            *epoch += 1;
            self.entries.invalidate(hash);
        }
    }

    /// Forgets every key (an organization or a user changed). Call after the commit.
    pub fn invalidate_all(&self) {
        if let Ok(mut epoch) = self.epoch.lock() {
            *epoch += 1;
            self.entries.invalidate_all();
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::KeyType;
    use crate::store::orgs::Plan;
    use crate::store::users::Role;
    use uuid::Uuid;

    fn identity() -> Arc<Identity> {
        let org = Uuid::new_v4();
        let user = Uuid::new_v4();
        Arc::new(Identity {
            key: Some(ApiKeyRecord::fresh(
                org,
                user,
                "k".into(),
                KeyType::Live,
                "ek_live_abcd".into(),
                KeyHash([1; 32]),
                0,
            )),
            organization: OrgRecord {
                id: org,
                name: "o".into(),
                slug: "o".into(),
                plan: Plan::Free,
                custom_rate_limit: None,
                is_active: true,
                created_at: 0,
                updated_at: 0,
            },
            user: UserRecord {
                id: user,
                organization_id: org,
                name: None,
                wallet_address: None,
                solana_address: None,
                role: Role::Owner,
                is_active: true,
                created_at: 0,
                updated_at: 0,
            },
        })
    }

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_cached() {
        let cache = KeyCache::new(100);
        let hash = KeyHash([1; 32]);
        let before = cache.epoch();
        // ... the database read happens here, then the key is revoked and invalidated ...
        cache.invalidate(&hash);
        cache.insert_if_current(hash, identity(), before);
        assert!(cache.get(&hash).is_none());
        let now = cache.epoch();
        cache.insert_if_current(hash, identity(), now);
        assert!(cache.get(&hash).is_some());
        cache.invalidate_all();
        assert!(cache.get(&hash).is_none());
    }
}
