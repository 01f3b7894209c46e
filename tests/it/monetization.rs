//! Calls through someone's app (`X-App-Id`), its monetization and its owner's earnings over real
//! HTTP (SPEC §10): the caller pays the platform price plus the app's price in one ledger row,
//! the owner earns exactly the app's part in the same transaction, pending for the hold, then
//! withdrawable once per idempotency key.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use eliza_cloud::store::earnings::totals_of;
use eliza_cloud::store::ledger::{EntryKind, balance_of, list_entries};

use crate::gateway::{gateway_config, grant, organization_of};
use crate::signin::{EvmWallet, siwe_sign_in};
use crate::support::{TestResponse, TestServer};

const DAY_MS: i64 = 86_400_000;

async fn server() -> TestServer {
    let gateway = gateway_config(None);
    TestServer::start_with(move |c| {
        c.gateway = gateway;
        c.initial_free_credits_micros = 0;
    })
    .await
}

/// An app of the operator; answers (id, app key).
async fn app(server: &TestServer, name: &str, extra: Value) -> (String, String) {
    let mut body = json!({"name": name, "app_url": "https://shop.example"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = server
        .json_as(&server.operator_key, Method::POST, "/api/v1/apps", body)
        .await;
    r.assert_status(StatusCode::OK);
    let j = r.json();
    (
        j["app"]["id"].as_str().unwrap().to_string(),
        j["apiKey"].as_str().unwrap().to_string(),
    )
}

async fn price(server: &TestServer, id: &str, pricing: Value) -> TestResponse {
    server
        .json_as(
            &server.operator_key,
            Method::POST,
            &format!("/api/v1/apps/{id}/monetization"),
            json!({"enabled": true, "pricing": pricing}),
        )
        .await
}

/// A signed-in stranger with `micros` of credits: (key, organization, user id).
async fn caller(server: &TestServer, micros: i64) -> (String, Uuid, String) {
    let signed = siwe_sign_in(server, &EvmWallet::new()).await.json();
    let key = signed["apiKey"].as_str().unwrap().to_string();
    let org = organization_of(server, &key).await;
    grant(server, org, micros);
    (key, org, signed["user"]["id"].as_str().unwrap().to_string())
}

fn chat_body(text: &str) -> String {
    json!({"model": "dev-chat", "max_tokens": 20, "messages": [{"role": "user", "content": text}]})
        .to_string()
}

async fn chat_through(
    server: &TestServer,
    key: &str,
    app: Option<&str>,
    text: &str,
    extra: &[(&str, &str)],
) -> TestResponse {
    let mut headers: Vec<(&str, &str)> = vec![("x-api-key", key)];
    if let Some(app) = app {
        headers.push(("x-app-id", app));
    }
    headers.extend_from_slice(extra);
    server
        .request(
            Method::POST,
            "/api/v1/chat/completions",
            &headers,
            chat_body(text),
        )
        .await
}

fn cost(r: &TestResponse) -> i64 {
    r.assert_status(StatusCode::OK);
    r.header("x-eliza-cost-micros").unwrap().parse().unwrap()
}

fn total_tokens(r: &TestResponse) -> i64 {
    r.json()["usage"]["total_tokens"].as_i64().unwrap()
}

fn balance(server: &TestServer, org: Uuid) -> i64 {
    let state = server.running().state();
    state.gateway.billing.flush().unwrap();
    state.store.read(|t| balance_of(t, org)).unwrap()
}

/// Commits what is queued, then `check` finds nothing wrong.
pub fn check_clean(server: &TestServer) {
    let state = server.running().state();
    state.gateway.billing.flush().unwrap();
    state.usage.flush(&state.store).unwrap();
    let report = state
        .store
        .read(eliza_cloud::store::check::check_store)
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn calls_through_a_monetized_app_pay_its_owner_exactly_and_withdraw_once() {
    let server = server().await;
    let owner = server.operator_key.clone();
    let owner_org = organization_of(&server, &owner).await;
    let (id, app_key) = app(&server, "Shop", json!({})).await;

    // Prices in dollars, as numbers or strings, read exactly; shown as numbers with their
    // integers beside them.
    let set = price(
        &server,
        &id,
        json!({"perRequest": "0.001", "perToken": 0.000002}),
    )
    .await;
    set.assert_status(StatusCode::OK);
    let m = &set.json();
    assert_eq!(m["enabled"], true);
    assert_eq!(m["pricing"]["perRequest_micros"], 1000);
    assert_eq!(m["pricing"]["perToken_micros"], 2);
    let text = String::from_utf8(set.body.to_vec()).unwrap();
    assert!(text.contains("\"perToken\":0.000002"), "{text}");
    assert!(text.contains("\"perRequest\":0.001"), "{text}");
    // More than 6 decimals, a negative price, a float in disguise: 400 naming the field.
    for bad in [
        json!({"perToken": 0.0000001}),
        json!({"perRequest": "-1"}),
        json!({"perRequest": "1e-3"}),
        json!({"perRequest": 1.5e-7}),
        json!({"perRequest": true}),
    ] {
        let e = price(&server, &id, bad.clone())
            .await
            .assert_error(400, "VALIDATION_ERROR");
        assert!(
            e["details"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .starts_with("pricing."),
            "{bad}: {e}"
        );
    }
    let shown = server
        .get(
            &format!("/api/v1/apps/{id}/monetization"),
            &[("x-api-key", &owner)],
        )
        .await;
    assert_eq!(shown.json()["pricing"]["perToken_micros"], 2);
    // The app's own key may not read or change its settings.
    server
        .get(
            &format!("/api/v1/apps/{id}/monetization"),
            &[("x-api-key", &app_key)],
        )
        .await
        .assert_error(403, "FORBIDDEN");

    let (key, org, user) = caller(&server, 1_000_000).await;
    // The platform price alone, for the same body.
    let plain = chat_through(&server, &key, None, "hello", &[]).await;
    let platform = cost(&plain);
    let tokens = total_tokens(&plain);
    let fee = 1000 + 2 * tokens;
    let start = balance(&server, org);
    let calls = 5;
    for _ in 0..calls {
        let r = chat_through(&server, &key, Some(&id), "hello", &[]).await;
        assert_eq!(cost(&r), platform + fee, "platform price plus the app's");
    }
    assert_eq!(balance(&server, org), start - calls * (platform + fee));
    // One ledger row per call, with the app's part named in it.
    let rows = server
        .running()
        .state()
        .store
        .read(|t| list_entries(t, org, 1, 100))
        .unwrap()
        .0;
    let through: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.metadata
                .iter()
                .any(|(k, v)| k == "through_app" && v == &id)
        })
        .collect();
    assert_eq!(through.len(), calls as usize);
    assert!(through.iter().all(|r| {
        r.kind == EntryKind::Debit
            && r.amount_micros == -(platform + fee)
            && r.metadata
                .contains(&("app_fee_micros".into(), fee.to_string()))
    }));

    // The owner's earnings: pending for the hold (7 days by default).
    let earnings = |k: String| {
        let server = &server;
        let id = id.clone();
        async move {
            server
                .get(&format!("/api/v1/apps/{id}/earnings"), &[("x-api-key", &k)])
                .await
        }
    };
    let e = earnings(owner.clone()).await;
    e.assert_status(StatusCode::OK);
    let e = e.json();
    assert_eq!(e["total_micros"], calls * fee);
    assert_eq!(e["pending_micros"], calls * fee);
    assert_eq!(e["available_micros"], 0);
    assert_eq!(e["history"][0]["requests"], calls);
    assert_eq!(e["history"][0]["amount_micros"], calls * fee);
    assert_eq!(e["history"][0]["date"], "2026-01-01");
    // The app's key reads its own app's earnings; the caller, another organization, gets 404.
    earnings(app_key.clone())
        .await
        .assert_status(StatusCode::OK);
    earnings(key.clone()).await.assert_error(404, "NOT_FOUND");

    // Nothing is withdrawable while pending.
    let withdraw = |body: Value, k: &str| {
        let server = &server;
        let path = format!("/api/v1/apps/{id}/earnings/withdraw");
        let k = k.to_string();
        async move { server.json_as(&k, Method::POST, &path, body).await }
    };
    withdraw(json!({"amount": "0.001"}), &owner)
        .await
        .assert_error(400, "VALIDATION_ERROR");
    server.clock.advance_millis(7 * DAY_MS + 1);
    let e = earnings(owner.clone()).await.json();
    assert_eq!(
        (e["pending_micros"].clone(), e["available_micros"].clone()),
        (json!(0), json!(calls * fee))
    );

    // Withdraw twice with one key: credited once.
    let before = balance(&server, owner_org);
    let amount = calls * fee - 1;
    let dollars = eliza_cloud::money::format_dollars(amount);
    for round in 0..2 {
        let r = withdraw(
            json!({"amount": dollars, "idempotency_key": "payout-1"}),
            &owner,
        )
        .await;
        r.assert_status(StatusCode::OK);
        let j = r.json();
        assert_eq!(j["withdrawn_micros"], amount);
        assert_eq!(j["replayed"], round == 1);
        assert_eq!(j["earnings"]["available_micros"], 1);
        assert_eq!(j["earnings"]["withdrawn_micros"], amount);
    }
    assert_eq!(
        balance(&server, owner_org),
        before + amount,
        "credited once"
    );
    withdraw(
        json!({"amount": "1", "idempotency_key": "payout-1"}),
        &owner,
    )
    .await
    .assert_error(409, "CONFLICT");
    withdraw(json!({"amount": "0.000002"}), &owner)
        .await
        .assert_error(400, "VALIDATION_ERROR");
    withdraw(json!({"amount": "0.000001"}), &app_key)
        .await
        .assert_error(403, "FORBIDDEN");
    withdraw(json!({"amount": "0.000001"}), &key)
        .await
        .assert_error(404, "NOT_FOUND");

    // The calls are the app's: in its analytics (what the end user paid) and users (the caller's
    // user), and in the caller's usage.
    let a = server
        .get(
            &format!("/api/v1/apps/{id}/analytics?period=2026-01"),
            &[("x-api-key", &owner)],
        )
        .await
        .json();
    assert_eq!(a["usage"]["totalRequests"], calls);
    assert_eq!(a["costs"]["total_micros"], calls * (platform + fee));
    assert_eq!(a["uniqueUsers"], 1);
    let u = server
        .get(
            &format!("/api/v1/apps/{id}/users"),
            &[("x-api-key", &owner)],
        )
        .await
        .json();
    assert_eq!(u["users"][0]["id"], user.as_str());
    assert_eq!(u["users"][0]["requestCount"], calls);
    let usage = server
        .get("/api/v1/usage?period=2026-01", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(usage["totals"]["requests"], calls + 1, "{usage}");
    check_clean(&server);
}

#[tokio::test]
async fn x_app_id_applies_the_apps_rules_on_top_of_the_callers() {
    let server = server().await;
    let owner = server.operator_key.clone();
    let (id, app_key) = app(
        &server,
        "Strict",
        json!({"permissions": ["embeddings"], "allowed_origins": ["https://*.strict.io"]}),
    )
    .await;
    let (open, _) = app(
        &server,
        "Open",
        json!({"allowed_origins": ["https://open.io"]}),
    )
    .await;
    let (key, org, _) = caller(&server, 100_000).await;

    // Unknown, malformed, inactive: 404.
    let unknown = Uuid::new_v4().to_string();
    for app in [unknown.as_str(), "not-an-id"] {
        chat_through(&server, &key, Some(app), "x", &[])
            .await
            .assert_error(404, "NOT_FOUND");
    }
    // The app's permissions: chat is not among Strict's.
    let e = chat_through(&server, &key, Some(&id), "x", &[])
        .await
        .assert_error(403, "FORBIDDEN");
    assert_eq!(e["details"]["required"], "chat:write");
    // Its allowed origins, for browser calls.
    chat_through(
        &server,
        &key,
        Some(&open),
        "x",
        &[("origin", "https://evil.io")],
    )
    .await
    .assert_error(403, "FORBIDDEN");
    let refused = chat_through(
        &server,
        &key,
        Some(&open),
        "x",
        &[("origin", "https://evil.io")],
    )
    .await;
    assert_eq!(
        refused.header("access-control-allow-origin"),
        None,
        "the page may not read it"
    );
    let ok = chat_through(
        &server,
        &key,
        Some(&open),
        "x",
        &[("origin", "https://open.io")],
    )
    .await;
    ok.assert_status(StatusCode::OK);
    assert_eq!(ok.header("access-control-allow-origin"), Some("*"));
    // An app key names only its own app.
    chat_through(&server, &app_key, Some(&open), "x", &[])
        .await
        .assert_error(403, "FORBIDDEN");
    // Inactive: 404.
    server
        .json_as(
            &owner,
            Method::PATCH,
            &format!("/api/v1/apps/{open}"),
            json!({"is_active": false}),
        )
        .await
        .assert_status(StatusCode::OK);
    chat_through(&server, &key, Some(&open), "x", &[])
        .await
        .assert_error(404, "NOT_FOUND");
    // Not monetized: the platform price only, and nothing earned.
    let (free, _) = app(&server, "Free", json!({})).await;
    let plain = cost(&chat_through(&server, &key, None, "same", &[]).await);
    assert_eq!(
        cost(&chat_through(&server, &key, Some(&free), "same", &[]).await),
        plain
    );
    balance(&server, org);
    let earned = server
        .running()
        .state()
        .store
        .read(|t| totals_of(t, free.parse().unwrap()))
        .unwrap();
    assert!(earned.is_none(), "{earned:?}");
    check_clean(&server);
}

/// One round of the money property: callers make calls through apps with random prices (some
/// of them test keys, which pay and earn nothing) and owners withdraw; at the end each app's
/// earnings equal the app fees its callers were debited, call by call.
async fn money_round(prices: Vec<(i64, i64)>, calls: Vec<(usize, usize, bool)>) {
    let server = server().await;
    let mut apps = Vec::new();
    for (i, (per_request, per_token)) in prices.iter().enumerate() {
        let (id, _) = app(&server, &format!("App {i}"), json!({})).await;
        price(
            &server,
            &id,
            json!({"perRequest": eliza_cloud::money::format_dollars(*per_request),
                   "perToken": eliza_cloud::money::format_dollars(*per_token)}),
        )
        .await
        .assert_status(StatusCode::OK);
        apps.push(id);
    }
    let mut callers = Vec::new();
    for _ in 0..2 {
        let (key, org, _) = caller(&server, 10_000_000).await;
        let test_key = server
            .json_as(
                &key,
                Method::POST,
                "/api/v1/api-keys",
                json!({"name": "t", "type": "test"}),
            )
            .await
            .json()["apiKey"]
            .as_str()
            .map(str::to_string);
        callers.push((key, org, test_key));
    }
    let mut paid = vec![0i64; apps.len()];
    for (n, (app_index, caller_index, test)) in calls.iter().enumerate() {
        let app = &apps[app_index % apps.len()];
        let (key, _, test_key) = &callers[caller_index % callers.len()];
        let use_test = *test && test_key.is_some();
        let key = if use_test {
            test_key.as_ref().unwrap()
        } else {
            key
        };
        let r = chat_through(&server, key, Some(app), &format!("call {n}"), &[]).await;
        let charged = cost(&r);
        if use_test {
            assert_eq!(charged, 0, "a test key pays nothing");
        } else {
            let (per_request, per_token) = prices[app_index % apps.len()];
            paid[app_index % apps.len()] += per_request + per_token * total_tokens(&r);
        }
    }
    let state = server.running().state();
    state.gateway.billing.flush().unwrap();
    for (app, fees) in apps.iter().zip(&paid) {
        let earned = state
            .store
            .read(|t| totals_of(t, app.parse().unwrap()))
            .unwrap()
            .map_or(0, |t| t.accrued_micros);
        assert_eq!(earned, *fees, "app {app}");
        // Each caller's debits name exactly the fees the app earned.
        let mut named = 0i64;
        for (_, org, _) in &callers {
            let rows = state
                .store
                .read(|t| list_entries(t, *org, 1, 1000))
                .unwrap()
                .0;
            for row in rows {
                if row
                    .metadata
                    .iter()
                    .any(|(k, v)| k == "through_app" && v == app)
                {
                    named += row
                        .metadata
                        .iter()
                        .find(|(k, _)| k == "app_fee_micros")
                        .map(|(_, v)| v.parse::<i64>().unwrap())
                        .unwrap();
                }
            }
        }
        assert_eq!(named, *fees);
    }
    check_clean(&server);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 6, ..Default::default() })]
    #[test]
    fn a_caller_pays_an_apps_price_exactly_when_its_owner_earns_it(
        prices in proptest::collection::vec((0i64..5000, 0i64..50), 1..3),
        calls in proptest::collection::vec((0usize..3, 0usize..2, proptest::bool::weighted(0.2)), 1..12),
    ) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(money_round(prices, calls));
    }
}
