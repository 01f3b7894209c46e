//! `/api/v1/api-keys` over HTTP: shapes, validation, permissions, isolation between
//! organizations, and changes that take effect on the very next request despite the cache.

use http::{Method, StatusCode};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, insert_key};
use eliza_cloud::store::orgs::{OrgRecord, Plan, insert_org};
use eliza_cloud::store::users::{Role, UserRecord, insert_user};

use crate::support::{T0, TestServer};

#[tokio::test]
async fn create_answers_the_plaintext_once_and_list_never_shows_it() {
    let server = TestServer::start().await;
    server.clock.advance_millis(1_000);
    let r = server
        .operator_json(
            Method::POST,
            "/api/v1/api-keys",
            json!({"name": "  ci  ", "description": "for CI", "permissions": ["chat:read", "apps"],
                   "rate_limit": 42, "expires_at": "2026-02-01T00:00:00Z", "type": "test"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let json = r.json();
    let plain = json["plainKey"].as_str().unwrap();
    eliza_cloud::auth::api_key::parse_key(plain).unwrap();
    assert!(plain.starts_with("ek_test_"));
    let key = &json["apiKey"];
    assert_eq!(key["name"], "ci");
    assert_eq!(key["description"], "for CI");
    assert_eq!(key["permissions"], json!(["chat:read", "apps"]));
    assert_eq!(key["rateLimit"], 42);
    assert_eq!(key["type"], "test");
    assert_eq!(key["is_active"], true);
    assert_eq!(key["usage_count"], 0);
    assert_eq!(key["last_used_at"], serde_json::Value::Null);
    assert_eq!(key["expires_at"], "2026-02-01T00:00:00.000Z");
    assert_eq!(key["created_at"], "2026-01-01T00:00:01.000Z");
    assert_eq!(key["key_prefix"], &plain[..12]);

    let r = server
        .get("/api/v1/api-keys", &[("x-api-key", &server.operator_key)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        !text.contains(plain) && !text.contains(&server.operator_key),
        "no secrets in lists"
    );
    assert!(!text.contains("hash"), "{text}");
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["id"], key["id"], "newest first");
    // `rateLimit` is accepted as well as `rate_limit`.
    let (_, _, view) = server
        .create_key(json!({"name": "x", "rateLimit": 7}))
        .await;
    assert_eq!(view["rateLimit"], 7);
    assert_eq!(view["type"], "live");
}

#[tokio::test]
async fn bad_bodies_are_400_naming_each_field() {
    let server = TestServer::start().await;
    let cases = [
        (json!({}), vec!["name"]),
        (json!({"name": ""}), vec!["name"]),
        (json!({"name": "x".repeat(101)}), vec!["name"]),
        (json!({"name": 5}), vec!["name"]),
        (
            json!({"name": "ok", "permissions": ["chat", "admin", "chat:delete"]}),
            vec!["permissions"],
        ),
        (
            json!({"name": "ok", "permissions": "chat"}),
            vec!["permissions"],
        ),
        (json!({"name": "ok", "rateLimit": 0}), vec!["rateLimit"]),
        (
            json!({"name": "ok", "rate_limit": 100001}),
            vec!["rate_limit"],
        ),
        (json!({"name": "ok", "rateLimit": 1.5}), vec!["rateLimit"]),
        (
            json!({"name": "ok", "expires_at": "2025-12-31T23:59:59Z"}),
            vec!["expires_at"],
        ),
        (
            json!({"name": "ok", "expires_at": "2026-02-30T00:00:00Z"}),
            vec!["expires_at"],
        ),
        (json!({"name": "ok", "type": "prod"}), vec!["type"]),
        (
            json!({"name": "", "type": "prod", "rateLimit": -1}),
            vec!["name", "rateLimit", "type"],
        ),
    ];
    for (body, fields) in cases {
        let r = server
            .operator_json(Method::POST, "/api/v1/api-keys", body.clone())
            .await;
        let error = r.assert_error(400, "VALIDATION_ERROR");
        let details = error["details"].as_object().unwrap();
        let named: Vec<&str> = details.keys().map(String::as_str).collect();
        assert_eq!(named, fields, "{body}");
        if body.get("permissions").is_some_and(|p| p.is_array()) {
            let why = details["permissions"].as_str().unwrap();
            assert!(
                why.contains("admin") && why.contains("chat:delete"),
                "{why}"
            );
        }
    }
    let r = server
        .request(
            Method::POST,
            "/api/v1/api-keys",
            &[("x-api-key", &server.operator_key)],
            "{not json",
        )
        .await;
    r.assert_error(400, "INVALID_JSON");
    let r = server
        .request(
            Method::POST,
            "/api/v1/api-keys",
            &[("x-api-key", &server.operator_key)],
            "[1]",
        )
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    // Nothing was created by any of them.
    let r = server
        .get("/api/v1/api-keys", &[("x-api-key", &server.operator_key)])
        .await;
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn restricted_keys_cannot_manage_keys_and_test_keys_cannot_mint_live_ones() {
    let server = TestServer::start().await;
    let (_, restricted, _) = server
        .create_key(json!({"name": "r", "permissions": ["chat"]}))
        .await;
    for (method, path) in [
        (Method::GET, "/api/v1/api-keys".to_string()),
        (Method::POST, "/api/v1/api-keys".to_string()),
        (
            Method::DELETE,
            format!("/api/v1/api-keys/{}", Uuid::new_v4()),
        ),
        (
            Method::PATCH,
            format!("/api/v1/api-keys/{}", Uuid::new_v4()),
        ),
        (
            Method::POST,
            format!("/api/v1/api-keys/{}/regenerate", Uuid::new_v4()),
        ),
    ] {
        let r = server
            .json_as(&restricted, method, &path, json!({"name": "escalate"}))
            .await;
        let error = r.assert_error(403, "FORBIDDEN");
        assert_eq!(error["details"]["required"], "unrestricted", "{path}");
    }
    // A restricted key still reaches routes that need any credential.
    assert_eq!(server.whoami_status(&restricted).await, 200);
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &restricted)])
        .await;
    assert_eq!(r.json()["apiKey"]["permissions"], json!(["chat"]));

    let (_, test_key, _) = server
        .create_key(json!({"name": "t", "type": "test"}))
        .await;
    let r = server
        .json_as(
            &test_key,
            Method::POST,
            "/api/v1/api-keys",
            json!({"name": "live please"}),
        )
        .await;
    r.assert_error(403, "FORBIDDEN");
    let r = server
        .json_as(
            &test_key,
            Method::POST,
            "/api/v1/api-keys",
            json!({"name": "t2", "type": "test"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let other_test_id = r.json()["apiKey"]["id"].as_str().unwrap().to_string();

    // Nor can it reach a live secret another way: regenerating, patching or deleting a live key
    // is 403 (the live key keeps working); test keys it may still manage.
    let (live_id, live_key, _) = server.create_key(json!({"name": "live"})).await;
    let live = format!("/api/v1/api-keys/{live_id}");
    for (method, path, body) in [
        (Method::POST, format!("{live}/regenerate"), json!({})),
        (Method::PATCH, live.clone(), json!({"is_active": false})),
        (Method::DELETE, live.clone(), json!({})),
    ] {
        let r = server.json_as(&test_key, method, &path, body).await;
        let error = r.assert_error(403, "FORBIDDEN");
        assert_eq!(error["details"]["required"], "live key", "{path}");
    }
    assert_eq!(server.whoami_status(&live_key).await, 200);
    let r = server
        .json_as(
            &test_key,
            Method::POST,
            &format!("/api/v1/api-keys/{other_test_id}/regenerate"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.json()["plainKey"]
            .as_str()
            .unwrap()
            .starts_with("ek_test_")
    );
}

#[tokio::test]
async fn another_organizations_keys_are_invisible() {
    let server = TestServer::start().await;
    let other_key = generate_key(KeyType::Live);
    let other_id = Uuid::new_v4();
    let store = server.running().state().store.clone();
    let hash = other_key.hash();
    let prefix = other_key.display_prefix();
    store
        .write_blocking(move |txn| {
            let org = Uuid::new_v4();
            let user = Uuid::new_v4();
            insert_org(
                txn,
                &OrgRecord {
                    id: org,
                    name: "Other".into(),
                    slug: "other".into(),
                    plan: Plan::Free,
                    custom_rate_limit: None,
                    is_active: true,
                    created_at: 0,
                    updated_at: 0,
                },
            )?;
            insert_user(
                txn,
                &UserRecord {
                    id: user,
                    organization_id: org,
                    name: None,
                    wallet_address: None,
                    solana_address: None,
                    role: Role::Owner,
                    is_active: true,
                    created_at: 0,
                    updated_at: 0,
                },
            )?;
            let mut record =
                ApiKeyRecord::fresh(org, user, "theirs".into(), KeyType::Live, prefix, hash, 0);
            record.id = other_id;
            insert_key(txn, &record)
        })
        .await
        .unwrap();
    drop(store);
    let path = format!("/api/v1/api-keys/{other_id}");
    server
        .operator_json(Method::PATCH, &path, json!({"name": "mine"}))
        .await
        .assert_error(404, "NOT_FOUND");
    server
        .operator_json(Method::DELETE, &path, json!({}))
        .await
        .assert_error(404, "NOT_FOUND");
    server
        .operator_json(Method::POST, &format!("{path}/regenerate"), json!({}))
        .await
        .assert_error(404, "NOT_FOUND");
    let r = server
        .get("/api/v1/api-keys", &[("x-api-key", &server.operator_key)])
        .await;
    assert!(!String::from_utf8_lossy(&r.body).contains(&other_id.to_string()));
    // Their key still works for them, and sees only its own organization.
    let r = server
        .get("/api/v1/api-keys", &[("x-api-key", other_key.expose())])
        .await;
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["name"], "theirs");
}

#[tokio::test]
async fn changes_take_effect_on_the_next_request_despite_the_cache() {
    let server = TestServer::start().await;
    let (id, plain, _) = server.create_key(json!({"name": "k"})).await;
    let path = format!("/api/v1/api-keys/{id}");
    // Cached by its first use.
    assert_eq!(server.whoami_status(&plain).await, 200);
    assert_eq!(server.whoami_status(&plain).await, 200);

    let r = server
        .operator_json(Method::PATCH, &path, json!({"is_active": false}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["apiKey"]["is_active"], false);
    assert_eq!(
        server.whoami_status(&plain).await,
        401,
        "deactivation is immediate"
    );
    server
        .operator_json(Method::PATCH, &path, json!({"is_active": true}))
        .await;
    assert_eq!(server.whoami_status(&plain).await, 200);

    // Expiry: set a minute ahead, then move the clock.
    let r = server
        .operator_json(
            Method::PATCH,
            &path,
            json!({"expires_at": "2026-01-01T00:01:00Z"}),
        )
        .await;
    assert_eq!(r.json()["apiKey"]["expires_at"], "2026-01-01T00:01:00.000Z");
    assert_eq!(server.whoami_status(&plain).await, 200);
    server.clock.set(T0.plus_millis(60_000));
    assert_eq!(
        server.whoami_status(&plain).await,
        401,
        "expiry is checked on every request"
    );
    server
        .operator_json(Method::PATCH, &path, json!({"expires_at": null}))
        .await;
    assert_eq!(server.whoami_status(&plain).await, 200);

    // Other fields; `description: null` clears, `permissions: []` means unrestricted again.
    let r = server
        .operator_json(
            Method::PATCH,
            &path,
            json!({"name": "renamed", "description": "d", "permissions": ["voice:read"], "rateLimit": 9}),
        )
        .await;
    let key = r.json()["apiKey"].clone();
    assert_eq!(
        (key["name"].as_str(), key["rateLimit"].as_u64()),
        (Some("renamed"), Some(9))
    );
    assert_eq!(key["permissions"], json!(["voice:read"]));
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &plain)])
        .await;
    assert_eq!(
        r.json()["apiKey"]["permissions"],
        json!(["voice:read"]),
        "permissions change at once"
    );
    assert_eq!(
        r.header("x-ratelimit-limit"),
        Some("9"),
        "the new limit applies at once"
    );
    let r = server
        .operator_json(
            Method::PATCH,
            &path,
            json!({"description": null, "permissions": [], "rateLimit": null}),
        )
        .await;
    let key = r.json()["apiKey"].clone();
    assert_eq!(key["description"], serde_json::Value::Null);
    assert_eq!(key["permissions"], json!([]));
    assert_eq!(key["rateLimit"], serde_json::Value::Null);
    server
        .operator_json(Method::PATCH, &path, json!({"is_active": "no"}))
        .await
        .assert_error(400, "VALIDATION_ERROR");

    // Regenerate: same id, the old secret fails at once, the new one works.
    let r = server
        .operator_json(Method::POST, &format!("{path}/regenerate"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let json = r.json();
    assert_eq!(json["apiKey"]["id"], id.as_str());
    let fresh = json["plainKey"].as_str().unwrap().to_string();
    assert_ne!(fresh, plain);
    assert_eq!(json["apiKey"]["key_prefix"], &fresh[..12]);
    assert_eq!(server.whoami_status(&plain).await, 401);
    assert_eq!(server.whoami_status(&fresh).await, 200);

    // Delete: the key fails on its next use; a second delete is 404.
    let r = server.operator_json(Method::DELETE, &path, json!({})).await;
    assert_eq!(r.json(), json!({"success": true}));
    assert_eq!(server.whoami_status(&fresh).await, 401);
    server
        .operator_json(Method::DELETE, &path, json!({}))
        .await
        .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn usage_counts_are_batched_flushed_and_kept_across_restarts() {
    // No periodic tick after the first (at start): only the flushes this test names happen.
    let mut server =
        TestServer::start_with(|c| c.usage_flush_interval = std::time::Duration::from_secs(3600))
            .await;
    let (id, plain, _) = server.create_key(json!({"name": "counted"})).await;
    for _ in 0..5 {
        assert_eq!(server.whoami_status(&plain).await, 200);
    }
    server.clock.advance_millis(1_500);
    assert_eq!(server.whoami_status(&plain).await, 200);
    async fn list(s: &TestServer) -> Vec<serde_json::Value> {
        let r = s
            .get("/api/v1/api-keys", &[("x-api-key", &s.operator_key)])
            .await;
        r.json()["keys"].as_array().unwrap().clone()
    }
    // Unflushed counts are already visible.
    assert!(
        server
            .running()
            .state()
            .usage
            .pending_for_key(Uuid::parse_str(&id).unwrap())
            .is_some()
    );
    let keys = list(&server).await;
    let key = keys.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(key["usage_count"], 6);
    assert_eq!(key["last_used_at"], "2026-01-01T00:00:01.500Z");
    // Flushed by the same code the periodic flusher runs.
    let state = server.running().state().clone();
    state.usage.flush(&state.store).unwrap();
    assert!(
        state
            .usage
            .pending_for_key(Uuid::parse_str(&id).unwrap())
            .is_none()
    );
    drop(state);
    // Three more, never flushed by a tick: the shutdown flush must keep them.
    for _ in 0..3 {
        assert_eq!(server.whoami_status(&plain).await, 200);
    }
    let key_id = Uuid::parse_str(&id).unwrap();
    assert_eq!(
        server
            .running()
            .state()
            .usage
            .pending_for_key(key_id)
            .map(|p| p.0),
        Some(3)
    );
    server.restart().await;
    let keys = list(&server).await;
    let key = keys.iter().find(|k| k["id"] == id.as_str()).unwrap();
    assert_eq!(key["usage_count"], 9);
}

#[tokio::test]
async fn the_periodic_flusher_stores_usage_without_being_asked() {
    let server = TestServer::start().await;
    let (id, plain, _) = server.create_key(json!({"name": "ticked"})).await;
    let id = Uuid::parse_str(&id).unwrap();
    let state = server.running().state().clone();
    let mut flushes = state.usage.flushes();
    assert_eq!(server.whoami_status(&plain).await, 200);
    // Nobody calls flush here: the server's own ticker (every second) must store the count (it
    // may already have, so the count pending here is not asserted).
    // Awaits flush events, not a clock; the deadline only turns a hang into a failure.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while state.usage.pending_for_key(id).is_some() {
            flushes.changed().await.unwrap();
        }
    })
    .await
    .expect("the periodic flusher ran");
    let stored = state
        .store
        .read(|txn| eliza_cloud::store::keys::get_key(txn, id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.usage_count, 1);
    const { assert!(eliza_cloud::server::USAGE_FLUSH_INTERVAL.as_millis() <= 1_000) };
}

#[tokio::test]
async fn an_oversized_chunked_body_is_413_and_a_body_in_flight_at_shutdown_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = TestServer::start_with(|c| c.max_body_bytes = 4096).await;
    let addr = server.addr();
    let head = format!(
        "POST /api/v1/api-keys HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.operator_key
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 3000, "a".repeat(3000));
    stream.write_all(chunk.as_bytes()).await.unwrap();
    stream.write_all(chunk.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("PAYLOAD_TOO_LARGE"));

    // In flight: head and half the body sent, then shutdown begins, then the rest arrives. The
    // request uses a key of its own, so its use (exact in the list, flushed or not) shows when
    // the server has authenticated it and is reading the body.
    let (id, in_flight_key, _) = server.create_key(json!({"name": "in-flight"})).await;
    let body = br#"{"name":"in flight"}"#;
    let head = format!(
        "POST /api/v1/api-keys HTTP/1.1\r\nHost: x\r\nX-API-Key: {in_flight_key}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..5]).await.unwrap();
    let deadline = std::time::Duration::from_secs(30);
    tokio::time::timeout(deadline, async {
        loop {
            let keys = server
                .operator_json(Method::GET, "/api/v1/api-keys", json!({}))
                .await
                .json();
            let used = keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["id"] == id.as_str() && k["usage_count"] == 1);
            if used {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the in-flight request is authenticated");
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    // Shutdown has begun once the listener is gone.
    tokio::time::timeout(deadline, async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes");
    stream.write_all(&body[5..]).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    assert!(text.contains("in flight"));
    let _server = stopping.await.unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        test: bool,
        expires_in_min: Option<u8>,
    },
    Delete(usize),
    Regenerate(usize),
    SetActive(usize, bool),
    SetExpiry(usize, Option<u8>),
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), proptest::option::of(1u8..5)).prop_map(|(test, e)| Op::Create { test, expires_in_min: e }),
        1 => (0usize..6).prop_map(Op::Delete),
        2 => (0usize..6).prop_map(Op::Regenerate),
        2 => (0usize..6, any::<bool>()).prop_map(|(i, a)| Op::SetActive(i, a)),
        1 => (0usize..6, proptest::option::of(1u8..5)).prop_map(|(i, e)| Op::SetExpiry(i, e)),
        1 => (1u8..4).prop_map(Op::Advance),
    ]
}

#[derive(Debug)]
struct ModelKey {
    id: String,
    current: String,
    retired: Vec<String>,
    active: bool,
    expires_at_ms: Option<i64>,
    deleted: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    /// After any sequence of create/revoke/regenerate/patch, exactly the current secrets of live,
    /// active, unexpired keys authenticate; every retired or revoked secret fails.
    #[test]
    fn exactly_the_live_keys_authenticate(ops in proptest::collection::vec(op(), 1..14)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let server = TestServer::start().await;
            let mut keys: Vec<ModelKey> = Vec::new();
            let minutes = |m: u8| i64::from(m) * 60_000;
            for op in ops {
                let now = server.clock.now_millis();
                match op {
                    Op::Create { test, expires_in_min } => {
                        let mut body = json!({"name": "p", "type": if test { "test" } else { "live" }});
                        if let Some(m) = expires_in_min {
                            body["expires_at"] = json!(eliza_cloud::time::Timestamp(now + minutes(m)).to_rfc3339());
                        }
                        let (id, plain, _) = server.create_key(body).await;
                        keys.push(ModelKey { id, current: plain, retired: vec![], active: true,
                            expires_at_ms: expires_in_min.map(|m| now + minutes(m)), deleted: false });
                    }
                    Op::Delete(i) => if let Some(k) = keys.get_mut(i) {
                        let r = server.operator_json(Method::DELETE, &format!("/api/v1/api-keys/{}", k.id), json!({})).await;
                        assert_eq!(r.status.as_u16(), if k.deleted { 404 } else { 200 });
                        k.deleted = true;
                    },
                    Op::Regenerate(i) => if let Some(k) = keys.get_mut(i) {
                        let r = server.operator_json(Method::POST, &format!("/api/v1/api-keys/{}/regenerate", k.id), json!({})).await;
                        if k.deleted {
                            assert_eq!(r.status.as_u16(), 404);
                        } else {
                            let fresh = r.json()["plainKey"].as_str().unwrap().to_string();
                            k.retired.push(std::mem::replace(&mut k.current, fresh));
                        }
                    },
                    Op::SetActive(i, active) => if let Some(k) = keys.get_mut(i) {
                        let r = server.operator_json(Method::PATCH, &format!("/api/v1/api-keys/{}", k.id), json!({"is_active": active})).await;
                        if !k.deleted { assert_eq!(r.status.as_u16(), 200); k.active = active; }
                    },
                    Op::SetExpiry(i, m) => if let Some(k) = keys.get_mut(i) {
                        let at = m.map(|m| now + minutes(m));
                        let value = at.map(|t| json!(eliza_cloud::time::Timestamp(t).to_rfc3339())).unwrap_or(json!(null));
                        let r = server.operator_json(Method::PATCH, &format!("/api/v1/api-keys/{}", k.id), json!({"expires_at": value})).await;
                        if !k.deleted { assert_eq!(r.status.as_u16(), 200); k.expires_at_ms = at; }
                    },
                    Op::Advance(m) => server.clock.advance_millis(minutes(m)),
                }
                let now = server.clock.now_millis();
                for k in &keys {
                    let live = !k.deleted && k.active && k.expires_at_ms.is_none_or(|at| at > now);
                    assert_eq!(server.whoami_status(&k.current).await, if live { 200 } else { 401 }, "{k:?}");
                    for old in &k.retired {
                        assert_eq!(server.whoami_status(old).await, 401);
                    }
                }
            }
        });
    }
}

/// Sends `request` on a connection of its own and hangs up at once; answers once the server has
/// dropped the request's future (its in-flight count is back to zero; a bounded wait).
async fn send_and_hang_up(server: &TestServer, request: &str) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    server
        .wait_for_in_flight("the request never arrived", |n| n > 0)
        .await;
    drop(stream);
    server
        .wait_for_in_flight("the server never dropped the request", |n| n == 0)
        .await;
}

/// The status of whoami with `key`, once it stops being 200 (bounded: the commit runs on the
/// blocking pool after the test releases the write lock).
async fn whoami_once_changed(server: &TestServer, key: &str) -> u16 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = server.whoami_status(key).await;
        if status != 200 || tokio::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_revoke_or_regenerate_whose_request_was_dropped_still_takes_effect() {
    let server = TestServer::start().await;
    let db = server.running().state().store.clone();
    let operator = server.operator_key.clone();
    for action in ["delete", "regenerate", "disable"] {
        let (id, key, _) = server.create_key(json!({"name": action})).await;
        // Cached by a first use.
        assert_eq!(server.whoami_status(&key).await, 200);
        // Hold the write lock so the change commits only after its request was dropped.
        let held = db.database().begin_write().unwrap();
        let request = match action {
            "delete" => format!(
                "DELETE /api/v1/api-keys/{id} HTTP/1.1\r\nHost: x\r\nX-API-Key: {operator}\r\n\r\n"
            ),
            "regenerate" => format!(
                "POST /api/v1/api-keys/{id}/regenerate HTTP/1.1\r\nHost: x\r\nX-API-Key: {operator}\r\nContent-Length: 0\r\n\r\n"
            ),
            _ => {
                let body = r#"{"is_active":false}"#;
                format!(
                    "PATCH /api/v1/api-keys/{id} HTTP/1.1\r\nHost: x\r\nX-API-Key: {operator}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        send_and_hang_up(&server, &request).await;
        held.abort().unwrap();
        assert_eq!(
            whoami_once_changed(&server, &key).await,
            401,
            "{action}: the old key still worked after the commit"
        );
    }
}

#[tokio::test]
async fn the_key_list_pages_newest_first_and_refuses_out_of_range_paging() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        server.clock.advance_millis(1000);
        ids.push(server.create_key(json!({"name": format!("k{i}")})).await.0);
    }
    let key = server.operator_key.clone();
    let r = server
        .get("/api/v1/api-keys?page=2&limit=2", &[("x-api-key", &key)])
        .await;
    r.assert_status(StatusCode::OK);
    let json = r.json();
    assert_eq!(json["page"], 2);
    assert_eq!(json["limit"], 2);
    assert_eq!(json["total"], 6, "five keys and the operator's");
    let shown: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [ids[2].as_str(), ids[1].as_str()], "newest first");
    assert!(json["keys"][0]["app_id"].is_null());
    let r = server.get("/api/v1/api-keys", &[("x-api-key", &key)]).await;
    assert_eq!(r.json()["limit"], 50);
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("page=0", "page"),
        ("limit=x", "limit"),
    ] {
        let r = server
            .get(&format!("/api/v1/api-keys?{query}"), &[("x-api-key", &key)])
            .await;
        let error = r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(error["param"], param, "{query}");
        assert_eq!(error["type"], "invalid_request_error");
    }
    let r = server
        .get("/api/v1/credits?limit=1000", &[("x-api-key", &key)])
        .await;
    assert_eq!(r.assert_error(400, "VALIDATION_ERROR")["param"], "limit");
}

#[tokio::test]
async fn an_app_key_reaches_only_what_its_scope_allows() {
    let server = TestServer::start().await;
    let state = server.running().state().clone();
    // An app's key, as §10's app routes will mint it: its organization's, scoped to one app.
    let whoami = server
        .get(
            "/api/v1/auth/whoami",
            &[("x-api-key", &server.operator_key)],
        )
        .await
        .json();
    let operator_key_id = Uuid::parse_str(whoami["apiKey"]["id"].as_str().unwrap()).unwrap();
    let app_key = generate_key(KeyType::Live);
    let (hash, prefix) = (app_key.hash(), app_key.display_prefix());
    state
        .store
        .write_blocking(move |txn| {
            let owner = eliza_cloud::store::keys::get_key(txn, operator_key_id)?.unwrap();
            let mut record = ApiKeyRecord::fresh(
                owner.organization_id,
                owner.user_id,
                "app".into(),
                KeyType::Live,
                prefix,
                hash,
                0,
            );
            record.app_id = Some(Uuid::new_v4());
            insert_key(txn, &record)
        })
        .await
        .unwrap();
    let key = app_key.expose();
    // Whoami and the catch-all take any credential; the organization's routes refuse the scope.
    assert_eq!(server.whoami_status(key).await, 200);
    server
        .get("/api/v1/nope", &[("x-api-key", key)])
        .await
        .assert_error(404, "NOT_FOUND");
    for path in ["/api/v1/dashboard", "/api/v1/credits", "/api/v1/api-keys"] {
        let error = server
            .get(path, &[("x-api-key", key)])
            .await
            .assert_error(403, "FORBIDDEN");
        assert_eq!(error["type"], "permission_error", "{path}");
    }
    server
        .json_as(key, Method::POST, "/api/v1/api-keys", json!({"name": "x"}))
        .await
        .assert_error(403, "FORBIDDEN");
    // The organization lists it with its app, and cannot manage it as an organization key.
    let r = server
        .get("/api/v1/api-keys", &[("x-api-key", &server.operator_key)])
        .await
        .json();
    let listed = r["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "app")
        .unwrap()
        .clone();
    assert!(listed["app_id"].is_string());
    let id = listed["id"].as_str().unwrap();
    server
        .operator_json(Method::DELETE, &format!("/api/v1/api-keys/{id}"), json!({}))
        .await
        .assert_error(404, "NOT_FOUND");
}
