//! Sign-In With Ethereum and With Solana over HTTP, with wallets generated in the test: full
//! sign-ins, every rejection, races on one nonce and on one new wallet, cookies, CSRF, logout.

use http::{Method, StatusCode};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};

use eliza_cloud::auth::siwe::{MessageTime, SiweMessage};
use eliza_cloud::auth::siws::SiwsMessage;
use eliza_cloud::crypto::eth::{Address, eip191_hash};
use eliza_cloud::crypto::solana::{SolanaAddress, base58_encode};
use eliza_cloud::crypto::to_hex;
use eliza_cloud::time::Timestamp;

use crate::support::{TestResponse, TestServer, fresh_address};

pub struct EvmWallet {
    key: SigningKey,
    pub address: Address,
}

impl EvmWallet {
    pub fn new() -> EvmWallet {
        let key = SigningKey::from_slice(&rand::random::<[u8; 32]>()).unwrap();
        let address = Address::of_key(key.verifying_key());
        EvmWallet { key, address }
    }

    pub fn signing_key(&self) -> SigningKey {
        self.key.clone()
    }

    /// `r ‖ s ‖ v` (v = 27/28), low-S as k256 signs.
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 65] {
        let (sig, recid) = self.key.sign_prehash_recoverable(&eip191_hash(message));
        let mut rsv = [0u8; 65];
        rsv[..64].copy_from_slice(&sig.to_bytes());
        rsv[64] = 27 + recid.to_byte();
        rsv
    }

    pub fn sign(&self, message: &str) -> String {
        format!("0x{}", to_hex(&self.sign_raw(message.as_bytes())))
    }
}

/// The malleated twin: s' = n - s, v flipped. Recovers the same key under plain ecrecover.
pub fn high_s_twin(rsv: &[u8; 65]) -> [u8; 65] {
    const N: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];
    let mut out = *rsv;
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(N[i]) - i16::from(rsv[32 + i]) - borrow;
        borrow = i16::from(d < 0);
        out[32 + i] = (d + 256 * borrow) as u8;
    }
    out[64] = if rsv[64] == 27 { 28 } else { 27 };
    out
}

fn time(t: Timestamp) -> MessageTime {
    MessageTime {
        text: t.to_rfc3339(),
        at: t,
    }
}

/// The message a wallet would build from a nonce answer.
fn siwe_for(server: &TestServer, nonce: &Value, wallet: &EvmWallet) -> SiweMessage {
    siwe_at(server.clock.now_millis(), nonce, wallet)
}

/// The message a wallet would build from a nonce answer at `now_millis`.
pub fn siwe_at(now_millis: i64, nonce: &Value, wallet: &EvmWallet) -> SiweMessage {
    SiweMessage {
        scheme: None,
        domain: nonce["domain"].as_str().unwrap().into(),
        address: wallet.address,
        statement: Some(nonce["statement"].as_str().unwrap().into()),
        uri: nonce["uri"].as_str().unwrap().into(),
        version: "1".into(),
        chain_id: nonce["chainId"].as_u64().unwrap(),
        nonce: nonce["nonce"].as_str().unwrap().into(),
        issued_at: time(Timestamp(now_millis)),
        expiration_time: Some(time(Timestamp(now_millis + 600_000))),
        not_before: None,
        request_id: None,
        resources: vec![],
    }
}

pub async fn nonce(server: &TestServer, path: &str) -> Value {
    let r = server
        .get(path, &[("x-forwarded-for", &fresh_address())])
        .await;
    r.assert_status(StatusCode::OK);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    r.json()
}

async fn verify(server: &TestServer, path: &str, message: &str, signature: &str) -> TestResponse {
    server
        .request(
            Method::POST,
            path,
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", &fresh_address()),
            ],
            serde_json::to_vec(&json!({"message": message, "signature": signature})).unwrap(),
        )
        .await
}

/// A full SIWE sign-in; answers the verify response.
pub async fn siwe_sign_in(server: &TestServer, wallet: &EvmWallet) -> TestResponse {
    let n = nonce(server, "/api/auth/siwe/nonce?chainId=8453").await;
    let text = siwe_for(server, &n, wallet).print_unchecked();
    verify(server, "/api/auth/siwe/verify", &text, &wallet.sign(&text)).await
}

pub fn session_cookie(r: &TestResponse) -> String {
    let set = r.header("set-cookie").expect("a session cookie is set");
    set.split(';').next().unwrap().to_string()
}

async fn balance(server: &TestServer, key: &str) -> String {
    let r = server.get("/api/v1/credits", &[("x-api-key", key)]).await;
    r.json()["balance"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn siwe_sign_in_creates_the_account_once_and_rotates_its_key() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let r = siwe_sign_in(&server, &wallet).await;
    r.assert_status(StatusCode::OK);
    let j = r.json();
    let checksum = wallet.address.to_checksum();
    let lower = wallet.address.to_lower_hex();
    assert_eq!(j["address"], checksum.as_str());
    assert_eq!(j["isNewAccount"], true);
    assert_eq!(j["initialCreditsGranted"], "5.000000");
    assert_eq!(j["user"]["wallet_address"], checksum.as_str());
    assert_eq!(j["organization"]["slug"], format!("wallet-{lower}"));
    let name = j["organization"]["name"].as_str().unwrap();
    assert_eq!(name, format!("Wallet {}...{}", &lower[..6], &lower[38..]));
    let first_key = j["apiKey"].as_str().unwrap().to_string();
    eliza_cloud::auth::api_key::parse_key(&first_key).unwrap();
    let cookie_header = r.header("set-cookie").unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(cookie_header.contains(flag), "{cookie_header}");
    }
    assert!(
        !cookie_header.contains("Secure"),
        "http public URL: no Secure flag"
    );
    let r = server
        .get("/api/v1/auth/whoami", &[("x-api-key", &first_key)])
        .await;
    assert_eq!(
        r.json()["user"]["wallet_address"],
        wallet.address.to_checksum(),
        "stored lowercase, shown EIP-55"
    );
    assert_eq!(balance(&server, &first_key).await, "5.000000");

    // The session cookie authenticates too.
    let cookie = session_cookie(&siwe_sign_in(&server, &wallet).await);
    let r = server
        .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["authMethod"], "session");

    // Signing in again: same account, no second bonus, the earlier sign-in keys deleted.
    let r = siwe_sign_in(&server, &wallet).await;
    let j = r.json();
    assert_eq!(j["isNewAccount"], false);
    assert_eq!(j["initialCreditsGranted"], "0.000000");
    let latest = j["apiKey"].as_str().unwrap().to_string();
    assert_eq!(
        server.whoami_status(&first_key).await,
        401,
        "rotated out at once"
    );
    assert_eq!(server.whoami_status(&latest).await, 200);
    assert_eq!(balance(&server, &latest).await, "5.000000");
    let keys = server
        .get("/api/v1/api-keys", &[("x-api-key", &latest)])
        .await
        .json();
    // Deleted, not switched off (SPEC §5.1): an agent signing in on every start keeps one key.
    assert_eq!(keys["total"], 1, "{keys}");
    assert_eq!(keys["keys"][0]["name"], "SIWE sign-in");
    assert_eq!(keys["keys"][0]["is_active"], true);
}

#[tokio::test]
async fn the_verify_routes_refuse_other_content_types_and_foreign_origins() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let n = nonce(&server, "/api/auth/siwe/nonce").await;
    let text = siwe_for(&server, &n, &wallet).print_unchecked();
    let body =
        serde_json::to_vec(&json!({"message": text, "signature": wallet.sign(&text)})).unwrap();
    for path in ["/api/auth/siwe/verify", "/api/auth/siws/verify"] {
        // A cross-site form can send these types, never application/json: 415.
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
        ] {
            let mut headers = vec![("x-forwarded-for", "10.9.0.1")];
            if let Some(t) = content_type {
                headers.push(("content-type", t));
            }
            let r = server
                .request(Method::POST, path, &headers, body.clone())
                .await;
            let error = r.assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
            assert_eq!(error["type"], "invalid_request_error", "{content_type:?}");
        }
        // JSON from another origin: 403.
        let r = server
            .request(
                Method::POST,
                path,
                &[
                    ("content-type", "application/json"),
                    ("origin", "https://evil.example"),
                    ("x-forwarded-for", "10.9.0.2"),
                ],
                body.clone(),
            )
            .await;
        assert_eq!(r.assert_error(403, "FORBIDDEN")["type"], "permission_error");
    }
    // From our own origin (a page served by us), with its charset parameter, it signs in; the
    // refused attempts did not use the nonce up.
    let r = server
        .request(
            Method::POST,
            "/api/auth/siwe/verify",
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("origin", "http://localhost:3000"),
                ("x-forwarded-for", "10.9.0.3"),
            ],
            body,
        )
        .await;
    r.assert_status(StatusCode::OK);
}

/// Resident set size of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_nonce_requests_from_distinct_addresses_locks_nobody_out() {
    use futures_util::StreamExt;
    const REQUESTS: u32 = 200_000;
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let state = server.running().state().clone();
    let before = rss_kib();
    let client = std::sync::Arc::new(crate::support::HttpClient::new(server.addr()));
    // Each request from an address of its own: IPv4 and IPv6 /64s (the old pool fell to ~1,700
    // buckets, or one IPv6 /48).
    let answered = futures_util::stream::iter(0..REQUESTS)
        .map(|i| {
            let client = client.clone();
            async move {
                let address = if i % 2 == 0 {
                    let [_, b, c, d] = i.to_be_bytes();
                    format!("10.{b}.{c}.{d}")
                } else {
                    format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff)
                };
                client
                    .get(
                        "/api/auth/siwe/nonce",
                        &[("x-forwarded-for", address.as_str())],
                    )
                    .await
                    .status
            }
        })
        .buffer_unordered(64)
        .fold(0u32, |ok, status| async move {
            assert_eq!(status, StatusCode::OK);
            ok + 1
        })
        .await;
    assert_eq!(answered, REQUESTS);
    // A sign-in from a fresh address still works.
    let r = siwe_sign_in(&server, &EvmWallet::new()).await;
    r.assert_status(StatusCode::OK);
    // The documented bounds: issuing stores nothing; the used set holds the one sign-in; the
    // buckets are capped by --max-buckets (default 200,000).
    assert_eq!(state.nonces.used_count(), 1);
    assert!(state.limiter.bucket_count() <= state.config.max_buckets);
    let after = rss_kib();
    eprintln!(
        "nonce flood: {REQUESTS} answered; RSS {before} KiB before, {after} KiB after; {} buckets",
        state.limiter.bucket_count()
    );
}

#[tokio::test]
async fn siwe_rejections_are_401_and_never_use_the_nonce() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let n = nonce(&server, "/api/auth/siwe/nonce?chainId=1").await;
    let good = siwe_for(&server, &n, &wallet);
    let now = Timestamp(server.clock.now_millis());
    let other_chain = nonce(&server, "/api/auth/siws/nonce?chainId=devnet").await;
    let mut cases: Vec<(&str, String, String)> = Vec::new();
    let mut sign = |label: &'static str, m: SiweMessage| {
        let text = m.print_unchecked();
        let sig = wallet.sign(&text);
        cases.push((label, text, sig));
    };
    sign(
        "wrong domain",
        SiweMessage {
            domain: "evil.example".into(),
            ..good.clone()
        },
    );
    sign(
        "wrong scheme",
        SiweMessage {
            scheme: Some("https".into()),
            ..good.clone()
        },
    );
    sign(
        "wrong uri",
        SiweMessage {
            uri: "http://localhost:3000/other".into(),
            ..good.clone()
        },
    );
    sign(
        "wrong chain",
        SiweMessage {
            chain_id: 8453,
            ..good.clone()
        },
    );
    sign(
        "expired",
        SiweMessage {
            expiration_time: Some(time(now)),
            ..good.clone()
        },
    );
    sign(
        "not yet valid",
        SiweMessage {
            not_before: Some(time(now.plus_millis(1))),
            ..good.clone()
        },
    );
    sign(
        "issued in the future",
        SiweMessage {
            issued_at: time(now.plus_millis(300_001)),
            ..good.clone()
        },
    );
    sign(
        "unknown nonce",
        SiweMessage {
            nonce: "abcdefgh12345678".into(),
            ..good.clone()
        },
    );
    sign(
        "nonce of another chain",
        SiweMessage {
            nonce: other_chain["nonce"].as_str().unwrap().into(),
            ..good.clone()
        },
    );
    let good_text = good.print_unchecked();
    let good_sig = wallet.sign_raw(good_text.as_bytes());
    cases.push((
        "tampered message",
        good_text.replace("Sign in to", "Sign on to"),
        wallet.sign(&good_text),
    ));
    cases.push((
        "high-S signature",
        good_text.clone(),
        format!("0x{}", to_hex(&high_s_twin(&good_sig))),
    ));
    cases.push((
        "lowercase address",
        good_text.replace(
            &wallet.address.to_checksum(),
            &wallet.address.to_lower_hex(),
        ),
        wallet.sign(&good_text),
    ));
    cases.push((
        "another signer",
        good_text.clone(),
        EvmWallet::new().sign(&good_text),
    ));
    let mut bad_v = good_sig;
    bad_v[64] = 29;
    cases.push((
        "v outside 0/1/27/28",
        good_text.clone(),
        format!("0x{}", to_hex(&bad_v)),
    ));
    cases.push(("short signature", good_text.clone(), "0x1234".into()));
    cases.push(("not a SIWE message", "hello".into(), wallet.sign("hello")));
    cases.push((
        "oversized",
        format!("{good_text}{}", "x".repeat(9000)),
        wallet.sign(&good_text),
    ));
    for (label, text, sig) in &cases {
        let r = verify(&server, "/api/auth/siwe/verify", text, sig).await;
        let error = r.assert_error(401, "UNAUTHORIZED");
        assert_eq!(
            error["message"], "Invalid or missing authentication",
            "{label}"
        );
    }
    // v as 0/1 works, and none of the failures used the nonce up.
    let mut v01 = good_sig;
    v01[64] -= 27;
    let r = verify(&server, "/api/auth/siwe/verify", &good_text, &to_hex(&v01)).await;
    r.assert_status(StatusCode::OK);
    // Now it is used: the same message again is refused.
    let r = verify(
        &server,
        "/api/auth/siwe/verify",
        &good_text,
        &wallet.sign(&good_text),
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    let metrics = String::from_utf8(server.get("/metrics", &[]).await.body.to_vec()).unwrap();
    for reason in [
        "domain_mismatch",
        "uri_mismatch",
        "nonce_not_issued",
        "message_expired",
        "signature_high_s",
        "signer_mismatch",
        "message_address_not_eip55",
    ] {
        assert!(
            metrics.contains(&format!("method=\"siwe\",reason=\"{reason}\"")),
            "{reason}\n{metrics}"
        );
    }
    // A nonce expires after 300 s.
    let n = nonce(&server, "/api/auth/siwe/nonce").await;
    server.clock.advance_millis(300_000);
    let m = siwe_for(&server, &n, &wallet).print_unchecked();
    verify(&server, "/api/auth/siwe/verify", &m, &wallet.sign(&m))
        .await
        .assert_error(401, "UNAUTHORIZED");
    // Missing fields and bodies that are not JSON are 400s.
    let r = server
        .request(
            Method::POST,
            "/api/auth/siwe/verify",
            &[("content-type", "application/json")],
            r#"{"message":"x"}"#,
        )
        .await;
    let error = r.assert_error(400, "VALIDATION_ERROR");
    assert_eq!(error["type"], "invalid_request_error");
    let r = server
        .request(
            Method::POST,
            "/api/auth/siwe/verify",
            &[("content-type", "application/json")],
            "message=x",
        )
        .await;
    r.assert_error(400, "INVALID_JSON");
}

#[tokio::test]
async fn of_concurrent_verifies_with_one_nonce_exactly_one_succeeds() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let n = nonce(&server, "/api/auth/siwe/nonce").await;
    let text = siwe_for(&server, &n, &wallet).print_unchecked();
    let sig = wallet.sign(&text);
    let body = serde_json::to_vec(&json!({"message": text, "signature": sig})).unwrap();
    let attempts = (0..8).map(|i| {
        let body = body.clone();
        let ip = format!("10.0.0.{i}");
        let server = &server;
        async move {
            server
                .request(
                    Method::POST,
                    "/api/auth/siwe/verify",
                    &[
                        ("x-forwarded-for", &ip),
                        ("content-type", "application/json"),
                    ],
                    body,
                )
                .await
                .status
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        7
    );
}

#[tokio::test]
async fn concurrent_first_sign_ins_make_one_account_and_one_bonus() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let mut prepared = Vec::new();
    for i in 0..6 {
        let n = server
            .get(
                "/api/auth/siwe/nonce",
                &[("x-forwarded-for", &format!("10.1.0.{i}"))],
            )
            .await
            .json();
        let text = siwe_for(&server, &n, &wallet).print_unchecked();
        let sig = wallet.sign(&text);
        prepared.push((
            format!("10.2.0.{i}"),
            serde_json::to_vec(&json!({"message": text, "signature": sig})).unwrap(),
        ));
    }
    let attempts = prepared.into_iter().map(|(ip, body)| {
        let server = &server;
        async move {
            server
                .request(
                    Method::POST,
                    "/api/auth/siwe/verify",
                    &[
                        ("x-forwarded-for", &ip),
                        ("content-type", "application/json"),
                    ],
                    body,
                )
                .await
                .json()
        }
    });
    let answers = futures_util::future::join_all(attempts).await;
    assert_eq!(
        answers.iter().filter(|j| j["isNewAccount"] == true).count(),
        1
    );
    let orgs: std::collections::HashSet<_> = answers
        .iter()
        .map(|j| j["organization"]["id"].clone())
        .collect();
    assert_eq!(orgs.len(), 1);
    // The ledger holds one bonus row, and exactly one sign-in key is left active.
    let store = server.running().state().store.clone();
    let org_id = uuid::Uuid::parse_str(answers[0]["organization"]["id"].as_str().unwrap()).unwrap();
    let (balance, rows, keys) = store
        .read_blocking(move |txn| {
            Ok::<_, eliza_cloud::store::StoreError>((
                eliza_cloud::store::ledger::balance_of(txn, org_id)?,
                eliza_cloud::store::ledger::list_entries(txn, org_id, 1, 10)?.1,
                eliza_cloud::store::keys::list_keys_of_org(txn, org_id)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!((balance, rows), (5_000_000, 1), "one bonus");
    let active: Vec<_> = keys.iter().filter(|k| k.is_active).collect();
    assert_eq!(
        active.len(),
        1,
        "later sign-ins rotated the earlier keys out"
    );
    let mut working = 0;
    for j in &answers {
        if server.whoami_status(j["apiKey"].as_str().unwrap()).await == 200 {
            working += 1;
        }
    }
    assert_eq!(working, 1, "only the last committed sign-in key works");
}

#[tokio::test]
async fn siws_sign_in_with_base58_and_hex_signatures() {
    use ed25519_dalek::Signer;
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let address = SolanaAddress(key.verifying_key().to_bytes());
    let build = |n: &Value| SiwsMessage {
        domain: n["domain"].as_str().unwrap().into(),
        address,
        statement: Some(n["statement"].as_str().unwrap().into()),
        uri: n["uri"].as_str().unwrap().into(),
        version: "1".into(),
        chain_id: n["chainId"].as_str().unwrap().into(),
        nonce: n["nonce"].as_str().unwrap().into(),
        issued_at: time(Timestamp(server.clock.now_millis())),
        expiration_time: None,
        not_before: None,
        request_id: None,
        resources: vec![],
    };
    let n = nonce(&server, "/api/auth/siws/nonce?chainId=solana:devnet").await;
    assert_eq!(n["chainId"], "solana:devnet");
    let text = build(&n).print_unchecked();
    let sig = base58_encode(&key.sign(text.as_bytes()).to_bytes());
    let r = verify(&server, "/api/auth/siws/verify", &text, &sig).await;
    r.assert_status(StatusCode::OK);
    let j = r.json();
    assert_eq!(j["address"], address.to_base58());
    assert_eq!(j["isNewAccount"], true);
    assert_eq!(j["initialCreditsGranted"], "5.000000");
    let api_key = j["apiKey"].as_str().unwrap();
    let me = server
        .get("/api/v1/auth/whoami", &[("x-api-key", api_key)])
        .await
        .json();
    assert_eq!(me["user"]["solana_address"], address.to_base58());
    let keys = server
        .get("/api/v1/api-keys", &[("x-api-key", api_key)])
        .await
        .json();
    assert_eq!(keys["keys"][0]["name"], "SIWS sign-in");

    // Hex signatures too; the account is found again.
    let n = nonce(&server, "/api/auth/siws/nonce").await;
    assert_eq!(n["chainId"], "solana:mainnet");
    let text = build(&n).print_unchecked();
    let hex = format!("0x{}", to_hex(&key.sign(text.as_bytes()).to_bytes()));
    let r = verify(&server, "/api/auth/siws/verify", &text, &hex).await;
    assert_eq!(r.json()["isNewAccount"], false);

    // Rejections: tampered text, another key, a SIWE nonce, a bad signature encoding.
    let n = nonce(&server, "/api/auth/siws/nonce?chainId=devnet").await;
    let text = build(&n).print_unchecked();
    let good = base58_encode(&key.sign(text.as_bytes()).to_bytes());
    let other = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let siwe_nonce = nonce(&server, "/api/auth/siwe/nonce").await;
    let with_siwe_nonce = SiwsMessage {
        nonce: siwe_nonce["nonce"].as_str().unwrap().into(),
        ..build(&n)
    }
    .print_unchecked();
    for (label, t, s) in [
        ("tampered", text.replace("Eliza", "Elixa"), good.clone()),
        (
            "another key",
            text.clone(),
            base58_encode(&other.sign(text.as_bytes()).to_bytes()),
        ),
        (
            "siwe nonce",
            with_siwe_nonce.clone(),
            base58_encode(&key.sign(with_siwe_nonce.as_bytes()).to_bytes()),
        ),
        ("not base58", text.clone(), "0OIl".into()),
        ("short", text.clone(), base58_encode(&[1, 2, 3])),
        (
            "eth-style signature",
            text.clone(),
            EvmWallet::new().sign(&text),
        ),
    ] {
        let r = verify(&server, "/api/auth/siws/verify", &t, &s).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{label}");
    }
    let r = verify(&server, "/api/auth/siws/verify", &text, &good).await;
    assert_eq!(r.status, StatusCode::OK, "the nonce survived the failures");
}

#[tokio::test]
async fn nonce_routes_validate_chain_ids_and_are_limited_per_address() {
    let server = TestServer::start().await;
    for bad in ["0", "01", "0x1", "-1", "1e3", "1.0", "%2B1"] {
        let r = server
            .get(&format!("/api/auth/siwe/nonce?chainId={bad}"), &[])
            .await;
        r.assert_error(400, "VALIDATION_ERROR");
    }
    let r = server
        .get("/api/auth/siws/nonce?chainId=ethereum", &[])
        .await;
    r.assert_error(400, "VALIDATION_ERROR");
    let n = nonce(&server, "/api/auth/siwe/nonce").await;
    assert_eq!(n["chainId"], 1);
    assert_eq!(n["domain"], "localhost:3000");
    assert_eq!(n["uri"], "http://localhost:3000");
    assert_eq!(n["version"], "1");
    assert_eq!(n["statement"], "Sign in to Eliza Cloud");
    let nonce_text = n["nonce"].as_str().unwrap();
    assert!(
        nonce_text.len() == 64
            && nonce_text
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    // 10 per minute per address: 9 bad + 1 + 1 good used 11 already? Count from a fresh minute.
    server.clock.advance_millis(60_000);
    for i in 0..10 {
        let r = server.get("/api/auth/siwe/nonce", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    }
    let r = server.get("/api/auth/siwe/nonce", &[]).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.header("retry-after"), Some("6"));
}

#[tokio::test]
async fn cookie_requests_that_change_state_need_our_origin_and_logout_ends_the_session() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let cookie = session_cookie(&siwe_sign_in(&server, &wallet).await);
    let body = serde_json::to_vec(&json!({"name": "from the browser"})).unwrap();
    for (label, headers) in [
        ("no origin", vec![("cookie", cookie.as_str())]),
        (
            "foreign origin",
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "https://evil.example"),
            ],
        ),
        (
            "foreign referer",
            vec![
                ("cookie", cookie.as_str()),
                ("referer", "https://evil.example/x"),
            ],
        ),
    ] {
        let r = server
            .request(Method::POST, "/api/v1/api-keys", &headers, body.clone())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{label}");
    }
    let r = server
        .request(
            Method::POST,
            "/api/v1/api-keys",
            &[("cookie", &cookie), ("origin", "http://localhost:3000")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = server
        .request(
            Method::POST,
            "/api/v1/api-keys",
            &[
                ("cookie", &cookie),
                ("referer", "http://localhost:3000/dashboard"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Reads need no origin; API keys never do.
    assert_eq!(
        server
            .get("/api/v1/dashboard", &[("cookie", &cookie)])
            .await
            .status,
        StatusCode::OK
    );

    // A cross-site form POST carries no cookie (SameSite=Lax) but its Origin: refused, and no
    // clearing cookie is sent.
    let r = server
        .request(
            Method::POST,
            "/api/auth/logout",
            &[("origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.header("set-cookie").is_none());
    // Logout from another origin is refused; from ours it ends the session.
    let r = server
        .request(
            Method::POST,
            "/api/auth/logout",
            &[("cookie", &cookie), ("origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = server
        .request(
            Method::POST,
            "/api/auth/logout",
            &[("cookie", &cookie), ("origin", "http://localhost:3000")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = server
        .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    // A malformed or unknown cookie is a 401, not a fall-through to no credential.
    let r = server
        .get("/api/v1/auth/whoami", &[("cookie", "eliza_session=short")])
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    // Sessions expire after 7 days.
    let cookie = session_cookie(&siwe_sign_in(&server, &wallet).await);
    server.clock.advance_millis(7 * 86_400_000);
    server
        .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
        .await
        .assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn a_zero_bonus_grants_nothing() {
    let server = TestServer::start_with(|c| c.initial_free_credits_micros = 0).await;
    let r = siwe_sign_in(&server, &EvmWallet::new()).await;
    let j = r.json();
    assert_eq!(j["isNewAccount"], true);
    assert_eq!(j["initialCreditsGranted"], "0.000000");
    let key = j["apiKey"].as_str().unwrap();
    let credits = server
        .get("/api/v1/credits", &[("x-api-key", key)])
        .await
        .json();
    assert_eq!(credits["total"], 0);
}

#[tokio::test]
async fn a_switched_off_account_cannot_sign_in() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let first = siwe_sign_in(&server, &wallet).await.json();
    let key = first["apiKey"].as_str().unwrap().to_string();
    let org_id = uuid::Uuid::parse_str(first["organization"]["id"].as_str().unwrap()).unwrap();
    let store = server.running().state().store.clone();
    store
        .write_blocking(move |txn| {
            let mut org = eliza_cloud::store::orgs::get_org(txn, org_id)?.unwrap();
            org.is_active = false;
            eliza_cloud::store::orgs::update_org(txn, &org)
        })
        .await
        .unwrap();
    let r = siwe_sign_in(&server, &wallet).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(
        r.header("set-cookie").is_none(),
        "no session for a switched-off account"
    );
    // Nothing was rotated: the earlier sign-in key is still the active one (and is refused only
    // because its organization is off).
    let keys = store
        .read_blocking(move |txn| eliza_cloud::store::keys::list_keys_of_org(txn, org_id))
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].is_active);
    assert_eq!(server.whoami_status(&key).await, 401);
}

#[tokio::test]
async fn expired_sessions_are_refused_at_once_and_their_rows_deleted_by_the_server() {
    use eliza_cloud::auth::session::SESSION_MAX_AGE_SECS;
    use eliza_cloud::store::sessions::purge_expired_sessions;
    let server = TestServer::start().await;
    let old = session_cookie(&siwe_sign_in(&server, &EvmWallet::new()).await);
    let whoami = |cookie: String| {
        let server = &server;
        async move {
            server
                .get("/api/v1/auth/whoami", &[("cookie", &cookie)])
                .await
                .status
        }
    };
    assert_eq!(whoami(old.clone()).await, StatusCode::OK);
    // Past the session's age and the purge interval: refused at once, by the clock.
    server.clock.advance_millis(
        SESSION_MAX_AGE_SECS * 1000 + eliza_cloud::server::SESSION_PURGE_INTERVAL_MS,
    );
    assert_eq!(whoami(old.clone()).await, StatusCode::UNAUTHORIZED);
    let fresh = session_cookie(&siwe_sign_in(&server, &EvmWallet::new()).await);
    // The server's own ticker deletes the expired row: two flush events after the clock moved
    // mean one whole tick read the new time (the purge runs before that tick's flush).
    let state = server.running().state().clone();
    let mut flushes = state.usage.flushes();
    let start = *flushes.borrow_and_update();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while *flushes.borrow_and_update() < start + 2 {
            flushes.changed().await.unwrap();
        }
    })
    .await
    .expect("the ticker ran");
    // What is left: only the fresh session (every row is expired at the end of time).
    let left = state
        .store
        .write(|txn| purge_expired_sessions(txn, i64::MAX))
        .unwrap();
    assert_eq!(left, 1);
    // (That check deleted the fresh one too, by design of the probe.)
    assert_eq!(whoami(fresh).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_nonce_with_an_address_carries_the_exact_message_to_sign() {
    let server = TestServer::start_with(|c| c.trust_proxy = true).await;
    let wallet = EvmWallet::new();
    let lower = wallet.address.to_lower_hex();
    let n = nonce(
        &server,
        &format!("/api/auth/siwe/nonce?chainId=8453&address={lower}"),
    )
    .await;
    let message = n["message"].as_str().unwrap().to_string();
    let parsed = SiweMessage::parse(&message).unwrap();
    assert_eq!(parsed.address, wallet.address);
    assert!(message.contains(&wallet.address.to_checksum()));
    assert_eq!(parsed.nonce, n["nonce"].as_str().unwrap());
    assert_eq!(parsed.chain_id, 8453);
    assert_eq!(parsed.domain, n["domain"].as_str().unwrap());
    assert_eq!(parsed.issued_at.at, Timestamp(server.clock.now_millis()));
    let signed = verify(
        &server,
        "/api/auth/siwe/verify",
        &message,
        &wallet.sign(&message),
    )
    .await;
    signed.assert_status(StatusCode::OK);
    for bad in [
        "0x123",
        "nope",
        "0xZZ5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    ] {
        let r = server
            .get(&format!("/api/auth/siwe/nonce?address={bad}"), &[])
            .await;
        let e = r.assert_error(400, "VALIDATION_ERROR");
        assert_eq!(e["param"], "address", "{bad}");
    }
}
