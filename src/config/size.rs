//! Sizes written as strings with a unit: `512B`, `16KiB`, `10MiB`, `1GiB`.

/// Parses `"<whole number><unit>"` with unit `B`, `KiB`, `MiB` or `GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bytes_per_unit: u64 = match unit.trim() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad(text)),
    };
    let value: u64 = number.parse().map_err(|_| bad(text))?;
    value
        .checked_mul(bytes_per_unit)
        .filter(|&n| n <= 1 << 50)
        .ok_or_else(|| format!("size `{text}` is too large"))
}

fn bad(text: &str) -> String {
    format!(
        "bad size `{text}`: expected a whole number with a unit (B, KiB, MiB, GiB), e.g. \"16KiB\""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size(" 2 KiB "), Ok(2048));
    }

    #[test]
    fn rejects_missing_unknown_or_fractional_units() {
        for text in [
            "",
            "5",
            "5x",
            "KiB",
            "1.5MiB",
            "-1B",
            "16kb",
            "16KB",
            "99999999999GiB",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} accepted");
        }
    }

    proptest::proptest! {
        /// Whatever a file says, the parser answers without panicking.
        #[test]
        fn any_text_is_parsed_or_refused(text in "\\PC{0,24}") {
            let _ = parse_size(&text);
        }

        /// Every whole number with every unit reads back as its bytes, or as too large.
        #[test]
        fn numbers_with_units_read_back(n in 0u64..(1 << 40), unit in 0usize..4) {
            let (name, scale) = [("B", 1u64), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)][unit];
            let parsed = parse_size(&format!("{n}{name}"));
            match n.checked_mul(scale).filter(|&b| b <= 1 << 50) {
                Some(bytes) => proptest::prop_assert_eq!(parsed, Ok(bytes)),
                None => proptest::prop_assert!(parsed.is_err()),
            }
        }
    }
}
