//! The key-lookup cache: sha256(key) → the key with its organization and user, so a valid key
//! costs no database read after its first use. Every change to a key, an organization or a user
//! invalidates after its commit, so the next request sees it.
//!
//! A lookup that read the database before an invalidation must not put its stale answer back
//! afterwards: inserts carry the epoch they started in and are dropped if an invalidation came
//! between (the check and the insert happen under the same lock as the invalidation).
//!
//! Invalidations run as on-commit hooks of the write that changed the key
//! ([`crate::store::Store::write_blocking_hooked`]), inside the blocking task, so a request that
//! is dropped after its commit still invalidates. A poisoned lock never skips one. Entries also
//! expire [`KEY_CACHE_TTL`] after they were read, whether used or not: a backstop, never the
//! mechanism.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::keys::{ApiKeyRecord, KeyHash};
use crate::store::orgs::OrgRecord;
use crate::store::users::UserRecord;

/// Who a credential speaks for, as one immutable snapshot: the user, the organization and,
/// for an API key, the key.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Option<ApiKeyRecord>,
    pub organization: OrgRecord,
    pub user: UserRecord,
    /// The `whoami` answer for this snapshot, made on first use. It lives and dies with the
    /// snapshot, so it is invalidated exactly when the key's cache entry is.
    pub whoami: std::sync::OnceLock<bytes::Bytes>,
    /// The rate-limit bucket this credential draws from, fetched from the limiter once per
    /// snapshot. The limiter keeps the bucket itself: every snapshot of a key (the cache's
    /// time-to-live renews them at least every minute, well within a bucket's idle expiry) gets
    /// the same one, so this only saves the limiter's map lookup.
    pub bucket: std::sync::OnceLock<crate::limits::SharedBucket>,
}

impl Identity {
    pub fn new(key: Option<ApiKeyRecord>, organization: OrgRecord, user: UserRecord) -> Identity {
        Identity {
            key,
            organization,
            user,
            whoami: std::sync::OnceLock::new(),
            bucket: std::sync::OnceLock::new(),
        }
    }
}

/// How long a cached lookup may be served before it is read again (a backstop only).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// Cheap to clone: clones share one cache.
#[derive(Clone)]
pub struct KeyCache {
    entries: moka::sync::Cache<KeyHash, Arc<Identity>>,
    epoch: Arc<Mutex<u64>>,
}

impl KeyCache {
    pub fn new(capacity: u64) -> KeyCache {
        KeyCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(KEY_CACHE_TTL)
                .build(),
            epoch: Arc::new(Mutex::new(0)),
        }
    }

    pub fn get(&self, hash: &KeyHash) -> Option<Arc<Identity>> {
        self.entries.get(hash)
    }

    /// The epoch lock; a panic elsewhere while holding it does not stop invalidations (the
    /// counter is a plain integer, valid whatever was interrupted).
    fn lock_epoch(&self) -> std::sync::MutexGuard<'_, u64> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The epoch to pass to [`KeyCache::insert_if_current`]; read it before the database.
    pub fn epoch(&self) -> u64 {
        *self.lock_epoch()
    }

    pub fn insert_if_current(&self, hash: KeyHash, identity: Arc<Identity>, epoch: u64) {
        let current = self.lock_epoch();
        if *current == epoch {
            self.entries.insert(hash, identity);
        }
    }

    /// Forgets one key. Call after the commit that changed it (an on-commit hook).
    pub fn invalidate(&self, hash: &KeyHash) {
        let mut epoch = self.lock_epoch();
        *epoch = epoch.wrapping_add(1);
        self.entries.invalidate(hash);
    }

    /// Forgets every key (an organization or a user changed). Call after the commit.
    pub fn invalidate_all(&self) {
        let mut epoch = self.lock_epoch();
        *epoch = epoch.wrapping_add(1);
        self.entries.invalidate_all();
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
        Arc::new(Identity::new(
            Some(ApiKeyRecord::fresh(
                org,
                user,
                "k".into(),
                KeyType::Live,
                "ek_live_abcd".into(),
                KeyHash([1; 32]),
                0,
            )),
            OrgRecord {
                id: org,
                name: "o".into(),
                slug: "o".into(),
                plan: Plan::Free,
                custom_rate_limit: None,
                is_active: true,
                created_at: 0,
                updated_at: 0,
            },
            UserRecord {
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
        ))
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

    #[test]
    fn a_poisoned_lock_still_invalidates() {
        let cache = KeyCache::new(100);
        let hash = KeyHash([1; 32]);
        cache.insert_if_current(hash, identity(), cache.epoch());
        let poisoner = cache.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.epoch.lock().unwrap();
            panic!("poison the epoch lock");
        })
        .join();
        assert!(cache.epoch.is_poisoned());
        cache.invalidate(&hash);
        assert!(cache.get(&hash).is_none());
    }
}
