//! Per-request wallet signatures (SPEC §6) over HTTP, with wallets generated in the test: GET with
//! and without a query, POST with a body, every tampering, the window on a fixed clock, replays
//! (also after a restart and when racing), the four-line text, wrong signature types, malformed
//! headers, the shared account and bonus.

use ed25519_dalek::Signer;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use eliza_cloud::crypto::solana::{SolanaAddress, base58_encode};
use eliza_cloud::crypto::to_hex;

use crate::signin::{EvmWallet, siwe_sign_in};
use crate::support::{T0, TestResponse, TestServer, race};

/// The five-line text, written out here rather than built by the server's own function.
pub fn text(ts: i64, method: &str, path: &str, canonical_query: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical_query.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    let hash = to_hex(&hasher.finalize());
    format!(
        "Eliza Cloud Authentication\nTimestamp: {ts}\nMethod: {method}\nPath: {path}\nPayload-SHA256: {hash}"
    )
}

fn four_lines(ts: i64, method: &str, path: &str) -> String {
    format!("Eliza Cloud Authentication\nTimestamp: {ts}\nMethod: {method}\nPath: {path}")
}

struct Signed {
    address: String,
    ts: String,
    signature: String,
}

impl Signed {
    fn evm(wallet: &EvmWallet, ts: i64, text: &str) -> Signed {
        Signed {
            address: wallet.address.to_checksum(),
            ts: ts.to_string(),
            signature: wallet.sign(text),
        }
    }

    fn headers(&self) -> Vec<(&str, &str)> {
        vec![
            ("x-wallet-address", self.address.as_str()),
            ("x-timestamp", self.ts.as_str()),
            ("x-wallet-signature", self.signature.as_str()),
        ]
    }
}

async fn send(
    server: &TestServer,
    method: Method,
    uri: &str,
    signed: &Signed,
    body: &[u8],
) -> TestResponse {
    server
        .request(method, uri, &signed.headers(), body.to_vec())
        .await
}

async fn whoami(server: &TestServer, wallet: &EvmWallet, ts: i64) -> TestResponse {
    let signed = Signed::evm(wallet, ts, &text(ts, "GET", "/api/v1/auth/whoami", "", b""));
    send(server, Method::GET, "/api/v1/auth/whoami", &signed, b"").await
}

fn ok(r: &TestResponse) -> Value {
    r.assert_status(StatusCode::OK);
    r.json()
}

#[tokio::test]
async fn an_evm_wallet_authenticates_gets_its_account_and_one_bonus() {
    let server = TestServer::start().await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    let me = ok(&whoami(&server, &wallet, t).await);
    assert_eq!(me["authMethod"], "wallet_signature");
    assert_eq!(me["user"]["wallet_address"], wallet.address.to_checksum());
    assert!(me.get("apiKey").is_none() || me["apiKey"].is_null());
    let r = whoami(&server, &wallet, t + 1).await;
    assert_eq!(ok(&r)["organization"]["id"], me["organization"]["id"]);
    // One bucket per user, at the free plan's 60 per minute.
    assert_eq!(r.header("x-ratelimit-limit"), Some("60"));

    // GET with a query: the order of the parameters and their encoding do not matter.
    let canonical = "limit=5&page=1";
    let signed = Signed::evm(
        &wallet,
        t + 2,
        &text(t + 2, "GET", "/api/v1/credits", canonical, b""),
    );
    let credits = ok(&send(
        &server,
        Method::GET,
        "/api/v1/credits?page=1&limit=5",
        &signed,
        b"",
    )
    .await);
    assert_eq!(credits["balance"], "5.000000");
    assert_eq!(credits["total"], 1, "one bonus row after three requests");
    assert_eq!(credits["limit"], 5);
    let signed = Signed::evm(
        &wallet,
        t + 3,
        &text(t + 3, "GET", "/api/v1/credits", canonical, b""),
    );
    ok(&send(
        &server,
        Method::GET,
        "/api/v1/credits?limit=%35&page=1",
        &signed,
        b"",
    )
    .await);

    // A tampered query, another path, another method: 401.
    let signed = Signed::evm(
        &wallet,
        t + 4,
        &text(t + 4, "GET", "/api/v1/credits", canonical, b""),
    );
    for (method, uri) in [
        (Method::GET, "/api/v1/credits?page=2&limit=5"),
        (Method::GET, "/api/v1/credits?page=1&limit=5&x=1"),
        (Method::GET, "/api/v1/credits"),
        (Method::GET, "/api/v1/dashboard?page=1&limit=5"),
        (Method::HEAD, "/api/v1/credits?page=1&limit=5"),
    ] {
        let r = send(&server, method.clone(), uri, &signed, b"").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
}

#[tokio::test]
async fn a_post_body_is_covered_by_the_signature() {
    let server = TestServer::start().await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    let body = serde_json::to_vec(&json!({"name": "agent key"})).unwrap();
    let signed = Signed::evm(&wallet, t, &text(t, "POST", "/api/v1/api-keys", "", &body));
    // A tampered body first: refused, and it does not use the signature up.
    let tampered = serde_json::to_vec(&json!({"name": "agent kez"})).unwrap();
    let r = send(
        &server,
        Method::POST,
        "/api/v1/api-keys",
        &signed,
        &tampered,
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    let r = send(&server, Method::PATCH, "/api/v1/api-keys", &signed, &body).await;
    assert_eq!(
        r.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "routing comes first"
    );
    let r = send(
        &server,
        Method::POST,
        "/api/v1/api-keys?x=1",
        &signed,
        &body,
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    let r = send(&server, Method::POST, "/api/v1/api-keys", &signed, &body).await;
    r.assert_status(StatusCode::CREATED);
    let key = r.json()["plainKey"].as_str().unwrap().to_string();
    // Wallets have full access: the key it made works, in the wallet's organization.
    let me = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &key)])
        .await
        .json();
    assert_eq!(me["user"]["wallet_address"], wallet.address.to_checksum());
    // A body too large is 413 before any signature work.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let r = send(&server, Method::POST, "/api/v1/api-keys", &signed, &big).await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn the_timestamp_window_is_five_minutes_either_way() {
    let server = TestServer::start().await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    for (ts, expected) in [
        (t - 300_000, 200),
        (t - 300_001, 401),
        (t + 300_000, 200),
        (t + 300_001, 401),
    ] {
        assert_eq!(
            whoami(&server, &wallet, ts).await.status.as_u16(),
            expected,
            "{}",
            ts - t
        );
    }
    // Moving the clock moves the window.
    server.clock.advance_millis(1);
    assert_eq!(
        whoami(&server, &wallet, t - 299_999).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_signed_request_is_accepted_once_also_after_a_restart_and_when_racing() {
    let mut server = TestServer::start().await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    let signed = Signed::evm(&wallet, t, &text(t, "GET", "/api/v1/auth/whoami", "", b""));
    ok(&send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"").await);
    let r = send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"").await;
    r.assert_error(401, "UNAUTHORIZED");
    server.restart().await;
    let r = send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"").await;
    r.assert_error(401, "UNAUTHORIZED");
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(r#"method="wallet_signature",reason="replayed_signature"} 1"#),
        "{metrics}"
    );

    // Eight copies of one fresh signed request at once: exactly one passes.
    let signed = Signed::evm(
        &wallet,
        t + 7,
        &text(t + 7, "GET", "/api/v1/auth/whoami", "", b""),
    );
    let attempts = (0..8).map(|_| send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b""));
    let (counts, statuses) = race(attempts).await;
    assert_eq!(counts.get(&200), Some(&1), "{statuses:?}");
}

#[tokio::test]
async fn the_four_line_text_only_without_query_or_body() {
    let server = TestServer::start().await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    let signed = Signed::evm(&wallet, t, &four_lines(t, "GET", "/api/v1/auth/whoami"));
    ok(&send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"").await);
    let signed = Signed::evm(&wallet, t + 1, &four_lines(t + 1, "GET", "/api/v1/credits"));
    let r = send(&server, Method::GET, "/api/v1/credits?page=1", &signed, b"").await;
    r.assert_error(401, "UNAUTHORIZED");
    let signed = Signed::evm(
        &wallet,
        t + 2,
        &four_lines(t + 2, "POST", "/api/v1/api-keys"),
    );
    let body = br#"{"name":"x"}"#;
    let r = send(&server, Method::POST, "/api/v1/api-keys", &signed, body).await;
    r.assert_error(401, "UNAUTHORIZED");
    // A bodiless POST may use it: regenerate a key the wallet made with the five-line text.
    let signed = Signed::evm(
        &wallet,
        t + 3,
        &text(t + 3, "POST", "/api/v1/api-keys", "", body),
    );
    let r = send(&server, Method::POST, "/api/v1/api-keys", &signed, body).await;
    let id = r.json()["apiKey"]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/api-keys/{id}/regenerate");
    let signed = Signed::evm(&wallet, t + 4, &four_lines(t + 4, "POST", &path));
    let r = send(&server, Method::POST, &path, &signed, b"").await;
    r.assert_status(StatusCode::OK);
}

#[tokio::test]
async fn solana_wallets_sign_in_base58_or_hex() {
    let server = TestServer::start().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let address = SolanaAddress(key.verifying_key().to_bytes()).to_base58();
    let t = T0.millis();
    let body = br#"{"name":"solana agent"}"#;
    let message = text(t, "POST", "/api/v1/api-keys", "", body);
    let signature = key.sign(message.as_bytes()).to_bytes();
    let signed = Signed {
        address: address.clone(),
        ts: t.to_string(),
        signature: base58_encode(&signature),
    };
    let r = send(&server, Method::POST, "/api/v1/api-keys", &signed, body).await;
    r.assert_status(StatusCode::CREATED);
    let message = text(t + 1, "GET", "/api/v1/auth/whoami", "", b"");
    let hex = format!("0x{}", to_hex(&key.sign(message.as_bytes()).to_bytes()));
    let signed = Signed {
        address: address.clone(),
        ts: (t + 1).to_string(),
        signature: hex,
    };
    let me = ok(&send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"").await);
    assert_eq!(me["user"]["solana_address"], address.as_str());
    assert_eq!(me["authMethod"], "wallet_signature");

    // Wrong signature types: an EVM signature for a Solana address and the reverse.
    let evm = EvmWallet::new();
    let message = text(t + 2, "GET", "/api/v1/auth/whoami", "", b"");
    let signed = Signed {
        address: address.clone(),
        ts: (t + 2).to_string(),
        signature: evm.sign(&message),
    };
    send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"")
        .await
        .assert_error(401, "UNAUTHORIZED");
    let signed = Signed {
        address: evm.address.to_checksum(),
        ts: (t + 2).to_string(),
        signature: base58_encode(&key.sign(message.as_bytes()).to_bytes()),
    };
    send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"")
        .await
        .assert_error(401, "UNAUTHORIZED");
    // Another Solana key's signature.
    let other = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let signed = Signed {
        address,
        ts: (t + 2).to_string(),
        signature: base58_encode(&other.sign(message.as_bytes()).to_bytes()),
    };
    send(&server, Method::GET, "/api/v1/auth/whoami", &signed, b"")
        .await
        .assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn malformed_and_partial_headers_are_401_and_never_fall_back() {
    let server = TestServer::start().await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    let good = Signed::evm(&wallet, t, &text(t, "GET", "/api/v1/auth/whoami", "", b""));
    let key = server.operator_key.clone();
    let high_s = format!(
        "0x{}",
        to_hex(&crate::signin::high_s_twin(&wallet.sign_raw(
            text(t, "GET", "/api/v1/auth/whoami", "", b"").as_bytes()
        )))
    );
    let lower = wallet.address.to_lower_hex();
    let bad_checksum = {
        let mut s = wallet.address.to_checksum().into_bytes();
        let i = s
            .iter()
            .skip(2)
            .position(|c| c.is_ascii_alphabetic())
            .unwrap()
            + 2;
        s[i] ^= 0x20;
        String::from_utf8(s).unwrap()
    };
    let ts = t.to_string();
    let stranger = EvmWallet::new().sign("x");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("address only", vec![("x-wallet-address", &good.address)]),
        ("timestamp only", vec![("x-timestamp", &ts)]),
        (
            "two of three",
            vec![
                ("x-wallet-address", &good.address),
                ("x-wallet-signature", &good.signature),
            ],
        ),
        (
            "timestamp with a sign",
            vec![
                ("x-wallet-address", &good.address),
                ("x-timestamp", "+1767225600000"),
                ("x-wallet-signature", &good.signature),
            ],
        ),
        (
            "timestamp in seconds",
            vec![
                ("x-wallet-address", &good.address),
                ("x-timestamp", "1767225600"),
                ("x-wallet-signature", &good.signature),
            ],
        ),
        (
            "timestamp too long",
            vec![
                ("x-wallet-address", &good.address),
                ("x-timestamp", "99999999999999999999"),
                ("x-wallet-signature", &good.signature),
            ],
        ),
        (
            "address not hex",
            vec![
                ("x-wallet-address", "0xzz"),
                ("x-timestamp", &ts),
                ("x-wallet-signature", &good.signature),
            ],
        ),
        (
            "address bad checksum",
            vec![
                ("x-wallet-address", &bad_checksum),
                ("x-timestamp", &ts),
                ("x-wallet-signature", &good.signature),
            ],
        ),
        (
            "signature short",
            vec![
                ("x-wallet-address", &good.address),
                ("x-timestamp", &ts),
                ("x-wallet-signature", "0x1234"),
            ],
        ),
        (
            "signature high S",
            vec![
                ("x-wallet-address", &good.address),
                ("x-timestamp", &ts),
                ("x-wallet-signature", &high_s),
            ],
        ),
        (
            "signature of another wallet",
            vec![
                ("x-wallet-address", &lower),
                ("x-timestamp", &ts),
                ("x-wallet-signature", &stranger),
            ],
        ),
        (
            "repeated header",
            vec![
                ("x-wallet-address", &good.address),
                ("x-wallet-address", &good.address),
                ("x-timestamp", &ts),
                ("x-wallet-signature", &good.signature),
            ],
        ),
    ];
    for (label, mut headers) in cases {
        // A valid API key beside them changes nothing: no fall-through.
        headers.push(("x-api-key", &key));
        let r = server.get("/api/v1/auth/whoami", &headers).await;
        let e = r.assert_error(401, "UNAUTHORIZED");
        assert_eq!(e["message"], "Invalid or missing authentication", "{label}");
        assert!(r.header("www-authenticate").is_some(), "{label}");
    }
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    for (reason, count) in [
        ("partial_wallet_headers", 3),
        ("malformed_timestamp", 2),
        ("timestamp_outside_window", 1),
        ("malformed_wallet_address", 1),
        ("wallet_address_checksum", 1),
        ("malformed_wallet_signature", 1),
        ("signature_invalid", 2),
        ("malformed_wallet_header", 1),
    ] {
        let line = format!(r#"method="wallet_signature",reason="{reason}"}} {count}"#);
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
    // The good headers, with the address in lowercase, still work: none of the above used them.
    let lower_signed = Signed {
        address: lower,
        ..good
    };
    ok(&send(
        &server,
        Method::GET,
        "/api/v1/auth/whoami",
        &lower_signed,
        b"",
    )
    .await);
}

#[tokio::test]
async fn wallet_headers_and_sign_in_share_one_account_and_one_bonus() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let t = T0.millis();
    // Concurrent first requests (distinct timestamps) of a new wallet: one account, one bonus.
    let signed: Vec<Signed> = (0..6)
        .map(|i| {
            Signed::evm(
                &wallet,
                t + i,
                &text(t + i, "GET", "/api/v1/auth/whoami", "", b""),
            )
        })
        .collect();
    let attempts = signed
        .iter()
        .map(|s| send(&server, Method::GET, "/api/v1/auth/whoami", s, b""));
    let answers: Vec<Value> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(ok)
        .collect();
    let orgs: std::collections::HashSet<_> = answers
        .iter()
        .map(|j| j["organization"]["id"].clone())
        .collect();
    assert_eq!(orgs.len(), 1);
    // SIWE finds the same account and grants nothing more.
    let r = siwe_sign_in(&server, &wallet).await.json();
    assert_eq!(r["isNewAccount"], false);
    assert_eq!(r["initialCreditsGranted"], "0.000000");
    assert_eq!(r["organization"]["id"], answers[0]["organization"]["id"]);
    let credits = server
        .get(
            "/api/v1/credits",
            &[("x-api-key", r["apiKey"].as_str().unwrap())],
        )
        .await
        .json();
    assert_eq!(
        (credits["balance"].as_str(), credits["total"].as_u64()),
        (Some("5.000000"), Some(1))
    );
}

#[tokio::test]
async fn new_wallet_accounts_are_limited_per_client_address() {
    let server = TestServer::start().await;
    let t = T0.millis();
    // Ten new wallets from one address get their accounts; the eleventh waits.
    for i in 0..10 {
        ok(&whoami(&server, &EvmWallet::new(), t + i).await);
    }
    let r = whoami(&server, &EvmWallet::new(), t + 10).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    // A wallet that has its account is not held back by that bucket.
    let known = EvmWallet::new();
    server.clock.advance_millis(6_000);
    ok(&whoami(&server, &known, t + 6_000).await);
    for i in 0..5 {
        ok(&whoami(&server, &known, t + 6_001 + i).await);
    }
}

/// Replay marks stored durably (one per accepted wallet-signed request).
fn stored_marks(server: &TestServer) -> u64 {
    use redb::ReadableTableMetadata;
    server
        .running()
        .state()
        .store
        .read(|txn| {
            Ok::<_, eliza_cloud::store::StoreError>(
                txn.open_table(eliza_cloud::store::tables::WALLET_REPLAY)
                    .unwrap()
                    .len()
                    .unwrap(),
            )
        })
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_fresh_signatures_is_refused_before_any_durable_write() {
    let server = TestServer::start().await;
    let wallet = EvmWallet::new();
    // The free plan's bucket holds 60; every request carries a fresh, valid signature.
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..80 {
        let r = whoami(&server, &wallet, T0.0 + i).await;
        *statuses.entry(r.status.as_u16()).or_insert(0u64) += 1;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.json()["error"]["type"], "rate_limit_error");
        }
    }
    assert_eq!(statuses[&200], 60, "{statuses:?}");
    assert_eq!(statuses[&429], 20, "{statuses:?}");
    assert_eq!(
        stored_marks(&server),
        60,
        "a refused request wrote a replay mark (an fsync) before its bucket said no"
    );
}
