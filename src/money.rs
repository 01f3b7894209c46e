//! Money is integer micro-dollars (`i64`, 1 USD = 1,000,000). No floating point anywhere near a
//! balance; these helpers convert to and from the decimal strings people and JSON use.

pub const MICROS_PER_DOLLAR: i64 = 1_000_000;

/// `5_000_000` → `"5.000000"`, `-250_000` → `"-0.250000"`.
pub fn format_dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let per = MICROS_PER_DOLLAR.unsigned_abs();
    format!("{sign}{}.{:06}", abs / per, abs % per)
}

/// Parses a non-negative decimal dollar amount with at most six decimal places (`"10"`,
/// `"0.5"`, `"12.345678"`) into micro-dollars exactly. Anything else (signs, exponents, more
/// places, overflow) is `None`.
pub fn parse_dollars(text: &str) -> Option<i64> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty() || whole.len() > 12 || frac.len() > 6 {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.ends_with('.') {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let mut frac_micros: i64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        let digit = i64::from(b - b'0');
        frac_micros += digit * 10_i64.pow(5 - i as u32);
    }
    whole
        .checked_mul(MICROS_PER_DOLLAR)?
        .checked_add(frac_micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats() {
        assert_eq!(format_dollars(5_000_000), "5.000000");
        assert_eq!(format_dollars(0), "0.000000");
        assert_eq!(format_dollars(-250_000), "-0.250000");
        assert_eq!(format_dollars(i64::MIN), "-9223372036854.775808");
    }

    #[test]
    fn parses() {
        assert_eq!(parse_dollars("10"), Some(10_000_000));
        assert_eq!(parse_dollars("0.5"), Some(500_000));
        assert_eq!(parse_dollars("12.345678"), Some(12_345_678));
        for bad in [
            "",
            ".5",
            "5.",
            "-1",
            "+1",
            "1e3",
            "1.2345678",
            "0x10",
            " 1",
            "1,5",
        ] {
            assert_eq!(parse_dollars(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(micros in 0i64..=999_999_999_999_999_999) {
            prop_assert_eq!(parse_dollars(&format_dollars(micros)), Some(micros));
        }
    }
}
