//! The circuit breaker: how many remediations may start in an hour.
//!
//! A pure function over the start times of recent executions (every trigger counts, and so do
//! executions that were later cancelled; skipped ones do not, since they never started). The
//! scopes are checked from the narrowest (the playbook's own limit, then the service) to the
//! global one, and the first that is full opens the breaker. The driver records the execution
//! as `skipped`, notifies the team once per opening ([`first_of_opening`]), and sets
//! `medic_circuit_breaker_open{scope}`. An admin's reset of a scope is applied by the store:
//! the executions recorded in that scope before the reset are left out of the lists given here.

use std::time::Duration;

use crate::domain::Timestamp;

use super::trigger::millis;

/// The window the limits count over.
pub const WINDOW: Duration = Duration::from_secs(3600);
pub const DEFAULT_PER_SERVICE: u32 = 5;
pub const DEFAULT_GLOBAL: u32 = 50;

/// The configured limits (per window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_service: u32,
    pub global: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_service: DEFAULT_PER_SERVICE,
            global: DEFAULT_GLOBAL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Playbook,
    Service,
    Global,
}

impl Scope {
    /// The `scope` label of `medic_circuit_breaker_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Playbook => "playbook",
            Self::Service => "service",
            Self::Global => "global",
        }
    }
}

/// Start times of the executions that count, newest or oldest first (order does not matter).
#[derive(Debug, Clone, Copy, Default)]
pub struct Recent<'a> {
    /// This playbook's executions (any service).
    pub playbook: &'a [Timestamp],
    /// This service's executions (any playbook).
    pub service: &'a [Timestamp],
    /// All executions.
    pub global: &'a [Timestamp],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    Open {
        scope: Scope,
        count: u32,
        limit: u32,
        /// When the oldest counted start leaves the window, so one more may start.
        closes_at: Timestamp,
    },
}

/// Whether one more execution may start at `now`. `playbook_limit` is the playbook's own
/// `circuit_breaker.max_per_hour`; `reset_at` is an admin's last reset.
pub fn check(
    now: Timestamp,
    limits: Limits,
    playbook_limit: Option<u32>,
    recent: Recent<'_>,
    reset_at: Option<Timestamp>,
) -> Breaker {
    let from = now.plus_millis(-millis(WINDOW));
    let from = reset_at.map_or(from, |r| r.max(from));
    let scopes = [
        (Scope::Playbook, playbook_limit, recent.playbook),
        (Scope::Service, Some(limits.per_service), recent.service),
        (Scope::Global, Some(limits.global), recent.global),
    ];
    for (scope, limit, starts) in scopes {
        let Some(limit) = limit else { continue };
        let mut inside: Vec<Timestamp> = starts
            .iter()
            .copied()
            .filter(|&t| t > from && t <= now)
            .collect();
        let count = u32::try_from(inside.len()).unwrap_or(u32::MAX);
        if count >= limit {
            inside.sort_unstable();
            // The start whose leaving brings the count below the limit.
            let oldest_needed = inside[inside.len() - limit as usize];
            return Breaker::Open {
                scope,
                count,
                limit,
                closes_at: oldest_needed.plus_millis(millis(WINDOW)),
            };
        }
    }
    Breaker::Closed
}

/// Whether skipping now is the first skip of the breaker's current opening in a scope, so the
/// team hears about the opening once: the opening began with the newest start that counts
/// (`starts`; no execution starts in the scope while it stays open), and a skip at or after
/// it (`skipped`) was already announced.
pub fn first_of_opening(starts: &[Timestamp], skipped: &[Timestamp]) -> bool {
    let opened = starts.iter().max();
    !skipped.iter().any(|t| opened.is_none_or(|o| t >= o))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    fn at(minutes_ago: i64) -> Timestamp {
        Timestamp::from_millis(T0 - minutes_ago * MIN)
    }

    fn now() -> Timestamp {
        at(0)
    }

    #[test]
    fn closed_below_every_limit() {
        let service = [at(1), at(2), at(3), at(4)];
        let recent = Recent {
            service: &service,
            global: &service,
            ..Recent::default()
        };
        assert_eq!(
            check(now(), Limits::default(), None, recent, None),
            Breaker::Closed
        );
    }

    #[test]
    fn opens_at_the_per_service_default_and_says_when_it_closes() {
        let service = [at(50), at(40), at(30), at(20), at(10)];
        let recent = Recent {
            service: &service,
            global: &service,
            ..Recent::default()
        };
        assert_eq!(
            check(now(), Limits::default(), None, recent, None),
            Breaker::Open {
                scope: Scope::Service,
                count: 5,
                limit: 5,
                closes_at: at(50).plus_millis(60 * MIN),
            }
        );
        // Ten minutes later the oldest start has left the window.
        let later = now().plus_millis(10 * MIN);
        assert_eq!(
            check(later, Limits::default(), None, recent, None),
            Breaker::Closed
        );
    }

    #[test]
    fn starts_older_than_an_hour_do_not_count() {
        let service = [at(61), at(70), at(90), at(120), at(59)];
        let recent = Recent {
            service: &service,
            global: &service,
            ..Recent::default()
        };
        assert_eq!(
            check(now(), Limits::default(), None, recent, None),
            Breaker::Closed
        );
    }

    #[test]
    fn the_global_limit_counts_every_service() {
        let global: Vec<_> = (0..50).map(|i| at(i % 59)).collect();
        let recent = Recent {
            global: &global,
            ..Recent::default()
        };
        assert!(matches!(
            check(now(), Limits::default(), None, recent, None),
            Breaker::Open {
                scope: Scope::Global,
                count: 50,
                limit: 50,
                ..
            }
        ));
        let limits = Limits {
            per_service: 5,
            global: 51,
        };
        assert_eq!(check(now(), limits, None, recent, None), Breaker::Closed);
    }

    #[test]
    fn a_playbook_limit_is_checked_first() {
        let playbook = [at(5), at(6)];
        let recent = Recent {
            playbook: &playbook,
            service: &playbook,
            global: &playbook,
        };
        assert!(matches!(
            check(now(), Limits::default(), Some(2), recent, None),
            Breaker::Open {
                scope: Scope::Playbook,
                ..
            }
        ));
        assert_eq!(
            check(now(), Limits::default(), Some(3), recent, None),
            Breaker::Closed
        );
    }

    #[test]
    fn an_admin_reset_forgets_earlier_starts() {
        let service = [at(50), at(40), at(30), at(20), at(10)];
        let recent = Recent {
            service: &service,
            global: &service,
            ..Recent::default()
        };
        assert_eq!(
            check(now(), Limits::default(), None, recent, Some(at(15))),
            Breaker::Closed
        );
    }

    #[test]
    fn an_opening_is_announced_by_its_first_skip_only() {
        let starts = [at(50), at(40), at(30)];
        // The breaker filled at 30 minutes ago: the first skip after it is the announcement.
        assert!(first_of_opening(&starts, &[]));
        assert!(!first_of_opening(&starts, &[at(20)]));
        assert!(!first_of_opening(&starts, &[at(30)]));
        // A skip of an earlier opening does not count for this one.
        assert!(first_of_opening(&starts, &[at(45)]));
        // No counted start at all (a limit of 0 never happens, but a reset forgot them).
        assert!(first_of_opening(&[], &[]));
        assert!(!first_of_opening(&[], &[at(5)]));
    }
}
