//! Timestamps: formatting and parsing without a date library.

use std::time::{Duration, UNIX_EPOCH};

use medic_protocol::Timestamp;

#[test]
fn formats_utc_with_milliseconds() {
    for (millis, text) in [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (1_772_366_405_250, "2026-03-01T12:00:05.250Z"),
        (4_107_542_399_999, "2100-02-28T23:59:59.999Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
    ] {
        let ts = Timestamp::from_unix_millis(millis);
        assert_eq!(ts.as_str(), text);
        assert_eq!(ts.unix_millis(), millis);
        assert_eq!(Timestamp::parse(text), Some(ts));
    }
}

#[test]
fn clamps_to_years_that_rfc_3339_can_write() {
    assert_eq!(
        Timestamp::from_unix_millis(i64::MAX).as_str(),
        "9999-12-31T23:59:59.999Z"
    );
    assert_eq!(
        Timestamp::from_unix_millis(i64::MIN).as_str(),
        "0000-01-01T00:00:00.000Z"
    );
}

#[test]
fn format_and_parse_agree_across_centuries() {
    // Every 7 hours, 13 minutes, 17.123 seconds from 1900 to 2200.
    let step = ((7 * 60 + 13) * 60 + 17) * 1_000 + 123;
    let mut millis = -2_208_988_800_000_i64;
    while millis < 7_258_118_400_000 {
        let ts = Timestamp::from_unix_millis(millis);
        let back = Timestamp::parse(ts.as_str()).expect("parses");
        assert_eq!(back.unix_millis(), millis, "{ts}");
        millis += step * 97;
    }
}

#[test]
fn parses_any_rfc_3339_form() {
    let base = 1_772_366_405_250;
    for text in [
        "2026-03-01T12:00:05.250Z",
        "2026-03-01T12:00:05.25Z",
        "2026-03-01T12:00:05.250999Z",
        "2026-03-01t12:00:05.250z",
        "2026-03-01 12:00:05.250Z",
        "2026-03-01T13:00:05.250+01:00",
        "2026-03-01T06:30:05.250-05:30",
        "2026-03-01T12:00:05.250+00:00",
    ] {
        let ts = Timestamp::parse(text).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(ts.unix_millis(), base, "{text}");
        assert_eq!(ts.as_str(), text, "the text is kept as sent");
    }
    assert_eq!(
        Timestamp::parse("2026-03-01T12:00:05Z").map(|t| t.unix_millis()),
        Some(base - 250)
    );
}

#[test]
fn rejects_what_is_not_rfc_3339() {
    for text in [
        "",
        "yesterday",
        "2026-03-01",
        "2026-03-01T12:00:05",
        "2026-03-01T12:00:05.Z",
        "2026-03-01T12:00:05.250",
        "2026-03-01T12:00:05.250+0100",
        "2026-03-01T12:00:05.250+24:00",
        "2026-13-01T12:00:05Z",
        "2026-00-01T12:00:05Z",
        "2026-02-29T12:00:05Z",
        "2026-04-31T12:00:05Z",
        "2026-03-01T24:00:05Z",
        "2026-03-01T12:60:05Z",
        "2026-03-01T12:00:61Z",
        "2026-03-01T12:00:05Zjunk",
        "+2026-03-01T12:00:05Z",
        "2026/03/01T12:00:05Z",
        "２026-03-01T12:00:05Z",
    ] {
        assert_eq!(Timestamp::parse(text), None, "{text:?}");
    }
    assert!(
        Timestamp::parse("2024-02-29T00:00:00Z").is_some(),
        "leap day"
    );
    assert!(
        Timestamp::parse("2000-02-29T00:00:00Z").is_some(),
        "leap century"
    );
    assert!(
        Timestamp::parse("1900-02-29T00:00:00Z").is_none(),
        "not a leap century"
    );
}

#[test]
fn converts_from_and_to_system_time() {
    let time = UNIX_EPOCH + Duration::from_micros(1_772_366_405_250_999);
    let ts = Timestamp::from_system_time(time);
    assert_eq!(ts.as_str(), "2026-03-01T12:00:05.250Z");
    assert_eq!(
        ts.to_system_time(),
        UNIX_EPOCH + Duration::from_millis(1_772_366_405_250)
    );

    let before = UNIX_EPOCH - Duration::from_micros(1);
    let ts = Timestamp::from_system_time(before);
    assert_eq!(ts.as_str(), "1969-12-31T23:59:59.999Z");
    assert_eq!(ts.to_system_time(), UNIX_EPOCH - Duration::from_millis(1));
}

#[test]
fn serializes_as_its_text() {
    let ts = Timestamp::from_unix_millis(0);
    assert_eq!(
        serde_json::to_string(&ts).expect("encodes"),
        "\"1970-01-01T00:00:00.000Z\""
    );
    let back: Timestamp = serde_json::from_str("\"1970-01-01T01:00:00+01:00\"").expect("decodes");
    assert_eq!(back.unix_millis(), 0);
    assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    assert!(serde_json::from_str::<Timestamp>("0").is_err());
}
