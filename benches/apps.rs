//! Apps' costs (SPEC §10, issue 13), each server its own process, one `wrk` client, same run:
//!
//! 1. An app key against an organization key: the same metered chat call (the
//!    `openai-compatible` provider on a mock upstream, this executable re-run with
//!    `--mock-upstream`) with the operator's key and with an app's key of the same organization,
//!    in alternating rounds at concurrency 1 and 32. The app key's extra work is its scope, its
//!    app's permissions and rate limit, and its usage rows by app, route and end user
//!    (`X-App-User-Id`). Aim: ≤ 1.1× the organization key's latency.
//! 2. A full outbox: 10,000 webhook deliveries queued for a receiver that never answers (this
//!    executable with `--slow-receiver`; every worker is held for the 10 s timeout), against the
//!    same server with an empty outbox: request latency of the same metered call, RSS, and how
//!    many attempts the sender made meanwhile.
//!
//! Run: `cargo bench --bench apps` (LOAD_SECONDS, default 3; LOAD_ROUNDS, default 3). Needs `wrk`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full};
use uuid::Uuid;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::StoreError;
use eliza_cloud::store::apps::{AppRecord, insert_app};
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, insert_key};
use eliza_cloud::store::ledger::{EntryKind, NewEntry, post_entry};
use eliza_cloud::store::webhooks::{WebhookRecord, enqueue, put_webhook};
use eliza_cloud::time::{Clock, SystemClock};
use support::{CHAT_BODY, CHAT_MODELS, Figures, Process, env_num, median, summary, wrk_shaped};

const QUEUED: usize = 10_000;

/// A webhook receiver that reads each delivery and never answers in time.
fn slow_receiver() {
    support::serve_forever(|req: http::Request<hyper::body::Incoming>| async {
        let _ = req.into_body().collect().await;
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        Response::new(Full::new(Bytes::new()))
    });
}

/// The operator with a large balance and no reachable rate limit, and one app of theirs whose
/// key has no reachable rate limit either; with `outbox`, a webhook to it and 10,000 deliveries
/// queued. Answers (operator key, app key).
fn prepare(data: &Path, outbox: Option<SocketAddr>) -> (String, String) {
    let key = generate_key(KeyType::Live);
    let app_plain = generate_key(KeyType::Live);
    let store = eliza_cloud::store::Store::open(data).unwrap();
    let now = SystemClock.now().millis();
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
            .map_err(|e| StoreError::Db(e.to_string()))?;
            let user = eliza_cloud::store::users::owner_of_org(txn, org.id)?.unwrap();
            let app_id = Uuid::new_v4();
            let mut app_key = ApiKeyRecord::fresh(
                org.id,
                user.id,
                "App: bench".into(),
                KeyType::Live,
                app_plain.display_prefix(),
                app_plain.hash(),
                now,
            );
            app_key.app_id = Some(app_id);
            app_key.permissions = vec!["chat".into()];
            app_key.rate_limit = Some(1_000_000_000);
            insert_key(txn, &app_key)?;
            insert_app(
                txn,
                &AppRecord {
                    id: app_id,
                    organization_id: org.id,
                    created_by: user.id,
                    name: "bench".into(),
                    slug: "bench".into(),
                    subdomain: "bench".into(),
                    app_url: "https://bench.example".into(),
                    description: None,
                    website_url: None,
                    logo_url: None,
                    allowed_origins: vec!["https://bench.example".into()],
                    permissions: vec!["chat".into()],
                    rate_limit: 1_000_000_000,
                    is_active: true,
                    key_id: app_key.id,
                    monetization_enabled: false,
                    per_request_micros: 0,
                    per_token_micros: 0,
                    created_at: now,
                    updated_at: now,
                },
            )?;
            if let Some(receiver) = outbox {
                put_webhook(
                    txn,
                    app_id,
                    &WebhookRecord {
                        url: format!("http://{receiver}/hook"),
                        events: vec![],
                        thresholds: vec![],
                        secret: eliza_cloud::webhooks::sign::new_secret(),
                        previous: None,
                        disabled: false,
                        created_at: now,
                        updated_at: now,
                    },
                )?;
                for n in 0..QUEUED {
                    enqueue(
                        txn,
                        app_id,
                        "webhook.test",
                        serde_json::json!({"appId": app_id, "n": n}),
                        now,
                    )?;
                }
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    (key.expose().to_string(), app_plain.expose().to_string())
}

fn serve(data: &Path, models: &Path, upstream: SocketAddr) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eliza-cloud"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
        .arg("--data")
        .arg(data)
        .arg("--models")
        .arg(models)
        .args(["--upstream-url", &format!("http://{upstream}/v1")])
        .arg("--allow-private-webhooks");
    for (name, _) in std::env::vars() {
        if name.starts_with("ELIZA_CLOUD_") {
            command.env_remove(name);
        }
    }
    command.env("ELIZA_CLOUD_UPSTREAM_KEY", "sk-bench");
    Process::spawn(command)
}

fn line(label: &str, f: &Figures) {
    println!(
        "    {label:<28}: {:>8.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        f.rps, f.p50_ms, f.p99_ms
    );
}

/// The `webhook attempts` the sender made, from the server's metrics.
fn webhook_attempts(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("eliza_webhook_"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn main() {
    if std::env::args().any(|a| a == "--mock-upstream") {
        support::mock_upstream();
        return;
    }
    if std::env::args().any(|a| a == "--slow-receiver") {
        slow_receiver();
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("APPS BENCH NOT RUN: wrk is not installed (apt-get install wrk)");
        std::process::exit(1);
    }
    let seconds = env_num("LOAD_SECONDS", 3);
    let rounds = env_num("LOAD_ROUNDS", 3);
    let tmp = tempfile::tempdir().unwrap();
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
    let spawn_self = |flag: &str| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.arg(flag);
        Process::spawn(c)
    };
    let mock = spawn_self("--mock-upstream");

    // 1. App key against organization key, one server.
    let data = tmp.path().join("keys");
    let (org_key, app_key) = prepare(&data, None);
    let server = serve(&data, &models, mock.addr);
    let org_auth = [format!("X-API-Key: {org_key}")];
    let app_auth = [
        format!("X-API-Key: {app_key}"),
        "X-App-User-Id: bench-user".to_string(),
    ];
    println!("app key against organization key (same server, same call):");
    for (connections, threads) in [(1u64, 1u64), (32, 2)] {
        let shape = Some((connections, threads));
        let run = |auth: &[String], s| {
            wrk_shaped(
                server.addr,
                "/api/v1/chat/completions",
                auth,
                Some(&script),
                s,
                shape,
            )
        };
        run(&org_auth, 1);
        run(&app_auth, 1);
        let (mut o, mut a, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let x = run(&org_auth, seconds);
            let y = run(&app_auth, seconds);
            ratios.push(y.p50_ms / x.p50_ms);
            o.push(x);
            a.push(y);
        }
        println!("  concurrency {connections}:");
        line("organization key", &summary(&o));
        line("app key (+ X-App-User-Id)", &summary(&a));
        println!(
            "    app/org p50 ratio           : {:.3} (median of {rounds}; aim ≤ 1.1)",
            median(ratios)
        );
    }
    drop(server);

    // 2. A full outbox and a receiver that holds every worker.
    let receiver = spawn_self("--slow-receiver");
    println!("a full outbox ({QUEUED} deliveries, a receiver that never answers):");
    let mut figures = Vec::new();
    for (name, outbox) in [
        ("empty outbox", None),
        ("10,000 queued", Some(receiver.addr)),
    ] {
        let data = tmp.path().join(name.replace([' ', ','], "-"));
        let (org_key, _) = prepare(&data, outbox);
        let server = serve(&data, &models, mock.addr);
        let auth = [format!("X-API-Key: {org_key}")];
        let rss_start = server.rss_kib();
        let run = |s| {
            wrk_shaped(
                server.addr,
                "/api/v1/chat/completions",
                &auth,
                Some(&script),
                s,
                Some((32, 2)),
            )
        };
        run(1);
        let runs: Vec<Figures> = (0..rounds).map(|_| run(seconds)).collect();
        let f = summary(&runs);
        line(name, &f);
        println!(
            "      RSS {rss_start} KiB at start, {} KiB after; {}",
            server.rss_kib(),
            webhook_attempts(server.addr)
        );
        figures.push(f);
    }
    if let [empty, full] = figures.as_slice() {
        println!(
            "    full/empty p50 ratio        : {:.3}, throughput ratio {:.3}",
            full.p50_ms / empty.p50_ms,
            full.rps / empty.rps
        );
    }
}
