//! The request pipeline: request id → body cap → route → access check → handler → envelope,
//! headers, metrics and one log line. A panicking handler is caught here and answered 500.

pub mod body;
pub mod error;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};

use crate::api;
use crate::auth;
use crate::state::AppState;
use body::{Body, declared_length_exceeds, empty};
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
    format!("req_{:032x}", rand::random::<u128>())
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
    let mut response = catch_panics(respond(state, route, req, peer), &request_id).await;
    finish_headers(
        response.headers_mut(),
        &request_id,
        path.starts_with("/api/"),
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

/// Awaits a handler; an `Err` becomes its envelope and a panic becomes a logged 500.
pub async fn catch_panics(
    handler: impl Future<Output = Result<Response<Body>, ApiError>>,
    request_id: &str,
) -> Response<Body> {
    match AssertUnwindSafe(handler).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(request_id),
        Err(_) => {
            // The payload is not logged: a panic message may hold request data.
            tracing::error!(request_id = %request_id, "handler panicked; answered 500");
            ApiError::Internal.into_response(request_id)
        }
    }
}

fn finish_headers(headers: &mut HeaderMap, request_id: &str, is_api: bool) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if is_api {
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

async fn respond<B>(
    state: &AppState,
    route: Route,
    req: Request<B>,
    _peer: SocketAddr,
) -> Result<Response<Body>, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Refused from the declared length before a byte of the body is read.
    if declared_length_exceeds(req.headers(), state.config.max_body_bytes) {
        return Err(ApiError::PayloadTooLarge {
            limit: state.config.max_body_bytes,
        });
    }
    let principal = match route.access() {
        Access::Public => None,
        Access::AnyCredential => match auth::authenticate(state, req.headers()).await {
            Ok(Some(principal)) => Some(principal),
            Ok(None) => {
                state
                    .metrics
                    .record_auth_failure("none", "missing_credential");
                tracing::info!(route = route.name(), "authentication failed: no credential");
                return Err(ApiError::Unauthorized);
            }
            Err(failure) => {
                state
                    .metrics
                    .record_auth_failure(failure.method, failure.reason);
                tracing::info!(
                    route = route.name(),
                    method = failure.method,
                    reason = failure.reason,
                    "authentication failed"
                );
                return Err(ApiError::Unauthorized);
            }
        },
    };
    let response = match (route, principal) {
        (Route::Healthz, _) => api::ops::healthz(),
        (Route::Readyz, _) => api::ops::readyz(state).await?,
        (Route::Metrics, _) => api::ops::metrics(state),
        (Route::CorsPreflight, _) => preflight(),
        (Route::Whoami, Some(principal)) => api::auth::whoami(&principal),
        (Route::NotFound, _) => return Err(ApiError::NotFound),
        (Route::MethodNotAllowed { allow }, _) => return Err(ApiError::MethodNotAllowed { allow }),
        // A route whose access demands a principal always has one here.
        (Route::Whoami, None) => return Err(ApiError::Unauthorized),
    };
    Ok(response)
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

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_and_logged() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let handler = async {
            if true {
                panic!("boom with secret-ish data");
            }
            Ok(Response::new(empty()))
        };
        let response = catch_panics(handler, "req_x").await;
        let logged = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
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

    #[test]
    fn request_ids() {
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
    fn credential_like_path_segments_are_not_logged() {
        assert_eq!(
            loggable_path("/api/v1/ek_live_abc/x"),
            "/api/v1/<redacted>/x"
        );
        assert_eq!(loggable_path("/healthz"), "/healthz");
    }
}
