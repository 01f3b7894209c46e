//! Per-request wallet signatures (SPEC §6): `X-Wallet-Address`, `X-Timestamp`,
//! `X-Wallet-Signature` over a text that names the method, the path and a hash of the canonical
//! query and the raw body. Everything here is pure: parsing the headers, the canonical query, the
//! signed text and the signature check, with `now` a parameter. The single-use mark is recorded by
//! [`crate::store::replay`] inside the transaction that finds the wallet's account.
//!
//! WIRE FORMAT: the text's first line, its line prefixes and their order are fixed by SPEC §6.

use sha2::{Digest, Sha256};

use crate::crypto::eth::{Address, AddressError, parse_signature_hex, recover_eip191_signer};
use crate::crypto::solana::{SolanaAddress, parse_ed25519_signature, verify_ed25519_strict};
use crate::crypto::to_hex;
use crate::store::accounts::Wallet;
use crate::time::Timestamp;
use crate::web::query::parse_query;

/// The header names, lowercase as `http` stores them.
pub const ADDRESS_HEADER: &str = "x-wallet-address";
pub const TIMESTAMP_HEADER: &str = "x-timestamp";
pub const SIGNATURE_HEADER: &str = "x-wallet-signature";
/// The three as header names (a `&str` name is parsed anew on every lookup).
pub static ADDRESS: http::HeaderName = http::HeaderName::from_static(ADDRESS_HEADER);
pub static TIMESTAMP: http::HeaderName = http::HeaderName::from_static(TIMESTAMP_HEADER);
pub static SIGNATURE: http::HeaderName = http::HeaderName::from_static(SIGNATURE_HEADER);

/// How far the signed timestamp may be from the server clock, either way (SPEC §6).
pub const MAX_SKEW_MS: i64 = 5 * 60_000;
/// Longest accepted `X-Timestamp`: 15 digits is beyond the year 33000 in milliseconds.
const MAX_TIMESTAMP_DIGITS: usize = 15;
/// Longest accepted header value of the other two (a 65-byte hex signature is 132 characters).
const MAX_HEADER_LEN: usize = 200;
const FIRST_LINE: &str = "Eliza Cloud Authentication";

/// A wallet as the address header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletAddress {
    Evm(Address),
    Solana(SolanaAddress),
}

impl WalletAddress {
    /// `0x` + 40 hex digits is EVM: all lowercase, all uppercase or EIP-55 mixed case (a mixed
    /// case that is not the checksum is a typo and refused). Anything else must be base58 of 32
    /// bytes.
    pub fn parse(text: &str) -> Result<WalletAddress, WalletError> {
        if text.starts_with("0x") {
            let address = Address::parse_any_case(text).map_err(|_| WalletError::Address)?;
            let digits = text.get(2..).unwrap_or_default();
            let one_case = !digits.bytes().any(|b| b.is_ascii_uppercase())
                || !digits.bytes().any(|b| b.is_ascii_lowercase());
            return match Address::parse_checksummed(text) {
                Ok(_) => Ok(WalletAddress::Evm(address)),
                Err(AddressError::Checksum) if one_case => Ok(WalletAddress::Evm(address)),
                Err(_) => Err(WalletError::AddressChecksum),
            };
        }
        SolanaAddress::parse(text)
            .map(WalletAddress::Solana)
            .map_err(|_| WalletError::Address)
    }

    /// The account this wallet signs in to: lowercase hex for EVM, base58 for Solana.
    pub fn wallet(&self) -> Wallet {
        match self {
            WalletAddress::Evm(a) => Wallet::Evm(a.to_lower_hex()),
            WalletAddress::Solana(a) => Wallet::Solana(a.to_base58()),
        }
    }
}

/// Why a set of wallet headers was refused; `reason` labels logs and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletError {
    /// One or two of the three headers.
    Partial,
    /// A header given twice, or not visible ASCII.
    HeaderValue,
    Address,
    AddressChecksum,
    Timestamp,
    /// Outside ±5 minutes of the server clock.
    TimestampWindow,
    Query,
    SignatureFormat,
    /// Well formed but does not verify for the address (or high S, or a bad v).
    Signature,
    /// Already accepted once.
    Replay,
}

impl WalletError {
    pub const fn reason(self) -> &'static str {
        match self {
            WalletError::Partial => "partial_wallet_headers",
            WalletError::HeaderValue => "malformed_wallet_header",
            WalletError::Address => "malformed_wallet_address",
            WalletError::AddressChecksum => "wallet_address_checksum",
            WalletError::Timestamp => "malformed_timestamp",
            WalletError::TimestampWindow => "timestamp_outside_window",
            WalletError::Query => "malformed_query",
            WalletError::SignatureFormat => "malformed_wallet_signature",
            WalletError::Signature => "signature_invalid",
            WalletError::Replay => "replayed_signature",
        }
    }
}

/// The three headers, parsed; `timestamp_text` is kept because it is what was signed. `Debug`
/// leaves the signature out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct WalletHeaders<'a> {
    pub address: WalletAddress,
    pub timestamp_text: &'a str,
    pub timestamp: Timestamp,
    pub signature: &'a str,
}

impl std::fmt::Debug for WalletHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletHeaders")
            .field("address", &self.address)
            .field("timestamp", &self.timestamp)
            .field("signature", &"<redacted>")
            .finish()
    }
}

fn visible_ascii(value: &[u8]) -> Result<&str, WalletError> {
    if value.is_empty() || value.len() > MAX_HEADER_LEN || !value.iter().all(u8::is_ascii_graphic) {
        return Err(WalletError::HeaderValue);
    }
    std::str::from_utf8(value).map_err(|_| WalletError::HeaderValue)
}

/// `X-Timestamp`: decimal digits only (no sign, space or exponent), milliseconds.
pub fn parse_timestamp(text: &str) -> Result<Timestamp, WalletError> {
    if text.is_empty()
        || text.len() > MAX_TIMESTAMP_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(WalletError::Timestamp);
    }
    text.parse::<i64>()
        .map(Timestamp)
        .map_err(|_| WalletError::Timestamp)
}

/// Parses the three header values (each `None` when absent). `Ok(None)` when none is present;
/// one or two present is [`WalletError::Partial`].
pub fn parse_headers<'a>(
    address: Option<&'a [u8]>,
    timestamp: Option<&'a [u8]>,
    signature: Option<&'a [u8]>,
) -> Result<Option<WalletHeaders<'a>>, WalletError> {
    let (address, timestamp, signature) = match (address, timestamp, signature) {
        (None, None, None) => return Ok(None),
        (Some(a), Some(t), Some(s)) => (a, t, s),
        _ => return Err(WalletError::Partial),
    };
    let timestamp_text = visible_ascii(timestamp).map_err(|_| WalletError::Timestamp)?;
    Ok(Some(WalletHeaders {
        address: WalletAddress::parse(visible_ascii(address)?)?,
        timestamp: parse_timestamp(timestamp_text)?,
        timestamp_text,
        signature: visible_ascii(signature)?,
    }))
}

/// The canonical query: decoded `key=value` pairs sorted by key then value (bytewise), joined by
/// `&`; empty without a query. Empty parts (`a=1&&b=2`) are skipped, a part without `=` is a key
/// with an empty value, `+` is a space.
pub fn canonical_query(query: Option<&str>) -> Result<String, WalletError> {
    let mut pairs = parse_query(query.unwrap_or("")).map_err(|_| WalletError::Query)?;
    pairs.sort_unstable();
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    Ok(out)
}

/// Hex sha256 of `canonical query ‖ "\n" ‖ raw body`.
pub fn payload_sha256(canonical_query: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(canonical_query.as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    to_hex(&hasher.finalize())
}

/// The five-line text; with `payload_hash` `None`, the older four-line one.
pub fn signed_text(
    timestamp_text: &str,
    method: &str,
    path: &str,
    payload_hash: Option<&str>,
) -> String {
    let mut text =
        format!("{FIRST_LINE}\nTimestamp: {timestamp_text}\nMethod: {method}\nPath: {path}");
    if let Some(hash) = payload_hash {
        text.push_str("\nPayload-SHA256: ");
        text.push_str(hash);
    }
    text
}

/// What a request is, for its signature.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as received, percent-encoding and all, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// A wallet whose signature checked out, with the mark that makes it single-use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWallet {
    pub address: WalletAddress,
    pub timestamp: Timestamp,
    /// sha256 over (address, timestamp, method, path, payload hash): the replay key.
    pub mark: [u8; 32],
}

fn signature_verifies(address: &WalletAddress, text: &str, signature: &str) -> bool {
    match address {
        WalletAddress::Evm(expected) => parse_signature_hex(signature)
            .and_then(|rsv| recover_eip191_signer(text.as_bytes(), &rsv))
            .is_ok_and(|signer| signer == *expected),
        WalletAddress::Solana(key) => parse_ed25519_signature(signature)
            .is_some_and(|sig| verify_ed25519_strict(&key.0, text.as_bytes(), &sig).is_ok()),
    }
}

fn signature_well_formed(address: &WalletAddress, signature: &str) -> bool {
    match address {
        WalletAddress::Evm(_) => parse_signature_hex(signature).is_ok(),
        WalletAddress::Solana(_) => parse_ed25519_signature(signature).is_some(),
    }
}

/// Every check of SPEC §6 but the single use: the window at `now`, the signature over the
/// five-line text (or, with neither query nor body, the four-line one).
pub fn verify(
    headers: &WalletHeaders<'_>,
    request: &SignedRequest<'_>,
    now: Timestamp,
) -> Result<VerifiedWallet, WalletError> {
    let skew = headers.timestamp.millis().saturating_sub(now.millis());
    if skew.saturating_abs() > MAX_SKEW_MS {
        return Err(WalletError::TimestampWindow);
    }
    if !signature_well_formed(&headers.address, headers.signature) {
        return Err(WalletError::SignatureFormat);
    }
    let canonical = canonical_query(request.query)?;
    let hash = payload_sha256(&canonical, request.body);
    let text = signed_text(
        headers.timestamp_text,
        request.method,
        request.path,
        Some(&hash),
    );
    let mut ok = signature_verifies(&headers.address, &text, headers.signature);
    if !ok && canonical.is_empty() && request.body.is_empty() {
        let legacy = signed_text(headers.timestamp_text, request.method, request.path, None);
        ok = signature_verifies(&headers.address, &legacy, headers.signature);
    }
    if !ok {
        return Err(WalletError::Signature);
    }
    let mut mark = Sha256::new();
    for part in [
        headers.address.wallet().key(),
        headers.timestamp_text,
        request.method,
        request.path,
        &hash,
    ] {
        mark.update((part.len() as u64).to_be_bytes());
        mark.update(part.as_bytes());
    }
    Ok(VerifiedWallet {
        address: headers.address,
        timestamp: headers.timestamp,
        mark: mark.finalize().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::eth::eip191_hash;
    use proptest::prelude::*;

    const T: i64 = 1_767_225_600_000;

    fn evm() -> (k256::ecdsa::SigningKey, String) {
        let key = k256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let address = Address::of_key(key.verifying_key()).to_checksum();
        (key, address)
    }

    fn sign_evm(key: &k256::ecdsa::SigningKey, text: &str) -> String {
        let (sig, recid) = key.sign_prehash_recoverable(&eip191_hash(text.as_bytes()));
        format!("0x{}{:02x}", to_hex(&sig.to_bytes()), 27 + recid.to_byte())
    }

    fn headers<'a>(address: &'a str, ts: &'a str, sig: &'a str) -> WalletHeaders<'a> {
        parse_headers(
            Some(address.as_bytes()),
            Some(ts.as_bytes()),
            Some(sig.as_bytes()),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn the_signed_text_is_exact() {
        let text = signed_text("1700000000000", "POST", "/api/v1/x", Some("ab"));
        assert_eq!(
            text,
            "Eliza Cloud Authentication\nTimestamp: 1700000000000\nMethod: POST\nPath: /api/v1/x\n\
             Payload-SHA256: ab"
        );
        assert!(!signed_text("1", "GET", "/", None).contains("Payload"));
        // Empty query and empty body: sha256("\n").
        assert_eq!(
            payload_sha256("", b""),
            "01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b"
        );
    }

    #[test]
    fn canonical_query_sorts_decoded_pairs() {
        assert_eq!(canonical_query(None).unwrap(), "");
        assert_eq!(canonical_query(Some("")).unwrap(), "");
        assert_eq!(
            canonical_query(Some("b=2&a=1&a=0&c")).unwrap(),
            "a=0&a=1&b=2&c="
        );
        assert_eq!(
            canonical_query(Some("q=a%20b&r=x+y")).unwrap(),
            "q=a b&r=x y"
        );
        assert_eq!(canonical_query(Some("a=%zz")), Err(WalletError::Query));
    }

    #[test]
    fn headers_parse_strictly() {
        let (_, address) = evm();
        assert_eq!(parse_headers(None, None, None), Ok(None));
        assert_eq!(
            parse_headers(Some(b"0x"), None, None),
            Err(WalletError::Partial)
        );
        assert_eq!(
            parse_headers(Some(address.as_bytes()), Some(b"1"), None),
            Err(WalletError::Partial)
        );
        for bad_ts in [
            "",
            "+1",
            "-1",
            "1e3",
            " 1",
            "1.0",
            "0x10",
            "1234567890123456",
        ] {
            assert_eq!(
                parse_headers(
                    Some(address.as_bytes()),
                    Some(bad_ts.as_bytes()),
                    Some(b"0x00")
                ),
                Err(WalletError::Timestamp),
                "{bad_ts}"
            );
        }
        let lower = address.to_ascii_lowercase();
        let upper = format!("0x{}", address[2..].to_ascii_uppercase());
        for ok in [&address, &lower, &upper] {
            assert!(WalletAddress::parse(ok).is_ok(), "{ok}");
        }
        // Mixed case that is not the checksum: one letter's case flipped.
        let flipped: String = {
            let i = address[2..]
                .find(|c: char| c.is_ascii_alphabetic())
                .unwrap()
                + 2;
            let mut s = address.clone().into_bytes();
            s[i] ^= 0x20;
            String::from_utf8(s).unwrap()
        };
        assert_eq!(
            WalletAddress::parse(&flipped),
            Err(WalletError::AddressChecksum)
        );
        for bad in ["0x1234", "0xzz", "abc", "0OIl", ""] {
            assert!(WalletAddress::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_headers(
                Some(address.as_bytes()),
                Some(b"1"),
                Some("sig with space".as_bytes())
            ),
            Err(WalletError::HeaderValue)
        );
    }

    #[test]
    fn verifies_five_and_four_line_texts_in_the_window() {
        let (key, address) = evm();
        let ts = T.to_string();
        let req = SignedRequest {
            method: "GET",
            path: "/api/v1/auth/whoami",
            query: None,
            body: b"",
        };
        let five = signed_text(&ts, "GET", req.path, Some(&payload_sha256("", b"")));
        let sig = sign_evm(&key, &five);
        let h = headers(&address, &ts, &sig);
        let now = Timestamp(T);
        assert!(verify(&h, &req, now).is_ok());
        assert!(verify(&h, &req, Timestamp(T + MAX_SKEW_MS)).is_ok());
        assert!(verify(&h, &req, Timestamp(T - MAX_SKEW_MS)).is_ok());
        assert_eq!(
            verify(&h, &req, Timestamp(T + MAX_SKEW_MS + 1)),
            Err(WalletError::TimestampWindow)
        );
        assert_eq!(
            verify(&h, &req, Timestamp(T - MAX_SKEW_MS - 1)),
            Err(WalletError::TimestampWindow)
        );
        let four = signed_text(&ts, "GET", req.path, None);
        let sig4 = sign_evm(&key, &four);
        let h4 = headers(&address, &ts, &sig4);
        assert_eq!(
            verify(&h4, &req, now).unwrap().mark,
            verify(&h, &req, now).unwrap().mark
        );
        let with_body = SignedRequest { body: b"{}", ..req };
        assert_eq!(verify(&h4, &with_body, now), Err(WalletError::Signature));
        let with_query = SignedRequest {
            query: Some("a=1"),
            ..req
        };
        assert_eq!(verify(&h4, &with_query, now), Err(WalletError::Signature));
        let other_path = SignedRequest {
            path: "/api/v1/dashboard",
            ..req
        };
        assert_eq!(verify(&h, &other_path, now), Err(WalletError::Signature));
        let other_method = SignedRequest {
            method: "POST",
            ..req
        };
        assert_eq!(verify(&h, &other_method, now), Err(WalletError::Signature));
        // A Solana-style signature for an EVM address is refused as malformed.
        let h = headers(&address, &ts, "3yZe7d");
        assert_eq!(verify(&h, &req, now), Err(WalletError::SignatureFormat));
    }

    #[test]
    fn solana_signatures_in_base58_or_hex() {
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let address = SolanaAddress(key.verifying_key().to_bytes()).to_base58();
        let ts = T.to_string();
        let req = SignedRequest {
            method: "POST",
            path: "/api/v1/api-keys",
            query: Some("z=1&a=2"),
            body: br#"{"name":"x"}"#,
        };
        let hash = payload_sha256("a=2&z=1", req.body);
        let text = signed_text(&ts, "POST", req.path, Some(&hash));
        let sig = key.sign(text.as_bytes()).to_bytes();
        let b58 = crate::crypto::solana::base58_encode(&sig);
        let hex = format!("0x{}", to_hex(&sig));
        for s in [&b58, &hex] {
            let h = headers(&address, &ts, s);
            let v = verify(&h, &req, Timestamp(T)).unwrap();
            assert_eq!(v.address.wallet(), Wallet::Solana(address.clone()));
        }
        let tampered = SignedRequest {
            body: br#"{"name":"y"}"#,
            ..req
        };
        let h = headers(&address, &ts, &b58);
        assert_eq!(
            verify(&h, &tampered, Timestamp(T)),
            Err(WalletError::Signature)
        );
        // An EVM-style 65-byte signature for a Solana address.
        let evm_style = format!("0x{}", "11".repeat(65));
        let h = headers(&address, &ts, &evm_style);
        assert_eq!(
            verify(&h, &req, Timestamp(T)),
            Err(WalletError::SignatureFormat)
        );
    }

    fn encode_component(s: &str, style: u8) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            let plain = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
            match (plain, b, style % 3) {
                (true, _, 0 | 1) => out.push(char::from(b)),
                (_, b' ', 1) => out.push('+'),
                (true, _, _) if b.is_ascii_digit() => out.push(char::from(b)),
                (_, _, 2) => out.push_str(&format!("%{b:02x}")),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn canonical_query_ignores_order_and_encoding(
            pairs in proptest::collection::vec(("[a-z&=+% é]{0,6}", "[a-z0-9&=+% é]{0,6}"), 0..6),
            styles in proptest::collection::vec(0u8..3, 12),
            shuffle in any::<u64>(),
        ) {
            let encode = |pairs: &[(String, String)], offset: usize| -> String {
                pairs.iter().enumerate().map(|(i, (k, v))| {
                    let s = styles[(i + offset) % styles.len()];
                    format!("{}={}", encode_component(k, s), encode_component(v, s + 1))
                }).collect::<Vec<_>>().join("&")
            };
            let pairs: Vec<(String, String)> =
                pairs.into_iter().filter(|(k, v)| !(k.is_empty() && v.is_empty())).collect();
            let mut shuffled = pairs.clone();
            let n = shuffled.len();
            if n > 1 {
                let mut x = shuffle;
                for i in (1..n).rev() {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (x >> 33) as usize % (i + 1));
                }
            }
            let a = canonical_query(Some(&encode(&pairs, 0))).unwrap();
            let b = canonical_query(Some(&encode(&shuffled, 5))).unwrap();
            prop_assert_eq!(&a, &b);
            let mut sorted = pairs.clone();
            sorted.sort();
            let expected: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
            prop_assert_eq!(a, expected.join("&"));
        }

        #[test]
        fn header_parsing_never_panics(
            a in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
            t in proptest::option::of("[0-9+ -]{0,20}"),
            s in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..140)),
        ) {
            let _ = parse_headers(a.as_deref(), t.as_deref().map(str::as_bytes), s.as_deref());
        }
    }
}
