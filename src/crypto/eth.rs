//! Ethereum primitives: keccak-256, EIP-191 `personal_sign` hashing, EIP-55 checksummed
//! addresses, EIP-712 typed-data hashing, and secp256k1 public-key recovery that accepts only
//! low-S signatures (s ≤ n/2) with v in {0, 1, 27, 28}, as OpenZeppelin and USDC do.
//!
//! k256 0.14's `recover_from_prehash` recovers from a high-S signature too, so a malleated copy of
//! a valid signature would pass: [`recover_signer`] rejects it before recovering.

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use sha3::{Digest, Keccak256};

use super::{from_hex_exact, to_hex};

pub fn keccak256(data: &[u8]) -> [u8; 32] {
    Keccak256::digest(data).into()
}

/// keccak256("\x19Ethereum Signed Message:\n" ++ decimal(len) ++ message): EIP-191 version 0x45.
pub fn eip191_hash(message: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak256::new();
    hasher.update(b"\x19Ethereum Signed Message:\n");
    hasher.update(message.len().to_string().as_bytes());
    hasher.update(message);
    hasher.finalize().into()
}

/// A 20-byte account address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({})", self.to_checksum())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not `0x` + 40 hex digits.
    Format,
    /// Well formed, but the letters' case is not the EIP-55 checksum.
    Checksum,
}

impl Address {
    /// Any case: `0x` + 40 hex digits.
    pub fn parse_any_case(text: &str) -> Result<Address, AddressError> {
        if !text.starts_with("0x") {
            return Err(AddressError::Format);
        }
        from_hex_exact::<20>(text)
            .map(Address)
            .ok_or(AddressError::Format)
    }

    /// EIP-55 exactly: the input must equal the checksummed form of its address.
    pub fn parse_checksummed(text: &str) -> Result<Address, AddressError> {
        let address = Address::parse_any_case(text)?;
        if address.to_checksum() == text {
            Ok(address)
        } else {
            Err(AddressError::Checksum)
        }
    }

    /// `0x` + 40 lowercase hex: the stored form.
    pub fn to_lower_hex(&self) -> String {
        format!("0x{}", to_hex(&self.0))
    }

    /// The EIP-55 form: a hex letter is uppercase when the matching nibble of
    /// keccak256(lowercase hex) is 8 or more.
    pub fn to_checksum(&self) -> String {
        let lower = to_hex(&self.0);
        let hash = keccak256(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let byte = hash.get(i / 2).copied().unwrap_or(0);
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 15 };
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }

    /// The address of an uncompressed secp256k1 key: the last 20 bytes of keccak256(X ++ Y).
    pub fn of_key(key: &VerifyingKey) -> Address {
        let point = key.to_sec1_point(false);
        let bytes = point.as_bytes();
        let hash = keccak256(bytes.get(1..).unwrap_or_default());
        let mut out = [0u8; 20];
        out.copy_from_slice(hash.get(12..).unwrap_or(&[0u8; 20]));
        Address(out)
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// Not 65 bytes of hex.
    Format,
    /// v is not 0, 1, 27 or 28.
    RecoveryId,
    /// s > n/2: the malleated twin of a valid signature.
    HighS,
    /// r or s out of range, or no key recovers.
    Invalid,
}

impl SignatureError {
    pub const fn reason(self) -> &'static str {
        match self {
            SignatureError::Format => "signature_format",
            SignatureError::RecoveryId => "signature_recovery_id",
            SignatureError::HighS => "signature_high_s",
            SignatureError::Invalid => "signature_invalid",
        }
    }
}

/// n/2 for secp256k1, big-endian: the largest s accepted.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// Whether big-endian `s` is at most n/2.
pub fn is_low_s(s: &[u8; 32]) -> bool {
    s.as_slice() <= HALF_ORDER.as_slice()
}

/// `r ‖ s ‖ v` as 130 hex digits, `0x` optional.
pub fn parse_signature_hex(text: &str) -> Result<[u8; 65], SignatureError> {
    from_hex_exact::<65>(text).ok_or(SignatureError::Format)
}

/// Recovers the signer of a 32-byte prehash from `r ‖ s ‖ v`, low-S only.
pub fn recover_signer(prehash: &[u8; 32], signature: &[u8; 65]) -> Result<Address, SignatureError> {
    let (rs, v) = signature.split_at(64);
    let v = v.first().copied().ok_or(SignatureError::Format)?;
    let recovery = match v {
        0 | 27 => 0,
        1 | 28 => 1,
        _ => return Err(SignatureError::RecoveryId),
    };
    let s: [u8; 32] = rs
        .get(32..)
        .and_then(|s| s.try_into().ok())
        .ok_or(SignatureError::Format)?;
    if !is_low_s(&s) {
        return Err(SignatureError::HighS);
    }
    let signature = Signature::from_slice(rs).map_err(|_| SignatureError::Invalid)?;
    let recovery = RecoveryId::from_byte(recovery).ok_or(SignatureError::RecoveryId)?;
    let key = VerifyingKey::recover_from_prehash(prehash, &signature, recovery)
        .map_err(|_| SignatureError::Invalid)?;
    Ok(Address::of_key(&key))
}

/// Verifies a DER-encoded signature over a prehash for a SEC1-encoded key, low-S only (the
/// Bitcoin/Ethereum rule; Wycheproof's `EcdsaBitcoinVerify` vectors pin it).
pub fn verify_der_prehash_low_s(
    public_key_sec1: &[u8],
    prehash: &[u8],
    der: &[u8],
) -> Result<(), SignatureError> {
    use k256::ecdsa::DerSignature;
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let key =
        VerifyingKey::from_sec1_bytes(public_key_sec1).map_err(|_| SignatureError::Invalid)?;
    let der = DerSignature::from_bytes(der).map_err(|_| SignatureError::Format)?;
    let signature = Signature::try_from(der).map_err(|_| SignatureError::Format)?;
    let bytes = signature.to_bytes();
    let s: [u8; 32] = bytes
        .get(32..)
        .and_then(|s| s.try_into().ok())
        .ok_or(SignatureError::Format)?;
    if !is_low_s(&s) {
        return Err(SignatureError::HighS);
    }
    key.verify_prehash(prehash, &signature)
        .map_err(|_| SignatureError::Invalid)
}

/// The signer of an EIP-191 `personal_sign` over `message`.
pub fn recover_eip191_signer(
    message: &[u8],
    signature: &[u8; 65],
) -> Result<Address, SignatureError> {
    recover_signer(&eip191_hash(message), signature)
}

/// EIP-712 building blocks: 32-byte words and struct hashes.
pub mod eip712 {
    use super::{Address, keccak256};

    /// keccak256 of an encoded type, e.g. `Person(string name,address wallet)`.
    pub fn type_hash(encoded_type: &str) -> [u8; 32] {
        keccak256(encoded_type.as_bytes())
    }

    /// A `string` or `bytes` member: its keccak256.
    pub fn word_of_bytes(value: &[u8]) -> [u8; 32] {
        keccak256(value)
    }

    pub fn word_of_address(address: &Address) -> [u8; 32] {
        let mut word = [0u8; 32];
        if let Some(tail) = word.get_mut(12..) {
            tail.copy_from_slice(&address.0);
        }
        word
    }

    pub fn word_of_u64(value: u64) -> [u8; 32] {
        let mut word = [0u8; 32];
        if let Some(tail) = word.get_mut(24..) {
            tail.copy_from_slice(&value.to_be_bytes());
        }
        word
    }

    /// hashStruct = keccak256(typeHash ‖ encodeData).
    pub fn hash_struct(type_hash: &[u8; 32], members: &[[u8; 32]]) -> [u8; 32] {
        let mut data = Vec::with_capacity(32 * (members.len() + 1));
        data.extend_from_slice(type_hash);
        for m in members {
            data.extend_from_slice(m);
        }
        keccak256(&data)
    }

    /// The domain `{name, version, chainId, verifyingContract}` (x402's token domains).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Domain {
        pub name: String,
        pub version: String,
        pub chain_id: u64,
        pub verifying_contract: Address,
    }

    impl Domain {
        pub fn separator(&self) -> [u8; 32] {
            hash_struct(
                &type_hash(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
                ),
                &[
                    word_of_bytes(self.name.as_bytes()),
                    word_of_bytes(self.version.as_bytes()),
                    word_of_u64(self.chain_id),
                    word_of_address(&self.verifying_contract),
                ],
            )
        }
    }

    /// keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message)).
    pub fn digest(domain_separator: &[u8; 32], struct_hash: &[u8; 32]) -> [u8; 32] {
        use sha3::{Digest, Keccak256};
        let mut hasher = Keccak256::new();
        hasher.update([0x19, 0x01]);
        hasher.update(domain_separator);
        hasher.update(struct_hash);
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keccak_known_values() {
        assert_eq!(
            to_hex(&keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        // Private key of the EIP-712 example is keccak256("cow").
        assert_eq!(
            to_hex(&keccak256(b"cow")),
            "c85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4"
        );
    }

    #[test]
    fn v_outside_the_four_values_is_refused() {
        let mut sig = [1u8; 65];
        for v in [2u8, 26, 29, 35, 255] {
            sig[64] = v;
            assert_eq!(
                recover_signer(&[7; 32], &sig),
                Err(SignatureError::RecoveryId)
            );
        }
        let mut high = [0xffu8; 65];
        high[64] = 27;
        assert_eq!(recover_signer(&[7; 32], &high), Err(SignatureError::HighS));
        let mut zero = [0u8; 65];
        zero[64] = 27;
        assert_eq!(
            recover_signer(&[7; 32], &zero),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn half_order_boundary() {
        assert!(is_low_s(&HALF_ORDER));
        let mut above = HALF_ORDER;
        above[31] += 1;
        assert!(!is_low_s(&above));
    }
}
