//! The fuzz targets' committed seeds (`fuzz/seeds/<target>/`), replayed through the targets' own
//! bodies (`fuzz/src/lib.rs`, included here) on stable Rust.

use std::path::Path;

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

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
    replay("route_parser", bodies::route_parser);
}

#[test]
fn credential_header_seeds() {
    replay("credential_headers", bodies::credential_headers);
}

#[test]
fn query_string_seeds() {
    replay("query_string", bodies::query_string);
}

#[test]
fn timestamp_seeds() {
    replay("timestamps", bodies::timestamps);
}

#[test]
fn siwe_message_seeds() {
    replay("siwe_message", bodies::siwe_message);
}

#[test]
fn siws_message_seeds() {
    replay("siws_message", bodies::siws_message);
    // The positive seeds parse, so the round-trip law is exercised from the start.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/siws_message");
    for name in ["positive_00", "positive_01"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        eliza_cloud::auth::siws::SiwsMessage::parse(&text).unwrap();
    }
}

#[test]
fn wallet_header_seeds() {
    replay("wallet_headers", bodies::wallet_headers);
}

#[test]
fn payment_header_seeds() {
    replay("payment_header", bodies::payment_header);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/payment_header");
    let seed = std::fs::read(dir.join("v1_reference")).unwrap();
    eliza_cloud::x402::payload::PaymentPayload::decode(&seed).unwrap();
}

#[test]
fn base58_seeds() {
    replay("base58", bodies::base58);
}

#[test]
fn stored_record_seeds() {
    replay("stored_records", bodies::stored_records);
    // The hand-written seed is a real OrgRecord, so the law is exercised, not skipped.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/stored_records");
    let bytes = std::fs::read(dir.join("org_record")).unwrap();
    let org: eliza_cloud::store::orgs::OrgRecord =
        eliza_cloud::store::codec::decode(&bytes).unwrap();
    assert_eq!(org.slug, "operator");
    assert_eq!(org.custom_rate_limit, Some(6000));
}

#[test]
fn signin_nonce_seeds() {
    replay("signin_nonce", bodies::signin_nonce);
}

#[test]
fn gateway_body_seeds() {
    replay("gateway_bodies", bodies::gateway_bodies);
}

#[test]
fn model_file_seeds() {
    replay("model_file", bodies::model_file);
    // The seeds parse, so the table laws are exercised from the start.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/model_file");
    for (name, as_name) in [("json_00", "m.json"), ("toml_00", "m.toml")] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        eliza_cloud::gateway::models::ModelTable::parse(as_name, &text).unwrap();
    }
}

#[test]
fn sse_stream_seeds() {
    replay("sse_stream", bodies::sse_stream);
}

#[test]
fn app_settings_seeds() {
    replay("app_settings", bodies::app_settings);
}

#[test]
fn webhook_settings_seeds() {
    replay("webhook_settings", bodies::webhook_settings);
}

#[test]
fn domain_names_seeds() {
    replay("domain_names", bodies::domain_names);
}

#[test]
fn acme_answers_seeds() {
    replay("acme_answers", bodies::acme_answers);
}

#[test]
fn operator_value_seeds() {
    replay("operator_values", bodies::operator_values);
}
