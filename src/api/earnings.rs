//! An app's monetization and earnings (SPEC §10): its price on calls made through it
//! (`X-App-Id`), what those calls earned its owner, and withdrawals of available earnings into
//! the owner organization's credits.

use http::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::apps::{dollars_input, dollars_number, managed_app, reachable_app};
use super::input::{Fields, MAX_TOKEN};
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::apps::{AppRecord, update_app};
use crate::store::earnings::{WithdrawError, balances, daily, withdraw};
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;

/// Most days of history shown.
const HISTORY_DAYS: i64 = 365;
const DAY_MILLIS: i64 = 86_400_000;

pub fn monetization_view(app: &AppRecord) -> Value {
    json!({
        "enabled": app.monetization_enabled,
        "pricing": {
            "perRequest": dollars_number(app.per_request_micros),
            "perRequest_micros": app.per_request_micros,
            "perToken": dollars_number(app.per_token_micros),
            "perToken_micros": app.per_token_micros,
        },
    })
}

/// The monetization routes' answer: SPEC §10's `{enabled, pricing}` with the app's id.
fn answer_of(app: &AppRecord, changed: bool) -> Value {
    let mut answer = monetization_view(app);
    if let Some(map) = answer.as_object_mut() {
        map.insert("appId".into(), json!(app.id));
        if changed {
            map.insert("success".into(), Value::Bool(true));
        }
    }
    answer
}

/// `GET /api/v1/apps/{id}/monetization`: the app's settings (never with its own key).
pub async fn get_monetization(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let app = state
        .store
        .read_blocking(move |txn| managed_app(txn, id, &requester))
        .await?;
    Ok(json_body(StatusCode::OK, &answer_of(&app, false)))
}

/// Highest price accepted: $1000 a request, $1 a token.
pub(crate) const MAX_PER_REQUEST: i64 = 1_000_000_000;
pub(crate) const MAX_PER_TOKEN: i64 = 1_000_000;

fn price(f: &mut Fields, pricing: &Value, name: &str, max: i64) -> Option<i64> {
    let value = pricing.get(name)?;
    match dollars_input(value).filter(|m| *m <= max) {
        Some(micros) => Some(micros),
        None => {
            f.fail(
                &format!("pricing.{name}"),
                format!(
                    "must be a dollar amount (a number or a string) with at most 6 decimals, \
                     from 0 to {}",
                    crate::money::format_dollars_short(max)
                ),
            );
            None
        }
    }
}

/// `POST /api/v1/apps/{id}/monetization {enabled?, pricing?: {perRequest?, perToken?}}`.
pub async fn set_monetization(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = state.now().millis();
    let mut f = Fields::parse(body)?;
    let enabled = f.bool("enabled");
    let pricing = f.value("pricing").cloned();
    let (per_request, per_token) = match &pricing {
        None | Some(Value::Null) => (None, None),
        Some(p @ Value::Object(map)) => {
            for key in map.keys() {
                if key != "perRequest" && key != "perToken" {
                    f.fail(
                        &format!("pricing.{key}"),
                        "unknown price (perRequest, perToken)",
                    );
                }
            }
            (
                price(&mut f, p, "perRequest", MAX_PER_REQUEST),
                price(&mut f, p, "perToken", MAX_PER_TOKEN),
            )
        }
        Some(_) => {
            f.fail("pricing", "must be an object {perRequest, perToken}");
            (None, None)
        }
    };
    f.finish()?;
    let requester = principal.clone();
    let app = state
        .store
        .write_blocking(move |txn| {
            let mut app = managed_app(txn, id, &requester)?;
            if let Some(e) = enabled {
                app.monetization_enabled = e;
            }
            if let Some(p) = per_request {
                app.per_request_micros = p;
            }
            if let Some(p) = per_token {
                app.per_token_micros = p;
            }
            app.updated_at = now;
            update_app(txn, &app)?;
            Ok::<_, ApiError>(app)
        })
        .await?;
    Ok(json_body(StatusCode::OK, &answer_of(&app, true)))
}

/// Commits the debits (and so the earnings) of calls that ended before this request: an
/// earnings answer is exact, not up to a second behind.
async fn settle_queued(state: &AppState) -> Result<(), ApiError> {
    let billing = state.gateway.billing.clone();
    tokio::task::spawn_blocking(move || billing.flush())
        .await
        .map_err(|_| ApiError::Internal)??;
    Ok(())
}

fn earnings_view(
    txn: &impl crate::store::ReadTx,
    app: Uuid,
    now: i64,
    hold: i64,
) -> Result<Value, ApiError> {
    let b = balances(txn, app, now, hold)?;
    let today = now.div_euclid(DAY_MILLIS);
    let mut history = daily(txn, app, today - HISTORY_DAYS + 1, today)?;
    history.reverse();
    Ok(json!({
        "total": dollars_number(b.total),
        "total_micros": b.total,
        "pending": dollars_number(b.pending),
        "pending_micros": b.pending,
        "available": dollars_number(b.available),
        "available_micros": b.available,
        "withdrawn": dollars_number(b.withdrawn),
        "withdrawn_micros": b.withdrawn,
        "holdSeconds": hold / 1000,
        "history": history.iter().map(|(day, d)| json!({
            "date": super::usage::date_text(*day),
            "amount": dollars_number(d.amount_micros),
            "amount_micros": d.amount_micros,
            "requests": d.requests,
        })).collect::<Vec<_>>(),
    }))
}

fn hold_millis(state: &AppState) -> i64 {
    i64::try_from(state.config.apps.earnings_hold.as_millis()).unwrap_or(i64::MAX)
}

/// `GET /api/v1/apps/{id}/earnings` (an app key: its own app's).
pub async fn earnings(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    settle_queued(state).await?;
    let requester = principal.clone();
    let (now, hold) = (state.now().millis(), hold_millis(state));
    let mut view = state
        .store
        .read_blocking(move |txn| {
            reachable_app(txn, id, &requester)?;
            earnings_view(txn, id, now, hold)
        })
        .await?;
    if let Some(map) = view.as_object_mut() {
        map.insert("appId".into(), json!(id));
    }
    Ok(json_body(StatusCode::OK, &view))
}

/// `POST /api/v1/apps/{id}/earnings/withdraw {amount, idempotency_key?}`: available earnings
/// into the owner organization's credits, once per idempotency key.
pub async fn withdraw_earnings(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let mut f = Fields::parse(body)?;
    f.alias("idempotencyKey", "idempotency_key");
    let amount = match f.value("amount") {
        Some(v) => match dollars_input(v).filter(|m| *m > 0) {
            Some(m) => Some(m),
            None => {
                f.fail(
                    "amount",
                    "must be a positive dollar amount (a number or a string) with at most 6 decimals",
                );
                None
            }
        },
        None => {
            f.fail("amount", "is required");
            None
        }
    };
    let key = f.string("idempotency_key", MAX_TOKEN, false);
    f.finish()?;
    let amount = amount.ok_or(ApiError::Internal)?;
    // Without a key every request is a withdrawal of its own.
    let key = key.unwrap_or_else(|| format!("auto-{}", Uuid::new_v4().simple()));
    settle_queued(state).await?;
    let requester = principal.clone();
    let (now, hold) = (state.now().millis(), hold_millis(state));
    let (done, new, view) = state
        .store
        .write_blocking(move |txn| {
            managed_app(txn, id, &requester)?;
            let (done, new) = match withdraw(txn, id, &key, amount, now, hold) {
                Ok(outcome) => outcome,
                Err(WithdrawError::TooMuch { available_micros }) => {
                    return Err(ApiError::Validation {
                        message: format!(
                            "amount: ${} is more than the ${} available to withdraw",
                            crate::money::format_dollars(amount),
                            crate::money::format_dollars(available_micros)
                        ),
                        details: json!({
                            "amount": "more than is available",
                            "available": dollars_number(available_micros),
                            "available_micros": available_micros,
                        }),
                    });
                }
                Err(WithdrawError::KeyReused) => {
                    return Err(ApiError::Conflict {
                        message: "This idempotency_key was used for a withdrawal of another amount"
                            .into(),
                        details: Some(json!({ "idempotency_key": "used for another amount" })),
                    });
                }
                Err(WithdrawError::Store(e)) => return Err(e.into()),
            };
            let view = earnings_view(txn, id, now, hold)?;
            Ok::<_, ApiError>((done, new, view))
        })
        .await?;
    if new {
        tracing::info!(app = %id, amount_micros = done.amount_micros, "app earnings withdrawn");
    }
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "success": true,
            "appId": id,
            "withdrawn": dollars_number(done.amount_micros),
            "withdrawn_micros": done.amount_micros,
            "replayed": !new,
            "earnings": view,
        }),
    ))
}
