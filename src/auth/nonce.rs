//! Sign-in nonces: 32 lowercase hex characters, single use, valid for 300 s, bound to the chain
//! and URI they were issued for. A plain map under a mutex, not a cache: an issued nonce is kept
//! until it is used or expires, whatever else happens (an admission policy that drops new
//! entries under a flood would turn a flood into failed sign-ins for everyone). When the map is
//! full of unexpired nonces, issuing refuses (503) rather than evicting. `consume` removes under
//! the lock, so of two verifies racing on one nonce exactly one gets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::time::Timestamp;

/// How long a nonce may be used, in milliseconds (SPEC §5.1).
pub const NONCE_TTL_MS: i64 = 300_000;
/// Most unexpired nonces held at once (about 200 bytes each).
pub const MAX_NONCES: usize = 100_000;

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

impl IssuedNonce {
    fn valid_at(&self, now: Timestamp) -> bool {
        now.millis() < self.issued_at.millis().saturating_add(NONCE_TTL_MS)
    }
}

pub struct NonceStore {
    nonces: Mutex<HashMap<String, Arc<IssuedNonce>>>,
    capacity: usize,
}

impl Default for NonceStore {
    fn default() -> Self {
        NonceStore::with_capacity(MAX_NONCES)
    }
}

impl NonceStore {
    pub fn with_capacity(capacity: usize) -> NonceStore {
        NonceStore {
            nonces: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<IssuedNonce>>> {
        self.nonces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new nonce, or `None` when `capacity` unexpired nonces are outstanding.
    pub fn issue(&self, chain: NonceChain, uri: String, now: Timestamp) -> Option<String> {
        let mut map = self.map();
        if map.len() >= self.capacity {
            map.retain(|_, n| n.valid_at(now));
            if map.len() >= self.capacity {
                return None;
            }
        }
        let nonce = format!("{:032x}", rand::random::<u128>());
        map.insert(
            nonce.clone(),
            Arc::new(IssuedNonce {
                chain,
                uri,
                issued_at: now,
            }),
        );
        Some(nonce)
    }

    /// The nonce's binding if it exists and is still valid at `now`; does not use it up.
    pub fn peek(&self, nonce: &str, now: Timestamp) -> Option<Arc<IssuedNonce>> {
        self.map().get(nonce).filter(|n| n.valid_at(now)).cloned()
    }

    /// Uses the nonce up. `true` for exactly one caller.
    pub fn consume(&self, nonce: &str) -> bool {
        self.map().remove(nonce).is_some()
    }

    /// Nonces held (expired ones included until the next sweep).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_and_expiring() {
        let store = NonceStore::default();
        let t0 = Timestamp(1_000_000);
        let n = store
            .issue(NonceChain::Ethereum(1), "http://x".into(), t0)
            .unwrap();
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

    #[test]
    fn a_full_store_refuses_instead_of_dropping_and_sweeps_expired_ones() {
        let store = NonceStore::with_capacity(3);
        let t0 = Timestamp(1_000_000);
        let issued: Vec<String> = (0..3)
            .map(|_| {
                store
                    .issue(NonceChain::Ethereum(1), "u".into(), t0)
                    .unwrap()
            })
            .collect();
        assert_eq!(store.issue(NonceChain::Ethereum(1), "u".into(), t0), None);
        // Every issued nonce is still there to be used.
        for n in &issued {
            assert!(store.peek(n, t0).is_some());
        }
        assert!(store.consume(&issued[0]));
        assert!(
            store
                .issue(NonceChain::Ethereum(1), "u".into(), t0)
                .is_some()
        );
        // Once they expire, a full store makes room.
        let later = t0.plus_millis(NONCE_TTL_MS);
        assert!(
            store
                .issue(NonceChain::Ethereum(1), "u".into(), later)
                .is_some()
        );
        assert_eq!(store.len(), 1);
    }
}
