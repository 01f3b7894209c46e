//! Bodies of the cargo-fuzz targets (`fuzz_targets/*` are one line each into here). They use only
//! the library's public API. The integration tests include this file too
//! (`tests/it/fuzz_seeds.rs`) and replay every committed seed in `seeds/<target>/` on stable
//! Rust, so the seeds stay green without a nightly toolchain. Each body asserts the target's law
//! (never panics, deterministic, round-trips) with `assert!`.

use http::Method;

use eliza_cloud::auth::api_key::{classify_presented_key, parse_key};
use eliza_cloud::auth::header::{parse_api_key_header, parse_bearer};
use eliza_cloud::web::route::{Route, parse_route};

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
        assert!(text.len() == eliza_cloud::auth::api_key::KEY_LEN);
    }
}

/// Bytes as a stored value of every record type: decoding never panics, and whatever decodes
/// re-encodes to a value that decodes to the same record.
pub fn stored_records(data: &[u8]) {
    use eliza_cloud::store::codec::{decode, encode};
    use eliza_cloud::store::{keys, ledger, orgs, sessions, users};
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
    law::<eliza_cloud::store::payments::PaymentRecord>(data);
}

/// Query strings: parsing never panics, and what parses survives re-encoding every byte.
pub fn query_string(data: &[u8]) {
    use eliza_cloud::web::query::parse_query;
    // A dashboard form body (any bytes): fields or a clear error, never a panic; `+` is a space.
    if let Ok(fields) = eliza_cloud::dashboard::form_fields(data) {
        assert!(
            fields
                .iter()
                .all(|(k, v)| !k.contains('+') && !v.contains('+'))
                || data.contains(&b'%')
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `period=YYYY-MM` of the usage route: a month that parses prints back as itself.
    if let Some(period) = eliza_cloud::api::usage::Period::parse(text) {
        assert_eq!(period.text(), text);
    }
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
    // Paging reads the same query: never a panic, and what it accepts is in range.
    if let Ok(paging) = eliza_cloud::web::query::Paging::from_query(Some(text), 50, 100) {
        assert!(paging.page >= 1 && paging.page <= eliza_cloud::web::query::MAX_PAGE);
        assert!((1..=100).contains(&paging.limit));
        let items = [(); 7];
        let range = paging.slice(&items);
        assert!(range.start <= range.end && range.end <= items.len());
    }
}

/// Sign-in nonces: checking arbitrary text never panics and never passes; a nonce this key
/// issued passes for what it was issued for, once, and for nothing else.
pub fn signin_nonce(data: &[u8]) {
    use eliza_cloud::auth::nonce::{NonceChain, NonceKey, Nonces};
    use eliza_cloud::time::Timestamp;
    let start = Timestamp(1_767_225_600_000);
    let nonces = Nonces::new(NonceKey::new([7; 32]), start);
    let text = String::from_utf8_lossy(data);
    let chain = NonceChain::Ethereum(u64::from(data.first().copied().unwrap_or(1)));
    let uri = "http://localhost:3000";
    assert!(nonces.check(&text, &chain, uri, start).is_err());
    let issued = nonces.issue(&chain, uri, start);
    assert_eq!(nonces.check(&issued, &chain, uri, start), Ok(()));
    assert!(nonces.check(&issued, &chain, &text, start).is_err() || text == uri);
    assert!(nonces.consume(&issued, start));
    assert!(!nonces.consume(&issued, start));
    assert!(nonces.check(&issued, &chain, uri, start).is_err());
}

/// RFC 3339 date-times: parsing never panics, and a parsed instant prints to a form that parses
/// back to the same instant.
pub fn timestamps(data: &[u8]) {
    use eliza_cloud::time::parse_rfc3339;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(t) = parse_rfc3339(text) {
        assert_eq!(parse_rfc3339(&t.to_rfc3339()), Some(t), "{text}");
    }
}

/// SIWE messages: parsing never panics, and whatever parses prints back to the same bytes.
pub fn siwe_message(data: &[u8]) {
    use eliza_cloud::auth::siwe::SiweMessage;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = SiweMessage::parse(text) {
        assert_eq!(message.print_unchecked(), text);
    }
}

/// SIWS messages: parsing never panics, and whatever parses prints back to the same bytes.
pub fn siws_message(data: &[u8]) {
    use eliza_cloud::auth::siws::SiwsMessage;
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
    use eliza_cloud::auth::wallet::{
        SignedRequest, canonical_query, parse_headers, payload_sha256, signed_text, verify,
    };
    use eliza_cloud::time::Timestamp;
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
    use base64::Engine;
    use eliza_cloud::x402::payload::PaymentPayload;
    use eliza_cloud::x402::verify::{Requirements, verify_payment};
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
            let network = eliza_cloud::x402::X402Config::default().network;
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
    use eliza_cloud::crypto::solana::{MAX_BASE58_LEN, base58_decode, base58_encode};
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

/// A metered route's body (SPEC §9): every parse is a value or a 400, never a panic; what parses
/// as chat keeps its model and counts its input by the rule.
pub fn gateway_bodies(data: &[u8]) {
    use eliza_cloud::gateway::request::{parse_chat, parse_embeddings, parse_images};
    match parse_chat(data) {
        Ok(chat) => {
            assert!(!chat.model.is_empty());
            assert!(chat.n >= 1);
            assert_eq!(
                chat.input_tokens,
                eliza_cloud::gateway::tokens::chat_input(chat.messages())
                    + eliza_cloud::gateway::tokens::chat_extra_input(&chat.raw)
            );
        }
        Err(e) => assert_eq!(e.status().as_u16(), 400),
    }
    match parse_embeddings(data) {
        Ok(e) => assert!(!e.inputs.is_empty() && e.inputs.iter().all(|i| !i.is_empty())),
        Err(e) => assert_eq!(e.status().as_u16(), 400),
    }
    if let Err(e) = parse_images(data) {
        assert_eq!(e.status().as_u16(), 400);
    }
}

/// A model file (`--models`), as JSON and as TOML: parsed or refused with a message, never a
/// panic; every model of a parsed table is found by its id, and costs never panic.
pub fn model_file(data: &[u8]) {
    use eliza_cloud::gateway::models::{ModelTable, image_cost, token_cost};
    let text = String::from_utf8_lossy(data);
    for name in ["models.json", "models.toml"] {
        match ModelTable::parse(name, &text) {
            Ok(table) => {
                for model in table.iter() {
                    assert_eq!(table.get(&model.id), Some(model));
                    let _ = token_cost(model, u64::MAX, u64::MAX, 1000);
                    assert!(image_cost(model, 10, 1000) >= 0);
                }
            }
            Err(message) => assert!(!message.is_empty()),
        }
    }
}

/// An upstream's event stream: parsed the same whether it arrives whole or cut in two, and each
/// event's chunk is read without a panic.
pub fn sse_stream(data: &[u8]) {
    use eliza_cloud::gateway::stream::{Parser, read_chunk};
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let mut whole = Parser::default();
    let all = whole.push(data);
    let mut split = Parser::default();
    let first = split.push(data.get(..cut).unwrap_or_default());
    let rest = split.push(data.get(cut..).unwrap_or_default());
    if let (Ok(all), Ok(mut first), Ok(rest)) = (all, first, rest) {
        first.extend(rest);
        assert_eq!(all, first, "the split must not change the events");
        for event in &all {
            let _ = read_chunk(&event.data);
        }
    }
}

/// App names and origins (SPEC §10): a slug is a clean label and idempotent; an accepted
/// `allowed_origins` entry is accepted again as it was answered.
pub fn app_settings(data: &[u8]) {
    use eliza_cloud::api::apps::parse_origin_pattern;
    use eliza_cloud::store::apps::{MAX_SLUG, slug_of};
    let text = String::from_utf8_lossy(data);
    let slug = slug_of(&text);
    assert!(slug.len() <= MAX_SLUG);
    assert!(!slug.starts_with('-') && !slug.ends_with('-') && !slug.contains("--"));
    assert_eq!(slug_of(&slug), slug);
    if let Some(pattern) = parse_origin_pattern(&text) {
        assert_eq!(parse_origin_pattern(&pattern), Some(pattern.clone()));
    }
    // Dollar inputs (prices, withdrawals): whatever is accepted prints back to the same amount.
    use eliza_cloud::money::{format_dollars_short, parse_dollars, parse_dollars_number};
    for parsed in [parse_dollars(&text), parse_dollars_number(&text)]
        .into_iter()
        .flatten()
    {
        assert!(parsed >= 0);
        assert_eq!(
            parse_dollars_number(&format_dollars_short(parsed)),
            Some(parsed)
        );
    }
}

/// Webhook settings bodies, target URLs, `Retry-After` values and signature headers: never a
/// panic; a parsed target keeps a path, and no header verifies a body it was not made for.
pub fn webhook_settings(data: &[u8]) {
    use eliza_cloud::api::input::Fields;
    use eliza_cloud::api::webhooks::settings_of;
    use eliza_cloud::store::webhooks::WebhookSecret;
    use eliza_cloud::webhooks::schedule::{LONGEST, retry_after};
    use eliza_cloud::webhooks::sign::{standard_signature, verify_standard};
    use eliza_cloud::webhooks::target::parse_target;
    let text = String::from_utf8_lossy(data);
    if let Ok(target) = parse_target(&text) {
        assert!(!target.path.is_empty());
        assert!(!target.host_header().is_empty());
    }
    if let Some(wait) = retry_after(&text, 1_700_000_000) {
        assert!(wait <= LONGEST);
    }
    let _ = eliza_cloud::time::parse_http_date(&text);
    let secret = WebhookSecret::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into());
    let genuine = standard_signature(&secret, "msg_1", 1_700_000_000, b"{}");
    let verdict = verify_standard(&secret, "msg_1", "1700000000", &text, b"{}", 1_700_000_000);
    if verdict.is_ok() {
        assert!(text.split(' ').any(|entry| entry == genuine));
    }
    if let Ok(mut fields) = Fields::parse(data) {
        if let Some(settings) = settings_of(&mut fields, "url", false) {
            assert!(parse_target(&settings.url).is_ok());
            assert!(settings.thresholds.windows(2).all(|w| w[0] < w[1]));
        }
        let _ = fields.finish();
    }
}

/// Custom domain names and `Host` headers: never a panic; an accepted name is accepted again as
/// it is, keys as itself, and is never under the apps domain.
pub fn domain_names(data: &[u8]) {
    use eliza_cloud::domains::name::{check_domain, host_key};
    let text = String::from_utf8_lossy(data);
    if let Ok(name) = check_domain(&text, "apps.localhost") {
        assert_eq!(check_domain(&name, "apps.localhost"), Ok(name.clone()));
        assert_eq!(host_key(&name), Some(name.clone()));
        assert!(!name.ends_with(".apps.localhost") && (4..=253).contains(&name.len()));
    }
    if let Some(key) = host_key(&text) {
        assert_eq!(host_key(&key), Some(key.clone()));
    }
}

/// What the ACME CA sends back and asks for: a certificate chain (the bytes as PEM text, and
/// as the DER inside one PEM block) whose validity is read, and an HTTP-01 challenge path.
/// Never panics; a validity read is ordered; a challenge path routes to the challenge or 404.
pub fn acme_answers(data: &[u8]) {
    use base64::Engine;
    use eliza_cloud::domains::acme::{AcmeConfig, orderable, validity};
    let text = String::from_utf8_lossy(data);
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let wrapped = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    for chain in [text.as_ref(), wrapped.as_str()] {
        if let Ok((not_before, not_after)) = validity(chain) {
            assert_eq!(validity(chain), Ok((not_before, not_after)));
        }
    }
    let _ = AcmeConfig::directory_of(&text);
    let _ = orderable(&text);
    let path = format!("{}{text}", eliza_cloud::web::route::ACME_CHALLENGE_PREFIX);
    let route = parse_route(&Method::GET, &path);
    assert!(
        matches!(route, Route::AcmeChallenge | Route::NotFound),
        "{path:?} routed to {route:?}"
    );
}

/// The operator's values (flags and `ELIZA_CLOUD_*` variables) and permission lists: the public
/// URL, durations, the earnings hold, booleans, custom x402 networks, permission names. Parsing
/// never panics; what parses is consistent (a public URL parses again to itself, a duration is
/// within its bounds, a custom network prints back to an entry that parses to it, a normalised
/// permission list normalises to itself).
pub fn operator_values(data: &[u8]) {
    use eliza_cloud::config::{PublicUrl, parse_bool, parse_duration, parse_hold};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(url) = PublicUrl::parse(text) {
        let again = PublicUrl::parse(&url.url).expect("a parsed public URL parses again");
        assert_eq!(again.url, url.url);
        assert_eq!(again.origin, url.origin);
        assert!(url.origin.starts_with("http://") || url.origin.starts_with("https://"));
    }
    if let Some(d) = parse_duration(text) {
        assert!(d.as_millis() >= 1 && d.as_millis() <= 3_600_000, "{text}");
    }
    if let Some(d) = parse_hold(text) {
        assert!(d.as_secs() <= 365 * 86_400, "{text}");
    }
    let _ = parse_bool(text);
    if let Ok(networks) = eliza_cloud::x402::parse_custom_networks(text) {
        for n in &networks {
            let entry = format!(
                "{}:{}:{}:{}:{}:{}:{}",
                n.name,
                n.chain_id,
                n.asset.to_checksum(),
                n.token_name,
                n.token_version,
                n.decimals,
                if n.testnet { "testnet" } else { "mainnet" }
            );
            let again = eliza_cloud::x402::parse_custom_networks(&entry)
                .unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].chain_id, n.chain_id);
            assert_eq!(again[0].asset, n.asset);
        }
    }
    let names: Vec<String> = text.split(',').map(str::to_string).collect();
    if let Ok(list) = eliza_cloud::auth::permissions::normalise(&names) {
        assert_eq!(
            eliza_cloud::auth::permissions::normalise(&list),
            Ok(list.clone())
        );
    }
}
