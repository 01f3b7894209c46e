//! Load comparison on loopback, out of process, one client, same run: the real release binary
//! (`eliza-cloud serve`, its own process) answering `GET /api/v1/auth/whoami` through the full
//! stack (key authentication, bucket, usage, metrics, envelope), against a bare hyper hello-world
//! in another process (this bench executable re-run with `--bare-server`, the same hyper-util auto
//! builder on a multi-threaded runtime). One `wrk` process drives both, alternating rounds so drift
//! on the machine hits both alike. Reports requests per second, p50 and p99 latency of both, the
//! median ratio, the server's RSS before and after, and the ratio with the default `info` request
//! log (written to a pipe this bench drains, as a terminal or journald would take it).
//!
//! Run: `cargo bench --bench load` (LOAD_SECONDS, default 3; LOAD_ROUNDS, default 5;
//! LOAD_CONNECTIONS, default 32; LOAD_THREADS, wrk's threads, default 2). Needs `wrk`
//! (`apt-get install wrk`): without it the bench says so and fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support.rs"]
mod support;
use support::{Figures, Process, env_num, median, wrk};

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::keys::KeyType;
use eliza_cloud::time::{Clock, SystemClock};

/// The baseline process: hyper's hello-world with the same auto builder as ours.
fn bare_server() {
    support::serve_forever(|_req| async { Response::new(Full::new(Bytes::from_static(b"hello"))) });
}

/// A data directory with the operator's key registered, and a rate limit on its organization
/// far above what one machine can send (the bucket is still consulted on every request).
fn prepare(data: &Path) -> String {
    let key = generate_key(KeyType::Live);
    let store = eliza_cloud::store::Store::open(data).unwrap();
    eliza_cloud::bootstrap::ensure_operator(&store, Some(&key), SystemClock.now()).unwrap();
    store
        .write(|txn| {
            let mut org = eliza_cloud::store::orgs::get_org_by_slug(txn, "operator")?.unwrap();
            org.custom_rate_limit = Some(1_000_000_000);
            eliza_cloud::store::orgs::update_org(txn, &org)
        })
        .unwrap();
    key.expose().to_string()
}

fn serve(data: &Path, log_level: &str) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eliza-cloud"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log-level", log_level])
        .arg("--data")
        .arg(data);
    for (name, _) in std::env::vars() {
        if name.starts_with("ELIZA_CLOUD_") {
            command.env_remove(name);
        }
    }
    Process::spawn(command)
}

/// Alternating rounds of `bare` and `full`; answers the median of each side and the median
/// ratio of the rounds.
fn compare(
    bare: SocketAddr,
    full: SocketAddr,
    key: &str,
    rounds: u64,
    seconds: u64,
) -> (Figures, Figures, f64) {
    let path = "/api/v1/auth/whoami";
    // Warm both up.
    wrk(bare, "/", &[], None, 1);
    wrk(full, path, &[format!("X-API-Key: {key}")], None, 1);
    let (mut b, mut f, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let bare_run = wrk(bare, "/", &[], None, seconds);
        let full_run = wrk(full, path, &[format!("X-API-Key: {key}")], None, seconds);
        let ratio = full_run.rps / bare_run.rps;
        println!(
            "  round {round}: bare {:>8.0} req/s, whoami {:>8.0} req/s, ratio {ratio:.3}",
            bare_run.rps, full_run.rps
        );
        b.push(bare_run);
        f.push(full_run);
        ratios.push(ratio);
    }
    let summary = |runs: &[Figures]| Figures {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
    };
    (summary(&b), summary(&f), median(ratios))
}

fn main() {
    if std::env::args().any(|a| a == "--bare-server") {
        bare_server();
        return;
    }
    // `cargo test --benches` passes these; only run the load when benchmarking.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("LOAD BENCH NOT RUN: wrk is not installed (apt-get install wrk)");
        std::process::exit(1);
    }
    let seconds = env_num("LOAD_SECONDS", 3);
    let rounds = env_num("LOAD_ROUNDS", 5);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = prepare(&data);
    let bare = Process::spawn({
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.arg("--bare-server");
        c
    });
    for log_level in ["warn", "info"] {
        let server = serve(&data, log_level);
        let rss_before = server.rss_kib();
        println!("request log at {log_level}:");
        let (b, f, ratio) = compare(bare.addr, server.addr, &key, rounds, seconds);
        let rss_after = server.rss_kib();
        println!(
            "  bare hyper hello-world : {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms (medians)",
            b.rps, b.p50_ms, b.p99_ms
        );
        println!(
            "  eliza-cloud whoami     : {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms (medians)",
            f.rps, f.p50_ms, f.p99_ms
        );
        println!("  ratio (whoami / bare)  : {ratio:.3} (median of {rounds} rounds)");
        println!("  server RSS             : {rss_before} KiB before, {rss_after} KiB after");
        drop(server);
    }
}
