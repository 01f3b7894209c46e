//! Apps' webhooks (SPEC §10): settings with their signing secrets, and the durable outbox of
//! deliveries. An event's delivery is written in the same transaction as what caused it
//! ([`enqueue`]); the sender (`crate::webhooks`) picks due deliveries from `webhook_deliveries_due_v1`
//! and records each attempt's outcome with [`save_delivery`].

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tables::{DELIVERIES, DELIVERIES_BY_APP, DELIVERIES_DUE, THRESHOLDS_FIRED, WEBHOOKS};
use super::{ReadTx, StoreError, codec, get_record};

/// The events an app may subscribe to.
pub const EVENTS: [&str; 3] = ["user.created", "usage.threshold", "error.occurred"];
/// Sent by `POST …/webhook/test`, whatever the subscription.
pub const TEST_EVENT: &str = "webhook.test";
/// `usageThresholds` when none are given.
pub const DEFAULT_THRESHOLDS: [u64; 3] = [1000, 10_000, 100_000];

/// A signing secret, `whsec_` + base64 of 32 random bytes. Its `Debug` never shows it.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(text: String) -> WebhookSecret {
        WebhookSecret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// An app's webhook. DISK FORMAT: field order is part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    pub url: String,
    pub events: Vec<String>,
    pub thresholds: Vec<u64>,
    pub secret: WebhookSecret,
    /// The secret before the last rotation and until when (ms) it still signs.
    pub previous: Option<(WebhookSecret, i64)>,
    /// A receiver answered 410: nothing is sent until the settings are saved again.
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookRecord {
    /// The secrets that sign at `now`: the newest first.
    pub fn signing_secrets(&self, now: i64) -> Vec<&WebhookSecret> {
        let mut out = vec![&self.secret];
        if let Some((old, until)) = &self.previous
            && now < *until
        {
            out.push(old);
        }
        out
    }

    pub fn wants(&self, event: &str) -> bool {
        event == TEST_EVENT || self.events.iter().any(|e| e == event)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One delivery: the event's body, signed anew at every attempt. DISK FORMAT: field order is
/// part of the encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub app: Uuid,
    pub event: String,
    /// `{event, timestamp, data}` as sent, byte for byte, on every attempt.
    pub body: Vec<u8>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_response_status: Option<u16>,
    pub last_error: Option<String>,
    /// At most 1 KiB of the last answer's body.
    pub last_response_body: Option<String>,
    /// When the next attempt is due (ms), while there is one; indexed in `DELIVERIES_DUE`.
    pub next_attempt_at: Option<i64>,
    /// A manual redelivery of a delivery that had an automatic retry scheduled: that retry's
    /// time, resumed if the manual attempt fails.
    pub resume_at: Option<i64>,
    /// The attempt now due is a manual redelivery (one attempt, never retried by itself).
    pub manual: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The id a delivery shows (`webhook-id`, `X-Eliza-Delivery`): `msg_` + its uuid's hex.
pub fn delivery_name(id: Uuid) -> String {
    format!("msg_{}", id.simple())
}

/// The delivery a shown id names.
pub fn parse_delivery_name(text: &str) -> Option<Uuid> {
    let hex = text.strip_prefix("msg_").unwrap_or(text);
    Uuid::try_parse(hex).ok()
}

pub fn get_webhook(txn: &impl ReadTx, app: Uuid) -> Result<Option<WebhookRecord>, StoreError> {
    get_record(&txn.read_table(WEBHOOKS)?, app.as_u128())
}

pub fn put_webhook(
    txn: &WriteTransaction,
    app: Uuid,
    record: &WebhookRecord,
) -> Result<(), StoreError> {
    txn.open_table(WEBHOOKS)?
        .insert(app.as_u128(), codec::encode(record)?.as_slice())?;
    Ok(())
}

pub fn get_delivery(txn: &impl ReadTx, id: Uuid) -> Result<Option<DeliveryRecord>, StoreError> {
    get_record(&txn.read_table(DELIVERIES)?, id.as_u128())
}

/// Writes a delivery; `was_due` is the due time it was indexed under before (if any), replaced
/// by its `next_attempt_at`.
pub fn save_delivery(
    txn: &WriteTransaction,
    record: &DeliveryRecord,
    was_due: Option<i64>,
) -> Result<(), StoreError> {
    let id = record.id.as_u128();
    let mut due = txn.open_table(DELIVERIES_DUE)?;
    if let Some(at) = was_due {
        due.remove((at, id))?;
    }
    if let Some(at) = record.next_attempt_at {
        due.insert((at, id), ())?;
    }
    txn.open_table(DELIVERIES)?
        .insert(id, codec::encode(record)?.as_slice())?;
    Ok(())
}

/// Queues `event` with `data` for `app` when its webhook is set, enabled and subscribed to it:
/// the delivery is due at once. Answers its id, or `None` when nothing is to be sent.
pub fn enqueue(
    txn: &WriteTransaction,
    app: Uuid,
    event: &str,
    data: serde_json::Value,
    now: i64,
) -> Result<Option<Uuid>, StoreError> {
    let Some(hook) = get_webhook(txn, app)? else {
        return Ok(None);
    };
    if hook.disabled || !hook.wants(event) {
        return Ok(None);
    }
    let id = Uuid::new_v4();
    let body = serde_json::to_vec(&serde_json::json!({
        "event": event,
        "timestamp": crate::time::Timestamp(now).to_rfc3339(),
        "data": data,
    }))
    .map_err(|e| StoreError::Db(format!("webhook body: {e}")))?;
    let record = DeliveryRecord {
        id,
        app,
        event: event.to_string(),
        body,
        status: DeliveryStatus::Pending,
        attempts: 0,
        last_response_status: None,
        last_error: None,
        last_response_body: None,
        next_attempt_at: Some(now),
        resume_at: None,
        manual: false,
        created_at: now,
        updated_at: now,
    };
    save_delivery(txn, &record, None)?;
    txn.open_table(DELIVERIES_BY_APP)?
        .insert((app.as_u128(), now, id.as_u128()), ())?;
    Ok(Some(id))
}

/// An app's deliveries, newest first: `limit` of them from `offset`, and how many there are.
pub fn list_deliveries(
    txn: &impl ReadTx,
    app: Uuid,
    offset: usize,
    limit: usize,
) -> Result<(Vec<DeliveryRecord>, usize), StoreError> {
    let id = app.as_u128();
    let index = txn.read_table(DELIVERIES_BY_APP)?;
    let table = txn.read_table(DELIVERIES)?;
    let range = index.range((id, i64::MIN, 0)..=(id, i64::MAX, u128::MAX))?;
    let mut total = 0;
    let mut out = Vec::new();
    for row in range.rev() {
        let (key, _) = row?;
        if total >= offset && out.len() < limit {
            let delivery = key.value().2;
            if let Some(record) = get_record::<u128, DeliveryRecord>(&table, delivery)? {
                out.push(record);
            }
        }
        total += 1;
    }
    Ok((out, total))
}

/// Deliveries due at `now`, the earliest first, at most `limit`.
pub fn due(txn: &impl ReadTx, now: i64, limit: usize) -> Result<Vec<(i64, Uuid)>, StoreError> {
    let table = txn.read_table(DELIVERIES_DUE)?;
    let mut out = Vec::new();
    for row in table.range((i64::MIN, 0)..=(now, u128::MAX))? {
        let (at, id) = row?.0.value();
        out.push((at, Uuid::from_u128(id)));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Marks `threshold` of `month` (YYYYMM) as sent for `app`; answers whether it was new.
pub fn mark_threshold(
    txn: &WriteTransaction,
    app: Uuid,
    month: u32,
    threshold: u64,
) -> Result<bool, StoreError> {
    let mut table = txn.open_table(THRESHOLDS_FIRED)?;
    let key = (app.as_u128(), month, threshold);
    if table.get(key)?.is_some() {
        return Ok(false);
    }
    table.insert(key, ())?;
    Ok(true)
}

/// Removes an app's webhook, every delivery of it (pending ones are never sent) and its marks.
pub fn delete_of_app(txn: &WriteTransaction, app: Uuid) -> Result<(), StoreError> {
    let id = app.as_u128();
    txn.open_table(WEBHOOKS)?.remove(id)?;
    let mut index = txn.open_table(DELIVERIES_BY_APP)?;
    let keys: Vec<(i64, u128)> = index
        .range((id, i64::MIN, 0)..=(id, i64::MAX, u128::MAX))?
        .map(|row| row.map(|(k, _)| (k.value().1, k.value().2)))
        .collect::<Result<_, _>>()?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut due = txn.open_table(DELIVERIES_DUE)?;
    for (at, delivery) in keys {
        index.remove((id, at, delivery))?;
        if let Some(old) = deliveries.remove(delivery)? {
            let record: DeliveryRecord = codec::decode(old.value())?;
            if let Some(next) = record.next_attempt_at {
                due.remove((next, delivery))?;
            }
        }
    }
    let mut marks = txn.open_table(THRESHOLDS_FIRED)?;
    let fired: Vec<(u32, u64)> = marks
        .range((id, 0, 0)..=(id, u32::MAX, u64::MAX))?
        .map(|row| row.map(|(k, _)| (k.value().1, k.value().2)))
        .collect::<Result<_, _>>()?;
    for (month, threshold) in fired {
        marks.remove((id, month, threshold))?;
    }
    Ok(())
}

/// `check`'s part: every delivery decodes, the due index holds exactly the pending deliveries'
/// next attempts, and the app index exactly the deliveries.
pub fn check(txn: &impl ReadTx) -> Result<Vec<String>, StoreError> {
    use std::collections::BTreeSet;
    let mut problems = Vec::new();
    let mut expected_due = BTreeSet::new();
    let mut expected_index = BTreeSet::new();
    for row in txn.read_table(DELIVERIES)?.iter()? {
        let (key, value) = row?;
        match codec::decode::<DeliveryRecord>(value.value()) {
            Ok(d) => {
                if d.id.as_u128() != key.value() {
                    problems.push(format!("delivery {} stored under another id", d.id));
                }
                if let Some(at) = d.next_attempt_at {
                    expected_due.insert((at, key.value()));
                }
                if (d.status == DeliveryStatus::Pending) != d.next_attempt_at.is_some() {
                    problems.push(format!(
                        "delivery {} is {} with next attempt {:?}",
                        d.id,
                        d.status.as_str(),
                        d.next_attempt_at
                    ));
                }
                expected_index.insert((d.app.as_u128(), d.created_at, key.value()));
            }
            Err(e) => problems.push(format!("webhook deliveries: a record does not decode: {e}")),
        }
    }
    let mut due_rows = BTreeSet::new();
    for row in txn.read_table(DELIVERIES_DUE)?.iter()? {
        due_rows.insert(row?.0.value());
    }
    if due_rows != expected_due {
        problems.push("webhook due index does not match the pending deliveries".into());
    }
    let mut index_rows = BTreeSet::new();
    for row in txn.read_table(DELIVERIES_BY_APP)?.iter()? {
        index_rows.insert(row?.0.value());
    }
    if index_rows != expected_index {
        problems.push("webhook delivery index does not match the deliveries".into());
    }
    for row in txn.read_table(WEBHOOKS)?.iter()? {
        let (_, value) = row?;
        if let Err(e) = codec::decode::<WebhookRecord>(value.value()) {
            problems.push(format!("webhooks: a record does not decode: {e}"));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug() {
        let record = WebhookRecord {
            url: "https://r.example/hook".into(),
            events: vec![],
            thresholds: vec![],
            secret: WebhookSecret::new("whsec_c2VjcmV0".into()),
            previous: Some((WebhookSecret::new("whsec_b2xk".into()), 5)),
            disabled: false,
            created_at: 0,
            updated_at: 0,
        };
        let shown = format!("{record:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("b2xk"),
            "{shown}"
        );
        assert_eq!(record.signing_secrets(4).len(), 2);
        assert_eq!(record.signing_secrets(5).len(), 1);
        assert!(record.wants(TEST_EVENT) && !record.wants("user.created"));
    }

    #[test]
    fn delivery_names_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(parse_delivery_name(&delivery_name(id)), Some(id));
        assert_eq!(parse_delivery_name(&id.to_string()), Some(id));
        assert_eq!(parse_delivery_name("msg_zz"), None);
    }
}
