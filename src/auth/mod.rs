//! Authentication: which credential a request presents, in the order of SPEC §5, and whether it
//! is good. The first credential present decides; a present but bad one is a failure, never a
//! fall-through to the next. Failures carry a precise reason for logs and metrics; the caller
//! only ever sees the generic 401.

pub mod api_key;
pub mod header;
pub mod key_cache;
pub mod nonce;
pub mod permissions;
pub mod rfc3986;
pub mod scope;
pub mod session;
pub mod siwe;
pub mod siws;
pub mod wallet;

use std::sync::Arc;

use http::HeaderMap;

use crate::state::AppState;
use crate::store::StoreError;
use crate::store::accounts::{Bonus, Wallet, find_or_create_wallet_account, find_wallet_account};
use crate::store::keys::{ApiKeyRecord, find_key_by_hash};
use crate::store::orgs::{OrgRecord, get_org};
use crate::store::replay::record_mark;
use crate::store::users::{UserRecord, find_user_by_wallet, get_user};
use key_cache::Identity;
use permissions::Grant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Session,
    WalletSignature,
}

impl AuthMethod {
    pub const fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Session => "session",
            AuthMethod::WalletSignature => "wallet_signature",
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub struct Principal {
    pub method: AuthMethod,
    /// What this credential may do (an unrestricted key, a session or a wallet: everything).
    pub grant: Grant,
    identity: Arc<Identity>,
}

impl Principal {
    pub fn user(&self) -> &UserRecord {
        &self.identity.user
    }

    pub fn organization(&self) -> &OrgRecord {
        &self.identity.organization
    }

    pub fn api_key(&self) -> Option<&ApiKeyRecord> {
        self.identity.key.as_ref()
    }

    /// This credential's `whoami` answer, made once per identity snapshot by `make` (an API
    /// key's snapshot lives in the key cache, so its answer is served from bytes until the key
    /// changes; sessions and wallets get a fresh snapshot per request).
    pub fn whoami_bytes(&self, make: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.identity.whoami.get_or_init(make).clone()
    }

    /// The credential's scope: its organization, or one app of it for an app's key.
    pub fn scope(&self) -> scope::Scope {
        let organization = self.identity.organization.id;
        match self.api_key().and_then(|k| k.app_id) {
            Some(app) => scope::Scope::App { organization, app },
            None => scope::Scope::Organization(organization),
        }
    }

    /// The bucket this principal draws from and its limit (SPEC §8): a key's own `rateLimit`,
    /// else its organization's plan; credentials without a key use one bucket per user.
    pub fn bucket(&self) -> (crate::limits::BucketKey, u32) {
        bucket_of(self.api_key(), self.user(), self.organization())
    }

    /// One token from this principal's bucket at `now`.
    pub fn take_token(
        &self,
        limiter: &crate::limits::RateLimiter,
        now: crate::time::Timestamp,
    ) -> crate::limits::Decision {
        let (key, limit) = self.bucket();
        let bucket = self
            .identity
            .bucket
            .get_or_init(|| limiter.bucket(key, limit, now));
        crate::limits::take_from(bucket, limit, now)
    }
}

/// See [`Principal::bucket`].
pub fn bucket_of(
    key: Option<&ApiKeyRecord>,
    user: &UserRecord,
    organization: &OrgRecord,
) -> (crate::limits::BucketKey, u32) {
    let plan = crate::limits::plan_limit(organization);
    match key {
        Some(key) => (
            crate::limits::BucketKey::ApiKey(key.id),
            key.rate_limit.unwrap_or(plan),
        ),
        None => (crate::limits::BucketKey::User(user.id), plan),
    }
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

    const fn session(reason: &'static str) -> AuthFailure {
        AuthFailure {
            method: "session",
            reason,
        }
    }

    const fn wallet(reason: &'static str) -> AuthFailure {
        AuthFailure {
            method: "wallet_signature",
            reason,
        }
    }
}

/// The credential a request presents, parsed but not yet checked. `Debug` shows its kind only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Wallet(wallet::WalletHeaders<'a>),
    ApiKey(&'a str),
    Session(&'a str),
}

impl std::fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Wallet(headers) => f.debug_tuple("Wallet").field(headers).finish(),
            Presented::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Presented::Session(_) => f.write_str("Session(<redacted>)"),
        }
    }
}

static X_API_KEY: http::HeaderName = http::HeaderName::from_static("x-api-key");

/// The header's one value; a repeated header is refused as `failure`.
fn one_value<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
    failure: AuthFailure,
) -> Result<Option<&'a [u8]>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(failure);
    }
    Ok(first.map(|v| v.as_bytes()))
}

fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &http::HeaderName,
) -> Result<Option<&'a [u8]>, AuthFailure> {
    let repeated = AuthFailure::api_key(header::HeaderError::Repeated.reason());
    one_value(headers, name, repeated)
}

/// Whether the request carries any of the wallet-signature headers: then its body must be read
/// before authentication, because the signature covers it.
pub fn presents_wallet_headers(headers: &HeaderMap) -> bool {
    [&wallet::ADDRESS, &wallet::TIMESTAMP, &wallet::SIGNATURE]
        .into_iter()
        .any(|name| headers.contains_key(name))
}

/// Whether the request presents any credential (well formed or not): then it must be valid.
pub fn presents_credential(headers: &HeaderMap) -> bool {
    presents_wallet_headers(headers)
        || headers.contains_key(&X_API_KEY)
        || headers.contains_key(http::header::AUTHORIZATION)
        || !matches!(
            session::session_token(
                headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .map(|v| v.as_bytes())
            ),
            Ok(None)
        )
}

/// Picks the credential by SPEC §5's order (x402 joins with the routes that take it): the
/// wallet-signature headers (any of the three present decides), `X-API-Key`, then
/// `Authorization: Bearer`, then the `eliza_session` cookie.
pub fn presented_credential(headers: &HeaderMap) -> Result<Option<Presented<'_>>, AuthFailure> {
    let repeated = AuthFailure::wallet(wallet::WalletError::HeaderValue.reason());
    let address = one_value(headers, &wallet::ADDRESS, repeated)?;
    let timestamp = one_value(headers, &wallet::TIMESTAMP, repeated)?;
    let signature = one_value(headers, &wallet::SIGNATURE, repeated)?;
    if let Some(found) = wallet::parse_headers(address, timestamp, signature)
        .map_err(|e| AuthFailure::wallet(e.reason()))?
    {
        return Ok(Some(Presented::Wallet(found)));
    }
    if let Some(value) = single_header(headers, &X_API_KEY)? {
        let token =
            header::parse_api_key_header(value).map_err(|e| AuthFailure::api_key(e.reason()))?;
        return Ok(Some(Presented::ApiKey(token)));
    }
    if let Some(value) = single_header(headers, &http::header::AUTHORIZATION)? {
        let token = header::parse_bearer(value).map_err(|e| AuthFailure::api_key(e.reason()))?;
        return Ok(Some(Presented::ApiKey(token)));
    }
    let cookies = headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(|v| v.as_bytes());
    match session::session_token(cookies) {
        Ok(Some(token)) => Ok(Some(Presented::Session(token))),
        Ok(None) => Ok(None),
        Err(session::CookieError::Malformed) => Err(AuthFailure::session("malformed_cookie")),
    }
}

/// What authentication needs of a request beyond its headers.
#[derive(Debug, Clone, Copy)]
pub struct AuthContext<'a> {
    /// What a wallet signature covers: when [`presents_wallet_headers`], its body must be the
    /// whole body.
    pub signed: wallet::SignedRequest<'a>,
    /// Whose bucket pays for creating a wallet's account (SPEC §8's per-address limit).
    pub client_ip: std::net::IpAddr,
    /// What happens to a wallet seen for the first time.
    pub new_wallet: NewWallet,
}

/// What wallet-signature authentication does with a wallet that has no account yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewWallet {
    /// Its account is made on the spot, with this sign-up bonus (SPEC §3, shared with sign-in).
    Create(Bonus),
    /// No account is made: the caller gets [`Authenticated::NewWallet`]. The top-up route makes
    /// the account only once a payment has settled, so a failed payment never leaves behind an
    /// account that missed its sign-up bonus.
    Defer,
}

/// Who a credential proved to be.
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// An account, with what it may do, and the decision of its bucket when authentication
    /// took the token already (wallet signatures do, before their durable replay mark).
    Principal(Principal, Option<crate::limits::Decision>),
    /// Valid wallet-signature headers of a wallet with no account (only with [`NewWallet::Defer`]),
    /// and the client address's bucket it drew from (for the `X-RateLimit-*` headers).
    NewWallet {
        wallet: Wallet,
        rate: Option<crate::limits::Decision>,
    },
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// A 401, with the precise reason for logs and metrics.
    Failed(AuthFailure),
    /// A new wallet account would exceed the client address's bucket: a 429.
    RateLimited(crate::limits::Decision),
}

impl From<AuthFailure> for AuthError {
    fn from(failure: AuthFailure) -> Self {
        AuthError::Failed(failure)
    }
}

/// Authenticates the request's credential; `Ok(None)` when it presents none.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    context: &AuthContext<'_>,
) -> Result<Option<Authenticated>, AuthError> {
    let principal = match presented_credential(headers)? {
        Some(Presented::Wallet(found)) => {
            return authenticate_wallet(state, &found, context).await.map(Some);
        }
        Some(Presented::ApiKey(token)) => authenticate_api_key(state, token).await?,
        Some(Presented::Session(token)) => authenticate_session(state, token).await?,
        None => return Ok(None),
    };
    Ok(Some(Authenticated::Principal(principal, None)))
}

/// Looks a key up by hash: from the cache, else from the store (then cached).
async fn lookup_key(state: &AppState, token: &str) -> Result<Arc<Identity>, AuthFailure> {
    let hash = api_key::hash_secret(token);
    if let Some(found) = state.key_cache.get(&hash) {
        return Ok(found);
    }
    let epoch = state.key_cache.epoch();
    let found = state
        .store
        .read_blocking(move |txn| {
            let Some(key) = find_key_by_hash(txn, &hash)? else {
                return Ok::<_, StoreError>(None);
            };
            let org = get_org(txn, key.organization_id)?;
            let user = get_user(txn, key.user_id)?;
            Ok(org
                .zip(user)
                .map(|(organization, user)| Identity::new(Some(key), organization, user)))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "API key lookup failed");
            AuthFailure::api_key("store_error")
        })?;
    let identity = Arc::new(found.ok_or(AuthFailure::api_key("unknown_key"))?);
    state
        .key_cache
        .insert_if_current(hash, identity.clone(), epoch);
    Ok(identity)
}

/// An API key as a principal, by the same checks as `X-API-Key` (for the dashboard's key
/// sign-in, SPEC §13).
pub async fn principal_of_key(state: &AppState, token: &str) -> Result<Principal, AuthFailure> {
    authenticate_api_key(state, token).await
}

async fn authenticate_api_key(state: &AppState, token: &str) -> Result<Principal, AuthFailure> {
    // A malformed or wrong-checksum `ek_` key is refused before any cache or database work.
    if api_key::classify_presented_key(token).is_none() {
        return Err(AuthFailure::api_key("malformed_key"));
    }
    let identity = lookup_key(state, token).await?;
    let key = identity
        .key
        .as_ref()
        .ok_or(AuthFailure::api_key("unknown_key"))?;
    if !key.is_active {
        return Err(AuthFailure::api_key("inactive_key"));
    }
    // Expiry is checked against the clock on every request, cached or not.
    if key.expires_at.is_some_and(|at| at <= state.now().millis()) {
        return Err(AuthFailure::api_key("expired_key"));
    }
    if !identity.organization.is_active {
        return Err(AuthFailure::api_key("inactive_organization"));
    }
    if !identity.user.is_active || identity.user.organization_id != key.organization_id {
        return Err(AuthFailure::api_key("inactive_user"));
    }
    Ok(Principal {
        method: AuthMethod::ApiKey,
        grant: Grant::from_stored(&key.permissions),
        identity,
    })
}

/// A session cookie: its hash must name an unexpired session of an active user and organization.
async fn authenticate_session(state: &AppState, token: &str) -> Result<Principal, AuthFailure> {
    let hash = api_key::hash_secret(token);
    let now = state.now().millis();
    let found = state
        .store
        .read_blocking(move |txn| {
            let Some(session) = crate::store::sessions::find_live_session(txn, &hash, now)? else {
                return Ok::<_, StoreError>(None);
            };
            // A session exchanged for a key lives only while that key does, and only while it is
            // still a key that may be exchanged (SPEC §13): revoked or regenerated (its hash is
            // gone), disabled, expired, restricted, or no longer a live organization key. The
            // session then acts as that key: its rate limit, its usage.
            let mut key = None;
            if let Some(bound) = crate::store::sessions::session_key(txn, &hash)? {
                let found = find_key_by_hash(txn, &bound)?.filter(|key| {
                    key.is_active
                        && key.expires_at.is_none_or(|at| at > now)
                        && key.permissions.is_empty()
                        && key.app_id.is_none()
                        && key.key_type == crate::store::keys::KeyType::Live
                        && key.organization_id == session.organization_id
                        && key.user_id == session.user_id
                });
                match found {
                    Some(k) => key = Some(k),
                    None => return Ok(None),
                }
            }
            let org = get_org(txn, session.organization_id)?;
            let user = get_user(txn, session.user_id)?;
            Ok(org.zip(user).map(|(org, user)| (org, user, key)))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "session lookup failed");
            AuthFailure::session("store_error")
        })?;
    let (organization, user, key) =
        found.ok_or(AuthFailure::session("unknown_or_expired_session"))?;
    if !organization.is_active || !user.is_active {
        return Err(AuthFailure::session("inactive_account"));
    }
    Ok(Principal {
        method: AuthMethod::Session,
        grant: Grant::Unrestricted,
        identity: Arc::new(Identity::new(key, organization, user)),
    })
}

/// Marks older than this before `now` are pruned: twice the window, so a clock stepped back by
/// up to five minutes still finds them.
const REPLAY_KEEP_MS: i64 = 2 * wallet::MAX_SKEW_MS;

/// Wallet-signature headers (SPEC §6): the signature and window checks, then, in one write
/// transaction, the single-use mark and the wallet's account (made with the sign-up bonus the
/// first time, shared with sign-in, unless the context defers it). Full access; the caller's
/// bucket is its user's.
async fn authenticate_wallet(
    state: &AppState,
    found: &wallet::WalletHeaders<'_>,
    context: &AuthContext<'_>,
) -> Result<Authenticated, AuthError> {
    let now = state.now();
    let verified =
        wallet::verify(found, &context.signed, now).map_err(|e| AuthFailure::wallet(e.reason()))?;
    // Marks seen by this process are refused from memory; the store decides for the rest.
    let replayed = AuthFailure::wallet(wallet::WalletError::Replay.reason());
    if state.wallet_marks.contains_key(&verified.mark) {
        return Err(replayed.into());
    }
    let mark = verified.mark;
    let account_wallet = verified.address.wallet();
    let new_wallet = context.new_wallet;
    // Before any durable write (SPEC §8, §6): a known wallet draws a token from its user's
    // bucket, so a flood of fresh signatures from one wallet is refused without an fsync; a
    // wallet without an account draws from the client address's bucket, like a sign-in, so a
    // script cannot mint accounts (and bonuses) with fresh keys faster than it could sign in.
    let lookup = account_wallet.key().to_string();
    let known = state
        .store
        .read_blocking(move |txn| {
            let Some(user) = find_user_by_wallet(txn, &lookup)? else {
                return Ok::<_, StoreError>(None);
            };
            Ok(get_org(txn, user.organization_id)?.map(|org| (user, org)))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "wallet lookup failed");
            AuthFailure::wallet("store_error")
        })?;
    let (bucket, limit) = match &known {
        Some((user, org)) => bucket_of(None, user, org),
        None => (
            crate::limits::BucketKey::client(context.client_ip),
            crate::limits::PER_IP_LIMIT,
        ),
    };
    let decision = state.limiter.take(bucket, limit, now);
    if !decision.allowed {
        return Err(AuthError::RateLimited(decision));
    }
    let account = state
        .store
        .write_blocking(move |txn| {
            let prune_before = now.millis().saturating_sub(REPLAY_KEEP_MS);
            if !record_mark(
                txn,
                verified.timestamp.millis(),
                &verified.mark,
                prune_before,
            )? {
                return Ok::<_, StoreError>(None);
            }
            match new_wallet {
                NewWallet::Create(bonus) => {
                    find_or_create_wallet_account(txn, &account_wallet, bonus, now.millis())
                        .map(|account| Some(Some(account)))
                }
                NewWallet::Defer => find_wallet_account(txn, &account_wallet).map(Some),
            }
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "wallet account lookup failed");
            AuthFailure::wallet("store_error")
        })?
        .ok_or(replayed)?;
    state.wallet_marks.insert(mark, ());
    let Some(account) = account else {
        return Ok(Authenticated::NewWallet {
            wallet: verified.address.wallet(),
            rate: Some(decision),
        });
    };
    if !account.organization.is_active || !account.user.is_active {
        return Err(AuthFailure::wallet("inactive_account").into());
    }
    // A wallet whose account was made just now drew from the client address's bucket; its
    // user's bucket is taken by the pipeline as for any credential.
    let drawn = known.is_some().then_some(decision);
    Ok(Authenticated::Principal(
        Principal {
            method: AuthMethod::WalletSignature,
            grant: Grant::Unrestricted,
            identity: Arc::new(Identity::new(None, account.organization, account.user)),
        },
        drawn,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn debug_never_shows_a_credential() {
        let key = "ek_live_secretsecretsecret";
        let token = "sessionsessionsession";
        let shown = format!(
            "{:?} {:?}",
            Presented::ApiKey(key),
            Presented::Session(token)
        );
        assert_eq!(shown, "ApiKey(<redacted>) Session(<redacted>)");
        let mut h = HeaderMap::new();
        h.insert(
            "x-wallet-address",
            HeaderValue::from_static("0x00000000000000000000000000000000000000aa"),
        );
        h.insert("x-timestamp", HeaderValue::from_static("1700000000000"));
        h.insert(
            "x-wallet-signature",
            HeaderValue::from_static("0xsignaturebytes"),
        );
        if let Ok(Some(presented)) = presented_credential(&h) {
            let shown = format!("{presented:?}");
            assert!(!shown.contains("signaturebytes"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        } else {
            panic!("wallet headers not presented");
        }
    }

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
