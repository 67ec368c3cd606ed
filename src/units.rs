//! Sizes as people type and read them: `64K`, `1.5G`, `1GiB`, `4096`
//! (units are binary: K = 1024), and `1.0 GiB` back.

#![forbid(unsafe_code)]

const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];

/// Parses a size: digits with an optional fraction, then an optional
/// K/M/G/T/P suffix (any case, optionally followed by `iB` or `B`).
/// The result must be a whole number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let junk = || format!("invalid size {text:?}: use a number with an optional K, M, G, T suffix");
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let shift = suffix_shift(suffix.trim_start()).ok_or_else(junk)?;
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(junk());
    }
    if !(int.bytes().all(|b| b.is_ascii_digit()) && frac.bytes().all(|b| b.is_ascii_digit())) {
        return Err(junk());
    }
    let too_big = || format!("size {text:?} is too large");
    let whole = parse_digits(int).ok_or_else(too_big)?;
    let bytes = whole
        .checked_shl(shift)
        .filter(|b| b >> shift == whole)
        .ok_or_else(too_big)?;
    let (num, den) = fraction(frac).ok_or_else(junk)?;
    let frac_bytes = u128::from(num) << shift;
    if frac_bytes % u128::from(den) != 0 {
        return Err(format!(
            "size {text:?} is not a whole number of bytes: use a smaller unit"
        ));
    }
    let frac_bytes = u64::try_from(frac_bytes / u128::from(den)).map_err(|_| too_big())?;
    bytes.checked_add(frac_bytes).ok_or_else(too_big)
}

/// Bits to shift by for a suffix, or None if it is not one.
fn suffix_shift(suffix: &str) -> Option<u32> {
    let lower = suffix.to_ascii_lowercase();
    let unit = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    match unit {
        "" => Some(0),
        "k" => Some(10),
        "m" => Some(20),
        "g" => Some(30),
        "t" => Some(40),
        "p" => Some(50),
        _ => None,
    }
}

/// ASCII digits (possibly none) as a number; None if it overflows.
fn parse_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse().ok()
}

/// The digits after the point as numerator / 10^n.
fn fraction(digits: &str) -> Option<(u64, u64)> {
    let digits = digits.trim_end_matches('0');
    if digits.len() > 18 {
        return None;
    }
    let num = parse_digits(digits)?;
    let exp = u32::try_from(digits.len()).ok()?;
    Some((num, 10u64.pow(exp)))
}

/// `1.0 GiB`, `512 B`, `1.5 KiB`: one decimal, binary units.
pub fn format_size(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut scaled = bytes;
    while scaled >= 1024 * 1024 && unit + 1 < UNITS.len() {
        scaled /= 1024;
        unit += 1;
    }
    // `scaled` is in units of UNITS[unit] * 1024^-1: one decimal from it.
    let tenths = (u128::from(scaled) * 10 + 512) / 1024;
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit])
}

/// `1.0 MiB/s`.
pub fn format_rate(bytes_per_sec: u64) -> String {
    format!("{}/s", format_size(bytes_per_sec))
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_duration(secs: u64) -> String {
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 1024;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        let cases = [
            ("4096", 4096),
            ("0", 0),
            ("64K", 64 * K),
            ("64k", 64 * K),
            ("512M", 512 * K * K),
            ("1G", K * K * K),
            ("1GiB", K * K * K),
            ("1GB", K * K * K),
            ("1 G", K * K * K),
            ("2T", 2 * K * K * K * K),
            ("1.5G", 3 * K * K * K / 2),
            ("0.5K", 512),
            (".5K", 512),
            ("1.25M", 5 * K * K / 4),
            ("7B", 7),
            (" 8K ", 8 * K),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn junk_names_the_input_and_the_fix() {
        for text in ["12Q", "", "K", "-1", "1..5G", "1e3", "one", "1G2", "."] {
            let err = parse_size(text).expect_err(text);
            assert_eq!(
                err,
                format!("invalid size {text:?}: use a number with an optional K, M, G, T suffix")
            );
        }
    }

    #[test]
    fn fractions_of_a_byte_and_overflow_are_refused() {
        assert!(
            parse_size("1.1")
                .unwrap_err()
                .contains("whole number of bytes")
        );
        assert!(
            parse_size("0.3K")
                .unwrap_err()
                .contains("whole number of bytes")
        );
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert!(
            parse_size("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn formats_binary_units_with_one_decimal() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(K), "1.0 KiB");
        assert_eq!(format_size(K + K / 2), "1.5 KiB");
        assert_eq!(format_size(K * K * K), "1.0 GiB");
        assert_eq!(format_size(3 * K * K * K / 2), "1.5 GiB");
        assert_eq!(format_size(1023 * K * K), "1023.0 MiB");
        assert_eq!(format_size(K.pow(5) * 3), "3.0 PiB");
        assert_eq!(format_size(K.pow(6)), "1024.0 PiB");
        assert_eq!(format_rate(K * K), "1.0 MiB/s");
    }

    #[test]
    fn parse_reads_what_format_writes() {
        for bytes in [K, 3 * K * K / 2, 5 * K * K * K, 64 * K] {
            let text = format_size(bytes).replace(' ', "");
            assert_eq!(parse_size(&text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(12), "12s");
        assert_eq!(format_duration(185), "3m05s");
        assert_eq!(format_duration(3720), "1h02m");
    }
}
