//! Sign-in nonces (SPEC §5.1), stateless: issuing one stores nothing. A nonce is 64 lowercase hex
//! characters: its issue time (8 bytes, milliseconds, big-endian), 8 random bytes, and the first
//! 16 bytes of HMAC-SHA256 under the server's nonce key (kept in the database) over those 16
//! bytes, the chain it is for and the URI it is for. A verify recomputes the MAC with the chain
//! and URI of the message it came in: a nonce only passes for what it was issued for, for 300 s.
//!
//! No flood of nonce requests can fill memory or lock anyone out of signing in. A nonce is
//! remembered as used only once a verify with it succeeded (so the set grows only with
//! successful sign-ins, themselves limited per client address), until it would have expired;
//! `consume` inserts under one lock, so of two verifies racing on one nonce exactly one gets it.
//! The used set lives in memory: a nonce issued before this process started is refused, so a
//! restart cannot let a used nonce be used again (a sign-in in progress across a restart asks for
//! a new nonce).

use std::collections::HashMap;
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::to_hex;
use crate::time::Timestamp;

/// How long a nonce may be used, in milliseconds (SPEC §5.1).
pub const NONCE_TTL_MS: i64 = 300_000;
/// Length of a nonce: 32 bytes as hex.
pub const NONCE_LEN: usize = 64;

/// The chain a nonce is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceChain {
    Ethereum(u64),
    Solana(String),
}

impl NonceChain {
    /// The bytes the MAC binds: a tag that no two chains share.
    fn bound(&self) -> String {
        match self {
            NonceChain::Ethereum(id) => format!("eip155:{id}"),
            NonceChain::Solana(id) => format!("solana-chain:{id}"),
        }
    }
}

/// Why a nonce does not pass. The reasons are labels for logs and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Not 64 lowercase hex characters.
    Malformed,
    /// Not issued by this server for this chain and URI.
    NotIssued,
    Expired,
    /// Issued before this process started (the used set does not reach back that far).
    BeforeRestart,
    /// A verify with it succeeded already.
    Used,
}

impl NonceError {
    pub const fn reason(self) -> &'static str {
        match self {
            NonceError::Malformed | NonceError::NotIssued => "nonce_not_issued",
            NonceError::Expired => "unknown_or_expired_nonce",
            NonceError::BeforeRestart => "nonce_before_restart",
            NonceError::Used => "nonce_already_used",
        }
    }
}

/// The nonce MAC key. `Debug` prints nothing of it.
pub struct NonceKey([u8; 32]);

impl NonceKey {
    pub fn new(bytes: [u8; 32]) -> NonceKey {
        NonceKey(bytes)
    }
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

pub struct Nonces {
    key: NonceKey,
    started_at: Timestamp,
    /// Nonces a successful verify used, with the time they would have expired.
    used: Mutex<HashMap<[u8; 32], i64>>,
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != NONCE_LEN {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = match pair {
            [hi, lo] => (digit(*hi)?, digit(*lo)?),
            _ => return None,
        };
        *slot = hi << 4 | lo;
    }
    Some(out)
}

impl Nonces {
    pub fn new(key: NonceKey, started_at: Timestamp) -> Nonces {
        Nonces {
            key,
            started_at,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, head: &[u8; 16], chain: &NonceChain, uri: &str) -> [u8; 16] {
        // HMAC takes a key of any length; a 32-byte key cannot be refused.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key.0) else {
            return [0; 16];
        };
        mac.update(b"eliza-cloud sign-in nonce v1\0");
        mac.update(head);
        mac.update(chain.bound().as_bytes());
        mac.update(b"\0");
        mac.update(uri.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(full.get(..16).unwrap_or(&[0; 16]));
        out
    }

    /// A new nonce for `chain` and `uri`, issued at `now`. Stores nothing.
    pub fn issue(&self, chain: &NonceChain, uri: &str, now: Timestamp) -> String {
        let mut head = [0u8; 16];
        let (time, random) = head.split_at_mut(8);
        time.copy_from_slice(&now.millis().to_be_bytes());
        random.copy_from_slice(&rand::random::<[u8; 8]>());
        let mac = self.mac(&head, chain, uri);
        let mut whole = [0u8; 32];
        let (first, second) = whole.split_at_mut(16);
        first.copy_from_slice(&head);
        second.copy_from_slice(&mac);
        to_hex(&whole)
    }

    /// Whether `nonce` was issued by this server for `chain` and `uri`, is valid at `now`, and
    /// is unused. Does not use it up.
    pub fn check(
        &self,
        nonce: &str,
        chain: &NonceChain,
        uri: &str,
        now: Timestamp,
    ) -> Result<(), NonceError> {
        let bytes = decode_hex32(nonce).ok_or(NonceError::Malformed)?;
        let mut head = [0u8; 16];
        head.copy_from_slice(bytes.get(..16).unwrap_or(&[0; 16]));
        let expected = self.mac(&head, chain, uri);
        // Constant time: the MAC is what an attacker would guess byte by byte.
        let given = bytes.get(16..).unwrap_or(&[]);
        let differs = expected
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 || given.len() != expected.len() {
            return Err(NonceError::NotIssued);
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(head.get(..8).unwrap_or(&[0; 8]));
        let issued = i64::from_be_bytes(time);
        if issued < self.started_at.millis() {
            return Err(NonceError::BeforeRestart);
        }
        if now.millis() >= issued.saturating_add(NONCE_TTL_MS) || issued > now.millis() {
            return Err(NonceError::Expired);
        }
        if self.lock_used().contains_key(&bytes) {
            return Err(NonceError::Used);
        }
        Ok(())
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], i64>> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Uses a nonce that [`Nonces::check`] passed: `true` for exactly one caller. Forgets the
    /// nonces that have expired by `now` on the way.
    pub fn consume(&self, nonce: &str, now: Timestamp) -> bool {
        let Some(bytes) = decode_hex32(nonce) else {
            return false;
        };
        let mut time = [0u8; 8];
        time.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
        let expires = i64::from_be_bytes(time).saturating_add(NONCE_TTL_MS);
        let mut used = self.lock_used();
        used.retain(|_, until| *until > now.millis());
        used.insert(bytes, expires).is_none()
    }

    /// Nonces remembered as used (only successful sign-ins of the last 300 s).
    pub fn used_count(&self) -> usize {
        self.lock_used().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: Timestamp = Timestamp(1_767_225_600_000);

    fn nonces() -> Nonces {
        Nonces::new(NonceKey::new([7; 32]), T0)
    }

    #[test]
    fn issued_nonces_pass_for_what_they_were_issued_for_only() {
        let n = nonces();
        let eth = NonceChain::Ethereum(1);
        let nonce = n.issue(&eth, "http://x", T0);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(
            nonce
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(n.check(&nonce, &eth, "http://x", T0), Ok(()));
        assert_eq!(
            n.check(&nonce, &NonceChain::Ethereum(8453), "http://x", T0),
            Err(NonceError::NotIssued)
        );
        assert_eq!(
            n.check(&nonce, &eth, "http://y", T0),
            Err(NonceError::NotIssued)
        );
        assert_eq!(
            n.check(&nonce, &NonceChain::Solana("1".into()), "http://x", T0),
            Err(NonceError::NotIssued)
        );
        let other_key = Nonces::new(NonceKey::new([8; 32]), T0);
        assert_eq!(
            other_key.check(&nonce, &eth, "http://x", T0),
            Err(NonceError::NotIssued)
        );
        assert_eq!(
            n.check(&nonce.to_uppercase(), &eth, "http://x", T0),
            Err(NonceError::Malformed)
        );
    }

    #[test]
    fn single_use_and_expiring() {
        let n = nonces();
        let eth = NonceChain::Ethereum(1);
        let nonce = n.issue(&eth, "u", T0);
        let late = T0.plus_millis(NONCE_TTL_MS - 1);
        assert_eq!(n.check(&nonce, &eth, "u", late), Ok(()));
        assert_eq!(
            n.check(&nonce, &eth, "u", T0.plus_millis(NONCE_TTL_MS)),
            Err(NonceError::Expired)
        );
        assert!(n.consume(&nonce, T0));
        assert!(!n.consume(&nonce, T0));
        assert_eq!(n.check(&nonce, &eth, "u", T0), Err(NonceError::Used));
        assert_eq!(n.used_count(), 1);
        // Once it would have expired, it is forgotten on the next use of another nonce.
        let later = T0.plus_millis(NONCE_TTL_MS);
        let fresh = n.issue(&eth, "u", later);
        assert!(n.consume(&fresh, later));
        assert_eq!(n.used_count(), 1);
    }

    #[test]
    fn a_restart_refuses_nonces_issued_before_it() {
        let before = nonces().issue(&NonceChain::Ethereum(1), "u", T0);
        let restarted = Nonces::new(NonceKey::new([7; 32]), T0.plus_millis(1));
        assert_eq!(
            restarted.check(&before, &NonceChain::Ethereum(1), "u", T0.plus_millis(2)),
            Err(NonceError::BeforeRestart)
        );
    }

    #[test]
    fn issuing_stores_nothing() {
        let n = nonces();
        for i in 0..10_000 {
            n.issue(&NonceChain::Ethereum(1), "u", T0.plus_millis(i));
        }
        assert_eq!(n.used_count(), 0);
        assert_eq!(format!("{:?}", n.key), "NonceKey(<redacted>)");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_passes_and_never_panics(text in ".{0,80}", hex in "[0-9a-f]{64}") {
            let n = nonces();
            let eth = NonceChain::Ethereum(1);
            prop_assert!(n.check(&text, &eth, "u", T0).is_err());
            prop_assert!(n.check(&hex, &eth, "u", T0).is_err());
        }
    }
}
