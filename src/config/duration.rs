//! Durations written as strings with a unit: `500ms`, `1s`, `1.5s`, `2m`, `1h`.

use std::time::Duration;

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m` or `h`; the number may have a fraction.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit: f64 = match unit.trim() {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(bad(text)),
    };
    let value: f64 = number.parse().map_err(|_| bad(text))?;
    let millis = value * millis_per_unit;
    if !millis.is_finite() || millis > 1e12 {
        return Err(format!("duration `{text}` is too large"));
    }
    Ok(Duration::from_micros((millis * 1_000.0).round() as u64))
}

fn bad(text: &str) -> String {
    format!("bad duration `{text}`: expected a number with a unit (ms, s, m, h), e.g. \"500ms\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        for text in ["", "5", "5x", "s", "1.2.3s", "-1s", "ms5"] {
            assert!(parse_duration(text).is_err(), "{text:?} accepted");
        }
    }

    proptest::proptest! {
        /// Whatever a file says, the parser answers without panicking.
        #[test]
        fn any_text_is_parsed_or_refused(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }

        /// Whole milliseconds and seconds read back exactly.
        #[test]
        fn whole_numbers_read_back(n in 0u64..10_000_000) {
            proptest::prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(n)));
            proptest::prop_assert_eq!(parse_duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        }
    }
}
