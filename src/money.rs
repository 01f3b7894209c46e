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

/// `125_500_000` → `"125.5"`, `1` → `"0.000001"`, `3_000_000` → `"3"`: the shortest exact
/// decimal, for the JSON numbers of SPEC §10.
pub fn format_dollars_short(micros: i64) -> String {
    let full = format_dollars(micros);
    let trimmed = full.trim_end_matches('0');
    trimmed.strip_suffix('.').unwrap_or(trimmed).to_string()
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

/// A JSON number's text as dollars, exactly: [`parse_dollars`]'s forms and the exponent forms
/// JSON writers use for small amounts (Python writes `0.000002` as `2e-06`), as long as the value
/// has at most six decimals. Never through floating point.
pub fn parse_dollars_number(text: &str) -> Option<i64> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => {
            let (m, e) = text.split_at(at);
            let e = e.get(1..)?;
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (m, e.parse::<i64>().ok()?)
        }
        None => return parse_dollars(text),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || mantissa.ends_with('.')
    {
        return None;
    }
    let digits = format!("{whole}{frac}");
    let digits = digits.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    // value = digits × 10^(exponent − frac.len()); in micro-dollars, × 10^6 more.
    let scale = exponent
        .checked_add(6)?
        .checked_sub(i64::try_from(frac.len()).ok()?)?;
    if scale >= 0 {
        if digits == "0" {
            return Some(0);
        }
        if digits.len() as i64 + scale > 18 {
            return None;
        }
        let base: i64 = digits.parse().ok()?;
        base.checked_mul(10_i64.checked_pow(u32::try_from(scale).ok()?)?)
    } else {
        let cut = usize::try_from(scale.unsigned_abs()).ok()?;
        if digits == "0" {
            return Some(0);
        }
        if cut >= digits.len() {
            return None;
        }
        let (kept, dropped) = digits.split_at(digits.len() - cut);
        if !dropped.bytes().all(|b| b == b'0') || kept.len() > 18 {
            return None;
        }
        kept.parse().ok()
    }
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
    fn formats_short() {
        assert_eq!(format_dollars_short(125_500_000), "125.5");
        assert_eq!(format_dollars_short(1), "0.000001");
        assert_eq!(format_dollars_short(3_000_000), "3");
        assert_eq!(format_dollars_short(0), "0");
        assert_eq!(format_dollars_short(-1_250_000), "-1.25");
    }

    #[test]
    fn parses_json_numbers_exactly() {
        assert_eq!(parse_dollars_number("2e-06"), Some(2));
        assert_eq!(parse_dollars_number("2E-6"), Some(2));
        assert_eq!(parse_dollars_number("1.5e-3"), Some(1500));
        assert_eq!(parse_dollars_number("1e3"), Some(1_000_000_000));
        assert_eq!(parse_dollars_number("1.25e+1"), Some(12_500_000));
        assert_eq!(parse_dollars_number("0e5"), Some(0));
        assert_eq!(parse_dollars_number("100e-8"), Some(1));
        assert_eq!(parse_dollars_number("0.000002"), Some(2));
        for bad in [
            "1e-7", "1.5e-6", "-1e-3", "1e", "e5", "1e99999", "1e30", "1.e3", "1e-",
        ] {
            assert_eq!(parse_dollars_number(bad), None, "{bad}");
        }
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

        #[test]
        fn json_number_forms_are_exact(micros in 0i64..=999_999_999_999) {
            prop_assert_eq!(parse_dollars_number(&format_dollars_short(micros)), Some(micros));
            prop_assert_eq!(parse_dollars_number(&format!("{micros}e-6")), Some(micros));
            prop_assert_eq!(parse_dollars_number(&format!("{micros}0e-7")), Some(micros));
            if micros % 10 != 0 {
                prop_assert_eq!(parse_dollars_number(&format!("{micros}e-7")), None);
            }
        }

        #[test]
        fn any_text_parses_or_not_without_panic(text in "\\PC{0,30}") {
            let _ = parse_dollars_number(&text);
        }
    }
}
