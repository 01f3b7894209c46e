//! Usage counters: per-key request counts and `last_used_at`, and per-organization requests per
//! day. They are counted in memory on the hot path and flushed to the store in one transaction at
//! least every second and at shutdown (SPEC §1): a crash loses at most that window of counters.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::store::keys::{get_key, update_key};
use crate::store::usage::add_org_requests;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// Days since the Unix epoch (UTC) of an instant: the key of the daily counters.
pub fn day_of(now: Timestamp) -> i64 {
    now.millis().div_euclid(86_400_000)
}

#[derive(Debug, Default)]
pub struct PendingUsage {
    /// Key id → (requests, latest use in ms).
    pub keys: HashMap<Uuid, (u64, i64)>,
    /// (organization, day) → requests.
    pub org_days: HashMap<(Uuid, i64), u64>,
}

impl PendingUsage {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.org_days.is_empty()
    }
}

#[derive(Debug)]
pub struct UsageRecorder {
    pending: Mutex<PendingUsage>,
    /// How many flushes have completed (observable, so a test can await the periodic flusher
    /// instead of sleeping).
    flushes: tokio::sync::watch::Sender<u64>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        UsageRecorder {
            pending: Mutex::default(),
            flushes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl UsageRecorder {
    /// Watches the number of completed flushes.
    pub fn flushes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.flushes.subscribe()
    }

    /// Counts one authenticated request.
    pub fn record(&self, key: Option<Uuid>, organization: Uuid, now: Timestamp) {
        if let Ok(mut pending) = self.pending.lock() {
            if let Some(key) = key {
                let entry = pending.keys.entry(key).or_insert((0, now.millis()));
                entry.0 += 1;
                entry.1 = entry.1.max(now.millis());
            }
            *pending
                .org_days
                .entry((organization, day_of(now)))
                .or_default() += 1;
        }
    }

    /// Not yet flushed: a key's (requests, latest use).
    pub fn pending_for_key(&self, key: Uuid) -> Option<(u64, i64)> {
        self.pending.lock().ok()?.keys.get(&key).copied()
    }

    /// Not yet flushed: an organization's requests over the days `from..=to`.
    pub fn pending_for_org(&self, organization: Uuid, from: i64, to: i64) -> u64 {
        let Ok(pending) = self.pending.lock() else {
            return 0;
        };
        pending
            .org_days
            .iter()
            .filter(|((org, day), _)| *org == organization && (from..=to).contains(day))
            .map(|(_, count)| *count)
            .sum()
    }

    /// Writes everything counted so far in one transaction. On failure the counts are put back,
    /// so the next flush tries again.
    pub fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let taken = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Ok(()),
        };
        if taken.is_empty() {
            self.flushes.send_modify(|n| *n += 1);
            return Ok(());
        }
        let result = store.write(|txn| {
            for (id, (count, last)) in &taken.keys {
                // A key deleted since its use is simply gone; nothing to count.
                if let Some(mut key) = get_key(txn, *id)? {
                    key.usage_count = key.usage_count.saturating_add(*count);
                    key.last_used_at = Some(key.last_used_at.unwrap_or(*last).max(*last));
                    update_key(txn, &key)?;
                }
            }
            for ((org, day), count) in &taken.org_days {
                add_org_requests(txn, *org, *day, *count)?;
            }
            Ok::<_, StoreError>(())
        });
        if result.is_err()
            && let Ok(mut pending) = self.pending.lock()
        {
            for (id, (count, last)) in taken.keys {
                let entry = pending.keys.entry(id).or_insert((0, last));
                entry.0 += count;
                entry.1 = entry.1.max(last);
            }
            for (key, count) in taken.org_days {
                *pending.org_days.entry(key).or_default() += count;
            }
        }
        if result.is_ok() {
            self.flushes.send_modify(|n| *n += 1);
        }
        result
    }
}
