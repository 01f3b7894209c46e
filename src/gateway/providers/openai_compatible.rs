//! The `openai-compatible` provider (SPEC §9): the caller's request forwarded to `--upstream-url`
//! with the operator's `--upstream-key` in place of the caller's credential, over a pooled
//! connection (http, or https with rustls and the Mozilla roots). The answer's head must come
//! within `--upstream-timeout`, and so must each piece of its body; the key is never logged and
//! its `Debug` is redacted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::web::error::ApiError;

/// Largest upstream error body read, in bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The operator's upstream key. Only ever sent in the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamKey(String);

impl UpstreamKey {
    pub fn new(key: String) -> UpstreamKey {
        UpstreamKey(key)
    }
}

impl std::fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamKey(<redacted>)")
    }
}

/// Why an upstream call gave no usable answer.
#[derive(Debug)]
pub enum UpstreamError {
    /// Nothing was sent: the connection could not be made.
    Connect,
    /// The request may have reached the upstream, but no answer came.
    NoAnswer,
    /// No answer head (or no next piece of the body) within the timeout.
    Timeout,
    /// A status other than 2xx, with its (bounded) body and `Retry-After`.
    Status {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<u64>,
    },
    /// A 2xx whose body is not what the route answers.
    Malformed,
}

#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://host[:port][/path]` without a trailing slash, like the SDKs' `base_url`.
    base: String,
    /// `Bearer <key>`, marked sensitive; none for an upstream that takes no key.
    authorization: Option<HeaderValue>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Checks an upstream URL: `http://` or `https://`, a host, no query.
pub use crate::config::validate_http_url as validate_url;

impl Upstream {
    pub fn new(
        url: &str,
        key: Option<&UpstreamKey>,
        timeout: Duration,
    ) -> Result<Upstream, String> {
        validate_url(url)?;
        let authorization = match key.filter(|k| !k.0.is_empty()) {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.0))
                    .map_err(|_| "the upstream key is not a valid header value".to_string())?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let roots = tokio_rustls::rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Upstream {
            client,
            base: url.trim_end_matches('/').to_string(),
            authorization,
            timeout,
        })
    }

    /// POSTs `body` as JSON to `{base}{path}`; answers the response once its head arrived with
    /// a 2xx, or the error (a non-2xx with its bounded body).
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut request = Request::post(format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        let request = request
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| UpstreamError::Malformed)?;
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) if e.is_connect() => return Err(UpstreamError::Connect),
            Ok(Err(_)) => return Err(UpstreamError::NoAnswer),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = read_body(response.into_body(), self.timeout, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        Err(UpstreamError::Status {
            status,
            body,
            retry_after,
        })
    }
}

/// Reads a whole body, at most `max` bytes, each piece within `timeout` of the last.
pub async fn read_body(
    mut body: Incoming,
    timeout: Duration,
    max: usize,
) -> Result<Bytes, UpstreamError> {
    let mut out = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(_))) => return Err(UpstreamError::NoAnswer),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > max {
                        return Err(UpstreamError::Malformed);
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// An upstream failure as the caller sees it (SPEC §9): the upstream's 400, 404 and 422 are the
/// caller's request and keep their status and message; its 429 is ours with its `Retry-After`;
/// its 401, 402 and 403 (the operator's key or quota), its 5xx and an unreachable upstream are
/// 502; a timeout is 504.
pub fn api_error(error: UpstreamError) -> ApiError {
    match error {
        UpstreamError::Connect => ApiError::UpstreamFailed {
            message: "The upstream model provider could not be reached".into(),
            may_be_billed: false,
        },
        UpstreamError::NoAnswer | UpstreamError::Malformed => ApiError::UpstreamFailed {
            message: "The upstream model provider gave no usable answer".into(),
            may_be_billed: true,
        },
        UpstreamError::Timeout => ApiError::UpstreamTimeout,
        UpstreamError::Status {
            status,
            body,
            retry_after,
        } => {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").cloned());
            let message = error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(|m| m.chars().take(1000).collect::<String>());
            match status.as_u16() {
                400 | 404 | 422 => ApiError::UpstreamRefused {
                    status,
                    message: message.unwrap_or_else(|| "The upstream refused the request".into()),
                    param: error
                        .as_ref()
                        .and_then(|e| e.get("param"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                },
                // OpenAI says an exhausted quota of the operator's key with a 429 too: that is
                // the operator's, not the caller's, and no retry helps.
                429 if error.as_ref().is_some_and(|e| {
                    e.get("code").and_then(Value::as_str) == Some("insufficient_quota")
                        || e.get("type").and_then(Value::as_str) == Some("insufficient_quota")
                }) =>
                {
                    tracing::error!("the upstream says the operator's quota is exhausted");
                    ApiError::UpstreamFailed {
                        message: "The upstream model provider refused the gateway's quota".into(),
                        may_be_billed: true,
                    }
                }
                429 => ApiError::RateLimited {
                    retry_after_secs: retry_after.unwrap_or(1).min(3600),
                },
                401..=403 => {
                    tracing::error!(
                        status = status.as_u16(),
                        "the upstream refused the operator's credential or quota"
                    );
                    ApiError::UpstreamFailed {
                        message: "The upstream model provider refused the gateway's credential"
                            .into(),
                        may_be_billed: true,
                    }
                }
                _ => ApiError::UpstreamFailed {
                    message: format!(
                        "The upstream model provider failed (HTTP {})",
                        status.as_u16()
                    ),
                    may_be_billed: true,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_shows_in_debug() {
        let key = UpstreamKey::new("sk-very-secret".into());
        assert!(!format!("{key:?}").contains("secret"));
        let upstream =
            Upstream::new("http://127.0.0.1:9/v1/", Some(&key), Duration::from_secs(1)).unwrap();
        assert!(!format!("{upstream:?}").contains("secret"));
        assert_eq!(upstream.base, "http://127.0.0.1:9/v1");
        assert!(upstream.authorization.as_ref().unwrap().is_sensitive());
        for bad in ["ftp://x", "x", "http://x/?q=1"] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_map_as_the_spec_says() {
        let status = |code: u16, body: &str| {
            api_error(UpstreamError::Status {
                status: StatusCode::from_u16(code).unwrap(),
                body: Bytes::from(body.to_string()),
                retry_after: Some(7),
            })
        };
        let e = status(
            400,
            r#"{"error":{"message":"bad temperature","param":"temperature"}}"#,
        );
        assert_eq!(e.status().as_u16(), 400);
        assert!(
            matches!(&e, ApiError::UpstreamRefused { message, param: Some(p), .. } if message == "bad temperature" && p == "temperature")
        );
        assert_eq!(status(404, "").status().as_u16(), 404);
        assert_eq!(status(422, "").status().as_u16(), 422);
        assert_eq!(
            status(429, ""),
            ApiError::RateLimited {
                retry_after_secs: 7
            }
        );
        for code in [401, 402, 403, 500, 503] {
            assert_eq!(status(code, "").status().as_u16(), 502, "{code}");
        }
        assert_eq!(api_error(UpstreamError::Timeout).status().as_u16(), 504);
        assert_eq!(api_error(UpstreamError::Connect).status().as_u16(), 502);
    }
}
