//! Token buckets over HTTP with a fixed clock: per-key limits, plan defaults, the headers on every
//! limited response, 429 with Retry-After, and bounded memory under floods.

use http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use eliza_cloud::auth::api_key::generate_key;
use eliza_cloud::store::StoreError;
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, insert_key};
use eliza_cloud::store::orgs::{OrgRecord, Plan, insert_org};
use eliza_cloud::store::users::{Role, UserRecord, insert_user};

use crate::support::{T0, TestServer};

#[tokio::test]
async fn a_keys_own_limit_drains_refuses_and_refills() {
    let server = TestServer::start().await;
    let (_, key, _) = server
        .create_key(json!({"name": "slow", "rateLimit": 3}))
        .await;
    // Full again 20 s per missing token later (X-RateLimit-Reset is that instant, Unix seconds).
    for (remaining, full_after) in [("2", 20), ("1", 40), ("0", 60)] {
        let r = server
            .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining));
        let reset = (T0.millis() / 1000 + full_after).to_string();
        assert_eq!(r.header("x-ratelimit-reset"), Some(reset.as_str()));
    }
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(
        r.header("retry-after"),
        Some("20"),
        "3 per minute: one token every 20 s"
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // Refused requests do not drain further: 19.999 s later there is still nothing.
    server.clock.advance_millis(19_999);
    server
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await
        .assert_error(429, "RATE_LIMITED");
    server.clock.advance_millis(1);
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Other keys of the organization have their own buckets.
    assert_eq!(server.whoami_status(&server.operator_key).await, 200);
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(metrics.contains("eliza_rate_limited_total 2"), "{metrics}");
}

#[tokio::test]
async fn plan_defaults_apply_without_a_key_limit() {
    let server = TestServer::start().await;
    let store = server.running().state().store.clone();
    let mut keys = Vec::new();
    for (plan, custom) in [
        (Plan::Free, None),
        (Plan::Pro, None),
        (Plan::Enterprise, Some(777)),
        (Plan::Enterprise, None),
    ] {
        let key = generate_key(KeyType::Live);
        let (hash, prefix) = (key.hash(), key.display_prefix());
        keys.push((key, plan, custom));
        store
            .write_blocking(move |txn| {
                let org = Uuid::new_v4();
                let user = Uuid::new_v4();
                insert_org(
                    txn,
                    &OrgRecord {
                        id: org,
                        name: "P".into(),
                        slug: format!("p-{org}"),
                        plan,
                        custom_rate_limit: custom,
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
                insert_key(
                    txn,
                    &ApiKeyRecord::fresh(org, user, "k".into(), KeyType::Live, prefix, hash, 0),
                )?;
                Ok::<_, StoreError>(())
            })
            .await
            .unwrap();
    }
    drop(store);
    for ((key, _, _), expected) in keys.iter().zip(["60", "300", "777", "1000"]) {
        let r = server
            .get("/api/v1/auth/whoami", &[("x-api-key", key.expose())])
            .await;
        assert_eq!(r.header("x-ratelimit-limit"), Some(expected));
    }
    // The free plan's 60 per minute, exactly.
    let free = keys[0].0.expose().to_string();
    for _ in 0..59 {
        assert_eq!(server.whoami_status(&free).await, 200);
    }
    server
        .get("/api/v1/auth/whoami", &[("x-api-key", &free)])
        .await
        .assert_error(429, "RATE_LIMITED");
}

#[tokio::test]
async fn every_limited_response_carries_the_headers() {
    let server = TestServer::start().await;
    let (_, restricted, _) = server
        .create_key(json!({"name": "r", "permissions": ["chat"]}))
        .await;
    let cases = [
        server
            .get("/api/v1/api-keys", &[("x-api-key", &restricted)])
            .await, // 403
        server
            .operator_json(
                Method::DELETE,
                &format!("/api/v1/api-keys/{}", Uuid::new_v4()),
                json!({}),
            )
            .await, // 404
        server
            .operator_json(Method::POST, "/api/v1/api-keys", json!({}))
            .await, // 400
        server
            .get("/api/v1/credits", &[("x-api-key", &restricted)])
            .await, // 200
    ];
    for r in cases {
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(r.header(h).is_some(), "{h} missing on {}", r.status);
        }
    }
    // Public and unauthenticated answers draw on no bucket.
    for r in [
        server.get("/healthz", &[]).await,
        server.get("/api/v1/auth/whoami", &[]).await,
    ] {
        assert!(r.header("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn floods_of_made_up_keys_and_addresses_do_not_grow_memory() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let state = server.running().state().clone();
    assert_eq!(server.whoami_status(&server.operator_key).await, 200);
    let (buckets, cached) = (state.limiter.bucket_count(), state.key_cache.entry_count());
    for i in 0..500u32 {
        // A well-shaped key with a wrong checksum: refused before any lookup or bucket.
        let mut fake = generate_key(KeyType::Live).expose().to_string();
        let last = fake.pop().unwrap();
        fake.push(if last == 'a' { 'b' } else { 'a' });
        let forwarded = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        let r = server
            .get(
                "/api/v1/auth/whoami",
                &[("x-api-key", &fake), ("x-forwarded-for", &forwarded)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        // An unknown foreign-format key: one hash lookup, nothing kept.
        let foreign = format!("eliza_{i:064x}");
        let r = server
            .get(
                "/api/v1/auth/whoami",
                &[("authorization", &format!("Bearer {foreign}"))],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(state.limiter.bucket_count(), buckets);
    assert_eq!(state.key_cache.entry_count(), cached);
}

#[tokio::test]
async fn a_flood_of_client_addresses_keeps_the_bucket_count_bounded() {
    let server = TestServer::start_with(|c| {
        c.trust_proxy = true;
        c.max_buckets = 64;
    })
    .await;
    let state = server.running().state().clone();
    // The nonce route takes a token from the client address's bucket: 500 addresses, 500
    // buckets asked for, never more than 64 held.
    for i in 0..500u32 {
        let forwarded = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        let r = server
            .get(
                "/api/auth/siwe/nonce?chainId=1",
                &[("x-forwarded-for", &forwarded)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    }
    let held = state.limiter.bucket_count();
    assert!(held > 0 && held <= 64, "{held} buckets held");
    // IPv6 clients share their /64's bucket: a flood from one /64 is one bucket's worth.
    for i in 0..20u32 {
        let forwarded = format!("2001:db8:1:2::{i:x}");
        let r = server
            .get(
                "/api/auth/siwe/nonce?chainId=1",
                &[("x-forwarded-for", &forwarded)],
            )
            .await;
        let expected = if i < 10 { 200 } else { 429 };
        assert_eq!(r.status.as_u16(), expected, "{forwarded}");
    }
}
