//! Cryptography for wallet sign-in, wallet headers and x402: Ethereum (`eth.rs`: keccak-256,
//! EIP-191, EIP-55, EIP-712, secp256k1 recovery with the low-S rule) and Solana (`solana.rs`:
//! base58, strict Ed25519). Pure functions over bytes; no state, no clock.

pub mod eth;
pub mod solana;

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 15] {
            let digit = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
            out.push(char::from(digit));
        }
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex (either case, `0x` optional) to exactly `N` bytes.
pub fn from_hex_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
        .as_bytes();
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *slot = hex_value(*hi)? << 4 | hex_value(*lo)?;
    }
    Some(out)
}

/// Hex (either case, `0x` optional) of any even length.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text)
        .as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects() {
        assert_eq!(to_hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex_exact::<3>("0x00ABff"), Some([0, 0xab, 0xff]));
        assert_eq!(from_hex_exact::<3>("00abf"), None);
        assert_eq!(from_hex_exact::<3>("00abfg"), None);
        assert_eq!(from_hex("0x"), Some(vec![]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
