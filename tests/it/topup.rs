//! x402 top-ups over HTTP (SPEC §7), with payer wallets generated in the test: the 402 of both
//! versions, a full top-up in each settlement mode (the facilitator is a real HTTP or HTTPS server
//! on 127.0.0.1 that checks what it receives), every rejection reason, a facilitator that fails,
//! replays (also after a restart and when racing), who is credited.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};

use eliza_cloud::crypto::eth::Address;
use eliza_cloud::crypto::to_hex;
use eliza_cloud::x402::payload::{Authorization, U256};
use eliza_cloud::x402::verify::transfer_digest;
use eliza_cloud::x402::{Settlement, X402Config, base_sepolia, builtin_networks};

use crate::signin::{EvmWallet, high_s_twin, siwe_sign_in};
use crate::support::{T0, TestResponse, TestServer, race};

pub const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const NOW_SECS: u64 = (T0.0 / 1000) as u64;
const TEN_DOLLARS: u128 = 10_000_000;

pub fn x402(settlement: Settlement) -> X402Config {
    X402Config {
        pay_to: Some(Address::parse_any_case(PAY_TO).unwrap()),
        settlement,
        ..X402Config::default()
    }
}

/// A payer's authorization, signed over the token domain; fields may be changed before signing.
pub struct Pay {
    key: SigningKey,
    from: Address,
    to: Address,
    pub value: u128,
    valid_after: u64,
    valid_before: u64,
    nonce: [u8; 32],
    network: eliza_cloud::x402::Network,
}

impl Pay {
    pub fn new(payer: &EvmWallet) -> Pay {
        Pay {
            key: payer.signing_key(),
            from: payer.address,
            to: Address::parse_any_case(PAY_TO).unwrap(),
            value: TEN_DOLLARS,
            valid_after: NOW_SECS - 60,
            valid_before: NOW_SECS + 300,
            nonce: rand::random(),
            network: base_sepolia(),
        }
    }

    /// An authorization valid around `now_secs` (for the real binary, on the system clock).
    pub fn at(payer: &EvmWallet, now_secs: u64) -> Pay {
        Pay {
            valid_after: now_secs - 60,
            valid_before: now_secs + 300,
            ..Pay::new(payer)
        }
    }

    fn authorization(&self) -> Authorization {
        Authorization {
            from: self.from,
            to: self.to,
            value: U256::from_u128(self.value),
            valid_after: U256::from_u128(u128::from(self.valid_after)),
            valid_before: U256::from_u128(u128::from(self.valid_before)),
            nonce: self.nonce,
        }
    }

    fn signature_bytes(&self) -> [u8; 65] {
        self.signature_by(&self.key)
    }

    fn signature_by(&self, key: &SigningKey) -> [u8; 65] {
        let digest = transfer_digest(&self.network, &self.authorization());
        let (sig, recid) = key.sign_prehash_recoverable(&digest);
        let mut rsv = [0u8; 65];
        rsv[..64].copy_from_slice(&sig.to_bytes());
        rsv[64] = 27 + recid.to_byte();
        rsv
    }

    fn payload(&self, signature: &[u8; 65]) -> Value {
        json!({
            "signature": format!("0x{}", to_hex(signature)),
            "authorization": {
                "from": self.from.to_checksum(),
                "to": self.to.to_checksum(),
                "value": self.value.to_string(),
                "validAfter": self.valid_after.to_string(),
                "validBefore": self.valid_before.to_string(),
                "nonce": format!("0x{}", to_hex(&self.nonce)),
            }
        })
    }

    /// The `X-PAYMENT` value (v1).
    pub fn v1(&self) -> String {
        self.v1_with(&self.signature_bytes(), "exact", "base-sepolia", 1)
    }

    fn v1_with(&self, signature: &[u8; 65], scheme: &str, network: &str, version: u64) -> String {
        let p = json!({"x402Version": version, "scheme": scheme, "network": network, "payload": self.payload(signature)});
        STANDARD.encode(p.to_string())
    }

    /// The `PAYMENT-SIGNATURE` value (v2).
    fn v2(&self) -> String {
        let p = json!({
            "x402Version": 2,
            "resource": {"url": "http://localhost:3000/api/v1/topup/10"},
            "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": self.value.to_string(),
                         "asset": base_sepolia().asset.to_checksum(), "payTo": PAY_TO, "maxTimeoutSeconds": 300,
                         "extra": {"name": "USDC", "version": "2"}},
            "payload": self.payload(&self.signature_bytes()),
        });
        STANDARD.encode(p.to_string())
    }
}

async fn topup(
    server: &TestServer,
    amount: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> TestResponse {
    // A client address of its own per call, so the per-address bucket does not interfere.
    let [a, b, c]: [u8; 3] = rand::random();
    let address = format!("10.{a}.{b}.{c}");
    let mut all = vec![("x-forwarded-for", address.as_str())];
    all.extend_from_slice(headers);
    server
        .request(
            Method::POST,
            &format!("/api/v1/topup/{amount}"),
            &all,
            body.to_string(),
        )
        .await
}

/// A server that settles by trusting the signature, reading client addresses from
/// `X-Forwarded-For` (so [`topup`] gives each call an address of its own).
async fn trusting_server() -> TestServer {
    TestServer::start_with(|c| {
        c.trust_proxy = true;
        c.x402 = x402(Settlement::TrustSignature);
    })
    .await
}

/// `POST /api/v1/topup/10` with an `X-PAYMENT` header and nothing else.
async fn pay_only(server: &TestServer, header: &str) -> TestResponse {
    server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-payment", header)],
            "",
        )
        .await
}

fn decode64(text: &str) -> Value {
    serde_json::from_slice(&STANDARD.decode(text).unwrap()).unwrap()
}

/// A 402 whose error is `reason`, with both versions.
fn assert_refused(r: &TestResponse, reason: &str) {
    r.assert_status(StatusCode::PAYMENT_REQUIRED);
    assert_eq!(r.json()["error"], reason);
    assert_eq!(
        decode64(r.header("payment-required").unwrap())["error"],
        reason
    );
}

pub async fn balance_of_wallet(server: &TestServer, wallet: &EvmWallet) -> (String, Value) {
    let r = siwe_sign_in(server, wallet).await.json();
    let key = r["apiKey"].as_str().unwrap().to_string();
    let credits = server
        .get("/api/v1/credits", &[("x-api-key", &key)])
        .await
        .json();
    (credits["balance"].as_str().unwrap().to_string(), r)
}

#[tokio::test]
async fn without_a_payment_the_answer_is_402_in_both_versions() {
    let plain = TestServer::start().await;
    plain
        .request(Method::POST, "/api/v1/topup/10", &[], "")
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");
    let unsettled = TestServer::start_with(|c| c.x402 = x402(Settlement::None)).await;
    unsettled
        .request(Method::POST, "/api/v1/topup/10", &[], "")
        .await
        .assert_error(503, "SERVICE_UNAVAILABLE");

    let server = trusting_server().await;
    let r = topup(&server, "10", &[], "").await;
    assert_refused(&r, "X-PAYMENT header is required");
    let v1 = r.json();
    assert_eq!(v1["x402Version"], 1);
    let a = &v1["accepts"][0];
    assert_eq!(a["scheme"], "exact");
    assert_eq!(a["network"], "base-sepolia");
    assert_eq!(a["maxAmountRequired"], "10000000");
    assert_eq!(a["resource"], "http://localhost:3000/api/v1/topup/10");
    assert_eq!(a["mimeType"], "application/json");
    assert_eq!(a["payTo"], PAY_TO);
    assert_eq!(a["maxTimeoutSeconds"], 300);
    assert_eq!(a["asset"], "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
    assert_eq!(a["extra"], json!({"name": "USDC", "version": "2"}));
    let v2 = decode64(r.header("payment-required").unwrap());
    assert_eq!(v2["x402Version"], 2);
    assert_eq!(
        v2["resource"]["url"],
        "http://localhost:3000/api/v1/topup/10"
    );
    let b = &v2["accepts"][0];
    assert_eq!(
        (b["network"].as_str(), b["amount"].as_str()),
        (Some("eip155:84532"), Some("10000000"))
    );
    assert_eq!(b["payTo"], PAY_TO);
    assert_eq!(b["extra"]["name"], "USDC");
    // 50 and 100 are offered too; other amounts are 400.
    let r = topup(&server, "50", &[], "").await;
    assert_eq!(r.json()["accepts"][0]["maxAmountRequired"], "50000000");
    for bad in ["7", "abc", "-10", "10.5"] {
        topup(&server, bad, &[], "")
            .await
            .assert_error(400, "VALIDATION_ERROR");
    }
    // Undecodable headers are 400; a decodable non-payment is 402 invalid_payload.
    topup(&server, "10", &[("x-payment", "%%%")], "")
        .await
        .assert_error(400, "INVALID_JSON");
    let not_json = STANDARD.encode("{nope");
    topup(&server, "10", &[("x-payment", &not_json)], "")
        .await
        .assert_error(400, "INVALID_JSON");
    let missing = STANDARD.encode(r#"{"x402Version":1,"scheme":"exact","network":"base-sepolia"}"#);
    assert_refused(
        &topup(&server, "10", &[("x-payment", &missing)], "").await,
        "invalid_payload",
    );
    // Without a credential a top-up draws on the client address's bucket: 10 per minute.
    for _ in 0..10 {
        let r = server
            .request(
                Method::POST,
                "/api/v1/topup/10",
                &[("x-forwarded-for", "10.1.1.1")],
                "",
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    }
    let r = server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-forwarded-for", "10.1.1.1")],
            "",
        )
        .await;
    r.assert_error(429, "RATE_LIMITED");
    // GET is not a top-up.
    let r = server.get("/api/v1/topup/10", &[]).await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn a_trusted_signature_credits_the_payer_once_also_after_restart_and_when_racing() {
    let mut server = trusting_server().await;
    let payer = EvmWallet::new();
    let pay = Pay::new(&payer);
    let header = pay.v1();
    let r = topup(&server, "10", &[("x-payment", &header)], "").await;
    r.assert_status(StatusCode::OK);
    let j = r.json();
    assert_eq!(j["success"], true);
    assert_eq!(j["amount"], "10.000000");
    assert_eq!(j["walletAddress"], payer.address.to_checksum());
    assert_eq!(
        j["newBalance"], "10.000000",
        "no sign-up bonus for an account made by a top-up"
    );
    assert_eq!(j["payment"]["method"], "x402");
    assert_eq!(j["payment"]["network"], "base-sepolia");
    assert_eq!(j["payment"]["payer"], payer.address.to_checksum());
    let tx = j["payment"]["transaction"].as_str().unwrap().to_string();
    assert_eq!(
        tx,
        format!(
            "0x{}",
            to_hex(&transfer_digest(&base_sepolia(), &pay.authorization()))
        )
    );
    let v1 = decode64(r.header("x-payment-response").unwrap());
    assert_eq!(
        v1,
        json!({"success": true, "transaction": tx, "network": "base-sepolia", "payer": payer.address.to_checksum()})
    );
    assert_eq!(
        decode64(r.header("payment-response").unwrap())["network"],
        "eip155:84532"
    );

    // A replay never credits again, also after a restart.
    assert_refused(
        &topup(&server, "10", &[("x-payment", &header)], "").await,
        "invalid_transaction_state",
    );
    server.restart().await;
    assert_refused(
        &topup(&server, "10", &[("x-payment", &header)], "").await,
        "invalid_transaction_state",
    );
    let (balance, signed_in) = balance_of_wallet(&server, &payer).await;
    assert_eq!(balance, "10.000000");
    assert_eq!(signed_in["isNewAccount"], false);
    assert_eq!(
        signed_in["initialCreditsGranted"], "0.000000",
        "the bonus was not owed later either"
    );

    // Six copies of one fresh authorization at once: one credit.
    let pay = Pay::new(&payer);
    let header = pay.v2();
    let headers = [("payment-signature", header.as_str())];
    let attempts = (0..6).map(|_| server.request(Method::POST, "/api/v1/topup/10", &headers, ""));
    let (counts, statuses) = race(attempts).await;
    assert_eq!(counts.get(&200), Some(&1), "{statuses:?}");
    assert_eq!(counts.get(&402), Some(&5), "{statuses:?}");
    assert_eq!(balance_of_wallet(&server, &payer).await.0, "20.000000");
}

#[tokio::test]
async fn every_verification_step_has_its_reason() {
    let server = trusting_server().await;
    let payer = EvmWallet::new();
    let good = Pay::new(&payer);
    let sig = good.signature_bytes();
    let mut cases: Vec<(&str, String)> = vec![
        (
            "invalid_x402_version",
            good.v1_with(&sig, "exact", "base-sepolia", 3),
        ),
        (
            "unsupported_scheme",
            good.v1_with(&sig, "upto", "base-sepolia", 1),
        ),
        ("invalid_network", good.v1_with(&sig, "exact", "base", 1)),
        (
            "invalid_exact_evm_payload_signature",
            good.v1_with(&high_s_twin(&sig), "exact", "base-sepolia", 1),
        ),
    ];
    let stranger = EvmWallet::new().signing_key();
    cases.push((
        "invalid_exact_evm_payload_signature",
        good.v1_with(&good.signature_by(&stranger), "exact", "base-sepolia", 1),
    ));
    let mut tweak = |label: &'static str, f: &dyn Fn(&mut Pay)| {
        let mut p = Pay::new(&payer);
        f(&mut p);
        cases.push((label, p.v1()));
    };
    tweak("invalid_exact_evm_payload_recipient_mismatch", &|p| {
        p.to = Address([7; 20])
    });
    tweak(
        "invalid_exact_evm_payload_authorization_valid_before",
        &|p| p.valid_before = NOW_SECS + 5,
    );
    tweak(
        "invalid_exact_evm_payload_authorization_valid_after",
        &|p| p.valid_after = NOW_SECS + 1,
    );
    tweak("invalid_exact_evm_payload_authorization_value", &|p| {
        p.value = TEN_DOLLARS - 1
    });
    tweak("invalid_exact_evm_payload_authorization_value", &|p| {
        p.value = TEN_DOLLARS * 5
    });
    for (reason, header) in &cases {
        let r = topup(&server, "10", &[("x-payment", header)], "").await;
        assert_refused(&r, reason);
    }
    // The edges that pass: validBefore exactly now + 6, validAfter exactly now.
    let mut edge = Pay::new(&payer);
    edge.valid_before = NOW_SECS + 6;
    edge.valid_after = NOW_SECS;
    let r = topup(&server, "10", &[("x-payment", &edge.v1())], "").await;
    r.assert_status(StatusCode::OK);
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics
            .contains(r#"method="x402",reason="invalid_exact_evm_payload_authorization_value"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("eliza_credits_topped_up_micros_total 10000000"));
}

#[tokio::test]
async fn who_is_credited_follows_the_order_of_the_spec() {
    let server = trusting_server().await;
    let payer = EvmWallet::new();
    // Another credential: the operator's organization.
    let r = topup(
        &server,
        "10",
        &[
            ("x-payment", &Pay::new(&payer).v1()),
            ("x-api-key", &server.operator_key),
        ],
        "",
    )
    .await;
    r.assert_status(StatusCode::OK);
    let me = server
        .get(
            "/api/v1/auth/whoami",
            &[("x-api-key", &server.operator_key)],
        )
        .await
        .json();
    assert_eq!(r.json()["organizationId"], me["organization"]["id"]);
    // A bad credential beside a good payment is a 401, never a payment for someone else.
    let r = topup(
        &server,
        "10",
        &[
            ("x-payment", &Pay::new(&payer).v1()),
            ("x-api-key", "ek_live_nope"),
        ],
        "",
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    // No credential, a walletAddress in the body: that wallet (a new account, no bonus).
    let beneficiary = EvmWallet::new();
    let body = json!({"walletAddress": beneficiary.address.to_lower_hex()}).to_string();
    let r = topup(
        &server,
        "50",
        &[("x-payment", &{
            let mut p = Pay::new(&payer);
            p.value = 50_000_000;
            p.v1()
        })],
        &body,
    )
    .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["walletAddress"], beneficiary.address.to_checksum());
    assert_eq!(
        balance_of_wallet(&server, &beneficiary).await.0,
        "50.000000"
    );
    topup(&server, "10", &[], r#"{"walletAddress": "0x12"}"#)
        .await
        .assert_error(400, "VALIDATION_ERROR");
    topup(&server, "10", &[], "not json")
        .await
        .assert_error(400, "INVALID_JSON");
    // Wallet-signature headers: that wallet, even with a walletAddress in the body.
    let agent = EvmWallet::new();
    let signed = signed_topup_headers(&agent, "10", &body);
    let wallet_headers = pairs(&signed);
    // The x402 retry: the request first goes without a payment and is answered 402 without
    // using the signature up; then the same request comes back with X-PAYMENT.
    let r = topup(&server, "10", &wallet_headers, &body).await;
    assert_refused(&r, "X-PAYMENT header is required");
    let payment = Pay::new(&payer).v1();
    let mut paid = wallet_headers.clone();
    paid.push(("x-payment", payment.as_str()));
    let r = topup(&server, "10", &paid, &body).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["walletAddress"], agent.address.to_checksum());
    // An account made on the top-up route gets no sign-up bonus (SPEC §3), whatever made it.
    assert_eq!(r.json()["newBalance"], "10.000000");
    // And now the signature is used: the same request again is a replay.
    topup(&server, "10", &paid, &body)
        .await
        .assert_error(401, "UNAUTHORIZED");
}

/// Signed wallet headers for `POST /api/v1/topup/{amount}` with `body`, at `T0`.
fn signed_topup_headers(wallet: &EvmWallet, amount: &str, body: &str) -> Vec<(String, String)> {
    let hash = {
        use sha2::Digest;
        to_hex(&sha2::Sha256::digest(format!("\n{body}").as_bytes()))
    };
    let ts = T0.0;
    let text = format!(
        "Eliza Cloud Authentication\nTimestamp: {ts}\nMethod: POST\nPath: /api/v1/topup/{amount}\nPayload-SHA256: {hash}"
    );
    vec![
        ("x-wallet-address".into(), wallet.address.to_checksum()),
        ("x-timestamp".into(), ts.to_string()),
        ("x-wallet-signature".into(), wallet.sign(&text)),
    ]
}

/// Borrowed pairs, as the request helpers take them.
fn pairs(owned: &[(String, String)]) -> Vec<(&str, &str)> {
    owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn a_new_wallet_whose_top_up_fails_keeps_its_sign_up_bonus() {
    let server = trusting_server().await;
    let payer = EvmWallet::new();
    // A wallet never seen, valid headers, a payment of the wrong value: 402, and no account is
    // left behind (an account made here would have no bonus, SPEC §3).
    let agent = EvmWallet::new();
    let mut paid = signed_topup_headers(&agent, "10", "");
    let mut wrong = Pay::new(&payer);
    wrong.value = 50_000_000;
    paid.push(("x-payment".into(), wrong.v1()));
    let r = topup(&server, "10", &pairs(&paid), "").await;
    assert_refused(&r, "invalid_exact_evm_payload_authorization_value");
    // Its bucket is the client address's (a new account's), and the answer says so.
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("9"));
    let (balance, signed_in) = balance_of_wallet(&server, &agent).await;
    assert_eq!(signed_in["isNewAccount"], true);
    assert_eq!(balance, "5.000000");
    // A second new wallet that pays: its account is made by the top-up, without a bonus, and
    // the headers' wallet is credited, not the payer.
    let other = EvmWallet::new();
    let mut paid = signed_topup_headers(&other, "10", "");
    paid.push(("x-payment".into(), Pay::new(&payer).v1()));
    let r = topup(&server, "10", &pairs(&paid), "").await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.json()["walletAddress"], other.address.to_checksum());
    assert_eq!(r.json()["newBalance"], "10.000000");
    let (balance, signed_in) = balance_of_wallet(&server, &other).await;
    assert_eq!(signed_in["isNewAccount"], false);
    assert_eq!(balance, "10.000000");
    // The signature was used by the paid request: the same headers again are a replay.
    topup(&server, "10", &pairs(&paid), "")
        .await
        .assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn a_mainnet_network_refuses_trust_signature_and_test_keys() {
    use eliza_cloud::cli::ServeArgs;
    use eliza_cloud::config::ServeConfig;
    let args = ServeArgs {
        x402_pay_to: Some(PAY_TO.into()),
        x402_network: Some("base".into()),
        x402_settlement: Some("trust-signature".into()),
        ..ServeArgs::default()
    };
    let error = ServeConfig::resolve(&args, &|_| None).unwrap_err();
    assert!(error.contains("test networks only"), "{error}");
    let args = ServeArgs {
        x402_network: Some("base-sepolia".into()),
        ..args
    };
    assert_eq!(
        ServeConfig::resolve(&args, &|_| None)
            .unwrap()
            .x402
            .settlement,
        Settlement::TrustSignature
    );
    let both = ServeArgs {
        x402_facilitator: Some("http://127.0.0.1:9".into()),
        ..args
    };
    assert!(ServeConfig::resolve(&both, &|_| None).is_err());

    // With a facilitator, mainnet works, but never through a test key.
    let facilitator = Facilitator::start(Behaviour::default(), None).await;
    let base = builtin_networks()
        .into_iter()
        .find(|n| n.name == "base")
        .unwrap();
    let server = TestServer::start_with(|c| {
        c.x402 = X402Config {
            network: base.clone(),
            ..x402(Settlement::Facilitator(facilitator.url()))
        };
    })
    .await;
    let (_, test_key, _) = server
        .create_key(json!({"name": "t", "type": "test"}))
        .await;
    let mut pay = Pay::new(&EvmWallet::new());
    pay.network = base;
    let header = pay.v1_with(&pay.signature_bytes(), "exact", "base", 1);
    let r = server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[
                ("x-payment", header.as_str()),
                ("x-api-key", test_key.as_str()),
            ],
            "",
        )
        .await;
    assert_refused(&r, "invalid_network");
    assert_eq!(facilitator.calls(), 0);
    let r = pay_only(&server, &header).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(facilitator.calls(), 2, "verify then settle");
}

#[derive(Clone, Default)]
struct Behaviour {
    verify_invalid: Option<&'static str>,
    settle_error: Option<&'static str>,
    /// The status a refusal is sent with (200 when unset; some facilitators send 400).
    refusal_status: Option<u16>,
    /// `/settle` waits for this hold's release before it answers.
    hold_settle: Option<Arc<Hold>>,
    /// `/settle` is read, then the connection is closed without an answer.
    hang_up_on_settle: bool,
}

/// A held `/settle`: `arrived` is notified when one comes in, and it answers once `release`d.
#[derive(Default)]
struct Hold {
    arrived: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

/// A stand-in facilitator: a real HTTP(S) server on 127.0.0.1 that checks each request's shape
/// and answers as told.
struct Facilitator {
    addr: SocketAddr,
    https: bool,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Facilitator {
    async fn start(behaviour: Behaviour, tls: Option<tokio_rustls::TlsAcceptor>) -> Facilitator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Facilitator::serve(listener, behaviour, tls)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        behaviour: Behaviour,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Facilitator {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let https = tls.is_some();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let behaviour = behaviour.clone();
                let log = log.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let behaviour = behaviour.clone();
                        let log = log.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body: Value = serde_json::from_slice(&body).unwrap();
                            log.lock().unwrap().push((path.clone(), body.clone()));
                            if path == "/settle"
                                && let Some(hold) = &behaviour.hold_settle
                            {
                                hold.arrived.notify_one();
                                hold.release.notified().await;
                            }
                            if path == "/settle" && behaviour.hang_up_on_settle {
                                return Err(std::io::Error::other("hang up without answering"));
                            }
                            // What a real facilitator needs: the payload as the client sent it and
                            // requirements of the same version.
                            let version = body["x402Version"].as_u64().unwrap();
                            assert_eq!(body["paymentPayload"]["x402Version"], version);
                            let req = &body["paymentRequirements"];
                            assert_eq!(req["payTo"], PAY_TO);
                            assert_eq!(req["scheme"], "exact");
                            let amount = if version == 1 {
                                &req["maxAmountRequired"]
                            } else {
                                &req["amount"]
                            };
                            assert_eq!(
                                amount,
                                &body["paymentPayload"]["payload"]["authorization"]["value"]
                            );
                            let refused = (path == "/verify" && behaviour.verify_invalid.is_some())
                                || (path == "/settle" && behaviour.settle_error.is_some());
                            let status = match behaviour.refusal_status {
                                Some(code) if refused => http::StatusCode::from_u16(code).unwrap(),
                                _ => http::StatusCode::OK,
                            };
                            let answer = match path.as_str() {
                                "/verify" => match behaviour.verify_invalid {
                                    Some(r) => json!({"isValid": false, "invalidReason": r}),
                                    None => {
                                        json!({"isValid": true, "payer": body["paymentPayload"]["payload"]["authorization"]["from"]})
                                    }
                                },
                                "/settle" => match behaviour.settle_error {
                                    Some(r) => {
                                        json!({"success": false, "errorReason": r, "transaction": "", "network": req["network"]})
                                    }
                                    None => {
                                        json!({"success": true, "transaction": format!("0x{}", "ab".repeat(32)), "network": req["network"]})
                                    }
                                },
                                _ => json!({"error": "unknown"}),
                            };
                            let mut response =
                                http::Response::new(Full::new(Bytes::from(answer.to_string())));
                            *response.status_mut() = status;
                            Ok::<_, std::io::Error>(response)
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Facilitator { addr, https, seen }
    }

    fn url(&self) -> String {
        // SocketAddr's Display brackets an IPv6 address, as a URL needs.
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.addr
        )
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

async fn facilitator_server(behaviour: Behaviour) -> (Facilitator, TestServer) {
    let facilitator = Facilitator::start(behaviour, None).await;
    let url = facilitator.url();
    let server = TestServer::start_with(|c| c.x402 = x402(Settlement::Facilitator(url))).await;
    (facilitator, server)
}

#[tokio::test]
async fn a_facilitator_verifies_and_settles_before_anything_is_credited() {
    let (facilitator, server) = facilitator_server(Behaviour::default()).await;
    let key = server.operator_key.clone();
    let pay = Pay::new(&EvmWallet::new());
    let r = server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[
                ("payment-signature", pay.v2().as_str()),
                ("x-api-key", key.as_str()),
            ],
            "",
        )
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(
        r.json()["payment"]["transaction"],
        format!("0x{}", "ab".repeat(32))
    );
    assert_eq!(r.json()["payment"]["network"], "eip155:84532");
    assert_eq!(facilitator.paths(), ["/verify", "/settle"]);
    let sent = facilitator.seen.lock().unwrap()[0].1.clone();
    assert_eq!(sent["paymentRequirements"]["network"], "eip155:84532");
    assert_eq!(
        sent["paymentPayload"],
        decode64(&pay.v2()),
        "the payload is forwarded as sent"
    );
    // A v1 payment gets v1 requirements.
    let pay = Pay::new(&EvmWallet::new());
    let r = server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[
                ("x-payment", pay.v1().as_str()),
                ("x-api-key", key.as_str()),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = facilitator.seen.lock().unwrap()[2].1.clone();
    assert_eq!(sent["paymentRequirements"]["network"], "base-sepolia");
    assert_eq!(
        sent["paymentRequirements"]["resource"],
        "http://localhost:3000/api/v1/topup/10"
    );
    let credits = server
        .get("/api/v1/credits", &[("x-api-key", &key)])
        .await
        .json();
    let topups = credits["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["description"] == "x402 top-up")
        .count();
    assert_eq!(topups, 2);

    // A payment that fails our own checks never reaches the facilitator.
    let mut late = Pay::new(&EvmWallet::new());
    late.valid_before = NOW_SECS;
    let calls = facilitator.calls();
    assert_refused(
        &server
            .request(
                Method::POST,
                "/api/v1/topup/10",
                &[("x-payment", late.v1().as_str())],
                "",
            )
            .await,
        "invalid_exact_evm_payload_authorization_valid_before",
    );
    assert_eq!(facilitator.calls(), calls);
}

#[tokio::test]
async fn a_facilitator_that_refuses_or_is_gone_credits_nothing() {
    for (behaviour, reason) in [
        (
            Behaviour {
                settle_error: Some("insufficient_funds"),
                ..Behaviour::default()
            },
            "insufficient_funds",
        ),
        (
            Behaviour {
                settle_error: Some("chain_on_fire"),
                ..Behaviour::default()
            },
            "unexpected_settle_error",
        ),
        (
            Behaviour {
                verify_invalid: Some("invalid_exact_evm_payload_signature"),
                ..Behaviour::default()
            },
            "invalid_exact_evm_payload_signature",
        ),
        // The same refusals sent with a 400 still carry their reason.
        (
            Behaviour {
                verify_invalid: Some("insufficient_funds"),
                refusal_status: Some(400),
                ..Behaviour::default()
            },
            "insufficient_funds",
        ),
        (
            Behaviour {
                settle_error: Some("invalid_exact_evm_payload_authorization_valid_before"),
                refusal_status: Some(400),
                ..Behaviour::default()
            },
            "invalid_exact_evm_payload_authorization_valid_before",
        ),
    ] {
        let (_facilitator, server) = facilitator_server(behaviour).await;
        let pay = Pay::new(&EvmWallet::new());
        let r = server
            .request(
                Method::POST,
                "/api/v1/topup/10",
                &[
                    ("x-payment", pay.v1().as_str()),
                    ("x-api-key", server.operator_key.as_str()),
                ],
                "",
            )
            .await;
        assert_refused(&r, reason);
        let credits = server
            .get("/api/v1/credits", &[("x-api-key", &server.operator_key)])
            .await
            .json();
        assert_eq!(credits["balance"], "0.000000", "{reason}: nothing credited");
    }
    // Nobody listening: 503, nothing credited, and the same payment works once it is back.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{addr}");
    let server = TestServer::start_with(|c| c.x402 = x402(Settlement::Facilitator(url))).await;
    let payer = EvmWallet::new();
    let header = Pay::new(&payer).v1();
    let r = pay_only(&server, &header).await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    let back = Facilitator::serve(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        Behaviour::default(),
        None,
    );
    let r = pay_only(&server, &header).await;
    r.assert_status(StatusCode::OK);
    assert_eq!(back.paths(), ["/verify", "/settle"]);
    assert_eq!(balance_of_wallet(&server, &payer).await.0, "10.000000");
}

#[tokio::test]
async fn a_facilitator_that_never_answers_times_out() {
    // Accepts connections and reads, but never writes a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let server = TestServer::start_with(|c| {
        c.x402 = X402Config {
            facilitator_timeout: std::time::Duration::from_millis(200),
            ..x402(Settlement::Facilitator(url))
        };
    })
    .await;
    let pay = Pay::new(&EvmWallet::new());
    let started = std::time::Instant::now();
    let r = server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-payment", pay.v1().as_str())],
            "",
        )
        .await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "bounded by the timeout"
    );
}

#[tokio::test]
async fn an_https_facilitator_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let facilitator = Facilitator::start(
        Behaviour::default(),
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await;
    let url = facilitator.url();
    assert!(url.starts_with("https://127.0.0.1:"));
    let ca_pem = ca_cert.pem().into_bytes();
    let trusted = TestServer::start_with(|c| {
        c.x402 = X402Config {
            facilitator_ca_pem: Some(ca_pem),
            ..x402(Settlement::Facilitator(url.clone()))
        };
    })
    .await;
    let pay = Pay::new(&EvmWallet::new());
    let r = trusted
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-payment", pay.v1().as_str())],
            "",
        )
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(facilitator.paths(), ["/verify", "/settle"]);
    // Without the CA the certificate is refused: 503, and the facilitator saw nothing new.
    let untrusting =
        TestServer::start_with(|c| c.x402 = x402(Settlement::Facilitator(url.clone()))).await;
    let pay = Pay::new(&EvmWallet::new());
    let r = untrusting
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-payment", pay.v1().as_str())],
            "",
        )
        .await;
    r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert_eq!(facilitator.calls(), 2);
}

#[tokio::test]
async fn an_authorization_credited_by_hand_is_never_settled_again() {
    use eliza_cloud::store::ledger::{EntryKind, NewEntry, post_entry};
    let server = TestServer::start_with(|c| c.x402 = x402(Settlement::TrustSignature)).await;
    let pay = Pay::new(&EvmWallet::new());
    // What `orgs grant-credits --idempotency-key <key>` writes after a lost settlement.
    let key = eliza_cloud::x402::verify::authorization_key(&base_sepolia(), &pay.authorization());
    let me = server
        .get(
            "/api/v1/auth/whoami",
            &[("x-api-key", &server.operator_key)],
        )
        .await
        .json();
    let org = uuid::Uuid::parse_str(me["organization"]["id"].as_str().unwrap()).unwrap();
    server
        .running()
        .state()
        .store
        .write_blocking(move |txn| {
            let entry = NewEntry {
                organization_id: org,
                amount_micros: 10_000_000,
                kind: EntryKind::Credit,
                description: "by hand".into(),
                idempotency_key: key,
                metadata: vec![],
            };
            post_entry(txn, entry, T0.0)
                .map_err(|e| eliza_cloud::store::StoreError::Corrupt(e.to_string()))
        })
        .await
        .unwrap();
    let r = server
        .request(
            Method::POST,
            "/api/v1/topup/10",
            &[("x-payment", pay.v1().as_str())],
            "",
        )
        .await;
    assert_refused(&r, "invalid_transaction_state");
    let credits = server
        .get("/api/v1/credits", &[("x-api-key", &server.operator_key)])
        .await
        .json();
    assert_eq!(credits["balance"], "10.000000");
}

#[tokio::test]
async fn a_facilitator_settles_one_of_six_racing_copies_and_an_ipv6_url_works() {
    // The stand-in on the IPv6 loopback when this machine has one, else on 127.0.0.1.
    let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("no IPv6 loopback here ({e}); the race runs over IPv4");
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
        }
    };
    let facilitator = Facilitator::serve(listener, Behaviour::default(), None);
    let url = facilitator.url();
    let server = TestServer::start_with(|c| {
        c.trust_proxy = true;
        c.x402 = x402(Settlement::Facilitator(url));
    })
    .await;
    let payer = EvmWallet::new();
    let header = Pay::new(&payer).v1();
    let headers = [("x-payment", header.as_str())];
    let attempts = (0..6).map(|_| topup(&server, "10", &headers, ""));
    let (counts, statuses) = race(attempts).await;
    assert_eq!(counts.get(&200), Some(&1), "{statuses:?}");
    let settlements = || {
        facilitator
            .paths()
            .iter()
            .filter(|p| *p == "/settle")
            .count()
    };
    assert_eq!(settlements(), 1, "one settlement for one authorization");
    assert_eq!(balance_of_wallet(&server, &payer).await.0, "10.000000");
    // And after a restart the settled authorization is still used.
    let mut server = server;
    server.restart().await;
    assert_refused(
        &topup(&server, "10", &headers, "").await,
        "invalid_transaction_state",
    );
    assert_eq!(settlements(), 1);
}

/// A POST whose client hangs up as soon as `hold` says `/settle` arrived; answers once the
/// server has dropped the request (its in-flight count is back to zero).
async fn topup_then_hang_up(server: &TestServer, header: &str, hold: &Hold) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request = format!(
        "POST /api/v1/topup/10 HTTP/1.1\r\nHost: x\r\nX-PAYMENT: {header}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    hold.arrived.notified().await;
    drop(stream);
    // hyper drops the request's future when it sees the hang-up; wait for that state.
    server
        .wait_for_in_flight("the server never dropped the request", |n| n == 0)
        .await;
}

#[tokio::test]
async fn a_client_that_hangs_up_during_settlement_is_still_credited_once() {
    let hold = Arc::new(Hold::default());
    let (facilitator, server) = facilitator_server(Behaviour {
        hold_settle: Some(hold.clone()),
        ..Behaviour::default()
    })
    .await;
    let wallet = EvmWallet::new();
    let pay = Pay::new(&wallet);
    let header = pay.v1();
    topup_then_hang_up(&server, &header, &hold).await;
    // The request is gone; the settlement is still journaled and in flight.
    let state = server.running().state().clone();
    assert_eq!(state.tasks.running(), 1);
    let journal = state
        .store
        .read(eliza_cloud::store::settlements::list_settlements)
        .unwrap();
    assert_eq!(journal.len(), 1, "journaled before /settle was sent");
    assert_eq!(journal[0].state.as_str(), "settling");
    hold.release.notify_one();
    state.tasks.idle().await;
    let journal = state
        .store
        .read(eliza_cloud::store::settlements::list_settlements)
        .unwrap();
    assert!(journal.is_empty(), "the credit removed the journal record");
    let (balance, _) = balance_of_wallet(&server, &wallet).await;
    assert_eq!(
        balance, "10.000000",
        "credited, once, without a sign-up bonus"
    );
    // The same authorization again is refused without reaching the facilitator.
    let r = pay_only(&server, &header).await;
    assert_refused(&r, "invalid_transaction_state");
    assert_eq!(facilitator.paths(), ["/verify", "/settle"]);
}

/// Starts the real binary against `facilitator`, sends one top-up paid with a fresh
/// authorization, waits until `/settle` arrived (the facilitator holds it), and kills the
/// server with SIGKILL. Answers the authorization's key and the killed server's stderr.
async fn kill_during_settlement(
    data: &std::path::Path,
    facilitator: &Facilitator,
    hold: &Hold,
) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let url = facilitator.url();
    let server = crate::support::Binary::serve(
        data,
        &[
            "--x402-pay-to",
            PAY_TO,
            "--x402-facilitator",
            &url,
            "--log-level",
            "warn",
        ],
        &[],
    );
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pay = Pay::at(&EvmWallet::new(), now_secs);
    let key = format!(
        "x402:base-sepolia:{}:0x{}",
        pay.from.to_lower_hex(),
        to_hex(&pay.nonce)
    );
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "POST /api/v1/topup/10 HTTP/1.1\r\nHost: x\r\nX-PAYMENT: {}\r\nContent-Length: 0\r\n\r\n",
        pay.v1()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    hold.arrived.notified().await;
    let stderr = server.kill();
    (key, stderr)
}

fn cli(args: &[&str], data: &std::path::Path) -> (i32, String, String) {
    let mut all = args.to_vec();
    let data = data.to_str().unwrap();
    all.extend(["--data", data]);
    crate::support::run_cli(&all, &[])
}

#[tokio::test]
async fn a_settlement_cut_by_a_crash_is_unknown_until_the_operator_resolves_it() {
    let hold = Arc::new(Hold::default());
    let facilitator = Facilitator::start(
        Behaviour {
            hold_settle: Some(hold.clone()),
            ..Behaviour::default()
        },
        None,
    )
    .await;
    let (_tmp, data) = crate::support::temp_data_dir();

    // Killed while /settle is held: the offline listing (run before any restart) says unknown.
    let (key, _) = kill_during_settlement(&data, &facilitator, &hold).await;
    let (code, out, err) = cli(&["payments", "pending"], &data);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with(&key)).expect(&out);
    assert!(line.contains("\tunknown\t"), "{line}");
    assert!(line.contains("10.000000"), "{line}");
    // check reports it and fails until it is resolved.
    let (code, out, _) = cli(&["check"], &data);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&key), "{out}");
    // Resolved as credited: once, under the authorization's idempotency key.
    let (code, out, err) = cli(&["payments", "resolve", &key, "credit"], &data);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("credited 10.000000"), "{out}");
    let (code, _, err) = cli(&["payments", "resolve", &key, "credit"], &data);
    assert_eq!(code, 1, "a resolved settlement cannot be resolved again");
    assert!(err.contains("no unresolved settlement"), "{err}");
    let (code, out, _) = cli(&["orgs", "list"], &data);
    assert_eq!(code, 0);
    let payer_org = out
        .lines()
        .find(|l| l.contains(&key.split(':').nth(2).unwrap().to_string()))
        .expect(&out);
    assert!(payer_org.contains("\t10.000000\t"), "{payer_org}");
    let (code, out, _) = cli(&["check"], &data);
    assert_eq!(code, 0, "{out}");

    // Killed again; this time a server starts on the data first: it marks the interrupted
    // settlement unknown and says so at error level.
    let (key, _) = kill_during_settlement(&data, &facilitator, &hold).await;
    let restarted = crate::support::Binary::serve(&data, &["--log-level", "warn"], &[]);
    let (_, stderr) = restarted.terminate();
    let logged = stderr
        .lines()
        .find(|l| l.contains(&key))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(logged.contains("ERROR"), "{logged}");
    assert!(logged.contains("unknown"), "{logged}");
    let (_, out, _) = cli(&["payments", "pending"], &data);
    let line = out.lines().find(|l| l.starts_with(&key)).expect(&out);
    assert!(line.contains("interrupted"), "{line}");
    let (code, out, _) = cli(&["payments", "resolve", &key, "refuse"], &data);
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = cli(&["payments", "pending"], &data);
    assert!(!out.contains(&key), "{out}");
    let (code, out, _) = cli(&["check"], &data);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_settle_that_got_no_answer_is_unknown_not_forgotten() {
    let (facilitator, server) = facilitator_server(Behaviour {
        hang_up_on_settle: true,
        ..Behaviour::default()
    })
    .await;
    let pay = Pay::new(&EvmWallet::new());
    let r = pay_only(&server, &pay.v1()).await;
    let error = r.assert_error(503, "SERVICE_UNAVAILABLE");
    assert!(
        error["message"].as_str().unwrap().contains("unknown"),
        "{error}"
    );
    assert_eq!(facilitator.paths(), ["/verify", "/settle"]);
    // The request reached the facilitator and may have moved the money: kept for the operator.
    let state = server.running().state().clone();
    let journal = state
        .store
        .read(eliza_cloud::store::settlements::list_settlements)
        .unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].state.as_str(), "unknown");
    assert!(
        journal[0].reason.as_deref().unwrap().contains("no answer"),
        "{:?}",
        journal[0].reason
    );
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("eliza_x402_settlements_unknown 1"),
        "{metrics}"
    );
    // The same authorization again is refused, not settled a second time.
    let r = pay_only(&server, &pay.v1()).await;
    assert_refused(&r, "invalid_transaction_state");
    assert_eq!(facilitator.calls(), 2);
}
