//! Calendars: expected cron schedules, working hours and maintenance windows.
//!
//! Everything here is a pure function of an instant ([`Timestamp`], UTC milliseconds) and a
//! parsed calendar value; the clock is always a parameter. Local times are interpreted in an IANA
//! time zone (`Europe/Berlin`), so the rules below hold across daylight-saving changes.
//!
//! # Daylight-saving rules
//!
//! Cron expressions follow the Open Cron Pattern Specification as implemented by `croner`:
//!
//! - **Skipped local times** (spring forward): a *fixed-time* job (single second, minute and
//!   hour, e.g. `30 2 * * *`) whose local time does not exist that day fires once, at the first
//!   instant after the gap (03:00 in Europe/Berlin). Interval jobs (`*/15 * * * *`, `0 * * * *`)
//!   simply have no fire times inside the gap.
//! - **Repeated local times** (fall back): a fixed-time job fires once, at the first of the two
//!   instants. Interval jobs fire in both passes.
//!
//! Working-hours ranges are wall-clock ranges: an instant is inside when its local time is.
//! A 00:00–24:00 range covers 23 hours on a spring-forward day and 25 on a fall-back day.
//! Maintenance durations are elapsed time, not wall-clock time.
//!
//! # Serialized forms
//!
//! Each calendar type (de)serializes through a plain spec and is validated while deserializing,
//! so a value of these types is always valid.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Longest maintenance window duration accepted for a recurring window (one week).
pub const MAX_WINDOW_MINUTES: u32 = 7 * 24 * 60;

/// Upper bound on overlapping recurring windows merged by
/// [`MaintenanceWindow::active_until`].
const MAX_MERGED_WINDOWS: usize = 1_000;

/// Why a calendar value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expression:?}: {reason}")]
    InvalidCron { expression: String, reason: String },
    #[error("cron expression {0:?} never fires")]
    CronNeverFires(String),
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("unknown day {0:?}; expected mon, tue, wed, thu, fri, sat or sun")]
    UnknownDay(String),
    #[error("invalid time of day {0:?}; expected HH:MM (00:00 to 24:00)")]
    InvalidTimeOfDay(String),
    #[error("a range must name at least one day")]
    NoDays,
    #[error("a range must not start and end at the same time")]
    EmptyRange,
    #[error("a maintenance window must end after it starts")]
    InvertedWindow,
    #[error("a maintenance window must last between 1 and {MAX_WINDOW_MINUTES} minutes")]
    InvalidDuration,
}

/// Parses an IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))
}

fn local(t: Timestamp, tz: Tz) -> DateTime<Tz> {
    t.datetime().with_timezone(&tz)
}

fn from_zoned(dt: &DateTime<Tz>) -> Timestamp {
    Timestamp::from_datetime(dt.with_timezone(&Utc))
}

/// `t` rounded down to a whole second (cron fires on whole seconds).
fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(t.millis().div_euclid(1000) * 1000)
}

// ---- cron -------------------------------------------------------------------------------------

/// A cron expression evaluated in a time zone.
///
/// Five fields (`min hour dom month dow`) or six with leading seconds. Day-of-month and
/// day-of-week combine with OR when both are restricted, as in Vixie cron. Nicknames
/// (`@daily`, `@hourly`…) and names (`MON`, `JAN`) are accepted.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "CronSpec", into = "CronSpec")]
pub struct CronSchedule {
    expression: String,
    tz: Tz,
    // Boxed: the parsed pattern is a few hundred bytes and schedules sit inside enums.
    cron: Box<Cron>,
}

/// Serialized form of a [`CronSchedule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSpec {
    pub cron: String,
    pub timezone: String,
}

impl CronSchedule {
    /// Parses `expression` in the IANA zone `timezone`. Refuses expressions that can never fire
    /// (`0 0 30 2 *`).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let tz = parse_timezone(timezone)?;
        let expression = expression.trim().to_owned();
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&expression)
            .map_err(|e| ScheduleError::InvalidCron {
                expression: expression.clone(),
                reason: e.to_string(),
            })?;
        let schedule = Self {
            expression,
            tz,
            cron: Box::new(cron),
        };
        // Any satisfiable pattern fires within a leap-year cycle; probing a bounded span keeps
        // an impossible date (February 30) from being accepted.
        let probe = Timestamp::parse("2024-01-01T00:00:00Z").unwrap_or(Timestamp::from_millis(0));
        if schedule.next_after(probe).is_none() {
            return Err(ScheduleError::CronNeverFires(schedule.expression));
        }
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`, or `None` when the schedule never fires again.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let start = local(floor_second(t), self.tz);
        self.cron
            .find_next_occurrence(&start, false)
            .ok()
            .map(|dt| from_zoned(&dt))
    }

    /// The last fire time at or before `t`, or `None` when the schedule never fired before.
    pub fn prev_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let start = local(floor_second(t), self.tz);
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|dt| from_zoned(&dt))
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("timezone", &self.tz.name())
            .finish()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.tz == other.tz
    }
}

impl Eq for CronSchedule {}

impl TryFrom<CronSpec> for CronSchedule {
    type Error = ScheduleError;

    fn try_from(spec: CronSpec) -> Result<Self, Self::Error> {
        Self::parse(&spec.cron, &spec.timezone)
    }
}

impl From<CronSchedule> for CronSpec {
    fn from(s: CronSchedule) -> Self {
        Self {
            cron: s.expression,
            timezone: s.tz.name().to_owned(),
        }
    }
}

// ---- working hours ----------------------------------------------------------------------------

/// A day of the week, serialized as `mon` … `sun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub const ALL: [Self; 7] = [
        Self::Mon,
        Self::Tue,
        Self::Wed,
        Self::Thu,
        Self::Fri,
        Self::Sat,
        Self::Sun,
    ];

    pub fn parse(s: &str) -> Result<Self, ScheduleError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mon" | "monday" => Ok(Self::Mon),
            "tue" | "tuesday" => Ok(Self::Tue),
            "wed" | "wednesday" => Ok(Self::Wed),
            "thu" | "thursday" => Ok(Self::Thu),
            "fri" | "friday" => Ok(Self::Fri),
            "sat" | "saturday" => Ok(Self::Sat),
            "sun" | "sunday" => Ok(Self::Sun),
            _ => Err(ScheduleError::UnknownDay(s.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mon => "mon",
            Self::Tue => "tue",
            Self::Wed => "wed",
            Self::Thu => "thu",
            Self::Fri => "fri",
            Self::Sat => "sat",
            Self::Sun => "sun",
        }
    }

    fn from_chrono(d: chrono::Weekday) -> Self {
        Self::ALL[d.num_days_from_monday() as usize]
    }

    fn next(self) -> Self {
        Self::ALL[(self as usize + 1) % 7]
    }
}

/// A local time of day in whole minutes, `00:00` to `24:00` (the latter only as a range end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    const END_OF_DAY: u16 = 24 * 60;

    /// Parses `HH:MM`. `24:00` is accepted (as the end of the day).
    pub fn parse(s: &str) -> Result<Self, ScheduleError> {
        let bad = || ScheduleError::InvalidTimeOfDay(s.to_owned());
        let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
        let two_digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return Err(bad());
        }
        let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if m >= 60 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(Self(h * 60 + m))
    }

    pub fn minutes(self) -> u16 {
        self.0
    }

    fn naive(self) -> Option<NaiveTime> {
        NaiveTime::from_hms_opt(u32::from(self.0 / 60), u32::from(self.0 % 60), 0)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// One validated range of local time starting on `day`. When `end <= start` the range crosses
/// midnight and ends on the following day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DayRange {
    day: Day,
    start: TimeOfDay,
    end: TimeOfDay,
}

impl DayRange {
    fn crosses_midnight(self) -> bool {
        self.end <= self.start
    }

    fn contains(self, day: Day, minute: u16) -> bool {
        let minute = TimeOfDay(minute);
        if self.crosses_midnight() {
            (day == self.day && minute >= self.start)
                || (day == self.day.next() && minute < self.end)
        } else {
            day == self.day && minute >= self.start && minute < self.end
        }
    }
}

/// Working hours: per-weekday ranges of local time in one time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WorkingHoursSpec", into = "WorkingHoursSpec")]
pub struct WorkingHours {
    tz: Tz,
    ranges: Vec<DayRange>,
    spec: WorkingHoursSpec,
}

/// Serialized form of [`WorkingHours`]:
/// `{"timezone": "America/New_York", "ranges": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingHoursSpec {
    pub timezone: String,
    pub ranges: Vec<RangeSpec>,
}

/// One entry of [`WorkingHoursSpec::ranges`]. `end` may be earlier than `start` (the range
/// crosses midnight) and may be `24:00`; it must not equal `start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    pub days: Vec<String>,
    pub start: String,
    pub end: String,
}

impl WorkingHours {
    pub fn parse(spec: WorkingHoursSpec) -> Result<Self, ScheduleError> {
        let tz = parse_timezone(&spec.timezone)?;
        let mut ranges = Vec::new();
        for r in &spec.ranges {
            if r.days.is_empty() {
                return Err(ScheduleError::NoDays);
            }
            let start = TimeOfDay::parse(&r.start)?;
            let end = TimeOfDay::parse(&r.end)?;
            if start.0 == TimeOfDay::END_OF_DAY {
                return Err(ScheduleError::InvalidTimeOfDay(r.start.clone()));
            }
            if start == end {
                return Err(ScheduleError::EmptyRange);
            }
            // 24:00 as an end is midnight of the next day; store it as such so that
            // `end <= start` alone marks a range that crosses midnight.
            let end = if end.0 == TimeOfDay::END_OF_DAY {
                TimeOfDay(0)
            } else {
                end
            };
            for d in &r.days {
                ranges.push(DayRange {
                    day: Day::parse(d)?,
                    start,
                    end,
                });
            }
        }
        Ok(Self { tz, ranges, spec })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    pub fn spec(&self) -> &WorkingHoursSpec {
        &self.spec
    }

    /// Whether the local time of `t` falls inside a range (start inclusive, end exclusive).
    pub fn contains(&self, t: Timestamp) -> bool {
        let lt = local(t, self.tz);
        let day = Day::from_chrono(lt.weekday());
        // Both passes of a repeated local hour share their wall-clock minute.
        let minute = (lt.hour() * 60 + lt.minute()) as u16;
        self.ranges.iter().any(|r| r.contains(day, minute))
    }

    /// `t` itself when it is inside working hours, otherwise the first later instant that is,
    /// or `None` when no range is defined. Precise to the minute ranges are written in.
    pub fn next_opening(&self, t: Timestamp) -> Option<Timestamp> {
        if self.contains(t) {
            return Some(t);
        }
        let today = local(t, self.tz).date_naive();
        let mut best: Option<Timestamp> = None;
        // A range's opening is its start on a matching day; a week ahead covers every day.
        for offset in -1..=8 {
            let Some(date) = today.checked_add_signed(chrono::TimeDelta::days(offset)) else {
                continue;
            };
            let day = Day::from_chrono(date.weekday());
            for r in self.ranges.iter().filter(|r| r.day == day) {
                for start in self.resolve_local(date, r.start) {
                    if start > t && self.contains(start) && best.is_none_or(|b| start < b) {
                        best = Some(start);
                    }
                }
            }
        }
        best
    }

    /// The instants at which local `date` `time` happens: one usually, two when the clock is
    /// put back over it, and the first instant after the gap when it is skipped.
    fn resolve_local(&self, date: NaiveDate, time: TimeOfDay) -> Vec<Timestamp> {
        let Some(naive) = time.naive().map(|tm| date.and_time(tm)) else {
            return Vec::new();
        };
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(dt) => vec![from_zoned(&dt)],
            LocalResult::Ambiguous(a, b) => vec![from_zoned(&a), from_zoned(&b)],
            LocalResult::None => {
                // Gaps are whole minutes in every zone; walk to the first local minute after.
                (1..=24 * 60)
                    .find_map(|m| {
                        self.tz
                            .from_local_datetime(&(naive + chrono::TimeDelta::minutes(m)))
                            .earliest()
                    })
                    .map(|dt| vec![from_zoned(&dt)])
                    .unwrap_or_default()
            }
        }
    }
}

impl TryFrom<WorkingHoursSpec> for WorkingHours {
    type Error = ScheduleError;

    fn try_from(spec: WorkingHoursSpec) -> Result<Self, Self::Error> {
        Self::parse(spec)
    }
}

impl From<WorkingHours> for WorkingHoursSpec {
    fn from(w: WorkingHours) -> Self {
        w.spec
    }
}

// ---- maintenance windows ----------------------------------------------------------------------

/// A period during which a service (or everything) is not alerted on.
///
/// Windows are half-open: active from the start (inclusive) to the end (exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MaintenanceWindowSpec", into = "MaintenanceWindowSpec")]
pub enum MaintenanceWindow {
    OneTime {
        starts_at: Timestamp,
        ends_at: Timestamp,
    },
    /// Opens at each fire time of `schedule` and lasts `duration_minutes` of elapsed time.
    Recurring {
        schedule: CronSchedule,
        duration_minutes: u32,
    },
}

/// Serialized form of a [`MaintenanceWindow`], tagged by `kind`:
/// `{"kind": "one_time", "starts_at": "…", "ends_at": "…"}` or
/// `{"kind": "recurring", "cron": "0 3 * * sun", "timezone": "Europe/Berlin", "duration_minutes": 60}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MaintenanceWindowSpec {
    OneTime {
        starts_at: Timestamp,
        ends_at: Timestamp,
    },
    Recurring {
        cron: String,
        timezone: String,
        duration_minutes: u32,
    },
}

impl MaintenanceWindow {
    /// A one-time window; `ends_at` must be after `starts_at`.
    pub fn one_time(starts_at: Timestamp, ends_at: Timestamp) -> Result<Self, ScheduleError> {
        if ends_at <= starts_at {
            return Err(ScheduleError::InvertedWindow);
        }
        Ok(Self::OneTime { starts_at, ends_at })
    }

    /// A recurring window of 1 to [`MAX_WINDOW_MINUTES`] minutes.
    pub fn recurring(schedule: CronSchedule, duration_minutes: u32) -> Result<Self, ScheduleError> {
        if duration_minutes == 0 || duration_minutes > MAX_WINDOW_MINUTES {
            return Err(ScheduleError::InvalidDuration);
        }
        Ok(Self::Recurring {
            schedule,
            duration_minutes,
        })
    }

    fn duration_ms(duration_minutes: u32) -> i64 {
        i64::from(duration_minutes) * 60_000
    }

    /// The single occurrence whose span contains `t`, if any: the latest start at or before `t`.
    fn occurrence_at(&self, t: Timestamp) -> Option<(Timestamp, Timestamp)> {
        match self {
            Self::OneTime { starts_at, ends_at } => {
                (*starts_at <= t && t < *ends_at).then_some((*starts_at, *ends_at))
            }
            Self::Recurring {
                schedule,
                duration_minutes,
            } => {
                // Later starts end later, so only the latest start can still be open.
                let start = schedule.prev_at_or_before(t)?;
                let end = start.plus_millis(Self::duration_ms(*duration_minutes));
                (t < end).then_some((start, end))
            }
        }
    }

    pub fn is_active(&self, t: Timestamp) -> bool {
        self.occurrence_at(t).is_some()
    }

    /// When the window containing `t` closes, or `None` when `t` is outside it. Overlapping or
    /// touching recurring occurrences merge into one window (up to a bound of
    /// 1,000 occurrences; past it, the returned end is where merging stopped, and the window is
    /// still active then).
    pub fn active_until(&self, t: Timestamp) -> Option<Timestamp> {
        let (mut start, mut end) = self.occurrence_at(t)?;
        if let Self::Recurring {
            schedule,
            duration_minutes,
        } = self
        {
            for _ in 0..MAX_MERGED_WINDOWS {
                match schedule.next_after(start) {
                    Some(next) if next <= end => {
                        start = next;
                        end = end.max(next.plus_millis(Self::duration_ms(*duration_minutes)));
                    }
                    _ => break,
                }
            }
        }
        Some(end)
    }

    /// Whether the window is active at any instant of `[from, to)`.
    pub fn overlaps(&self, from: Timestamp, to: Timestamp) -> bool {
        if to <= from {
            return false;
        }
        match self {
            Self::OneTime { starts_at, ends_at } => *starts_at < to && from < *ends_at,
            Self::Recurring { schedule, .. } => {
                self.is_active(from) || schedule.next_after(from).is_some_and(|s| s < to)
            }
        }
    }

    /// The end of the latest occurrence that closed at or before `t`.
    pub fn last_closed_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Self::OneTime { ends_at, .. } => (*ends_at <= t).then_some(*ends_at),
            Self::Recurring {
                schedule,
                duration_minutes,
            } => {
                let d = Self::duration_ms(*duration_minutes);
                schedule
                    .prev_at_or_before(t.plus_millis(-d))
                    .map(|s| s.plus_millis(d))
            }
        }
    }
}

impl TryFrom<MaintenanceWindowSpec> for MaintenanceWindow {
    type Error = ScheduleError;

    fn try_from(spec: MaintenanceWindowSpec) -> Result<Self, Self::Error> {
        match spec {
            MaintenanceWindowSpec::OneTime { starts_at, ends_at } => {
                Self::one_time(starts_at, ends_at)
            }
            MaintenanceWindowSpec::Recurring {
                cron,
                timezone,
                duration_minutes,
            } => Self::recurring(CronSchedule::parse(&cron, &timezone)?, duration_minutes),
        }
    }
}

impl From<MaintenanceWindow> for MaintenanceWindowSpec {
    fn from(w: MaintenanceWindow) -> Self {
        match w {
            MaintenanceWindow::OneTime { starts_at, ends_at } => {
                Self::OneTime { starts_at, ends_at }
            }
            MaintenanceWindow::Recurring {
                schedule,
                duration_minutes,
            } => {
                let CronSpec { cron, timezone } = schedule.into();
                Self::Recurring {
                    cron,
                    timezone,
                    duration_minutes,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|| panic!("bad test timestamp {s}"))
    }

    fn cron(expr: &str, tz: &str) -> CronSchedule {
        CronSchedule::parse(expr, tz).unwrap()
    }

    fn next_n(s: &CronSchedule, mut t: Timestamp, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.rfc3339()
            })
            .collect()
    }

    // ---- cron ----

    #[test]
    fn five_and_six_field_expressions_parse() {
        let s = cron("*/15 * * * *", "UTC");
        assert_eq!(
            s.next_after(ts("2026-11-23T10:07:00Z")),
            Some(ts("2026-11-23T10:15:00Z"))
        );
        let s = cron("30 */15 * * * *", "UTC");
        assert_eq!(
            s.next_after(ts("2026-11-23T10:07:00Z")),
            Some(ts("2026-11-23T10:15:30Z"))
        );
        let s = cron("@daily", "Europe/Berlin");
        assert_eq!(
            s.next_after(ts("2026-11-23T10:00:00Z")),
            Some(ts("2026-11-23T23:00:00Z"))
        );
        let s = cron("0 9 * * MON-FRI", "America/New_York");
        // Saturday morning → Monday 09:00 EST.
        assert_eq!(
            s.next_after(ts("2026-11-28T12:00:00Z")),
            Some(ts("2026-11-30T14:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_named() {
        for bad in [
            "",
            "* * *",
            "61 * * * *",
            "* * * * * * * *",
            "0 0 * * FOO",
            "1 2 3 4 5 2026",
        ] {
            assert!(
                matches!(
                    CronSchedule::parse(bad, "UTC"),
                    Err(ScheduleError::InvalidCron { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            CronSchedule::parse("* * * * *", "Mars/Olympus"),
            Err(ScheduleError::UnknownTimeZone("Mars/Olympus".into()))
        );
        assert_eq!(
            CronSchedule::parse("0 0 30 2 *", "UTC"),
            Err(ScheduleError::CronNeverFires("0 0 30 2 *".into()))
        );
        // February 29 fires every leap year.
        let leap = cron("0 0 29 2 *", "UTC");
        assert_eq!(
            leap.next_after(ts("2026-03-01T00:00:00Z")),
            Some(ts("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn next_is_strictly_after_and_prev_is_at_or_before() {
        let s = cron("0 * * * *", "UTC");
        let on = ts("2026-11-23T10:00:00Z");
        assert_eq!(s.next_after(on), Some(ts("2026-11-23T11:00:00Z")));
        assert_eq!(s.prev_at_or_before(on), Some(on));
        // Sub-second instants: a fire at 10:00:00.000 is before 10:00:00.500.
        let half = ts("2026-11-23T10:00:00.500Z");
        assert_eq!(s.next_after(half), Some(ts("2026-11-23T11:00:00Z")));
        assert_eq!(s.prev_at_or_before(half), Some(on));
        assert_eq!(
            s.prev_at_or_before(ts("2026-11-23T09:59:59.999Z")),
            Some(ts("2026-11-23T09:00:00Z"))
        );
        assert_eq!(s.next_after(ts("2026-11-23T09:59:59.999Z")), Some(on));
    }

    #[test]
    fn skipped_local_time_fires_once_right_after_the_gap() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST.
        let s = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            next_n(&s, ts("2026-03-27T12:00:00Z"), 3),
            [
                "2026-03-28T01:30:00.000+00:00", // 02:30 CET
                "2026-03-29T01:00:00.000+00:00", // 02:30 does not exist: 03:00 CEST
                "2026-03-30T00:30:00.000+00:00", // 02:30 CEST
            ]
        );
        assert_eq!(
            s.prev_at_or_before(ts("2026-03-29T06:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        // A job scheduled before the gap is not moved.
        let s = cron("30 1 * * *", "Europe/Berlin");
        assert_eq!(
            s.next_after(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T00:30:00Z"))
        );
        // Interval jobs have no fire times inside the gap.
        let s = cron("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            next_n(&s, ts("2026-03-29T00:00:00Z"), 3),
            [
                "2026-03-29T00:30:00.000+00:00", // 01:30 CET
                "2026-03-29T01:00:00.000+00:00", // 03:00 CEST
                "2026-03-29T01:30:00.000+00:00", // 03:30 CEST
            ]
        );
    }

    #[test]
    fn repeated_local_time_fires_once_for_fixed_jobs_and_twice_for_interval_jobs() {
        // Europe/Berlin falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
        let s = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            next_n(&s, ts("2026-10-24T12:00:00Z"), 2),
            [
                "2026-10-25T00:30:00.000+00:00", // first 02:30 (CEST) only
                "2026-10-26T01:30:00.000+00:00", // 02:30 CET the next day
            ]
        );
        // Starting between the two passes does not fire on the second one.
        assert_eq!(
            s.next_after(ts("2026-10-25T01:00:00Z")),
            Some(ts("2026-10-26T01:30:00Z"))
        );
        let s = cron("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            next_n(&s, ts("2026-10-25T00:00:00Z"), 4),
            [
                "2026-10-25T00:30:00.000+00:00", // 02:30 CEST
                "2026-10-25T01:00:00.000+00:00", // 02:00 CET
                "2026-10-25T01:30:00.000+00:00", // 02:30 CET
                "2026-10-25T02:00:00.000+00:00", // 03:00 CET
            ]
        );
        assert_eq!(
            s.prev_at_or_before(ts("2026-10-25T01:10:00Z")),
            Some(ts("2026-10-25T01:00:00Z"))
        );
    }

    #[test]
    fn cron_serializes_as_its_spec() {
        let s = cron(" 0 3 * * sun ", "Europe/Berlin");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cron": "0 3 * * sun", "timezone": "Europe/Berlin"})
        );
        let back: CronSchedule = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert!(
            serde_json::from_value::<CronSchedule>(
                serde_json::json!({"cron": "nope", "timezone": "UTC"})
            )
            .is_err()
        );
    }

    // ---- working hours ----

    fn hours(tz: &str, ranges: &[(&[&str], &str, &str)]) -> Result<WorkingHours, ScheduleError> {
        WorkingHours::parse(WorkingHoursSpec {
            timezone: tz.into(),
            ranges: ranges
                .iter()
                .map(|(days, start, end)| RangeSpec {
                    days: days.iter().map(|d| d.to_string()).collect(),
                    start: start.to_string(),
                    end: end.to_string(),
                })
                .collect(),
        })
    }

    const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri"];

    #[test]
    fn office_hours_in_new_york() {
        let w = hours("America/New_York", &[(WEEKDAYS, "09:00", "17:00")]).unwrap();
        // Monday 2026-11-23, EST (UTC-5).
        assert!(!w.contains(ts("2026-11-23T13:59:59.999Z")));
        assert!(w.contains(ts("2026-11-23T14:00:00Z")));
        assert!(w.contains(ts("2026-11-23T21:59:59Z")));
        assert!(!w.contains(ts("2026-11-23T22:00:00Z")));
        // Saturday and Sunday are out.
        assert!(!w.contains(ts("2026-11-28T15:00:00Z")));
        assert!(!w.contains(ts("2026-11-29T15:00:00Z")));
        // Summer time (EDT, UTC-4): 09:00 local is 13:00 UTC.
        assert!(w.contains(ts("2026-07-01T13:00:00Z")));
        assert!(!w.contains(ts("2026-07-01T12:59:00Z")));
    }

    #[test]
    fn ranges_cross_midnight_into_the_next_day() {
        let w = hours("UTC", &[(&["fri"], "22:00", "06:00")]).unwrap();
        assert!(!w.contains(ts("2026-11-27T21:59:00Z"))); // Fri
        assert!(w.contains(ts("2026-11-27T22:00:00Z")));
        assert!(w.contains(ts("2026-11-28T00:00:00Z"))); // Sat
        assert!(w.contains(ts("2026-11-28T05:59:00Z")));
        assert!(!w.contains(ts("2026-11-28T06:00:00Z")));
        assert!(!w.contains(ts("2026-11-28T22:00:00Z"))); // Sat evening: not a start day
        assert!(!w.contains(ts("2026-11-27T03:00:00Z"))); // Fri early: belongs to Thu's range
        // Sunday into Monday wraps around the week.
        let w = hours("UTC", &[(&["sun"], "20:00", "02:00")]).unwrap();
        assert!(w.contains(ts("2026-11-30T01:00:00Z"))); // Mon
        assert!(!w.contains(ts("2026-11-24T01:00:00Z"))); // Tue
    }

    #[test]
    fn whole_days_and_ranges_ending_at_midnight() {
        let w = hours("UTC", &[(&["sat", "sun"], "00:00", "24:00")]).unwrap();
        assert!(w.contains(ts("2026-11-28T00:00:00Z")));
        assert!(w.contains(ts("2026-11-29T23:59:59Z")));
        assert!(!w.contains(ts("2026-11-30T00:00:00Z")));
        assert!(!w.contains(ts("2026-11-27T23:59:59Z")));
        let w = hours("UTC", &[(&["mon"], "18:00", "24:00")]).unwrap();
        assert!(w.contains(ts("2026-11-23T23:59:00Z")));
        assert!(!w.contains(ts("2026-11-24T00:00:00Z")));
    }

    #[test]
    fn working_hours_follow_the_wall_clock_across_dst() {
        // Spring forward in Berlin: 02:00–03:00 does not exist on 2026-03-29.
        let w = hours("Europe/Berlin", &[(&["sun"], "02:00", "03:00")]).unwrap();
        assert!(!w.contains(ts("2026-03-29T00:59:59Z"))); // 01:59:59 CET
        assert!(!w.contains(ts("2026-03-29T01:00:00Z"))); // 03:00 CEST
        assert_eq!(
            w.next_opening(ts("2026-03-29T00:00:00Z")),
            Some(ts("2026-04-05T00:00:00Z"))
        );
        let w = hours("Europe/Berlin", &[(&["sun"], "01:00", "04:00")]).unwrap();
        assert!(w.contains(ts("2026-03-29T00:00:00Z"))); // 01:00 CET
        assert!(w.contains(ts("2026-03-29T01:59:59Z"))); // 03:59:59 CEST
        assert!(!w.contains(ts("2026-03-29T02:00:00Z"))); // 04:00 CEST: two hours elapsed
        // Fall back on 2026-10-25: 02:00–03:00 happens twice, both passes are inside.
        let w = hours("Europe/Berlin", &[(&["sun"], "02:00", "03:00")]).unwrap();
        assert!(!w.contains(ts("2026-10-24T23:59:59Z"))); // 01:59:59 CEST
        assert!(w.contains(ts("2026-10-25T00:00:00Z"))); // 02:00 CEST
        assert!(w.contains(ts("2026-10-25T01:00:00Z"))); // 02:00 CET
        assert!(w.contains(ts("2026-10-25T01:59:59Z"))); // 02:59:59 CET
        assert!(!w.contains(ts("2026-10-25T02:00:00Z"))); // 03:00 CET
    }

    #[test]
    fn next_opening() {
        let w = hours("America/New_York", &[(WEEKDAYS, "09:00", "17:00")]).unwrap();
        let inside = ts("2026-11-23T15:00:00Z");
        assert_eq!(w.next_opening(inside), Some(inside));
        // Friday evening → Monday 09:00 EST.
        assert_eq!(
            w.next_opening(ts("2026-11-27T23:00:00Z")),
            Some(ts("2026-11-30T14:00:00Z"))
        );
        // Monday before opening → same day.
        assert_eq!(
            w.next_opening(ts("2026-11-23T05:00:00Z")),
            Some(ts("2026-11-23T14:00:00Z"))
        );
        // A start inside the spring-forward gap opens when the clock jumps.
        let w = hours("Europe/Berlin", &[(&["sun"], "02:30", "05:00")]).unwrap();
        assert_eq!(
            w.next_opening(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        // A start repeated at fall back opens again on the second pass.
        let w = hours("Europe/Berlin", &[(&["sun"], "02:15", "02:45")]).unwrap();
        assert_eq!(
            w.next_opening(ts("2026-10-25T00:50:00Z")),
            Some(ts("2026-10-25T01:15:00Z"))
        );
        let none = hours("UTC", &[]).unwrap();
        assert_eq!(none.next_opening(ts("2026-11-23T00:00:00Z")), None);
        assert!(!none.contains(ts("2026-11-23T00:00:00Z")));
    }

    #[test]
    fn working_hours_validation() {
        let cases: &[(&str, &[&str], &str, &str, ScheduleError)] = &[
            (
                "UTC",
                &["mon", "funday"],
                "09:00",
                "17:00",
                ScheduleError::UnknownDay("funday".into()),
            ),
            ("UTC", &[], "09:00", "17:00", ScheduleError::NoDays),
            (
                "UTC",
                &["mon"],
                "9:00",
                "17:00",
                ScheduleError::InvalidTimeOfDay("9:00".into()),
            ),
            (
                "UTC",
                &["mon"],
                "09:00",
                "25:00",
                ScheduleError::InvalidTimeOfDay("25:00".into()),
            ),
            (
                "UTC",
                &["mon"],
                "09:00",
                "24:30",
                ScheduleError::InvalidTimeOfDay("24:30".into()),
            ),
            (
                "UTC",
                &["mon"],
                "09:60",
                "17:00",
                ScheduleError::InvalidTimeOfDay("09:60".into()),
            ),
            (
                "UTC",
                &["mon"],
                "24:00",
                "06:00",
                ScheduleError::InvalidTimeOfDay("24:00".into()),
            ),
            (
                "UTC",
                &["mon"],
                "0900",
                "17:00",
                ScheduleError::InvalidTimeOfDay("0900".into()),
            ),
            (
                "UTC",
                &["mon"],
                "+9:00",
                "17:00",
                ScheduleError::InvalidTimeOfDay("+9:00".into()),
            ),
            ("UTC", &["mon"], "09:00", "09:00", ScheduleError::EmptyRange),
            ("UTC", &["mon"], "00:00", "00:00", ScheduleError::EmptyRange),
            (
                "Nowhere/City",
                &["mon"],
                "09:00",
                "17:00",
                ScheduleError::UnknownTimeZone("Nowhere/City".into()),
            ),
        ];
        for (tz, days, start, end, want) in cases {
            assert_eq!(
                hours(tz, &[(days, start, end)]).as_ref(),
                Err(want),
                "{days:?} {start}-{end}"
            );
        }
        // Long names and any case are accepted.
        assert!(hours("UTC", &[(&["Monday", "FRI"], "00:00", "23:59")]).is_ok());
    }

    #[test]
    fn working_hours_serde_round_trip() {
        let json = serde_json::json!({
            "timezone": "America/New_York",
            "ranges": [{"days": ["mon", "tue"], "start": "09:00", "end": "17:00"}]
        });
        let w: WorkingHours = serde_json::from_value(json.clone()).unwrap();
        assert!(w.contains(ts("2026-11-24T15:00:00Z")));
        assert_eq!(serde_json::to_value(&w).unwrap(), json);
        let bad = serde_json::json!({
            "timezone": "UTC",
            "ranges": [{"days": ["mon"], "start": "10:00", "end": "10:00"}]
        });
        assert!(serde_json::from_value::<WorkingHours>(bad).is_err());
        let extra = serde_json::json!({"timezone": "UTC", "ranges": [], "tz": "x"});
        assert!(serde_json::from_value::<WorkingHours>(extra).is_err());
    }

    // ---- maintenance windows ----

    #[test]
    fn one_time_window() {
        let (a, b) = (ts("2026-11-23T10:00:00Z"), ts("2026-11-23T12:00:00Z"));
        let w = MaintenanceWindow::one_time(a, b).unwrap();
        assert!(!w.is_active(a.plus_millis(-1)));
        assert!(w.is_active(a));
        assert!(w.is_active(b.plus_millis(-1)));
        assert!(!w.is_active(b));
        assert_eq!(w.active_until(a), Some(b));
        assert_eq!(w.active_until(b), None);
        assert_eq!(w.last_closed_at_or_before(b), Some(b));
        assert_eq!(w.last_closed_at_or_before(a), None);
        assert!(w.overlaps(ts("2026-11-23T09:00:00Z"), a.plus_millis(1)));
        assert!(!w.overlaps(ts("2026-11-23T09:00:00Z"), a));
        assert!(!w.overlaps(b, ts("2026-11-23T13:00:00Z")));
        assert!(!w.overlaps(a, a));
        assert_eq!(
            MaintenanceWindow::one_time(b, a),
            Err(ScheduleError::InvertedWindow)
        );
        assert_eq!(
            MaintenanceWindow::one_time(a, a),
            Err(ScheduleError::InvertedWindow)
        );
    }

    #[test]
    fn recurring_window_opens_at_each_fire_time() {
        let w = MaintenanceWindow::recurring(cron("0 3 * * sun", "Europe/Berlin"), 60).unwrap();
        // Sunday 2026-11-29 03:00 CET = 02:00 UTC.
        let start = ts("2026-11-29T02:00:00Z");
        assert!(!w.is_active(start.plus_millis(-1)));
        assert!(w.is_active(start));
        assert_eq!(w.active_until(start), Some(ts("2026-11-29T03:00:00Z")));
        assert!(!w.is_active(ts("2026-11-29T03:00:00Z")));
        assert!(!w.is_active(ts("2026-11-30T02:30:00Z"))); // Monday
        assert_eq!(
            w.last_closed_at_or_before(ts("2026-11-30T00:00:00Z")),
            Some(ts("2026-11-29T03:00:00Z"))
        );
        assert_eq!(
            w.last_closed_at_or_before(ts("2026-11-29T02:30:00Z")),
            Some(ts("2026-11-22T03:00:00Z"))
        );
        assert!(w.overlaps(ts("2026-11-28T00:00:00Z"), ts("2026-11-29T02:00:01Z")));
        assert!(!w.overlaps(ts("2026-11-28T00:00:00Z"), start));
        assert!(w.overlaps(ts("2026-11-29T02:59:00Z"), ts("2026-11-29T04:00:00Z")));
    }

    #[test]
    fn recurring_duration_is_elapsed_time_across_fall_back() {
        // Daily at 02:00 for 90 minutes; on 2026-10-25 Berlin repeats 02:00–03:00.
        let w = MaintenanceWindow::recurring(cron("0 2 * * *", "Europe/Berlin"), 90).unwrap();
        let start = ts("2026-10-25T00:00:00Z"); // 02:00 CEST, the first pass
        assert_eq!(w.active_until(start), Some(ts("2026-10-25T01:30:00Z"))); // 02:30 CET
        assert!(!w.is_active(ts("2026-10-25T01:30:00Z")));
    }

    #[test]
    fn overlapping_recurring_occurrences_merge() {
        // Every two hours for 90 minutes: separate windows.
        let w = MaintenanceWindow::recurring(cron("0 */2 * * *", "UTC"), 90).unwrap();
        assert_eq!(
            w.active_until(ts("2026-11-23T00:10:00Z")),
            Some(ts("2026-11-23T01:30:00Z"))
        );
        assert!(!w.is_active(ts("2026-11-23T01:45:00Z")));
        // Every hour for 90 minutes: always active, merged as far as the bound allows.
        let w = MaintenanceWindow::recurring(cron("0 * * * *", "UTC"), 90).unwrap();
        let t = ts("2026-11-23T00:10:00Z");
        assert!(w.is_active(ts("2026-11-23T01:45:00Z")));
        let until = w.active_until(t).unwrap();
        assert!(until.millis() - t.millis() >= 999 * 3_600_000, "{until}");
        assert!(w.is_active(until.plus_millis(-1)));
        // Touching windows (hourly for 60 minutes) merge too.
        let w = MaintenanceWindow::recurring(cron("0 9,10 * * *", "UTC"), 60).unwrap();
        assert_eq!(
            w.active_until(ts("2026-11-23T09:30:00Z")),
            Some(ts("2026-11-23T11:00:00Z"))
        );
    }

    #[test]
    fn recurring_window_validation_and_serde() {
        let s = cron("0 3 * * *", "UTC");
        assert_eq!(
            MaintenanceWindow::recurring(s.clone(), 0),
            Err(ScheduleError::InvalidDuration)
        );
        assert_eq!(
            MaintenanceWindow::recurring(s.clone(), MAX_WINDOW_MINUTES + 1),
            Err(ScheduleError::InvalidDuration)
        );
        assert!(MaintenanceWindow::recurring(s, MAX_WINDOW_MINUTES).is_ok());

        let json = serde_json::json!({
            "kind": "recurring", "cron": "0 3 * * sun", "timezone": "Europe/Berlin",
            "duration_minutes": 60
        });
        let w: MaintenanceWindow = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&w).unwrap(), json);
        let json = serde_json::json!({
            "kind": "one_time", "starts_at": "2026-11-23T10:00:00.000+00:00",
            "ends_at": "2026-11-23T12:00:00.000+00:00"
        });
        let w: MaintenanceWindow = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&w).unwrap(), json);
        for bad in [
            serde_json::json!({"kind": "one_time", "starts_at": "2026-11-23T12:00:00Z",
                "ends_at": "2026-11-23T10:00:00Z"}),
            serde_json::json!({"kind": "recurring", "cron": "0 3 * * *", "timezone": "UTC",
                "duration_minutes": 0}),
            serde_json::json!({"kind": "recurring", "cron": "0 3 * * *", "timezone": "Moon/Base",
                "duration_minutes": 5}),
            serde_json::json!({"kind": "weekly"}),
        ] {
            assert!(
                serde_json::from_value::<MaintenanceWindow>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
