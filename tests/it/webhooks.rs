//! Apps' webhooks over real HTTP (SPEC §10): a real receiver on 127.0.0.1 (`receiver.rs`) that
//! answers as scripted, a real DNS server (`dns.rs`) for names, and the manual clock for the
//! retry schedule. Signatures are checked here with the Standard Webhooks algorithm and the
//! `X-Eliza-Signature` rule written out from their specifications, not with the server's code.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::dns::Dns;
use crate::gateway::{gateway_config, grant, organization_of};
use crate::receiver::{Answer, Delivery, Receiver};
use crate::support::{T0, TestResponse, TestServer};
use crate::upstream::{Script, Upstream};

async fn server(dns: Option<&Dns>, allow_private: bool) -> TestServer {
    let gateway = gateway_config(None);
    let resolver = dns.map(|d| d.addr);
    TestServer::start_with(move |c| {
        c.gateway = gateway;
        c.apps.allow_private_webhooks = allow_private;
        c.apps.dns_resolver = resolver;
    })
    .await
}

/// An app with a webhook on `url` for `events`; answers (app id, app key, secret).
async fn app_with_hook(server: &TestServer, url: &str, events: Value) -> (String, String, String) {
    let r = server
        .json_as(
            &server.operator_key,
            Method::POST,
            "/api/v1/apps",
            json!({"name": format!("Hooked {}", uuid::Uuid::new_v4()), "app_url": "https://a.example",
                   "webhookUrl": url, "events": events}),
        )
        .await;
    r.assert_status(StatusCode::OK);
    let j = r.json();
    assert_eq!(j["app"]["webhook"]["url"], url);
    assert!(!String::from_utf8_lossy(&r.body).contains("\"secret\""));
    (
        j["app"]["id"].as_str().unwrap().to_string(),
        j["apiKey"].as_str().unwrap().to_string(),
        j["webhookSecret"].as_str().unwrap().to_string(),
    )
}

async fn post(server: &TestServer, path: &str, body: Value) -> TestResponse {
    server
        .json_as(&server.operator_key, Method::POST, path, body)
        .await
}

async fn test_event(server: &TestServer, app: &str) -> String {
    let r = post(
        server,
        &format!("/api/v1/apps/{app}/webhook/test"),
        json!({}),
    )
    .await;
    r.assert_status(StatusCode::ACCEPTED);
    r.json()["deliveryId"].as_str().unwrap().to_string()
}

async fn deliveries(server: &TestServer, app: &str) -> Value {
    let r = server
        .get(
            &format!("/api/v1/apps/{app}/webhook/deliveries"),
            &[("x-api-key", &server.operator_key)],
        )
        .await;
    r.assert_status(StatusCode::OK);
    r.json()
}

/// The delivery's row once its attempts reached `attempts` (the sender writes it just after
/// the receiver answered).
async fn delivery_after(server: &TestServer, app: &str, id: &str, attempts: u64) -> Value {
    for _ in 0..500 {
        let list = deliveries(server, app).await;
        if let Some(d) = list["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id && d["attempts"].as_u64() >= Some(attempts))
        {
            return d.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("delivery {id} never reached {attempts} attempts");
}

type HmacSha256 = Hmac<Sha256>;

/// Standard Webhooks, from its specification: HMAC-SHA256 keyed with the base64-decoded part of
/// the `whsec_` secret over `id.timestamp.body`, compared against each `v1,` entry.
fn standard_verifies(secret: &str, d: &Delivery) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = HmacSha256::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            d.header("webhook-id"),
            d.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&d.body);
    let want = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    d.header("webhook-signature").split(' ').any(|s| s == want)
}

/// The hosted cloud's rule: hex HMAC-SHA256 keyed with the secret string over `ts.body`.
fn eliza_verifies(secret: &str, d: &Delivery) -> bool {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.", d.header("x-eliza-timestamp")).as_bytes());
    mac.update(&d.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    d.header("x-eliza-signature") == format!("sha256={hex}")
}

#[test]
fn the_test_checker_agrees_with_the_specifications_vector() {
    // standard-webhooks' own example (FIELD-NOTES): the checker above is right before it judges.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "webhook-id",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".parse().unwrap(),
    );
    headers.insert("webhook-timestamp", "1649367553".parse().unwrap());
    headers.insert(
        "webhook-signature",
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
            .parse()
            .unwrap(),
    );
    let d = Delivery {
        headers,
        body: bytes::Bytes::from_static(br#"{"email":"test@example.com","username":"test_user"}"#),
    };
    assert!(standard_verifies(
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        &d
    ));
}

#[tokio::test]
async fn deliveries_are_signed_for_both_kinds_of_receivers_and_rotation_signs_with_both() {
    let receiver = Receiver::start(vec![]).await;
    let server = server(None, true).await;
    let (app, app_key, secret) = app_with_hook(&server, &receiver.url(), json!([])).await;
    assert!(secret.starts_with("whsec_"));
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);

    let id = test_event(&server, &app).await;
    let d = receiver.next(10).await;
    assert_eq!(d.header("webhook-id"), id);
    assert_eq!(d.header("x-eliza-delivery"), id);
    assert_eq!(d.header("x-eliza-event"), "webhook.test");
    assert_eq!(d.header("content-type"), "application/json");
    assert_eq!(
        d.header("webhook-timestamp"),
        (T0.millis() / 1000).to_string()
    );
    assert_eq!(d.header("x-eliza-timestamp"), "2026-01-01T00:00:00.000Z");
    assert!(standard_verifies(&secret, &d), "{:?}", d.headers);
    assert!(eliza_verifies(&secret, &d));
    let body = d.json();
    assert_eq!(body["event"], "webhook.test");
    assert_eq!(body["data"]["appId"], app.as_str());
    assert!(body["timestamp"].is_string());
    let row = delivery_after(&server, &app, &id, 1).await;
    assert_eq!(row["status"], "delivered");
    assert_eq!(row["lastResponseStatus"], 200);
    assert_eq!(row["nextAttemptAt"], Value::Null);

    // The settings show no secret, and the app's own key may not read them.
    let shown = server
        .get(
            &format!("/api/v1/apps/{app}/webhook"),
            &[("x-api-key", &server.operator_key)],
        )
        .await;
    assert!(!String::from_utf8_lossy(&shown.body).contains(&secret[6..]));
    assert_eq!(shown.json()["webhook"]["status"], "active");
    server
        .get(
            &format!("/api/v1/apps/{app}/webhook"),
            &[("x-api-key", &app_key)],
        )
        .await
        .assert_error(403, "FORBIDDEN");

    // Rotation: both secrets sign for 24 hours; X-Eliza-Signature uses the new one.
    let r = post(
        &server,
        &format!("/api/v1/apps/{app}/webhook/rotate-secret"),
        json!({}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    let fresh = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(fresh, secret);
    server.clock.advance_millis(60_000);
    test_event(&server, &app).await;
    let d = receiver.next(10).await;
    assert_eq!(d.header("webhook-signature").split(' ').count(), 2);
    assert!(standard_verifies(&secret, &d) && standard_verifies(&fresh, &d));
    assert!(eliza_verifies(&fresh, &d) && !eliza_verifies(&secret, &d));
    server.clock.advance_millis(24 * 3600 * 1000);
    test_event(&server, &app).await;
    let d = receiver.next(10).await;
    assert_eq!(d.header("webhook-signature").split(' ').count(), 1);
    assert!(standard_verifies(&fresh, &d) && !standard_verifies(&secret, &d));

    // Redeliver: the same id once more, signed with the current secret, counted as an attempt.
    let r = post(
        &server,
        &format!("/api/v1/apps/{app}/webhook/deliveries/{id}/redeliver"),
        json!({}),
    )
    .await;
    r.assert_status(StatusCode::ACCEPTED);
    let d = receiver.next(10).await;
    assert_eq!(d.header("webhook-id"), id);
    assert!(standard_verifies(&fresh, &d));
    let row = delivery_after(&server, &app, &id, 2).await;
    assert_eq!(row["status"], "delivered");
    let r = post(
        &server,
        &format!(
            "/api/v1/apps/{app}/webhook/deliveries/msg_00000000000000000000000000000000/redeliver"
        ),
        json!({}),
    )
    .await;
    r.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_delivery_on_the_schedule_and_a_restart_keeps_it() {
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(500)]).await;
    let mut server = server(None, true).await;
    let (app, _, _) = app_with_hook(&server, &receiver.url(), json!([])).await;
    let id = test_event(&server, &app).await;
    let first = receiver.next(10).await;
    assert_eq!(first.header("webhook-id"), id);
    let row = delivery_after(&server, &app, &id, 1).await;
    assert_eq!(row["status"], "pending");
    assert_eq!(row["lastResponseStatus"], 500);
    let due = |row: &Value| {
        eliza_cloud::time::parse_rfc3339(row["nextAttemptAt"].as_str().unwrap())
            .unwrap()
            .millis()
    };
    // 5 s ± 10 %.
    let wait = due(&row) - server.clock.now_millis();
    assert!((4500..=5500).contains(&wait), "{wait}");
    // Nothing before its time.
    receiver.nothing_for(400).await;

    // A restart in between: the delivery waits in the outbox and goes after it.
    server.restart().await;
    server.clock.advance_millis(5500);
    let second = receiver.next(10).await;
    assert_eq!(
        second.header("webhook-id"),
        id,
        "the same id on every attempt"
    );
    assert_eq!(
        second.header("webhook-timestamp"),
        ((T0.millis() + 5500) / 1000).to_string(),
        "the time of this attempt"
    );
    assert_eq!(first.body, second.body, "the same body");
    let row = delivery_after(&server, &app, &id, 2).await;
    let wait = due(&row) - server.clock.now_millis();
    assert!((270_000..=330_000).contains(&wait), "5 min ± 10 %: {wait}");

    server.clock.advance_millis(330_000);
    let third = receiver.next(10).await;
    assert_eq!(third.header("webhook-id"), id);
    let row = delivery_after(&server, &app, &id, 3).await;
    assert_eq!(row["status"], "delivered");
    assert_eq!(row["nextAttemptAt"], Value::Null);
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_at_ten_seconds_and_retried() {
    let receiver = Receiver::start(vec![Answer::Hang]).await;
    let server = server(None, true).await;
    let (app, _, _) = app_with_hook(&server, &receiver.url(), json!([])).await;
    let id = test_event(&server, &app).await;
    receiver.next(10).await;
    let started = std::time::Instant::now();
    receiver.was_cut(20).await;
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(9500) && held < Duration::from_secs(15),
        "{held:?}"
    );
    let row = delivery_after(&server, &app, &id, 1).await;
    assert_eq!(row["status"], "pending");
    assert!(row["lastError"].as_str().unwrap().contains("10 s"), "{row}");
    server.clock.advance_millis(5500);
    assert_eq!(receiver.next(10).await.header("webhook-id"), id);
    assert_eq!(
        delivery_after(&server, &app, &id, 2).await["status"],
        "delivered"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_410_disables_the_webhook() {
    let receiver = Receiver::start(vec![Answer::RetryAfter(429, "7"), Answer::Status(410)]).await;
    let server = server(None, true).await;
    let (app, _, _) = app_with_hook(&server, &receiver.url(), json!([])).await;
    let id = test_event(&server, &app).await;
    receiver.next(10).await;
    let row = delivery_after(&server, &app, &id, 1).await;
    let due = eliza_cloud::time::parse_rfc3339(row["nextAttemptAt"].as_str().unwrap()).unwrap();
    assert_eq!(
        due.millis() - server.clock.now_millis(),
        7000,
        "Retry-After, exactly"
    );
    server.clock.advance_millis(7000);
    receiver.next(10).await;
    let row = delivery_after(&server, &app, &id, 2).await;
    assert_eq!(row["status"], "failed");
    let settings = server
        .get(
            &format!("/api/v1/apps/{app}/webhook"),
            &[("x-api-key", &server.operator_key)],
        )
        .await
        .json();
    assert_eq!(settings["webhook"]["status"], "disabled");
    post(
        &server,
        &format!("/api/v1/apps/{app}/webhook/test"),
        json!({}),
    )
    .await
    .assert_error(409, "CONFLICT");
    // Saving the settings again enables it (and keeps the secret: none is shown).
    let r = post(
        &server,
        &format!("/api/v1/apps/{app}/webhook"),
        json!({"url": receiver.url(), "events": ["user.created"]}),
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["secret"], Value::Null);
    assert_eq!(r.json()["webhook"]["status"], "active");
    test_event(&server, &app).await;
    receiver.next(10).await;
}

#[tokio::test]
async fn private_targets_are_refused_without_the_flag_also_behind_a_name() {
    let dns = Dns::start().await;
    dns.add("loopback.test.", "127.0.0.1".parse().unwrap())
        .await;
    dns.add("metadata.test.", "169.254.169.254".parse().unwrap())
        .await;
    dns.add("rebind.test.", "203.0.113.7".parse().unwrap())
        .await;
    let server = server(Some(&dns), false).await;
    let r = server
        .json_as(
            &server.operator_key,
            Method::POST,
            "/api/v1/apps",
            json!({"name": "Target", "app_url": "https://a.example"}),
        )
        .await;
    let app = r.json()["app"]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/apps/{app}/webhook");
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://0.0.0.0/hook",
        "http://loopback.test/hook",
        "https://metadata.test/hook",
    ] {
        let e = post(&server, &path, json!({"url": url, "events": []}))
            .await
            .assert_error(400, "VALIDATION_ERROR");
        assert!(
            e["details"]["url"]
                .as_str()
                .unwrap()
                .contains("resolves to"),
            "{url}: {e}"
        );
    }
    for url in [
        "ftp://x.test/",
        "http://nowhere.test/hook",
        "https://u:p@x.test/",
    ] {
        post(&server, &path, json!({"url": url, "events": []}))
            .await
            .assert_error(400, "VALIDATION_ERROR");
    }
    // A name that looked public when saved and resolves privately at delivery time: refused then
    // too, before any connection.
    post(
        &server,
        &path,
        json!({"url": "http://rebind.test:9/hook", "events": []}),
    )
    .await
    .assert_status(StatusCode::OK);
    dns.add("rebind.test.", "127.0.0.1".parse().unwrap()).await;
    let id = test_event(&server, &app).await;
    let row = delivery_after(&server, &app, &id, 1).await;
    assert_eq!(row["status"], "pending");
    assert!(
        row["lastError"].as_str().unwrap().contains("127.0.0.1"),
        "{row}"
    );
    assert_eq!(row["lastResponseStatus"], Value::Null);
}

#[tokio::test]
async fn app_events_are_queued_with_the_usage_that_caused_them() {
    let receiver = Receiver::start(vec![]).await;
    let upstream = Upstream::start(Script {
        fail: Some(500),
        ..Script::default()
    })
    .await;
    let gateway = gateway_config(Some(&upstream));
    let server = TestServer::start_with(move |c| {
        c.gateway = gateway;
        c.apps.allow_private_webhooks = true;
    })
    .await;
    grant(
        &server,
        organization_of(&server, &server.operator_key).await,
        10_000_000,
    );
    let (app, app_key, _) = app_with_hook(
        &server,
        &receiver.url(),
        json!(["user.created", "usage.threshold", "error.occurred"]),
    )
    .await;
    post(
        &server,
        &format!("/api/v1/apps/{app}/webhook"),
        json!({"url": receiver.url(), "events": ["user.created", "usage.threshold", "error.occurred"],
               "usageThresholds": [3, 2]}),
    )
    .await
    .assert_status(StatusCode::OK);
    let call = |user: &'static str, model: &'static str| {
        let server = &server;
        let key = app_key.clone();
        async move {
            server
                .request(
                    Method::POST,
                    "/api/v1/chat/completions",
                    &[("x-api-key", &key), ("x-app-user-id", user)],
                    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                )
                .await
        }
    };
    let flush = || {
        let state = server.running().state();
        state.usage.flush(&state.store).unwrap();
    };
    call("alice", "dev-chat")
        .await
        .assert_status(StatusCode::OK);
    flush();
    let d = receiver.next(10).await;
    assert_eq!(d.header("x-eliza-event"), "user.created");
    assert_eq!(d.json()["data"], json!({"appId": app, "userId": "alice"}));
    // alice again: not new. Two more calls reach the thresholds 2 and 3, once each.
    call("alice", "dev-chat")
        .await
        .assert_status(StatusCode::OK);
    call("alice", "dev-chat")
        .await
        .assert_status(StatusCode::OK);
    flush();
    let mut thresholds = Vec::new();
    for _ in 0..2 {
        let d = receiver.next(10).await;
        assert_eq!(d.header("x-eliza-event"), "usage.threshold");
        thresholds.push(d.json()["data"].clone());
    }
    thresholds.sort_by_key(|t| t["threshold"].as_str().unwrap().to_string());
    assert_eq!(
        thresholds,
        vec![
            json!({"appId": app, "threshold": "2", "currentUsage": 3}),
            json!({"appId": app, "threshold": "3", "currentUsage": 3}),
        ]
    );
    // A failed call through the app: error.occurred with its request id, status and code.
    let failed = call("alice", "up-chat").await;
    assert_eq!(failed.status.as_u16(), 502);
    let request_id = failed.header("x-request-id").unwrap().to_string();
    call("alice", "dev-chat")
        .await
        .assert_status(StatusCode::OK);
    flush();
    let d = receiver.next(10).await;
    assert_eq!(d.header("x-eliza-event"), "error.occurred");
    assert_eq!(
        d.json()["data"],
        json!({"appId": app, "requestId": request_id, "status": 502, "code": "UPSTREAM_ERROR"})
    );
    // Nothing more: thresholds fire once a month, alice is known.
    receiver.nothing_for(600).await;
    // Deleting the app removes its webhook and deliveries; check stays clean.
    let r = server
        .request(
            Method::DELETE,
            &format!("/api/v1/apps/{app}"),
            &[("x-api-key", &server.operator_key)],
            "",
        )
        .await;
    r.assert_status(StatusCode::OK);
    crate::monetization::check_clean(&server);
}
