//! When a delivery is tried again (SPEC §10): after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h,
//! each ±10 % jitter, then it has failed; a 429 or 503 with `Retry-After` is tried then, within
//! the schedule's bounds (never later than its longest step). Time is a parameter, never read
//! here.

use std::time::Duration;

/// The waits after the 1st, 2nd, … failed attempt (Svix's schedule, as FIELD-NOTES gives it).
pub const RETRY_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// Attempts in all: the first and one per retry.
pub const MAX_ATTEMPTS: u32 = RETRY_DELAYS.len() as u32 + 1;

/// The longest wait a `Retry-After` may ask for.
pub const LONGEST: Duration = Duration::from_secs(10 * 3600);

/// The wait before the next attempt after `attempts` attempts have failed, with `jitter` in
/// `0..=200` (per mille above 900: 0 is −10 %, 100 exact, 200 +10 %); `None` once the schedule
/// is over.
pub fn next_delay(attempts: u32, jitter: u16) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let base = RETRY_DELAYS.get(index)?;
    let millis = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let factor = 900 + u64::from(jitter.min(200));
    Some(Duration::from_millis(millis.saturating_mul(factor) / 1000))
}

/// A `Retry-After` value as a wait from `now_secs`: delay-seconds or an HTTP date, bounded by
/// [`LONGEST`]. `None` for anything else.
pub fn retry_after(value: &str, now_secs: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(LONGEST));
    }
    let at = crate::time::parse_http_date(value)?;
    let wait = at.saturating_sub(now_secs).max(0);
    Some(Duration::from_secs(wait.unsigned_abs()).min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_schedule_without_jitter() {
        let waits: Vec<u64> = (1..=7)
            .map(|n| next_delay(n, 100).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(next_delay(8, 100), None);
        assert_eq!(next_delay(0, 100), None);
        assert_eq!(MAX_ATTEMPTS, 8);
        assert_eq!(next_delay(1, 0).unwrap(), Duration::from_millis(4500));
        assert_eq!(next_delay(1, 200).unwrap(), Duration::from_millis(5500));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("120", 0), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("999999", 0), Some(LONGEST));
        // 1994-11-06 08:49:37 UTC is 784111777.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_700),
            Some(Duration::from_secs(77))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", 0), None);
        assert_eq!(retry_after("-5", 0), None);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_ten_percent(attempt in 1u32..8, jitter in 0u16..=200) {
            let base = RETRY_DELAYS[attempt as usize - 1].as_millis() as u64;
            let got = next_delay(attempt, jitter).unwrap().as_millis() as u64;
            prop_assert!(got >= base * 9 / 10 && got <= base * 11 / 10);
        }

        #[test]
        fn any_retry_after_is_bounded(text in "\\PC{0,40}", now in 0i64..4_000_000_000) {
            if let Some(d) = retry_after(&text, now) {
                prop_assert!(d <= LONGEST);
            }
        }
    }
}
