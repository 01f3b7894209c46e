//! The request pipeline: request id → body cap → route → access check → handler → envelope,
//! headers, metrics and one log line. A panicking handler is caught here and answered 500.

pub mod body;
pub mod error;
pub mod query;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::api;
use crate::auth::permissions::{Grant, Level};
use crate::auth::scope::{Denied, Owner, Scope, may_act_on};
use crate::auth::{self, Authenticated, NewWallet, Principal};
use crate::limits::{BucketKey, Decision, PER_IP_LIMIT};
use crate::state::AppState;
use crate::store::accounts::{Bonus, Wallet};
use body::{Body, declared_length_exceeds, empty, read_capped};
use bytes::Bytes;
use error::ApiError;
use route::{
    BodyUse, Caller, NewWallets, Origins, Payment, Requirement, Route, Scopes, parse_route,
};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
// Header names as constants: a `&str` name is parsed and hashed anew on every use.
static REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
static RATE_LIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("x-ratelimit-limit");
static RATE_LIMIT_REMAINING: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining");
static RATE_LIMIT_RESET: http::HeaderName = http::HeaderName::from_static("x-ratelimit-reset");
static FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const MAX_REQUEST_ID_LEN: usize = 128;

/// Headers browsers may send cross-origin (SPEC §1's list plus the usual ones).
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, X-API-Key, X-Request-Id, \
     X-Wallet-Address, X-Timestamp, X-Wallet-Signature, X-PAYMENT, PAYMENT-SIGNATURE, \
     X-App-Id, X-App-User-Id, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, \
     X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, \
     X-Stainless-Timeout, X-Stainless-Async, OpenAI-Organization, OpenAI-Project";
const CORS_ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const CORS_EXPOSE_HEADERS: &str = "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, \
     X-RateLimit-Reset, Retry-After, WWW-Authenticate, PAYMENT-REQUIRED, PAYMENT-RESPONSE, \
     X-PAYMENT-RESPONSE, X-Eliza-Cost-Micros, X-Eliza-Overhead-Ms, X-Eliza-Balance-Micros";

/// The caller's `X-Request-Id` when it is sane (1..=128 of `[A-Za-z0-9._:-]`), else a new
/// `req_` + 32 hex.
pub fn request_id_of(headers: &HeaderMap) -> String {
    if let Some(value) = headers.get(&REQUEST_ID) {
        let bytes = value.as_bytes();
        let sane = !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if sane && let Ok(text) = value.to_str() {
            return text.to_string();
        }
    }
    new_request_id(rand::random::<u128>())
}

/// `req_` and the 32 lowercase hex digits of `random`, written without `core::fmt`.
fn new_request_id(random: u128) -> String {
    let mut id = String::with_capacity(36);
    id.push_str("req_");
    for shift in (0..32).rev() {
        let nibble = ((random >> (shift * 4)) & 0xf) as u32;
        id.push(char::from_digit(nibble, 16).unwrap_or('0'));
    }
    id
}

/// The client's address for per-address buckets: the socket peer, or with `--trust-proxy` the
/// rightmost `X-Forwarded-For` entry (the one the operator's proxy appended; entries further left
/// are whatever the client claimed). An unparsable entry falls back to the peer.
pub fn client_ip(headers: &HeaderMap, peer: SocketAddr, trust_proxy: bool) -> std::net::IpAddr {
    if !trust_proxy {
        return peer.ip();
    }
    headers
        .get_all(&FORWARDED_FOR)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer.ip())
}

/// The path as logged: segments that could be a credential are replaced, so a key pasted into
/// a URL by mistake never reaches the log.
pub fn loggable_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let risky =
                segment.len() > 48 || segment.starts_with("ek_") || segment.starts_with("eliza_");
            if risky { "<redacted>" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Serves one request end to end. Never panics outward and never answers without a request id.
pub async fn serve_request<B>(state: &AppState, req: Request<B>, peer: SocketAddr) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let _in_flight = state.metrics.request_started();
    let request_id = request_id_of(req.headers());
    let method = req.method().clone();
    // A clone of the URI shares its bytes: no copy of the path on the hot path.
    let uri = req.uri().clone();
    let path = uri.path();
    // The CA asks on the domain being verified: its challenge comes before host routing.
    let route = match app_host(state, &req) {
        Some(app) if !path.starts_with(crate::web::route::ACME_CHALLENGE_PREFIX) => {
            Route::AppPage(app)
        }
        _ => parse_route(&method, path),
    };
    let is_api = path.starts_with("/api/") && !matches!(route, Route::AppPage(_));
    // Browsers send `Origin` with every cross-origin request; only those need the CORS headers.
    let cors = is_api && req.headers().contains_key(header::ORIGIN);
    let mut response = catch_panics(
        respond(state, route, req, peer, &request_id, started),
        &request_id,
    )
    .await;
    // The pipeline's refusals on dashboard pages speak HTML (a 429 on the sign-in form too): no
    // session → the sign-in page.
    if matches!(
        route,
        Route::Root
            | Route::DashboardSignIn
            | Route::DashboardSignInForm
            | Route::DashboardPage
            | Route::DashboardForm
    ) && response.status().is_client_error()
    {
        response = crate::dashboard::refusal(response).await;
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.record_request(route.name(), status, elapsed);
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = route.name(),
        path = %loggable_path(path),
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    let cors = cors
        && response
            .extensions()
            .get::<crate::web::error::OriginRefused>()
            .is_none();
    finish_headers(response.headers_mut(), request_id, is_api, cors);
    response
}

/// The app whose subdomain or verified domain the request's host is (SPEC §11); the public
/// URL's host, `localhost`, IP literals and every other host get the API. From memory.
fn app_host<B>(state: &AppState, req: &Request<B>) -> Option<uuid::Uuid> {
    if state.hosts.is_empty() {
        return None;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    if host.eq_ignore_ascii_case(&state.config.public_url.host) {
        return None;
    }
    let key = crate::domains::name::host_key(host)?;
    state.hosts.app_of(&key)
}

/// Awaits a handler; a panic becomes a logged 500 in the envelope.
pub async fn catch_panics(
    handler: impl Future<Output = Response<Body>>,
    request_id: &str,
) -> Response<Body> {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            // The payload is not logged: a panic message may hold request data.
            tracing::error!(request_id = %request_id, "handler panicked; answered 500");
            ApiError::Internal.into_response(request_id)
        }
    }
}

fn rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    headers.insert(RATE_LIMIT_LIMIT.clone(), HeaderValue::from(decision.limit));
    headers.insert(
        RATE_LIMIT_REMAINING.clone(),
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        RATE_LIMIT_RESET.clone(),
        HeaderValue::from(decision.reset_unix_secs),
    );
}

fn finish_headers(headers: &mut HeaderMap, request_id: String, is_api: bool, cors: bool) {
    // The id's own buffer becomes the header value (checked, not copied).
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(request_id)) {
        headers.insert(REQUEST_ID.clone(), value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if cors {
        // Credentials travel in headers, never cookies, cross-origin: `*` without
        // Allow-Credentials means browsers never attach the session cookie.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE_HEADERS),
        );
    }
    if is_api {
        headers
            .entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
}

fn preflight() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(CORS_ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// The whole answer to one request: errors become their envelope, and a request that drew on
/// a bucket carries the `X-RateLimit-*` headers whatever its status.
async fn respond<B>(
    state: &AppState,
    route: Route,
    req: Request<B>,
    peer: SocketAddr,
    request_id: &str,
    started: Instant,
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut rate = None;
    let mut response = match dispatch(state, route, req, peer, &mut rate, request_id, started).await
    {
        Ok(response) => response,
        Err(error) => error.into_response(request_id),
    };
    if let Some(decision) = &rate {
        rate_limit_headers(response.headers_mut(), decision);
    }
    response
}

/// One token from the client address's bucket (SPEC §8), or 429.
fn take_client_bucket(
    state: &AppState,
    address: std::net::IpAddr,
    rate: &mut Option<Decision>,
) -> Result<(), ApiError> {
    let decision = state
        .limiter
        .take(BucketKey::client(address), PER_IP_LIMIT, state.now());
    *rate = Some(decision);
    if decision.allowed {
        Ok(())
    } else {
        state.metrics.record_rate_limited();
        Err(ApiError::RateLimited {
            retry_after_secs: decision.retry_after_secs,
        })
    }
}

/// Authenticates, logging and counting the precise failure. `optional`: a request without any
/// credential is `Ok(None)` rather than a 401.
async fn authenticate_for(
    state: &AppState,
    route: Route,
    headers: &HeaderMap,
    context: &auth::AuthContext<'_>,
    optional: bool,
    rate: &mut Option<Decision>,
) -> Result<Option<Authenticated>, ApiError> {
    match auth::authenticate(state, headers, context).await {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) if optional => Ok(None),
        Ok(None) => {
            state
                .metrics
                .record_auth_failure("none", "missing_credential");
            tracing::info!(route = route.name(), "authentication failed: no credential");
            Err(ApiError::Unauthorized)
        }
        Err(auth::AuthError::RateLimited(decision)) => {
            *rate = Some(decision);
            state.metrics.record_rate_limited();
            Err(ApiError::RateLimited {
                retry_after_secs: decision.retry_after_secs,
            })
        }
        Err(auth::AuthError::Failed(failure)) => {
            state
                .metrics
                .record_auth_failure(failure.method, failure.reason);
            tracing::info!(
                route = route.name(),
                method = failure.method,
                reason = failure.reason,
                "authentication failed"
            );
            Err(ApiError::Unauthorized)
        }
    }
}

/// The route's requirement against what the credential's grant allows.
fn check_requirement(
    requirement: Requirement,
    holds: &Grant,
    scope: Scope,
    method: &Method,
) -> Result<(), ApiError> {
    match requirement {
        Requirement::AnyCredential => Ok(()),
        Requirement::PermissionOrAppKey(_) if matches!(scope, Scope::App { .. }) => Ok(()),
        Requirement::Permission(resource) | Requirement::PermissionOrAppKey(resource) => {
            let level = Level::of_method(method);
            if holds.allows(resource, level) {
                Ok(())
            } else {
                Err(ApiError::Forbidden {
                    message: "This credential does not have the permission this route needs".into(),
                    required: Some(resource.required(level)),
                })
            }
        }
        Requirement::Unrestricted => match holds {
            Grant::Unrestricted => Ok(()),
            Grant::Restricted(_) => Err(ApiError::Forbidden {
                message: "This route needs a credential without a permission list".into(),
                required: Some("unrestricted".into()),
            }),
        },
    }
}

/// The route's admitted scopes against the credential's (SPEC §4: fails closed).
fn check_scope(scopes: Scopes, scope: Scope) -> Result<(), ApiError> {
    match (scopes, scope) {
        (Scopes::OrganizationOrApp, _) | (Scopes::Organization, Scope::Organization(_)) => Ok(()),
        (Scopes::Organization, Scope::App { .. }) => Err(ApiError::Forbidden {
            message: "An app's key cannot call this route".into(),
            required: None,
        }),
    }
}

/// An app key's browser calls (those with `Origin`) must come from one of its app's
/// `allowed_origins` (SPEC §10), else 403; a call without `Origin` is a server's and passes.
async fn check_app_origin(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let (Scope::App { app, .. }, Some(origin)) = (principal.scope(), headers.get(header::ORIGIN))
    else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
    let found = state
        .store
        .read_blocking(move |txn| crate::store::apps::get_app(txn, app))
        .await?;
    let allowed = found.is_some_and(|a| {
        a.allowed_origins
            .iter()
            .any(|pattern| crate::api::apps::origin_matches(pattern, &origin))
    });
    if allowed {
        Ok(())
    } else {
        tracing::info!("app key call from an origin its app does not allow");
        Err(ApiError::OriginNotAllowed)
    }
}

/// [`may_act_on`] as the API answers it: 404 for another organization's, 403 for the rest.
pub fn may_act(principal: &Principal, owner: Owner) -> Result<(), ApiError> {
    may_act_on(principal.scope(), owner).map_err(|denied| match denied {
        Denied::NotFound => ApiError::NotFound,
        Denied::Forbidden => ApiError::Forbidden {
            message: "This credential's scope does not reach this resource".into(),
            required: None,
        },
    })
}

/// Whether `Content-Type` is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Everything a handler is given: the authenticated caller (if any), the request head, the
/// body the route declared (read and capped), and the bucket decision for `X-RateLimit-*`.
pub struct Call {
    pub principal: Option<Principal>,
    /// Valid wallet-signature headers of a wallet without an account, on a route whose new
    /// wallets get one only after a payment.
    pub new_wallet: Option<Wallet>,
    pub parts: http::request::Parts,
    pub body: Bytes,
    pub rate: Option<Decision>,
    pub request_id: String,
    /// When the request arrived (the gateway's overhead is measured from here).
    pub started: Instant,
}

impl Call {
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        self.principal.as_ref().ok_or(ApiError::Unauthorized)
    }

    pub fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }
}

/// The pipeline: a walk over the route's declarations ([`route::Needs`]), the same for every
/// route, then its handler.
async fn dispatch<B>(
    state: &AppState,
    route: Route,
    req: Request<B>,
    peer: SocketAddr,
    rate: &mut Option<Decision>,
    request_id: &str,
    started: Instant,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let needs = route.needs();
    let cap = state.config.max_body_bytes;
    let body_timeout = state.config.body_timeout;
    let headers = req.headers();
    // Refused from the declared length before a byte of the body is read.
    if declared_length_exceeds(headers, cap) {
        return Err(ApiError::PayloadTooLarge { limit: cap });
    }
    if needs.body == BodyUse::JsonOnly && !is_json(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    if needs.origins == Origins::OursWhenPresent
        && let Some(origin) = headers.get(header::ORIGIN)
        && !auth::session::same_origin(Some(origin.as_bytes()), None, &state.config.public_url)
    {
        tracing::info!(route = route.name(), "cross-site request refused");
        return Err(ApiError::Forbidden {
            message: "Cross-site request refused".into(),
            required: None,
        });
    }
    // Whether a credential is asked for, and whether it may be absent.
    let (authenticates, optional) = match (needs.caller, needs.payment) {
        (Caller::Public | Caller::ClientAddress, _) => (false, false),
        (Caller::Credential(_), Payment::None) => (true, false),
        // Without a payment the answer is 402 whoever asks; with one, a credential (if any)
        // names who is credited.
        (Caller::Credential(_), Payment::Required) => (crate::x402::has_payment(headers), true),
        // A credential pays when presented; without one, only an x402 payment can (x402 on).
        (Caller::Credential(_), Payment::PerRequest) => (true, state.config.x402.pay_to.is_some()),
    };
    let address = client_ip(headers, peer, state.config.trust_proxy);
    let anonymous = !authenticates || (optional && !auth::presents_credential(headers));
    if needs.caller == Caller::ClientAddress || (needs.payment != Payment::None && anonymous) {
        take_client_bucket(state, address, rate)?;
    }
    let (parts, body) = req.into_parts();
    // A wallet signature covers the body, so with wallet headers it is read (capped) first.
    let mut body = RequestBody::Unread(body);
    if authenticates && auth::presents_wallet_headers(&parts.headers) {
        body = RequestBody::Read(body.bytes(cap, body_timeout).await?);
    }
    let context = auth::AuthContext {
        signed: auth::wallet::SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            body: body.read_so_far(),
        },
        client_ip: address,
        new_wallet: match needs.new_wallets {
            NewWallets::Create => {
                NewWallet::Create(Bonus::Grant(state.config.initial_free_credits_micros))
            }
            NewWallets::AfterPayment => NewWallet::Defer,
        },
    };
    let authenticated = if authenticates {
        authenticate_for(state, route, &parts.headers, &context, optional, rate).await?
    } else {
        None
    };
    let (principal, drawn, new_wallet) = match authenticated {
        Some(Authenticated::Principal(principal, drawn)) => (Some(principal), drawn, None),
        Some(Authenticated::NewWallet {
            wallet,
            rate: drawn,
        }) => (None, drawn, Some(wallet)),
        None => (None, None, None),
    };
    if drawn.is_some() {
        *rate = drawn;
    }
    if let (Some(principal), Caller::Credential(requirement)) = (&principal, needs.caller) {
        check_cross_site(state, principal, &parts.method, &parts.headers)?;
        check_scope(needs.scopes, principal.scope())?;
        let now = state.now();
        let decision = match drawn {
            Some(decision) => decision,
            None => principal.take_token(&state.limiter, now),
        };
        *rate = Some(decision);
        if !decision.allowed {
            state.metrics.record_rate_limited();
            return Err(ApiError::RateLimited {
                retry_after_secs: decision.retry_after_secs,
            });
        }
        check_requirement(
            requirement,
            &principal.grant,
            principal.scope(),
            &parts.method,
        )?;
        // After the bucket: a refused or rate-limited call costs no store read.
        check_app_origin(state, principal, &parts.headers).await?;
        state.usage.record(
            principal.api_key().map(|k| k.id),
            principal.organization().id,
            now,
        );
    }
    let body = match needs.body {
        BodyUse::None => Bytes::new(),
        BodyUse::Json | BodyUse::JsonOnly => body.bytes(cap, body_timeout).await?,
    };
    let call = Call {
        principal,
        new_wallet,
        parts,
        body,
        rate: *rate,
        request_id: request_id.to_string(),
        started,
    };
    handle(state, route, &call).await
}

/// A dashboard page or form calling an API route for `principal` (SPEC §13): the route's own
/// scope and permission declarations are checked as the pipeline checks them, then its handler
/// runs with the same [`Call`] shape. Answers the JSON the API would answer, or its error. The
/// page's own request already passed the pipeline (credential, CSRF, rate limit).
pub async fn call_api(
    state: &AppState,
    principal: &Principal,
    method: Method,
    path_and_query: &str,
    body: Option<serde_json::Value>,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let (path, _) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    // API routes only: a page never calls another page.
    if !path.starts_with("/api/") {
        return Err(ApiError::NotFound);
    }
    let route = parse_route(&method, path);
    let needs = route.needs();
    let Caller::Credential(requirement) = needs.caller else {
        return Err(ApiError::NotFound);
    };
    check_scope(needs.scopes, principal.scope())?;
    check_requirement(requirement, &principal.grant, principal.scope(), &method)?;
    let mut builder = Request::builder().method(method).uri(path_and_query);
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let (parts, ()) = builder
        .body(())
        .map_err(|_| ApiError::Internal)?
        .into_parts();
    let body = match body {
        Some(value) => Bytes::from(serde_json::to_vec(&value).map_err(|_| ApiError::Internal)?),
        None => Bytes::new(),
    };
    let call = Call {
        principal: Some(principal.clone()),
        new_wallet: None,
        parts,
        body,
        rate: None,
        request_id: "dashboard".into(),
        started: Instant::now(),
    };
    // Boxed: the dashboard's handlers reach here from `handle` itself.
    let response = Box::pin(handle(state, route, &call)).await?;
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

/// The handler table: one handler per route, each given the same [`Call`].
async fn handle(state: &AppState, route: Route, call: &Call) -> Result<Response<Body>, ApiError> {
    match route {
        Route::Healthz => Ok(api::ops::healthz()),
        Route::Readyz => api::ops::readyz(state).await,
        Route::Metrics => Ok(api::ops::metrics(state)),
        Route::CorsPreflight => Ok(preflight()),
        Route::Whoami => api::auth::whoami(call.principal()?),
        Route::Dashboard => api::dashboard::dashboard(state, call.principal()?, call.rate).await,
        Route::Credits => api::dashboard::credits(state, call.principal()?, call.query()).await,
        Route::ListApiKeys => api::keys::list(state, call.principal()?, call.query()).await,
        Route::CreateApiKey => api::keys::create(state, call.principal()?, &call.body).await,
        Route::UpdateApiKey(id) => {
            api::keys::update(state, call.principal()?, id, &call.body).await
        }
        Route::DeleteApiKey(id) => api::keys::delete(state, call.principal()?, id).await,
        Route::RegenerateApiKey(id) => api::keys::regenerate(state, call.principal()?, id).await,
        Route::SiweNonce => api::signin::siwe_nonce(state, call.query()),
        Route::SiwsNonce => api::signin::siws_nonce(state, call.query()),
        Route::SiweVerify => api::signin::verify_siwe(state, &call.body).await,
        Route::SiwsVerify => api::signin::verify_siws(state, &call.body).await,
        Route::Logout => api::signin::logout(state, &call.parts.headers).await,
        Route::KeySession => api::signin::key_session(state, &call.body).await,
        Route::Root => Ok(crate::dashboard::redirect("/dashboard")),
        Route::OpenApi => Ok(api::openapi::serve(state)),
        Route::DashboardSignIn => Ok(crate::dashboard::sign_in_page(None, StatusCode::OK)),
        Route::DashboardSignInForm => Ok(crate::dashboard::sign_in(state, &call.body).await),
        Route::DashboardPage => Ok(crate::dashboard::page(
            state,
            call.principal()?,
            call.parts.uri.path(),
            call.query(),
        )
        .await),
        Route::DashboardForm => Ok(crate::dashboard::form(
            state,
            call.principal()?,
            call.parts.uri.path(),
            &call.body,
            &call.parts.headers,
        )
        .await),
        Route::Topup(amount) => api::topup::topup(state, call, amount).await,
        Route::ListModels => Ok(api::gateway::list_models(state)),
        Route::GetModel => api::gateway::get_model(state, call.parts.uri.path()),
        Route::ChatCompletions => api::gateway::chat(state, call).await,
        Route::Embeddings => api::gateway::embeddings(state, call).await,
        Route::ImageGenerations => api::gateway::images(state, call).await,
        Route::Usage => api::usage::usage(state, call.principal()?, call.query()).await,
        Route::ListApps => api::apps::list(state, call.principal()?, call.query()).await,
        Route::CreateApp => api::apps::create(state, call.principal()?, &call.body).await,
        Route::CheckAppName => api::apps::check_name(state, &call.body).await,
        Route::GetApp(id) => api::apps::get(state, call.principal()?, id).await,
        Route::UpdateApp(id) => api::apps::update(state, call.principal()?, id, &call.body).await,
        Route::DeleteApp(id) => api::apps::delete(state, call.principal()?, id).await,
        Route::AppAnalytics(id) => {
            api::apps::analytics(state, call.principal()?, id, call.query()).await
        }
        Route::AppUsers(id) => api::apps::users(state, call.principal()?, id, call.query()).await,
        Route::AppMonetization(id) => {
            api::earnings::get_monetization(state, call.principal()?, id).await
        }
        Route::SetAppMonetization(id) => {
            api::earnings::set_monetization(state, call.principal()?, id, &call.body).await
        }
        Route::AppDomains(id) => api::domains::list(state, call.principal()?, id).await,
        Route::AddAppDomain(id) => {
            api::domains::add(state, call.principal()?, id, &call.body).await
        }
        Route::DeleteAppDomain(id) => {
            api::domains::delete(state, call.principal()?, id, &call.body).await
        }
        Route::VerifyAppDomain(id) => {
            api::domains::verify(state, call.principal()?, id, &call.body).await
        }
        Route::AppDomainStatus(id) => {
            api::domains::status(state, call.principal()?, id, &call.body).await
        }
        Route::DomainsAllowed => api::domains::allowed(state, call.query()),
        Route::CaPem => api::domains::ca_pem(state).await,
        Route::AcmeChallenge => api::domains::acme_challenge(state, call.parts.uri.path()),
        Route::AppPage(app) => api::app_page::page(state, &call.parts, app).await,
        Route::AppWebhook(id) => api::webhooks::get_settings(state, call.principal()?, id).await,
        Route::SetAppWebhook(id) => {
            api::webhooks::set_settings(state, call.principal()?, id, &call.body).await
        }
        Route::RotateWebhookSecret(id) => {
            api::webhooks::rotate_secret(state, call.principal()?, id).await
        }
        Route::TestWebhook(id) => api::webhooks::test_event(state, call.principal()?, id).await,
        Route::WebhookDeliveries(id) => {
            api::webhooks::deliveries(state, call.principal()?, id, call.query()).await
        }
        Route::Redeliver(id) => {
            // `/api/v1/apps/{id}/webhook/deliveries/{delivery}/redeliver`
            let delivery = call.parts.uri.path().split('/').nth(7).unwrap_or_default();
            api::webhooks::redeliver(state, call.principal()?, id, delivery).await
        }
        Route::AppEarnings(id) => api::earnings::earnings(state, call.principal()?, id).await,
        Route::WithdrawAppEarnings(id) => {
            api::earnings::withdraw_earnings(state, call.principal()?, id, &call.body).await
        }
        Route::RegenerateAppKey(id) => {
            api::apps::regenerate_key(state, call.principal()?, id).await
        }
        Route::NotFound => Err(ApiError::NotFound),
        Route::MethodNotAllowed { allow } => Err(ApiError::MethodNotAllowed { allow }),
    }
}

/// A request body: not read yet, or read already (when a wallet signature had to cover it).
enum RequestBody<B> {
    Unread(B),
    Read(Bytes),
}

impl<B> RequestBody<B>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn bytes(self, cap: usize, timeout: std::time::Duration) -> Result<Bytes, ApiError> {
        match self {
            RequestBody::Unread(body) => read_capped(body, cap, timeout).await,
            RequestBody::Read(bytes) => Ok(bytes),
        }
    }

    fn read_so_far(&self) -> &[u8] {
        match self {
            RequestBody::Unread(_) => &[],
            RequestBody::Read(bytes) => bytes,
        }
    }
}

/// The CSRF rule (SPEC §5.3): a state-changing request authenticated by the session cookie must
/// carry our own origin in `Origin`, or else in `Referer`.
fn check_cross_site(
    state: &AppState,
    principal: &Principal,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if principal.method != auth::AuthMethod::Session || reads {
        return Ok(());
    }
    let origin = headers.get(header::ORIGIN).map(|v| v.as_bytes());
    let referer = headers.get(header::REFERER).map(|v| v.as_bytes());
    if auth::session::same_origin(origin, referer, &state.config.public_url) {
        Ok(())
    } else {
        tracing::info!("cross-site cookie request refused");
        Err(ApiError::Forbidden {
            message: "Cross-site request refused".into(),
            required: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Collects log output in memory for one test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// Captures this thread's log for as long as the guard lives.
        ///
        /// Every test that reaches the panic callsite installs one: tracing caches a callsite's
        /// interest globally, and a test without a subscriber registering it while another
        /// installs its own can leave it cached as "never" (seen once in CI: an empty log).
        fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
            let captured = Captured::default();
            let sink = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .finish();
            let guard = tracing::subscriber::set_default(subscriber);
            tracing::callsite::rebuild_interest_cache();
            (captured, guard)
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_logged() {
        let (captured, _guard) = Captured::install();
        let handler = async {
            if true {
                panic!("boom with secret-ish data");
            }
            Response::new(empty())
        };
        let response = catch_panics(handler, "req_x").await;
        let logged = captured.text();
        assert!(logged.contains("handler panicked"), "{logged}");
        assert!(logged.contains("req_x"), "{logged}");
        assert!(!logged.contains("secret-ish"), "{logged}");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(json["error"]["requestId"], "req_x");
        assert!(!String::from_utf8_lossy(&body).contains("boom"));
    }

    /// A request body that panics when read: a stand-in for a handler bug deep in a request.
    struct PanickingBody;

    impl http_body::Body for PanickingBody {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            panic!("boom inside a request");
        }
    }

    #[tokio::test]
    async fn a_panic_anywhere_in_a_request_is_a_500_with_its_request_id() {
        let (captured, _guard) = Captured::install();
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::ServeConfig::with_data_dir(dir.path().to_path_buf());
        let store = crate::store::Store::open(dir.path()).unwrap();
        let clock = std::sync::Arc::new(crate::time::ManualClock::new(
            crate::time::Timestamp::from_millis(1_767_225_600_000),
        ));
        let state = AppState::new(config, store, clock);
        let req = Request::post("/api/auth/siwe/verify")
            .header(REQUEST_ID_HEADER, "req-panic-1")
            .header("content-type", "application/json")
            .body(PanickingBody)
            .unwrap();
        let peer = SocketAddr::from(([127, 0, 0, 1], 9));
        let response = serve_request(&state, req, peer).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "req-panic-1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(json["error"]["requestId"], "req-panic-1");
        let logged = captured.text();
        assert!(logged.contains("handler panicked"), "{logged}");
        assert!(logged.contains("req-panic-1"), "{logged}");
        assert!(!logged.contains("boom"), "{logged}");
        // The server goes on: the same state serves the next request.
        let ok = Request::get("/healthz")
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = serve_request(&state, ok, peer).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    const ORG: Scope = Scope::Organization(uuid::Uuid::nil());

    #[test]
    fn route_permissions_follow_the_method_and_name_what_is_missing() {
        use crate::auth::permissions::Resource;
        let chat_read = Grant::from_stored(&["chat:read".into()]);
        let chat = Grant::from_stored(&["chat".into()]);
        let need = Requirement::Permission(Resource::CHAT);
        for method in [Method::GET, Method::HEAD] {
            assert_eq!(check_requirement(need, &chat_read, ORG, &method), Ok(()));
        }
        for method in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
            let refused = check_requirement(need, &chat_read, ORG, &method);
            let Err(ApiError::Forbidden { required, .. }) = refused else {
                panic!("{method} allowed with chat:read");
            };
            assert_eq!(required.as_deref(), Some("chat:write"));
            assert_eq!(check_requirement(need, &chat, ORG, &method), Ok(()));
            assert_eq!(
                check_requirement(need, &Grant::Unrestricted, ORG, &method),
                Ok(())
            );
        }
        let images = Grant::from_stored(&["images".into()]);
        let Err(ApiError::Forbidden { required, .. }) =
            check_requirement(need, &images, ORG, &Method::GET)
        else {
            panic!("images grants chat");
        };
        assert_eq!(required.as_deref(), Some("chat:read"));
        let Err(ApiError::Forbidden { required, .. }) =
            check_requirement(Requirement::Unrestricted, &chat, ORG, &Method::GET)
        else {
            panic!("a restricted key managed keys");
        };
        assert_eq!(required.as_deref(), Some("unrestricted"));
        assert_eq!(
            check_requirement(Requirement::AnyCredential, &images, ORG, &Method::POST),
            Ok(())
        );
    }

    #[test]
    fn request_ids() {
        assert_eq!(new_request_id(0), format!("req_{:032x}", 0u128));
        for random in [1u128, 0xdead_beef, u128::MAX, u128::MAX / 3, 1 << 127] {
            assert_eq!(new_request_id(random), format!("req_{random:032x}"));
        }
        let mut h = HeaderMap::new();
        let fresh = request_id_of(&h);
        assert!(fresh.starts_with("req_") && fresh.len() == 36);
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("abc-123.x:y_z"));
        assert_eq!(request_id_of(&h), "abc-123.x:y_z");
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_static("has space"));
        assert!(request_id_of(&h).starts_with("req_"));
        let long = "a".repeat(129);
        h.insert(REQUEST_ID_HEADER, HeaderValue::from_str(&long).unwrap());
        assert!(request_id_of(&h).starts_with("req_"));
    }

    #[test]
    fn client_address() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(client_ip(&h, peer, true), peer.ip());
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        assert_eq!(
            client_ip(&h, peer, false),
            peer.ip(),
            "ignored unless trusted"
        );
        assert_eq!(client_ip(&h, peer, true).to_string(), "203.0.113.7");
        h.append("x-forwarded-for", HeaderValue::from_static("2001:db8::1"));
        assert_eq!(client_ip(&h, peer, true).to_string(), "2001:db8::1");
        h.append("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(&h, peer, true), peer.ip());
    }

    #[test]
    fn credential_like_path_segments_are_not_logged() {
        assert_eq!(
            loggable_path("/api/v1/ek_live_abc/x"),
            "/api/v1/<redacted>/x"
        );
        assert_eq!(loggable_path("/healthz"), "/healthz");
    }
}
