//! `GET /api/v1/dashboard` and `GET /api/v1/credits` over HTTP.

use http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use eliza_cloud::store::StoreError;
use eliza_cloud::store::ledger::{EntryKind, NewEntry, post_entry};

use crate::support::TestServer;

async fn operator_org(server: &TestServer) -> Uuid {
    let r = server
        .get(
            "/api/v1/auth/whoami",
            &[("x-api-key", &server.operator_key)],
        )
        .await;
    Uuid::parse_str(r.json()["organization"]["id"].as_str().unwrap()).unwrap()
}

async fn post_rows(server: &TestServer, org: Uuid, amounts: &[i64]) {
    let store = server.running().state().store.clone();
    let now = server.clock.now_millis();
    let amounts = amounts.to_vec();
    store
        .write_blocking(move |txn| {
            for (i, amount) in amounts.into_iter().enumerate() {
                post_entry(
                    txn,
                    NewEntry {
                        organization_id: org,
                        amount_micros: amount,
                        kind: if amount < 0 {
                            EntryKind::Debit
                        } else {
                            EntryKind::Credit
                        },
                        description: format!("row {i}"),
                        idempotency_key: format!("test-row-{i}"),
                        metadata: vec![("source".into(), "test".into())],
                    },
                    now + i as i64,
                )
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn dashboard_shows_the_organization_keys_usage_and_rate_limit() {
    let server = TestServer::start().await;
    let org = operator_org(&server).await;
    post_rows(&server, org, &[5_000_000, -1_250_000]).await;
    let (id, _, _) = server.create_key(json!({"name": "second"})).await;
    server
        .operator_json(
            http::Method::PATCH,
            &format!("/api/v1/api-keys/{id}"),
            json!({"is_active": false}),
        )
        .await;
    let r = server
        .get("/api/v1/dashboard", &[("x-api-key", &server.operator_key)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let d = r.json();
    assert_eq!(d["organization"]["slug"], "operator");
    assert_eq!(d["organization"]["plan"], "enterprise");
    assert_eq!(d["organization"]["creditBalance"], "3.750000");
    assert_eq!(d["organization"]["creditBalance_micros"], 3_750_000);
    assert_eq!(d["apiKeys"], json!({"total": 2, "active": 1}));
    assert_eq!(d["apps"], json!({"total": 0}));
    assert_eq!(d["user"]["role"], "owner");
    // whoami, POST key, PATCH key, and this request: four authenticated requests today.
    assert_eq!(d["usage"]["requestsToday"], 4);
    assert_eq!(d["usage"]["requestsThisMonth"], 4);
    assert_eq!(d["rateLimit"]["limit"], 6000);
    assert_eq!(
        d["rateLimit"]["remaining"].as_u64().unwrap().to_string(),
        r.header("x-ratelimit-remaining").unwrap()
    );
    assert_eq!(
        d["rateLimit"]["reset"].as_i64().unwrap().to_string(),
        r.header("x-ratelimit-reset").unwrap()
    );
    // After a flush the counts come from the store, and a new day starts at zero.
    let state = server.running().state().clone();
    state.usage.flush(&state.store).unwrap();
    drop(state);
    let d = server
        .get("/api/v1/dashboard", &[("x-api-key", &server.operator_key)])
        .await
        .json();
    assert_eq!(d["usage"]["requestsToday"], 5);
    server.clock.advance_millis(86_400_000);
    let d = server
        .get("/api/v1/dashboard", &[("x-api-key", &server.operator_key)])
        .await
        .json();
    assert_eq!(d["usage"]["requestsToday"], 1);
    assert_eq!(d["usage"]["requestsThisMonth"], 6);
}

#[tokio::test]
async fn dashboard_and_credits_need_a_credential_and_only_get() {
    let server = TestServer::start().await;
    for path in ["/api/v1/dashboard", "/api/v1/credits"] {
        let r = server.get(path, &[]).await;
        r.assert_error(401, "UNAUTHORIZED");
        assert!(r.header("www-authenticate").is_some(), "{path}");
        let r = server.get(path, &[("x-api-key", "ek_live_nonsense")]).await;
        r.assert_error(401, "UNAUTHORIZED");
        let r = server
            .request(
                http::Method::POST,
                path,
                &[("x-api-key", &server.operator_key)],
                bytes::Bytes::new(),
            )
            .await;
        r.assert_error(405, "METHOD_NOT_ALLOWED");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{path}");
    }
}

#[tokio::test]
async fn credits_pages_the_ledger_newest_first() {
    let server = TestServer::start().await;
    let org = operator_org(&server).await;
    post_rows(&server, org, &[1_000_000, 2_000_000, -500_000]).await;
    // Any valid credential may read them, even a restricted key.
    let (_, restricted, _) = server
        .create_key(json!({"name": "r", "permissions": ["chat:read"]}))
        .await;
    let r = server
        .get("/api/v1/credits", &[("x-api-key", &restricted)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let c = r.json();
    assert_eq!(c["balance"], "2.500000");
    assert_eq!(c["balance_micros"], 2_500_000);
    assert_eq!(c["total"], 3);
    assert_eq!(c["page"], 1);
    let rows = c["transactions"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["amount"], "-0.500000");
    assert_eq!(rows[0]["type"], "debit");
    assert_eq!(rows[0]["metadata"], json!({"source": "test"}));
    assert_eq!(rows[2]["description"], "row 0");

    let r = server
        .get(
            "/api/v1/credits?page=2&limit=2",
            &[("x-api-key", &restricted)],
        )
        .await;
    let c = r.json();
    assert_eq!(
        (c["page"].as_u64(), c["limit"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(c["transactions"].as_array().unwrap().len(), 1);
    assert_eq!(c["transactions"][0]["description"], "row 0");

    for bad in ["?page=0", "?page=x", "?limit=101", "?limit=-1", "?page=%zz"] {
        let r = server
            .get(
                &format!("/api/v1/credits{bad}"),
                &[("x-api-key", &restricted)],
            )
            .await;
        r.assert_error(400, "VALIDATION_ERROR");
    }
    server
        .get("/api/v1/credits", &[])
        .await
        .assert_error(401, "UNAUTHORIZED");
}
