//! Durations as operators write them: `90s`, `30m`, `2h`, `1d`, `1h30m`.

use std::time::Duration;

/// Parses a duration of one or more `<number><unit>` parts (units s, m, h, d, w).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("invalid duration {text:?}: use e.g. 90s, 30m, 2h, 1d or 1h30m");
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// For clap: `value_parser = duration::arg`.
pub fn arg(text: &str) -> Result<Duration, String> {
    parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("90s").unwrap().as_secs(), 90);
        assert_eq!(parse("2h").unwrap().as_secs(), 7200);
        assert_eq!(parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse("1d").unwrap().as_secs(), 86_400);
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "",
            "2",
            "h",
            "2x",
            "0m",
            "-1h",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
