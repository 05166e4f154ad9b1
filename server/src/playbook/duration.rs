//! Durations as playbooks write them: `30s`, `5m`, `1h`, `1h30m`, `2d`.

use std::time::Duration;

/// Parses `<n><unit>` groups (units `s`, `m`, `h`, `d`, largest first, each at most once), e.g.
/// `90s`, `5m`, `1h30m`. No spaces, no fractions, no bare numbers: a unit is always written so
/// that `timeout: 30` cannot silently mean seconds to one reader and minutes to another.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`{text}` is not a duration: write a number and a unit, e.g. 30s, 5m, 1h or 1h30m")
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut last_rank = usize::MAX;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = rest[digits..].chars().next().ok_or_else(bad)?;
        let (rank, seconds) = match unit {
            'd' => (0, 86_400),
            'h' => (1, 3_600),
            'm' => (2, 60),
            's' => (3, 1),
            _ => return Err(bad()),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        total = total.saturating_add(n.saturating_mul(seconds));
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

/// The shortest text [`parse`] reads back as `duration` (whole seconds).
pub fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_and_groups() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("1d2h3m4s"), Ok(Duration::from_secs(93_784)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "30",
            "m",
            "5 m",
            "5min",
            "1.5h",
            "-5s",
            "5s5s",
            "5s1m",
            "1h 30m",
            "9999999999s",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn formats_what_it_parses() {
        for secs in [1, 59, 60, 61, 3_600, 5_400, 86_400, 93_784] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format(d)), Ok(d));
        }
        assert_eq!(format(Duration::from_secs(5_400)), "1h30m");
    }
}
