//! Sign-In With Ethereum and With Solana (SPEC §5.1, §5.2) and logout (§5.3): nonces, verify,
//! the wallet's account (created with the sign-up bonus on first sign-in), the rotated
//! `SIWE sign-in` / `SIWS sign-in` key, and the session cookie.
//!
//! Every verify failure is a 401 with the generic message; the precise reason is logged and
//! counted. The nonce is used up only after every other check has passed.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::auth::api_key::{generate_key, hash_secret};
use crate::auth::nonce::NonceChain;
use crate::auth::session::{
    SESSION_MAX_AGE_SECS, clearing_cookie, new_session_token, same_origin, session_cookie,
    session_token,
};
use crate::auth::siwe::{Expected, SiweMessage, parse_evm_chain_id, verify_signed};
use crate::auth::siws::{
    CHAIN_IDS, Expected as SiwsExpected, SiwsMessage, verify_signed as verify_siws_signed,
};
use crate::money::format_dollars;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts::{Bonus, Wallet, find_or_create_wallet_account};
use crate::store::keys::{
    ApiKeyRecord, KeyHash, KeyType, delete_key, insert_key, list_keys_of_org,
};
use crate::store::sessions::{SessionRecord, delete_session, insert_session};
use crate::web::body::{Body, json_body, parse_json};
use crate::web::error::ApiError;
use crate::web::query::{first, parse_query};

/// The statement the nonce routes suggest.
pub const STATEMENT: &str = "Sign in to Eliza Cloud";
/// How far in the future `Issued At` may be (SPEC §5.1).
pub const MAX_ISSUED_AT_SKEW_MS: i64 = 5 * 60_000;

fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn chain_error(why: &str) -> ApiError {
    ApiError::Validation {
        message: format!("Invalid chainId: {why}"),
        details: json!({ "chainId": why }),
    }
}

fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    parse_query(query.unwrap_or("")).map_err(|_| ApiError::Validation {
        message: "Malformed query string".into(),
        details: json!({ "query": "bad percent-encoding" }),
    })
}

pub fn siwe_nonce(state: &AppState, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(query)?;
    let chain_id = match first(&pairs, "chainId") {
        None => 1,
        Some(text) => parse_evm_chain_id(text).ok_or_else(|| {
            chain_error("must be a positive decimal integer without leading zeros")
        })?,
    };
    // `&address=0x…` (any case): the exact message to sign for it, so a page or an agent needs no
    // keccak of its own (SPEC §5.1).
    let address =
        match first(&pairs, "address") {
            None => None,
            Some(text) => Some(crate::crypto::eth::Address::parse_any_case(text).map_err(
                |_| ApiError::Validation {
                    message: "address: must be a 0x-prefixed 40-hex-digit Ethereum address".into(),
                    details: json!({ "address": "not an Ethereum address" }),
                },
            )?),
        };
    let url = &state.config.public_url;
    let now = state.now();
    let nonce = state
        .nonces
        .issue(&NonceChain::Ethereum(chain_id), &url.url, now);
    let mut answer = json!({
        "nonce": nonce, "domain": url.host, "uri": url.url, "chainId": chain_id,
        "version": "1", "statement": STATEMENT,
    });
    if let (Some(address), Some(fields)) = (address, answer.as_object_mut()) {
        let message = SiweMessage {
            scheme: None,
            domain: url.host.clone(),
            address,
            statement: Some(STATEMENT.into()),
            uri: url.url.clone(),
            version: "1".into(),
            chain_id,
            nonce: nonce.clone(),
            issued_at: crate::auth::siwe::MessageTime {
                text: now.to_rfc3339(),
                at: now,
            },
            expiration_time: None,
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        fields.insert("message".into(), json!(message.print_unchecked()));
    }
    Ok(no_store(json_body(StatusCode::OK, &answer)))
}

pub fn siws_nonce(state: &AppState, query: Option<&str>) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(query)?;
    let chain_id = first(&pairs, "chainId").unwrap_or("solana:mainnet");
    if !CHAIN_IDS.contains(&chain_id) {
        return Err(chain_error(&format!(
            "must be one of {}",
            CHAIN_IDS.join(", ")
        )));
    }
    let url = &state.config.public_url;
    let nonce = state.nonces.issue(
        &NonceChain::Solana(chain_id.to_string()),
        &url.url,
        state.now(),
    );
    Ok(no_store(json_body(
        StatusCode::OK,
        &json!({
            "nonce": nonce, "domain": url.host, "uri": url.url, "chainId": chain_id,
            "version": "1", "statement": STATEMENT,
        }),
    )))
}

#[derive(Deserialize)]
struct VerifyBody {
    message: String,
    signature: String,
}

/// Logs and counts the precise reason; the caller sees only the generic 401.
fn refuse(state: &AppState, method: &'static str, reason: &'static str) -> ApiError {
    state.metrics.record_auth_failure(method, reason);
    tracing::info!(method, reason, "sign-in refused");
    ApiError::Unauthorized
}

pub async fn verify_siwe(state: &AppState, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let body: VerifyBody = parse_json(body)?;
    let now = state.now();
    let fail = |reason| refuse(state, "siwe", reason);
    let message = SiweMessage::parse(&body.message).map_err(|e| fail(e.reason()))?;
    let ours = &state.config.public_url;
    // The nonce's MAC binds the chain and URI it was issued for (our public URL).
    let chain = NonceChain::Ethereum(message.chain_id);
    state
        .nonces
        .check(&message.nonce, &chain, &ours.url, now)
        .map_err(|e| fail(e.reason()))?;
    let expected = Expected {
        domain: &ours.host,
        https: ours.https,
        uri: &ours.url,
        chain_id: message.chain_id,
    };
    verify_signed(
        &message,
        &body.message,
        &body.signature,
        &expected,
        now,
        MAX_ISSUED_AT_SKEW_MS,
    )
    .map_err(fail)?;
    if !state.nonces.consume(&message.nonce, now) {
        return Err(fail("nonce_already_used"));
    }
    let wallet = Wallet::Evm(message.address.to_lower_hex());
    complete_sign_in(
        state,
        wallet,
        message.address.to_checksum(),
        "SIWE sign-in",
        "siwe",
    )
    .await
}

pub async fn verify_siws(state: &AppState, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let body: VerifyBody = parse_json(body)?;
    let now = state.now();
    let fail = |reason| refuse(state, "siws", reason);
    let message = SiwsMessage::parse(&body.message).map_err(|e| fail(e.reason()))?;
    let ours = &state.config.public_url;
    let chain = NonceChain::Solana(message.chain_id.clone());
    state
        .nonces
        .check(&message.nonce, &chain, &ours.url, now)
        .map_err(|e| fail(e.reason()))?;
    let expected = SiwsExpected {
        domain: &ours.host,
        uri: &ours.url,
    };
    verify_siws_signed(
        &message,
        &body.message,
        &body.signature,
        &expected,
        now,
        MAX_ISSUED_AT_SKEW_MS,
    )
    .map_err(fail)?;
    if !state.nonces.consume(&message.nonce, now) {
        return Err(fail("nonce_already_used"));
    }
    let address = message.address.to_base58();
    complete_sign_in(
        state,
        Wallet::Solana(address.clone()),
        address,
        "SIWS sign-in",
        "siws",
    )
    .await
}

/// Why the sign-in transaction did not commit.
enum SignInError {
    Inactive,
    Store(StoreError),
}

impl From<StoreError> for SignInError {
    fn from(e: StoreError) -> Self {
        SignInError::Store(e)
    }
}

/// The account (created on first sign-in, with the bonus), the rotated sign-in key and a new
/// session, committed together; then the cache forgets the keys that were switched off.
async fn complete_sign_in(
    state: &AppState,
    wallet: Wallet,
    address: String,
    key_name: &'static str,
    method: &'static str,
) -> Result<Response<Body>, ApiError> {
    let now = state.now().millis();
    let plain = generate_key(KeyType::Live);
    let token = new_session_token();
    let token_hash = hash_secret(token.expose());
    let bonus = Bonus::Grant(state.config.initial_free_credits_micros);
    let (prefix, key_hash) = (plain.display_prefix(), plain.hash());
    let cache = state.key_cache.clone();
    let account = state
        .store
        .write_blocking_hooked(move |txn, on_commit| {
            let account = find_or_create_wallet_account(txn, &wallet, bonus, now)?;
            // A switched-off account signs in to nothing: the transaction rolls back.
            if !account.organization.is_active || !account.user.is_active {
                return Err(SignInError::Inactive);
            }
            // The user's earlier sign-in keys are deleted, not switched off (SPEC §5.1), so an
            // agent that signs in on every start does not grow its key list.
            let mut retired: Vec<KeyHash> = Vec::new();
            for key in list_keys_of_org(txn, account.organization.id)? {
                if key.user_id == account.user.id && key.name == key_name && key.app_id.is_none() {
                    delete_key(txn, key.id)?;
                    retired.push(key.key_hash);
                }
            }
            on_commit.push(move || {
                for hash in &retired {
                    cache.invalidate(hash);
                }
            });
            let record = ApiKeyRecord::fresh(
                account.organization.id,
                account.user.id,
                key_name.into(),
                KeyType::Live,
                prefix,
                key_hash,
                now,
            );
            insert_key(txn, &record)?;
            insert_session(
                txn,
                &SessionRecord {
                    token_hash,
                    user_id: account.user.id,
                    organization_id: account.organization.id,
                    created_at: now,
                    expires_at: now + SESSION_MAX_AGE_SECS * 1000,
                },
            )?;
            Ok::<_, SignInError>(account)
        })
        .await
        .map_err(|e| match e {
            SignInError::Inactive => {
                state
                    .metrics
                    .record_auth_failure(method, "inactive_account");
                tracing::info!(method, reason = "inactive_account", "sign-in refused");
                ApiError::Unauthorized
            }
            SignInError::Store(e) => ApiError::from(e),
        })?;
    let mut response = json_body(
        StatusCode::OK,
        &json!({
            "apiKey": plain.expose(),
            "address": address,
            "isNewAccount": account.is_new,
            "user": {
                "id": account.user.id,
                "wallet_address": address,
                "organization_id": account.organization.id,
            },
            "organization": {
                "id": account.organization.id,
                "name": account.organization.name,
                "slug": account.organization.slug,
            },
            "initialCreditsGranted": format_dollars(account.bonus_micros),
            "initialCreditsGranted_micros": account.bonus_micros,
        }),
    );
    if let Ok(cookie) =
        HeaderValue::from_str(&session_cookie(token.expose(), &state.config.public_url))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(no_store(response))
}

/// Why a key cannot be exchanged for a session (SPEC §13), or `None` when it can: only an
/// unrestricted live key of an organization.
pub fn exchange_refusal(principal: &crate::auth::Principal) -> Option<&'static str> {
    let key = principal.api_key()?;
    if key.app_id.is_some() {
        Some("an app's key cannot open the dashboard")
    } else if key.key_type != KeyType::Live {
        Some("a test key cannot open the dashboard")
    } else if !matches!(
        principal.grant,
        crate::auth::permissions::Grant::Unrestricted
    ) {
        Some("a key with a permission list cannot open the dashboard; use an unrestricted key")
    } else {
        None
    }
}

/// Exchanges an API key for a browser session bound to it (SPEC §13): the key is checked as
/// `X-API-Key` would be (401 when it fails), then must be an unrestricted live organization
/// key (else 403). Answers the session's cookie and who signed in; the key is not kept.
pub async fn exchange_key(
    state: &AppState,
    presented: &str,
) -> Result<(HeaderValue, serde_json::Value), ApiError> {
    let principal = crate::auth::principal_of_key(state, presented.trim())
        .await
        .map_err(|failure| {
            state
                .metrics
                .record_auth_failure("key_session", failure.reason);
            tracing::info!(
                method = "key_session",
                reason = failure.reason,
                "sign-in refused"
            );
            ApiError::Unauthorized
        })?;
    if let Some(why) = exchange_refusal(&principal) {
        return Err(ApiError::Forbidden {
            message: format!("This key cannot sign in: {why}"),
            required: None,
        });
    }
    let key_hash = principal
        .api_key()
        .map(|k| k.key_hash)
        .ok_or(ApiError::Unauthorized)?;
    let now = state.now().millis();
    let token = new_session_token();
    let token_hash = hash_secret(token.expose());
    let (user, organization) = (principal.user().clone(), principal.organization().clone());
    let (user_id, organization_id) = (user.id, organization.id);
    state
        .store
        .write_blocking(move |txn| {
            insert_session(
                txn,
                &SessionRecord {
                    token_hash,
                    user_id,
                    organization_id,
                    created_at: now,
                    expires_at: now + SESSION_MAX_AGE_SECS * 1000,
                },
            )?;
            crate::store::sessions::bind_session_key(txn, &token_hash, &key_hash)
        })
        .await?;
    let cookie = HeaderValue::from_str(&session_cookie(token.expose(), &state.config.public_url))
        .map_err(|_| ApiError::Internal)?;
    let who = json!({
        "success": true,
        "user": { "id": user.id },
        "organization": { "id": organization.id, "name": organization.name, "slug": organization.slug },
    });
    Ok((cookie, who))
}

/// `POST /api/auth/key-session {apiKey}`: [`exchange_key`], answered as JSON with the cookie.
pub async fn key_session(state: &AppState, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let mut f = crate::api::input::Fields::parse(body)?;
    let key = f.string("apiKey", crate::api::input::MAX_TOKEN, true);
    f.finish()?;
    let key = key.ok_or(ApiError::Internal)?;
    let (cookie, who) = exchange_key(state, &key).await?;
    let mut response = json_body(StatusCode::OK, &who);
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(no_store(response))
}

/// Deletes the session the cookie names and clears the cookie. From another origin (an `Origin`
/// or `Referer` that is not ours, or a cookie without either) it is 403 and clears nothing, so a
/// cross-site form cannot log anyone out.
pub async fn logout(state: &AppState, headers: &HeaderMap) -> Result<Response<Body>, ApiError> {
    let origin = headers.get(header::ORIGIN).map(|v| v.as_bytes());
    let referer = headers.get(header::REFERER).map(|v| v.as_bytes());
    let ours = same_origin(origin, referer, &state.config.public_url);
    let cookies = headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes());
    let token = session_token(cookies).ok().flatten();
    let says_where = origin.is_some() || referer.is_some();
    if !ours && (says_where || token.is_some()) {
        return Err(ApiError::Forbidden {
            message: "Cross-site request refused".into(),
            required: None,
        });
    }
    if let Some(token) = token {
        let hash = hash_secret(token);
        state
            .store
            .write_blocking(move |txn| delete_session(txn, &hash))
            .await?;
    }
    let mut response = json_body(StatusCode::OK, &json!({ "success": true }));
    if let Ok(cookie) = HeaderValue::from_str(&clearing_cookie(&state.config.public_url)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}
