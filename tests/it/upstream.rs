//! A real OpenAI-compatible server on 127.0.0.1 for the gateway's tests: it answers chat,
//! embeddings and images as scripted, streams chunk by chunk with a gate the test opens, can
//! fail, stall or leave out the usage, records every request it got, and reports when the
//! gateway closed a stream on it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc};

/// What the upstream does with the next calls.
#[derive(Clone, Debug)]
pub struct Script {
    /// Report `usage` (whole answers and the stream's usage chunk).
    pub usage: bool,
    /// Usage as reported: (prompt, completion); `None` counts the words honestly.
    pub reported: Option<(u64, u64)>,
    /// Answer this status with an error body before any output.
    pub fail: Option<u16>,
    /// Never answer (the head never comes).
    pub stall: bool,
    /// The streamed content pieces.
    pub pieces: Vec<String>,
    /// Stream: after this many content pieces, wait for [`Upstream::release`] before the rest
    /// (and before the end). `None`: no wait.
    pub hold_after: Option<usize>,
    /// Stream: after the held pieces, go silent for good (a stall mid-stream).
    pub stall_mid_stream: bool,
    /// Stream: end after the pieces, without a finish chunk or `[DONE]` (a cut stream).
    pub cut: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            usage: true,
            reported: None,
            fail: None,
            stall: false,
            pieces: ["Hello", " from", " upstream", "."]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            hold_after: None,
            stall_mid_stream: false,
            cut: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

struct Shared {
    script: Mutex<Script>,
    received: Mutex<Vec<Received>>,
    gate: Semaphore,
    /// Streams whose reader (the gateway) went away before the end.
    closed: Mutex<usize>,
    closed_notify: Notify,
}

#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    pub async fn start(script: Script) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            script: Mutex::new(script),
            received: Mutex::default(),
            gate: Semaphore::new(0),
            closed: Mutex::new(0),
            closed_notify: Notify::new(),
        });
        let accept = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = accept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, shared }
    }

    /// The base URL to give `--upstream-url`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    /// Lets one held stream go on.
    pub fn release(&self) {
        self.shared.gate.add_permits(1);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits (bounded, 10 s) until `n` streams were closed by their reader before the end.
    pub async fn wait_closed(&self, n: usize) {
        let wait = async {
            loop {
                let notified = self.shared.closed_notify.notified();
                if *self.shared.closed.lock().unwrap() >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("the gateway never closed the upstream stream");
    }
}

type Answer = Response<UpstreamBody>;

/// A body fed by a channel: the test's stream, chunk by chunk as the script sends it.
pub struct UpstreamBody(mpsc::Receiver<Bytes>);

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn whole(status: u16, value: Value) -> Answer {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Bytes::from(value.to_string()));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("retry-after", "9")
        .body(UpstreamBody(rx))
        .unwrap()
}

fn chunk(content: Option<&str>, finish: Option<&str>, usage: Option<Value>) -> Bytes {
    let choices = match (content, finish) {
        (None, None) => json!([]),
        (Some(c), _) => json!([{"index": 0, "delta": {"content": c}, "finish_reason": null}]),
        (None, Some(f)) => json!([{"index": 0, "delta": {}, "finish_reason": f}]),
    };
    let mut value = json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                           "model": "upstream-model", "choices": choices});
    if let Some(u) = usage {
        value["usage"] = u;
    }
    Bytes::from(format!("data: {value}\n\n"))
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Answer, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_string());
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.received.lock().unwrap().push(Received {
        path: path.clone(),
        authorization,
        body: body.clone(),
    });
    let script = shared.script.lock().unwrap().clone();
    if script.stall {
        std::future::pending::<()>().await;
    }
    if let Some(status) = script.fail {
        return Ok(whole(
            status,
            json!({"error": {"message": format!("scripted {status}"), "type": "x", "param": "temperature", "code": null}}),
        ));
    }
    let text: String = script.pieces.concat();
    let completion = (text.len() as u64).div_ceil(4);
    let (prompt, completion) = script.reported.unwrap_or((7, completion));
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion});
    match path.as_str() {
        "/v1/embeddings" => {
            let mut answer = json!({"object": "list", "model": body["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0, 0.25]}]});
            if script.usage {
                answer["usage"] = json!({"prompt_tokens": prompt, "total_tokens": prompt});
            }
            Ok(whole(200, answer))
        }
        "/v1/images/generations" => Ok(whole(
            200,
            json!({"created": 1, "data": [{"b64_json": "aGVsbG8="}]}),
        )),
        "/v1/chat/completions" if body["stream"] == json!(true) => {
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            let shared = shared.clone();
            tokio::spawn(async move {
                let sent = async {
                    tx.send(chunk(Some(""), None, None)).await.ok()?;
                    for (at, piece) in script.pieces.iter().enumerate() {
                        if script.hold_after == Some(at) {
                            shared.gate.acquire().await.unwrap().forget();
                        }
                        tx.send(chunk(Some(piece), None, None)).await.ok()?;
                    }
                    if script.hold_after == Some(script.pieces.len()) {
                        shared.gate.acquire().await.unwrap().forget();
                    }
                    if script.stall_mid_stream {
                        tx.closed().await;
                        return None;
                    }
                    if script.cut {
                        return Some(());
                    }
                    tx.send(chunk(None, Some("stop"), None)).await.ok()?;
                    let wants = body["stream_options"]["include_usage"] == json!(true);
                    if script.usage && wants {
                        tx.send(chunk(None, None, Some(usage))).await.ok()?;
                    }
                    tx.send(Bytes::from("data: [DONE]\n\n")).await.ok()?;
                    Some(())
                };
                let finished = tokio::select! {
                    done = sent => done.is_some(),
                    _ = tx.closed() => false,
                };
                if !finished {
                    *shared.closed.lock().unwrap() += 1;
                    shared.closed_notify.notify_waiters();
                }
            });
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(UpstreamBody(rx))
                .unwrap())
        }
        "/v1/chat/completions" => {
            let mut answer = json!({"id": "up-1", "object": "chat.completion", "created": 1,
                "model": "upstream-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]});
            if script.usage {
                answer["usage"] = usage;
            }
            Ok(whole(200, answer))
        }
        _ => Ok(whole(404, json!({"error": {"message": "no such route"}}))),
    }
}
