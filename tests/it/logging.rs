//! Logs never hold a key, a cookie, a body, a signature or a payment: the real binary at trace
//! level, JSON format.

use bytes::Bytes;
use http::{Method, StatusCode};

use eliza_cloud::time::{Clock, SystemClock};
use serde_json::json;

use crate::signin::{EvmWallet, siwe_at};
use crate::support::{Binary, temp_data_dir};
use crate::wallet_auth::text;

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

    // A SIWE sign-in: its signature, the key it mints and the session token it sets.
    let wallet = EvmWallet::new();
    let nonce = client.get("/api/auth/siwe/nonce?chainId=8453", &[]).await;
    assert_eq!(nonce.status, StatusCode::OK);
    let now = SystemClock.now().millis();
    let message = siwe_at(now, &nonce.json(), &wallet).print_unchecked();
    let siwe_signature = wallet.sign(&message);
    let r = client
        .request(
            Method::POST,
            "/api/auth/siwe/verify",
            &[("content-type", "application/json")],
            Bytes::from(
                serde_json::to_vec(&json!({"message": message, "signature": siwe_signature}))
                    .unwrap(),
            ),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let minted = r.json()["apiKey"].as_str().unwrap().to_string();
    let session = r.header("set-cookie").unwrap().split(';').next().unwrap();
    let session_token = session.trim_start_matches("eliza_session=").to_string();
    // Wallet-signature headers, accepted and then replayed (refused).
    let wallet_text = text(now, "GET", "/api/v1/auth/whoami", "", b"");
    let wallet_signature = wallet.sign(&wallet_text);
    let address = wallet.address.to_checksum();
    let ts = now.to_string();
    let headers = [
        ("x-wallet-address", address.as_str()),
        ("x-timestamp", ts.as_str()),
        ("x-wallet-signature", wallet_signature.as_str()),
    ];
    assert_eq!(
        client.get("/api/v1/auth/whoami", &headers).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get("/api/v1/auth/whoami", &headers).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A payment header (x402 is off here: 503, but the header was still received).
    let payment = "eyJ4NDAyVmVyc2lvbiI6MSwicGF5bWVudFNlY3JldCI6InAyeW1lbnRTM2NyZXQifQ==";
    let r = client
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-payment", payment)],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);

    let (code, logs) = server.terminate();
    assert_eq!(code, 0);
    // The log is not empty: the requests and the failure reason are there.
    assert!(logs.contains("\"route\":\"auth_whoami\""), "{logs}");
    assert!(logs.contains("\"reason\":\"malformed_key\""), "{logs}");
    assert!(logs.contains("<redacted>"), "{logs}");
    assert!(logs.contains("\"reason\":\"replayed_signature\""), "{logs}");
    let signature_body = |hex: &str| hex.trim_start_matches("0x")[..64].to_string();
    for secret in [
        &key[8..],
        &wrong[8..],
        cookie_secret,
        body_secret,
        &minted[8..],
        &session_token,
        &signature_body(&siwe_signature),
        &signature_body(&wallet_signature),
        &payment[..40],
        "p2ymentS3cret",
    ] {
        assert!(!logs.contains(secret), "a secret reached the log:\n{logs}");
    }
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).expect("every log line is JSON");
    }
}
