//! A real webhook receiver on 127.0.0.1 for the webhook tests: it answers each delivery as the
//! test scripted (a status, a status with `Retry-After`, or a hang that holds the connection
//! until the sender cuts it), records every request (headers and raw body), and hands each one to
//! the test as it arrives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

/// How the receiver answers one delivery.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    RetryAfter(u16, &'static str),
    /// Never answers; the sender must cut the connection.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Shared {
    script: Mutex<VecDeque<Answer>>,
    seen: mpsc::UnboundedSender<Delivery>,
    /// Hung connections the sender has closed.
    cut: mpsc::UnboundedSender<()>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    seen: tokio::sync::Mutex<mpsc::UnboundedReceiver<Delivery>>,
    cut: tokio::sync::Mutex<mpsc::UnboundedReceiver<()>>,
}

impl Receiver {
    /// Answers `script` in order, then 200 to everything.
    pub async fn start(script: Vec<Answer>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        let (cut_tx, cut_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            seen: seen_tx,
            cut: cut_tx,
        });
        let accept = shared;
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let shared = accept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, hyper::Error>(answer(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            seen: tokio::sync::Mutex::new(seen_rx),
            cut: tokio::sync::Mutex::new(cut_rx),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks/eliza", self.addr)
    }

    /// The next delivery, waiting at most `secs` seconds for it.
    pub async fn next(&self, secs: u64) -> Delivery {
        tokio::time::timeout(Duration::from_secs(secs), self.seen.lock().await.recv())
            .await
            .unwrap_or_else(|_| panic!("no delivery within {secs} s"))
            .unwrap()
    }

    /// The next delivery within `millis`, if one comes.
    pub async fn try_next(&self, millis: u64) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_millis(millis), self.seen.lock().await.recv())
            .await
            .ok()
            .flatten()
    }

    /// Nothing arrives for a while (used only where a delivery would come at once).
    pub async fn nothing_for(&self, millis: u64) {
        let got =
            tokio::time::timeout(Duration::from_millis(millis), self.seen.lock().await.recv())
                .await;
        assert!(got.is_err(), "an unexpected delivery: {got:?}");
    }

    /// A hung connection was closed by the sender.
    pub async fn was_cut(&self, secs: u64) {
        tokio::time::timeout(Duration::from_secs(secs), self.cut.lock().await.recv())
            .await
            .unwrap_or_else(|_| panic!("the hung delivery was not cut within {secs} s"));
    }
}

/// Sends `()` when dropped: the hung request's future is dropped when its connection closes.
struct OnDrop(mpsc::UnboundedSender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let next = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Status(200));
    let _ = shared.seen.send(Delivery {
        headers: parts.headers,
        body,
    });
    match next {
        Answer::Status(status) => Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
            .unwrap(),
        Answer::RetryAfter(status, after) => Response::builder()
            .status(status)
            .header("retry-after", after)
            .body(Full::new(Bytes::new()))
            .unwrap(),
        Answer::Hang => {
            let _guard = OnDrop(shared.cut.clone());
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}
