//! Sign-in nonces: 32 lowercase hex characters, single use, valid for 300 s, bound to the chain
//! and URI they were issued for. Held in a bounded moka cache; `consume` removes atomically, so
//! of two verifies racing on one nonce exactly one gets it.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;

/// How long a nonce may be used, in milliseconds (SPEC §5.1).
pub const NONCE_TTL_MS: i64 = 300_000;
const MAX_NONCES: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceChain {
    Ethereum(u64),
    Solana(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNonce {
    pub chain: NonceChain,
    pub uri: String,
    pub issued_at: Timestamp,
}

pub struct NonceStore {
    nonces: moka::sync::Cache<String, Arc<IssuedNonce>>,
}

impl Default for NonceStore {
    fn default() -> Self {
        NonceStore {
            nonces: moka::sync::Cache::builder()
                .max_capacity(MAX_NONCES)
                // Memory only: validity is decided by `issued_at` against the request's clock.
                .time_to_live(Duration::from_millis(NONCE_TTL_MS as u64 + 60_000))
                .build(),
        }
    }
}

impl NonceStore {
    pub fn issue(&self, chain: NonceChain, uri: String, now: Timestamp) -> String {
        let nonce = format!("{:032x}", rand::random::<u128>());
        self.nonces.insert(
            nonce.clone(),
            Arc::new(IssuedNonce {
                chain,
                uri,
                issued_at: now,
            }),
        );
        nonce
    }

    /// The nonce's binding if it exists and is still valid at `now`; does not use it up.
    pub fn peek(&self, nonce: &str, now: Timestamp) -> Option<Arc<IssuedNonce>> {
        self.nonces
            .get(nonce)
            .filter(|n| now.millis() < n.issued_at.millis().saturating_add(NONCE_TTL_MS))
    }

    /// Uses the nonce up. `true` for exactly one caller.
    pub fn consume(&self, nonce: &str) -> bool {
        self.nonces.remove(nonce).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_and_expiring() {
        let store = NonceStore::default();
        let t0 = Timestamp(1_000_000);
        let n = store.issue(NonceChain::Ethereum(1), "http://x".into(), t0);
        assert_eq!(n.len(), 32);
        assert!(
            n.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert!(store.peek(&n, t0.plus_millis(NONCE_TTL_MS - 1)).is_some());
        assert!(store.peek(&n, t0.plus_millis(NONCE_TTL_MS)).is_none());
        assert!(store.consume(&n));
        assert!(!store.consume(&n));
        assert!(store.peek(&n, t0).is_none());
    }
}
