//! Test entry points: [`TestServer`] (the real server in this process, with a [`ManualClock`])
//! and [`Binary`] (the real `eliza-cloud` executable), plus a small HTTP client.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use eliza_cloud::bootstrap::BootstrapOutcome;
use eliza_cloud::config::ServeConfig;
use eliza_cloud::server::{self, RunningServer};
use eliza_cloud::time::{ManualClock, Timestamp};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// 2026-01-01T00:00:00Z, where every test clock starts.
pub const T0: Timestamp = Timestamp(1_767_225_600_000);

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
    }

    /// Asserts the SPEC §2 envelope with this status and code; answers the error object.
    pub fn assert_error(&self, status: u16, code: &str) -> serde_json::Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let json = self.json();
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(json["error"]["message"].is_string(), "{json}");
        assert_eq!(
            json["error"]["requestId"].as_str(),
            self.header("x-request-id"),
            "the envelope's requestId is the response's X-Request-Id"
        );
        json["error"].clone()
    }
}

pub struct HttpClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> HttpClient {
        HttpClient {
            base: format!("http://{addr}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        self.try_request(method, path, headers, body)
            .await
            .unwrap_or_else(|| panic!("the exchange with {}{path} failed", self.base))
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.request(Method::GET, path, headers, Bytes::new()).await
    }

    /// [`HttpClient::request`] that answers `None` when the exchange fails (the server died).
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Option<TestResponse> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body.into())).ok()?;
        let response = self.client.request(request).await.ok()?;
        let (parts, body) = response.into_parts();
        Some(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.ok()?.to_bytes(),
        })
    }
}

/// The real server in this process on 127.0.0.1:0, a temporary data directory and a fixed clock.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub config: ServeConfig,
    pub operator_key: String,
    server: Option<RunningServer>,
    client: HttpClient,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::with_data_dir(dir.path().join("data"));
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        adjust(&mut config);
        let clock = Arc::new(ManualClock::new(T0));
        let mut server = server::start(config.clone(), clock.clone()).await.unwrap();
        let operator_key = match server.take_bootstrap() {
            Some(BootstrapOutcome::Created {
                new_key: Some(key), ..
            }) => key.expose().to_string(),
            Some(BootstrapOutcome::Created { new_key: None, .. }) => config
                .bootstrap_key
                .as_ref()
                .map(|k| k.expose().to_string())
                .unwrap(),
            other => panic!("a fresh directory must bootstrap, got {other:?}"),
        };
        let client = HttpClient::new(server.local_addr());
        TestServer {
            dir,
            clock,
            config,
            operator_key,
            server: Some(server),
            client,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.running().local_addr()
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("server is running")
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        self.client.get(path, headers).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> TestResponse {
        self.client.request(method, path, headers, body).await
    }

    /// Sends JSON with the operator's key.
    pub async fn operator_json(
        &self,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> TestResponse {
        let key = self.operator_key.clone();
        self.json_as(&key, method, path, body).await
    }

    /// Sends JSON with the given key.
    pub async fn json_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: serde_json::Value,
    ) -> TestResponse {
        self.request(
            method,
            path,
            &[("x-api-key", key), ("content-type", "application/json")],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    /// Creates a key through the API with the operator's key; answers (id, plaintext, view).
    pub async fn create_key(&self, body: serde_json::Value) -> (String, String, serde_json::Value) {
        let r = self
            .operator_json(Method::POST, "/api/v1/api-keys", body)
            .await;
        r.assert_status(StatusCode::CREATED);
        let json = r.json();
        (
            json["apiKey"]["id"].as_str().unwrap().to_string(),
            json["plainKey"].as_str().unwrap().to_string(),
            json["apiKey"].clone(),
        )
    }

    /// Status of `whoami` with this key.
    pub async fn whoami_status(&self, key: &str) -> u16 {
        self.get("/api/v1/auth/whoami", &[("x-api-key", key)])
            .await
            .status
            .as_u16()
    }

    /// `GET /metrics` from 127.0.0.3, an address no test holds connections from.
    pub async fn get_from_other_address(&self) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
        let mut stream = socket.connect(self.addr()).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        out
    }

    /// Waits (bounded, 10 s) until the number of requests the server is handling satisfies
    /// `done`: a request has arrived, or the server has dropped one whose client hung up.
    pub async fn wait_for_in_flight(&self, what: &str, done: impl Fn(i64) -> bool) {
        let metrics = self.running().state().metrics.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(metrics.requests_in_flight()) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops the server (drain included) and releases the database.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops and starts again on the same data directory (a new port).
    pub async fn restart(&mut self) -> Option<BootstrapOutcome> {
        self.stop().await;
        let mut server = server::start(self.config.clone(), self.clock.clone())
            .await
            .unwrap();
        self.client = HttpClient::new(server.local_addr());
        let outcome = server.take_bootstrap();
        self.server = Some(server);
        outcome
    }
}

/// The binary the tests run: the one cargo built, or `ELIZA_CLOUD_TEST_BINARY` (CI runs the crash
/// test on the release build).
pub fn binary_path() -> String {
    std::env::var("ELIZA_CLOUD_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_eliza-cloud").to_string())
}

/// Runs an offline subcommand of the real binary; answers (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(binary_path());
    cmd.args(args).stdin(Stdio::null());
    clear_eliza_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn clear_eliza_env(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("ELIZA_CLOUD_") {
            cmd.env_remove(key);
        }
    }
}

/// The real `eliza-cloud serve` as a child process; its stderr is collected as it arrives.
pub struct Binary {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    /// Starts `serve --listen 127.0.0.1:0 --data DIR` plus `args`, and waits for its
    /// "listening on" line (the server prints it once it accepts).
    pub fn serve(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::serve_at("127.0.0.1:0", data, args, env)
    }

    /// [`Binary::serve`] on a given `--listen` address.
    pub fn serve_at(listen: &str, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(binary_path());
        cmd.arg("serve")
            .arg("--listen")
            .arg(listen)
            .arg("--data")
            .arg(data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        clear_eliza_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let collected = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = collected.clone();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(addr) = line.trim().strip_prefix("eliza-cloud listening on http://") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; stderr:\n{}",
                    collected.lock().unwrap()
                );
            }
        };
        Binary {
            child,
            addr,
            stderr: collected,
            reader: Some(reader),
        }
    }

    pub fn client(&self) -> HttpClient {
        HttpClient::new(self.addr)
    }

    /// The process's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends SIGTERM and waits for the exit; answers (exit code, everything it wrote to stderr).
    pub fn terminate(self) -> (i32, String) {
        self.signal("TERM")
    }

    /// Sends the signal (`TERM`, `INT`) and waits for the exit; answers (exit code, stderr).
    pub fn signal(mut self, name: &str) -> (i32, String) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        (exit.code().unwrap_or(-1), stderr)
    }
}

impl Binary {
    /// SIGKILL: the process gets no chance to finish anything. Answers what it wrote to stderr.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh operator key (`keys generate`), for `ELIZA_CLOUD_BOOTSTRAP_KEY`.
pub fn operator_key() -> String {
    let (code, key, err) = run_cli(&["keys", "generate"], &[]);
    assert_eq!(code, 0, "{err}");
    key.trim().to_string()
}

/// A database made by a first start and stopped, the operator's organization granted
/// `dollars` offline: ready for [`Binary::serve`] with the same `args` and `env`.
pub fn database_with_credits(data: &Path, args: &[&str], env: &[(&str, &str)], dollars: &str) {
    let (code, stderr) = Binary::serve(data, args, env).terminate();
    assert_eq!(code, 0, "{stderr}");
    let data = data.to_str().unwrap();
    let (code, _, err) = run_cli(
        &["orgs", "grant-credits", "operator", dollars, "--data", data],
        &[],
    );
    assert_eq!(code, 0, "{err}");
}

/// A client address of its own (honoured when the server trusts the proxy).
pub fn fresh_address() -> String {
    let [a, b, c]: [u8; 3] = rand::random();
    format!("10.{a}.{b}.{c}")
}

pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    (tmp, data)
}

/// Sends the requests at once; answers how many got each status, and all the statuses.
pub async fn race(
    attempts: impl IntoIterator<Item = impl std::future::Future<Output = TestResponse>>,
) -> (std::collections::BTreeMap<u16, usize>, Vec<StatusCode>) {
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status)
        .collect();
    let mut counts = std::collections::BTreeMap::new();
    for s in &statuses {
        *counts.entry(s.as_u16()).or_default() += 1;
    }
    (counts, statuses)
}

/// A free loopback port, for a program the test starts that takes its port from its arguments
/// (pebble, chromedriver) or for a server whose address must be known before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A program a test starts as a real outside service, found on `PATH` under one of `names`.
/// Missing, it answers `None` after saying loudly that the test did not run, or fails under CI
/// (`CI` or `ELIZA_CLOUD_REQUIRE_TEST_TOOLS` set, as `.ci/run` does, which installs `package`).
pub fn required_tool(names: &[&str], package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none()
                && std::env::var_os("ELIZA_CLOUD_REQUIRE_TEST_TOOLS").is_none(),
            "{} is missing: .ci/run installs it (apt-get install {package})",
            names.join(" or ")
        );
        eprintln!(
            "\n*** SKIPPED: a test needs {} (apt-get install {package}); it did not run ***\n",
            names.join(" or ")
        );
    }
    found
}
