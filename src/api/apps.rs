//! App management (SPEC §10): create (with the app's key, shown once), check a name, list, show,
//! change, delete, and regenerate the app's key. An app's key is an `api_keys_v1` row with the
//! app's id, so the pipeline carries its scope (`auth::scope`) and no handler can forget it.

use http::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use super::input::{Fields, MAX_APP_DESCRIPTION, MAX_NAME};
use super::keys::{check_escalation, new_secret};
use super::time;
use crate::auth::Principal;
use crate::auth::api_key::{PlainKey, generate_key};
use crate::auth::permissions::normalise;
use crate::auth::scope::Owner;
use crate::state::AppState;
use crate::store::apps::{
    AppRecord, delete_app, get_app, insert_app, list_apps_of_org, slug_for, slug_taken,
    subdomain_taken, update_app,
};
use crate::store::keys::{ApiKeyRecord, KeyType, delete_key, get_key, insert_key, update_key};
use crate::store::webhooks::{WebhookRecord, get_webhook};
use crate::web::body::{Body, json_body};
use crate::web::error::ApiError;
use crate::web::may_act;
use crate::web::query::Paging;

/// The app key's permissions when none are asked for (SPEC §10).
pub const DEFAULT_PERMISSIONS: [&str; 3] = ["chat", "embeddings", "images"];
/// The app key's requests per minute when none is asked for (SPEC §10).
pub const DEFAULT_RATE_LIMIT: u32 = 600;
/// Longest URL accepted.
pub(crate) const MAX_URL: usize = 2048;
/// Most `allowed_origins`.
pub(crate) const MAX_ORIGINS: usize = 50;

/// A URL's host: a name of letters, digits, `-` and `.` (not starting with `.` or `-`), or a
/// bracketed IPv6 literal. Not `*`, `_` or anything else `http::Uri` lets through.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && !host.starts_with(['.', '-'])
        && !host.contains("..")
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An http(s) URL: a scheme, a host (see [`valid_host`]), no spaces or controls, at most 2048
/// bytes.
fn valid_url(text: &str) -> bool {
    if text.len() > MAX_URL || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Ok(uri) = text.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(valid_host)
        && !uri.authority().is_some_and(|a| a.as_str().contains('@'))
}

/// The origin (`scheme://host[:port]`) of a valid URL.
fn origin_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str().to_ascii_lowercase();
    // As browsers send it: without the scheme's default port.
    let authority = match (scheme, uri.port_u16()) {
        ("https", Some(443)) | ("http", Some(80)) => authority
            .rsplit_once(':')
            .map_or(authority.clone(), |(host, _)| host.to_string()),
        _ => authority,
    };
    Some(format!("{scheme}://{authority}"))
}

/// An `allowed_origins` entry: `*`, an origin, or an origin whose host starts with `*.`
/// (`https://*.example.com`). Answers it lowercased.
pub fn parse_origin_pattern(text: &str) -> Option<String> {
    if text == "*" {
        return Some("*".into());
    }
    let (scheme, rest) = text.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains(['/', '?', '#', '@'])
    {
        return None;
    }
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    let host_chars =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']');
    if host.is_empty() || !host.chars().all(host_chars) || host.starts_with(['.', ':']) {
        return None;
    }
    let concrete = format!("{scheme}://{host}");
    let origin = origin_of(&concrete)?;
    let wildcard = rest.starts_with("*.");
    let normal = if wildcard {
        origin.replacen("://", "://*.", 1)
    } else {
        origin.clone()
    };
    // The origin as given, or with the scheme's default port dropped.
    Some(normal)
}

/// Whether an `Origin` (lowercased) matches an `allowed_origins` entry: `*`, the same origin,
/// or for `scheme://*.domain[:port]` any origin of that scheme and port whose host ends in
/// `.domain` (one or more labels before it; not the bare domain).
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" || pattern == origin {
        return true;
    }
    let Some((scheme, rest)) = pattern.split_once("://") else {
        return false;
    };
    let Some(suffix) = rest.strip_prefix("*.") else {
        return false;
    };
    let Some(host) = origin
        .strip_prefix(scheme)
        .and_then(|o| o.strip_prefix("://"))
    else {
        return false;
    };
    let Some(labels) = host
        .strip_suffix(suffix)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return false;
    };
    !labels.is_empty() && !labels.contains([':', '/'])
}

fn url_field(f: &mut Fields, name: &str, required: bool) -> Option<Option<String>> {
    match f.value(name).cloned() {
        None if required => {
            f.fail(name, "is required");
            None
        }
        None => None,
        Some(Value::Null) if !required => Some(None),
        Some(Value::String(s)) if valid_url(s.trim()) => Some(Some(s.trim().to_string())),
        Some(_) => {
            f.fail(name, "must be an http or https URL");
            None
        }
    }
}

fn origins_field(f: &mut Fields) -> Option<Vec<String>> {
    let bad =
        "must be a list of origins (https://example.com), patterns (https://*.example.com) or *";
    match f.value("allowed_origins").cloned() {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.len() <= MAX_ORIGINS => {
            let parsed: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().and_then(parse_origin_pattern))
                .collect();
            if parsed.is_none() {
                f.fail("allowed_origins", bad);
            }
            parsed
        }
        Some(_) => {
            f.fail("allowed_origins", bad);
            None
        }
    }
}

/// Reads the body with the public docs' other names for the same settings.
fn app_fields(body: &[u8]) -> Result<Fields, ApiError> {
    let mut f = Fields::parse(body)?;
    f.alias("allowedEndpoints", "permissions");
    f.alias("website", "website_url");
    f.alias("logo", "logo_url");
    f.alias("appUrl", "app_url");
    f.alias("allowedOrigins", "allowed_origins");
    Ok(f)
}

pub fn app_view(app: &AppRecord, key: Option<&ApiKeyRecord>) -> Value {
    json!({
        "id": app.id,
        "name": app.name,
        "slug": app.slug,
        "app_url": app.app_url,
        "description": app.description,
        "website_url": app.website_url,
        "logo_url": app.logo_url,
        "allowed_origins": app.allowed_origins,
        "api_key_prefix": key.map(|k| k.key_prefix.clone()),
        "subdomain": app.subdomain,
        "permissions": app.permissions,
        "rateLimit": app.rate_limit,
        "is_active": app.is_active,
        "monetization": super::earnings::monetization_view(app),
        "webhook": Value::Null,
        "created_at": time(app.created_at),
        "updated_at": time(app.updated_at),
    })
}

/// A name not taken yet, for a 409's `suggestedName`: the name with ` 2`, ` 3`, … added.
fn suggestion(txn: &impl crate::store::ReadTx, name: &str, id: Uuid) -> Result<String, ApiError> {
    for n in 2..100u32 {
        let candidate = format!("{name} {n}");
        if !slug_taken(txn, &slug_for(&candidate, id))? {
            return Ok(candidate);
        }
    }
    Ok(format!("{name} {}", &id.simple().to_string()[..6]))
}

fn name_conflict(name: &str, suggested: String) -> ApiError {
    ApiError::Conflict {
        message: format!("An app named {name:?} (or with its slug) exists already"),
        details: Some(json!({ "name": "taken", "suggestedName": suggested })),
    }
}

/// `POST /api/v1/apps/check-name {name}`.
pub async fn check_name(state: &AppState, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let mut f = Fields::parse(body)?;
    let name = f.string("name", MAX_NAME, true);
    f.finish()?;
    let name = name.ok_or(ApiError::Internal)?;
    let id = Uuid::new_v4();
    let slug = slug_for(&name, id);
    let probe = slug.clone();
    let (taken, suggested) = state
        .store
        .read_blocking(move |txn| {
            let taken = slug_taken(txn, &probe)?;
            let suggested = if taken {
                Some(suggestion(txn, &name, id)?)
            } else {
                None
            };
            Ok::<_, ApiError>((taken, suggested))
        })
        .await?;
    let mut answer = json!({ "available": !taken, "slug": slug });
    if let (Some(s), Some(map)) = (suggested, answer.as_object_mut()) {
        map.insert("suggestedName".into(), Value::String(s));
    }
    Ok(json_body(StatusCode::OK, &answer))
}

/// `POST /api/v1/apps`.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = state.now().millis();
    let mut f = app_fields(body)?;
    let name = f.string("name", MAX_NAME, true);
    let app_url = url_field(&mut f, "app_url", true).flatten();
    let description = f
        .nullable_string("description", MAX_APP_DESCRIPTION)
        .flatten();
    let website_url = url_field(&mut f, "website_url", false).flatten();
    let logo_url = url_field(&mut f, "logo_url", false).flatten();
    let origins = origins_field(&mut f);
    let permissions = f.permissions();
    let rate_limit = f.rate_limit().flatten();
    f.alias("webhook_url", "webhookUrl");
    let webhook = super::webhooks::settings_of(&mut f, "webhookUrl", false);
    f.finish()?;
    let (Some(name), Some(app_url)) = (name, app_url) else {
        return Err(ApiError::Internal);
    };
    if let Some(w) = &webhook {
        super::webhooks::check_reachable(state, &w.url, "webhookUrl").await?;
    }
    let permissions = match permissions {
        Some(list) if !list.is_empty() => list,
        _ => normalise(&DEFAULT_PERMISSIONS.map(String::from)).unwrap_or_default(),
    };
    // No escalation (SPEC §4, §10): the app key holds nothing its creator does not.
    check_escalation(principal, &permissions)?;
    let allowed_origins = origins.unwrap_or_else(|| origin_of(&app_url).into_iter().collect());
    let key_type = match principal.api_key() {
        Some(k) if k.key_type == KeyType::Test => KeyType::Test,
        _ => KeyType::Live,
    };
    let id = Uuid::new_v4();
    let slug = slug_for(&name, id);
    let plain = generate_key(key_type);
    let mut key = ApiKeyRecord::fresh(
        principal.organization().id,
        principal.user().id,
        format!("App: {name}"),
        key_type,
        plain.display_prefix(),
        plain.hash(),
        now,
    );
    key.app_id = Some(id);
    key.permissions = permissions.clone();
    key.rate_limit = Some(rate_limit.unwrap_or(DEFAULT_RATE_LIMIT));
    let app = AppRecord {
        id,
        organization_id: principal.organization().id,
        created_by: principal.user().id,
        name,
        slug,
        subdomain: String::new(),
        app_url,
        description,
        website_url,
        logo_url,
        allowed_origins,
        permissions,
        rate_limit: rate_limit.unwrap_or(DEFAULT_RATE_LIMIT),
        is_active: true,
        key_id: key.id,
        monetization_enabled: false,
        per_request_micros: 0,
        per_token_micros: 0,
        created_at: now,
        updated_at: now,
    };
    let stored_key = key.clone();
    let hosts = state.hosts.clone();
    let (app, hook) = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let mut app = app;
            if slug_taken(txn, &app.slug)? {
                return Err(name_conflict(
                    &app.name,
                    suggestion(txn, &app.name, app.id)?,
                ));
            }
            // The subdomain: the slug, unless reserved or taken; then with a short suffix.
            let mut label = app.slug.clone();
            let mut tries = 0;
            while subdomain_taken(txn, &label)? {
                tries += 1;
                label = if tries < 16 {
                    format!("{}-{:04x}", app.slug, rand::random::<u16>())
                } else {
                    format!("{}-{:08x}", app.slug, rand::random::<u32>())
                };
            }
            app.subdomain = label;
            insert_key(txn, &stored_key)?;
            insert_app(txn, &app)?;
            // Served at its subdomain from the next request on (SPEC §11).
            let (host, id) = (hosts.subdomain_host(&app.subdomain), app.id);
            on_commit.push(move || hosts.insert(host, id));
            let hook = match webhook {
                Some(settings) => {
                    Some(super::webhooks::store_settings(txn, app.id, settings, now)?)
                }
                None => None,
            };
            Ok::<_, ApiError>((app, hook))
        })
        .await?;
    Ok(created_app(&app, &key, &plain, hook, now))
}

fn created_app(
    app: &AppRecord,
    key: &ApiKeyRecord,
    plain: &PlainKey,
    hook: Option<(WebhookRecord, Option<String>)>,
    now: i64,
) -> Response<Body> {
    let mut view = app_view(app, Some(key));
    let (hook, secret) = match hook {
        Some((h, s)) => (Some(h), s),
        None => (None, None),
    };
    with_webhook(&mut view, hook.as_ref(), now);
    if let Some(map) = view.as_object_mut() {
        // The public docs show the plaintext in `app.api_key` too; it is shown only here.
        map.insert("api_key".into(), Value::String(plain.expose().to_string()));
    }
    let mut answer = json!({ "success": true, "app": view, "apiKey": plain.expose() });
    if let (Some(secret), Some(map)) = (secret, answer.as_object_mut()) {
        // The webhook's signing secret, shown this once (SPEC §10).
        map.insert("webhookSecret".into(), Value::String(secret));
    }
    json_body(StatusCode::OK, &answer)
}

/// Sets an app view's `webhook` (the settings, never the secret).
fn with_webhook(view: &mut Value, hook: Option<&WebhookRecord>, now: i64) {
    if let Some(map) = view.as_object_mut() {
        map.insert(
            "webhook".into(),
            hook.map_or(Value::Null, |h| super::webhooks::webhook_view(h, now)),
        );
    }
}

/// Loads an app the caller's scope reaches: another organization's is 404, a sibling of an app
/// key's app 403 (`web::may_act`).
pub fn reachable_app(
    txn: &impl crate::store::ReadTx,
    id: Uuid,
    principal: &Principal,
) -> Result<AppRecord, ApiError> {
    let app = get_app(txn, id)?.ok_or(ApiError::NotFound)?;
    may_act(
        principal,
        Owner {
            organization: app.organization_id,
            app: Some(app.id),
        },
    )?;
    Ok(app)
}

/// Loads an app the caller may manage: [`reachable_app`] (404 across organizations), and never
/// with an app's key (403: an app key does not manage apps, its own included).
pub fn managed_app(
    txn: &impl crate::store::ReadTx,
    id: Uuid,
    principal: &Principal,
) -> Result<AppRecord, ApiError> {
    let app = get_app(txn, id)?.ok_or(ApiError::NotFound)?;
    if app.organization_id != principal.organization().id {
        return Err(ApiError::NotFound);
    }
    if matches!(principal.scope(), crate::auth::scope::Scope::App { .. }) {
        return Err(ApiError::Forbidden {
            message: "An app's key cannot manage apps".into(),
            required: None,
        });
    }
    reachable_app(txn, id, principal)
}

/// `GET /api/v1/apps`.
pub async fn list(
    state: &AppState,
    principal: &Principal,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let paging = Paging::from_query(query, 50, 100)?;
    let org = principal.organization().id;
    let (apps, keys) = state
        .store
        .read_blocking(move |txn| {
            let apps = list_apps_of_org(txn, org)?;
            let keys = apps
                .iter()
                .map(|a| Ok((get_key(txn, a.key_id)?, get_webhook(txn, a.id)?)))
                .collect::<Result<Vec<_>, crate::store::StoreError>>()?;
            Ok::<_, ApiError>((apps, keys))
        })
        .await?;
    let now = state.now().millis();
    let range = paging.slice(&apps);
    let shown: Vec<Value> = apps
        .get(range.clone())
        .unwrap_or_default()
        .iter()
        .zip(keys.get(range).unwrap_or_default())
        .map(|(app, (key, hook))| {
            let mut view = app_view(app, key.as_ref());
            with_webhook(&mut view, hook.as_ref(), now);
            view
        })
        .collect();
    Ok(json_body(
        StatusCode::OK,
        &json!({ "apps": shown, "page": paging.page, "limit": paging.limit, "total": apps.len() }),
    ))
}

/// `GET /api/v1/apps/{id}` (an app key: its own app only).
pub async fn get(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    // The webhook is the app's settings: its own key does not see them (SPEC §10).
    let manages = !matches!(principal.scope(), crate::auth::scope::Scope::App { .. });
    let (app, key, hook) = state
        .store
        .read_blocking(move |txn| {
            let app = reachable_app(txn, id, &requester)?;
            let key = get_key(txn, app.key_id)?;
            let hook = if manages { get_webhook(txn, id)? } else { None };
            Ok::<_, ApiError>((app, key, hook))
        })
        .await?;
    let mut view = app_view(&app, key.as_ref());
    with_webhook(&mut view, hook.as_ref(), state.now().millis());
    Ok(json_body(
        StatusCode::OK,
        &json!({ "success": true, "app": view }),
    ))
}

/// `PATCH /api/v1/apps/{id}`: the settings; the app key follows its permissions, rate limit and
/// active flag in the same transaction, and leaves the key cache after the commit.
pub async fn update(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = state.now().millis();
    let mut f = app_fields(body)?;
    let name = f.string("name", MAX_NAME, false);
    // An app always has its URL: `null` is refused, not ignored.
    if f.value("app_url").is_some_and(Value::is_null) {
        f.fail("app_url", "must be an http or https URL");
    }
    let app_url = url_field(&mut f, "app_url", false).flatten();
    let description = f.nullable_string("description", MAX_APP_DESCRIPTION);
    let website_url = url_field(&mut f, "website_url", false);
    let logo_url = url_field(&mut f, "logo_url", false);
    let origins = origins_field(&mut f);
    let permissions = f.permissions();
    let rate_limit = f.rate_limit();
    let is_active = f.bool("is_active");
    f.finish()?;
    if let Some(list) = &permissions {
        check_escalation(principal, list)?;
    }
    let requester = principal.clone();
    let cache = state.key_cache.clone();
    let (app, key, hook) = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let mut app = managed_app(txn, id, &requester)?;
            if let Some(name) = name {
                app.name = name;
            }
            if let Some(url) = app_url {
                app.app_url = url;
            }
            if let Some(d) = description {
                app.description = d;
            }
            if let Some(u) = website_url {
                app.website_url = u;
            }
            if let Some(u) = logo_url {
                app.logo_url = u;
            }
            if let Some(o) = origins {
                app.allowed_origins = o;
            }
            if let Some(p) = permissions.filter(|p| !p.is_empty()) {
                app.permissions = p;
            }
            if let Some(r) = rate_limit {
                app.rate_limit = r.unwrap_or(DEFAULT_RATE_LIMIT);
            }
            if let Some(a) = is_active {
                app.is_active = a;
            }
            app.updated_at = now;
            update_app(txn, &app)?;
            let mut key = get_key(txn, app.key_id)?;
            if let Some(key) = &mut key {
                key.permissions = app.permissions.clone();
                key.rate_limit = Some(app.rate_limit);
                key.is_active = app.is_active;
                key.updated_at = now;
                update_key(txn, key)?;
                let hash = key.key_hash;
                on_commit.push(move || cache.invalidate(&hash));
            }
            let hook = get_webhook(txn, id)?;
            Ok::<_, ApiError>((app, key, hook))
        })
        .await?;
    let mut view = app_view(&app, key.as_ref());
    with_webhook(&mut view, hook.as_ref(), now);
    Ok(json_body(
        StatusCode::OK,
        &json!({ "success": true, "app": view }),
    ))
}

/// `DELETE /api/v1/apps/{id}`: the app and its key go; ledger rows stay.
pub async fn delete(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let requester = principal.clone();
    let cache = state.key_cache.clone();
    let hosts = state.hosts.clone();
    let certs_map = state.certs.clone();
    state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let app = managed_app(txn, id, &requester)?;
            if let Some(key) = delete_key(txn, app.key_id)? {
                on_commit.push(move || cache.invalidate(&key.key_hash));
            }
            // Its subdomain and domains are neither allowed nor served from the next request.
            let mut gone = crate::store::domains::remove_all_of_app(txn, id)?;
            for name in &gone {
                crate::domains::certs::release(txn, name)?;
            }
            let certs = certs_map.clone();
            let served = gone.clone();
            gone.push(hosts.subdomain_host(&app.subdomain));
            on_commit.push(move || {
                for host in gone {
                    hosts.remove(&host);
                }
                for name in served {
                    certs.remove(&name);
                }
            });
            delete_app(txn, id)?;
            // Its webhook and every delivery of it go too (pending ones are never sent).
            crate::store::webhooks::delete_of_app(txn, id)?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(json_body(StatusCode::OK, &json!({ "success": true })))
}

/// `POST /api/v1/apps/{id}/regenerate-api-key`: a new secret for the same key; the old one fails
/// on its next use (the cache entry goes after the commit).
pub async fn regenerate_key(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<Response<Body>, ApiError> {
    let now = state.now().millis();
    let requester = principal.clone();
    let cache = state.key_cache.clone();
    let caller_is_test = principal
        .api_key()
        .is_some_and(|k| k.key_type == KeyType::Test);
    let plain = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let app = managed_app(txn, id, &requester)?;
            let mut key = get_key(txn, app.key_id)?.ok_or(ApiError::NotFound)?;
            // No escalation (SPEC §4): a new secret of a key is a new key in the caller's hands.
            check_escalation(&requester, &key.permissions)?;
            // A test credential gets a test key back (SPEC §10).
            if caller_is_test {
                key.key_type = KeyType::Test;
            }
            let old = key.key_hash;
            let plain = new_secret(&mut key, now);
            update_key(txn, &key)?;
            on_commit.push(move || cache.invalidate(&old));
            Ok::<_, ApiError>(plain)
        })
        .await?;
    Ok(json_body(
        StatusCode::OK,
        &json!({ "success": true, "apiKey": plain.expose() }),
    ))
}

/// A dollar amount as §10's answers show it: a JSON number with at most 6 decimals (the public
/// docs show `125.5`), the exact integer beside it in `*_micros`.
pub fn dollars_number(micros: i64) -> Value {
    // serde_json keeps a number's text (`arbitrary_precision`): `0.000001`, never `1e-6`.
    serde_json::from_str::<Value>(&crate::money::format_dollars_short(micros))
        .unwrap_or(Value::Null)
}

/// A dollar input of SPEC §10: a JSON number or a string, at most 6 decimals, read exactly from
/// its text (never through floating point).
pub fn dollars_input(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => crate::money::parse_dollars_number(&n.to_string()),
        Value::String(s) => crate::money::parse_dollars(s.trim()),
        _ => None,
    }
}

/// `GET /api/v1/apps/{id}/analytics?period=YYYY-MM` (an app key: its own app).
pub async fn analytics(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    use crate::store::usage::{Dimension, UsageTotals};
    let period = super::usage::period_of(state, query)?;
    let requester = principal.clone();
    let app = state
        .store
        .read_blocking(move |txn| reachable_app(txn, id, &requester))
        .await?;
    let prefix = format!("{}/", app.id);
    let rows = super::usage::rows_of(
        state,
        app.organization_id,
        period,
        &[Dimension::AppEndpoint],
        Some(prefix.clone()),
    )
    .await?;
    let month = crate::store::usage::month_of_day(period.first_day());
    let pending_users = state.usage.pending_month_users(app.id, month);
    let app_id = app.id;
    let unique_users = state
        .store
        .read_blocking(move |txn| {
            let mut n = crate::store::usage::month_user_count(txn, app_id, month)?;
            for user in &pending_users {
                if !crate::store::usage::month_user_known(txn, app_id, month, user)? {
                    n += 1;
                }
            }
            Ok::<_, ApiError>(n)
        })
        .await?;
    let mut totals = UsageTotals::default();
    let mut daily: std::collections::BTreeMap<i64, UsageTotals> = (period.first_day()
        ..=period.last_day())
        .map(|d| (d, UsageTotals::default()))
        .collect();
    let mut by_endpoint: std::collections::BTreeMap<String, UsageTotals> = Default::default();
    // Every call of the app has one row by route and day: app-key calls and calls through it.
    for (key, row) in &rows {
        if let Some(endpoint) = key.name.strip_prefix(&prefix) {
            totals.add(row);
            daily.entry(key.day).or_default().add(row);
            by_endpoint
                .entry(endpoint.to_string())
                .or_default()
                .add(row);
        }
    }
    let endpoint = |name: &str| by_endpoint.get(name).copied().unwrap_or_default();
    let (chat, embeddings, images) = (
        endpoint("chat.completions"),
        endpoint("embeddings"),
        endpoint("images.generations"),
    );
    Ok(json_body(
        StatusCode::OK,
        &json!({
            "appId": app.id,
            "period": period.text(),
            "usage": {
                "totalRequests": totals.requests,
                "chatCompletions": chat.requests,
                "embeddings": embeddings.requests,
                "images": images.requests,
            },
            "costs": {
                "total": dollars_number(totals.cost_micros),
                "total_micros": totals.cost_micros,
                "byEndpoint": {
                    "chat": dollars_number(chat.cost_micros),
                    "chat_micros": chat.cost_micros,
                    "embeddings": dollars_number(embeddings.cost_micros),
                    "embeddings_micros": embeddings.cost_micros,
                    "images": dollars_number(images.cost_micros),
                    "images_micros": images.cost_micros,
                },
            },
            "uniqueUsers": unique_users,
            "daily": daily.iter().map(|(day, t)| json!({
                "date": super::usage::date_text(*day),
                "requests": t.requests,
                "cost": dollars_number(t.cost_micros),
                "cost_micros": t.cost_micros,
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// `GET /api/v1/apps/{id}/users?page&limit`: the app's end users, most recently seen first.
pub async fn users(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    use crate::store::usage::{AppUserTotals, app_user, app_users_newest};
    let paging = Paging::from_query(query, 50, 100)?;
    let requester = principal.clone();
    // The users of the last second are not stored yet: the stored newest ones are read with
    // room for them, and any of them stored further down is read by itself.
    let pending: std::collections::HashMap<String, AppUserTotals> =
        state.usage.pending_app_users(id).into_iter().collect();
    let take = paging
        .offset()
        .saturating_add(paging.limit as usize)
        .saturating_add(pending.len());
    let (list, total) = state
        .store
        .read_blocking(move |txn| {
            reachable_app(txn, id, &requester)?;
            let (newest, mut total) = app_users_newest(txn, id, take)?;
            let mut merged: std::collections::HashMap<String, AppUserTotals> =
                newest.into_iter().collect();
            for (user, totals) in pending {
                if let Some(t) = merged.get_mut(&user) {
                    t.merge(&totals);
                    continue;
                }
                let mut t = totals;
                match app_user(txn, id, &user)? {
                    Some(stored) => t.merge(&stored),
                    None => total += 1,
                }
                merged.insert(user, t);
            }
            let mut list: Vec<(String, AppUserTotals)> = merged.into_iter().collect();
            list.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(&b.0)));
            Ok::<_, ApiError>((list, total))
        })
        .await?;
    let start = paging.offset().min(list.len());
    let range = start..(start + paging.limit as usize).min(list.len());
    let shown: Vec<Value> = list
        .get(range)
        .unwrap_or_default()
        .iter()
        .map(|(user, t)| {
            json!({
                "id": user,
                "firstSeen": time(t.first_seen),
                "lastSeen": time(t.last_seen),
                "requestCount": t.requests,
                "cost": dollars_number(t.cost_micros),
                "cost_micros": t.cost_micros,
            })
        })
        .collect();
    Ok(json_body(
        StatusCode::OK,
        &json!({ "users": shown, "total": total, "page": paging.page, "limit": paging.limit }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn origin_patterns() {
        assert_eq!(parse_origin_pattern("*").as_deref(), Some("*"));
        assert_eq!(
            parse_origin_pattern("https://App.Example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            parse_origin_pattern("https://*.example.com").as_deref(),
            Some("https://*.example.com")
        );
        assert_eq!(
            parse_origin_pattern("http://localhost:5173").as_deref(),
            Some("http://localhost:5173")
        );
        for bad in [
            "example.com",
            "ftp://x.com",
            "https://x.com/",
            "https://x.com/path",
            "https://",
            "https://u@x.com",
            "https://*",
            "https://a.*.com",
        ] {
            assert_eq!(parse_origin_pattern(bad), None, "{bad}");
        }
        assert!(valid_url("https://example.com/app"));
        assert!(!valid_url("javascript:alert(1)"));
        assert!(!valid_url("https://exa mple.com"));
        // Found by schemathesis: `http::Uri` takes these hosts; an app URL must not.
        assert!(!valid_url("https://y.t5.com*"));
        assert!(!valid_url("https://a_b.com/"));
        assert!(!valid_url("https://.example.com"));
        assert!(valid_url("http://[::1]:3000/x"));
        assert!(!valid_url("http://[zz]/"));
        assert!(valid_url("http://127.0.0.1:8080"));
        assert_eq!(
            origin_of("https://Example.com:8443/x").as_deref(),
            Some("https://example.com:8443")
        );
    }

    #[test]
    fn origins_match_their_patterns() {
        assert!(origin_matches("*", "https://anything.io"));
        assert!(origin_matches("https://app.io", "https://app.io"));
        assert!(!origin_matches("https://app.io", "http://app.io"));
        assert!(!origin_matches("https://app.io", "https://app.io:8443"));
        let wild = "https://*.example.com";
        assert!(origin_matches(wild, "https://a.example.com"));
        assert!(origin_matches(wild, "https://a.b.example.com"));
        assert!(!origin_matches(wild, "https://example.com"));
        assert!(!origin_matches(wild, "https://evilexample.com"));
        assert!(!origin_matches(wild, "http://a.example.com"));
        assert!(!origin_matches(wild, "https://a.example.com:444"));
        assert!(!origin_matches(wild, "https://a.example.com.evil.io"));
    }

    proptest! {
        #[test]
        fn any_text_is_a_pattern_or_not_without_panic(text in "\\PC{0,60}") {
            if let Some(p) = parse_origin_pattern(&text) {
                prop_assert_eq!(parse_origin_pattern(&p), Some(p.clone()));
            }
            let _ = valid_url(&text);
        }
    }
}
