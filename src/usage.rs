//! Usage counters: per-key request counts and `last_used_at`, and per-organization requests per
//! day. They are counted in memory on the hot path and flushed to the store in one transaction at
//! least every second and at shutdown (SPEC §1): a crash loses at most that window of counters.

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::store::keys::{get_key, update_key};
use crate::store::usage::{
    AppUserTotals, Dimension, MeteredKey, UsageTotals, add_app_user, add_metered, add_org_requests,
};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// Days since the Unix epoch (UTC) of an instant: the key of the daily counters.
pub fn day_of(now: Timestamp) -> i64 {
    now.millis().div_euclid(86_400_000)
}

/// Failed calls of apps kept between two flushes at most (a failing upstream under load must not
/// grow memory): past it, `error.occurred` events of that second are dropped.
const MAX_PENDING_FAILURES: usize = 10_000;

#[derive(Debug, Default)]
pub struct PendingUsage {
    /// Key id → (requests, latest use in ms).
    pub keys: HashMap<Uuid, (u64, i64)>,
    /// (organization, day) → requests.
    pub org_days: HashMap<(Uuid, i64), u64>,
    /// The metered calls' aggregates (SPEC §9), by organization, day and dimension.
    pub metered: HashMap<MeteredKey, UsageTotals>,
    /// (app, end user) → first and last seen, requests and cost.
    pub app_users: HashMap<(Uuid, String), AppUserTotals>,
    /// Failed calls of apps, for their `error.occurred` webhooks.
    pub app_failures: Vec<AppFailure>,
    /// The latest metered call's time (ms): the time of the events this usage gives rise to.
    pub latest_at: i64,
    /// (app, month as YYYYMM, end user): who used an app in a month (its `uniqueUsers`).
    pub month_users: std::collections::HashSet<(Uuid, u32, String)>,
}

impl PendingUsage {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.org_days.is_empty()
            && self.metered.is_empty()
            && self.app_users.is_empty()
            && self.app_failures.is_empty()
            && self.month_users.is_empty()
    }
}

/// One metered call, as the usage tables count it (SPEC §9's usage records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredEvent {
    pub organization: Uuid,
    pub key: Option<Uuid>,
    pub app: Option<Uuid>,
    /// A call through someone's app (`X-App-Id`): the app's owner, under whom the app's
    /// analytics and end users are kept (the caller's own rows have no app dimension).
    pub app_owner: Option<Uuid>,
    /// The app's end user (SPEC §10), with `app`.
    pub end_user: Option<String>,
    /// The route kind: `chat.completions`, `embeddings` or `images.generations`.
    pub endpoint: &'static str,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: i64,
    pub ok: bool,
    pub at: Timestamp,
    /// A call that failed: how it was answered (an app's `error.occurred`, SPEC §10).
    pub failure: Option<Failure>,
}

/// How a failed metered call was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub code: &'static str,
    pub request_id: String,
}

/// An app's failed call waiting for the flush to become its `error.occurred` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFailure {
    pub app: Uuid,
    pub failure: Failure,
    pub at: i64,
}

impl MeteredEvent {
    /// The aggregate rows this event adds to.
    fn keys(&self) -> Vec<MeteredKey> {
        let day = day_of(self.at);
        let key = |dimension, name: String| MeteredKey {
            organization: self.organization,
            day,
            dimension,
            name,
        };
        let mut keys = vec![
            key(Dimension::Total, String::new()),
            key(Dimension::Model, self.model.clone()),
            key(Dimension::Endpoint, self.endpoint.to_string()),
        ];
        if let Some(id) = self.key {
            keys.push(key(Dimension::Key, id.to_string()));
        }
        if let Some(app) = self.app {
            // The app's analytics are its owner's rows: for an app-key call the owner is the
            // caller (who also sees it under `byApp`), for a call through the app it is not.
            let owner = self.app_owner.unwrap_or(self.organization);
            let owned = |dimension, name: String| MeteredKey {
                organization: owner,
                day,
                dimension,
                name,
            };
            if self.app_owner.is_none() {
                keys.push(key(Dimension::App, app.to_string()));
            }
            keys.push(owned(
                Dimension::AppEndpoint,
                format!("{app}/{}", self.endpoint),
            ));
        }
        keys
    }

    fn totals(&self) -> UsageTotals {
        UsageTotals {
            requests: 1,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micros: self.cost_micros,
            errors: u64::from(!self.ok),
        }
    }
}

/// The webhook events (SPEC §10) that the usage being flushed gives rise to, queued in the
/// flush's own transaction: `user.created` for an end user new to its app, `usage.threshold`
/// for each of an app's thresholds its monthly requests reached now (once per month), and
/// `error.occurred` for each failed call. `enqueue` writes nothing for an app without a webhook
/// or not subscribed.
fn app_events(
    txn: &redb::WriteTransaction,
    taken: &PendingUsage,
    new_users: &[(Uuid, &str, i64)],
) -> Result<(), StoreError> {
    use crate::store::webhooks::{enqueue, get_webhook, mark_threshold};
    use serde_json::json;
    for (app, user, at) in new_users {
        enqueue(
            txn,
            *app,
            "user.created",
            json!({"appId": app, "userId": user}),
            *at,
        )?;
    }
    for f in &taken.app_failures {
        enqueue(
            txn,
            f.app,
            "error.occurred",
            json!({"appId": f.app, "requestId": f.failure.request_id, "status": f.failure.status,
                   "code": f.failure.code}),
            f.at,
        )?;
    }
    // Requests added now per (owner, app, month), from the apps' rows by route.
    let mut added: HashMap<(Uuid, Uuid, i64, u32), u64> = HashMap::new();
    for (key, totals) in &taken.metered {
        if key.dimension != crate::store::usage::Dimension::AppEndpoint {
            continue;
        }
        let Some(app) = key
            .name
            .split('/')
            .next()
            .and_then(|a| a.parse::<Uuid>().ok())
        else {
            continue;
        };
        let (year, month, _) = crate::time::civil::civil_from_days(key.day);
        *added
            .entry((key.organization, app, year, month))
            .or_default() += totals.requests;
    }
    for ((org, app, year, month), count) in added {
        let Some(hook) = get_webhook(txn, app)? else {
            continue;
        };
        if hook.disabled || !hook.wants("usage.threshold") || hook.thresholds.is_empty() {
            continue;
        }
        let first = crate::time::civil::days_from_civil(year, month, 1);
        let next = if month == 12 {
            crate::time::civil::days_from_civil(year + 1, 1, 1)
        } else {
            crate::time::civil::days_from_civil(year, month + 1, 1)
        };
        // The app's requests this month: its rows by route, the other dimensions never read.
        let prefix = format!("{app}/");
        let now_total = crate::store::usage::metered_dims_between(
            txn,
            org,
            first,
            next - 1,
            &[crate::store::usage::Dimension::AppEndpoint],
            Some(&prefix),
        )?
        .iter()
        .fold(0u64, |sum, (_, t)| sum.saturating_add(t.requests));
        let before = now_total.saturating_sub(count);
        let tag = crate::store::usage::month_of_day(first);
        let at = taken.latest_at;
        for threshold in &hook.thresholds {
            if before < *threshold
                && *threshold <= now_total
                && mark_threshold(txn, app, tag, *threshold)?
            {
                enqueue(
                    txn,
                    app,
                    "usage.threshold",
                    json!({"appId": app, "threshold": threshold.to_string(), "currentUsage": now_total}),
                    at,
                )?;
            }
        }
    }
    Ok(())
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

    /// Counts one metered call into every aggregate it belongs to.
    pub fn record_metered(&self, event: &MeteredEvent) {
        let totals = event.totals();
        if let Ok(mut pending) = self.pending.lock() {
            pending.latest_at = pending.latest_at.max(event.at.millis());
            for key in event.keys() {
                pending.metered.entry(key).or_default().add(&totals);
            }
            if let (Some(app), Some(user)) = (event.app, &event.end_user) {
                let seen = AppUserTotals {
                    first_seen: event.at.millis(),
                    last_seen: event.at.millis(),
                    requests: 1,
                    cost_micros: event.cost_micros,
                };
                pending
                    .app_users
                    .entry((app, user.clone()))
                    .and_modify(|t| t.merge(&seen))
                    .or_insert(seen);
                let month = crate::store::usage::month_of_day(day_of(event.at));
                pending.month_users.insert((app, month, user.clone()));
            }
            if let (Some(app), Some(failure)) = (event.app, &event.failure)
                && pending.app_failures.len() < MAX_PENDING_FAILURES
            {
                pending.app_failures.push(AppFailure {
                    app,
                    failure: failure.clone(),
                    at: event.at.millis(),
                });
            }
        }
    }

    /// Not yet flushed: an organization's metered aggregates over the days `from..=to`.
    pub fn pending_metered(
        &self,
        organization: Uuid,
        from: i64,
        to: i64,
    ) -> Vec<(MeteredKey, UsageTotals)> {
        let Ok(pending) = self.pending.lock() else {
            return Vec::new();
        };
        pending
            .metered
            .iter()
            .filter(|(k, _)| k.organization == organization && (from..=to).contains(&k.day))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Not yet flushed: an app's end users.
    pub fn pending_app_users(&self, app: Uuid) -> Vec<(String, AppUserTotals)> {
        let Ok(pending) = self.pending.lock() else {
            return Vec::new();
        };
        pending
            .app_users
            .iter()
            .filter(|((a, _), _)| *a == app)
            .map(|((_, user), t)| (user.clone(), *t))
            .collect()
    }

    /// Not yet flushed: a key's (requests, latest use).
    /// End users of `app` in `month` not flushed yet (some may be stored already).
    pub fn pending_month_users(&self, app: Uuid, month: u32) -> Vec<String> {
        let Ok(pending) = self.pending.lock() else {
            return Vec::new();
        };
        pending
            .month_users
            .iter()
            .filter(|(a, m, _)| *a == app && *m == month)
            .map(|(_, _, u)| u.clone())
            .collect()
    }

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
            for (key, totals) in &taken.metered {
                add_metered(txn, key, totals)?;
            }
            let mut new_users = Vec::new();
            for ((app, user), totals) in &taken.app_users {
                if add_app_user(txn, *app, user, totals)? {
                    new_users.push((*app, user.as_str(), totals.first_seen));
                }
            }
            for (app, month, user) in &taken.month_users {
                crate::store::usage::add_month_user(txn, *app, *month, user)?;
            }
            app_events(txn, &taken, &new_users)?;
            Ok::<_, StoreError>(())
        });
        if result.is_err()
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.app_failures.extend(taken.app_failures);
            pending.month_users.extend(taken.month_users);
            for (id, (count, last)) in taken.keys {
                let entry = pending.keys.entry(id).or_insert((0, last));
                entry.0 += count;
                entry.1 = entry.1.max(last);
            }
            for (key, count) in taken.org_days {
                *pending.org_days.entry(key).or_default() += count;
            }
            for (key, totals) in taken.metered {
                pending.metered.entry(key).or_default().add(&totals);
            }
            for (key, totals) in taken.app_users {
                pending
                    .app_users
                    .entry(key)
                    .and_modify(|t| t.merge(&totals))
                    .or_insert(totals);
            }
        }
        if result.is_ok() {
            self.flushes.send_modify(|n| *n += 1);
        }
        result
    }
}
