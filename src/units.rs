//! Sizes as people type and read them, with one rule everywhere (CLI
//! arguments, help texts, messages, docs):
//!
//! ```text
//!   K  M  G  T  P   and  KiB MiB GiB TiB PiB   binary: powers of 1024   (10G = 10GiB = 10 x 2^30 bytes)
//!   kB MB GB TB PB  (any case)                 decimal: powers of 1000  (10GB = 10 x 10^9 bytes, as SI and disk labels)
//!   a bare number, or B                        bytes
//! ```
//!
//! Printed sizes are binary with one decimal: `1.0 GiB`, `512 B`.

#![forbid(unsafe_code)]

const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];

/// The size rule in one line, for messages.
pub const SIZE_RULE: &str = "K, M, G, T, P or KiB, MiB, GiB, TiB, PiB (1024s); \
     kB, MB, GB, TB, PB (1000s); none for bytes";

/// Parses a size: digits with an optional fraction, then an optional unit
/// (see the module's rule). The result must be a whole number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let junk = || format!("invalid size {text:?}: use a number and a unit: {SIZE_RULE}");
    if let Some(rest) = t.strip_prefix('-')
        && rest.starts_with(|c: char| c.is_ascii_digit() || c == '.')
    {
        return Err(format!(
            "size {t} is negative: give a size of 0 or more, e.g. 10G"
        ));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let unit = unit_bytes(suffix.trim_start()).ok_or_else(junk)?;
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(junk());
    }
    let too_big = || format!("size {t} is too large: the most is 16 EiB - 1 byte");
    let whole = parse_digits(int).ok_or_else(too_big)?;
    let (num, den) = fraction(frac).ok_or_else(junk)?;
    let frac_bytes = u128::from(num) * u128::from(unit);
    if frac_bytes % u128::from(den) != 0 {
        return Err(format!(
            "size {t} is not a whole number of bytes: use a smaller unit"
        ));
    }
    let bytes = u128::from(whole) * u128::from(unit) + frac_bytes / u128::from(den);
    u64::try_from(bytes).map_err(|_| too_big())
}

/// Bytes in one unit of `suffix`, or None if it is not a unit.
fn unit_bytes(suffix: &str) -> Option<u64> {
    let lower = suffix.to_ascii_lowercase();
    let (prefix, base) = match lower.as_str() {
        "" | "b" => return Some(1),
        _ => match (lower.strip_suffix("ib"), lower.strip_suffix('b')) {
            (Some(p), _) => (p, 1024u64),
            (None, Some(p)) => (p, 1000),
            (None, None) => (lower.as_str(), 1024),
        },
    };
    let power = ["k", "m", "g", "t", "p"]
        .iter()
        .position(|p| *p == prefix)?;
    base.checked_pow(u32::try_from(power + 1).ok()?)
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

/// A size in human units, with the exact byte count after it when the
/// human form rounds: `64.0 KiB`, `1000 B`, `100.0 KiB (102401 bytes)`.
/// For messages where the exact figure matters (alignment, limits).
pub fn format_exact(bytes: u64) -> String {
    let human = format_size(bytes);
    if parse_size(&human.replace(' ', "")) == Ok(bytes) {
        human
    } else {
        format!("{human} ({bytes} bytes)")
    }
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
    fn parses_plain_and_binary_sizes() {
        let cases = [
            ("4096", 4096),
            ("0", 0),
            ("64K", 64 * K),
            ("64k", 64 * K),
            ("512M", 512 * K * K),
            ("1G", K * K * K),
            ("1GiB", K * K * K),
            ("1gib", K * K * K),
            ("1 G", K * K * K),
            ("2T", 2 * K * K * K * K),
            ("2TiB", 2 * K * K * K * K),
            ("1P", K.pow(5)),
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
    fn a_unit_ending_in_b_alone_is_decimal() {
        let cases = [
            ("1kB", 1000),
            ("1KB", 1000),
            ("10MB", 10_000_000),
            ("10GB", 10_000_000_000),
            ("10gb", 10_000_000_000),
            ("1.5GB", 1_500_000_000),
            ("2TB", 2_000_000_000_000),
            ("1PB", 1_000_000_000_000_000),
            ("0.001kB", 1),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        assert_ne!(parse_size("10GB"), parse_size("10G"));
    }

    #[test]
    fn junk_names_the_input_and_the_fix() {
        for text in [
            "12Q", "", "K", "1..5G", "1e3", "one", "1G2", ".", "1KiBB", "-x",
        ] {
            let err = parse_size(text).expect_err(text);
            assert_eq!(
                err,
                format!(
                    "invalid size {text:?}: use a number and a unit: K, M, G, T, P or KiB, \
                     MiB, GiB, TiB, PiB (1024s); kB, MB, GB, TB, PB (1000s); none for bytes"
                )
            );
        }
    }

    #[test]
    fn negative_sizes_are_named_as_such() {
        for text in ["-1", "-1G", " -0.5GB", "-.5K"] {
            let err = parse_size(text).expect_err(text);
            assert_eq!(
                err,
                format!(
                    "size {} is negative: give a size of 0 or more, e.g. 10G",
                    text.trim()
                )
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
        assert!(
            parse_size("0.0001kB")
                .unwrap_err()
                .contains("whole number of bytes")
        );
        assert!(parse_size("16777216T").unwrap_err().contains("too large"));
        assert!(parse_size("18447PB").unwrap_err().contains("too large"));
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
    fn exact_sizes_keep_their_bytes_when_the_human_form_rounds() {
        assert_eq!(format_exact(64 * K), "64.0 KiB");
        assert_eq!(format_exact(1000), "1000 B");
        assert_eq!(format_exact(3 * K * K * K / 2), "1.5 GiB");
        assert_eq!(format_exact(100 * K + 1), "100.0 KiB (102401 bytes)");
        assert_eq!(format_exact(2_000_000_000), "1.9 GiB (2000000000 bytes)");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(12), "12s");
        assert_eq!(format_duration(185), "3m05s");
        assert_eq!(format_duration(3720), "1h02m");
    }
}
