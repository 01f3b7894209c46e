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
use crate::auth::permissions::{Access as Permissions, Level};
use crate::auth::{self, Authenticated, NewWallet, Principal};
use crate::limits::{BucketKey, Decision, PER_IP_LIMIT, plan_limit};
use crate::state::AppState;
use crate::store::accounts::Bonus;
use body::{Body, declared_length_exceeds, empty, read_capped};
use bytes::Bytes;
use error::ApiError;
use route::{Access, Route, parse_route};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

/// Headers browsers may send cross-origin (SPEC §1's list plus the usual ones).
const CORS_ALLOW_HEADERS: &str = "Authorization, Content-Type, X-API-Key, X-Request-Id, \
     X-Wallet-Address, X-Timestamp, X-Wallet-Signature, X-PAYMENT, PAYMENT-SIGNATURE, \
     X-App-User-Id";
const CORS_ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
const CORS_EXPOSE_HEADERS: &str = "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, \
     X-RateLimit-Reset, Retry-After, WWW-Authenticate, PAYMENT-REQUIRED, PAYMENT-RESPONSE, \
     X-PAYMENT-RESPONSE";

/// The caller's `X-Request-Id` when it is sane (1..=128 of `[A-Za-z0-9._:-]`), else a new
/// `req_` + 32 hex.
pub fn request_id_of(headers: &HeaderMap) -> String {
    if let Some(value) = headers.get(REQUEST_ID_HEADER) {
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
        .get_all("x-forwarded-for")
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
    let request_id = request_id_of(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = parse_route(&method, &path);
    // Browsers send `Origin` with every cross-origin request; only those need the CORS headers.
    let cors = path.starts_with("/api/") && req.headers().contains_key(header::ORIGIN);
    let mut response =
        catch_panics(respond(state, route, req, peer, &request_id), &request_id).await;
    finish_headers(
        response.headers_mut(),
        &request_id,
        path.starts_with("/api/"),
        cors,
    );
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    state.metrics.record_request(route.name(), status, elapsed);
    tracing::info!(
        request_id = %request_id,
        method = %method,
        route = route.name(),
        path = %loggable_path(&path),
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
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
    headers.insert("x-ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(decision.remaining),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(decision.reset_unix_secs),
    );
}

fn finish_headers(headers: &mut HeaderMap, request_id: &str, is_api: bool, cors: bool) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
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
) -> Response<Body>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut rate = None;
    let mut response = match dispatch(state, route, req, peer, &mut rate).await {
        Ok(response) => response,
        Err(error) => error.into_response(request_id),
    };
    if let Some(decision) = &rate {
        rate_limit_headers(response.headers_mut(), decision);
    }
    response
}

fn need(principal: &Option<Principal>) -> Result<&Principal, ApiError> {
    principal.as_ref().ok_or(ApiError::Unauthorized)
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

/// Authenticates, logging and counting the precise failure.
async fn authenticate_for(
    state: &AppState,
    route: Route,
    headers: &HeaderMap,
    context: &auth::AuthContext<'_>,
    rate: &mut Option<Decision>,
) -> Result<Option<Authenticated>, ApiError> {
    match auth::authenticate(state, headers, context).await {
        Ok(Some(found)) => Ok(Some(found)),
        Ok(None) if route.access() == Access::CredentialOrClientAddress => Ok(None),
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

/// The bucket a principal draws from and its limit (SPEC §8): a key's own `rateLimit`, else
/// its organization's plan; credentials without a key use one bucket per user.
pub fn bucket_for(principal: &Principal) -> (BucketKey, u32) {
    let plan = plan_limit(principal.organization());
    match principal.api_key() {
        Some(key) => (BucketKey::ApiKey(key.id), key.rate_limit.unwrap_or(plan)),
        None => (BucketKey::User(principal.user().id), plan),
    }
}

/// The route's declared access against what the credential may do.
fn check_access(access: Access, holds: &Permissions, method: &Method) -> Result<(), ApiError> {
    match access {
        Access::Public
        | Access::AnyCredential
        | Access::PerClientAddress
        | Access::CredentialOrClientAddress => Ok(()),
        Access::Permission(resource) => {
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
        Access::Unrestricted => match holds {
            Permissions::Unrestricted => Ok(()),
            Permissions::Restricted(_) => Err(ApiError::Forbidden {
                message: "This route needs a credential without a permission list".into(),
                required: Some("unrestricted".into()),
            }),
        },
    }
}

async fn dispatch<B>(
    state: &AppState,
    route: Route,
    req: Request<B>,
    peer: SocketAddr,
    rate: &mut Option<Decision>,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let cap = state.config.max_body_bytes;
    let body_timeout = state.config.body_timeout;
    // Refused from the declared length before a byte of the body is read.
    if declared_length_exceeds(req.headers(), cap) {
        return Err(ApiError::PayloadTooLarge { limit: cap });
    }
    // A top-up without a payment is answered 402 whoever asks, so no credential is checked
    // (and no wallet signature used up) until the payment comes: the x402 retry resends the
    // same request with `X-PAYMENT` added.
    let unpaid_topup = matches!(route, Route::Topup(_)) && !api::topup::has_payment(req.headers());
    let authenticates = route.authenticates() && !unpaid_topup;
    let address = client_ip(req.headers(), peer, state.config.trust_proxy);
    if route.access() == Access::PerClientAddress
        || (route.access() == Access::CredentialOrClientAddress
            && (!authenticates || !auth::presents_credential(req.headers())))
    {
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
        // SPEC §3: accounts created by an x402 top-up get no sign-up bonus, and are made only
        // once the payment has settled.
        new_wallet: if matches!(route, Route::Topup(_)) {
            NewWallet::Defer
        } else {
            NewWallet::Create(Bonus::Grant(state.config.initial_free_credits_micros))
        },
    };
    let authenticated = if authenticates {
        authenticate_for(state, route, &parts.headers, &context, rate).await?
    } else {
        None
    };
    let (principal, new_wallet) = match authenticated {
        Some(Authenticated::Principal(principal)) => (Some(principal), None),
        Some(Authenticated::NewWallet {
            wallet,
            rate: drawn,
        }) => {
            if drawn.is_some() {
                *rate = drawn;
            }
            (None, Some(wallet))
        }
        None => (None, None),
    };
    if let Some(principal) = &principal {
        check_cross_site(state, principal, &parts.method, &parts.headers)?;
        let now = state.now();
        let (bucket, limit) = bucket_for(principal);
        let decision = state.limiter.take(bucket, limit, now);
        *rate = Some(decision);
        if !decision.allowed {
            state.metrics.record_rate_limited();
            return Err(ApiError::RateLimited {
                retry_after_secs: decision.retry_after_secs,
            });
        }
        check_access(route.access(), &principal.access, &parts.method)?;
        state.usage.record(
            principal.api_key().map(|k| k.id),
            principal.organization().id,
            now,
        );
    }
    match route {
        Route::Healthz => Ok(api::ops::healthz()),
        Route::Readyz => api::ops::readyz(state).await,
        Route::Metrics => Ok(api::ops::metrics(state)),
        Route::CorsPreflight => Ok(preflight()),
        Route::Whoami => Ok(api::auth::whoami(need(&principal)?)),
        Route::Dashboard => api::dashboard::dashboard(state, need(&principal)?, *rate).await,
        Route::Credits => {
            api::dashboard::credits(state, need(&principal)?, parts.uri.query()).await
        }
        Route::ApiKeys if parts.method == Method::POST => {
            let body = body.bytes(cap, body_timeout).await?;
            api::keys::create(state, need(&principal)?, &body).await
        }
        Route::ApiKeys => api::keys::list(state, need(&principal)?).await,
        Route::ApiKey(id) if parts.method == Method::PATCH => {
            let body = body.bytes(cap, body_timeout).await?;
            api::keys::update(state, need(&principal)?, id, &body).await
        }
        Route::ApiKey(id) => api::keys::delete(state, need(&principal)?, id).await,
        Route::ApiKeyRegenerate(id) => api::keys::regenerate(state, need(&principal)?, id).await,
        Route::SiweNonce => api::signin::siwe_nonce(state, parts.uri.query()),
        Route::SiwsNonce => api::signin::siws_nonce(state, parts.uri.query()),
        Route::SiweVerify => {
            let body = body.bytes(cap, body_timeout).await?;
            api::signin::verify_siwe(state, &body).await
        }
        Route::SiwsVerify => {
            let body = body.bytes(cap, body_timeout).await?;
            api::signin::verify_siws(state, &body).await
        }
        Route::Logout => api::signin::logout(state, &parts.headers).await,
        Route::Topup(amount) => {
            let body = body.bytes(cap, body_timeout).await?;
            let path = parts.uri.path();
            api::topup::topup(
                state,
                principal.as_ref(),
                new_wallet,
                amount,
                path,
                &parts.headers,
                &body,
            )
            .await
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
        let clock = std::sync::Arc::new(crate::clock::ManualClock::new(
            crate::clock::Timestamp::from_millis(1_767_225_600_000),
        ));
        let state = AppState::new(config, store, clock);
        let req = Request::post("/api/auth/siwe/verify")
            .header(REQUEST_ID_HEADER, "req-panic-1")
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

    #[test]
    fn route_permissions_follow_the_method_and_name_what_is_missing() {
        use crate::auth::permissions::Resource;
        let chat_read = Permissions::from_stored(&["chat:read".into()]);
        let chat = Permissions::from_stored(&["chat".into()]);
        let need = Access::Permission(Resource::CHAT);
        for method in [Method::GET, Method::HEAD] {
            assert_eq!(check_access(need, &chat_read, &method), Ok(()));
        }
        for method in [Method::POST, Method::PATCH, Method::DELETE, Method::PUT] {
            let refused = check_access(need, &chat_read, &method);
            let Err(ApiError::Forbidden { required, .. }) = refused else {
                panic!("{method} allowed with chat:read");
            };
            assert_eq!(required.as_deref(), Some("chat:write"));
            assert_eq!(check_access(need, &chat, &method), Ok(()));
            assert_eq!(
                check_access(need, &Permissions::Unrestricted, &method),
                Ok(())
            );
        }
        let images = Permissions::from_stored(&["images".into()]);
        let Err(ApiError::Forbidden { required, .. }) = check_access(need, &images, &Method::GET)
        else {
            panic!("images grants chat");
        };
        assert_eq!(required.as_deref(), Some("chat:read"));
        let Err(ApiError::Forbidden { required, .. }) =
            check_access(Access::Unrestricted, &chat, &Method::GET)
        else {
            panic!("a restricted key managed keys");
        };
        assert_eq!(required.as_deref(), Some("unrestricted"));
        assert_eq!(
            check_access(Access::AnyCredential, &images, &Method::POST),
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
