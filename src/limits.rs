//! Token buckets (SPEC §8): capacity = the per-minute limit, refilled at limit/60 per second.
//! [`Bucket::take`] is a pure state machine over `(state, now)`; [`RateLimiter`] keeps one bucket
//! per key, user or client address in a bounded moka cache whose idle entries expire.
//!
//! Integer arithmetic only: a token is [`UNITS_PER_TOKEN`] units and a bucket of limit `L` per
//! minute gains exactly `L` units per millisecond, so no rounding accumulates.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::time::Timestamp;

/// Units in one token: one minute in milliseconds.
pub const UNITS_PER_TOKEN: i64 = 60_000;
/// Requests per minute for unauthenticated routes that do work, per client address.
pub const PER_IP_LIMIT: u32 = 10;
/// Plan defaults, requests per minute (SPEC §8).
pub const FREE_PLAN_LIMIT: u32 = 60;
pub const PRO_PLAN_LIMIT: u32 = 300;
/// An enterprise organization without a custom limit.
pub const ENTERPRISE_DEFAULT_LIMIT: u32 = 1_000;

/// The per-minute limit an organization's plan gives.
pub fn plan_limit(org: &crate::store::orgs::OrgRecord) -> u32 {
    use crate::store::orgs::Plan;
    match org.plan {
        Plan::Free => FREE_PLAN_LIMIT,
        Plan::Pro => PRO_PLAN_LIMIT,
        Plan::Enterprise => org.custom_rate_limit.unwrap_or(ENTERPRISE_DEFAULT_LIMIT),
    }
}

/// An idle bucket is full again after at most a minute, so dropping it after two changes nothing.
const BUCKET_IDLE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    limit: u32,
    units: i64,
    at_millis: i64,
}

/// The outcome of one request against a bucket, with what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the bucket is full again.
    pub reset_unix_secs: i64,
    /// Whole seconds until one token is back (only meaningful when refused; at least 1).
    pub retry_after_secs: u64,
}

fn ceil_div(a: i64, b: i64) -> i64 {
    if b <= 0 { 0 } else { (a + b - 1).div_euclid(b) }
}

impl Bucket {
    pub fn full(limit: u32, now: Timestamp) -> Bucket {
        let limit = limit.max(1);
        Bucket {
            limit,
            units: i64::from(limit) * UNITS_PER_TOKEN,
            at_millis: now.millis(),
        }
    }

    /// Refills for the time since the last call, then takes one token if there is one. A changed
    /// limit changes the capacity from now on (tokens above the new capacity are dropped). A clock
    /// that went backwards refills nothing.
    pub fn take(&mut self, limit: u32, now: Timestamp) -> Decision {
        let limit = limit.max(1);
        let per_ms = i64::from(limit);
        let capacity = per_ms * UNITS_PER_TOKEN;
        if limit != self.limit {
            self.limit = limit;
            self.units = self.units.min(capacity);
        }
        let elapsed = now.millis().saturating_sub(self.at_millis).max(0);
        self.units = self
            .units
            .saturating_add(elapsed.saturating_mul(per_ms))
            .min(capacity);
        self.at_millis = self.at_millis.max(now.millis());
        let allowed = self.units >= UNITS_PER_TOKEN;
        if allowed {
            self.units -= UNITS_PER_TOKEN;
        }
        let ms_to_full = ceil_div(capacity - self.units, per_ms);
        let ms_to_token = ceil_div(UNITS_PER_TOKEN - self.units, per_ms).max(0);
        Decision {
            allowed,
            limit,
            remaining: u32::try_from(self.units / UNITS_PER_TOKEN).unwrap_or(u32::MAX),
            reset_unix_secs: ceil_div(now.millis().saturating_add(ms_to_full), 1000),
            retry_after_secs: u64::try_from(ceil_div(ms_to_token, 1000).max(1)).unwrap_or(1),
        }
    }
}

/// Whose bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketKey {
    ApiKey(Uuid),
    User(Uuid),
    /// Build it with [`BucketKey::client`], which gives an IPv6 /64 one bucket.
    ClientIp(IpAddr),
}

impl BucketKey {
    /// The per-address bucket of a client: an IPv4 address, or the /64 of an IPv6 one (a single
    /// host usually holds a whole /64, so per-address would be per-whim). IPv4-mapped IPv6
    /// addresses count as their IPv4 address.
    pub fn client(ip: IpAddr) -> BucketKey {
        BucketKey::ClientIp(client_address(ip))
    }
}

/// A client's address as limits count it: an IPv4 address, the IPv4 address of an IPv4-mapped
/// IPv6 one, or the /64 of any other IPv6 address.
pub fn client_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

/// One bucket, shared by everyone who draws from it.
pub type SharedBucket = Arc<Mutex<Bucket>>;

pub struct RateLimiter {
    buckets: moka::sync::Cache<BucketKey, SharedBucket>,
}

impl RateLimiter {
    /// At most `max_buckets` buckets live at once; past that the least recently used go.
    pub fn new(max_buckets: u64) -> RateLimiter {
        RateLimiter {
            buckets: moka::sync::Cache::builder()
                .max_capacity(max_buckets)
                .time_to_idle(BUCKET_IDLE)
                .build(),
        }
    }

    pub fn take(&self, key: BucketKey, limit: u32, now: Timestamp) -> Decision {
        take_from(&self.bucket(key, limit, now), limit, now)
    }

    /// The bucket of `key`, made full if there is none (and counting as a use of it).
    pub fn bucket(&self, key: BucketKey, limit: u32, now: Timestamp) -> SharedBucket {
        self.buckets
            .get_with(key, || Arc::new(Mutex::new(Bucket::full(limit, now))))
    }

    /// Buckets held now (after moka's pending evictions), for tests and metrics.
    pub fn bucket_count(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

/// One token from `bucket`.
pub fn take_from(bucket: &Mutex<Bucket>, limit: u32, now: Timestamp) -> Decision {
    match bucket.lock() {
        Ok(mut bucket) => bucket.take(limit, now),
        // A poisoned bucket (a panic mid-update) is replaced by a fresh one.
        Err(poisoned) => {
            let mut fresh = Bucket::full(limit, now);
            let decision = fresh.take(limit, now);
            *poisoned.into_inner() = fresh;
            decision
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn drains_then_refills_at_the_rate() {
        let t0 = Timestamp(1_000_000);
        let mut b = Bucket::full(60, t0);
        for i in 0..60 {
            let d = b.take(60, t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 59 - i);
        }
        let d = b.take(60, t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        assert_eq!(d.reset_unix_secs, 1_000 + 60);
        // One token per second at 60/min.
        assert!(!b.take(60, t0.plus_millis(999)).allowed);
        assert!(b.take(60, t0.plus_millis(1_000)).allowed);
        assert!(!b.take(60, t0.plus_millis(1_000)).allowed);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let t0 = Timestamp(0);
        let mut b = Bucket::full(1, t0);
        assert!(b.take(1, t0).allowed);
        let d = b.take(1, t0.plus_millis(100));
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 60);
        assert_eq!(d.reset_unix_secs, 60);
    }

    #[test]
    fn a_lower_limit_caps_the_tokens_and_a_backwards_clock_refills_nothing() {
        let t0 = Timestamp(10_000_000);
        let mut b = Bucket::full(300, t0);
        let d = b.take(5, t0);
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (5, 4));
        for _ in 0..4 {
            assert!(b.take(5, t0).allowed);
        }
        assert!(!b.take(5, Timestamp(0)).allowed);
        assert!(!b.take(5, t0).allowed);
    }

    #[test]
    fn the_limiter_is_bounded() {
        let limiter = RateLimiter::new(1_000);
        for i in 0..20_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(
                limiter
                    .take(BucketKey::client(ip), PER_IP_LIMIT, Timestamp(0))
                    .allowed
            );
        }
        assert!(
            limiter.bucket_count() <= 1_100,
            "{}",
            limiter.bucket_count()
        );
    }

    proptest! {
        /// Over any window [t1, t2] a bucket admits at most capacity + refill(t2 - t1) requests.
        #[test]
        fn never_admits_more_than_capacity_plus_refill(
            limit in 1u32..200,
            gaps in proptest::collection::vec(0i64..3_000, 1..300),
        ) {
            let mut now = 5_000_000i64;
            let mut bucket = Bucket::full(limit, Timestamp(now));
            let mut admitted_at = Vec::new();
            for gap in gaps {
                now += gap;
                if bucket.take(limit, Timestamp(now)).allowed {
                    admitted_at.push(now);
                }
            }
            let capacity = i64::from(limit) * UNITS_PER_TOKEN;
            for (i, &t1) in admitted_at.iter().enumerate() {
                for (j, &t2) in admitted_at.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as i64;
                    let bound = (capacity + (t2 - t1) * i64::from(limit)) / UNITS_PER_TOKEN;
                    prop_assert!(count <= bound, "{count} admitted in [{t1}, {t2}], bound {bound}");
                }
            }
        }
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(BucketKey::client(a), BucketKey::client(b));
        assert_ne!(BucketKey::client(a), BucketKey::client(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(BucketKey::client(mapped), BucketKey::client(v4));
    }
}
