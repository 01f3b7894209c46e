//! Parsing of the credential headers `Authorization: Bearer <key>` and `X-API-Key: <key>`. Pure
//! functions over the raw header bytes: no state, no allocation beyond the answer.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not `Bearer` (e.g. `Basic`), or no token after the scheme.
    NotBearer,
    /// The token has bytes outside visible ASCII, or spaces inside it.
    BadToken,
    /// The header appears more than once.
    Repeated,
}

impl HeaderError {
    pub const fn reason(self) -> &'static str {
        match self {
            HeaderError::NotBearer => "authorization_not_bearer",
            HeaderError::BadToken => "malformed_token",
            HeaderError::Repeated => "repeated_header",
        }
    }
}

fn token(bytes: &[u8]) -> Result<&str, HeaderError> {
    if bytes.is_empty() || !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HeaderError::BadToken);
    }
    std::str::from_utf8(bytes).map_err(|_| HeaderError::BadToken)
}

fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// `Bearer <token>`: scheme case-insensitive, then at least one space, then one token.
pub fn parse_bearer(value: &[u8]) -> Result<&str, HeaderError> {
    let value = trim_spaces(value);
    let (scheme, rest) = match value.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(at) => value.split_at(at),
        None => return Err(HeaderError::NotBearer),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(HeaderError::NotBearer);
    }
    let rest = trim_spaces(rest);
    if rest.is_empty() {
        return Err(HeaderError::NotBearer);
    }
    token(rest)
}

/// `X-API-Key: <token>`, surrounding spaces ignored.
pub fn parse_api_key_header(value: &[u8]) -> Result<&str, HeaderError> {
    token(trim_spaces(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bearer_forms() {
        assert_eq!(parse_bearer(b"Bearer abc"), Ok("abc"));
        assert_eq!(parse_bearer(b"bearer   abc  "), Ok("abc"));
        assert_eq!(parse_bearer(b"BEARER\tabc"), Ok("abc"));
        assert_eq!(
            parse_bearer(b"Basic dXNlcjpwYXNz"),
            Err(HeaderError::NotBearer)
        );
        assert_eq!(parse_bearer(b"Bearer"), Err(HeaderError::NotBearer));
        assert_eq!(parse_bearer(b"Bearer   "), Err(HeaderError::NotBearer));
        assert_eq!(parse_bearer(b"Bearer a b"), Err(HeaderError::BadToken));
        assert_eq!(parse_bearer(b"Bearer \xff\xfe"), Err(HeaderError::BadToken));
        assert_eq!(parse_bearer(b""), Err(HeaderError::NotBearer));
    }

    #[test]
    fn api_key_header_forms() {
        assert_eq!(parse_api_key_header(b" k1 "), Ok("k1"));
        assert_eq!(parse_api_key_header(b""), Err(HeaderError::BadToken));
        assert_eq!(parse_api_key_header(b"a\x00b"), Err(HeaderError::BadToken));
    }

    proptest! {
        #[test]
        fn bearer_round_trips(token in "[!-~]{1,80}", spaces in 1usize..4) {
            let header = format!("Bearer{}{token}", " ".repeat(spaces));
            prop_assert_eq!(parse_bearer(header.as_bytes()), Ok(token.as_str()));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_bearer(&bytes);
            let _ = parse_api_key_header(&bytes);
        }
    }
}
