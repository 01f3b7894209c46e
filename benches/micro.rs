//! Criterion micro-benchmarks of the hot pure parts and the key lookup.
//! Run: `cargo bench --bench micro`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;

use eliza_cloud::auth::api_key::{classify_presented_key, generate_key, hash_secret, parse_key};
use eliza_cloud::auth::header::parse_bearer;
use eliza_cloud::auth::wallet::{SignedRequest, payload_sha256, signed_text};
use eliza_cloud::store::Store;
use eliza_cloud::store::codec::{decode, encode};
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, find_key_by_hash, insert_key};
use eliza_cloud::web::route::parse_route;

fn keys(c: &mut Criterion) {
    let key = generate_key(KeyType::Live);
    let text = key.expose().to_string();
    c.bench_function("key/parse_with_checksum", |b| {
        b.iter(|| parse_key(black_box(&text)))
    });
    c.bench_function("key/classify_and_hash", |b| {
        b.iter(|| {
            classify_presented_key(black_box(&text));
            hash_secret(black_box(&text))
        })
    });
    let header = format!("Bearer {text}");
    c.bench_function("header/parse_bearer", |b| {
        b.iter(|| parse_bearer(black_box(header.as_bytes())))
    });

    // The store path of a key lookup: hash index, then the record, in one read transaction.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let org = uuid::Uuid::new_v4();
    let user = uuid::Uuid::new_v4();
    store
        .write(|txn| {
            for _ in 0..1000 {
                let k = generate_key(KeyType::Live);
                let r = ApiKeyRecord::fresh(
                    org,
                    user,
                    "bench".into(),
                    KeyType::Live,
                    k.display_prefix(),
                    k.hash(),
                    0,
                );
                insert_key(txn, &r)?;
            }
            let r = ApiKeyRecord::fresh(
                org,
                user,
                "bench".into(),
                KeyType::Live,
                key.display_prefix(),
                key.hash(),
                0,
            );
            insert_key(txn, &r)
        })
        .unwrap();
    let hash = key.hash();
    c.bench_function("key/store_lookup_by_hash", |b| {
        b.iter(|| {
            store
                .read(|txn| find_key_by_hash(txn, black_box(&hash)))
                .unwrap()
        })
    });
    let record = store
        .read(|txn| find_key_by_hash(txn, &hash))
        .unwrap()
        .unwrap();
    let bytes = encode(&record).unwrap();
    c.bench_function("codec/encode_api_key", |b| {
        b.iter(|| encode(black_box(&record)))
    });
    c.bench_function("codec/decode_api_key", |b| {
        b.iter(|| decode::<ApiKeyRecord>(black_box(&bytes)))
    });
}

/// Key verification through `auth::authenticate` on a real state: a cache hit (no database) and a
/// miss (hash lookup in redb on the blocking pool, then cached).
fn key_verification(c: &mut Criterion) {
    use eliza_cloud::bootstrap::{BootstrapOutcome, ensure_operator};
    use eliza_cloud::config::ServeConfig;
    use eliza_cloud::state::AppState;
    use eliza_cloud::time::{Clock, SystemClock};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let config = ServeConfig::with_data_dir(tmp.path().to_path_buf());
    let store = Store::open(tmp.path()).unwrap();
    let key = match ensure_operator(&store, None, SystemClock.now()).unwrap() {
        BootstrapOutcome::Created {
            new_key: Some(k), ..
        } => k,
        other => panic!("{other:?}"),
    };
    let state = AppState::new(config, store, Arc::new(SystemClock));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let whoami = SignedRequest {
        method: "GET",
        path: "/api/v1/auth/whoami",
        query: None,
        body: b"",
    };
    let context = eliza_cloud::auth::AuthContext {
        signed: whoami,
        client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
        new_wallet: eliza_cloud::auth::NewWallet::Create(eliza_cloud::store::accounts::Bonus::None),
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.expose().parse().unwrap());
    c.bench_function("auth/verify_key_cache_hit", |b| {
        b.iter(|| {
            runtime
                .block_on(eliza_cloud::auth::authenticate(
                    &state,
                    black_box(&headers),
                    &context,
                ))
                .unwrap()
        })
    });
    c.bench_function("auth/verify_key_cache_miss", |b| {
        b.iter(|| {
            state.key_cache.invalidate_all();
            runtime
                .block_on(eliza_cloud::auth::authenticate(
                    &state,
                    black_box(&headers),
                    &context,
                ))
                .unwrap()
        })
    });
    let mut bad = key.expose().to_string();
    bad.pop();
    bad.push('!');
    headers.insert("x-api-key", bad.parse().unwrap());
    c.bench_function("auth/reject_bad_checksum", |b| {
        b.iter(|| {
            runtime.block_on(eliza_cloud::auth::authenticate(
                &state,
                black_box(&headers),
                &context,
            ))
        })
    });

    // A wallet-signed request: recovery, then the single-use mark and the account lookup in one
    // durable write transaction. Each iteration signs a fresh timestamp (outside the timing).
    let wallet = k256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
    let address = eliza_cloud::crypto::eth::Address::of_key(wallet.verifying_key()).to_checksum();
    let start = SystemClock.now().millis();
    let mut step = 0i64;
    let hash = payload_sha256("", b"");
    c.bench_function("auth/verify_wallet_signature", |b| {
        b.iter_batched(
            || {
                step += 1;
                let ts = (start - step).to_string();
                let text = signed_text(&ts, "GET", whoami.path, Some(&hash));
                let (sig, id) = wallet.sign_prehash_recoverable(
                    &eliza_cloud::crypto::eth::eip191_hash(text.as_bytes()),
                );
                let mut h = http::HeaderMap::new();
                h.insert("x-wallet-address", address.parse().unwrap());
                h.insert("x-timestamp", ts.parse().unwrap());
                let hex: String = sig.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
                let v = 27 + id.to_byte();
                h.insert(
                    "x-wallet-signature",
                    format!("0x{hex}{v:02x}").parse().unwrap(),
                );
                h
            },
            |h| {
                runtime
                    .block_on(eliza_cloud::auth::authenticate(&state, &h, &context))
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn routing(c: &mut Criterion) {
    c.bench_function("route/parse_whoami", |b| {
        b.iter(|| parse_route(black_box(&Method::GET), black_box("/api/v1/auth/whoami")))
    });
    c.bench_function("route/parse_unknown", |b| {
        b.iter(|| parse_route(black_box(&Method::GET), black_box("/api/v1/a/b/c/d")))
    });
}

/// SIWE verification (parse, binding and time checks, EIP-191 hashing, low-S recovery) against
/// raw k256 recovery of the same signature from a precomputed prehash, in the same run.
fn sign_in(c: &mut Criterion) {
    use eliza_cloud::auth::siwe::{Expected, SiweMessage, verify_signed};
    use eliza_cloud::crypto::eth::{Address, eip191_hash};
    use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};

    let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let address = Address::of_key(key.verifying_key()).to_checksum();
    let text = format!(
        "localhost:3000 wants you to sign in with your Ethereum account:\n{address}\n\n\
         Sign in to Eliza Cloud\n\nURI: http://localhost:3000\nVersion: 1\nChain ID: 1\n\
         Nonce: 0123456789abcdef0123456789abcdef\nIssued At: 2026-01-01T00:00:00.000Z\n\
         Expiration Time: 2026-01-01T00:10:00.000Z"
    );
    let prehash = eip191_hash(text.as_bytes());
    let (signature, recovery) = key.sign_prehash_recoverable(&prehash);
    let mut rsv = signature.to_bytes().to_vec();
    rsv.push(27 + recovery.to_byte());
    let hex: String = rsv.iter().map(|b| format!("{b:02x}")).collect();
    let signature_hex = format!("0x{hex}");
    let now = eliza_cloud::time::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
    let expected = Expected {
        domain: "localhost:3000",
        https: false,
        uri: "http://localhost:3000",
        chain_id: 1,
    };
    c.bench_function("siwe/verify_message", |b| {
        b.iter(|| {
            let message = SiweMessage::parse(black_box(&text)).unwrap();
            verify_signed(
                &message,
                &text,
                black_box(&signature_hex),
                &expected,
                now,
                300_000,
            )
            .unwrap()
        })
    });
    let raw = Signature::from_slice(&rsv[..64]).unwrap();
    let id = RecoveryId::from_byte(recovery.to_byte()).unwrap();
    c.bench_function("siwe/raw_k256_recovery", |b| {
        b.iter(|| VerifyingKey::recover_from_prehash(black_box(&prehash), &raw, id).unwrap())
    });
}

/// x402: decoding the reference `X-PAYMENT` header and every stateless verification step
/// (EIP-712 digest, low-S recovery, recipient, window, value).
fn payments(c: &mut Criterion) {
    use eliza_cloud::crypto::eth::Address;
    use eliza_cloud::x402::payload::PaymentPayload;
    use eliza_cloud::x402::verify::{Requirements, verify_payment};
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/x402/spec_examples.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let header = file["v1"]["X-PAYMENT"][0]["header_value"]
        .as_str()
        .unwrap()
        .to_string();
    let network = eliza_cloud::x402::X402Config::default().network;
    let required = Requirements {
        network: &network,
        pay_to: Address::parse_any_case("0x209693Bc6afc0C5328bA36FaF03C514EF312287C").unwrap(),
        amount: 10_000,
        mainnet_allowed: true,
    };
    c.bench_function("x402/decode_header", |b| {
        b.iter(|| PaymentPayload::decode(black_box(header.as_bytes())).unwrap())
    });
    c.bench_function("x402/decode_and_verify", |b| {
        b.iter(|| {
            let payment = PaymentPayload::decode(black_box(header.as_bytes())).unwrap();
            verify_payment(&payment, &required, 1_740_672_100).unwrap()
        })
    });
}

/// SNI lookup (SPEC §11): the same cost with 10 names as with 10,000 (a hash lookup, then the
/// wildcard one label up).
fn sni(c: &mut Criterion) {
    use eliza_cloud::domains::certs::{CertMap, ensure_local};
    let tmp = tempfile::tempdir().unwrap();
    let store = eliza_cloud::store::Store::open(tmp.path()).unwrap();
    let cert = store
        .write(|txn| ensure_local(txn, "example.test", &[], 0))
        .unwrap();
    for n in [10usize, 10_000] {
        let map = CertMap::default();
        for i in 0..n {
            map.insert(format!("d{i}.bench.example"), &cert);
        }
        map.insert("*.apps.localhost".into(), &cert);
        c.bench_function(&format!("sni/exact_of_{n}"), |b| {
            b.iter(|| map.find(std::hint::black_box("d5.bench.example")))
        });
        c.bench_function(&format!("sni/wildcard_of_{n}"), |b| {
            b.iter(|| map.find(std::hint::black_box("shop.apps.localhost")))
        });
    }
}

criterion_group!(
    benches,
    keys,
    key_verification,
    routing,
    sign_in,
    payments,
    sni
);
criterion_main!(benches);
