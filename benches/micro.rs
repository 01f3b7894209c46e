//! Criterion micro-benchmarks of the hot pure parts and the key lookup.
//! Run: `cargo bench --bench micro`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

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

fn routing(c: &mut Criterion) {
    c.bench_function("route/parse_whoami", |b| {
        b.iter(|| parse_route(black_box(&Method::GET), black_box("/api/v1/auth/whoami")))
    });
    c.bench_function("route/parse_unknown", |b| {
        b.iter(|| parse_route(black_box(&Method::GET), black_box("/api/v1/a/b/c/d")))
    });
}

criterion_group!(benches, keys, routing);
criterion_main!(benches);
