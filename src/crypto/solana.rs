//! Solana primitives: base58 (the Bitcoin alphabet) and strict Ed25519 verification, which
//! rejects small-order public keys and non-canonical encodings (`verify_strict`).

use ed25519_dalek::{Signature, VerifyingKey};

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Longest base58 text decoded: enough for a 64-byte signature (88 characters) with room.
pub const MAX_BASE58_LEN: usize = 128;

fn digit_of(c: u8) -> Option<u8> {
    ALPHABET
        .iter()
        .position(|&a| a == c)
        .and_then(|i| u8::try_from(i).ok())
}

/// Encodes bytes; each leading zero byte becomes a leading `1`.
pub fn base58_encode(bytes: &[u8]) -> String {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    // Base-58 digits, least significant first.
    let mut digits: Vec<u8> = Vec::with_capacity(bytes.len() * 138 / 100 + 1);
    for &byte in bytes.iter().skip(zeros) {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    for d in digits.iter().rev() {
        let c = ALPHABET.get(usize::from(*d)).copied().unwrap_or(b'1');
        out.push(char::from(c));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base58Error {
    /// Empty, too long, or a character outside the alphabet (`0`, `O`, `I`, `l`, …).
    Format,
    /// Decodes, but not to the expected length.
    Length,
}

/// Decodes base58 text (at most [`MAX_BASE58_LEN`] characters).
pub fn base58_decode(text: &str) -> Result<Vec<u8>, Base58Error> {
    if text.is_empty() || text.len() > MAX_BASE58_LEN {
        return Err(Base58Error::Format);
    }
    let ones = text.bytes().take_while(|&c| c == b'1').count();
    // Bytes, least significant first.
    let mut bytes: Vec<u8> = Vec::with_capacity(text.len());
    for c in text.bytes().skip(ones) {
        let mut carry = u32::from(digit_of(c).ok_or(Base58Error::Format)?);
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; ones];
    out.extend(bytes.iter().rev());
    Ok(out)
}

/// Decodes base58 to exactly `N` bytes.
pub fn base58_decode_exact<const N: usize>(text: &str) -> Result<[u8; N], Base58Error> {
    base58_decode(text)?
        .try_into()
        .map_err(|_| Base58Error::Length)
}

/// A Solana address: the 32-byte Ed25519 public key, written in base58.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SolanaAddress(pub [u8; 32]);

impl SolanaAddress {
    /// Parses base58 of exactly 32 bytes, in its canonical spelling (re-encoding gives the input).
    pub fn parse(text: &str) -> Result<SolanaAddress, Base58Error> {
        let bytes = base58_decode_exact::<32>(text)?;
        if base58_encode(&bytes) != text {
            return Err(Base58Error::Format);
        }
        Ok(SolanaAddress(bytes))
    }

    pub fn to_base58(&self) -> String {
        base58_encode(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ed25519Error {
    /// Not a valid point, or a small-order one.
    PublicKey,
    /// Fails strict verification.
    Signature,
}

/// Strict Ed25519: rejects small-order keys, non-canonical points and malleable signatures.
pub fn verify_ed25519_strict(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), Ed25519Error> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| Ed25519Error::PublicKey)?;
    if key.is_weak() {
        return Err(Ed25519Error::PublicKey);
    }
    let signature = Signature::from_bytes(signature);
    key.verify_strict(message, &signature)
        .map_err(|_| Ed25519Error::Signature)
}

/// A signature written as base58 or `0x` hex, to 64 bytes.
pub fn parse_ed25519_signature(text: &str) -> Option<[u8; 64]> {
    if text.starts_with("0x") {
        super::from_hex_exact::<64>(text)
    } else {
        base58_decode_exact::<64>(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_base58() {
        // Bitcoin's reference cases.
        assert_eq!(base58_encode(b"hello world"), "StV1DL6CwTryKyV");
        assert_eq!(base58_encode(&[0, 0, 1]), "112");
        assert_eq!(base58_encode(&[]), "");
        assert_eq!(base58_decode("StV1DL6CwTryKyV").unwrap(), b"hello world");
        assert_eq!(base58_decode("112").unwrap(), vec![0, 0, 1]);
        for bad in ["", "0", "O", "I", "l", "abc!", "é"] {
            assert_eq!(base58_decode(bad), Err(Base58Error::Format), "{bad}");
        }
        // The system program: 32 zero bytes.
        assert_eq!(
            SolanaAddress::parse("11111111111111111111111111111111")
                .unwrap()
                .0,
            [0u8; 32]
        );
        assert_eq!(base58_decode_exact::<32>("112"), Err(Base58Error::Length));
    }

    proptest! {
        #[test]
        fn base58_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let text = base58_encode(&bytes);
            if bytes.is_empty() {
                prop_assert_eq!(text, "");
            } else {
                prop_assert_eq!(base58_decode(&text).unwrap(), bytes);
            }
        }

        #[test]
        fn base58_decode_never_panics(text in ".{0,140}") {
            let _ = base58_decode(&text);
        }
    }
}
