//! Timestamps: UTC with millisecond precision, rendered as RFC 3339 with an explicit offset
//! (`2026-11-23T18:27:47.123+00:00`), the format COMPAT.md promises.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant truncated to whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// The current wall-clock time, truncated to milliseconds.
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self::from_millis(dt.timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(
            Utc.timestamp_millis_opt(ms)
                .single()
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// Parses RFC 3339 (any offset), normalising to UTC milliseconds.
    pub fn parse(s: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|dt| Self::from_datetime(dt.with_timezone(&Utc)))
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Self::from_millis(self.millis().saturating_add(ms))
    }

    pub fn rfc3339(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, false)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom("expected an RFC 3339 timestamp with an offset")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_with_millis_and_offset() {
        let t = Timestamp::parse("2026-11-23T19:27:47.123456+01:00").unwrap();
        assert_eq!(t.rfc3339(), "2026-11-23T18:27:47.123+00:00");
        assert_eq!(Timestamp::from_millis(t.millis()), t);
    }

    #[test]
    fn rejects_timestamps_without_offset() {
        assert!(Timestamp::parse("2026-11-23T18:27:47").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
