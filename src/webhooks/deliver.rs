//! One delivery attempt: connect to an address that was checked (never a fresh lookup), TLS for
//! https with the URL's host as the name, one HTTP/1.1 `POST`, and the answer's status and at most
//! 1 KiB of its body, all within the attempt's timeout (SPEC §10's 10 s). Redirects are answers
//! like any other (never followed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::target::Target;

/// At most this much of an answer's body is kept (SPEC §10).
pub const MAX_KEPT_BODY: usize = 1024;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered.
    Answered {
        status: u16,
        retry_after: Option<String>,
        body: String,
    },
    /// No answer: why (a timeout, a refused connection, a TLS failure, a refused address).
    Failed(String),
}

/// The TLS client for https targets: the Mozilla roots, ring, no system library.
pub fn tls_connector() -> Result<TlsConnector, String> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Sends `body` with `headers` to `target` at one of `addresses`, within `timeout`.
pub async fn send(
    target: &Target,
    addresses: &[SocketAddr],
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    timeout: Duration,
    tls: &TlsConnector,
) -> Outcome {
    match tokio::time::timeout(timeout, attempt(target, addresses, headers, body, tls)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(format!("no answer within {} s", timeout.as_secs())),
    }
}

async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut last = "no address".to_string();
    for addr in addresses {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = format!("connecting to {addr} failed: {e}"),
        }
    }
    Err(last)
}

async fn attempt(
    target: &Target,
    addresses: &[SocketAddr],
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    tls: &TlsConnector,
) -> Outcome {
    let tcp = match connect(addresses).await {
        Ok(tcp) => tcp,
        Err(e) => return Outcome::Failed(e),
    };
    let mut request = Request::post(target.path.as_str())
        .header(header::HOST, target.host_header())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("eliza-cloud-webhooks/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = match request.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("the request could not be built: {e}")),
    };
    if target.https {
        let name = match ServerName::try_from(target.bare_host().to_string()) {
            Ok(n) => n,
            Err(_) => return Outcome::Failed("the host is not a TLS server name".into()),
        };
        match tls.connect(name, tcp).await {
            Ok(stream) => exchange(stream, request).await,
            Err(e) => Outcome::Failed(format!("TLS handshake failed: {e}")),
        }
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return Outcome::Failed(format!("HTTP handshake failed: {e}")),
        };
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let outcome = match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut body = response.into_body();
            let mut kept = Vec::new();
            while kept.len() < MAX_KEPT_BODY {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let room = MAX_KEPT_BODY - kept.len();
                            kept.extend_from_slice(
                                data.get(..room.min(data.len())).unwrap_or_default(),
                            );
                        }
                    }
                    _ => break,
                }
            }
            Outcome::Answered {
                status,
                retry_after,
                body: String::from_utf8_lossy(&kept).into_owned(),
            }
        }
        Err(e) => Outcome::Failed(format!("the receiver did not answer: {e}")),
    };
    // The rest of a long body is never read: the connection goes.
    driver.abort();
    outcome
}
