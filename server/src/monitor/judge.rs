//! Turns a due service into a [`Verdict`]: the pure glue between the store's view of a service
//! and the rules in [`crate::domain::monitor`], plus routing (who is told).

use crate::domain::monitor::{
    AlertPhase, Decision, Expectation, MuteView, Paging, Renotify, ResolveReason, ServiceView,
    Suppression, Transition, evaluate, next_renotify_at, should_page, transition,
};
use crate::domain::schedule::{CronSchedule, MaintenanceWindow};
use crate::domain::service::name_key;
use crate::domain::{ServiceId, Timestamp};
use crate::notify::event::Destination;
use crate::store::{
    AlertKind, AlertOp, AlertState, DueService, MonitorContext, NewSuppression, Routed, RunStatus,
    SuppressionReason, TargetConfig, TargetOwner, Team, Verdict, WindowScope,
};

/// The default re-notification cadence is the service's interval, but at least this.
pub const MIN_DEFAULT_RENOTIFY_SECONDS: i64 = 60;

/// How long a child whose alert folded into its down parent waits before looking again.
pub const PARENT_RECHECK_MS: i64 = 30_000;

/// Where alerts go when a service and its team have no notification targets: the legacy
/// deployment-wide settings (`SLACK_CHANNEL_ID` with `SLACK_API_TOKEN`, `PAGERDUTY_ROUTING_KEY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    pub destinations: Vec<Destination>,
}

/// The dedup key of one heartbeat incident: the service and the moment it went down. Stable
/// while no heartbeat arrives, so every pass (and every replica) names the incident alike, and
/// different from every other incident and alert kind.
pub fn incident_key(service: ServiceId, down_since: Timestamp) -> String {
    format!(
        "medic-{}-heartbeat_missing-{}",
        service.0,
        down_since.millis()
    )
}

fn team_of<'a>(ctx: &'a MonitorContext, d: &DueService) -> Option<&'a Team> {
    let key = name_key(&d.service.team);
    ctx.teams.iter().find(|t| name_key(&t.name) == key)
}

fn view(d: &DueService, team: Option<&Team>, ctx: &MonitorContext) -> ServiceView {
    let expectation = d
        .service
        .monitoring
        .schedule
        .as_ref()
        .and_then(|s| CronSchedule::parse(&s.cron, &s.timezone).ok())
        .map_or(
            Expectation::Interval {
                interval_ms: d.service.interval_seconds.saturating_mul(1000),
                threshold: u32::try_from(d.service.threshold).unwrap_or(1),
            },
            Expectation::Schedule,
        );
    let maintenance: Vec<MaintenanceWindow> = ctx
        .windows
        .iter()
        .filter(|w| match w.scope {
            WindowScope::Service(id) => id == d.service.id,
            WindowScope::Team(id) => team.is_some_and(|t| t.id == id),
            WindowScope::Global => true,
        })
        .map(|w| w.window.clone())
        .collect();
    ServiceView {
        active: d.service.active,
        created_at: d.service.created_at,
        expectation,
        grace_ms: d.service.grace_seconds.saturating_mul(1000),
        recent_beats: d.recent_beats.clone(),
        mute: d.service.mute.as_ref().map(|m| MuteView { until: m.until }),
        maintenance,
    }
}

/// The destinations for an alert of this service at `now`, in notification order: the
/// service's own targets and its team's, by priority, each only in its paging period; the
/// team's Slack channel when none of them is a Slack target; the deployment defaults when the
/// service and its team have nothing configured at all.
pub fn route(
    ctx: &MonitorContext,
    team: Option<&Team>,
    service: ServiceId,
    now: Timestamp,
    defaults: &Defaults,
) -> Vec<Routed> {
    let mut targets: Vec<_> = ctx
        .targets
        .iter()
        .filter(|t| match t.owner {
            TargetOwner::Service(id) => id == service,
            TargetOwner::Team(id) => team.is_some_and(|tm| tm.id == id),
        })
        .collect();
    targets.sort_by_key(|t| (t.priority, t.id));
    let team_channel = team.and_then(|t| t.slack_channel.clone());
    if targets.is_empty() && team_channel.is_none() {
        return defaults
            .destinations
            .iter()
            .map(|d| Routed {
                target_id: None,
                destination: d.clone(),
            })
            .collect();
    }
    let hours = team.and_then(|t| t.working_hours.as_ref());
    let has_slack = targets
        .iter()
        .any(|t| matches!(t.config, TargetConfig::Slack { .. }));
    let mut out: Vec<Routed> = targets
        .into_iter()
        .filter(|t| should_page(t.period, hours, now) == Paging::Send)
        .map(|t| Routed {
            target_id: Some(t.id),
            destination: match &t.config {
                TargetConfig::Slack { channel } => Destination::Slack {
                    channel: channel.clone(),
                },
                TargetConfig::Pagerduty { routing_key } => Destination::Pagerduty {
                    routing_key: routing_key.clone(),
                },
                TargetConfig::Webhook { url, secret } => Destination::Webhook {
                    url: url.clone(),
                    secret: secret.clone(),
                },
            },
        })
        .collect();
    if let (false, Some(channel)) = (has_slack, team_channel) {
        out.push(Routed {
            target_id: None,
            destination: Destination::Slack { channel },
        });
    }
    out
}

fn human(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn summary(d: &DueService) -> String {
    let name = &d.service.heartbeat_name;
    let expected = match &d.service.monitoring.schedule {
        Some(s) => format!("expected on \"{}\" ({})", s.cron, s.timezone),
        None => format!(
            "expected every {}",
            human(d.service.interval_seconds * 1000)
        ),
    };
    match d.service.last_heartbeat_at {
        Some(at) => format!("{name}: no heartbeat since {at} ({expected})"),
        None => format!("{name}: never sent a heartbeat ({expected})"),
    }
}

/// The dedup key of a job alert: one per service, kind and run.
pub fn job_key(service: ServiceId, kind: AlertKind, run_id: &str) -> String {
    format!("medic-{}-{}-{run_id}", service.0, kind.as_str())
}

/// Job alerts: `job_failed` for the latest finished run when it failed (unless the service
/// opts out), resolved when a later run completes; `job_overdue` once per run that outlives
/// `max_duration_ms`, resolved when that run ends. A mute or window holds them back (and
/// records the suppression); deactivating the service resolves them.
#[allow(clippy::too_many_arguments)]
fn judge_jobs(
    now: Timestamp,
    defaults: &Defaults,
    ctx: &MonitorContext,
    team: Option<&Team>,
    d: &DueService,
    decision: &Decision,
    verdict: &mut Verdict,
    wake: &mut Option<Timestamp>,
) {
    let held = match decision {
        Decision::Suppressed(Suppression::Inactive) => {
            for a in d
                .job_alerts
                .iter()
                .filter(|a| a.state != AlertState::Resolved)
            {
                verdict.alerts.push(AlertOp::Resolve {
                    alert_id: a.id,
                    reason: "deactivated".to_owned(),
                });
            }
            return;
        }
        Decision::Suppressed(Suppression::Muted { .. }) => Some(SuppressionReason::Muted),
        Decision::Suppressed(Suppression::InMaintenance { .. }) => {
            Some(SuppressionReason::Maintenance)
        }
        _ => None,
    };
    let known = |key: &str| d.job_alerts.iter().any(|a| a.dedup_key == key);
    let open =
        |verdict: &mut Verdict, kind: AlertKind, run_id: &str, since: Timestamp, text: String| {
            let key = job_key(d.service.id, kind, run_id);
            if known(&key) {
                return;
            }
            if let Some(reason) = held {
                verdict.suppressions.push(NewSuppression {
                    kind,
                    reason,
                    incident_key: key,
                    parent_alert_id: None,
                });
                return;
            }
            verdict.alerts.push(AlertOp::Open {
                kind,
                name: format!(
                    "{} {}",
                    d.service.heartbeat_name,
                    kind.as_str().replace('_', " ")
                ),
                dedup_key: key,
                priority: d.service.priority,
                team: d.service.team.clone(),
                down_since: since,
                summary: text,
                run_id: Some(run_id.to_owned()),
                notify: route(ctx, team, d.service.id, now, defaults),
            });
        };
    let name = &d.service.heartbeat_name;
    if let Some(last) = d
        .runs
        .iter()
        .filter(|r| r.status != RunStatus::Running)
        .max_by_key(|r| r.finished_at)
    {
        match last.status {
            RunStatus::Failed if d.service.monitoring.alert_on_failure => open(
                verdict,
                AlertKind::JobFailed,
                &last.run_id,
                last.finished_at.unwrap_or(now),
                format!("{name}: run {} failed", last.run_id),
            ),
            RunStatus::Completed => {
                for a in d
                    .job_alerts
                    .iter()
                    .filter(|a| a.kind == AlertKind::JobFailed && a.state != AlertState::Resolved)
                {
                    verdict.alerts.push(AlertOp::Resolve {
                        alert_id: a.id,
                        reason: "recovered".to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    // A refusal is an event, not a condition: its alert stays until an operator acknowledges
    // or resolves it.
    for r in &d.refusals {
        let detail = r
            .detail
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        open(
            verdict,
            AlertKind::RunRefused,
            &r.run_id,
            r.at,
            format!(
                "agent {} refused run {} of script {} ({}){detail}",
                r.agent_id, r.run_id, r.script, r.reason
            ),
        );
    }
    if let Some(max) = d.service.max_duration_ms {
        for r in d.runs.iter().filter(|r| r.status == RunStatus::Running) {
            let Some(started) = r.started_at else {
                continue;
            };
            let due_at = started.plus_millis(max);
            if due_at <= now {
                open(
                    verdict,
                    AlertKind::JobOverdue,
                    &r.run_id,
                    due_at,
                    format!(
                        "{name}: run {} has run longer than {}",
                        r.run_id,
                        human(max)
                    ),
                );
            } else {
                *wake = Some(wake.map_or(due_at, |w| w.min(due_at)));
            }
        }
    }
    for a in d
        .job_alerts
        .iter()
        .filter(|a| a.kind == AlertKind::JobOverdue && a.state != AlertState::Resolved)
    {
        let still_running = d.runs.iter().any(|r| {
            r.status == RunStatus::Running && a.run_id.as_deref() == Some(r.run_id.as_str())
        });
        if !still_running {
            verdict.alerts.push(AlertOp::Resolve {
                alert_id: a.id,
                reason: "finished".to_owned(),
            });
        }
    }
}

/// Judges one due service at `now`.
pub fn judge(now: Timestamp, defaults: &Defaults, ctx: &MonitorContext, d: &DueService) -> Verdict {
    let team = team_of(ctx, d);
    let view = view(d, team, ctx);
    let decision = evaluate(now, &view);
    let phase = match &d.live_alert {
        None => AlertPhase::Clear,
        Some(a) if a.state == AlertState::Acknowledged => AlertPhase::Acknowledged {
            since: a.created_at,
        },
        Some(a) => AlertPhase::Open {
            since: a.created_at,
            last_notified_at: a.last_notified_at.unwrap_or(a.created_at),
        },
    };
    let renotify = match d.service.monitoring.renotify_seconds {
        Some(0) => Renotify::Never,
        Some(s) => Renotify::Every {
            interval_ms: s.saturating_mul(1000),
        },
        // The interval, but not more often than once a minute unless asked for explicitly.
        None => Renotify::Every {
            interval_ms: d
                .service
                .interval_seconds
                .max(MIN_DEFAULT_RENOTIFY_SECONDS)
                .saturating_mul(1000),
        },
    };
    let mut verdict = Verdict {
        state: decision.state(),
        ..Verdict::default()
    };
    let mut wake = decision.wake_at();
    let mut phase_after = phase;
    match transition(now, phase, &decision, renotify) {
        Some(Transition::Open { since }) => {
            let key = incident_key(d.service.id, since);
            let parent_alert = d.service.monitoring.parent_id.and_then(|p| {
                ctx.down_parents
                    .iter()
                    .find(|(sid, _)| *sid == p)
                    .map(|(_, alert)| *alert)
            });
            if d.last_incident_key.as_deref() == Some(key.as_str()) {
                // An operator resolved this very incident: wait for a heartbeat.
            } else if let Some(parent_alert_id) = parent_alert {
                verdict.suppressions.push(NewSuppression {
                    kind: AlertKind::HeartbeatMissing,
                    reason: SuppressionReason::Parent,
                    incident_key: key,
                    parent_alert_id: Some(parent_alert_id),
                });
                wake = Some(now.plus_millis(PARENT_RECHECK_MS));
            } else {
                verdict.alerts.push(AlertOp::Open {
                    kind: AlertKind::HeartbeatMissing,
                    name: format!("{} heartbeat missing", d.service.heartbeat_name),
                    dedup_key: key,
                    priority: d.service.priority,
                    team: d.service.team.clone(),
                    down_since: since,
                    summary: summary(d),
                    run_id: None,
                    notify: route(ctx, team, d.service.id, now, defaults),
                });
                phase_after = AlertPhase::Open {
                    since: now,
                    last_notified_at: now,
                };
            }
        }
        Some(Transition::Renotify) => {
            if let Some(a) = &d.live_alert {
                let notify = route(ctx, team, d.service.id, now, defaults)
                    .into_iter()
                    .filter(|r| !matches!(r.destination, Destination::Pagerduty { .. }))
                    .collect();
                verdict.alerts.push(AlertOp::Renotify {
                    alert_id: a.id,
                    notify,
                });
                phase_after = AlertPhase::Open {
                    since: a.created_at,
                    last_notified_at: now,
                };
            }
        }
        Some(Transition::Resolve { reason }) => {
            if let Some(a) = &d.live_alert {
                verdict.alerts.push(AlertOp::Resolve {
                    alert_id: a.id,
                    reason: match reason {
                        ResolveReason::Recovered => "recovered",
                        ResolveReason::Deactivated => "deactivated",
                    }
                    .to_owned(),
                });
                phase_after = AlertPhase::Clear;
            }
        }
        None => {}
    }
    // A mute or a window holds back an alert that would otherwise open: record it once.
    if let (Decision::Suppressed(s), AlertPhase::Clear) = (decision, phase) {
        let reason = match s {
            Suppression::Muted { .. } => Some(SuppressionReason::Muted),
            Suppression::InMaintenance { .. } => Some(SuppressionReason::Maintenance),
            Suppression::Inactive => None,
        };
        if let Some(reason) = reason {
            let bare = ServiceView {
                mute: None,
                maintenance: Vec::new(),
                ..view
            };
            if let Decision::Down { since } = evaluate(now, &bare) {
                verdict.suppressions.push(NewSuppression {
                    kind: AlertKind::HeartbeatMissing,
                    reason,
                    incident_key: incident_key(d.service.id, since),
                    parent_alert_id: None,
                });
            } else if let Some(next) = evaluate(now, &bare).wake_at() {
                // Look again when it would go down, to record the suppression then.
                wake = Some(wake.map_or(next, |w| w.min(next)));
            }
        }
    }
    judge_jobs(
        now,
        defaults,
        ctx,
        team,
        d,
        &decision,
        &mut verdict,
        &mut wake,
    );
    let renotify_at = next_renotify_at(phase_after, renotify);
    verdict.deadline_at = match (wake, renotify_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::monitor::PagingPeriod;
    use crate::domain::schedule::{WorkingHours, WorkingHoursSpec};
    use crate::domain::{Priority, ServiceState};
    use crate::store::{LiveAlert, NotificationTarget, Service, TargetId, TeamId};

    const MIN: i64 = 60_000;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + ms)
    }

    fn due(last_beat: Option<i64>) -> DueService {
        DueService {
            service: Service {
                id: ServiceId(7),
                heartbeat_name: "nightly".into(),
                service_name: String::new(),
                environment: None,
                active: true,
                interval_seconds: 300,
                threshold: 1,
                grace_seconds: 60,
                team: "Ops".into(),
                priority: Priority::P2,
                runbook: None,
                state: ServiceState::Up,
                mute: None,
                max_duration_ms: None,
                last_heartbeat_at: last_beat.map(t),
                created_at: t(0),
                updated_at: t(0),
                monitoring: crate::store::Monitoring::default(),
            },
            deadline_at: None,
            recent_beats: last_beat.map(t).into_iter().collect(),
            live_alert: None,
            last_incident_key: None,
            runs: Vec::new(),
            job_alerts: Vec::new(),
            refusals: Vec::new(),
        }
    }

    fn defaults() -> Defaults {
        Defaults {
            destinations: vec![Destination::Pagerduty {
                routing_key: "legacy".into(),
            }],
        }
    }

    fn team(hours: Option<WorkingHours>) -> Team {
        Team {
            id: TeamId(1),
            name: "ops".into(),
            working_hours: hours,
            slack_channel: None,
            created_at: t(0),
            updated_at: t(0),
        }
    }

    fn target(
        id: i64,
        priority: i32,
        period: PagingPeriod,
        config: TargetConfig,
    ) -> NotificationTarget {
        NotificationTarget {
            id: TargetId(id),
            owner: TargetOwner::Team(TeamId(1)),
            config,
            priority,
            period,
            enabled: true,
            created_at: t(0),
            updated_at: t(0),
        }
    }

    #[test]
    fn healthy_service_sleeps_until_its_deadline() {
        let v = judge(
            t(MIN),
            &defaults(),
            &MonitorContext::default(),
            &due(Some(0)),
        );
        assert_eq!(v.state, Some(ServiceState::Up));
        assert_eq!(v.deadline_at, Some(t(5 * MIN)));
        assert!(v.alerts.is_empty());
    }

    #[test]
    fn down_service_opens_one_alert_routed_to_the_defaults() {
        let v = judge(
            t(6 * MIN),
            &defaults(),
            &MonitorContext::default(),
            &due(Some(0)),
        );
        assert_eq!(v.state, Some(ServiceState::Down));
        let [
            AlertOp::Open {
                dedup_key,
                down_since,
                notify,
                ..
            },
        ] = v.alerts.as_slice()
        else {
            panic!("expected one open: {:?}", v.alerts);
        };
        assert_eq!(*down_since, t(6 * MIN));
        assert_eq!(dedup_key, &incident_key(ServiceId(7), t(6 * MIN)));
        assert_eq!(notify.len(), 1);
        assert_eq!(notify[0].target_id, None);
        // Next look: the renotify cadence (the interval).
        assert_eq!(v.deadline_at, Some(t(11 * MIN)));
    }

    #[test]
    fn an_incident_resolved_by_an_operator_is_not_reopened() {
        let mut d = due(Some(0));
        d.last_incident_key = Some(incident_key(ServiceId(7), t(6 * MIN)));
        let v = judge(t(7 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(v.alerts.is_empty());
        assert_eq!(v.deadline_at, None);
    }

    #[test]
    fn open_alert_renotifies_chat_but_not_pagerduty_and_resolves_on_recovery() {
        let mut d = due(Some(0));
        d.live_alert = Some(LiveAlert {
            id: 3,
            state: AlertState::Open,
            created_at: t(6 * MIN),
            last_notified_at: Some(t(6 * MIN)),
        });
        let mut ctx = MonitorContext {
            teams: vec![team(None)],
            ..MonitorContext::default()
        };
        ctx.targets = vec![
            target(
                1,
                0,
                PagingPeriod::Always,
                TargetConfig::Pagerduty {
                    routing_key: "k".into(),
                },
            ),
            target(
                2,
                1,
                PagingPeriod::Always,
                TargetConfig::Slack {
                    channel: "#ops".into(),
                },
            ),
        ];
        let v = judge(t(11 * MIN), &defaults(), &ctx, &d);
        let [
            AlertOp::Renotify {
                alert_id: 3,
                notify,
            },
        ] = v.alerts.as_slice()
        else {
            panic!("expected renotify: {:?}", v.alerts);
        };
        assert_eq!(notify.len(), 1);
        assert_eq!(notify[0].target_id, Some(TargetId(2)));
        // A heartbeat arrived: resolve.
        d.recent_beats = vec![t(12 * MIN)];
        let v = judge(t(12 * MIN), &defaults(), &ctx, &d);
        assert!(matches!(
            v.alerts.as_slice(),
            [AlertOp::Resolve { alert_id: 3, .. }]
        ));
        assert_eq!(v.state, Some(ServiceState::Up));
    }

    #[test]
    fn routing_orders_by_priority_and_honours_working_hours() {
        let spec: WorkingHoursSpec = serde_json::from_value(serde_json::json!({
            "timezone": "UTC",
            "ranges": [{"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "09:00", "end": "17:00"}]
        }))
        .expect("spec");
        let hours = WorkingHours::parse(spec).expect("hours");
        let ctx = MonitorContext {
            teams: vec![team(Some(hours))],
            targets: vec![
                target(
                    5,
                    2,
                    PagingPeriod::AfterHours,
                    TargetConfig::Pagerduty {
                        routing_key: "night".into(),
                    },
                ),
                target(
                    4,
                    1,
                    PagingPeriod::DuringHours,
                    TargetConfig::Slack {
                        channel: "#day".into(),
                    },
                ),
                target(
                    3,
                    0,
                    PagingPeriod::Always,
                    TargetConfig::Webhook {
                        url: "https://x.example".into(),
                        secret: "s".into(),
                    },
                ),
            ],
            ..MonitorContext::default()
        };
        let noon = Timestamp::parse("2026-12-01T12:00:00Z").expect("ts");
        let ids: Vec<_> = route(&ctx, ctx.teams.first(), ServiceId(7), noon, &defaults())
            .iter()
            .map(|r| r.target_id)
            .collect();
        assert_eq!(ids, vec![Some(TargetId(3)), Some(TargetId(4))]);
        let night = Timestamp::parse("2026-12-01T23:00:00Z").expect("ts");
        let ids: Vec<_> = route(&ctx, ctx.teams.first(), ServiceId(7), night, &defaults())
            .iter()
            .map(|r| r.target_id)
            .collect();
        assert_eq!(ids, vec![Some(TargetId(3)), Some(TargetId(5))]);
    }

    #[test]
    fn muted_down_service_records_a_suppression_not_an_alert() {
        let mut d = due(Some(0));
        d.service.mute = Some(crate::store::Mute {
            at: t(MIN),
            until: None,
            reason: None,
        });
        let v = judge(t(10 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(v.alerts.is_empty());
        assert_eq!(v.suppressions.len(), 1);
        assert_eq!(v.suppressions[0].reason, SuppressionReason::Muted);
        assert_eq!(v.state, None);
    }

    #[test]
    fn child_of_a_down_parent_folds_into_the_parent() {
        let mut d = due(Some(0));
        d.service.monitoring.parent_id = Some(ServiceId(1));
        let ctx = MonitorContext {
            down_parents: vec![(ServiceId(1), 99)],
            ..MonitorContext::default()
        };
        let v = judge(t(6 * MIN), &defaults(), &ctx, &d);
        assert!(v.alerts.is_empty());
        assert_eq!(v.suppressions[0].reason, SuppressionReason::Parent);
        assert_eq!(v.suppressions[0].parent_alert_id, Some(99));
        assert_eq!(v.deadline_at, Some(t(6 * MIN + PARENT_RECHECK_MS)));
    }

    fn run(
        id: &str,
        status: RunStatus,
        started: i64,
        finished: Option<i64>,
    ) -> crate::store::RunView {
        crate::store::RunView {
            run_id: id.into(),
            status,
            started_at: Some(t(started)),
            finished_at: finished.map(t),
        }
    }

    #[test]
    fn a_failed_run_opens_one_job_alert_and_a_good_run_resolves_it() {
        let mut d = due(Some(MIN));
        d.runs = vec![run("r1", RunStatus::Failed, 0, Some(MIN))];
        let v = judge(t(MIN + 1), &defaults(), &MonitorContext::default(), &d);
        let opened: Vec<_> = v
            .alerts
            .iter()
            .filter_map(|a| match a {
                AlertOp::Open {
                    kind,
                    dedup_key,
                    run_id,
                    ..
                } => Some((*kind, dedup_key.clone(), run_id.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            opened,
            vec![(
                AlertKind::JobFailed,
                job_key(ServiceId(7), AlertKind::JobFailed, "r1"),
                Some("r1".into())
            )]
        );
        // Already alerted for r1: nothing new.
        d.job_alerts = vec![crate::store::JobAlertView {
            id: 4,
            kind: AlertKind::JobFailed,
            run_id: Some("r1".into()),
            state: AlertState::Open,
            dedup_key: job_key(ServiceId(7), AlertKind::JobFailed, "r1"),
        }];
        let v = judge(t(MIN + 2), &defaults(), &MonitorContext::default(), &d);
        assert!(v.alerts.is_empty(), "{:?}", v.alerts);
        // Opting out: no alert for a new failure.
        let mut quiet = d.clone();
        quiet.service.monitoring.alert_on_failure = false;
        quiet.runs = vec![run("r2", RunStatus::Failed, 0, Some(2 * MIN))];
        assert!(
            judge(t(2 * MIN), &defaults(), &MonitorContext::default(), &quiet)
                .alerts
                .is_empty()
        );
        // The next run completes: resolve.
        d.runs = vec![run("r3", RunStatus::Completed, 2 * MIN, Some(3 * MIN))];
        let v = judge(t(3 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(matches!(
            v.alerts.as_slice(),
            [AlertOp::Resolve { alert_id: 4, .. }]
        ));
    }

    #[test]
    fn a_refused_run_alerts_once_and_stays_until_an_operator_acts() {
        let mut d = due(Some(MIN));
        d.service.heartbeat_name = "agent:web-1".into();
        d.refusals = vec![crate::store::RefusalView {
            run_id: "r9".into(),
            agent_id: "web-1".into(),
            script: "restart-nginx".into(),
            reason: "hash_mismatch".into(),
            detail: Some("content differs".into()),
            at: t(MIN + 5),
        }];
        let v = judge(t(MIN + 10), &defaults(), &MonitorContext::default(), &d);
        let key = job_key(ServiceId(7), AlertKind::RunRefused, "r9");
        match v.alerts.as_slice() {
            [
                AlertOp::Open {
                    kind: AlertKind::RunRefused,
                    dedup_key,
                    run_id,
                    summary,
                    notify,
                    ..
                },
            ] => {
                assert_eq!(dedup_key, &key);
                assert_eq!(run_id.as_deref(), Some("r9"));
                assert_eq!(
                    summary,
                    "agent web-1 refused run r9 of script restart-nginx (hash_mismatch): \
                     content differs"
                );
                assert!(!notify.is_empty(), "routed like any alert");
            }
            other => panic!("{other:?}"),
        }
        // Already alerted (open or resolved by hand): never again, and never resolved by the
        // monitor.
        for state in [AlertState::Open, AlertState::Resolved] {
            d.job_alerts = vec![crate::store::JobAlertView {
                id: 11,
                kind: AlertKind::RunRefused,
                run_id: Some("r9".into()),
                state,
                dedup_key: key.clone(),
            }];
            let v = judge(t(2 * MIN), &defaults(), &MonitorContext::default(), &d);
            assert!(v.alerts.is_empty(), "{state:?}: {:?}", v.alerts);
        }
        // Muted: recorded as suppressed instead.
        d.job_alerts.clear();
        d.service.mute = Some(crate::store::Mute {
            at: t(0),
            until: None,
            reason: None,
        });
        let v = judge(t(2 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(v.alerts.is_empty(), "{:?}", v.alerts);
        assert_eq!(v.suppressions.len(), 1);
        assert_eq!(v.suppressions[0].kind, AlertKind::RunRefused);
    }

    #[test]
    fn an_overdue_run_alerts_once_and_wakes_the_monitor_at_its_limit() {
        let mut d = due(Some(MIN));
        d.service.max_duration_ms = Some(10 * MIN);
        d.runs = vec![run("long", RunStatus::Running, MIN, None)];
        let v = judge(t(2 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(v.alerts.is_empty());
        assert_eq!(v.deadline_at, Some(t(6 * MIN)).min(Some(t(11 * MIN))));
        let v = judge(t(11 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(v.alerts.iter().any(|a| matches!(
            a,
            AlertOp::Open {
                kind: AlertKind::JobOverdue,
                ..
            }
        )));
        // It ends: the overdue alert resolves.
        d.job_alerts = vec![crate::store::JobAlertView {
            id: 9,
            kind: AlertKind::JobOverdue,
            run_id: Some("long".into()),
            state: AlertState::Open,
            dedup_key: job_key(ServiceId(7), AlertKind::JobOverdue, "long"),
        }];
        d.runs = vec![run("long", RunStatus::Completed, MIN, Some(12 * MIN))];
        d.recent_beats = vec![t(12 * MIN)];
        let v = judge(t(12 * MIN), &defaults(), &MonitorContext::default(), &d);
        assert!(
            v.alerts
                .iter()
                .any(|a| matches!(a, AlertOp::Resolve { alert_id: 9, .. }))
        );
    }

    #[test]
    fn a_scheduled_job_is_expected_right_after_a_skipped_dst_hour() {
        // 02:30 every night in Berlin; 2026-03-29 has no 02:30 (clocks jump 02:00 → 03:00).
        let mut d = due(None);
        d.service.grace_seconds = 600;
        d.service.monitoring.schedule = Some(crate::store::ScheduleSpec {
            cron: "30 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
        });
        let beat = Timestamp::parse("2026-03-28T01:30:05Z").expect("ts"); // 02:30 CET
        d.service.created_at = Timestamp::parse("2026-03-01T00:00:00Z").expect("ts");
        d.recent_beats = vec![beat];
        d.service.last_heartbeat_at = Some(beat);
        let now = Timestamp::parse("2026-03-28T12:00:00Z").expect("ts");
        let v = judge(now, &defaults(), &MonitorContext::default(), &d);
        assert_eq!(v.state, Some(ServiceState::Up));
        // Expected at 03:00 CEST (01:00Z), the first moment after the gap.
        let expected = Timestamp::parse("2026-03-29T01:00:00Z").expect("ts");
        assert_eq!(v.deadline_at, Some(expected));
        // Ten minutes of grace later with no beat: down, one alert.
        let v = judge(
            expected.plus_millis(600_000),
            &defaults(),
            &MonitorContext::default(),
            &d,
        );
        assert_eq!(v.state, Some(ServiceState::Down));
        assert!(matches!(v.alerts.as_slice(), [AlertOp::Open { .. }]));
    }
}
