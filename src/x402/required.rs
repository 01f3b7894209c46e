//! What a 402 says: the v1 JSON body and the v2 `PAYMENT-REQUIRED` header, at once, and the
//! `paymentRequirements` a facilitator is sent.
//!
//! WIRE FORMAT: field names are x402's (v1 `maxAmountRequired`, v2 `amount` and CAIP-2).

use serde_json::{Value, json};

use super::payload::encode_json;
use super::{MAX_TIMEOUT_SECONDS, Network};
use crate::crypto::eth::Address;

/// One way to pay for a resource.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub network: &'a Network,
    pub pay_to: Address,
    /// Atomic token units.
    pub amount: u128,
    /// The resource's full URL.
    pub resource: &'a str,
    pub description: &'a str,
}

/// The v1 requirement (an entry of `accepts`).
pub fn v1_requirement(offer: &Offer<'_>) -> Value {
    json!({
        "scheme": "exact",
        "network": offer.network.name,
        "maxAmountRequired": offer.amount.to_string(),
        "resource": offer.resource,
        "description": offer.description,
        "mimeType": "application/json",
        "payTo": offer.pay_to.to_checksum(),
        "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
        "asset": offer.network.asset.to_checksum(),
        "extra": {"name": offer.network.token_name, "version": offer.network.token_version},
    })
}

/// The v2 requirement (an entry of `accepts`).
pub fn v2_requirement(offer: &Offer<'_>) -> Value {
    json!({
        "scheme": "exact",
        "network": offer.network.caip2(),
        "amount": offer.amount.to_string(),
        "asset": offer.network.asset.to_checksum(),
        "payTo": offer.pay_to.to_checksum(),
        "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
        "extra": {"name": offer.network.token_name, "version": offer.network.token_version},
    })
}

/// The v1 402 body.
pub fn v1_body(offer: &Offer<'_>, error: &str) -> Value {
    json!({"x402Version": 1, "error": error, "accepts": [v1_requirement(offer)]})
}

/// The v2 `PAYMENT-REQUIRED` object.
pub fn v2_required(offer: &Offer<'_>, error: &str) -> Value {
    json!({
        "x402Version": 2,
        "error": error,
        "resource": {
            "url": offer.resource,
            "description": offer.description,
            "mimeType": "application/json",
        },
        "accepts": [v2_requirement(offer)],
    })
}

/// The `PAYMENT-REQUIRED` header value.
pub fn v2_required_header(offer: &Offer<'_>, error: &str) -> String {
    encode_json(&v2_required(offer, error))
}

/// The settlement answer both versions put in a header.
pub fn payment_response(transaction: &str, network: &str, payer: &Address) -> String {
    encode_json(&json!({
        "success": true,
        "transaction": transaction,
        "network": network,
        "payer": payer.to_checksum(),
    }))
}
