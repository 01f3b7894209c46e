//! Signing deliveries so that both kinds of receivers verify them unmodified (SPEC §10):
//! Standard Webhooks (`webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>`, the
//! key the base64-decoded part of the `whsec_` secret) and the hosted cloud's `X-Eliza-Signature:
//! sha256=<hex HMAC-SHA256(secret string, "<RFC 3339 ts>.<body>")>`. [`verify_standard`] is
//! the receiving side, for tests and for the README's example: lengths first, then a
//! constant-time comparison (the anchors' known verifier bugs are an empty signature accepted
//! and a panic on unequal lengths).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::webhooks::WebhookSecret;

type HmacSha256 = Hmac<Sha256>;

/// Receivers allow this much skew between `webhook-timestamp` and their clock.
pub const TOLERANCE_SECS: i64 = 300;

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> WebhookSecret {
    let bytes: [u8; 32] = rand::random();
    WebhookSecret::new(format!("whsec_{}", STANDARD.encode(bytes)))
}

/// The HMAC key of a `whsec_` secret (its base64 part decoded); a secret that is not base64 is
/// used as its bytes, as the reference libraries do for non-`whsec_` secrets.
fn standard_key(secret: &WebhookSecret) -> Vec<u8> {
    let text = secret.expose();
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| text.as_bytes().to_vec())
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so `new_from_slice` never fails; the fallback (a zero
    // key) keeps the function total without a panic.
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
}

/// One `v1,<base64>` entry of `webhook-signature`.
pub fn standard_signature(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(&standard_key(secret));
    m.update(id.as_bytes());
    m.update(b".");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    format!("v1,{}", STANDARD.encode(m.finalize().into_bytes()))
}

/// The whole `webhook-signature` value: one entry per valid secret, space-separated.
pub fn standard_header(
    secrets: &[&WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| standard_signature(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `X-Eliza-Signature`: `sha256=<hex>` keyed with the whole secret string's bytes.
pub fn eliza_signature(secret: &WebhookSecret, timestamp: &str, body: &[u8]) -> String {
    let mut m = mac(secret.expose().as_bytes());
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    let digest = m.finalize().into_bytes();
    let mut hex = String::with_capacity(64 + 7);
    hex.push_str("sha256=");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// `webhook-timestamp` is not a number or is outside the tolerance.
    Timestamp,
    /// No entry of `webhook-signature` matches.
    Signature,
}

/// Verifies a delivery as a Standard Webhooks receiver does: the timestamp within
/// [`TOLERANCE_SECS`] of `now_secs`, and some `v1,` entry equal (by length, then in constant
/// time) to the expected signature.
pub fn verify_standard(
    secret: &WebhookSecret,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Timestamp)?;
    if (now_secs - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Timestamp);
    }
    let key = standard_key(secret);
    for entry in signatures.split(' ') {
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = STANDARD.decode(encoded) else {
            continue;
        };
        // An empty or short signature is refused by length before any comparison.
        if given.len() != 32 {
            continue;
        }
        let mut m = mac(&key);
        m.update(id.as_bytes());
        m.update(b".");
        m.update(ts.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        if m.verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference Rust library's `test_sign` vector (standard-webhooks, FIELD-NOTES).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn the_specifications_vector() {
        let secret = WebhookSecret::new(SECRET.into());
        assert_eq!(
            standard_signature(&secret, ID, TS, BODY),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        let header = standard_signature(&secret, ID, TS, BODY);
        assert_eq!(
            verify_standard(&secret, ID, "1649367553", &header, BODY, TS),
            Ok(())
        );
    }

    #[test]
    fn known_verifier_bugs_are_refused() {
        let secret = WebhookSecret::new(SECRET.into());
        for bad in [
            "v1,",
            "v1",
            "",
            "v1,AAAA",
            "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ] {
            assert_eq!(
                verify_standard(&secret, ID, "1649367553", bad, BODY, TS),
                Err(VerifyError::Signature),
                "{bad:?}"
            );
        }
        let good = standard_signature(&secret, ID, TS, BODY);
        assert_eq!(
            verify_standard(&secret, ID, "1649367553", &good, b"{}", TS),
            Err(VerifyError::Signature)
        );
        assert_eq!(
            verify_standard(&secret, ID, "1649367553", &good, BODY, TS + 301),
            Err(VerifyError::Timestamp)
        );
        // During a rotation either entry verifies.
        let other = new_secret();
        let both = standard_header(&[&other, &secret], ID, TS, BODY);
        assert_eq!(
            verify_standard(&secret, ID, "1649367553", &both, BODY, TS),
            Ok(())
        );
        assert_eq!(
            verify_standard(&other, ID, "1649367553", &both, BODY, TS),
            Ok(())
        );
    }

    #[test]
    fn the_eliza_signature_is_hex_hmac_of_timestamp_and_body() {
        let secret = WebhookSecret::new("whsec_abc".into());
        let s = eliza_signature(&secret, "2026-01-01T00:00:00.000Z", b"{}");
        let mut m = HmacSha256::new_from_slice(b"whsec_abc").unwrap();
        m.update(b"2026-01-01T00:00:00.000Z.{}");
        let want: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s, format!("sha256={want}"));
    }

    #[test]
    fn new_secrets_are_whsec_and_32_bytes() {
        let s = new_secret();
        assert!(s.expose().starts_with("whsec_"));
        assert_eq!(standard_key(&s).len(), 32);
        assert_ne!(new_secret(), s);
    }

    proptest! {
        #[test]
        fn any_header_verifies_or_not_without_panic(header in "\\PC{0,120}", ts in "\\PC{0,12}") {
            let secret = WebhookSecret::new(SECRET.into());
            let _ = verify_standard(&secret, ID, &ts, &header, BODY, TS);
        }

        #[test]
        fn a_signature_verifies_its_own_body_only(body in proptest::collection::vec(any::<u8>(), 0..64), flip in 0usize..64) {
            let secret = new_secret();
            let sig = standard_signature(&secret, ID, TS, &body);
            prop_assert_eq!(verify_standard(&secret, ID, &TS.to_string(), &sig, &body, TS), Ok(()));
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip % changed.len();
                changed[i] ^= 1;
                prop_assert_eq!(verify_standard(&secret, ID, &TS.to_string(), &sig, &changed, TS), Err(VerifyError::Signature));
            }
        }
    }
}
