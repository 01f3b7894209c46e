//! Load comparison on loopback, in one run, same client and concurrency: a bare hyper
//! hello-world against `GET /api/v1/auth/whoami` through the full stack (key authentication,
//! routing, envelope, logging off). Prints both throughputs, their ratio, and the process RSS.
//!
//! Run: `cargo bench --bench load` (LOAD_SECONDS, default 3; LOAD_ROUNDS, default 7;
//! LOAD_CONCURRENCY, default 32). Loopback throughput on a shared machine swings by a quarter
//! from one round to the next, so the figure is the median of many short alternating rounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

use eliza_cloud::bootstrap::BootstrapOutcome;
use eliza_cloud::config::ServeConfig;
use eliza_cloud::time::SystemClock;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The baseline: hyper's own hello-world, same auto builder as ours.
async fn bare_hyper() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `concurrency` keep-alive HTTP/1.1 connections, each sending requests back to back for
/// `seconds`; answers requests per second (every answer must be 200).
async fn drive(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    concurrency: u64,
    seconds: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (done, stop) = (done.clone(), stop.clone());
        let uri = format!("http://{addr}{path}");
        let key = key.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let mut req = Request::get(&uri);
                if let Some(key) = &key {
                    req = req.header("x-api-key", key);
                }
                let res = sender
                    .send_request(req.body(Empty::<Bytes>::new()).unwrap())
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::OK, "{:?}", res.headers());
                res.into_body().collect().await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    count as f64 / elapsed
}

fn main() {
    // `cargo test --benches` passes --bench-less args; only run the load when benchmarking.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    // LOAD_LOG=1: the request log on (info, JSON) written to a sink, to see what logging costs.
    if std::env::var("LOAD_LOG").is_ok_and(|v| v == "1") {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .init();
    }
    let seconds = env_num("LOAD_SECONDS", 3);
    let concurrency = env_num("LOAD_CONCURRENCY", 32);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::with_data_dir(tmp.path().join("data"));
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server = eliza_cloud::server::start(config.clone(), Arc::new(SystemClock))
            .await
            .unwrap();
        let key = match server.take_bootstrap() {
            Some(BootstrapOutcome::Created {
                new_key: Some(k), ..
            }) => k.expose().to_string(),
            other => panic!("unexpected bootstrap {other:?}"),
        };
        // The bucket is still consulted on every request, but it must not run dry: give the
        // operator organization a limit far above what one machine can send, then restart.
        server.shutdown().await;
        {
            let store = eliza_cloud::store::Store::open(&config.data_dir).unwrap();
            store
                .write(|txn| {
                    let mut org =
                        eliza_cloud::store::orgs::get_org_by_slug(txn, "operator")?.unwrap();
                    org.custom_rate_limit = Some(1_000_000_000);
                    eliza_cloud::store::orgs::update_org(txn, &org)
                })
                .unwrap();
        }
        let server = eliza_cloud::server::start(config, Arc::new(SystemClock))
            .await
            .unwrap();
        let bare = bare_hyper().await;
        let rss_before = rss_kib();
        let rounds = env_num("LOAD_ROUNDS", 7);
        // Warm both up, then alternate them so drift on the machine hits both alike.
        drive(bare, "/", None, concurrency, 1).await;
        drive(server.local_addr(), "/api/v1/auth/whoami", Some(&key), concurrency, 1).await;
        let mut ratios = Vec::new();
        let (mut bare_total, mut full_total) = (0.0, 0.0);
        for round in 1..=rounds {
            let bare_rps = drive(bare, "/", None, concurrency, seconds).await;
            let full_rps = drive(server.local_addr(), "/api/v1/auth/whoami", Some(&key), concurrency, seconds).await;
            println!("round {round}: bare {bare_rps:>8.0} req/s, whoami {full_rps:>8.0} req/s, ratio {:.3}", full_rps / bare_rps);
            ratios.push(full_rps / bare_rps);
            bare_total += bare_rps;
            full_total += full_rps;
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
        let rss_after = rss_kib();
        let logging = if std::env::var("LOAD_LOG").is_ok_and(|v| v == "1") { "on (JSON to a sink)" } else { "off" };
        println!("load: {concurrency} connections, {rounds} rounds of {seconds} s each, HTTP/1.1 keep-alive on loopback, request log {logging}");
        println!("bare hyper hello-world : {:>10.0} req/s (mean)", bare_total / rounds as f64);
        println!("eliza-cloud whoami     : {:>10.0} req/s (mean)", full_total / rounds as f64);
        println!("ratio (whoami / bare)  : {median:>10.3} (median of rounds)");
        println!("process RSS            : {rss_before} KiB before, {rss_after} KiB after");
        server.shutdown().await;
    });
}
