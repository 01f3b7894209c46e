//! `/api/v1/api-keys`: list, create, update, delete and regenerate an organization's keys. Only
//! an unrestricted organization credential reaches these handlers (the routes' declarations); the
//! no-escalation rule is still checked here against the requester's own grant. A key of another
//! organization is invisible (404, by `web::may_act`); an app's key is managed through its app.
//! The key cache is invalidated by an on-commit hook inside the write, so the change takes effect
//! on the next request even if the client hung up before the answer.

use http::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::input::{Fields, MAX_KEY_DESCRIPTION, MAX_NAME};
use super::time;
use crate::auth::Principal;
use crate::auth::api_key::{PlainKey, generate_key};
use crate::auth::permissions::Grant;
use crate::auth::scope::Owner;
use crate::state::AppState;
use crate::store::keys::list_keys_of_org;
use crate::store::keys::{ApiKeyRecord, KeyType, delete_key, get_key, insert_key, update_key};
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::web::may_act;
use crate::web::query::Paging;

/// The public view of a key: never a hash or a plaintext. Counters include what is not flushed.
pub fn key_view(state: &AppState, key: &ApiKeyRecord) -> Value {
    let (pending, pending_last) = state.usage.pending_for_key(key.id).unwrap_or((0, i64::MIN));
    let last_used = match key.last_used_at {
        Some(at) => Some(at.max(pending_last)),
        None if pending > 0 => Some(pending_last),
        None => None,
    };
    json!({
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "key_prefix": key.key_prefix,
        "type": key.key_type.as_str(),
        "permissions": key.permissions,
        "rateLimit": key.rate_limit,
        "is_active": key.is_active,
        "usage_count": key.usage_count.saturating_add(pending),
        "last_used_at": last_used.map(time),
        "created_at": time(key.created_at),
        "expires_at": key.expires_at.map(time),
        "app_id": key.app_id,
    })
}

fn forbidden(message: &str, required: Option<String>) -> ApiError {
    ApiError::Forbidden {
        message: message.into(),
        required,
    }
}

/// The no-escalation rule for a requested permission list.
/// Gives a key a new secret (same id, type and settings); answers the plaintext, to be shown once.
pub(crate) fn new_secret(key: &mut ApiKeyRecord, now_millis: i64) -> PlainKey {
    let plain = generate_key(key.key_type);
    key.key_hash = plain.hash();
    key.key_prefix = plain.display_prefix();
    key.updated_at = now_millis;
    plain
}

pub(crate) fn check_escalation(
    principal: &Principal,
    permissions: &[String],
) -> Result<(), ApiError> {
    let requested = Grant::from_stored(permissions);
    if principal.grant.covers(requested) {
        Ok(())
    } else {
        Err(forbidden(
            "A credential can only grant permissions it has itself",
            Some(if permissions.is_empty() {
                "unrestricted".into()
            } else {
                permissions.join(",")
            }),
        ))
    }
}

fn requester_key_type(principal: &Principal) -> Option<KeyType> {
    principal.api_key().map(|k| k.key_type)
}

/// Default and largest page of `GET /api/v1/api-keys` (SPEC §4).
const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: u64 = 100;

/// `GET /api/v1/api-keys?page&limit`: the organization's keys, newest first, app keys with
/// their `app_id`.
pub async fn list(
    state: &AppState,
    principal: &Principal,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let paging = Paging::from_query(query, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let org = principal.organization().id;
    let keys = state
        .store
        .read_blocking(move |txn| list_keys_of_org(txn, org))
        .await?;
    let shown: Vec<Value> = keys
        .get(paging.slice(&keys))
        .unwrap_or_default()
        .iter()
        .map(|k| key_view(state, k))
        .collect();
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "keys": shown,
            "page": paging.page,
            "limit": paging.limit,
            "total": keys.len(),
        }),
    ))
}

pub async fn create(
    state: &AppState,
    principal: &Principal,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = state.now();
    let mut f = Fields::parse(body)?;
    let name = f.string("name", MAX_NAME, true);
    let description = f
        .nullable_string("description", MAX_KEY_DESCRIPTION)
        .flatten();
    let permissions = f.permissions().unwrap_or_default();
    let rate_limit = f.rate_limit().flatten();
    let expires_at = f.timestamp("expires_at").flatten();
    let key_type = match f.string("type", 10, false).as_deref() {
        None => KeyType::Live,
        Some(text) => KeyType::parse(text).unwrap_or_else(|| {
            f.fail("type", "must be \"live\" or \"test\"");
            KeyType::Live
        }),
    };
    if expires_at.is_some_and(|at| at <= now) {
        f.fail("expires_at", "must be in the future");
    }
    f.finish()?;
    let name = name.ok_or(ApiError::Internal)?;
    check_escalation(principal, &permissions)?;
    if key_type == KeyType::Live && requester_key_type(principal) == Some(KeyType::Test) {
        return Err(forbidden(
            "A test key can only create test keys",
            Some("live key".into()),
        ));
    }

    let plain = generate_key(key_type);
    let mut record = ApiKeyRecord::fresh(
        principal.organization().id,
        principal.user().id,
        name,
        key_type,
        plain.display_prefix(),
        plain.hash(),
        now.millis(),
    );
    record.description = description;
    record.permissions = permissions;
    record.rate_limit = rate_limit;
    record.expires_at = expires_at.map(|t| t.millis());
    let stored = record.clone();
    state
        .store
        .write_blocking(move |txn| insert_key(txn, &stored))
        .await?;
    Ok(created_answer(state, StatusCode::CREATED, &record, &plain))
}

fn created_answer(
    state: &AppState,
    status: StatusCode,
    record: &ApiKeyRecord,
    plain: &PlainKey,
) -> Response<Body> {
    json_body(
        status,
        &json!({ "apiKey": key_view(state, record), "plainKey": plain.expose() }),
    )
}

/// Loads a key the caller may manage, inside the caller's transaction: one its scope reaches
/// (else 404 or 403), not an app's key (managed through its app: 404 here), and a live key only
/// when the caller is not a test key (else 403), so a test credential can neither obtain a live
/// secret by regenerating nor switch a live key on.
fn own_key(
    txn: &impl crate::store::ReadTx,
    id: Uuid,
    principal: &Principal,
) -> Result<ApiKeyRecord, ApiError> {
    let key = get_key(txn, id)?
        .filter(|k| k.app_id.is_none())
        .ok_or(ApiError::NotFound)?;
    may_act(principal, Owner::organization(key.organization_id))?;
    let requester = requester_key_type(principal);
    if key.key_type == KeyType::Live && requester == Some(KeyType::Test) {
        return Err(forbidden(
            "A test key can only manage test keys",
            Some("live key".into()),
        ));
    }
    Ok(key)
}

pub async fn update(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = state.now();
    let mut f = Fields::parse(body)?;
    let name = f.string("name", MAX_NAME, false);
    let description = f.nullable_string("description", MAX_KEY_DESCRIPTION);
    let permissions = f.permissions();
    let rate_limit = f.rate_limit();
    let is_active = f.bool("is_active");
    let expires_at = f.timestamp("expires_at");
    if let Some(Some(at)) = expires_at
        && at <= now
    {
        f.fail("expires_at", "must be in the future");
    }
    f.finish()?;
    // `permissions: []` asks for an unrestricted key; absent or null leaves them as they are.
    if let Some(list) = &permissions {
        check_escalation(principal, list)?;
    }
    let requester = principal.clone();
    let cache = state.key_cache.clone();
    let after = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let before = own_key(txn, id, &requester)?;
            let mut key = before.clone();
            if let Some(name) = name {
                key.name = name;
            }
            if let Some(description) = description {
                key.description = description;
            }
            if let Some(permissions) = permissions {
                key.permissions = permissions;
            }
            if let Some(rate_limit) = rate_limit {
                key.rate_limit = rate_limit;
            }
            if let Some(is_active) = is_active {
                key.is_active = is_active;
            }
            if let Some(expires_at) = expires_at {
                key.expires_at = expires_at.map(|t| t.millis());
            }
            key.updated_at = now.millis();
            update_key(txn, &key)?;
            let hash = before.key_hash;
            on_commit.push(move || cache.invalidate(&hash));
            Ok::<_, ApiError>(key)
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({ "apiKey": key_view(state, &after) }),
    ))
}

pub async fn delete(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let cache = state.key_cache.clone();
    state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            own_key(txn, id, &requester)?;
            if let Some(removed) = delete_key(txn, id)? {
                on_commit.push(move || cache.invalidate(&removed.key_hash));
            }
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(json_body(StatusCode::OK, &json!({ "success": true })))
}

pub async fn regenerate(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let now = state.now();
    let requester = principal.clone();
    let cache = state.key_cache.clone();
    let (record, plain) = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let mut key = own_key(txn, id, &requester)?;
            let old_hash = key.key_hash;
            let plain = new_secret(&mut key, now.millis());
            update_key(txn, &key)?;
            on_commit.push(move || cache.invalidate(&old_hash));
            Ok::<_, ApiError>((key, plain))
        })
        .await?;
    Ok(created_answer(state, StatusCode::OK, &record, &plain))
}
