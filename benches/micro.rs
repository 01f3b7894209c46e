//! Criterion micro-benchmarks of the hot pure parts and the key lookup.
//! Run: `cargo bench --bench micro`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;

use eliza_cloud::auth::api_key::{classify_presented_key, generate_key, hash_secret, parse_key};
use eliza_cloud::auth::header::parse_bearer;
use eliza_cloud::http::route::parse_route;
use eliza_cloud::store::Store;
use eliza_cloud::store::codec::{decode, encode};
use eliza_cloud::store::keys::{ApiKeyRecord, KeyType, find_key_by_hash, insert_key};

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
    use eliza_cloud::clock::{Clock, SystemClock};
    use eliza_cloud::config::ServeConfig;
    use eliza_cloud::state::AppState;
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
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", key.expose().parse().unwrap());
    c.bench_function("auth/verify_key_cache_hit", |b| {
        b.iter(|| {
            runtime
                .block_on(eliza_cloud::auth::authenticate(&state, black_box(&headers)))
                .unwrap()
        })
    });
    c.bench_function("auth/verify_key_cache_miss", |b| {
        b.iter(|| {
            state.key_cache.invalidate_all();
            runtime
                .block_on(eliza_cloud::auth::authenticate(&state, black_box(&headers)))
                .unwrap()
        })
    });
    let mut bad = key.expose().to_string();
    bad.pop();
    bad.push('!');
    headers.insert("x-api-key", bad.parse().unwrap());
    c.bench_function("auth/reject_bad_checksum", |b| {
        b.iter(|| runtime.block_on(eliza_cloud::auth::authenticate(&state, black_box(&headers))))
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

criterion_group!(benches, keys, key_verification, routing);
criterion_main!(benches);
