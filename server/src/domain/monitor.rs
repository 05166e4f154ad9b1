//! Liveness decisions: when a service is late or down, what suppresses alerting, how an alert
//! moves, and whether a notification target should be paged now.
//!
//! Everything here is `(now, state) -> decision`: no clock, no store, no network. The monitor
//! loop loads a [`ServiceView`], calls [`evaluate`], persists the state, applies the
//! [`transition`] to the service's [`AlertPhase`], and sleeps until the earliest of
//! [`Decision::wake_at`] and [`next_renotify_at`].
//!
//! # Rules
//!
//! - **Interval services.** A service with threshold `N` (COMPAT: "fewer than `threshold`
//!   heartbeats in the last `alert_interval` minutes means down") is *late* from the moment its
//!   trailing window holds fewer than `N` beats — the `N`-th newest beat plus the interval — and
//!   *down* once that has lasted the grace period. With `N = 1` this is "late one interval after
//!   the last beat, down one grace period later".
//! - **Scheduled services.** With a cron schedule, the next beat is expected at the first fire
//!   time after the last beat; the service is late from then and down one grace period later.
//!   The threshold does not apply.
//! - **Watching starts** at creation, or when a timed mute expires, whichever is later. Until
//!   enough beats arrive after that moment, deadlines count from it (the service is
//!   [`Decision::Waiting`]), so a service is never down straight after registration or a mute
//!   — it gets one interval (or one scheduled fire time) plus grace.
//! - **Maintenance windows** only hold alerts back while they are open: a service whose
//!   deadline passed during the window (and that has not beaten since) is down, and alerts, the
//!   moment the window closes — for the same incident it would have had without the window.
//! - **Suppression** comes first: an inactive service, an active maintenance window, or an
//!   unexpired mute yields [`Decision::Suppressed`], in that order of precedence.
//! - **Alerts** open on `Down`, re-notify on a cadence until acknowledged, and resolve only on
//!   real evidence (`Healthy`) or when the service is deactivated. `Late`, `Waiting` and the
//!   mute and maintenance suppressions leave an open alert as it is, without re-notifying.
//! - **Working hours** never change a decision; they only decide whether a target is paged now
//!   ([`should_page`]).

use serde::{Deserialize, Serialize};

use super::schedule::{CronSchedule, MaintenanceWindow, WorkingHours};
use super::{ServiceState, Timestamp};

/// What heartbeats a service promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// At least `threshold` beats in every trailing window of `interval_ms`. A threshold of 0 is
    /// treated as 1.
    Interval { interval_ms: i64, threshold: u32 },
    /// One beat per fire time of the schedule.
    Schedule(CronSchedule),
}

/// An operator's mute. `until: None` mutes until someone unmutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuteView {
    pub until: Option<Timestamp>,
}

/// Everything the monitor needs to judge one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    pub active: bool,
    /// When the service was registered (or, if the loop tracks it, re-activated).
    pub created_at: Timestamp,
    pub expectation: Expectation,
    pub grace_ms: i64,
    /// The newest heartbeats, in any order: at least the last `threshold` of them for an
    /// interval service, the last one for a scheduled service. More are harmless.
    pub recent_beats: Vec<Timestamp>,
    pub mute: Option<MuteView>,
    /// The maintenance windows that apply: the service's own and the global ones.
    pub maintenance: Vec<MaintenanceWindow>,
}

/// Why a service is not judged right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    Inactive,
    /// Until the mute expires; `None` until someone unmutes.
    Muted {
        until: Option<Timestamp>,
    },
    InMaintenance {
        until: Timestamp,
    },
}

/// The monitor's verdict on a service at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Suppressed(Suppression),
    /// Not enough beats since watching started; nothing is held against the service until
    /// `late_at`.
    Waiting {
        late_at: Timestamp,
    },
    /// Beating as promised until at least `late_at`.
    Healthy {
        late_at: Timestamp,
    },
    /// Past its deadline, inside the grace period.
    Late {
        down_at: Timestamp,
    },
    /// Missed its deadline and grace period.
    Down {
        since: Timestamp,
    },
    /// The schedule never fires again: nothing is expected.
    Unscheduled,
}

impl Decision {
    /// The state to record, or `None` to keep the stored one (suppressed services).
    pub fn state(&self) -> Option<ServiceState> {
        match self {
            Self::Suppressed(_) => None,
            Self::Waiting { .. } => Some(ServiceState::New),
            Self::Healthy { .. } | Self::Unscheduled => Some(ServiceState::Up),
            Self::Late { .. } => Some(ServiceState::Late),
            Self::Down { .. } => Some(ServiceState::Down),
        }
    }

    /// When this decision can next change without a new heartbeat or an operator's action.
    pub fn wake_at(&self) -> Option<Timestamp> {
        match self {
            Self::Suppressed(Suppression::Muted { until }) => *until,
            Self::Suppressed(Suppression::InMaintenance { until }) => Some(*until),
            Self::Waiting { late_at } | Self::Healthy { late_at } => Some(*late_at),
            Self::Late { down_at } => Some(*down_at),
            Self::Suppressed(Suppression::Inactive) | Self::Down { .. } | Self::Unscheduled => None,
        }
    }
}

/// When a service becomes late, then down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub late_at: Timestamp,
    pub down_at: Timestamp,
}

impl Deadlines {
    fn from_late(late_at: Timestamp, grace_ms: i64) -> Self {
        Self {
            late_at,
            down_at: late_at.plus_millis(grace_ms.max(0)),
        }
    }

    /// Where `now` stands against these deadlines.
    fn judge(self, now: Timestamp, on_time: Decision) -> Decision {
        if now < self.late_at {
            on_time
        } else if now < self.down_at {
            Decision::Late {
                down_at: self.down_at,
            }
        } else {
            Decision::Down {
                since: self.down_at,
            }
        }
    }
}

/// COMPAT's rule: fewer than `threshold` beats in the trailing window means down.
pub fn is_down_by_threshold(beats_in_window: u32, threshold: u32) -> bool {
    beats_in_window < threshold.max(1)
}

/// Beats in the trailing window `(now - window_ms, now]`.
pub fn beats_in_window(beats: &[Timestamp], now: Timestamp, window_ms: i64) -> u32 {
    let from = now.plus_millis(-window_ms);
    let n = beats.iter().filter(|b| **b > from && **b <= now).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The `n`-th newest beat (1-based), if there are that many.
fn nth_newest(beats: &[Timestamp], n: u32) -> Option<Timestamp> {
    let mut sorted = beats.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.get(usize::try_from(n.max(1)).ok()? - 1).copied()
}

/// Deadlines from the last `threshold` beats: the trailing window drops below `threshold`
/// beats when the oldest of them leaves it, at that beat plus `interval_ms`; down follows
/// `grace_ms` later. `None` when fewer than `threshold` beats are given.
pub fn threshold_deadlines(
    last_beats: &[Timestamp],
    threshold: u32,
    interval_ms: i64,
    grace_ms: i64,
) -> Option<Deadlines> {
    let oldest = nth_newest(last_beats, threshold)?;
    Some(Deadlines::from_late(
        oldest.plus_millis(interval_ms),
        grace_ms,
    ))
}

/// Deadlines for a scheduled service: late at the first fire time after `after`, down
/// `grace_ms` later. `None` when the schedule never fires again.
pub fn schedule_deadlines(
    schedule: &CronSchedule,
    after: Timestamp,
    grace_ms: i64,
) -> Option<Deadlines> {
    schedule
        .next_after(after)
        .map(|late_at| Deadlines::from_late(late_at, grace_ms))
}

/// The moment judging starts: creation, or the expiry of a mute that has expired, whichever
/// is later (see the module rules). Maintenance windows do not move it: a service still down
/// when its window closes alerts then.
pub fn watched_since(view: &ServiceView, now: Timestamp) -> Timestamp {
    let expired_mute = view
        .mute
        .and_then(|m| m.until)
        .filter(|until| *until <= now);
    expired_mute.map_or(view.created_at, |m| m.max(view.created_at))
}

fn suppression(view: &ServiceView, now: Timestamp) -> Option<Suppression> {
    if !view.active {
        return Some(Suppression::Inactive);
    }
    if let Some(until) = view
        .maintenance
        .iter()
        .filter_map(|w| w.active_until(now))
        .max()
    {
        return Some(Suppression::InMaintenance { until });
    }
    match view.mute {
        Some(MuteView { until: None }) => Some(Suppression::Muted { until: None }),
        Some(MuteView { until: Some(u) }) if u > now => Some(Suppression::Muted { until: Some(u) }),
        _ => None,
    }
}

/// Judges a service at `now`.
pub fn evaluate(now: Timestamp, view: &ServiceView) -> Decision {
    if let Some(s) = suppression(view, now) {
        return Decision::Suppressed(s);
    }
    let since = watched_since(view, now);
    match &view.expectation {
        Expectation::Interval {
            interval_ms,
            threshold,
        } => {
            let from_beats = nth_newest(&view.recent_beats, *threshold)
                .filter(|oldest| *oldest >= since)
                .map(|oldest| {
                    Deadlines::from_late(oldest.plus_millis(*interval_ms), view.grace_ms)
                });
            match from_beats {
                Some(d) => d.judge(now, Decision::Healthy { late_at: d.late_at }),
                None => {
                    let d = Deadlines::from_late(since.plus_millis(*interval_ms), view.grace_ms);
                    d.judge(now, Decision::Waiting { late_at: d.late_at })
                }
            }
        }
        Expectation::Schedule(schedule) => {
            let last = view.recent_beats.iter().max().filter(|b| **b >= since);
            let anchor = last.copied().unwrap_or(since);
            let Some(d) = schedule_deadlines(schedule, anchor, view.grace_ms) else {
                return Decision::Unscheduled;
            };
            let on_time = match last {
                Some(_) => Decision::Healthy { late_at: d.late_at },
                None => Decision::Waiting { late_at: d.late_at },
            };
            d.judge(now, on_time)
        }
    }
}

// ---- alerts -----------------------------------------------------------------------------------

/// Where a service's alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertPhase {
    /// No open alert.
    Clear,
    /// Open and not acknowledged; re-notified on the cadence.
    Open {
        since: Timestamp,
        last_notified_at: Timestamp,
    },
    /// Open, and someone has taken it: no more re-notifications.
    Acknowledged { since: Timestamp },
}

/// How often an open, unacknowledged alert is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renotify {
    Never,
    Every { interval_ms: i64 },
}

/// Why an alert closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveReason {
    /// The service is beating as promised again.
    Recovered,
    /// The service was deactivated; nothing is watched any more.
    Deactivated,
}

/// What to do with the alert after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Open an alert for a service down since `since`, and notify.
    Open { since: Timestamp },
    /// Notify again about the open alert.
    Renotify,
    /// Close the open (or acknowledged) alert, and notify the resolution.
    Resolve { reason: ResolveReason },
}

/// When the open alert is next due to be repeated, if ever.
pub fn next_renotify_at(phase: AlertPhase, renotify: Renotify) -> Option<Timestamp> {
    match (phase, renotify) {
        (
            AlertPhase::Open {
                last_notified_at, ..
            },
            Renotify::Every { interval_ms },
        ) => Some(last_notified_at.plus_millis(interval_ms.max(1))),
        (AlertPhase::Open { .. }, Renotify::Never)
        | (AlertPhase::Clear | AlertPhase::Acknowledged { .. }, _) => None,
    }
}

/// The alert state machine. `None` means nothing to do.
pub fn transition(
    now: Timestamp,
    phase: AlertPhase,
    decision: &Decision,
    renotify: Renotify,
) -> Option<Transition> {
    match (phase, decision) {
        (AlertPhase::Clear, Decision::Down { since }) => Some(Transition::Open { since: *since }),
        (AlertPhase::Clear, _) => None,
        (
            AlertPhase::Open { .. } | AlertPhase::Acknowledged { .. },
            Decision::Healthy { .. } | Decision::Unscheduled,
        ) => Some(Transition::Resolve {
            reason: ResolveReason::Recovered,
        }),
        (
            AlertPhase::Open { .. } | AlertPhase::Acknowledged { .. },
            Decision::Suppressed(Suppression::Inactive),
        ) => Some(Transition::Resolve {
            reason: ResolveReason::Deactivated,
        }),
        (AlertPhase::Open { .. }, Decision::Down { .. }) => next_renotify_at(phase, renotify)
            .filter(|due| *due <= now)
            .map(|_| Transition::Renotify),
        (
            AlertPhase::Open { .. } | AlertPhase::Acknowledged { .. },
            Decision::Suppressed(Suppression::Muted { .. } | Suppression::InMaintenance { .. })
            | Decision::Waiting { .. }
            | Decision::Late { .. },
        )
        | (AlertPhase::Acknowledged { .. }, Decision::Down { .. }) => None,
    }
}

// ---- paging -----------------------------------------------------------------------------------

/// When a notification target wants to be paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PagingPeriod {
    Always,
    DuringHours,
    AfterHours,
}

impl PagingPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::DuringHours => "during_hours",
            Self::AfterHours => "after_hours",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(Self::Always),
            "during_hours" => Some(Self::DuringHours),
            "after_hours" => Some(Self::AfterHours),
            _ => None,
        }
    }
}

/// Why a page waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    OutsideWorkingHours,
    InsideWorkingHours,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    Send,
    Hold(HoldReason),
}

/// Whether a target with `period` is paged at `now`, given the team's working hours. A team
/// without working hours is treated as always inside them: `during_hours` targets are always
/// paged and `after_hours` targets never are.
pub fn should_page(period: PagingPeriod, hours: Option<&WorkingHours>, now: Timestamp) -> Paging {
    let inside = hours.is_none_or(|h| h.contains(now));
    match (period, inside) {
        (PagingPeriod::Always, _)
        | (PagingPeriod::DuringHours, true)
        | (PagingPeriod::AfterHours, false) => Paging::Send,
        (PagingPeriod::DuringHours, false) => Paging::Hold(HoldReason::OutsideWorkingHours),
        (PagingPeriod::AfterHours, true) => Paging::Hold(HoldReason::InsideWorkingHours),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000;
    const MIN: i64 = 60 * SEC;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap_or_else(|| panic!("bad test timestamp {s}"))
    }

    fn t0() -> Timestamp {
        ts("2026-11-23T12:00:00Z")
    }

    /// `t0 + offset` seconds.
    fn at(offset_s: i64) -> Timestamp {
        t0().plus_millis(offset_s * SEC)
    }

    /// An interval service registered at `t0` with the given beats (seconds after `t0`).
    fn interval(interval_s: i64, threshold: u32, grace_s: i64, beats: &[i64]) -> ServiceView {
        ServiceView {
            active: true,
            created_at: t0(),
            expectation: Expectation::Interval {
                interval_ms: interval_s * SEC,
                threshold,
            },
            grace_ms: grace_s * SEC,
            recent_beats: beats.iter().map(|b| at(*b)).collect(),
            mute: None,
            maintenance: Vec::new(),
        }
    }

    fn scheduled(expr: &str, grace_s: i64, beats: &[Timestamp]) -> ServiceView {
        ServiceView {
            expectation: Expectation::Schedule(CronSchedule::parse(expr, "UTC").unwrap()),
            grace_ms: grace_s * SEC,
            recent_beats: beats.to_vec(),
            created_at: ts("2026-11-01T00:00:00Z"),
            ..interval(60, 1, 0, &[])
        }
    }

    // ---- threshold arithmetic ----

    #[test]
    fn threshold_rule() {
        assert!(is_down_by_threshold(0, 1));
        assert!(!is_down_by_threshold(1, 1));
        assert!(is_down_by_threshold(2, 3));
        assert!(!is_down_by_threshold(3, 3));
        assert!(!is_down_by_threshold(7, 3));
        // A threshold of 0 means 1.
        assert!(is_down_by_threshold(0, 0));
        assert!(!is_down_by_threshold(1, 0));
    }

    #[test]
    fn trailing_window_is_open_at_the_start_and_closed_at_now() {
        let beats = [at(0), at(30), at(60), at(90)];
        assert_eq!(beats_in_window(&beats, at(60), 60 * SEC), 2); // (0, 60]
        assert_eq!(beats_in_window(&beats, at(59), 60 * SEC), 2); // (-1, 59]
        assert_eq!(beats_in_window(&beats, at(89), 60 * SEC), 2); // (29, 89]
        assert_eq!(beats_in_window(&beats, at(200), 60 * SEC), 0);
        assert_eq!(beats_in_window(&[], at(0), 60 * SEC), 0);
    }

    #[test]
    fn threshold_deadline_is_the_oldest_of_the_last_n_beats_plus_interval() {
        let d = threshold_deadlines(&[at(10)], 1, 60 * SEC, 30 * SEC).unwrap();
        assert_eq!((d.late_at, d.down_at), (at(70), at(100)));
        // Order does not matter; older beats beyond the threshold are ignored.
        let beats = [at(50), at(0), at(40), at(45)];
        let d = threshold_deadlines(&beats, 3, 60 * SEC, 0).unwrap();
        assert_eq!((d.late_at, d.down_at), (at(100), at(100)));
        assert_eq!(threshold_deadlines(&beats[..2], 3, 60 * SEC, 0), None);
        assert_eq!(threshold_deadlines(&[], 1, 60 * SEC, 0), None);
    }

    #[test]
    fn threshold_deadline_matches_the_window_count() {
        // Whatever the beats, the window holds >= N beats just before `late_at` and < N at it.
        let scenarios: &[(&[i64], u32)] = &[
            (&[0, 10, 20], 3),
            (&[0, 59, 60], 2),
            (&[5, 5, 5], 3),
            (&[0, 1, 2, 30, 31], 4),
            (&[42], 1),
        ];
        for (offsets, n) in scenarios {
            let beats: Vec<_> = offsets.iter().map(|o| at(*o)).collect();
            let d = threshold_deadlines(&beats, *n, 60 * SEC, 0).unwrap();
            let before = d.late_at.plus_millis(-1);
            assert!(
                !is_down_by_threshold(beats_in_window(&beats, before, 60 * SEC), *n),
                "{offsets:?} n={n} just before {}",
                d.late_at
            );
            assert!(
                is_down_by_threshold(beats_in_window(&beats, d.late_at, 60 * SEC), *n),
                "{offsets:?} n={n} at {}",
                d.late_at
            );
        }
    }

    // ---- evaluate: interval services ----

    #[test]
    fn a_beating_service_goes_late_then_down() {
        let v = interval(60, 1, 30, &[10]);
        assert_eq!(evaluate(at(20), &v), Decision::Healthy { late_at: at(70) });
        assert_eq!(evaluate(at(69), &v), Decision::Healthy { late_at: at(70) });
        assert_eq!(evaluate(at(70), &v), Decision::Late { down_at: at(100) });
        assert_eq!(evaluate(at(99), &v), Decision::Late { down_at: at(100) });
        assert_eq!(evaluate(at(100), &v), Decision::Down { since: at(100) });
        assert_eq!(evaluate(at(5000), &v), Decision::Down { since: at(100) });
        // Without grace, late and down coincide.
        let v = interval(60, 1, 0, &[10]);
        assert_eq!(evaluate(at(70), &v), Decision::Down { since: at(70) });
    }

    #[test]
    fn a_never_heard_from_service_is_due_one_interval_and_grace_after_creation() {
        let v = interval(60, 1, 30, &[]);
        assert_eq!(evaluate(at(0), &v), Decision::Waiting { late_at: at(60) });
        assert_eq!(evaluate(at(60), &v), Decision::Late { down_at: at(90) });
        assert_eq!(evaluate(at(90), &v), Decision::Down { since: at(90) });
        // A first beat makes it healthy, counted from the beat.
        let v = interval(60, 1, 30, &[50]);
        assert_eq!(evaluate(at(55), &v), Decision::Healthy { late_at: at(110) });
    }

    #[test]
    fn threshold_counts_the_last_n_beats() {
        // Needs 3 beats a minute; only two so far: judged from creation.
        let v = interval(60, 3, 10, &[10, 20]);
        assert_eq!(evaluate(at(30), &v), Decision::Waiting { late_at: at(60) });
        assert_eq!(evaluate(at(70), &v), Decision::Down { since: at(70) });
        // Three beats: late when the oldest of them leaves the window.
        let v = interval(60, 3, 10, &[10, 20, 30, 5]);
        assert_eq!(evaluate(at(40), &v), Decision::Healthy { late_at: at(70) });
        assert_eq!(evaluate(at(75), &v), Decision::Late { down_at: at(80) });
        assert_eq!(evaluate(at(80), &v), Decision::Down { since: at(80) });
    }

    #[test]
    fn beats_from_before_creation_do_not_count() {
        // Creation time bounds the window (e.g. a re-registered service).
        let v = interval(60, 1, 0, &[-30]);
        assert_eq!(evaluate(at(10), &v), Decision::Waiting { late_at: at(60) });
    }

    // ---- evaluate: scheduled services ----

    #[test]
    fn a_scheduled_service_is_due_at_the_next_fire_time_after_its_last_beat() {
        let beat = ts("2026-11-23T02:00:05Z");
        let v = scheduled("0 2 * * *", 600, &[beat, ts("2026-11-22T02:00:04Z")]);
        let due = ts("2026-11-24T02:00:00Z");
        assert_eq!(
            evaluate(ts("2026-11-23T12:00:00Z"), &v),
            Decision::Healthy { late_at: due }
        );
        assert_eq!(
            evaluate(ts("2026-11-24T02:05:00Z"), &v),
            Decision::Late {
                down_at: ts("2026-11-24T02:10:00Z")
            }
        );
        assert_eq!(
            evaluate(ts("2026-11-24T02:10:00Z"), &v),
            Decision::Down {
                since: ts("2026-11-24T02:10:00Z")
            }
        );
        // Never heard from: due at the first fire time after registration (t0 = 12:00).
        let mut v = scheduled("0 2 * * *", 600, &[]);
        v.created_at = t0();
        assert_eq!(evaluate(at(1), &v), Decision::Waiting { late_at: due });
    }

    #[test]
    fn schedule_deadlines_follow_the_schedule_time_zone() {
        let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // 02:30 does not exist on 2026-03-29 in Berlin: due at 03:00 CEST (01:00 UTC).
        let d = schedule_deadlines(&s, ts("2026-03-28T12:00:00Z"), 5 * MIN).unwrap();
        assert_eq!(d.late_at, ts("2026-03-29T01:00:00Z"));
        assert_eq!(d.down_at, ts("2026-03-29T01:05:00Z"));
    }

    // ---- suppression ----

    #[test]
    fn mutes_suppress_until_they_expire() {
        let mut v = interval(60, 1, 0, &[]);
        v.mute = Some(MuteView { until: None });
        assert_eq!(
            evaluate(at(500), &v),
            Decision::Suppressed(Suppression::Muted { until: None })
        );
        v.mute = Some(MuteView {
            until: Some(at(600)),
        });
        assert_eq!(
            evaluate(at(500), &v),
            Decision::Suppressed(Suppression::Muted {
                until: Some(at(600))
            })
        );
        // Expired: judged again, watching restarts at the expiry.
        assert_eq!(
            evaluate(at(600), &v),
            Decision::Waiting { late_at: at(660) }
        );
        assert_eq!(evaluate(at(660), &v), Decision::Down { since: at(660) });
        // A beat after the expiry counts as usual.
        v.recent_beats = vec![at(610)];
        assert_eq!(
            evaluate(at(620), &v),
            Decision::Healthy { late_at: at(670) }
        );
    }

    #[test]
    fn maintenance_suppresses_and_a_service_still_down_alerts_when_it_ends() {
        let mut v = interval(60, 1, 0, &[]);
        v.maintenance = vec![
            MaintenanceWindow::one_time(at(100), at(200)).unwrap(),
            MaintenanceWindow::one_time(at(150), at(300)).unwrap(),
        ];
        assert_eq!(evaluate(at(50), &v), Decision::Waiting { late_at: at(60) });
        assert_eq!(evaluate(at(90), &v), Decision::Down { since: at(60) });
        assert_eq!(
            evaluate(at(120), &v),
            Decision::Suppressed(Suppression::InMaintenance { until: at(200) })
        );
        assert_eq!(
            evaluate(at(160), &v),
            Decision::Suppressed(Suppression::InMaintenance { until: at(300) })
        );
        assert_eq!(evaluate(at(300), &v), Decision::Down { since: at(60) });
        // A beat during the window counts: healthy when it closes.
        v.recent_beats = vec![at(250)];
        assert_eq!(
            evaluate(at(300), &v),
            Decision::Healthy { late_at: at(310) }
        );
    }

    #[test]
    fn recurring_maintenance_does_not_resolve_a_silent_service() {
        // Hourly service, silent since yesterday, nightly maintenance 03:00–04:00 UTC.
        let mut v = interval(3600, 1, 0, &[]);
        v.created_at = ts("2026-11-20T00:00:00Z");
        v.recent_beats = vec![ts("2026-11-22T10:00:00Z")];
        v.maintenance = vec![
            MaintenanceWindow::recurring(CronSchedule::parse("0 3 * * *", "UTC").unwrap(), 60)
                .unwrap(),
        ];
        let open = AlertPhase::Open {
            since: ts("2026-11-22T11:00:00Z"),
            last_notified_at: ts("2026-11-23T02:30:00Z"),
        };
        let after = evaluate(ts("2026-11-23T04:05:00Z"), &v);
        // Still the same incident: the open alert goes on (no new alert, no resolve).
        assert_eq!(
            after,
            Decision::Down {
                since: ts("2026-11-22T11:00:00Z")
            }
        );
        assert_eq!(
            transition(ts("2026-11-23T04:05:00Z"), open, &after, Renotify::Never),
            None
        );
    }

    #[test]
    fn inactive_wins_over_maintenance_which_wins_over_mute() {
        let mut v = interval(60, 1, 0, &[]);
        v.mute = Some(MuteView { until: None });
        v.maintenance = vec![MaintenanceWindow::one_time(at(0), at(100)).unwrap()];
        assert_eq!(
            evaluate(at(10), &v),
            Decision::Suppressed(Suppression::InMaintenance { until: at(100) })
        );
        v.active = false;
        assert_eq!(
            evaluate(at(10), &v),
            Decision::Suppressed(Suppression::Inactive)
        );
    }

    #[test]
    fn states_and_wake_times() {
        let cases = [
            (Decision::Suppressed(Suppression::Inactive), None, None),
            (
                Decision::Suppressed(Suppression::Muted { until: None }),
                None,
                None,
            ),
            (
                Decision::Suppressed(Suppression::Muted { until: Some(at(5)) }),
                None,
                Some(at(5)),
            ),
            (
                Decision::Suppressed(Suppression::InMaintenance { until: at(6) }),
                None,
                Some(at(6)),
            ),
            (
                Decision::Waiting { late_at: at(1) },
                Some(ServiceState::New),
                Some(at(1)),
            ),
            (
                Decision::Healthy { late_at: at(2) },
                Some(ServiceState::Up),
                Some(at(2)),
            ),
            (
                Decision::Late { down_at: at(3) },
                Some(ServiceState::Late),
                Some(at(3)),
            ),
            (
                Decision::Down { since: at(4) },
                Some(ServiceState::Down),
                None,
            ),
            (Decision::Unscheduled, Some(ServiceState::Up), None),
        ];
        for (d, state, wake) in cases {
            assert_eq!(d.state(), state, "{d:?}");
            assert_eq!(d.wake_at(), wake, "{d:?}");
        }
    }

    // ---- alerts ----

    fn all_decisions() -> Vec<Decision> {
        vec![
            Decision::Suppressed(Suppression::Inactive),
            Decision::Suppressed(Suppression::Muted { until: None }),
            Decision::Suppressed(Suppression::InMaintenance { until: at(9) }),
            Decision::Waiting { late_at: at(9) },
            Decision::Healthy { late_at: at(9) },
            Decision::Late { down_at: at(9) },
            Decision::Down { since: at(3) },
            Decision::Unscheduled,
        ]
    }

    #[test]
    fn transitions_from_clear_open_only_on_down() {
        for d in all_decisions() {
            let want = match d {
                Decision::Down { since } => Some(Transition::Open { since }),
                _ => None,
            };
            assert_eq!(
                transition(at(10), AlertPhase::Clear, &d, Renotify::Never),
                want,
                "{d:?}"
            );
        }
    }

    #[test]
    fn open_and_acknowledged_alerts_resolve_on_recovery_or_deactivation_only() {
        let phases = [
            AlertPhase::Open {
                since: at(3),
                last_notified_at: at(3),
            },
            AlertPhase::Acknowledged { since: at(3) },
        ];
        for phase in phases {
            for d in all_decisions() {
                let want = match d {
                    Decision::Healthy { .. } | Decision::Unscheduled => Some(Transition::Resolve {
                        reason: ResolveReason::Recovered,
                    }),
                    Decision::Suppressed(Suppression::Inactive) => Some(Transition::Resolve {
                        reason: ResolveReason::Deactivated,
                    }),
                    _ => None,
                };
                assert_eq!(
                    transition(at(10), phase, &d, Renotify::Never),
                    want,
                    "{phase:?} {d:?}"
                );
            }
        }
    }

    #[test]
    fn renotify_on_cadence_until_acknowledged() {
        let open = AlertPhase::Open {
            since: at(0),
            last_notified_at: at(100),
        };
        let down = Decision::Down { since: at(0) };
        let every = Renotify::Every {
            interval_ms: 30 * MIN,
        };
        assert_eq!(next_renotify_at(open, every), Some(at(100 + 1800)));
        assert_eq!(transition(at(1899), open, &down, every), None);
        assert_eq!(
            transition(at(1900), open, &down, every),
            Some(Transition::Renotify)
        );
        assert_eq!(
            transition(at(99_999), open, &down, every),
            Some(Transition::Renotify)
        );
        assert_eq!(next_renotify_at(open, Renotify::Never), None);
        assert_eq!(transition(at(99_999), open, &down, Renotify::Never), None);
        let acked = AlertPhase::Acknowledged { since: at(0) };
        assert_eq!(next_renotify_at(acked, every), None);
        assert_eq!(transition(at(99_999), acked, &down, every), None);
        assert_eq!(next_renotify_at(AlertPhase::Clear, every), None);
        // Muted or in maintenance: no repeat even when due.
        let muted = Decision::Suppressed(Suppression::Muted { until: None });
        assert_eq!(transition(at(99_999), open, &muted, every), None);
    }

    // ---- paging ----

    #[test]
    fn paging_periods_against_working_hours() {
        let hours: WorkingHours = serde_json::from_value(serde_json::json!({
            "timezone": "UTC",
            "ranges": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}]
        }))
        .unwrap();
        let inside = ts("2026-11-23T10:00:00Z"); // Monday
        let outside = ts("2026-11-28T10:00:00Z"); // Saturday
        let cases = [
            (PagingPeriod::Always, inside, Paging::Send),
            (PagingPeriod::Always, outside, Paging::Send),
            (PagingPeriod::DuringHours, inside, Paging::Send),
            (
                PagingPeriod::DuringHours,
                outside,
                Paging::Hold(HoldReason::OutsideWorkingHours),
            ),
            (
                PagingPeriod::AfterHours,
                inside,
                Paging::Hold(HoldReason::InsideWorkingHours),
            ),
            (PagingPeriod::AfterHours, outside, Paging::Send),
        ];
        for (period, now, want) in cases {
            assert_eq!(
                should_page(period, Some(&hours), now),
                want,
                "{period:?} {now}"
            );
        }
        // No working hours: always inside.
        assert_eq!(
            should_page(PagingPeriod::DuringHours, None, outside),
            Paging::Send
        );
        assert_eq!(
            should_page(PagingPeriod::AfterHours, None, outside),
            Paging::Hold(HoldReason::InsideWorkingHours)
        );
        assert_eq!(
            should_page(PagingPeriod::Always, None, outside),
            Paging::Send
        );
        assert_eq!(
            serde_json::to_value(PagingPeriod::DuringHours).unwrap(),
            "during_hours"
        );
    }
}
