//! Authentication: which credential a request presents, in the order of SPEC §5, and whether it
//! is good. The first credential present decides; a present but bad one is a failure, never a
//! fall-through to the next. Failures carry a precise reason for logs and metrics; the caller
//! only ever sees the generic 401.

pub mod api_key;
pub mod header;

use http::HeaderMap;

use crate::state::AppState;
use crate::store::StoreError;
use crate::store::keys::{ApiKeyRecord, find_key_by_hash};
use crate::store::orgs::{OrgRecord, get_org};
use crate::store::users::{UserRecord, get_user};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub method: AuthMethod,
    pub user: UserRecord,
    pub organization: OrgRecord,
    pub api_key: Option<ApiKeyRecord>,
}

/// Why authentication failed: both labels are static, for logs and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailure {
    pub method: &'static str,
    pub reason: &'static str,
}

impl AuthFailure {
    const fn api_key(reason: &'static str) -> AuthFailure {
        AuthFailure {
            method: "api_key",
            reason,
        }
    }
}

/// The credential a request presents, parsed but not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    ApiKey(&'a str),
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a [u8]>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthFailure::api_key(header::HeaderError::Repeated.reason()));
    }
    Ok(first.map(|v| v.as_bytes()))
}

/// Picks the credential by SPEC §5's order (wallet headers, session cookie and x402 join as
/// their issues land): `X-API-Key`, then `Authorization: Bearer`.
pub fn presented_credential(headers: &HeaderMap) -> Result<Option<Presented<'_>>, AuthFailure> {
    if let Some(value) = single_header(headers, "x-api-key")? {
        let token =
            header::parse_api_key_header(value).map_err(|e| AuthFailure::api_key(e.reason()))?;
        return Ok(Some(Presented::ApiKey(token)));
    }
    if let Some(value) = single_header(headers, "authorization")? {
        let token = header::parse_bearer(value).map_err(|e| AuthFailure::api_key(e.reason()))?;
        return Ok(Some(Presented::ApiKey(token)));
    }
    Ok(None)
}

/// Authenticates the request's credential; `Ok(None)` when it presents none.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, AuthFailure> {
    match presented_credential(headers)? {
        Some(Presented::ApiKey(token)) => authenticate_api_key(state, token).await.map(Some),
        None => Ok(None),
    }
}

enum KeyLookup {
    Found(Box<(ApiKeyRecord, Option<OrgRecord>, Option<UserRecord>)>),
    Unknown,
}

async fn authenticate_api_key(state: &AppState, token: &str) -> Result<Principal, AuthFailure> {
    // A malformed or wrong-checksum `ek_` key is refused before any database work.
    if api_key::classify_presented_key(token).is_none() {
        return Err(AuthFailure::api_key("malformed_key"));
    }
    let hash = api_key::hash_secret(token);
    let lookup = state
        .store
        .read_blocking(move |txn| {
            let Some(key) = find_key_by_hash(txn, &hash)? else {
                return Ok::<_, StoreError>(KeyLookup::Unknown);
            };
            let org = get_org(txn, key.organization_id)?;
            let user = get_user(txn, key.user_id)?;
            Ok(KeyLookup::Found(Box::new((key, org, user))))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "API key lookup failed");
            AuthFailure::api_key("store_error")
        })?;
    let (key, org, user) = match lookup {
        KeyLookup::Found(found) => *found,
        KeyLookup::Unknown => return Err(AuthFailure::api_key("unknown_key")),
    };
    if !key.is_active {
        return Err(AuthFailure::api_key("inactive_key"));
    }
    if key.expires_at.is_some_and(|at| at <= state.now().millis()) {
        return Err(AuthFailure::api_key("expired_key"));
    }
    let organization = org
        .filter(|o| o.is_active)
        .ok_or(AuthFailure::api_key("inactive_organization"))?;
    let user = user
        .filter(|u| u.is_active)
        .ok_or(AuthFailure::api_key("inactive_user"))?;
    Ok(Principal {
        method: AuthMethod::ApiKey,
        user,
        organization,
        api_key: Some(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn order_and_no_fall_through() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_credential(&h), Ok(None));
        h.insert("authorization", HeaderValue::from_static("Bearer b"));
        assert_eq!(presented_credential(&h), Ok(Some(Presented::ApiKey("b"))));
        h.insert("x-api-key", HeaderValue::from_static("a"));
        assert_eq!(presented_credential(&h), Ok(Some(Presented::ApiKey("a"))));
        // A bad X-API-Key does not fall through to a good Authorization header.
        h.insert("x-api-key", HeaderValue::from_static(""));
        assert!(presented_credential(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(
            presented_credential(&h),
            Err(AuthFailure::api_key("authorization_not_bearer"))
        );
        let mut h = HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static("a"));
        h.append("x-api-key", HeaderValue::from_static("b"));
        assert_eq!(
            presented_credential(&h),
            Err(AuthFailure::api_key("repeated_header"))
        );
    }
}
