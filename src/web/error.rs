//! The one error type of the HTTP layer. Its single `match` decides status, stable code and the
//! public message (SPEC §2); the precise cause goes to the log, never to the caller.

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use super::body::{Body, json_body};

#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 400 with `details` naming each bad field.
    Validation {
        message: String,
        details: Value,
    },
    InvalidJson(String),
    Unauthorized,
    InsufficientCredits {
        message: String,
    },
    /// 403; `required` names the missing permission when there is one.
    Forbidden {
        message: String,
        required: Option<String>,
    },
    /// 403: a browser call from an origin the app does not allow (SPEC §10). Its answer carries
    /// no `Access-Control-Allow-Origin`, so the page that sent it cannot read it.
    OriginNotAllowed,
    NotFound,
    /// 404 for a model the table does not have, with `param: "model"` (SPEC §9).
    ModelNotFound {
        model: String,
    },
    /// The upstream refused the caller's request (its 400, 404 or 422): its status and message
    /// in our envelope (SPEC §9).
    UpstreamRefused {
        status: StatusCode,
        message: String,
        param: Option<String>,
    },
    /// 502: the upstream failed, refused the operator's credential, or could not be reached.
    /// `may_be_billed`: the request reached it, so the SDKs are told not to retry.
    UpstreamFailed {
        message: String,
        may_be_billed: bool,
    },
    /// 504: the upstream did not answer within `--upstream-timeout`.
    UpstreamTimeout,
    MethodNotAllowed {
        allow: &'static str,
    },
    Conflict {
        message: String,
        details: Option<Value>,
    },
    PayloadTooLarge {
        limit: usize,
    },
    /// 415: a sign-in route's body was not sent as `application/json` (SPEC §2).
    UnsupportedMediaType,
    /// 408: the body did not arrive within `--body-timeout`; the connection is closed after.
    RequestTimeout,
    RateLimited {
        retry_after_secs: u64,
    },
    /// A bug or a failing dependency; the message never says anything internal.
    Internal,
    ServiceUnavailable(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    pub(crate) fn parts(&self) -> (StatusCode, &'static str, String, Option<Value>) {
        match self {
            ApiError::Validation { message, details } => (
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                message.clone(),
                Some(details.clone()),
            ),
            ApiError::InvalidJson(why) => (
                StatusCode::BAD_REQUEST,
                "INVALID_JSON",
                format!("Request body is not valid JSON: {why}"),
                None,
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Invalid or missing authentication".into(),
                None,
            ),
            ApiError::InsufficientCredits { message } => (
                StatusCode::PAYMENT_REQUIRED,
                "INSUFFICIENT_CREDITS",
                message.clone(),
                None,
            ),
            ApiError::Forbidden { message, required } => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                message.clone(),
                required.as_ref().map(|r| json!({ "required": r })),
            ),
            ApiError::OriginNotAllowed => (
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "This origin is not among the app's allowed origins".into(),
                None,
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", "Not found".into(), None),
            ApiError::ModelNotFound { model } => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("The model {model:?} does not exist"),
                None,
            ),
            ApiError::UpstreamRefused {
                status, message, ..
            } => (
                *status,
                if *status == StatusCode::NOT_FOUND {
                    "NOT_FOUND"
                } else {
                    "VALIDATION_ERROR"
                },
                message.clone(),
                None,
            ),
            ApiError::UpstreamFailed { message, .. } => (
                StatusCode::BAD_GATEWAY,
                "UPSTREAM_ERROR",
                message.clone(),
                None,
            ),
            ApiError::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "UPSTREAM_TIMEOUT",
                "The upstream model provider did not answer in time".into(),
                None,
            ),
            ApiError::MethodNotAllowed { allow } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                format!("Method not allowed; allowed: {allow}"),
                None,
            ),
            ApiError::Conflict { message, details } => (
                StatusCode::CONFLICT,
                "CONFLICT",
                message.clone(),
                details.clone(),
            ),
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("Request body exceeds {limit} bytes"),
                None,
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "This route takes its body only as Content-Type: application/json".into(),
                None,
            ),
            ApiError::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "The request body did not arrive in time".into(),
                None,
            ),
            ApiError::RateLimited { retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!("Rate limit exceeded; retry in {retry_after_secs} s"),
                None,
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal server error".into(),
                None,
            ),
            ApiError::ServiceUnavailable(what) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                what.clone(),
                None,
            ),
        }
    }

    /// The `type` OpenAI's SDKs read beside `code` (SPEC §2), from the status alone.
    pub fn error_type(status: StatusCode) -> &'static str {
        match status.as_u16() {
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => "rate_limit_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The first bad field: the first name of a validation error's `details`, else `null`.
    fn param(&self) -> Option<String> {
        match self {
            ApiError::Validation { details, .. } => {
                details.as_object().and_then(|o| o.keys().next().cloned())
            }
            ApiError::ModelNotFound { .. } => Some("model".into()),
            ApiError::UpstreamRefused { param, .. } => param.clone(),
            _ => None,
        }
    }

    /// The envelope `{"error": {code, type, param, message, requestId, details?}}` with the
    /// headers the status calls for (`WWW-Authenticate`, `Allow`, `Retry-After`).
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let param = self.param();
        let (status, code, message, details) = self.parts();
        let mut error = json!({
            "code": code,
            "type": ApiError::error_type(status),
            "param": param,
            "message": message,
            "requestId": request_id,
        });
        if let (Some(details), Some(obj)) = (details, error.as_object_mut()) {
            obj.insert("details".into(), details);
        }
        let mut response = json_body(status, &json!({ "error": error }));
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"eliza-cloud\""),
                );
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::UpstreamFailed {
                may_be_billed: true,
                ..
            }
            | ApiError::UpstreamTimeout => {
                // The OpenAI SDKs retry 5xx unless told not to; this call may have been billed.
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
            ApiError::RequestTimeout => {
                // The rest of the body may still come; the connection cannot be reused.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        if matches!(self, ApiError::OriginNotAllowed) {
            response.extensions_mut().insert(OriginRefused);
        }
        response
    }
}

/// Marks an answer to a browser call from an origin its app does not allow: the CORS headers
/// are left out of it.
#[derive(Debug, Clone, Copy)]
pub struct OriginRefused;

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(what) => ApiError::Conflict {
                message: format!("{what} is already taken"),
                details: None,
            },
            other => {
                tracing::error!(error = %other, "store operation failed");
                ApiError::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (ApiError::Unauthorized, 401, "UNAUTHORIZED"),
            (ApiError::NotFound, 404, "NOT_FOUND"),
            (
                ApiError::MethodNotAllowed { allow: "GET" },
                405,
                "METHOD_NOT_ALLOWED",
            ),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "PAYLOAD_TOO_LARGE",
            ),
            (ApiError::RequestTimeout, 408, "REQUEST_TIMEOUT"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 3,
                },
                429,
                "RATE_LIMITED",
            ),
            (ApiError::Internal, 500, "INTERNAL_ERROR"),
            (ApiError::InvalidJson("x".into()), 400, "INVALID_JSON"),
            (
                ApiError::UnsupportedMediaType,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn every_error_has_a_type_and_a_param() {
        let body = |e: ApiError| {
            let r = e.into_response("req_1");
            let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(
                r.into_body(),
            ))
            .unwrap()
            .unwrap()
            .to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()["error"].clone()
        };
        let e = body(ApiError::Validation {
            message: "bad".into(),
            details: json!({ "name": "required", "type": "bad" }),
        });
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], "name");
        let cases = [
            (ApiError::Unauthorized, "authentication_error"),
            (
                ApiError::InsufficientCredits {
                    message: "x".into(),
                },
                "insufficient_quota",
            ),
            (
                ApiError::Forbidden {
                    message: "x".into(),
                    required: None,
                },
                "permission_error",
            ),
            (ApiError::NotFound, "invalid_request_error"),
            (ApiError::UnsupportedMediaType, "invalid_request_error"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 1,
                },
                "rate_limit_error",
            ),
            (ApiError::Internal, "api_error"),
            (ApiError::ServiceUnavailable("x".into()), "api_error"),
        ];
        for (error, kind) in cases {
            let e = body(error);
            assert_eq!(e["type"], kind, "{e}");
            assert!(e["param"].is_null(), "{e}");
        }
    }

    #[test]
    fn headers_follow_status() {
        let r = ApiError::Unauthorized.into_response("req_1");
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"eliza-cloud\""
        );
        let r = ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response("req_1");
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
        let r = ApiError::RateLimited {
            retry_after_secs: 7,
        }
        .into_response("req_1");
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
    }
}
