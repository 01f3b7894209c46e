//! The gateway's added cost, measured as the anchors measure it (FIELD-NOTES: Bifrost, Portkey,
//! LiteLLM on a mock upstream): a tiny OpenAI-compatible mock (this bench executable re-run with
//! `--mock-upstream`, its own process) answers non-streamed chat completions; in the same run one
//! `wrk` process drives it directly and through `eliza-cloud serve` (its own process: the
//! `openai-compatible` provider, a live key, a reservation and a ledger debit per call), in
//! alternating rounds, at concurrency 1 and 32. Reports p50 and p99 of both paths, the added
//! latency (gateway − direct), and the throughput ratio, for each debit commit mode
//! (`--debit-commit grouped`, the default, and `per-call`).
//!
//! Run: `cargo bench --bench gateway` (LOAD_SECONDS, default 3; LOAD_ROUNDS, default 3). Needs
//! `wrk` (`apt-get install wrk`): without it the bench says so and fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::keys::KeyType;
use eliza_cloud::store::ledger::{EntryKind, NewEntry, post_entry};
use eliza_cloud::time::{Clock, SystemClock};
use support::{CHAT_BODY, CHAT_MODELS, Process, env_num, median, summary, wrk_shaped};

/// A data directory with the operator's key, a balance no run can spend and a rate limit no
/// machine can reach (both still consulted on every call).
fn prepare(data: &Path) -> String {
    let key = generate_key(KeyType::Live);
    let store = eliza_cloud::store::Store::open(data).unwrap();
    eliza_cloud::bootstrap::ensure_operator(&store, Some(&key), SystemClock.now()).unwrap();
    store
        .write(|txn| {
            let mut org = eliza_cloud::store::orgs::get_org_by_slug(txn, "operator")?.unwrap();
            org.custom_rate_limit = Some(1_000_000_000);
            eliza_cloud::store::orgs::update_org(txn, &org)?;
            post_entry(
                txn,
                NewEntry {
                    organization_id: org.id,
                    amount_micros: 1_000_000_000_000,
                    kind: EntryKind::Credit,
                    description: "bench".into(),
                    idempotency_key: "bench-grant".into(),
                    metadata: vec![],
                },
                0,
            )
            .map_err(|e| eliza_cloud::store::StoreError::Db(e.to_string()))?;
            Ok::<_, eliza_cloud::store::StoreError>(())
        })
        .unwrap();
    key.expose().to_string()
}

fn serve(data: &Path, models: &Path, upstream: SocketAddr, commit: &str) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eliza-cloud"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .arg("--data")
        .arg(data)
        .arg("--models")
        .arg(models)
        .args(["--upstream-url", &format!("http://{upstream}/v1")])
        .args(["--debit-commit", commit]);
    for (name, _) in std::env::vars() {
        if name.starts_with("ELIZA_CLOUD_") {
            command.env_remove(name);
        }
    }
    command.env("ELIZA_CLOUD_UPSTREAM_KEY", "sk-bench");
    Process::spawn(command)
}

fn main() {
    if std::env::args().any(|a| a == "--mock-upstream") {
        support::mock_upstream();
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("GATEWAY BENCH NOT RUN: wrk is not installed (apt-get install wrk)");
        std::process::exit(1);
    }
    let seconds = env_num("LOAD_SECONDS", 3);
    let rounds = env_num("LOAD_ROUNDS", 3);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let key = prepare(&data);
    let models = tmp.path().join("models.json");
    std::fs::write(&models, CHAT_MODELS).unwrap();
    let script = tmp.path().join("post.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{CHAT_BODY}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .unwrap();
    let mock = Process::spawn({
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.arg("--mock-upstream");
        c
    });
    let auth = [format!("X-API-Key: {key}")];
    for commit in ["grouped", "per-call"] {
        let gateway = serve(&data, &models, mock.addr, commit);
        let rss_before = gateway.rss_kib();
        println!("debit commits: {commit}");
        for (connections, threads) in [(1u64, 1u64), (32, 2)] {
            let shape = Some((connections, threads));
            let direct = |s| {
                wrk_shaped(
                    mock.addr,
                    "/v1/chat/completions",
                    &[],
                    Some(&script),
                    s,
                    shape,
                )
            };
            let through = |s| {
                wrk_shaped(
                    gateway.addr,
                    "/api/v1/chat/completions",
                    &auth,
                    Some(&script),
                    s,
                    shape,
                )
            };
            direct(1);
            through(1);
            let (mut d, mut g, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let a = direct(seconds);
                let b = through(seconds);
                ratios.push(b.rps / a.rps);
                d.push(a);
                g.push(b);
            }
            let (d, g) = (summary(&d), summary(&g));
            println!("  concurrency {connections}:");
            println!(
                "    direct to the mock : {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                d.rps, d.p50_ms, d.p99_ms
            );
            println!(
                "    through eliza-cloud: {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
                g.rps, g.p50_ms, g.p99_ms
            );
            println!(
                "    added              : p50 {:.3} ms, p99 {:.3} ms; throughput ratio {:.3} (median of {rounds})",
                g.p50_ms - d.p50_ms,
                g.p99_ms - d.p99_ms,
                median(ratios)
            );
        }
        println!(
            "  server RSS: {rss_before} KiB before, {} KiB after",
            gateway.rss_kib()
        );
        drop(gateway);
    }
}
