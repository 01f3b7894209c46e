//! The verification steps of SPEC §7, in order, pure with `now` a parameter: version, scheme,
//! network, the EIP-712 `TransferWithAuthorization` signature (low S only) recovering `from`,
//! the recipient, `validBefore ≥ now + 6 s`, `validAfter ≤ now`, the exact value. Whether the
//! authorization was used before is the store's question (`store::payments`).

use crate::crypto::eth::eip712::{digest, hash_struct, type_hash};
use crate::crypto::eth::{Address, parse_signature_hex, recover_signer};
use crate::crypto::to_hex;

use super::Network;
use super::payload::{Authorization, PaymentPayload, U256};

/// How long before `validBefore` an authorization must still be usable, in seconds.
pub const VALID_BEFORE_MARGIN_SECS: u64 = 6;

const TRANSFER_WITH_AUTHORIZATION: &str = "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)";

/// The protocol's reason strings (coinbase/x402 `ErrorReasons`) that we answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    InvalidX402Version,
    UnsupportedScheme,
    InvalidNetwork,
    InvalidPayload,
    InvalidSignature,
    RecipientMismatch,
    ValidBefore,
    ValidAfter,
    Value,
    /// The authorization was used before (the token would refuse it on chain).
    InvalidTransactionState,
    UnexpectedVerifyError,
    UnexpectedSettleError,
    /// A reason a facilitator gave, passed through when it is one of the protocol's.
    Facilitator(&'static str),
}

/// Every reason string of the reference set that a facilitator may answer for an EVM `exact`
/// payment; anything else it says becomes `unexpected_verify_error` / `unexpected_settle_error`.
pub const REFERENCE_REASONS: [&str; 17] = [
    "insufficient_funds",
    "invalid_exact_evm_payload_authorization_valid_after",
    "invalid_exact_evm_payload_authorization_valid_before",
    "invalid_exact_evm_payload_authorization_value",
    "invalid_exact_evm_payload_signature",
    "invalid_exact_evm_payload_recipient_mismatch",
    "invalid_network",
    "invalid_payload",
    "invalid_payment_requirements",
    "invalid_scheme",
    "invalid_payment",
    "payment_expired",
    "unsupported_scheme",
    "invalid_x402_version",
    "invalid_transaction_state",
    "unexpected_verify_error",
    "unexpected_settle_error",
];

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::InvalidX402Version => "invalid_x402_version",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::InvalidNetwork => "invalid_network",
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidSignature => "invalid_exact_evm_payload_signature",
            Reason::RecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::Value => "invalid_exact_evm_payload_authorization_value",
            Reason::InvalidTransactionState => "invalid_transaction_state",
            Reason::UnexpectedVerifyError => "unexpected_verify_error",
            Reason::UnexpectedSettleError => "unexpected_settle_error",
            Reason::Facilitator(r) => r,
        }
    }

    /// A facilitator's reason, if it is one of the reference set.
    pub fn from_facilitator(text: &str, otherwise: Reason) -> Reason {
        REFERENCE_REASONS
            .iter()
            .find(|r| **r == text)
            .map_or(otherwise, |r| Reason::Facilitator(r))
    }
}

/// The EIP-712 digest of an authorization under a token's domain.
pub fn transfer_digest(network: &Network, a: &Authorization) -> [u8; 32] {
    let word = |address: &Address| crate::crypto::eth::eip712::word_of_address(address);
    let message = hash_struct(
        &type_hash(TRANSFER_WITH_AUTHORIZATION),
        &[
            word(&a.from),
            word(&a.to),
            a.value.0,
            a.valid_after.0,
            a.valid_before.0,
            a.nonce,
        ],
    );
    digest(&network.domain().separator(), &message)
}

/// What a payment must match.
#[derive(Debug, Clone, Copy)]
pub struct Requirements<'a> {
    pub network: &'a Network,
    pub pay_to: Address,
    /// The price in the token's atomic units.
    pub amount: u128,
    /// `false` for a test key (SPEC §4): a mainnet network is then `invalid_network`.
    pub mainnet_allowed: bool,
}

/// A payment that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    pub payer: Address,
    pub digest: [u8; 32],
    /// `x402:<network>:<from>:<nonce>`: the idempotency key of the credit and the
    /// used-authorization record.
    pub authorization_key: String,
}

/// `x402:<network>:<lowercase from>:<0x nonce>`.
pub fn authorization_key(network: &Network, a: &Authorization) -> String {
    format!(
        "x402:{}:{}:0x{}",
        network.name,
        a.from.to_lower_hex(),
        to_hex(&a.nonce)
    )
}

/// The steps of SPEC §7 in order, at `now_secs` (Unix seconds).
pub fn verify_payment(
    payment: &PaymentPayload,
    required: &Requirements<'_>,
    now_secs: u64,
) -> Result<VerifiedPayment, Reason> {
    if !matches!(payment.version, 1 | 2) {
        return Err(Reason::InvalidX402Version);
    }
    if payment.scheme != "exact" {
        return Err(Reason::UnsupportedScheme);
    }
    let mainnet_refused = !required.network.testnet && !required.mainnet_allowed;
    if !required.network.is_named(&payment.network) || mainnet_refused {
        return Err(Reason::InvalidNetwork);
    }
    let a = &payment.authorization;
    let digest = transfer_digest(required.network, a);
    let signature =
        parse_signature_hex(&payment.signature).map_err(|_| Reason::InvalidSignature)?;
    let signer = recover_signer(&digest, &signature).map_err(|_| Reason::InvalidSignature)?;
    if signer != a.from {
        return Err(Reason::InvalidSignature);
    }
    if a.to != required.pay_to {
        return Err(Reason::RecipientMismatch);
    }
    if a.valid_before.saturating_u64() < now_secs.saturating_add(VALID_BEFORE_MARGIN_SECS) {
        return Err(Reason::ValidBefore);
    }
    if a.valid_after.saturating_u64() > now_secs {
        return Err(Reason::ValidAfter);
    }
    if a.value != U256::from_u128(required.amount) {
        return Err(Reason::Value);
    }
    Ok(VerifiedPayment {
        payer: signer,
        digest,
        authorization_key: authorization_key(required.network, a),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::base_sepolia;

    #[test]
    fn every_reference_reason_is_known() {
        for r in REFERENCE_REASONS {
            assert_eq!(
                Reason::from_facilitator(r, Reason::UnexpectedVerifyError).as_str(),
                r
            );
        }
        assert_eq!(
            Reason::from_facilitator("made_up", Reason::UnexpectedSettleError),
            Reason::UnexpectedSettleError
        );
    }

    #[test]
    fn authorization_keys_name_network_payer_and_nonce() {
        let a = Authorization {
            from: Address([0xab; 20]),
            to: Address([0; 20]),
            value: U256::from_u128(1),
            valid_after: U256::from_u128(0),
            valid_before: U256::from_u128(1),
            nonce: [0x01; 32],
        };
        assert_eq!(
            authorization_key(&base_sepolia(), &a),
            format!(
                "x402:base-sepolia:0x{}:0x{}",
                "ab".repeat(20),
                "01".repeat(32)
            )
        );
    }
}
