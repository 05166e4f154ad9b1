//! Which alert fires which playbook.
//!
//! The monitor describes an alert as [`AlertFacts`]; [`decide`] says whether a trigger fires,
//! given when it last fired for that service. "At most once per incident" is the store's job
//! (the execution is enqueued in the transaction that opens or escalates the alert, keyed by
//! the alert); this function adds the pattern match, the real-consecutive-failures threshold and
//! the cooldown.

use std::time::Duration;

use crate::domain::Timestamp;

use super::document::AlertKind;
use super::plan::AlertTrigger;

/// What the monitor knows about an alert when it opens or escalates it.
#[derive(Debug, Clone)]
pub struct AlertFacts<'a> {
    pub service_name: &'a str,
    pub heartbeat_name: &'a str,
    pub team: Option<&'a str>,
    pub kind: AlertKind,
    /// Real consecutive failures (missed deadlines or failed runs), not monitor passes.
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerDecision {
    Fire,
    /// Service, heartbeat, team or kind do not match.
    NoMatch,
    /// Matches, but fewer consecutive failures than the trigger asks for, so far.
    BelowThreshold {
        have: u32,
        need: u32,
    },
    /// Matches, but the trigger fired for this service less than `cooldown` ago.
    CoolingDown {
        until: Timestamp,
    },
}

/// Whether `trigger` fires for `alert` at `now`, given when it last fired for this service.
pub fn decide(
    trigger: &AlertTrigger,
    alert: &AlertFacts<'_>,
    last_fired: Option<Timestamp>,
    now: Timestamp,
) -> TriggerDecision {
    let matches = trigger
        .service
        .as_ref()
        .is_none_or(|p| p.matches(alert.service_name))
        && trigger
            .heartbeat
            .as_ref()
            .is_none_or(|p| p.matches(alert.heartbeat_name))
        && trigger
            .team
            .as_deref()
            .is_none_or(|t| alert.team.is_some_and(|a| a.eq_ignore_ascii_case(t)))
        && (trigger.kinds.is_empty() || trigger.kinds.contains(&alert.kind));
    if !matches {
        return TriggerDecision::NoMatch;
    }
    if alert.consecutive_failures < trigger.consecutive_failures {
        return TriggerDecision::BelowThreshold {
            have: alert.consecutive_failures,
            need: trigger.consecutive_failures,
        };
    }
    if let (Some(cooldown), Some(last)) = (trigger.cooldown, last_fired) {
        let until = last.plus_millis(millis(cooldown));
        if now < until {
            return TriggerDecision::CoolingDown { until };
        }
    }
    TriggerDecision::Fire
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::plan::Pattern;

    fn trigger() -> AlertTrigger {
        AlertTrigger {
            service: Some(Pattern::new("api-*").unwrap()),
            heartbeat: None,
            team: Some("platform".into()),
            kinds: vec![AlertKind::HeartbeatMissing],
            consecutive_failures: 3,
            cooldown: Some(Duration::from_secs(1800)),
        }
    }

    fn alert(service: &str, failures: u32) -> AlertFacts<'_> {
        AlertFacts {
            service_name: service,
            heartbeat_name: "api-eu-beat",
            team: Some("Platform"),
            kind: AlertKind::HeartbeatMissing,
            consecutive_failures: failures,
        }
    }

    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn fires_on_a_match_with_enough_real_failures() {
        let now = Timestamp::from_millis(T0);
        assert_eq!(
            decide(&trigger(), &alert("API-eu", 3), None, now),
            TriggerDecision::Fire
        );
        assert_eq!(
            decide(&trigger(), &alert("api-eu", 2), None, now),
            TriggerDecision::BelowThreshold { have: 2, need: 3 }
        );
    }

    #[test]
    fn every_given_condition_must_hold() {
        let now = Timestamp::from_millis(T0);
        assert_eq!(
            decide(&trigger(), &alert("web-eu", 5), None, now),
            TriggerDecision::NoMatch
        );
        let mut other_team = alert("api-eu", 5);
        other_team.team = Some("payments");
        assert_eq!(
            decide(&trigger(), &other_team, None, now),
            TriggerDecision::NoMatch
        );
        let mut no_team = alert("api-eu", 5);
        no_team.team = None;
        assert_eq!(
            decide(&trigger(), &no_team, None, now),
            TriggerDecision::NoMatch
        );
        let mut other_kind = alert("api-eu", 5);
        other_kind.kind = AlertKind::JobFailed;
        assert_eq!(
            decide(&trigger(), &other_kind, None, now),
            TriggerDecision::NoMatch
        );
        let mut by_heartbeat = trigger();
        by_heartbeat.service = None;
        by_heartbeat.heartbeat = Some(Pattern::new("*-eu-beat").unwrap());
        by_heartbeat.kinds.clear();
        assert_eq!(
            decide(&by_heartbeat, &other_kind, None, now),
            TriggerDecision::Fire
        );
    }

    #[test]
    fn cooldown_holds_off_until_it_passes() {
        let last = Timestamp::from_millis(T0);
        let until = last.plus_millis(1_800_000);
        assert_eq!(
            decide(
                &trigger(),
                &alert("api-eu", 3),
                Some(last),
                last.plus_millis(60_000)
            ),
            TriggerDecision::CoolingDown { until }
        );
        assert_eq!(
            decide(&trigger(), &alert("api-eu", 3), Some(last), until),
            TriggerDecision::Fire
        );
    }
}
