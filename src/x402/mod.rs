//! x402 payments (SPEC §7): the networks we accept, the payment header codec (`payload`), the
//! pure verifier (`verify`), the 402 answer (`required`) and settlement through a facilitator
//! (`facilitator`). The top-up route that uses them is `api::topup`.

pub mod facilitator;
pub mod payload;
pub mod required;
pub mod settlement;
pub mod verify;

/// The payment header of SPEC §7 (v1), and of x402 v2.
pub const V1_PAYMENT_HEADER: &str = "x-payment";
pub const V2_PAYMENT_HEADER: &str = "payment-signature";

/// The payment a request carries: `X-PAYMENT` (v1), else `PAYMENT-SIGNATURE` (v2).
pub fn payment_header(headers: &http::HeaderMap) -> Option<&[u8]> {
    headers
        .get(V1_PAYMENT_HEADER)
        .or_else(|| headers.get(V2_PAYMENT_HEADER))
        .map(http::HeaderValue::as_bytes)
}

/// Whether the request carries a payment header (of either version).
pub fn has_payment(headers: &http::HeaderMap) -> bool {
    payment_header(headers).is_some()
}

use crate::crypto::eth::Address;
use crate::crypto::eth::eip712::Domain;

/// A token on a chain that payments may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The v1 name, e.g. `base-sepolia`.
    pub name: String,
    pub chain_id: u64,
    /// The token contract (EIP-3009), e.g. USDC.
    pub asset: Address,
    /// The token's EIP-712 domain name and version (`extra.name`, `extra.version`).
    pub token_name: String,
    pub token_version: String,
    /// Token decimals (USDC: 6).
    pub decimals: u8,
    /// Test networks allow `trust-signature` settlement and `ek_test_` keys.
    pub testnet: bool,
}

impl Network {
    /// The v2 (CAIP-2) name, e.g. `eip155:84532`.
    pub fn caip2(&self) -> String {
        format!("eip155:{}", self.chain_id)
    }

    pub fn domain(&self) -> Domain {
        Domain {
            name: self.token_name.clone(),
            version: self.token_version.clone(),
            chain_id: self.chain_id,
            verifying_contract: self.asset,
        }
    }

    /// Whether `name` (v1 name or CAIP-2) names this network.
    pub fn is_named(&self, name: &str) -> bool {
        name == self.name || name == self.caip2()
    }

    /// Atomic token units for a price in micro-dollars (one token unit is one dollar);
    /// `None` when the token cannot express it exactly.
    pub fn atomic_units(&self, micros: i64) -> Option<u128> {
        let micros = u128::try_from(micros).ok()?;
        let decimals = u32::from(self.decimals);
        if decimals >= 6 {
            micros.checked_mul(10u128.checked_pow(decimals - 6)?)
        } else {
            let divisor = 10u128.pow(6 - decimals);
            (micros % divisor == 0).then_some(micros / divisor)
        }
    }
}

fn builtin(name: &str, chain_id: u64, asset: &str, token_name: &str, testnet: bool) -> Network {
    Network {
        name: name.into(),
        chain_id,
        asset: Address::parse_any_case(asset).unwrap_or(Address([0; 20])),
        token_name: token_name.into(),
        token_version: "2".into(),
        decimals: 6,
        testnet,
    }
}

/// `base-sepolia`: USDC on Base's test network, the default.
pub fn base_sepolia() -> Network {
    builtin(
        "base-sepolia",
        84532,
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        "USDC",
        true,
    )
}

/// The built-in networks: `base` (mainnet) and `base-sepolia` (test), USDC on both.
pub fn builtin_networks() -> Vec<Network> {
    vec![
        builtin(
            "base",
            8453,
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
            "USD Coin",
            false,
        ),
        base_sepolia(),
    ]
}

/// Chain ids of well-known mainnets: never accepted as test networks.
const KNOWN_MAINNETS: [u64; 9] = [1, 10, 56, 100, 137, 8453, 42161, 43114, 59144];

/// `NAME:CHAIN_ID:ASSET:TOKEN_NAME:TOKEN_VERSION:DECIMALS:mainnet|testnet`, several separated by
/// `;` (the token name may hold spaces, not `:` or `;`). A custom network may not reuse a
/// built-in network's name or chain id, nor call a well-known mainnet a test network.
pub fn parse_custom_networks(text: &str) -> Result<Vec<Network>, String> {
    let mut out = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').collect();
        let [
            name,
            chain,
            asset,
            token_name,
            token_version,
            decimals,
            kind,
        ] = parts.as_slice()
        else {
            return Err(format!(
                "{entry:?} is not NAME:CHAIN_ID:ASSET:TOKEN_NAME:TOKEN_VERSION:DECIMALS:mainnet|testnet"
            ));
        };
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(format!(
                "{name:?}: a network name is lowercase letters, digits and -"
            ));
        }
        let chain_id = chain
            .parse::<u64>()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| format!("{chain:?} is not a chain id"))?;
        let asset =
            Address::parse_any_case(asset).map_err(|_| format!("{asset:?} is not an address"))?;
        let decimals = decimals
            .parse::<u8>()
            .ok()
            .filter(|d| *d <= 30)
            .ok_or_else(|| format!("{decimals:?} is not a number of decimals"))?;
        let testnet = match *kind {
            "testnet" => true,
            "mainnet" => false,
            other => return Err(format!("{other:?} is not mainnet or testnet")),
        };
        if builtin_networks()
            .iter()
            .any(|b| b.name == *name || b.chain_id == chain_id)
            || out.iter().any(|n: &Network| n.name == *name)
        {
            return Err(format!("{entry:?}: its name or chain id is already taken"));
        }
        if testnet && KNOWN_MAINNETS.contains(&chain_id) {
            return Err(format!("{entry:?}: chain {chain_id} is a mainnet"));
        }
        if token_name.is_empty() || token_version.is_empty() {
            return Err(format!(
                "{entry:?}: the token name and version are required"
            ));
        }
        out.push(Network {
            name: (*name).to_string(),
            chain_id,
            asset,
            token_name: (*token_name).to_string(),
            token_version: (*token_version).to_string(),
            decimals,
            testnet,
        });
    }
    Ok(out)
}

/// How verified payments are settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// POST `/verify` then `/settle` to this base URL.
    Facilitator(String),
    /// Record the verified authorization without a chain (test networks only).
    TrustSignature,
    /// Neither configured: top-ups answer 503.
    None,
}

/// The x402 configuration of `serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X402Config {
    /// Where payments go; `None` disables x402 (503).
    pub pay_to: Option<Address>,
    pub network: Network,
    pub settlement: Settlement,
    /// Top-up amounts in micro-dollars.
    pub topup_amounts_micros: Vec<i64>,
    /// Timeout of each facilitator call.
    pub facilitator_timeout: std::time::Duration,
    /// Extra root certificate (PEM) trusted for an https facilitator, beside the built-in roots.
    pub facilitator_ca_pem: Option<Vec<u8>>,
}

/// `maxTimeoutSeconds` in every requirement we publish.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;

impl Default for X402Config {
    fn default() -> Self {
        X402Config {
            pay_to: None,
            network: base_sepolia(),
            settlement: Settlement::None,
            topup_amounts_micros: vec![10_000_000, 50_000_000, 100_000_000],
            facilitator_timeout: std::time::Duration::from_secs(15),
            facilitator_ca_pem: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_and_units() {
        let nets = builtin_networks();
        let base = &nets[0];
        assert_eq!(base.caip2(), "eip155:8453");
        assert!(base.is_named("base") && base.is_named("eip155:8453"));
        assert!(!base.is_named("eip155:84532"));
        assert_eq!(
            base.asset.to_checksum(),
            "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
        );
        assert_eq!(base.atomic_units(10_000_000), Some(10_000_000));
        let mut eighteen = base.clone();
        eighteen.decimals = 18;
        assert_eq!(eighteen.atomic_units(1), Some(1_000_000_000_000));
        let mut two = base.clone();
        two.decimals = 2;
        assert_eq!(two.atomic_units(10_000), Some(1));
        assert_eq!(two.atomic_units(10_001), None);
    }

    #[test]
    fn custom_networks_parse_strictly() {
        let nets = parse_custom_networks(
            "polygon-amoy:80002:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:testnet; \
             polygon:137:0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359:USD Coin:2:6:mainnet",
        )
        .unwrap();
        assert_eq!(nets.len(), 2);
        assert!(nets[0].testnet && !nets[1].testnet);
        assert_eq!(nets[1].token_name, "USD Coin");
        for bad in [
            "x:5:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6",
            "X:5:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:testnet",
            "x:0:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:testnet",
            "x:5:0x41:USDC:2:6:testnet",
            "x:1:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:both",
            "base:5:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:testnet",
            "fake:8453:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:testnet",
            "eth:1:0x41E94Eb019C0762f9Bfcf9Fb1E58725BfB0e7582:USDC:2:6:testnet",
        ] {
            assert!(parse_custom_networks(bad).is_err(), "{bad}");
        }
    }
}
