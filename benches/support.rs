//! What the out-of-process load benches share: a server process whose stderr is drained, and
//! `wrk` runs parsed into figures.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A baseline server process's whole life: a multi-threaded runtime, one listener on a free
/// port (announced on stderr as the other processes are), and `answer` for every request, served
/// by hyper-util's auto builder as `eliza-cloud serve` is.
pub fn serve_forever<F, Fut>(answer: F)
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = http::Response<http_body_util::Full<bytes::Bytes>>>
        + Send
        + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eprintln!("listening on http://{}", listener.local_addr().unwrap());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
}

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A server process whose stderr is drained by a thread once it said where it listens.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    pub fn spawn(mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on http://".len()..].trim();
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                line.clear();
            }
            let _ = reader.read_to_end(&mut Vec::new());
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server did not start");
        Process { child, addr }
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One wrk run's figures.
#[derive(Clone, Copy, Default)]
pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `wrk`'s latency text (`512.00us`, `1.20ms`, `2.00s`) in milliseconds.
pub fn millis(text: &str) -> f64 {
    let (number, scale) = if let Some(v) = text.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// One `wrk` run against `http://{addr}{path}` with these extra headers and, for a POST, a Lua
/// script; `LOAD_CONNECTIONS` and `LOAD_THREADS` unless `shape` says (connections, threads).
pub fn wrk(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
    script: Option<&Path>,
    seconds: u64,
) -> Figures {
    wrk_shaped(addr, path, headers, script, seconds, None)
}

pub fn wrk_shaped(
    addr: SocketAddr,
    path: &str,
    headers: &[String],
    script: Option<&Path>,
    seconds: u64,
    shape: Option<(u64, u64)>,
) -> Figures {
    let (connections, threads) =
        shape.unwrap_or((env_num("LOAD_CONNECTIONS", 32), env_num("LOAD_THREADS", 2)));
    let mut command = Command::new("wrk");
    command
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency");
    for header in headers {
        command.arg("-H").arg(header);
    }
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let out = command
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "some answers were not 200:\n{text}"
    );
    let mut figures = Figures::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => figures.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => figures.p50_ms = millis(v),
            ["99%", v] => figures.p99_ms = millis(v),
            _ => {}
        }
    }
    assert!(figures.rps > 0.0, "wrk printed no rate:\n{text}");
    figures
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The mock upstream's answer: a chat completion with usage, about the size of a short real one.
pub const CHAT_ANSWER: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}"#;

/// The metered call the gateway benches make.
pub const CHAT_BODY: &str = r#"{"model":"bench-chat","messages":[{"role":"user","content":"Hello there, how are you?"}],"max_tokens":64}"#;

/// One model, served by the mock upstream.
pub const CHAT_MODELS: &str = r#"{"models": [{"id": "bench-chat", "kind": "chat", "provider": "openai-compatible",
  "upstream_model": "mock", "input_price_micros_per_million": 150000,
  "output_price_micros_per_million": 600000, "max_output_tokens": 4096}]}"#;

/// The mock upstream's whole life (a bench re-run with `--mock-upstream`): reads each request
/// body and answers [`CHAT_ANSWER`].
pub fn mock_upstream() {
    use http_body_util::BodyExt;
    serve_forever(|req: http::Request<hyper::body::Incoming>| async {
        let _ = req.into_body().collect().await;
        let mut response = http::Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(CHAT_ANSWER.as_bytes()),
        ));
        response.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        response
    });
}

/// The median of each figure over several runs.
pub fn summary(runs: &[Figures]) -> Figures {
    Figures {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
    }
}
