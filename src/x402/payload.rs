//! The payment header: `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2), base64 of a JSON payload
//! `{x402Version, scheme | accepted: {scheme, network, ...}, network, payload: {signature,
//! authorization: {from, to, value, validAfter, validBefore, nonce}}}`.
//!
//! Two stages: [`decode_header`] turns the header into JSON (failure: 400, the bytes are not a
//! payment at all); [`PaymentPayload::from_json`] reads the fields (failure: 402
//! `invalid_payload`, it is a payment that cannot be valid). Field values keep their exact
//! text where it is forwarded to a facilitator.
//!
//! WIRE FORMAT: field names and their string encodings are x402's.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Map, Value, json};

use crate::crypto::eth::Address;
use crate::crypto::{from_hex_exact, to_hex};

/// Largest header accepted, in bytes (a real payload is about 600).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Why a header is not a payment at all (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge,
    Base64,
    Json,
}

impl DecodeError {
    pub const fn message(self) -> &'static str {
        match self {
            DecodeError::TooLarge => "The payment header is too large",
            DecodeError::Base64 => "The payment header is not base64",
            DecodeError::Json => "The payment header is not base64 of a JSON object",
        }
    }
}

/// Base64 (standard alphabet, padding optional) of a JSON object.
pub fn decode_header(value: &[u8]) -> Result<Value, DecodeError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let trimmed = value.trim_ascii();
    let bytes = STANDARD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .map_err(|_| DecodeError::Base64)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(DecodeError::Json),
    }
}

/// Base64 of JSON: the encoding of every x402 header we send.
pub fn encode_json(value: &Value) -> String {
    STANDARD.encode(value.to_string())
}

/// An unsigned 256-bit integer, big-endian, from its decimal text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct U256(pub [u8; 32]);

impl U256 {
    /// Decimal digits, no sign, no leading zeros (but `0`), at most 78 digits, below 2^256.
    pub fn parse_decimal(text: &str) -> Option<U256> {
        if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if text.len() > 1 && text.starts_with('0') {
            return None;
        }
        let mut n = [0u8; 32];
        for digit in text.bytes() {
            let mut carry = u16::from(digit - b'0');
            for byte in n.iter_mut().rev() {
                let v = u16::from(*byte) * 10 + carry;
                *byte = (v & 0xff) as u8;
                carry = v >> 8;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(U256(n))
    }

    pub fn from_u128(value: u128) -> U256 {
        let mut n = [0u8; 32];
        if let Some(tail) = n.get_mut(16..) {
            tail.copy_from_slice(&value.to_be_bytes());
        }
        U256(n)
    }

    /// The value, or `u64::MAX` when it does not fit (for comparing with a clock).
    pub fn saturating_u64(&self) -> u64 {
        let (high, low) = self.0.split_at(24);
        if high.iter().any(|b| *b != 0) {
            return u64::MAX;
        }
        low.try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX)
    }

    pub fn to_decimal(&self) -> String {
        let mut n = self.0;
        let mut digits = Vec::new();
        loop {
            let mut remainder = 0u16;
            for byte in n.iter_mut() {
                let v = (remainder << 8) | u16::from(*byte);
                *byte = (v / 10) as u8;
                remainder = v % 10;
            }
            digits.push(b'0' + remainder as u8);
            if n.iter().all(|b| *b == 0) {
                break;
            }
        }
        digits.reverse();
        String::from_utf8(digits).unwrap_or_default()
    }
}

/// EIP-3009 `TransferWithAuthorization` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: U256,
    pub valid_before: U256,
    pub nonce: [u8; 32],
}

/// A decoded payment. `raw` is the JSON as received, forwarded to a facilitator unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPayload {
    pub version: u64,
    pub scheme: String,
    pub network: String,
    /// As sent; its format is checked with the signature.
    pub signature: String,
    pub authorization: Authorization,
    pub raw: Value,
}

fn string<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    object.get(name).and_then(Value::as_str)
}

fn address(object: &Map<String, Value>, name: &str) -> Option<Address> {
    Address::parse_any_case(string(object, name)?).ok()
}

fn number(object: &Map<String, Value>, name: &str) -> Option<U256> {
    U256::parse_decimal(string(object, name)?)
}

impl PaymentPayload {
    /// Reads the payload's fields; `None` when any is missing or malformed (`invalid_payload`).
    pub fn from_json(raw: Value) -> Option<PaymentPayload> {
        let top = raw.as_object()?;
        let version = top.get("x402Version")?.as_u64()?;
        // v2 carries scheme and network inside `accepted`; v1 at the top.
        let (scheme, network) = match top.get("accepted").and_then(Value::as_object) {
            Some(accepted) => (string(accepted, "scheme")?, string(accepted, "network")?),
            None => (string(top, "scheme")?, string(top, "network")?),
        };
        let payload = top.get("payload")?.as_object()?;
        let signature = string(payload, "signature")?;
        let auth = payload.get("authorization")?.as_object()?;
        let nonce = from_hex_exact::<32>(string(auth, "nonce")?)
            .filter(|_| string(auth, "nonce").is_some_and(|n| n.starts_with("0x")))?;
        let authorization = Authorization {
            from: address(auth, "from")?,
            to: address(auth, "to")?,
            value: number(auth, "value")?,
            valid_after: number(auth, "validAfter")?,
            valid_before: number(auth, "validBefore")?,
            nonce,
        };
        Some(PaymentPayload {
            version,
            scheme: scheme.to_string(),
            network: network.to_string(),
            signature: signature.to_string(),
            authorization,
            raw: raw.clone(),
        })
    }

    /// The payment as JSON in the shape of its version (what a client would send).
    pub fn to_json(&self) -> Value {
        let a = &self.authorization;
        let payload = json!({
            "signature": self.signature,
            "authorization": {
                "from": a.from.to_checksum(),
                "to": a.to.to_checksum(),
                "value": a.value.to_decimal(),
                "validAfter": a.valid_after.to_decimal(),
                "validBefore": a.valid_before.to_decimal(),
                "nonce": format!("0x{}", to_hex(&a.nonce)),
            },
        });
        if self.version >= 2 {
            json!({
                "x402Version": self.version,
                "accepted": {"scheme": self.scheme, "network": self.network},
                "payload": payload,
            })
        } else {
            json!({
                "x402Version": self.version,
                "scheme": self.scheme,
                "network": self.network,
                "payload": payload,
            })
        }
    }

    /// The header value of [`to_json`](Self::to_json).
    pub fn encode(&self) -> String {
        encode_json(&self.to_json())
    }

    /// Header bytes to a payment: `Err(Some(e))` is a 400, `Err(None)` is `invalid_payload`.
    pub fn decode(header: &[u8]) -> Result<PaymentPayload, Option<DecodeError>> {
        let json = decode_header(header).map_err(Some)?;
        PaymentPayload::from_json(json).ok_or(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V1_EXAMPLE: &str = "eyJ4NDAyVmVyc2lvbiI6MSwic2NoZW1lIjoiZXhhY3QiLCJuZXR3b3JrIjoiYmFzZS1zZXBvbGlhIiwicGF5bG9hZCI6eyJzaWduYXR1cmUiOiIweDJkNmE3NTg4ZDZhY2NhNTA1Y2JmMGQ5YTRhMjI3ZTBjNTJjNmMzNDAwOGM4ZTg5ODZhMTI4MzI1OTc2NDE3MzYwOGEyY2U2NDk2NjQyZTM3N2Q2ZGE4ZGJiZjU4MzZlOWJkMTUwOTJmOWVjYWIwNWRlZDNkNjI5M2FmMTQ4YjU3MWMiLCJhdXRob3JpemF0aW9uIjp7ImZyb20iOiIweDg1N2IwNjUxOUU5MWUzQTU0NTM4NzkxYkRiYjBFMjIzNzNlMzZiNjYiLCJ0byI6IjB4MjA5NjkzQmM2YWZjMEM1MzI4YkEzNkZhRjAzQzUxNEVGMzEyMjg3QyIsInZhbHVlIjoiMTAwMDAiLCJ2YWxpZEFmdGVyIjoiMTc0MDY3MjA4OSIsInZhbGlkQmVmb3JlIjoiMTc0MDY3MjE1NCIsIm5vbmNlIjoiMHhmMzc0NjYxM2MyZDkyMGI1ZmRhYmMwODU2ZjJhZWIyZDRmODhlZTYwMzdiOGNjNWQwNGE3MWE0NDYyZjEzNDgwIn19fQ==";

    #[test]
    fn decodes_the_reference_example() {
        let p = PaymentPayload::decode(V1_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(p.version, 1);
        assert_eq!(p.scheme, "exact");
        assert_eq!(p.network, "base-sepolia");
        assert_eq!(p.authorization.value.to_decimal(), "10000");
        assert_eq!(p.authorization.valid_before.saturating_u64(), 1_740_672_154);
        assert_eq!(
            p.authorization.from.to_checksum(),
            "0x857b06519E91e3A54538791bDbb0E22373e36b66"
        );
        // Without padding too.
        let unpadded = V1_EXAMPLE.trim_end_matches('=');
        assert_eq!(PaymentPayload::decode(unpadded.as_bytes()).unwrap(), p);
    }

    #[test]
    fn malformed_headers_are_told_apart() {
        assert_eq!(
            PaymentPayload::decode(b"not base64!"),
            Err(Some(DecodeError::Base64))
        );
        let not_json = STANDARD.encode("{nope");
        assert_eq!(
            PaymentPayload::decode(not_json.as_bytes()),
            Err(Some(DecodeError::Json))
        );
        let array = STANDARD.encode("[1]");
        assert_eq!(
            PaymentPayload::decode(array.as_bytes()),
            Err(Some(DecodeError::Json))
        );
        let missing = STANDARD.encode(r#"{"x402Version":1,"scheme":"exact"}"#);
        assert_eq!(PaymentPayload::decode(missing.as_bytes()), Err(None));
        let big = vec![b'A'; MAX_HEADER_BYTES + 1];
        assert_eq!(
            PaymentPayload::decode(&big),
            Err(Some(DecodeError::TooLarge))
        );
    }

    #[test]
    fn u256_decimal() {
        assert_eq!(U256::parse_decimal("0"), Some(U256([0; 32])));
        assert_eq!(U256::parse_decimal("10000"), Some(U256::from_u128(10_000)));
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(U256::parse_decimal(max), Some(U256([0xff; 32])));
        assert_eq!(U256([0xff; 32]).to_decimal(), max);
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(U256::parse_decimal(over), None);
        for bad in ["", "01", "-1", "+1", "1e3", "0x10", " 1"] {
            assert_eq!(U256::parse_decimal(bad), None, "{bad}");
        }
        assert_eq!(U256([0xff; 32]).saturating_u64(), u64::MAX);
    }

    fn payload() -> impl Strategy<Value = PaymentPayload> {
        (
            (
                1u64..3,
                "[a-z]{1,8}",
                "[a-z0-9:-]{1,16}",
                "0x[0-9a-f]{0,140}",
            ),
            (any::<[u8; 20]>(), any::<[u8; 20]>(), any::<[u8; 32]>()),
            (
                any::<[u8; 32]>(),
                any::<u64>(),
                any::<u128>(),
                any::<[u8; 32]>(),
            ),
        )
            .prop_map(
                |(
                    (version, scheme, network, signature),
                    (from, to, nonce),
                    (v, after, before, _),
                )| {
                    let mut p = PaymentPayload {
                        version,
                        scheme,
                        network,
                        signature,
                        authorization: Authorization {
                            from: Address(from),
                            to: Address(to),
                            value: U256(v),
                            valid_after: U256::from_u128(u128::from(after)),
                            valid_before: U256::from_u128(before),
                            nonce,
                        },
                        raw: Value::Null,
                    };
                    p.raw = p.to_json();
                    p
                },
            )
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(p in payload()) {
            prop_assert_eq!(PaymentPayload::decode(p.encode().as_bytes()), Ok(p));
        }

        #[test]
        fn u256_round_trips(bytes in any::<[u8; 32]>()) {
            let n = U256(bytes);
            prop_assert_eq!(U256::parse_decimal(&n.to_decimal()), Some(n));
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = PaymentPayload::decode(&bytes);
            let _ = PaymentPayload::decode(STANDARD.encode(&bytes).as_bytes());
        }
    }
}
