//! Sign-In With Solana messages: the layout of the Solana wallet-standard `createSignInMessage`
//! (`<domain> wants you to sign in with your Solana account:`, the base58 address, an optional
//! statement, then the fields, each block separated by one blank line). URI, Version, Chain ID,
//! Nonce and Issued At are required here (SPEC §5.2: the nonce must be bound). Like SIWE, the
//! printer gives back the exact bytes the parser accepted.

use super::rfc3986::{is_authority, is_pchars, is_uri};
use super::siwe::{MAX_MESSAGE_BYTES, MessageTime};
use crate::crypto::solana::SolanaAddress;

const HEADER_SUFFIX: &str = " wants you to sign in with your Solana account:";

/// Chain ids a SIWS message may name (SPEC §5.2).
pub const CHAIN_IDS: [&str; 7] = [
    "solana:mainnet",
    "solana:devnet",
    "solana:testnet",
    "mainnet",
    "devnet",
    "testnet",
    "localnet",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiwsMessage {
    pub domain: String,
    pub address: SolanaAddress,
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: String,
    pub nonce: String,
    pub issued_at: MessageTime,
    pub expiration_time: Option<MessageTime>,
    pub not_before: Option<MessageTime>,
    pub request_id: Option<String>,
    pub resources: Vec<String>,
}

pub use super::siwe::SiweError as SiwsError;

impl SiwsMessage {
    pub fn parse(message: &str) -> Result<SiwsMessage, SiwsError> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(SiwsError::TooLong);
        }
        let mut lines = message.split('\n').peekable();
        let header = lines.next().ok_or(SiwsError::Header)?;
        let domain = header
            .strip_suffix(HEADER_SUFFIX)
            .ok_or(SiwsError::Header)?;
        if !is_authority(domain) {
            return Err(SiwsError::Domain);
        }
        let address = lines.next().ok_or(SiwsError::Address)?;
        let address = SolanaAddress::parse(address).map_err(|_| SiwsError::Address)?;
        if lines.next() != Some("") {
            return Err(SiwsError::Structure);
        }
        // An optional statement block, then the fields block.
        let statement = match lines.peek() {
            Some(line) if !line.starts_with("URI: ") => {
                let text = *line;
                if !crate::auth::rfc3986::is_statement(text) {
                    return Err(SiwsError::Statement);
                }
                lines.next();
                if lines.next() != Some("") {
                    return Err(SiwsError::Statement);
                }
                Some(text.to_string())
            }
            _ => None,
        };
        let mut field = |prefix: &str, error: SiwsError| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(prefix))
                .ok_or(error)
        };
        let uri = field("URI: ", SiwsError::Uri)?;
        if !is_uri(uri) {
            return Err(SiwsError::Uri);
        }
        let version = field("Version: ", SiwsError::Version)?;
        if version != "1" {
            return Err(SiwsError::Version);
        }
        let chain_id = field("Chain ID: ", SiwsError::ChainId)?;
        if !CHAIN_IDS.contains(&chain_id) {
            return Err(SiwsError::ChainId);
        }
        let nonce = field("Nonce: ", SiwsError::Nonce)?;
        if nonce.len() < 8 || !nonce.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SiwsError::Nonce);
        }
        let issued_at = field("Issued At: ", SiwsError::IssuedAt)?;
        let issued_at = MessageTime::parse(issued_at).ok_or(SiwsError::IssuedAt)?;
        let mut optional = |prefix: &str| -> Option<&str> {
            let value = lines.peek()?.strip_prefix(prefix)?;
            lines.next();
            Some(value)
        };
        let expiration_time = match optional("Expiration Time: ") {
            Some(t) => Some(MessageTime::parse(t).ok_or(SiwsError::ExpirationTime)?),
            None => None,
        };
        let not_before = match optional("Not Before: ") {
            Some(t) => Some(MessageTime::parse(t).ok_or(SiwsError::NotBefore)?),
            None => None,
        };
        let request_id = match optional("Request ID: ") {
            Some(id) if is_pchars(id) => Some(id.to_string()),
            Some(_) => return Err(SiwsError::RequestId),
            None => None,
        };
        let mut resources = Vec::new();
        if lines.peek() == Some(&"Resources:") {
            lines.next();
            for line in lines.by_ref() {
                let resource = line.strip_prefix("- ").ok_or(SiwsError::Resources)?;
                if !is_uri(resource) {
                    return Err(SiwsError::Resources);
                }
                resources.push(resource.to_string());
            }
            if resources.is_empty() {
                return Err(SiwsError::Resources);
            }
        }
        if lines.next().is_some() {
            return Err(SiwsError::Structure);
        }
        Ok(SiwsMessage {
            domain: domain.to_string(),
            address,
            statement,
            uri: uri.to_string(),
            version: version.to_string(),
            chain_id: chain_id.to_string(),
            nonce: nonce.to_string(),
            issued_at,
            expiration_time,
            not_before,
            request_id,
            resources,
        })
    }

    pub fn print_unchecked(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str(&self.domain);
        out.push_str(HEADER_SUFFIX);
        out.push('\n');
        out.push_str(&self.address.to_base58());
        if let Some(statement) = &self.statement {
            out.push_str("\n\n");
            out.push_str(statement);
        }
        out.push_str("\n\nURI: ");
        out.push_str(&self.uri);
        out.push_str("\nVersion: ");
        out.push_str(&self.version);
        out.push_str("\nChain ID: ");
        out.push_str(&self.chain_id);
        out.push_str("\nNonce: ");
        out.push_str(&self.nonce);
        out.push_str("\nIssued At: ");
        out.push_str(&self.issued_at.text);
        for (prefix, value) in [
            (
                "\nExpiration Time: ",
                self.expiration_time.as_ref().map(|t| t.text.as_str()),
            ),
            (
                "\nNot Before: ",
                self.not_before.as_ref().map(|t| t.text.as_str()),
            ),
            ("\nRequest ID: ", self.request_id.as_deref()),
        ] {
            if let Some(value) = value {
                out.push_str(prefix);
                out.push_str(value);
            }
        }
        if !self.resources.is_empty() {
            out.push_str("\nResources:");
            for r in &self.resources {
                out.push_str("\n- ");
                out.push_str(r);
            }
        }
        out
    }

    /// The same time rules as SIWE.
    pub fn check_time(
        &self,
        now: crate::time::Timestamp,
        max_issued_skew_ms: i64,
    ) -> Result<(), super::siwe::TimeError> {
        super::siwe::check_times(
            self.expiration_time.as_ref(),
            self.not_before.as_ref(),
            &self.issued_at,
            now,
            max_issued_skew_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    const SAMPLE: &str = "localhost:3000 wants you to sign in with your Solana account:\n\
        11111111111111111111111111111111\n\nSign in to Eliza Cloud\n\nURI: http://localhost:3000\n\
        Version: 1\nChain ID: solana:devnet\nNonce: abcdef0123456789\nIssued At: 2026-01-01T00:00:00.000Z";

    #[test]
    fn parses_prints_and_requires_the_binding_fields() {
        let m = SiwsMessage::parse(SAMPLE).unwrap();
        assert_eq!(m.chain_id, "solana:devnet");
        assert_eq!(m.statement.as_deref(), Some("Sign in to Eliza Cloud"));
        assert_eq!(m.print_unchecked(), SAMPLE);
        let no_statement = SAMPLE.replace("Sign in to Eliza Cloud\n\n", "");
        let m = SiwsMessage::parse(&no_statement).unwrap();
        assert_eq!(m.statement, None);
        assert_eq!(m.print_unchecked(), no_statement);
        for (from, to, error) in [
            (
                "Chain ID: solana:devnet",
                "Chain ID: ethereum",
                SiwsError::ChainId,
            ),
            ("Nonce: abcdef0123456789", "Nonce: short", SiwsError::Nonce),
            ("\nVersion: 1", "", SiwsError::Version),
            (
                "11111111111111111111111111111111",
                "1111111111111111111111111111111",
                SiwsError::Address,
            ),
            (
                "11111111111111111111111111111111",
                "0OIl",
                SiwsError::Address,
            ),
        ] {
            assert_eq!(
                SiwsMessage::parse(&SAMPLE.replace(from, to)),
                Err(error),
                "{to}"
            );
        }
        assert_eq!(
            SiwsMessage::parse(&format!("{SAMPLE}\n")),
            Err(SiwsError::Structure)
        );
        assert_eq!(
            SiwsMessage::parse(&format!("{SAMPLE}\nResources:")),
            Err(SiwsError::Resources)
        );
        assert!(SiwsMessage::parse(&format!("{SAMPLE}\nResources:\n- https://a.org")).is_ok());
    }

    fn message() -> impl Strategy<Value = SiwsMessage> {
        (
            (
                "[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?",
                any::<[u8; 32]>(),
                proptest::option::of("[A-Za-z0-9 .,:;!?'()/-]{1,60}"),
                "https://[a-z]{1,10}\\.org(/[a-z]{0,8})?",
            ),
            (
                proptest::sample::select(CHAIN_IDS.to_vec()),
                "[A-Za-z0-9]{8,32}",
                0i64..4_000_000_000_000,
                proptest::option::of(0i64..4_000_000_000_000),
            ),
            (
                proptest::option::of(0i64..4_000_000_000_000),
                proptest::option::of("[A-Za-z0-9_:@-]{0,20}"),
                proptest::collection::vec("(https|ipfs)://[a-z0-9]{1,20}", 0..3),
            ),
        )
            .prop_map(
                |(
                    (domain, key, statement, uri),
                    (chain, nonce, issued, exp),
                    (nbf, request_id, resources),
                )| {
                    let time = |ms: i64| MessageTime {
                        text: Timestamp(ms).to_rfc3339(),
                        at: Timestamp(ms),
                    };
                    SiwsMessage {
                        domain,
                        address: SolanaAddress(key),
                        statement: statement
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty() && !s.starts_with("URI: ")),
                        uri,
                        version: "1".into(),
                        chain_id: chain.to_string(),
                        nonce,
                        issued_at: time(issued),
                        expiration_time: exp.map(time),
                        not_before: nbf.map(time),
                        request_id,
                        resources,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn print_then_parse_round_trips(m in message()) {
            let text = m.print_unchecked();
            let parsed = SiwsMessage::parse(&text);
            prop_assert_eq!(parsed.as_ref(), Ok(&m), "{}", text);
        }

        #[test]
        fn parse_never_panics(text in "(.{0,40}\n){0,16}") {
            if let Ok(m) = SiwsMessage::parse(&text) {
                prop_assert_eq!(m.print_unchecked(), text);
            }
        }
    }
}

/// What a verify route expects of a Sign-In With Solana message: our origin. The chain is bound
/// by the nonce's MAC, which the route checks before.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Host (with port) of the public URL.
    pub domain: &'a str,
    /// The URI the nonce was issued for (our public URL).
    pub uri: &'a str,
}

/// Every check of SPEC §5.2 but the nonce's, in order, as [`super::siwe::verify_signed`] does
/// for SIWE: domain, URI, time, then the strict Ed25519 signature (base58 or `0x` hex) over the
/// exact `text` received, by the message's address. Answers the reason for the first failure.
pub fn verify_signed(
    message: &SiwsMessage,
    text: &str,
    signature: &str,
    expected: &Expected<'_>,
    now: crate::time::Timestamp,
    max_issued_skew_ms: i64,
) -> Result<(), &'static str> {
    if message.domain != expected.domain {
        return Err("domain_mismatch");
    }
    if message.uri != expected.uri {
        return Err("uri_mismatch");
    }
    message
        .check_time(now, max_issued_skew_ms)
        .map_err(super::siwe::TimeError::reason)?;
    let signature =
        crate::crypto::solana::parse_ed25519_signature(signature).ok_or("signature_format")?;
    crate::crypto::solana::verify_ed25519_strict(&message.address.0, text.as_bytes(), &signature)
        .map_err(|_| "signature_invalid")?;
    Ok(())
}
