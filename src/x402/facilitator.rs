//! Settlement through an x402 facilitator: `POST {base}/verify`, then `POST {base}/settle`, each
//! with `{x402Version, paymentPayload, paymentRequirements}`, over http or https (rustls with the
//! ring provider and the Mozilla roots, plus an optional extra root), each call bounded by a
//! timeout. One connection per call: top-ups are rare and this keeps no pool to go stale.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Largest facilitator answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a facilitator call gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nothing was sent: the connection could not be made.
    Connect,
    /// Nothing was sent: the TLS handshake failed.
    Tls,
    /// The request may have been sent, but no answer came (the connection broke).
    NoAnswer,
    Timeout,
    Status(u16),
    Malformed,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect => write!(f, "could not connect"),
            CallError::Tls => write!(f, "TLS handshake failed"),
            CallError::NoAnswer => write!(f, "gave no answer (the connection broke)"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Status(s) => write!(f, "answered HTTP {s}"),
            CallError::Malformed => write!(f, "answered something that is not its JSON"),
        }
    }
}

/// `/verify`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyAnswer {
    pub is_valid: bool,
    pub invalid_reason: Option<String>,
}

/// `/settle`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleAnswer {
    pub success: bool,
    pub error_reason: Option<String>,
    pub transaction: String,
}

/// A facilitator at a base URL.
#[derive(Clone)]
pub struct Facilitator {
    scheme_https: bool,
    host: String,
    port: u16,
    base_path: String,
    timeout: Duration,
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Facilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Facilitator")
            .field("https", &self.scheme_https)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Checks a facilitator URL: `http://` or `https://`, a host, no query.
pub use crate::config::validate_http_url as validate_url;

impl Facilitator {
    /// `extra_root_pem` adds PEM certificates to the trusted roots (a private CA, tests).
    pub fn new(
        url: &str,
        timeout: Duration,
        extra_root_pem: Option<&[u8]>,
    ) -> Result<Facilitator, String> {
        validate_url(url)?;
        let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let base_path = uri.path().trim_end_matches('/').to_string();
        let tls = if https {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            if let Some(pem) = extra_root_pem {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|_| "the facilitator CA file is not PEM".to_string())?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("the facilitator CA is not usable: {e}"))?;
                }
            }
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup failed: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Facilitator {
            scheme_https: https,
            host,
            port,
            base_path,
            timeout,
            tls,
        })
    }

    /// The host to connect to and to name in TLS: an IPv6 literal without its brackets
    /// (`Uri::host` keeps them; the `Host` header wants them).
    fn connect_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    pub async fn verify(&self, body: &Value) -> Result<VerifyAnswer, CallError> {
        let answer = self.post("/verify", body, "isValid").await?;
        let is_valid = answer
            .get("isValid")
            .and_then(Value::as_bool)
            .ok_or(CallError::Malformed)?;
        Ok(VerifyAnswer {
            is_valid,
            invalid_reason: answer
                .get("invalidReason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    pub async fn settle(&self, body: &Value) -> Result<SettleAnswer, CallError> {
        let answer = self.post("/settle", body, "success").await?;
        let success = answer
            .get("success")
            .and_then(Value::as_bool)
            .ok_or(CallError::Malformed)?;
        Ok(SettleAnswer {
            success,
            error_reason: answer
                .get("errorReason")
                .and_then(Value::as_str)
                .map(str::to_string),
            transaction: answer
                .get("transaction")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// POSTs `body`; answers the JSON of a 200, or of a 4xx whose `verdict` field is `false`
    /// (facilitators differ in the status they send a refusal with; its reason is what counts).
    async fn post(&self, path: &str, body: &Value, verdict: &str) -> Result<Value, CallError> {
        tokio::time::timeout(self.timeout, self.post_unbounded(path, body, verdict))
            .await
            .map_err(|_| CallError::Timeout)?
    }

    async fn post_unbounded(
        &self,
        path: &str,
        body: &Value,
        verdict: &str,
    ) -> Result<Value, CallError> {
        let tcp = TcpStream::connect((self.connect_host(), self.port))
            .await
            .map_err(|_| CallError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let host_header =
            if (self.scheme_https && self.port == 443) || (!self.scheme_https && self.port == 80) {
                self.host.clone()
            } else {
                format!("{}:{}", self.host, self.port)
            };
        let request = Request::post(format!("{}{path}", self.base_path))
            .header(header::HOST, host_header)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| CallError::Malformed)?;
        let (status, bytes) = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.connect_host().to_string())
                    .map_err(|_| CallError::Tls)?;
                let stream = tls.connect(name, tcp).await.map_err(|_| CallError::Tls)?;
                exchange(stream, request).await?
            }
            None => exchange(tcp, request).await?,
        };
        if status == StatusCode::OK {
            return serde_json::from_slice(&bytes).map_err(|_| CallError::Malformed);
        }
        if status.is_client_error()
            && let Ok(answer) = serde_json::from_slice::<Value>(&bytes)
            && answer.get(verdict) == Some(&Value::Bool(false))
        {
            return Ok(answer);
        }
        Err(CallError::Status(status.as_u16()))
    }
}

async fn exchange<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), CallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| CallError::Connect)?;
    let driver = tokio::spawn(connection);
    let result = async {
        // From here the request may have reached the facilitator: a failure is no answer, not
        // "never sent" (a settlement then has an unknown outcome).
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| CallError::NoAnswer)?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| CallError::Malformed)?
            .to_bytes();
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(validate_url("http://127.0.0.1:8080").is_ok());
        assert!(validate_url("https://x402.org/facilitator").is_ok());
        for bad in ["ftp://x", "x402.org", "http://", "https://x/?a=1", ""] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
        let f = Facilitator::new(
            "https://x402.org/facilitator/",
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(f.base_path, "/facilitator");
        assert_eq!(f.port, 443);
        assert!(
            Facilitator::new("https://x", Duration::from_secs(1), Some(b"not pem")).is_ok(),
            "no PEM block in the file adds nothing"
        );
    }

    #[test]
    fn an_ipv6_literal_is_connected_to_without_brackets() {
        let f = Facilitator::new("http://[::1]:8402/x", Duration::from_secs(1), None).unwrap();
        assert_eq!(f.host, "[::1]", "kept for the Host header");
        assert_eq!(f.connect_host(), "::1");
        assert_eq!(f.port, 8402);
        let f = Facilitator::new("https://x402.org", Duration::from_secs(1), None).unwrap();
        assert_eq!(f.connect_host(), "x402.org");
    }
}
