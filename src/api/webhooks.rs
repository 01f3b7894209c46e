//! An app's webhook (SPEC §10): its settings with the signing secret shown once, rotation, the
//! test event, the delivery log and redelivery. Sending is `crate::webhooks`; the outbox is
//! `store::webhooks`.

use http::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::apps::managed_app;
use super::input::Fields;
use super::time;
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::webhooks::{
    DEFAULT_THRESHOLDS, DeliveryRecord, DeliveryStatus, EVENTS, TEST_EVENT, WebhookRecord,
    delivery_name, enqueue, get_delivery, get_webhook, list_deliveries, parse_delivery_name,
    put_webhook, save_delivery,
};
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::web::query::Paging;
use crate::webhooks::sign::new_secret;
use crate::webhooks::target::parse_target;

/// How long the secret before a rotation still signs (SPEC §10).
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;
/// Most `usageThresholds`.
pub(crate) const MAX_THRESHOLDS: usize = 20;

/// The settings as answers show them: never the secret.
pub fn webhook_view(hook: &WebhookRecord, now: i64) -> Value {
    let rotation = hook
        .previous
        .as_ref()
        .filter(|(_, until)| now < *until)
        .map(|(_, until)| time(*until));
    json!({
        "url": hook.url,
        "events": hook.events,
        "usageThresholds": hook.thresholds,
        "status": if hook.disabled { "disabled" } else { "active" },
        "previousSecretValidUntil": rotation,
        "created_at": time(hook.created_at),
        "updated_at": time(hook.updated_at),
    })
}

/// Webhook settings read from a body: `url` (or the create route's `webhookUrl`), `events`,
/// `usageThresholds`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub events: Vec<String>,
    pub thresholds: Vec<u64>,
}

/// Reads the settings from `f` (`url_field` names the URL's field); `None` when no URL was sent
/// (and `required` is false). Bad fields are collected in `f`.
pub fn settings_of(f: &mut Fields, url_field: &str, required: bool) -> Option<Settings> {
    let url = f.string(url_field, crate::webhooks::target::MAX_URL, required);
    let events = match f.value("events").cloned() {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(e) if EVENTS.contains(&e) => {
                        if !out.iter().any(|o: &String| o == e) {
                            out.push(e.to_string());
                        }
                    }
                    _ => {
                        f.fail(
                            "events",
                            format!("each must be one of {}", EVENTS.join(", ")),
                        );
                        return None;
                    }
                }
            }
            Some(out)
        }
        Some(_) => {
            f.fail("events", "must be an array of event names");
            None
        }
    };
    let thresholds = match f.value("usageThresholds").cloned() {
        None | Some(Value::Null) => Some(DEFAULT_THRESHOLDS.to_vec()),
        Some(Value::Array(items)) if items.len() <= MAX_THRESHOLDS => {
            let mut out: Vec<u64> = Vec::new();
            for item in items {
                match crate::api::input::whole_number(&item)
                    .filter(|n| (1..=1_000_000_000_000).contains(n))
                {
                    Some(n) => out.push(n),
                    None => {
                        f.fail("usageThresholds", "each must be a whole number from 1");
                        return None;
                    }
                }
            }
            out.sort_unstable();
            out.dedup();
            Some(out)
        }
        Some(_) => {
            f.fail(
                "usageThresholds",
                format!("must be an array of at most {MAX_THRESHOLDS} whole numbers"),
            );
            None
        }
    };
    let url = url?;
    if let Err(why) = parse_target(&url) {
        f.fail(url_field, why);
        return None;
    }
    Some(Settings {
        url,
        events: events?,
        thresholds: thresholds?,
    })
}

/// Refuses a URL whose host resolves to an address webhooks may not reach (checked again at
/// every attempt; this is for a clear error now). 400 naming the field.
pub async fn check_reachable(state: &AppState, url: &str, field: &str) -> Result<(), ApiError> {
    let sender = state.webhooks.as_ref().ok_or_else(|| {
        ApiError::ServiceUnavailable("webhooks are unavailable on this server (see its log)".into())
    })?;
    let target = parse_target(url).map_err(|why| invalid(field, &why))?;
    crate::webhooks::resolve_target(sender.resolver(), &target, sender.allow_private())
        .await
        .map_err(|why| invalid(field, &why))?;
    Ok(())
}

fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::Validation {
        message: format!("{field}: {why}"),
        details: json!({ field: why }),
    }
}

/// `GET /api/v1/apps/{id}/webhook`.
pub async fn get_settings(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let now = state.now().millis();
    let hook = state
        .store
        .read_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            Ok::<_, ApiError>(get_webhook(txn, id)?)
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({ "appId": id, "webhook": hook.map(|h| webhook_view(&h, now)) }),
    ))
}

/// Stores settings for an app: a new webhook gets a new secret (answered, once); a changed one
/// keeps its secret (`None`) and is enabled again.
pub fn store_settings(
    txn: &redb::WriteTransaction,
    app: Uuid,
    settings: Settings,
    now: i64,
) -> Result<(WebhookRecord, Option<String>), ApiError> {
    let existing = get_webhook(txn, app)?;
    let (record, secret) = match existing {
        Some(mut hook) => {
            hook.url = settings.url;
            hook.events = settings.events;
            hook.thresholds = settings.thresholds;
            hook.disabled = false;
            hook.updated_at = now;
            (hook, None)
        }
        None => {
            let secret = new_secret();
            let shown = secret.expose().to_string();
            (
                WebhookRecord {
                    url: settings.url,
                    events: settings.events,
                    thresholds: settings.thresholds,
                    secret,
                    previous: None,
                    disabled: false,
                    created_at: now,
                    updated_at: now,
                },
                Some(shown),
            )
        }
    };
    put_webhook(txn, app, &record)?;
    Ok((record, secret))
}

/// `POST /api/v1/apps/{id}/webhook {url, events, usageThresholds?}`.
pub async fn set_settings(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut f = Fields::parse(body)?;
    f.alias("webhookUrl", "url");
    let settings = settings_of(&mut f, "url", true);
    f.finish()?;
    let settings = settings.ok_or(ApiError::Internal)?;
    // The app first: another organization's app is 404 before anything is resolved.
    let requester = principal.clone();
    state
        .store
        .read_blocking(move |txn| managed_app(txn, id, &requester).map(|_| ()))
        .await?;
    check_reachable(state, &settings.url, "url").await?;
    let requester = principal.clone();
    let now = state.now().millis();
    let (hook, secret) = state
        .store
        .write_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            store_settings(txn, id, settings, now)
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({ "success": true, "webhook": webhook_view(&hook, now), "secret": secret }),
    ))
}

fn no_webhook() -> ApiError {
    ApiError::Conflict {
        message: "This app has no webhook; set one with POST /api/v1/apps/{id}/webhook".into(),
        details: None,
    }
}

/// `POST /api/v1/apps/{id}/webhook/rotate-secret`: a new secret; the old one signs too for 24 h.
pub async fn rotate_secret(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let now = state.now().millis();
    let (secret, until) = state
        .store
        .write_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            let mut hook = get_webhook(txn, id)?.ok_or_else(no_webhook)?;
            let fresh = new_secret();
            let shown = fresh.expose().to_string();
            let old = std::mem::replace(&mut hook.secret, fresh);
            let until = now.saturating_add(ROTATION_OVERLAP_MS);
            hook.previous = Some((old, until));
            hook.updated_at = now;
            put_webhook(txn, id, &hook)?;
            Ok::<_, ApiError>((shown, until))
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({ "success": true, "secret": secret, "previousSecretValidUntil": time(until) }),
    ))
}

/// `POST /api/v1/apps/{id}/webhook/test`: queues a `webhook.test` event (202).
pub async fn test_event(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let now = state.now().millis();
    let queued = state
        .store
        .write_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            let hook = get_webhook(txn, id)?.ok_or_else(no_webhook)?;
            if hook.disabled {
                return Err(ApiError::Conflict {
                    message: "This app's webhook is disabled (a receiver answered 410); save its \
                              settings to enable it"
                        .into(),
                    details: None,
                });
            }
            let data = json!({"appId": id, "message": "This is a test event from Eliza Cloud"});
            enqueue(txn, id, TEST_EVENT, data, now)?.ok_or(ApiError::Internal)
        })
        .await?;
    if let Some(sender) = &state.webhooks {
        sender.wake();
    }
    Ok(json_body(
        StatusCode::ACCEPTED,
        &json!({ "success": true, "deliveryId": delivery_name(queued) }),
    ))
}

fn delivery_view(d: &DeliveryRecord) -> Value {
    json!({
        "id": delivery_name(d.id),
        "event": d.event,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "lastResponseStatus": d.last_response_status,
        "lastResponseBody": d.last_response_body,
        "lastError": d.last_error,
        "nextAttemptAt": d.next_attempt_at.map(time),
        "createdAt": time(d.created_at),
        "updatedAt": time(d.updated_at),
    })
}

/// `GET /api/v1/apps/{id}/webhook/deliveries?page&limit`: newest first.
pub async fn deliveries(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let paging = Paging::from_query(query, 50, 100)?;
    let requester = principal.clone();
    let offset = paging.offset();
    let limit = paging.limit as usize;
    let (list, total) = state
        .store
        .read_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            Ok::<_, ApiError>(list_deliveries(txn, id, offset, limit)?)
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "deliveries": list.iter().map(delivery_view).collect::<Vec<_>>(),
            "total": total,
            "page": paging.page,
            "limit": paging.limit,
        }),
    ))
}

/// `POST /api/v1/apps/{id}/webhook/deliveries/{delivery}/redeliver` (202): one more attempt now,
/// with the same id, signed with the current secret; not retried by itself.
pub async fn redeliver(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    delivery: &str,
) -> Result<Response<Body>, ApiError> {
    let delivery = parse_delivery_name(delivery).ok_or(ApiError::NotFound)?;
    let requester = principal.clone();
    let now = state.now().millis();
    state
        .store
        .write_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            let mut d = get_delivery(txn, delivery)?
                .filter(|d| d.app == id)
                .ok_or(ApiError::NotFound)?;
            let was_due = d.next_attempt_at;
            if !d.manual {
                d.resume_at = was_due;
            }
            d.manual = true;
            d.status = DeliveryStatus::Pending;
            d.next_attempt_at = Some(now);
            d.updated_at = now;
            save_delivery(txn, &d, was_due)?;
            Ok::<_, ApiError>(())
        })
        .await?;
    if let Some(sender) = &state.webhooks {
        sender.wake();
    }
    Ok(json_body(
        StatusCode::ACCEPTED,
        &json!({ "success": true, "deliveryId": delivery_name(delivery) }),
    ))
}
