//! Logs never hold a key, a cookie or a body: the real binary at trace level, JSON format.

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::support::{Binary, temp_data_dir};

#[tokio::test]
async fn a_request_with_a_key_a_cookie_and_a_body_logs_none_of_them() {
    let key = eliza_cloud::auth::api_key::generate_key(eliza_cloud::store::keys::KeyType::Live);
    let key = key.expose().to_string();
    let (_tmp, data) = temp_data_dir();
    let server = Binary::serve(
        &data,
        &["--log-format", "json", "--log-level", "trace"],
        &[("ELIZA_CLOUD_BOOTSTRAP_KEY", &key)],
    );
    let client = server.client();
    let cookie_secret = "c00kieS3cretValue0123456789";
    let body_secret = "b0dyS3cretValue-do-not-log";
    let cookie = format!("eliza_session={cookie_secret}");
    let bearer = format!("Bearer {key}");
    let r = client
        .request(
            Method::GET,
            "/api/v1/auth/whoami",
            &[("authorization", &bearer), ("cookie", &cookie)],
            Bytes::from(format!("{{\"secret\":\"{body_secret}\"}}")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A failing credential and a credential pasted into a path are not logged either.
    let mut wrong = key.clone();
    wrong.replace_range(30..31, if &key[30..31] == "x" { "y" } else { "x" });
    let r = client
        .request(
            Method::POST,
            "/healthz",
            &[("x-api-key", &wrong), ("cookie", &cookie)],
            Bytes::from(body_secret),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = client
        .get("/api/v1/auth/whoami", &[("x-api-key", &wrong)])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = client
        .get(&format!("/api/v1/keys/{key}"), &[("x-api-key", &key)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let (code, logs) = server.terminate();
    assert_eq!(code, 0);
    // The log is not empty: the requests and the failure reason are there.
    assert!(logs.contains("\"route\":\"auth_whoami\""), "{logs}");
    assert!(logs.contains("\"reason\":\"malformed_key\""), "{logs}");
    assert!(logs.contains("<redacted>"), "{logs}");
    for secret in [&key[8..], &wrong[8..], cookie_secret, body_secret] {
        assert!(!logs.contains(secret), "a secret reached the log:\n{logs}");
    }
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).expect("every log line is JSON");
    }
}
