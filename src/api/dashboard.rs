//! `GET /api/v1/dashboard` and `GET /api/v1/credits`: the organization's summary and its ledger.

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{time, user_view};
use crate::auth::Principal;
use crate::limits::Decision;
use crate::money::format_dollars;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::keys::list_keys_of_org;
use crate::store::ledger::{LedgerEntry, list_entries};
use crate::store::usage::org_requests_between;
use crate::time::civil::{civil_from_days, days_from_civil};
use crate::usage::day_of;
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::web::query::Paging;

pub async fn dashboard(
    state: &AppState,
    principal: &Principal,
    rate: Option<Decision>,
) -> Result<Response<Body>, ApiError> {
    let org = principal.organization().clone();
    let today = day_of(state.now());
    let (year, month, _) = civil_from_days(today);
    let month_start = days_from_civil(year, month, 1);
    let org_id = org.id;
    let (keys, apps, requests_today, requests_month) = state
        .store
        .read_blocking(move |txn| {
            Ok::<_, StoreError>((
                list_keys_of_org(txn, org_id)?,
                crate::store::apps::list_apps_of_org(txn, org_id)?.len(),
                org_requests_between(txn, org_id, today, today)?,
                org_requests_between(txn, org_id, month_start, today)?,
            ))
        })
        .await?;
    // Includes the metered debits not committed yet (SPEC §9).
    let balance = state.gateway.billing.balance(org_id)?;
    let cost_this_month = super::usage::cost_this_month(state, org_id).await?;
    let pending_today = state.usage.pending_for_org(org_id, today, today);
    let pending_month = state.usage.pending_for_org(org_id, month_start, today);
    let own_keys: Vec<_> = keys.iter().filter(|k| k.app_id.is_none()).collect();
    let active = own_keys.iter().filter(|k| k.is_active).count();
    let rate_limit = rate
        .map(|d| json!({ "limit": d.limit, "remaining": d.remaining, "reset": d.reset_unix_secs }));
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "user": user_view(principal.user()),
            "organization": {
                "id": org.id,
                "name": org.name,
                "slug": org.slug,
                "plan": org.plan.as_str(),
                "creditBalance": format_dollars(balance),
                "creditBalance_micros": balance,
            },
            "apiKeys": { "total": own_keys.len(), "active": active },
            "apps": { "total": apps },
            "usage": {
                "requestsToday": requests_today.saturating_add(pending_today),
                "requestsThisMonth": requests_month.saturating_add(pending_month),
                "costThisMonth": format_dollars(cost_this_month),
                "costThisMonth_micros": cost_this_month,
            },
            "rateLimit": rate_limit,
        }),
    ))
}

fn transaction_view(entry: &LedgerEntry) -> Value {
    let metadata: serde_json::Map<String, Value> = entry
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "id": entry.id,
        "amount": format_dollars(entry.amount_micros),
        "amount_micros": entry.amount_micros,
        "type": entry.kind.as_str(),
        "description": entry.description,
        "metadata": metadata,
        "created_at": time(entry.created_at),
    })
}

const DEFAULT_PAGE_SIZE: u64 = 20;
const MAX_PAGE_SIZE: u64 = 100;

pub async fn credits(
    state: &AppState,
    principal: &Principal,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let Paging { page, limit } = Paging::from_query(query, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let org = principal.organization().id;
    let (entries, total) = state
        .store
        .read_blocking(move |txn| list_entries(txn, org, page, limit))
        .await?;
    // Includes the metered debits not committed yet (SPEC §9): their rows appear within the
    // flush interval.
    let balance = state.gateway.billing.balance(org)?;
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "balance": format_dollars(balance),
            "balance_micros": balance,
            "transactions": entries.iter().map(transaction_view).collect::<Vec<_>>(),
            "page": page,
            "limit": limit,
            "total": total,
        }),
    ))
}
