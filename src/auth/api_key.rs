//! API key strings (SPEC §4): `ek_live_` | `ek_test_`, 40 random base62 characters, then 6 base62
//! characters of CRC-32/ISO-HDLC over everything before them. The checksum lets the server reject
//! a mistyped or made-up key before any database or bucket work.
//!
//! WIRE FORMAT: the prefixes, the alphabet order (`0-9A-Za-z`), the lengths and the checksum are
//! part of every key ever issued; changing any of them invalidates them all.

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::store::keys::{KeyHash, KeyType};

pub const LIVE_PREFIX: &str = "ek_live_";
pub const TEST_PREFIX: &str = "ek_test_";
const PREFIX_LEN: usize = 8;
pub const RANDOM_LEN: usize = 40;
pub const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;
/// Characters of a key shown to people (and stored) to recognise it.
pub const DISPLAY_PREFIX_LEN: usize = 12;
/// Longest foreign key string (e.g. the hosted cloud's `eliza_` + 64 hex) still looked up.
pub const MAX_FOREIGN_KEY_LEN: usize = 256;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key's plaintext. It exists only between creation and the one response that shows it; its
/// `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainKey(String);

impl std::fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainKey(<redacted>)")
    }
}

impl PlainKey {
    /// The secret itself, for the one place that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        hash_secret(&self.0)
    }

    pub fn display_prefix(&self) -> String {
        self.0.chars().take(DISPLAY_PREFIX_LEN).collect()
    }

    pub fn key_type(&self) -> KeyType {
        if self.0.starts_with(TEST_PREFIX) {
            KeyType::Test
        } else {
            KeyType::Live
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormatError {
    Prefix,
    Length,
    Alphabet,
    Checksum,
}

impl std::fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyFormatError::Prefix => "key must start with ek_live_ or ek_test_",
            KeyFormatError::Length => "key has the wrong length",
            KeyFormatError::Alphabet => "key has a character outside base62",
            KeyFormatError::Checksum => "key checksum does not match",
        })
    }
}

/// What a presented credential string is, decided without touching any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCandidate {
    /// A well-formed `ek_` key of this type.
    Eliza(KeyType),
    /// Not our format, but short printable ASCII: looked up by hash (imported keys).
    Foreign,
}

/// `sha256(secret)`: the only form in which keys and session tokens are stored or compared.
pub fn hash_secret(secret: &str) -> KeyHash {
    KeyHash(Sha256::digest(secret.as_bytes()).into())
}

/// CRC-32/ISO-HDLC (reflected, polynomial 0xEDB88320, init and xor-out 0xFFFFFFFF: the zlib
/// and Ethernet CRC), computed by crc32fast. WIRE FORMAT: part of every key ever issued.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// The 6 base62 checksum characters of a key's prefix and random part.
pub fn checksum_chars(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = u64::from(crc32(body.as_bytes()));
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62.get((value % 62) as usize).copied().unwrap_or(b'0');
        value /= 62;
    }
    out
}

/// A fresh key of the given type from the thread's CSPRNG (ChaCha, seeded from the OS).
pub fn generate_key(key_type: KeyType) -> PlainKey {
    let mut rng = rand::rng();
    let mut key = String::with_capacity(KEY_LEN);
    key.push_str(match key_type {
        KeyType::Live => LIVE_PREFIX,
        KeyType::Test => TEST_PREFIX,
    });
    for _ in 0..RANDOM_LEN {
        let digit = BASE62.get(rng.random_range(0..BASE62.len())).copied();
        key.push(char::from(digit.unwrap_or(b'0')));
    }
    let checksum = checksum_chars(&key);
    key.extend(checksum.iter().map(|&b| char::from(b)));
    PlainKey(key)
}

/// Checks that `text` is a well-formed `ek_` key, checksum included.
pub fn parse_key(text: &str) -> Result<KeyType, KeyFormatError> {
    let key_type = if text.starts_with(LIVE_PREFIX) {
        KeyType::Live
    } else if text.starts_with(TEST_PREFIX) {
        KeyType::Test
    } else {
        return Err(KeyFormatError::Prefix);
    };
    if text.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    // The alphabet is checked on bytes before any split: a multi-byte character straddling the
    // checksum boundary must be an error, not a panic (found by the credential_headers fuzzer).
    let after_prefix = text.as_bytes().get(PREFIX_LEN..).unwrap_or_default();
    if !after_prefix.iter().all(u8::is_ascii_alphanumeric) {
        return Err(KeyFormatError::Alphabet);
    }
    let (body, checksum) = text
        .split_at_checked(PREFIX_LEN + RANDOM_LEN)
        .ok_or(KeyFormatError::Length)?;
    if checksum.as_bytes() != checksum_chars(body) {
        return Err(KeyFormatError::Checksum);
    }
    Ok(key_type)
}

/// Accepts a well-formed key as a [`PlainKey`] (the bootstrap key, for one).
pub fn parse_plain_key(text: &str) -> Result<PlainKey, KeyFormatError> {
    parse_key(text).map(|_| PlainKey(text.to_string()))
}

/// Classifies a presented credential: an `ek_`-prefixed string must be a valid key; anything else
/// is looked up only if it is short printable ASCII. `None` means reject without any lookup.
pub fn classify_presented_key(text: &str) -> Option<KeyCandidate> {
    if text.starts_with("ek_") {
        return parse_key(text).ok().map(KeyCandidate::Eliza);
    }
    let printable = !text.is_empty()
        && text.len() <= MAX_FOREIGN_KEY_LEN
        && text.bytes().all(|b| b.is_ascii_graphic());
    printable.then_some(KeyCandidate::Foreign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn generated_keys_parse_and_have_the_right_shape() {
        for key_type in [KeyType::Live, KeyType::Test] {
            let key = generate_key(key_type);
            assert_eq!(key.expose().len(), KEY_LEN);
            assert_eq!(parse_key(key.expose()), Ok(key_type));
            assert_eq!(key.key_type(), key_type);
            assert_eq!(key.display_prefix().len(), DISPLAY_PREFIX_LEN);
            assert!(!format!("{key:?}").contains(&key.expose()[8..]));
        }
    }

    #[test]
    fn known_checksums_match_zlib() {
        // Expected values computed with Python's zlib.crc32 and an independent base62 encoder.
        let body = format!("ek_live_{}", "A".repeat(40));
        assert_eq!(crc32(body.as_bytes()), 0x250c_b9fa);
        assert_eq!(&checksum_chars(&body), b"0g48Dq");
        let body = format!("ek_test_{}", "0".repeat(40));
        assert_eq!(&checksum_chars(&body), b"39aLHW");
        assert_eq!(parse_key(&format!("{body}39aLHW")), Ok(KeyType::Test));
    }

    #[test]
    fn rejects_malformed() {
        let good = generate_key(KeyType::Live).expose().to_string();
        assert_eq!(parse_key("ek_prod_x"), Err(KeyFormatError::Prefix));
        assert_eq!(parse_key(&good[..KEY_LEN - 1]), Err(KeyFormatError::Length));
        let mut bad = good.clone().into_bytes();
        bad[10] = b'-';
        assert_eq!(
            parse_key(std::str::from_utf8(&bad).unwrap()),
            Err(KeyFormatError::Alphabet)
        );
        assert_eq!(parse_key(&format!("{good}é")), Err(KeyFormatError::Length));
        // 54 bytes with a two-byte character across the checksum boundary (fuzzer find).
        let straddling = format!("ek_test_{}7\u{301}4&LIW", "0".repeat(38));
        assert!(!straddling.is_char_boundary(48));
        assert_eq!(straddling.len(), KEY_LEN);
        assert_eq!(parse_key(&straddling), Err(KeyFormatError::Alphabet));
        assert_eq!(classify_presented_key(&good[..20]), None);
        assert_eq!(
            classify_presented_key(&format!("eliza_{}", "a".repeat(64))),
            Some(KeyCandidate::Foreign)
        );
        assert_eq!(classify_presented_key(&"x".repeat(257)), None);
        assert_eq!(classify_presented_key("has space"), None);
        assert_eq!(classify_presented_key(""), None);
    }

    proptest! {
        #[test]
        fn every_single_character_change_is_rejected(
            live in any::<bool>(),
            position in PREFIX_LEN..KEY_LEN,
            replacement in proptest::sample::select(BASE62.to_vec()),
        ) {
            let key = generate_key(if live { KeyType::Live } else { KeyType::Test });
            let mut bytes = key.expose().as_bytes().to_vec();
            prop_assume!(bytes[position] != replacement);
            bytes[position] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(parse_key(&changed), Err(KeyFormatError::Checksum));
        }

        /// print(prefix, random part) = prefix ++ random ++ checksum; parse gives the type back,
        /// for every random part, not just the generator's.
        #[test]
        fn print_then_parse_round_trips(live in any::<bool>(), random in "[0-9A-Za-z]{40}") {
            let prefix = if live { LIVE_PREFIX } else { TEST_PREFIX };
            let body = format!("{prefix}{random}");
            let key = format!("{body}{}", String::from_utf8(checksum_chars(&body).to_vec()).unwrap());
            let expected = if live { KeyType::Live } else { KeyType::Test };
            prop_assert_eq!(parse_key(&key), Ok(expected));
            let plain = parse_plain_key(&key).unwrap();
            prop_assert_eq!(plain.key_type(), expected);
            prop_assert_eq!(plain.display_prefix(), key[..DISPLAY_PREFIX_LEN].to_string());
            prop_assert_eq!(classify_presented_key(&key), Some(KeyCandidate::Eliza(expected)));
        }

        #[test]
        fn a_multibyte_character_anywhere_is_rejected(at in 0usize..=44, c in "[^\\x00-\\x7f]") {
            // Exactly 54 bytes whatever the character's width: the length check passes and the
            // alphabet check must refuse it without slicing inside the character.
            let filler = KEY_LEN - PREFIX_LEN - c.len();
            let key = format!("ek_live_{}{c}{}", "a".repeat(at.min(filler)), "a".repeat(filler - at.min(filler)));
            prop_assert_eq!(key.len(), KEY_LEN);
            prop_assert_eq!(parse_key(&key), Err(KeyFormatError::Alphabet));
        }

        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = parse_key(&text);
            let _ = classify_presented_key(&text);
        }
    }
}
