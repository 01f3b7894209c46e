//! RFC 3339 text: the fixed `YYYY-MM-DDTHH:MM:SS.mmmZ` form every answer shows, written digit by
//! digit, and the strict parser of inputs (offsets allowed, impossible dates refused).

use super::Timestamp;
use super::civil::{civil_from_days, days_from_civil, days_in_month};

impl Timestamp {
    /// The fields of the RFC 3339 form: (year, month, day, hour, minute, second, millisecond).
    fn fields(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        // Euclidean remainders: both are below their divisor and never negative, so the casts
        // to u32 keep every value.
        let millis = self.0.rem_euclid(1000) as u32;
        let secs = self.0.div_euclid(1000);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        (
            year,
            month,
            day,
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            millis,
        )
    }

    /// The 24 bytes of `YYYY-MM-DDTHH:MM:SS.mmmZ` for the years 0000–9999, written digit by
    /// digit (every JSON answer carries a few of these; `core::fmt` was a visible share of a
    /// request's CPU). Other years have no fixed width and go through `Display`'s general path.
    fn rfc3339_fixed(self) -> Option<[u8; 24]> {
        let (year, month, day, hour, minute, second, millis) = self.fields();
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (at..at + width).rev() {
                if let Some(slot) = out.get_mut(i) {
                    // value % 10 < 10, so the cast cannot truncate.
                    *slot = b'0' + (value % 10) as u8;
                }
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, hour);
        put(14, 2, minute);
        put(17, 2, second);
        put(20, 3, millis);
        Some(out)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fixed) = self.rfc3339_fixed()
            && let Ok(text) = std::str::from_utf8(&fixed)
        {
            return f.write_str(text);
        }
        let (year, month, day, hour, minute, second, millis) = self.fields();
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z"
        )
    }
}

/// Serialises as the RFC 3339 string, straight into the output.
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339_fixed() {
            Some(fixed) => serializer.serialize_str(std::str::from_utf8(&fixed).unwrap_or("")),
            None => serializer.collect_str(self),
        }
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    bytes.iter().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// Parses an RFC 3339 date-time (`2026-01-01T00:00:00Z`, `…T00:00:00.123+02:00`): four-digit
/// year, an existing calendar date (no 30 February), hours 0–23, minutes and seconds 0–59,
/// optional fraction (milliseconds kept, more digits truncated), and `Z` or `±HH:MM`. `T`/`Z` may
/// be lowercase as RFC 3339 allows. Anything else is `None`.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return None;
    }
    let field = |from: usize, to: usize| b.get(from..to).and_then(digits);
    let year = i64::from(field(0, 4)?);
    let (month, day) = (field(5, 7)?, field(8, 10)?);
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't'))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut millis = 0i64;
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        for (i, c) in tail.iter().take(3).enumerate().take(n) {
            millis += i64::from(c - b'0') * [100, 10, 1].get(i).copied().unwrap_or(0);
        }
        rest = tail.get(n..)?;
    }
    let offset_minutes: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = i64::from(digits(&[*h1, *h2])?);
            let mins = i64::from(digits(&[*m1, *m2])?);
            if hours > 23 || mins > 59 {
                return None;
            }
            let total = hours * 60 + mins;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_minutes * 60;
    let instant = Timestamp(secs * 1000 + millis);
    // Only instants that print back in this form: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z.
    (FIRST_INSTANT..=LAST_INSTANT)
        .contains(&instant)
        .then_some(instant)
}

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, the range RFC 3339 can write in UTC.
const FIRST_INSTANT: Timestamp = Timestamp(-62_135_596_800_000);
const LAST_INSTANT: Timestamp = Timestamp(253_402_300_799_999);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_422_600_123).to_rfc3339(),
            "2026-11-23T08:30:00.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(
            parse_rfc3339("2026-11-23T08:30:00.123Z"),
            Some(Timestamp(1_795_422_600_123))
        );
        assert_eq!(
            parse_rfc3339("2026-11-23T10:30:00+02:00"),
            Some(Timestamp(1_795_422_600_000))
        );
        assert_eq!(
            parse_rfc3339("2026-11-23t08:30:00.1234567z"),
            Some(Timestamp(1_795_422_600_123))
        );
        assert_eq!(
            parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(Timestamp(951_782_400_000))
        );
        for bad in [
            "2001-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0200",
            "2026-01-01T00:00:00+24:00",
            "26-01-01T00:00:00Z",
            "+2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Zjunk",
            "２０２６-01-01T00:00:00Z",
            "0000-01-01T00:00:00+02:59",
            "9999-12-31T23:59:59-00:01",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_round_trips(millis in -62_135_596_800_000i64..253_402_300_799_999) {
            let t = Timestamp(millis);
            proptest::prop_assert_eq!(parse_rfc3339(&t.to_rfc3339()), Some(t));
        }

        /// The digit-by-digit form equals the general `core::fmt` one wherever it applies,
        /// and `Display` still prints the years it does not cover.
        #[test]
        fn fixed_form_matches_the_general_one(millis in proptest::prelude::any::<i64>()) {
            let t = Timestamp(millis);
            let (year, month, day, hour, minute, second, ms) = t.fields();
            let general = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{ms:03}Z"
            );
            proptest::prop_assert_eq!(t.to_string(), general.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&t).ok(), serde_json::to_string(&general).ok());
            proptest::prop_assert_eq!(t.rfc3339_fixed().is_some(), (0..=9999).contains(&year));
        }

        #[test]
        fn rfc3339_never_panics(text in ".{0,45}") {
            let _ = parse_rfc3339(&text);
        }
    }
}
