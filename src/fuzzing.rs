//! Bodies of the cargo-fuzz targets (`fuzz/fuzz_targets/*` are one line each into here), compiled
//! only for tests and under `cfg(fuzzing)`. The unit test below replays every committed seed in
//! `fuzz/seeds/<target>/` on stable Rust, so the seeds stay green without a nightly toolchain.
//! Each body asserts the target's law (never panics, deterministic, round-trips) with `assert!`.

use http::Method;

use crate::auth::api_key::{classify_presented_key, parse_key};
use crate::auth::header::{parse_api_key_header, parse_bearer};
use crate::web::route::{Route, parse_route};

/// `METHOD SP PATH` (or a bare path, as GET): routing never panics, is deterministic, and a 405
/// never allows the method it refused.
pub fn route_parser(data: &[u8]) {
    let (method, path) = match data.iter().position(|&b| b == b' ') {
        Some(at) => (
            data.get(..at).unwrap_or_default(),
            data.get(at + 1..).unwrap_or_default(),
        ),
        None => (&b"GET"[..], data),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let path = String::from_utf8_lossy(path);
    let route = parse_route(&method, &path);
    assert_eq!(
        route,
        parse_route(&method, &path),
        "routing must be deterministic"
    );
    let _ = (route.name(), route.needs());
    if let Route::MethodNotAllowed { allow } = route {
        assert!(
            !allow.split(", ").any(|m| m == method.as_str()),
            "405 must not allow the method it refused"
        );
    }
}

/// Key strings and credential headers: parsing never panics; a token accepted from a header
/// is visible ASCII; a string accepted as a key re-parses to the same type.
pub fn credential_headers(data: &[u8]) {
    for token in [parse_bearer(data), parse_api_key_header(data)]
        .into_iter()
        .flatten()
    {
        assert!(token.bytes().all(|b| b.is_ascii_graphic()));
        let _ = classify_presented_key(token);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(key_type) = parse_key(text)
    {
        assert_eq!(parse_key(text), Ok(key_type));
        assert!(text.len() == crate::auth::api_key::KEY_LEN);
    }
}

/// Bytes as a stored value of every record type: decoding never panics, and whatever decodes
/// re-encodes to a value that decodes to the same record.
pub fn stored_records(data: &[u8]) {
    use crate::store::codec::{decode, encode};
    use crate::store::{keys, ledger, orgs, sessions, users};
    fn law<T>(data: &[u8])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        if let Ok(record) = decode::<T>(data) {
            let bytes = encode(&record).unwrap_or_default();
            assert_eq!(decode::<T>(&bytes).ok().as_ref(), Some(&record));
        }
    }
    law::<orgs::OrgRecord>(data);
    law::<users::UserRecord>(data);
    law::<keys::ApiKeyRecord>(data);
    law::<sessions::SessionRecord>(data);
    law::<ledger::LedgerEntry>(data);
    law::<crate::store::payments::PaymentRecord>(data);
}

/// Query strings: parsing never panics, and what parses survives re-encoding every byte.
pub fn query_string(data: &[u8]) {
    use crate::web::query::parse_query;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pairs) = parse_query(text) {
        let encode = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let again: String = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let reparsed = parse_query(&again).unwrap_or_default();
        let nonempty: Vec<_> = pairs
            .into_iter()
            .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
            .collect();
        let reparsed: Vec<_> = reparsed
            .into_iter()
            .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
            .collect();
        assert_eq!(reparsed, nonempty);
    }
}

/// RFC 3339 date-times: parsing never panics, and a parsed instant prints to a form that parses
/// back to the same instant.
pub fn timestamps(data: &[u8]) {
    use crate::time::parse_rfc3339;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_rfc3339(text) {
        assert_eq!(parse_rfc3339(&t.to_rfc3339()), Some(t), "{text}");
    }
}

/// SIWE messages: parsing never panics, and whatever parses prints back to the same bytes.
pub fn siwe_message(data: &[u8]) {
    use crate::auth::siwe::SiweMessage;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = SiweMessage::parse(text) {
        assert_eq!(message.print_unchecked(), text);
    }
}

/// SIWS messages: parsing never panics, and whatever parses prints back to the same bytes.
pub fn siws_message(data: &[u8]) {
    use crate::auth::siws::SiwsMessage;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = SiwsMessage::parse(text) {
        assert_eq!(message.print_unchecked(), text);
    }
}

/// Wallet-signature headers with the canonical query and the signed text: `address \n
/// timestamp \n signature \n method \n path \n query \n body`. Parsing and verifying never panic;
/// the canonical query does not depend on the order of the pairs; the text has its five lines.
pub fn wallet_headers(data: &[u8]) {
    use crate::auth::wallet::{
        SignedRequest, canonical_query, parse_headers, payload_sha256, signed_text, verify,
    };
    use crate::time::Timestamp;
    let mut parts = data.splitn(7, |&b| b == b'\n');
    let mut next = || parts.next();
    let (address, timestamp, signature) = (next(), next(), next());
    fn text(p: Option<&[u8]>) -> &str {
        std::str::from_utf8(p.unwrap_or_default()).unwrap_or_default()
    }
    let (method, path, query) = (text(next()), text(next()), text(next()));
    let body = next().unwrap_or_default();
    let canonical = canonical_query(Some(query));
    let reversed: Vec<&str> = query.split('&').rev().collect();
    assert_eq!(canonical, canonical_query(Some(&reversed.join("&"))));
    let hash = payload_sha256(canonical.as_deref().unwrap_or_default(), body);
    let signed = signed_text("1", method, path, Some(&hash));
    assert!(signed.starts_with("Eliza Cloud Authentication\nTimestamp: 1\nMethod: "));
    if !method.contains('\n') && !path.contains('\n') {
        assert_eq!(signed.lines().count(), 5);
    }
    if let Ok(Some(headers)) = parse_headers(address, timestamp, signature) {
        assert!(headers.timestamp.millis() >= 0);
        let request = SignedRequest {
            method,
            path,
            query: Some(query),
            body,
        };
        let _ = verify(&headers, &request, Timestamp(headers.timestamp.millis()));
    }
}

/// x402 payment headers: decoding never panics; whatever decodes re-encodes to a header that
/// decodes to the same payment, and verifying it never panics.
pub fn payment_header(data: &[u8]) {
    use crate::x402::payload::PaymentPayload;
    use crate::x402::verify::{Requirements, verify_payment};
    use base64::Engine;
    // The bytes as a header, and as the JSON inside one (base64 of them).
    let as_json = base64::engine::general_purpose::STANDARD.encode(data);
    for header in [data.to_vec(), as_json.into_bytes()] {
        if let Ok(payment) = PaymentPayload::decode(&header) {
            // The raw JSON may carry more than the fields; everything else must survive.
            let again = PaymentPayload::decode(payment.encode().as_bytes());
            assert!(again.is_ok(), "a decoded payment must re-encode");
            if let Ok(again) = again {
                assert_eq!(
                    (again.version, &again.scheme, &again.network),
                    (payment.version, &payment.scheme, &payment.network)
                );
                assert_eq!(again.authorization, payment.authorization);
                assert_eq!(again.signature, payment.signature);
            }
            let network = crate::x402::X402Config::default().network;
            let required = Requirements {
                network: &network,
                pay_to: payment.authorization.to,
                amount: 10_000,
                mainnet_allowed: true,
            };
            let _ = verify_payment(&payment, &required, 1_740_672_100);
        }
    }
}

/// Base58: decoding never panics, and base58 is a bijection (encode(decode(s)) == s); bytes
/// encode to text that decodes back to them.
pub fn base58(data: &[u8]) {
    use crate::crypto::solana::{MAX_BASE58_LEN, base58_decode, base58_encode};
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = base58_decode(text)
    {
        assert_eq!(base58_encode(&bytes), text);
    }
    let encoded = base58_encode(data);
    if !data.is_empty() && encoded.len() <= MAX_BASE58_LEN {
        assert_eq!(base58_decode(&encoded).ok().as_deref(), Some(data));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn replay(target: &str, body: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            body(&data);
            count += 1;
        }
        assert!(count > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn route_parser_seeds() {
        replay("route_parser", super::route_parser);
    }

    #[test]
    fn credential_header_seeds() {
        replay("credential_headers", super::credential_headers);
    }

    #[test]
    fn query_string_seeds() {
        replay("query_string", super::query_string);
    }

    #[test]
    fn timestamp_seeds() {
        replay("timestamps", super::timestamps);
    }

    #[test]
    fn siwe_message_seeds() {
        replay("siwe_message", super::siwe_message);
    }

    #[test]
    fn siws_message_seeds() {
        replay("siws_message", super::siws_message);
        // The positive seeds parse, so the round-trip law is exercised from the start.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/siws_message");
        for name in ["positive_00", "positive_01"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            crate::auth::siws::SiwsMessage::parse(&text).unwrap();
        }
    }

    #[test]
    fn wallet_header_seeds() {
        replay("wallet_headers", super::wallet_headers);
    }

    #[test]
    fn payment_header_seeds() {
        replay("payment_header", super::payment_header);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/payment_header");
        let seed = std::fs::read(dir.join("v1_reference")).unwrap();
        crate::x402::payload::PaymentPayload::decode(&seed).unwrap();
    }

    #[test]
    fn base58_seeds() {
        replay("base58", super::base58);
    }

    #[test]
    fn stored_record_seeds() {
        replay("stored_records", super::stored_records);
        // The hand-written seed is a real OrgRecord, so the law is exercised, not skipped.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/stored_records");
        let bytes = std::fs::read(dir.join("org_record")).unwrap();
        let org: crate::store::orgs::OrgRecord = crate::store::codec::decode(&bytes).unwrap();
        assert_eq!(org.slug, "operator");
        assert_eq!(org.custom_rate_limit, Some(6000));
    }
}
