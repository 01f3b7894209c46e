//! Sign-In With Ethereum messages (EIP-4361): a parser that follows the grammar exactly and a
//! printer that gives the same bytes back. Fields keep their original text where the grammar
//! allows more than one spelling (timestamps), so `print(parse(m)) == m` for every message the
//! parser accepts.
//!
//! WIRE FORMAT: the line prefixes and their order are fixed by EIP-4361.

use crate::auth::rfc3986::{is_authority, is_pchars, is_scheme, is_statement, is_uri};
use crate::crypto::eth::{Address, AddressError, parse_signature_hex, recover_eip191_signer};
use crate::time::{Timestamp, parse_rfc3339};

/// Largest message accepted, in bytes (SPEC §5.1).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;
const HEADER_SUFFIX: &str = " wants you to sign in with your Ethereum account:";
const MIN_NONCE_LEN: usize = 8;

/// A timestamp as written in the message, and the instant it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTime {
    pub text: String,
    pub at: Timestamp,
}

impl MessageTime {
    pub fn parse(text: &str) -> Option<MessageTime> {
        parse_rfc3339(text).map(|at| MessageTime {
            text: text.to_string(),
            at,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    pub scheme: Option<String>,
    pub domain: String,
    pub address: Address,
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at: MessageTime,
    pub expiration_time: Option<MessageTime>,
    pub not_before: Option<MessageTime>,
    pub request_id: Option<String>,
    pub resources: Vec<String>,
}

/// Which part of a message is wrong (for logs; callers answer a generic 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiweError {
    TooLong,
    Header,
    Scheme,
    Domain,
    Address,
    AddressChecksum,
    Statement,
    Uri,
    Version,
    ChainId,
    Nonce,
    IssuedAt,
    ExpirationTime,
    NotBefore,
    RequestId,
    Resources,
    /// Lines missing, out of order, or left over.
    Structure,
}

impl SiweError {
    pub const fn reason(self) -> &'static str {
        match self {
            SiweError::TooLong => "message_too_long",
            SiweError::Header => "message_header",
            SiweError::Scheme => "message_scheme",
            SiweError::Domain => "message_domain",
            SiweError::Address => "message_address",
            SiweError::AddressChecksum => "message_address_not_eip55",
            SiweError::Statement => "message_statement",
            SiweError::Uri => "message_uri",
            SiweError::Version => "message_version",
            SiweError::ChainId => "message_chain_id",
            SiweError::Nonce => "message_nonce",
            SiweError::IssuedAt => "message_issued_at",
            SiweError::ExpirationTime => "message_expiration_time",
            SiweError::NotBefore => "message_not_before",
            SiweError::RequestId => "message_request_id",
            SiweError::Resources => "message_resources",
            SiweError::Structure => "message_structure",
        }
    }
}

fn is_nonce(s: &str) -> bool {
    s.len() >= MIN_NONCE_LEN && s.bytes().all(|c| c.is_ascii_alphanumeric())
}

/// Lines of the message, consumed in the grammar's order.
struct Lines<'a> {
    lines: std::iter::Peekable<std::str::Split<'a, char>>,
}

impl<'a> Lines<'a> {
    fn next(&mut self) -> Option<&'a str> {
        self.lines.next()
    }

    fn field(&mut self, prefix: &str, error: SiweError) -> Result<&'a str, SiweError> {
        self.next()
            .and_then(|line| line.strip_prefix(prefix))
            .ok_or(error)
    }

    fn optional(&mut self, prefix: &str) -> Option<&'a str> {
        let value = self.lines.peek()?.strip_prefix(prefix)?;
        self.lines.next();
        Some(value)
    }

    fn peek_is(&mut self, line: &str) -> bool {
        self.lines.peek().is_some_and(|l| *l == line)
    }
}

/// `chainId`: a positive decimal integer without sign, exponent, hex or leading zeros.
pub fn parse_evm_chain_id(text: &str) -> Option<u64> {
    let digits_only = !text.is_empty() && text.bytes().all(|c| c.is_ascii_digit());
    if !digits_only || text.starts_with('0') {
        return None;
    }
    text.parse::<u64>().ok()
}

impl SiweMessage {
    /// Parses a message exactly by the EIP-4361 grammar (no trailing newline, no extra lines).
    pub fn parse(message: &str) -> Result<SiweMessage, SiweError> {
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(SiweError::TooLong);
        }
        let mut lines = Lines {
            lines: message.split('\n').peekable(),
        };
        let header = lines.next().ok_or(SiweError::Header)?;
        let origin = header
            .strip_suffix(HEADER_SUFFIX)
            .ok_or(SiweError::Header)?;
        let (scheme, domain) = match origin.split_once("://") {
            Some((scheme, domain)) => {
                if !is_scheme(scheme) {
                    return Err(SiweError::Scheme);
                }
                (Some(scheme.to_string()), domain)
            }
            None => (None, origin),
        };
        if !is_authority(domain) {
            return Err(SiweError::Domain);
        }
        let address_text = lines.next().ok_or(SiweError::Address)?;
        let address = Address::parse_checksummed(address_text).map_err(|e| match e {
            AddressError::Checksum => SiweError::AddressChecksum,
            AddressError::Format => SiweError::Address,
        })?;
        if lines.next() != Some("") {
            return Err(SiweError::Structure);
        }
        // Either "" (no statement) or the statement followed by "".
        let statement = match lines.next() {
            Some("") => None,
            Some(text) => {
                if !is_statement(text) {
                    return Err(SiweError::Statement);
                }
                if lines.next() != Some("") {
                    return Err(SiweError::Statement);
                }
                Some(text.to_string())
            }
            None => return Err(SiweError::Structure),
        };
        let uri = lines.field("URI: ", SiweError::Uri)?;
        if !is_uri(uri) {
            return Err(SiweError::Uri);
        }
        let version = lines.field("Version: ", SiweError::Version)?;
        if version != "1" {
            return Err(SiweError::Version);
        }
        let chain_id = lines.field("Chain ID: ", SiweError::ChainId)?;
        let chain_id = parse_evm_chain_id(chain_id).ok_or(SiweError::ChainId)?;
        let nonce = lines.field("Nonce: ", SiweError::Nonce)?;
        if !is_nonce(nonce) {
            return Err(SiweError::Nonce);
        }
        let issued_at = lines.field("Issued At: ", SiweError::IssuedAt)?;
        let issued_at = MessageTime::parse(issued_at).ok_or(SiweError::IssuedAt)?;
        let expiration_time = match lines.optional("Expiration Time: ") {
            Some(t) => Some(MessageTime::parse(t).ok_or(SiweError::ExpirationTime)?),
            None => None,
        };
        let not_before = match lines.optional("Not Before: ") {
            Some(t) => Some(MessageTime::parse(t).ok_or(SiweError::NotBefore)?),
            None => None,
        };
        let request_id = match lines.optional("Request ID: ") {
            Some(id) if is_pchars(id) => Some(id.to_string()),
            Some(_) => return Err(SiweError::RequestId),
            None => None,
        };
        let mut resources = Vec::new();
        if lines.peek_is("Resources:") {
            lines.next();
            while let Some(line) = lines.next() {
                let resource = line.strip_prefix("- ").ok_or(SiweError::Resources)?;
                if !is_uri(resource) {
                    return Err(SiweError::Resources);
                }
                resources.push(resource.to_string());
            }
            // The reference parsers require at least one entry after "Resources:"; an empty
            // list would also not print back to the same bytes.
            if resources.is_empty() {
                return Err(SiweError::Resources);
            }
        }
        if lines.next().is_some() {
            return Err(SiweError::Structure);
        }
        Ok(SiweMessage {
            scheme,
            domain: domain.to_string(),
            address,
            statement,
            uri: uri.to_string(),
            version: version.to_string(),
            chain_id,
            nonce: nonce.to_string(),
            issued_at,
            expiration_time,
            not_before,
            request_id,
            resources,
        })
    }

    /// Checks every field as the parser would, so a message built from fields is one the parser
    /// accepts (the printer's precondition).
    pub fn validate(&self) -> Result<(), SiweError> {
        SiweMessage::parse(&self.print_unchecked()).map(|_| ())
    }

    /// The message text, byte for byte as EIP-4361 lays it out.
    pub fn print_unchecked(&self) -> String {
        let mut out = String::with_capacity(512);
        if let Some(scheme) = &self.scheme {
            out.push_str(scheme);
            out.push_str("://");
        }
        out.push_str(&self.domain);
        out.push_str(HEADER_SUFFIX);
        out.push('\n');
        out.push_str(&self.address.to_checksum());
        out.push_str("\n\n");
        if let Some(statement) = &self.statement {
            out.push_str(statement);
            out.push('\n');
        }
        out.push('\n');
        out.push_str("URI: ");
        out.push_str(&self.uri);
        out.push_str("\nVersion: ");
        out.push_str(&self.version);
        out.push_str("\nChain ID: ");
        out.push_str(&self.chain_id.to_string());
        out.push_str("\nNonce: ");
        out.push_str(&self.nonce);
        out.push_str("\nIssued At: ");
        out.push_str(&self.issued_at.text);
        if let Some(t) = &self.expiration_time {
            out.push_str("\nExpiration Time: ");
            out.push_str(&t.text);
        }
        if let Some(t) = &self.not_before {
            out.push_str("\nNot Before: ");
            out.push_str(&t.text);
        }
        if let Some(id) = &self.request_id {
            out.push_str("\nRequest ID: ");
            out.push_str(id);
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

    /// The time rules of SPEC §5.1 at `now` (see [`check_times`]).
    pub fn check_time(&self, now: Timestamp, max_issued_skew_ms: i64) -> Result<(), TimeError> {
        check_times(
            self.expiration_time.as_ref(),
            self.not_before.as_ref(),
            &self.issued_at,
            now,
            max_issued_skew_ms,
        )
    }
}

/// The time rules of SPEC §5.1 (shared by SIWE and SIWS) at `now`: not expired, not before its
/// Not Before, and issued at most `max_issued_skew_ms` in the future.
pub fn check_times(
    expiration_time: Option<&MessageTime>,
    not_before: Option<&MessageTime>,
    issued_at: &MessageTime,
    now: Timestamp,
    max_issued_skew_ms: i64,
) -> Result<(), TimeError> {
    if expiration_time.is_some_and(|t| t.at <= now) {
        return Err(TimeError::Expired);
    }
    if not_before.is_some_and(|t| t.at > now) {
        return Err(TimeError::NotYetValid);
    }
    if issued_at.at > now.plus_millis(max_issued_skew_ms) {
        return Err(TimeError::IssuedInFuture);
    }
    Ok(())
}

/// What a verify route expects of a message: our origin and what its nonce was issued for.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Host (with port) of the public URL.
    pub domain: &'a str,
    pub https: bool,
    /// The URI the nonce was issued for.
    pub uri: &'a str,
    /// The chain id the nonce was issued for.
    pub chain_id: u64,
}

/// Every check of SPEC §5.1 but the nonce's existence and use, in order: chain id, domain (and
/// scheme when given), URI, time, then the EIP-191 signature over the exact `text` received,
/// which must recover the message's address. Answers the reason for the first failure.
pub fn verify_signed(
    message: &SiweMessage,
    text: &str,
    signature_hex: &str,
    expected: &Expected<'_>,
    now: Timestamp,
    max_issued_skew_ms: i64,
) -> Result<(), &'static str> {
    if message.chain_id != expected.chain_id {
        return Err("nonce_chain_mismatch");
    }
    let our_scheme = if expected.https { "https" } else { "http" };
    let scheme_ok = message.scheme.as_deref().is_none_or(|s| s == our_scheme);
    if message.domain != expected.domain || !scheme_ok {
        return Err("domain_mismatch");
    }
    if message.uri != expected.uri {
        return Err("uri_mismatch");
    }
    message
        .check_time(now, max_issued_skew_ms)
        .map_err(TimeError::reason)?;
    let signature = parse_signature_hex(signature_hex).map_err(|e| e.reason())?;
    let signer = recover_eip191_signer(text.as_bytes(), &signature).map_err(|e| e.reason())?;
    if signer != message.address {
        return Err("signer_mismatch");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    Expired,
    NotYetValid,
    IssuedInFuture,
}

impl TimeError {
    pub const fn reason(self) -> &'static str {
        match self {
            TimeError::Expired => "message_expired",
            TimeError::NotYetValid => "message_not_yet_valid",
            TimeError::IssuedInFuture => "message_issued_in_future",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn chain_ids_are_strict() {
        assert_eq!(parse_evm_chain_id("1"), Some(1));
        assert_eq!(parse_evm_chain_id("8453"), Some(8453));
        for bad in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            "1e3",
            "0x1",
            " 1",
            "1.0",
            "99999999999999999999",
        ] {
            assert_eq!(parse_evm_chain_id(bad), None, "{bad}");
        }
    }

    const SAMPLE: &str = "service.org wants you to sign in with your Ethereum account:\n\
        0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n\nI accept the ServiceOrg Terms of Service: \
        https://service.org/tos\n\nURI: https://service.org/login\nVersion: 1\nChain ID: 1\n\
        Nonce: 32891757\nIssued At: 2021-09-30T16:25:24.000Z\nResources:\n- ipfs://Qme7ss3ARVgx\
        v6rXqVPiikMJ8u2NLgmgszg13pYrDKEoiu\n- https://example.com/my-web2-claim.json";

    #[test]
    fn statements_keep_to_the_grammar() {
        use crate::auth::rfc3986::is_statement;
        assert!(is_statement(
            "Sign in to Eliza Cloud: it's free (really) @ 10:00, ok?"
        ));
        for bad in [
            "",
            "a<b",
            "100%",
            "say \"hi\"",
            "a\\b",
            "x^y",
            "`x`",
            "{x}",
            "a|b",
            "tab\there",
        ] {
            assert!(!is_statement(bad), "{bad}");
        }
    }

    #[test]
    fn parses_and_prints_back() {
        let m = SiweMessage::parse(SAMPLE).unwrap();
        assert_eq!(m.domain, "service.org");
        assert_eq!(m.chain_id, 1);
        assert_eq!(m.resources.len(), 2);
        assert_eq!(m.print_unchecked(), SAMPLE);
    }

    #[test]
    fn rejects_structure_problems() {
        assert_eq!(
            SiweMessage::parse(&format!("{SAMPLE}\n")),
            Err(SiweError::Resources)
        );
        let no_resources = SAMPLE.split("\nResources:").next().unwrap();
        assert_eq!(
            SiweMessage::parse(&format!("{no_resources}\n")),
            Err(SiweError::Structure)
        );
        // Found by the fuzzer: "Resources:" with no entry parsed but printed without the line.
        assert_eq!(
            SiweMessage::parse(&format!("{no_resources}\nResources:")),
            Err(SiweError::Resources)
        );
        assert_eq!(
            SiweMessage::parse(&"x".repeat(MAX_MESSAGE_BYTES + 1)),
            Err(SiweError::TooLong)
        );
        let bad_date = no_resources.replace("2021-09-30", "2021-02-30");
        assert_eq!(SiweMessage::parse(&bad_date), Err(SiweError::IssuedAt));
        let lower = no_resources.replace(
            "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
            "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2",
        );
        assert_eq!(SiweMessage::parse(&lower), Err(SiweError::AddressChecksum));
        // "01" found by the fuzzer: it parsed as 1 and printed back as "1".
        for chain in ["0x1", "01", "0"] {
            assert_eq!(
                SiweMessage::parse(
                    &no_resources.replace("Chain ID: 1", &format!("Chain ID: {chain}"))
                ),
                Err(SiweError::ChainId),
                "{chain}"
            );
        }
    }

    #[test]
    fn time_rules() {
        let m = SiweMessage::parse(SAMPLE).unwrap();
        let issued = m.issued_at.at;
        assert_eq!(m.check_time(issued, 0), Ok(()));
        assert_eq!(
            m.check_time(issued.plus_millis(-300_001), 300_000),
            Err(TimeError::IssuedInFuture)
        );
        assert_eq!(m.check_time(issued.plus_millis(-300_000), 300_000), Ok(()));
    }

    fn message() -> impl Strategy<Value = SiweMessage> {
        (
            (
                proptest::option::of(prop_oneof![Just("https"), Just("http")]),
                "[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{1,5})?",
                any::<[u8; 20]>(),
                proptest::option::of("[A-Za-z0-9 .,:;!?'()/-]{1,60}"),
            ),
            (
                "https://[a-z]{1,10}\\.org(/[a-z]{0,8})?",
                1u64..100_000,
                "[A-Za-z0-9]{8,32}",
                0i64..4_000_000_000_000,
            ),
            (
                proptest::option::of(0i64..4_000_000_000_000),
                proptest::option::of(0i64..4_000_000_000_000),
                proptest::option::of("[A-Za-z0-9_:@-]{0,20}"),
                proptest::collection::vec("(https|ipfs)://[a-z0-9]{1,20}", 0..3),
            ),
        )
            .prop_map(
                |(
                    (scheme, domain, address, statement),
                    (uri, chain_id, nonce, issued),
                    (exp, nbf, request_id, resources),
                )| {
                    let time = |ms: i64| MessageTime {
                        text: Timestamp(ms).to_rfc3339(),
                        at: Timestamp(ms),
                    };
                    SiweMessage {
                        scheme: scheme.map(str::to_string),
                        domain,
                        address: Address(address),
                        statement: statement
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty()),
                        uri,
                        version: "1".into(),
                        chain_id,
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
            let parsed = SiweMessage::parse(&text);
            prop_assert_eq!(parsed.as_ref(), Ok(&m), "{}", text);
            prop_assert_eq!(parsed.unwrap().print_unchecked(), text);
        }

        #[test]
        fn parse_never_panics(text in "(.{0,40}\n){0,16}") {
            if let Ok(m) = SiweMessage::parse(&text) {
                prop_assert_eq!(m.print_unchecked(), text);
            }
        }
    }
}
