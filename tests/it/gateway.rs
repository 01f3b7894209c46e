//! The metered gateway over real HTTP (SPEC §9, §12): the dev provider on every route, whole and
//! streamed; an OpenAI-compatible upstream that is a real server on 127.0.0.1 (`upstream.rs`);
//! billing exact under concurrency, on disconnects and failures; test keys, permissions, empty
//! balances; x402 paying for one call.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use eliza_cloud::gateway::GatewayConfig;
use eliza_cloud::gateway::models::ModelTable;
use eliza_cloud::gateway::providers::openai_compatible::UpstreamKey;
use eliza_cloud::store::ledger::{EntryKind, NewEntry, balance_of, list_entries, post_entry};
use eliza_cloud::x402::Settlement;

use crate::signin::EvmWallet;
use crate::support::{Binary, TestResponse, TestServer, run_cli, temp_data_dir};
use crate::topup::{Pay, balance_of_wallet, x402};
use crate::upstream::{Script, Upstream};

const UPSTREAM_KEY: &str = "sk-upstream-S3cret-never-logged";

/// Prices of one micro-dollar per input token and two per output token, so costs are easy to
/// check by hand; dev and upstream models side by side.
const MODELS: &str = r#"{"models": [
  {"id": "dev-chat", "kind": "chat", "provider": "dev", "input_price_micros_per_million": 1000000,
   "output_price_micros_per_million": 2000000, "max_output_tokens": 50},
  {"id": "dev-emb", "kind": "embedding", "provider": "dev", "input_price_micros_per_million": 1000000,
   "dimensions": 8},
  {"id": "dev-img", "kind": "image", "provider": "dev", "price_micros_per_image": 40000},
  {"id": "up-chat", "kind": "chat", "provider": "openai-compatible", "upstream_model": "upstream-model",
   "input_price_micros_per_million": 1000000, "output_price_micros_per_million": 2000000, "max_output_tokens": 50},
  {"id": "up-emb", "kind": "embedding", "provider": "openai-compatible", "input_price_micros_per_million": 1000000,
   "dimensions": 3},
  {"id": "up-img", "kind": "image", "provider": "openai-compatible", "price_micros_per_image": 40000}
]}"#;

pub fn gateway_config(upstream: Option<&Upstream>) -> GatewayConfig {
    let table = ModelTable::parse("models.json", MODELS).unwrap();
    let table = match upstream {
        Some(_) => table,
        // Without an upstream, the dev models alone.
        None => ModelTable::new(
            table
                .iter()
                .filter(|m| m.id.starts_with("dev-"))
                .cloned()
                .collect(),
        )
        .unwrap(),
    };
    GatewayConfig {
        models: Arc::new(table),
        upstream_url: upstream.map(Upstream::url),
        upstream_key: Some(UpstreamKey::new(UPSTREAM_KEY.into())),
        upstream_timeout: Duration::from_millis(600),
        ..GatewayConfig::default()
    }
}

async fn server_with(upstream: Option<&Upstream>) -> TestServer {
    let gateway = gateway_config(upstream);
    TestServer::start_with(move |c| c.gateway = gateway).await
}

pub async fn organization_of(server: &TestServer, key: &str) -> Uuid {
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", key)])
        .await;
    r.json()["organization"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Credits the organization in the running server's store (an operator grant).
pub fn grant(server: &TestServer, org: Uuid, micros: i64) {
    server
        .running()
        .state()
        .store
        .write(|txn| {
            post_entry(
                txn,
                NewEntry {
                    organization_id: org,
                    amount_micros: micros,
                    kind: EntryKind::Credit,
                    description: "test grant".into(),
                    idempotency_key: Uuid::new_v4().to_string(),
                    metadata: vec![],
                },
                1,
            )
        })
        .unwrap();
}

/// A server (with `upstream` if any) whose operator organization holds `micros`; answers the
/// server, the operator's key and its organization.
async fn funded(upstream: Option<&Upstream>, micros: i64) -> (TestServer, String, Uuid) {
    let server = server_with(upstream).await;
    let key = server.operator_key.clone();
    let org = organization_of(&server, &key).await;
    if micros > 0 {
        grant(&server, org, micros);
    }
    (server, key, org)
}

async fn post(server: &TestServer, key: &str, path: &str, body: Value) -> TestResponse {
    server.json_as(key, Method::POST, path, body).await
}

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Input tokens of [`chat`]'s one message by the counting rule: 4 + tokens("user") + tokens("hi").
const CHAT_INPUT: i64 = 4 + 1 + 1;

fn cost_of(r: &TestResponse) -> i64 {
    r.header("x-eliza-cost-micros")
        .unwrap_or_else(|| panic!("no cost header: {:?}", r.headers))
        .parse()
        .unwrap()
}

/// The `data:` payloads of a whole event stream, checked for OpenAI's framing.
fn events(r: &TestResponse) -> Vec<String> {
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(!text.contains("event:"), "no event lines: {text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{e:?}"))
                .to_string()
        })
        .collect()
}

fn content_of(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

async fn balance(server: &TestServer, key: &str) -> i64 {
    server
        .get("/api/v1/credits", &[("x-api-key", key)])
        .await
        .json()["balance_micros"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn the_dev_provider_answers_every_route_in_openai_wire_format() {
    let (server, key, _) = funded(None, 1_000_000).await;

    let models = server.get("/api/v1/models", &[("x-api-key", &key)]).await;
    models.assert_status(StatusCode::OK);
    let list = models.json();
    assert_eq!(list["object"], "list");
    assert_eq!(
        list["data"][0],
        json!({"id": "dev-chat", "object": "model", "created": 1767225600, "owned_by": "eliza-cloud-dev"})
    );
    let one = server
        .get("/api/v1/models/dev-emb", &[("x-api-key", &key)])
        .await;
    assert_eq!(one.json()["id"], "dev-emb");
    let missing = server
        .get("/api/v1/models/gpt-9", &[("x-api-key", &key)])
        .await;
    assert_eq!(missing.assert_error(404, "NOT_FOUND")["param"], "model");
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("gpt-9", json!({})),
    )
    .await;
    assert_eq!(r.assert_error(404, "NOT_FOUND")["param"], "model");
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-emb", json!({})),
    )
    .await;
    assert_eq!(r.assert_error(400, "VALIDATION_ERROR")["param"], "model");

    // A whole answer.
    let whole = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({})),
    )
    .await;
    whole.assert_status(StatusCode::OK);
    let answer = whole.json();
    assert_eq!(answer["object"], "chat.completion");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(answer["model"], "dev-chat");
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    let usage = &answer["usage"];
    let completion = (text.len() as i64 + 3) / 4;
    assert_eq!(usage["prompt_tokens"], CHAT_INPUT);
    assert_eq!(usage["completion_tokens"], completion);
    assert_eq!(usage["total_tokens"], CHAT_INPUT + completion);
    assert_eq!(cost_of(&whole), CHAT_INPUT + 2 * completion);
    let overhead = whole.header("x-eliza-overhead-ms").unwrap();
    let (ms, frac) = overhead.split_once('.').unwrap();
    assert!(ms.parse::<u64>().is_ok() && frac.len() == 3, "{overhead}");

    // The same call streamed: the same words, word by word, then the usage chunk and [DONE].
    let streamed = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat(
            "dev-chat",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    streamed.assert_status(StatusCode::OK);
    assert!(streamed.header("x-eliza-overhead-ms").is_some());
    let list = events(&streamed);
    assert_eq!(list.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&list[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let usage_chunk: Value = serde_json::from_str(&list[list.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], completion);
    let finish: Value = serde_json::from_str(&list[list.len() - 3]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(content_of(&list), text);
    assert!(list.len() > 6, "word by word: {}", list.len());
    // Without include_usage there is no usage chunk.
    let plain = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({"stream": true})),
    )
    .await;
    let plain = events(&plain);
    assert!(
        plain.iter().all(|e| !e.contains("\"usage\":{")),
        "{plain:?}"
    );
    assert_eq!(content_of(&plain), text);

    // The output cap: max_tokens cuts the answer and says so.
    let short = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({"max_tokens": 3})),
    )
    .await;
    let short = short.json();
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert!(short["usage"]["completion_tokens"].as_i64().unwrap() <= 3);

    // Embeddings: float and base64 give the same vectors; `dimensions`; unit length.
    let floats = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "dev-emb", "input": ["abcd", "efgh ij"], "encoding_format": "float"}),
    )
    .await;
    floats.assert_status(StatusCode::OK);
    let floats = floats.json();
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["data"][1]["index"], 1);
    assert_eq!(floats["data"][0]["object"], "embedding");
    assert_eq!(floats["usage"]["prompt_tokens"], 1 + 2);
    let vector: Vec<f32> = serde_json::from_value(floats["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(vector.len(), 8);
    let norm: f32 = vector.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    let b64 = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "dev-emb", "input": ["abcd", "efgh ij"], "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(cost_of(&b64), 3);
    let encoded = b64.json()["data"][0]["embedding"]
        .as_str()
        .unwrap()
        .to_string();
    let decoded: Vec<f32> = STANDARD
        .decode(encoded)
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, vector);
    let small = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "dev-emb", "input": "abcd", "dimensions": 3}),
    )
    .await;
    assert_eq!(
        small.json()["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let big = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "dev-emb", "input": "abcd", "dimensions": 9}),
    )
    .await;
    assert_eq!(
        big.assert_error(400, "VALIDATION_ERROR")["param"],
        "dimensions"
    );

    // Images: valid PNGs of the size asked for; `url` is refused.
    let images = post(
        &server,
        &key,
        "/api/v1/images/generations",
        json!({"prompt": "a lighthouse", "n": 2, "size": "256x256"}),
    )
    .await;
    images.assert_status(StatusCode::OK);
    assert_eq!(cost_of(&images), 80_000);
    let data = images.json()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2);
    let png = STANDARD
        .decode(data[0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        256,
        "IHDR width"
    );
    let url = post(
        &server,
        &key,
        "/api/v1/images/generations",
        json!({"prompt": "x", "response_format": "url"}),
    )
    .await;
    assert_eq!(
        url.assert_error(400, "VALIDATION_ERROR")["param"],
        "response_format"
    );

    // Every debit shows in the balance at once and in the usage report.
    let shown = balance(&server, &key).await;
    let usage = server
        .get("/api/v1/usage?period=2026-01", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(usage["period"], "2026-01");
    assert_eq!(
        usage["totals"]["cost_micros"].as_i64().unwrap(),
        1_000_000 - shown
    );
    assert_eq!(usage["totals"]["requests"], 8);
    assert_eq!(usage["daily"].as_array().unwrap().len(), 31);
    assert_eq!(usage["daily"][0]["date"], "2026-01-01");
    assert_eq!(usage["daily"][0]["requests"], 8);
    let by_model: Vec<&str> = usage["byModel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(by_model, ["dev-chat", "dev-emb", "dev-img"]);
    assert_eq!(usage["byKey"][0]["name"], "Operator bootstrap key");
    let dashboard = server
        .get("/api/v1/dashboard", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(
        dashboard["usage"]["costThisMonth_micros"],
        usage["totals"]["cost_micros"]
    );
    assert_eq!(dashboard["organization"]["creditBalance_micros"], shown);
    let bad = server
        .get("/api/v1/usage?period=2026-13", &[("x-api-key", &key)])
        .await;
    assert_eq!(bad.assert_error(400, "VALIDATION_ERROR")["param"], "period");
}

#[tokio::test]
async fn the_dev_provider_is_deterministic_across_restarts_and_debits_survive_them() {
    let (mut server, key, org) = funded(None, 100_000).await;
    let body = json!({"model": "dev-chat", "messages": [{"role": "user", "content": "Tell me about ledgers."}], "n": 2});
    let first = post(&server, &key, "/api/v1/chat/completions", body.clone())
        .await
        .json();
    let embedding = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "dev-emb", "input": "same"}),
    )
    .await
    .json();
    let cost_before = 100_000 - balance(&server, &key).await;
    server.restart().await;
    assert_eq!(
        100_000 - balance(&server, &key).await,
        cost_before,
        "the shutdown flush kept the debits"
    );
    let again = post(&server, &key, "/api/v1/chat/completions", body)
        .await
        .json();
    assert_eq!(first["choices"], again["choices"]);
    assert_ne!(first["choices"][0], first["choices"][1], "choices differ");
    assert_ne!(first["id"], again["id"]);
    let embedding_again = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "dev-emb", "input": "same"}),
    )
    .await
    .json();
    assert_eq!(embedding["data"], embedding_again["data"]);
    // The ledger has one debit row per call, keyed by a call id of the server's.
    server.stop().await;
    let store = eliza_cloud::store::Store::open(server.data_dir()).unwrap();
    let (rows, _) = store.read(|t| list_entries(t, org, 1, 100)).unwrap();
    let debits: Vec<_> = rows.iter().filter(|r| r.kind == EntryKind::Debit).collect();
    assert_eq!(debits.len(), 4);
    assert!(
        debits
            .iter()
            .all(|d| d.idempotency_key.starts_with("call:"))
    );
    assert!(
        debits
            .iter()
            .any(|d| d.metadata.contains(&("model".into(), "dev-emb".into())))
    );
    let report = store.read(eliza_cloud::store::check::check_store).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// One round of the concurrency law: `calls` concurrent chats against a balance that pays for
/// `affordable` of their reservations (and a remainder too small for one more).
async fn concurrent_round(
    calls: usize,
    affordable: i64,
    max_tokens: i64,
    remainder: i64,
    per_call: bool,
) {
    let mut gateway = gateway_config(None);
    if per_call {
        gateway.commit = eliza_cloud::gateway::billing::CommitMode::PerCall;
    }
    let mut server = TestServer::start_with(move |c| c.gateway = gateway).await;
    let key = server.operator_key.clone();
    let org = organization_of(&server, &key).await;
    let reservation = CHAT_INPUT + 2 * max_tokens;
    let start = affordable * reservation + remainder;
    if start > 0 {
        grant(&server, org, start);
    }
    let body = chat("dev-chat", json!({"max_tokens": max_tokens}));
    let responses = futures_util::future::join_all(
        (0..calls).map(|_| post(&server, &key, "/api/v1/chat/completions", body.clone())),
    )
    .await;
    let mut charged = 0;
    let mut ran = 0;
    for r in &responses {
        match r.status.as_u16() {
            200 => {
                ran += 1;
                charged += cost_of(r);
            }
            402 => assert_eq!(r.json()["error"]["type"], "insufficient_quota"),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    // Every reservation that fits runs; no more than the balance pays for ever does.
    assert!(
        ran >= (affordable as usize).min(calls),
        "{ran} of {calls} ran; {affordable} affordable"
    );
    assert!(charged <= start);
    assert_eq!(server.running().state().gateway.billing.reserved(org), 0);
    let shown = balance(&server, &key).await;
    assert!(shown >= 0);
    assert_eq!(shown, start - charged);
    server.stop().await;
    let store = eliza_cloud::store::Store::open(server.data_dir()).unwrap();
    let (rows, _) = store.read(|t| list_entries(t, org, 1, 1000)).unwrap();
    let debited: i64 = rows
        .iter()
        .filter(|r| r.kind == EntryKind::Debit)
        .map(|r| -r.amount_micros)
        .sum();
    assert_eq!(debited, charged);
    assert_eq!(
        rows.iter().filter(|r| r.kind == EntryKind::Debit).count(),
        ran
    );
    assert_eq!(store.read(|t| balance_of(t, org)).unwrap(), start - charged);
    let report = store.read(eliza_cloud::store::check::check_store).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, ..Default::default() })]
    #[test]
    fn concurrent_calls_never_overspend_and_the_ledger_shows_every_debit(
        calls in 1usize..16,
        affordable in 0i64..10,
        max_tokens in 1i64..50,
        remainder_part in 0i64..100,
        per_call: bool,
    ) {
        let remainder = remainder_part * (CHAT_INPUT + 2 * max_tokens - 1) / 100;
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(concurrent_round(calls, affordable, max_tokens, remainder, per_call));
    }
}

/// Sends a streamed chat over a raw socket and reads until `until` has arrived; answers the
/// socket (drop it to hang up) and what was read.
async fn stream_until(
    server: &TestServer,
    key: &str,
    body: &Value,
    until: &str,
) -> (tokio::net::TcpStream, String) {
    let mut socket = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("the stream stalled")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    (socket, String::from_utf8_lossy(&seen).into_owned())
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_pays_for_what_was_produced_and_frees_its_reservation() {
    let upstream = Upstream::start(Script {
        hold_after: Some(2),
        usage: false,
        ..Script::default()
    })
    .await;
    let reservation = CHAT_INPUT + 2 * 50;
    let (server, key, org) = funded(Some(&upstream), reservation).await;
    let body = chat("up-chat", json!({"stream": true}));
    let (socket, seen) = stream_until(&server, &key, &body, " from").await;
    assert!(seen.contains("Hello"), "{seen}");
    // While the stream runs, its reservation holds the whole balance.
    let refused = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({"max_tokens": 1})),
    )
    .await;
    assert!(
        refused.assert_error(402, "INSUFFICIENT_CREDITS")["message"]
            .as_str()
            .unwrap()
            .contains("$0.000000 is available")
    );
    drop(socket);
    // The gateway stops at once and closes the upstream: the upstream sees it without being
    // released.
    upstream.wait_closed(1).await;
    // Charged for the input and for "Hello from" (10 bytes: 3 tokens), never the whole answer.
    let charged = CHAT_INPUT + 2 * 3;
    assert_eq!(balance(&server, &key).await, reservation - charged);
    let usage = server
        .get("/api/v1/usage", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(usage["totals"]["cost_micros"], charged);
    assert_eq!(usage["totals"]["outputTokens"], 3);
    // The reservation was released: the rest of the balance buys the next call.
    assert_eq!(server.running().state().gateway.billing.reserved(org), 0);
    let next = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({"max_tokens": 10})),
    )
    .await;
    next.assert_status(StatusCode::OK);
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(
            "eliza_gateway_calls_total{endpoint=\"chat.completions\",end=\"client_gone\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_upstream_chunk_reaches_the_client_as_it_arrives() {
    let upstream = Upstream::start(Script {
        hold_after: Some(2),
        ..Script::default()
    })
    .await;
    let mut gateway = gateway_config(Some(&upstream));
    gateway.keep_alive_after = Duration::from_millis(50);
    let server = TestServer::start_with(move |c| c.gateway = gateway).await;
    let key = server.operator_key.clone();
    grant(&server, organization_of(&server, &key).await, 10_000);
    let body = chat(
        "up-chat",
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    // The first pieces arrive while the upstream still holds the rest: nothing buffers.
    let (mut socket, mut seen) = stream_until(&server, &key, &body, " from").await;
    assert!(!seen.contains("upstream."), "{seen}");
    // A silence longer than the keep-alive period carries a comment line (SPEC §9: 15 s).
    let mut buf = [0u8; 4096];
    while !seen.contains(": keep-alive\n\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    upstream.release();
    while !seen.contains("data: [DONE]") {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        seen.contains(" upstream") && seen.contains("\"completion_tokens\":5"),
        "{seen}"
    );
    // Billed from the upstream's usage: 7 in, 5 out.
    assert_eq!(balance(&server, &key).await, 10_000 - (7 + 2 * 5));
}

#[tokio::test]
async fn an_upstream_is_forwarded_to_with_its_key_and_its_usage_is_billed_or_counted() {
    let upstream = Upstream::start(Script::default()).await;
    let (server, key, _) = funded(Some(&upstream), 1_000_000).await;

    // Whole, with usage reported: (7, 4) → 7 + 8.
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"max_tokens": 20, "temperature": 0.2})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Hello from upstream."
    );
    assert_eq!(cost_of(&r), 7 + 2 * 5);
    let sent = upstream.received().pop().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.authorization.as_deref(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(sent.body["model"], "upstream-model");
    assert_eq!(sent.body["max_tokens"], 20);
    assert_eq!(
        sent.body["temperature"], 0.2,
        "the caller's request, as sent"
    );
    // No cap asked: the model's own is sent, so the provider cannot exceed the reservation.
    post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({})),
    )
    .await;
    assert_eq!(upstream.received().pop().unwrap().body["max_tokens"], 50);

    // Streamed without include_usage: the gateway asks for it and hides the usage chunk.
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"stream": true})),
    )
    .await;
    let list = events(&r);
    assert_eq!(content_of(&list), "Hello from upstream.");
    assert!(list.iter().all(|e| !e.contains("usage")), "{list:?}");
    assert_eq!(list.last().unwrap(), "[DONE]");
    assert_eq!(
        upstream.received().pop().unwrap().body["stream_options"],
        json!({"include_usage": true})
    );
    // With include_usage the chunk reaches the caller.
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat(
            "up-chat",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    assert!(
        events(&r)
            .iter()
            .any(|e| e.contains("\"completion_tokens\":5"))
    );

    // The upstream reports more than it was allowed: the debit stops at the reservation.
    upstream.set(Script {
        reported: Some((7, 500)),
        ..Script::default()
    });
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"max_tokens": 10})),
    )
    .await;
    assert_eq!(cost_of(&r), CHAT_INPUT + 2 * 10);
    assert_eq!(server.running().state().metrics.over_reservation(), 1);

    // No usage reported: counted by our rule (input 6, output "Hello from upstream." = 5).
    upstream.set(Script {
        usage: false,
        ..Script::default()
    });
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({})),
    )
    .await;
    assert_eq!(cost_of(&r), CHAT_INPUT + 2 * 5);
    let before = balance(&server, &key).await;
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"stream": true})),
    )
    .await;
    assert_eq!(content_of(&events(&r)), "Hello from upstream.");
    assert_eq!(before - balance(&server, &key).await, CHAT_INPUT + 2 * 5);

    // Embeddings and images are forwarded too.
    upstream.set(Script::default());
    let r = post(
        &server,
        &key,
        "/api/v1/embeddings",
        json!({"model": "up-emb", "input": "abcd"}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["data"][0]["embedding"], json!([0.5, -1.0, 0.25]));
    assert_eq!(
        cost_of(&r),
        1,
        "the upstream's 7 tokens are more than reserved: the reservation"
    );
    let r = post(
        &server,
        &key,
        "/api/v1/images/generations",
        json!({"model": "up-img", "prompt": "x"}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(cost_of(&r), 40_000);
    assert_eq!(
        upstream.received().pop().unwrap().path,
        "/v1/images/generations"
    );
}

#[tokio::test]
async fn upstream_failures_are_answered_as_the_spec_says_and_cost_nothing() {
    let upstream = Upstream::start(Script {
        fail: Some(500),
        ..Script::default()
    })
    .await;
    let (server, key, org) = funded(Some(&upstream), 1_000_000).await;
    let call = || {
        post(
            &server,
            &key,
            "/api/v1/chat/completions",
            chat("up-chat", json!({})),
        )
    };

    let r = call().await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"stream": true})),
    )
    .await;
    r.assert_error(502, "UPSTREAM_ERROR");
    for code in [401, 403] {
        upstream.set(Script {
            fail: Some(code),
            ..Script::default()
        });
        call().await.assert_error(502, "UPSTREAM_ERROR");
    }
    upstream.set(Script {
        fail: Some(400),
        ..Script::default()
    });
    let r = call().await;
    let e = r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(
        (e["message"].as_str(), e["param"].as_str()),
        (Some("scripted 400"), Some("temperature"))
    );
    upstream.set(Script {
        fail: Some(429),
        ..Script::default()
    });
    let r = call().await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.header("retry-after"), Some("9"));
    // No answer head within --upstream-timeout: 504.
    upstream.set(Script {
        stall: true,
        ..Script::default()
    });
    let r = call().await;
    r.assert_error(504, "UPSTREAM_TIMEOUT");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(
        balance(&server, &key).await,
        1_000_000,
        "failures before any output cost nothing"
    );
    // A stream that goes silent after some output: an error line, and the output is paid.
    upstream.set(Script {
        hold_after: Some(1),
        stall_mid_stream: true,
        usage: false,
        ..Script::default()
    });
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"stream": true})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let list = events(&r);
    let last: Value = serde_json::from_str(list.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "UPSTREAM_TIMEOUT", "{list:?}");
    assert!(!list.contains(&"[DONE]".to_string()));
    assert_eq!(content_of(&list), "Hello");
    assert_eq!(
        balance(&server, &key).await,
        1_000_000 - (CHAT_INPUT + 2 * 2)
    );
    assert_eq!(server.running().state().gateway.billing.reserved(org), 0);
    // A stream cut without its end: an error line, never a made-up [DONE].
    upstream.set(Script {
        cut: true,
        usage: false,
        ..Script::default()
    });
    let before = balance(&server, &key).await;
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({"stream": true})),
    )
    .await;
    let list = events(&r);
    assert!(!list.contains(&"[DONE]".to_string()), "{list:?}");
    let last: Value = serde_json::from_str(list.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "UPSTREAM_ERROR");
    assert_eq!(content_of(&list), "Hello from upstream.");
    assert_eq!(
        before - balance(&server, &key).await,
        CHAT_INPUT + 2 * 5,
        "what came is paid"
    );
    // An upstream that is not there at all.
    let gone = Upstream::start(Script::default()).await;
    let mut config = gateway_config(Some(&gone));
    config.upstream_url = Some("http://127.0.0.1:9/v1".into());
    let closed = TestServer::start_with(move |c| c.gateway = config).await;
    let key2 = closed.operator_key.clone();
    let org2 = organization_of(&closed, &key2).await;
    grant(&closed, org2, 1000);
    let r = post(
        &closed,
        &key2,
        "/api/v1/chat/completions",
        chat("up-chat", json!({})),
    )
    .await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(
        r.header("x-should-retry"),
        None,
        "nothing was sent: a retry is safe"
    );
}

#[tokio::test]
async fn test_keys_restricted_keys_and_empty_balances() {
    let upstream = Upstream::start(Script::default()).await;
    let server = server_with(Some(&upstream)).await;
    let key = server.operator_key.clone();
    // An empty balance: 402 insufficient_quota naming the reservation and what is available.
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({"max_tokens": 10})),
    )
    .await;
    let e = r.assert_error(402, "INSUFFICIENT_CREDITS");
    assert_eq!(e["type"], "insufficient_quota");
    assert!(e["message"].as_str().unwrap().contains("$0.000026"), "{e}");
    // A test key: the dev provider (the upstream never hears of it), never a debit.
    let (_, test_key, _) = server
        .create_key(json!({"name": "t", "type": "test"}))
        .await;
    let r = post(
        &server,
        &test_key,
        "/api/v1/chat/completions",
        chat("up-chat", json!({})),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(cost_of(&r), 0);
    assert_eq!(r.json()["system_fingerprint"], "eliza-cloud-dev");
    let r = post(
        &server,
        &test_key,
        "/api/v1/images/generations",
        json!({"model": "up-img", "prompt": "x", "size": "256x256"}),
    )
    .await;
    assert_eq!(cost_of(&r), 0);
    assert!(upstream.received().is_empty());
    assert_eq!(balance(&server, &key).await, 0);
    // A restricted key without `chat`.
    let (_, embed_only, _) = server
        .create_key(json!({"name": "e", "permissions": ["embeddings"]}))
        .await;
    let r = post(
        &server,
        &embed_only,
        "/api/v1/chat/completions",
        chat("dev-chat", json!({})),
    )
    .await;
    let e = r.assert_error(403, "FORBIDDEN");
    assert_eq!(e["details"]["required"], "chat:write");
    assert_eq!(e["type"], "permission_error");
    // Models are open to any credential; nothing is open without one.
    server
        .get("/api/v1/models", &[("x-api-key", &embed_only)])
        .await
        .assert_status(StatusCode::OK);
    let r = server
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &[],
            chat("dev-chat", json!({})).to_string(),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    // Bad bodies are 400s naming the field.
    let r = post(
        &server,
        &key,
        "/api/v1/chat/completions",
        json!({"model": "dev-chat"}),
    )
    .await;
    assert_eq!(r.assert_error(400, "VALIDATION_ERROR")["param"], "messages");
    let r = server
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &[("x-api-key", &key)],
            "{nope",
        )
        .await;
    r.assert_error(400, "INVALID_JSON");
}

#[tokio::test]
async fn x402_pays_for_one_call_and_the_rest_stays_as_credits() {
    let gateway = gateway_config(None);
    let server = TestServer::start_with(move |c| {
        c.trust_proxy = true;
        c.x402 = x402(Settlement::TrustSignature);
        c.gateway = gateway;
    })
    .await;
    let body = chat("dev-chat", json!({"max_tokens": 20}));
    let anonymous = |headers: Vec<(&'static str, String)>| {
        let body = body.to_string();
        let server = &server;
        async move {
            let mut all: Vec<(&str, &str)> = vec![("x-forwarded-for", "10.9.8.7")];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            server
                .request(Method::POST, "/api/v1/chat/completions", &all, body)
                .await
        }
    };
    // No credential, no payment: 402 with this call's price (its reservation, 46 µ$, rounded up
    // to the cent) in both versions.
    let r = anonymous(vec![]).await;
    r.assert_status(StatusCode::PAYMENT_REQUIRED);
    let accepts = &r.json()["accepts"][0];
    assert_eq!(accepts["maxAmountRequired"], "10000");
    assert!(
        accepts["resource"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/chat/completions")
    );
    assert!(r.header("payment-required").is_some());
    // Paid: settled, credited to the payer's wallet, run, debited; the rest stays.
    let wallet = EvmWallet::new();
    let mut pay = Pay::new(&wallet);
    pay.value = 10_000;
    let r = anonymous(vec![("x-payment", pay.v1())]).await;
    r.assert_status(StatusCode::OK);
    let cost = cost_of(&r);
    assert!(cost > 0 && cost <= CHAT_INPUT + 40);
    assert!(r.header("x-payment-response").is_some() && r.header("payment-response").is_some());
    let left: i64 = r.header("x-eliza-balance-micros").unwrap().parse().unwrap();
    assert_eq!(left, 10_000 - cost);
    // A streamed call paid the same way carries the receipt headers too.
    let mut again = Pay::new(&wallet);
    again.value = 10_000;
    let streamed = {
        let mut b = body.clone();
        b["stream"] = json!(true);
        server
            .request(
                Method::POST,
                "/api/v1/chat/completions",
                &[("x-forwarded-for", "10.9.8.6"), ("x-payment", &again.v1())],
                b.to_string(),
            )
            .await
    };
    streamed.assert_status(StatusCode::OK);
    assert!(streamed.header("payment-response").is_some());
    assert_eq!(events(&streamed).last().unwrap(), "[DONE]");
    // A replayed payment buys nothing.
    let r = anonymous(vec![("x-payment", pay.v1())]).await;
    r.assert_status(StatusCode::PAYMENT_REQUIRED);
    // The wallet's account holds the rest as credits.
    let (shown, _) = balance_of_wallet(&server, &wallet).await;
    let shown = (shown.parse::<f64>().unwrap() * 1e6).round() as i64;
    // Two payments of a cent, two calls.
    assert!(
        shown > 20_000 - 2 * (CHAT_INPUT + 40) && shown < 20_000 - cost,
        "{shown}"
    );
    // A call with a credential is paid from its account; a payment beside it is ignored.
    let key = server.operator_key.clone();
    let mut other = Pay::new(&EvmWallet::new());
    other.value = 10_000;
    let r = server
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &[("x-api-key", &key), ("x-payment", &other.v1())],
            body.to_string(),
        )
        .await;
    r.assert_error(402, "INSUFFICIENT_CREDITS");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_key_is_in_no_log_line_and_trust_signature_cannot_buy_upstream_calls() {
    let upstream = Upstream::start(Script::default()).await;
    let (tmp, data) = temp_data_dir();
    let models = tmp.path().join("models.toml");
    std::fs::write(
        &models,
        "[[models]]\nid = \"up-chat\"\nkind = \"chat\"\nprovider = \"openai-compatible\"\n\
         input_price_micros_per_million = 1000000\noutput_price_micros_per_million = 2000000\n\
         max_output_tokens = 50\n",
    )
    .unwrap();
    let models = models.to_str().unwrap().to_string();
    let key = eliza_cloud::auth::api_key::generate_key(eliza_cloud::store::keys::KeyType::Live);
    let key = key.expose().to_string();
    let url = upstream.url();
    let env = [
        ("ELIZA_CLOUD_BOOTSTRAP_KEY", key.as_str()),
        ("ELIZA_CLOUD_UPSTREAM_KEY", UPSTREAM_KEY),
        ("ELIZA_CLOUD_UPSTREAM_URL", url.as_str()),
        ("ELIZA_CLOUD_MODELS", models.as_str()),
    ];
    let first = Binary::serve(&data, &[], &env);
    let (code, _) = first.terminate();
    assert_eq!(code, 0);
    let data_arg = data.to_str().unwrap();
    let (code, _, err) = run_cli(
        &["orgs", "grant-credits", "operator", "1", "--data", data_arg],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let server = Binary::serve(
        &data,
        &["--log-format", "json", "--log-level", "trace"],
        &env,
    );
    let client = server.client();
    let bearer = format!("Bearer {key}");
    let headers = [("authorization", bearer.as_str())];
    let whole = client
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &headers,
            chat("up-chat", json!({})).to_string(),
        )
        .await;
    assert_eq!(whole.status, StatusCode::OK);
    let streamed = client
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &headers,
            chat("up-chat", json!({"stream": true})).to_string(),
        )
        .await;
    assert_eq!(streamed.status, StatusCode::OK);
    upstream.set(Script {
        fail: Some(401),
        ..Script::default()
    });
    let refused = client
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &headers,
            chat("up-chat", json!({})).to_string(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    let (code, log) = server.terminate();
    assert_eq!(code, 0);
    assert!(
        log.contains("upstream refused the operator's credential"),
        "{log}"
    );
    assert!(!log.contains(UPSTREAM_KEY), "the upstream key was logged");
    assert!(
        !log.contains("S3cret"),
        "part of the upstream key was logged"
    );
    assert_eq!(
        upstream.received()[0].authorization.as_deref(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    // trust-signature settlement beside an upstream provider: refused at start.
    let (code, _, err) = run_cli(
        &[
            "serve",
            "--data",
            data_arg,
            "--x402-pay-to",
            crate::topup::PAY_TO,
            "--x402-settlement",
            "trust-signature",
        ],
        &env,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("trust-signature"), "{err}");
}
