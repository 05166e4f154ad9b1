//! Playbook notices: what the engine tells people about executions, and their delivery.
//!
//! Every transition that deserves a notice (an execution started, awaits approval, was approved,
//! rejected, cancelled, expired, completed or failed; a condition escalated; the circuit breaker
//! opened) queues one row per destination in the playbook outbox **in the same transaction**
//! that commits the transition ([`crate::store::ExecutionWrite::notices`]), so a notice is
//! never lost and never sent for a change that did not commit. The destinations are the
//! service's routing, as alerts use it: the service's and its team's notification targets in
//! their paging periods, the team's Slack channel, or the deployment defaults. PagerDuty
//! targets only hear escalations; Slack and webhooks hear everything.
//!
//! [`run_dispatcher`] delivers the outbox with the alert dispatcher's retry schedule. A
//! decision about an execution that was waiting for approval updates the Slack approval
//! message in place (`chat.update`), once that message was delivered.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::service::name_key;
use crate::domain::{Destination, Timestamp};
use crate::monitor::judge::{Defaults, route};
use crate::notify::playbook::{
    ExecutionRef, ExecutionService, PlaybookEvent, SCHEMA_VERSION, events,
};
use crate::notify::{Notifiers, Outcome};
use crate::playbook::Plan;
use crate::playbook::machine::{Action, ApprovalOutcome, Execution, ExecutionStatus, Notice};
use crate::playbook::vars::Masker;
use crate::store::{
    ApprovalMessage, DeliveryResult, DeliveryState, ExecutionRecord, MonitorContext, NewNotice,
    NoticeRecord, Routed, Store, TargetFilter,
};

/// The execution a notice is about (a stored record, or one being created).
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: i64,
    pub playbook_id: i64,
    pub playbook_name: String,
    pub playbook_version: i64,
    pub trigger: String,
    pub alert_id: Option<i64>,
    pub requested_by: Option<String>,
}

impl From<&ExecutionRecord> for Subject {
    fn from(r: &ExecutionRecord) -> Self {
        Self {
            id: r.id,
            playbook_id: r.playbook_id,
            playbook_name: r.playbook_name.clone(),
            playbook_version: r.playbook_version,
            trigger: r.trigger.clone(),
            alert_id: r.alert_id,
            requested_by: r.requested_by.clone(),
        }
    }
}

/// Who hears about an execution: its service (as notices show it) and the destinations.
#[derive(Debug, Clone, Default)]
pub struct Audience {
    pub service: Option<ExecutionService>,
    pub routes: Vec<Routed>,
}

/// The routing of the execution's service at `now` (the deployment defaults without one).
pub async fn audience(
    store: &dyn Store,
    service_id: Option<crate::domain::ServiceId>,
    now: Timestamp,
    defaults: &[Destination],
) -> Audience {
    let Some(sid) = service_id else {
        return audience_in(None, &MonitorContext::default(), now, defaults);
    };
    let service = match store.get_service(sid).await {
        Ok(Some(s)) => s,
        Ok(None) => return audience_in(None, &MonitorContext::default(), now, defaults),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the service to route a playbook notice");
            return audience_in(None, &MonitorContext::default(), now, defaults);
        }
    };
    let team = store
        .find_team(&name_key(&service.team))
        .await
        .ok()
        .flatten();
    let mut targets = store
        .list_targets(&TargetFilter {
            team: None,
            service: Some(sid),
        })
        .await
        .unwrap_or_default();
    if let Some(t) = &team {
        targets.extend(
            store
                .list_targets(&TargetFilter {
                    team: Some(t.id),
                    service: None,
                })
                .await
                .unwrap_or_default(),
        );
    }
    targets.retain(|t| t.enabled);
    let ctx = MonitorContext {
        teams: team.into_iter().collect(),
        targets,
        ..MonitorContext::default()
    };
    audience_in(Some(&service), &ctx, now, defaults)
}

/// The routing of `service` at `now` among the teams and enabled targets of `ctx` (which may
/// hold every team and target: those of other services and teams are left out); the deployment
/// defaults without a service. Pure: an alert trigger routes its start's notices with it
/// inside the monitor pass.
pub fn audience_in(
    service: Option<&crate::store::Service>,
    ctx: &MonitorContext,
    now: Timestamp,
    defaults: &[Destination],
) -> Audience {
    let defaults = Defaults {
        destinations: defaults.to_vec(),
    };
    let Some(service) = service else {
        return Audience {
            service: None,
            routes: route(
                &MonitorContext::default(),
                None,
                crate::domain::ServiceId(0),
                now,
                &defaults,
            ),
        };
    };
    let key = name_key(&service.team);
    let team = ctx.teams.iter().find(|t| name_key(&t.name) == key);
    Audience {
        service: Some(ExecutionService {
            id: service.id.0,
            name: service.heartbeat_name.clone(),
            service_name: service.service_name.clone(),
            team: service.team.clone(),
        }),
        routes: route(ctx, team, service.id, now, &defaults),
    }
}

/// What one transition says, as (event, step name, error) triples.
fn said(
    plan: &Plan,
    prev: Option<&Execution>,
    next: &Execution,
    actions: &[Action],
) -> Vec<(&'static str, Option<String>, Option<String>)> {
    let was_pending = prev.is_some_and(|p| p.status == ExecutionStatus::PendingApproval);
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::Notify(Notice::Started) => {
                if was_pending {
                    out.push((events::APPROVED, None, None));
                }
                out.push((events::STARTED, None, None));
            }
            Action::Notify(Notice::AwaitingApproval) => {
                out.push((events::AWAITING_APPROVAL, None, None));
            }
            Action::Notify(Notice::Completed) => out.push((events::COMPLETED, None, None)),
            Action::Notify(Notice::Failed) => {
                let step = next.steps.last().map(|s| s.name.clone());
                out.push((events::FAILED, step, next.error.clone()));
            }
            Action::Notify(Notice::Cancelled) => {
                let rejected = was_pending
                    && next
                        .approval
                        .as_ref()
                        .is_some_and(|d| d.outcome == ApprovalOutcome::Rejected);
                let kind = if rejected {
                    events::REJECTED
                } else {
                    events::CANCELLED
                };
                out.push((kind, None, next.error.clone()));
            }
            Action::Notify(Notice::Expired) => {
                out.push((events::EXPIRED, None, next.error.clone()));
            }
            // The circuit breaker's notice is queued once per opening by the start path.
            Action::Notify(Notice::Skipped) => {}
            Action::Escalate { step, reason } => {
                let name = plan.steps.get(*step).map(|s| s.name.clone());
                out.push((events::ESCALATED, name, Some(reason.clone())));
            }
            _ => {}
        }
    }
    out
}

/// Whether `actions` hold anything to tell people.
pub fn has_notices(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Notify(_) | Action::Escalate { .. }))
}

fn summary(kind: &str, x: &ExecutionRef, service: Option<&ExecutionService>) -> String {
    let on = service.map_or_else(String::new, |s| format!(" for {}", s.name));
    let name = &x.playbook_name;
    let why = x
        .error
        .as_deref()
        .map_or_else(String::new, |e| format!(": {e}"));
    let by = x
        .decided_by
        .as_deref()
        .map_or_else(String::new, |b| format!(" by {b}"));
    match kind {
        events::STARTED => format!("Playbook {name} started{on} (execution #{})", x.id),
        events::AWAITING_APPROVAL => format!(
            "Playbook {name}{on} is waiting for approval (execution #{})",
            x.id
        ),
        events::APPROVED => format!("Playbook {name}{on} was approved{by}"),
        events::REJECTED => format!("Playbook {name}{on} was rejected{by}{why}"),
        events::COMPLETED => format!("Playbook {name} completed{on}"),
        events::FAILED => format!("Playbook {name} failed{on}{why}"),
        events::CANCELLED => format!("Playbook {name}{on} was cancelled{why}"),
        events::EXPIRED => format!("Playbook {name}{on} expired waiting for approval"),
        events::ESCALATED => format!(
            "Playbook {name}{on} escalated at step {}{why}",
            x.step.as_deref().unwrap_or("?")
        ),
        _ => format!("Playbook {name}{on}: {kind}"),
    }
}

/// A fresh notice id (kept in the payload, so every retry sends the same one).
fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The notices of one transition, one per (event, destination that takes it), every text
/// masked with `masker`. `actor`: who decided, for operators' decisions.
#[allow(clippy::too_many_arguments)]
pub fn notices(
    plan: &Plan,
    record: &Subject,
    prev: Option<&Execution>,
    next: &Execution,
    actions: &[Action],
    actor: Option<&str>,
    audience: &Audience,
    masker: &Masker,
    now: Timestamp,
) -> Vec<NewNotice> {
    let mut out = Vec::new();
    for (kind, step, error) in said(plan, prev, next, actions) {
        let decided_by = match kind {
            // Who decided, as the execution records it (`key:<id>`, `slack:<user>`).
            events::APPROVED | events::REJECTED => next
                .approval
                .as_ref()
                .and_then(|d| d.by.as_ref().map(|b| b.0.clone()))
                .or_else(|| actor.map(str::to_owned)),
            events::CANCELLED => actor.map(str::to_owned),
            _ => None,
        };
        let reason = match kind {
            events::REJECTED => next.approval.as_ref().and_then(|d| d.reason.clone()),
            events::APPROVED => next
                .approval
                .as_ref()
                .filter(|d| d.outcome == ApprovalOutcome::TimedOut)
                .map(|_| "no rejection within the approval window".to_owned()),
            _ => None,
        };
        let mut x = ExecutionRef {
            id: record.id,
            status: next.status.as_str().to_owned(),
            playbook_id: record.playbook_id,
            playbook_name: record.playbook_name.clone(),
            playbook_version: record.playbook_version,
            trigger: record.trigger.clone(),
            alert_id: record.alert_id,
            requested_by: record.requested_by.clone(),
            step,
            error: error.map(|e| masker.mask(&e)),
            decided_by,
            reason: reason.map(|r| masker.mask(&r)),
        };
        x.playbook_name = masker.mask(&x.playbook_name);
        let summary = masker.mask(&summary(kind, &x, audience.service.as_ref()));
        let event = PlaybookEvent {
            schema_version: SCHEMA_VERSION,
            event_id: event_id(),
            event: kind.to_owned(),
            at: now,
            execution: x,
            service: audience.service.clone(),
            breaker: None,
            summary,
            url: None,
        };
        push(&mut out, &event, audience);
    }
    out
}

/// The circuit breaker's notice for an execution it skipped (the first of an opening).
pub fn breaker_notice(
    record: &Subject,
    scope: &str,
    count: u32,
    limit: u32,
    closes_at: Timestamp,
    audience: &Audience,
    now: Timestamp,
) -> Vec<NewNotice> {
    let x = ExecutionRef {
        id: record.id,
        status: "skipped".to_owned(),
        playbook_id: record.playbook_id,
        playbook_name: record.playbook_name.clone(),
        playbook_version: record.playbook_version,
        trigger: record.trigger.clone(),
        alert_id: record.alert_id,
        requested_by: record.requested_by.clone(),
        step: None,
        error: None,
        decided_by: None,
        reason: None,
    };
    let on = audience
        .service
        .as_ref()
        .map_or_else(String::new, |s| format!(" for {}", s.name));
    let event = PlaybookEvent {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(),
        event: events::BREAKER_OPEN.to_owned(),
        at: now,
        summary: format!(
            "Remediation circuit breaker open ({scope}: {count} of {limit} executions in the last \
             hour): playbook {}{on} was skipped; further executions are skipped without notice \
             until {} or an admin resets it",
            x.playbook_name,
            closes_at.rfc3339()
        ),
        execution: x,
        service: audience.service.clone(),
        breaker: Some(json!({"scope": scope, "count": count, "limit": limit,
                             "closes_at": closes_at})),
        url: None,
    };
    let mut out = Vec::new();
    push(&mut out, &event, audience);
    out
}

fn push(out: &mut Vec<NewNotice>, event: &PlaybookEvent, audience: &Audience) {
    let payload = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
    for r in &audience.routes {
        if event.goes_to(r.destination.channel()) {
            out.push(NewNotice {
                target_id: r.target_id,
                event: event.event.clone(),
                destination: r.destination.clone(),
                payload: payload.clone(),
            });
        }
    }
}

/// How the notice dispatcher works.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub lease: Duration,
    pub batch: u32,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub max_sleep: Duration,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            batch: 32,
            concurrency: 8,
            max_attempts: crate::notify::MAX_ATTEMPTS,
            max_sleep: Duration::from_secs(60),
        }
    }
}

/// How long a decision waits for its approval message to be delivered before looking again.
const APPROVAL_MESSAGE_WAIT: Duration = Duration::from_secs(1);

fn result_for(
    outcome: &Outcome,
    attempts_before: i32,
    s: &DispatchSettings,
    at: Timestamp,
) -> DeliveryResult {
    let attempt = u32::try_from(attempts_before).unwrap_or(0) + 1;
    match outcome {
        Outcome::Delivered {
            status,
            external_ref,
        } => DeliveryResult {
            at,
            state: DeliveryState::Delivered,
            next_attempt_at: None,
            status: Some(i32::from(*status)),
            error: None,
            external_ref: external_ref.clone(),
        },
        Outcome::Retry { status, error } if attempt < s.max_attempts => {
            let delay = crate::notify::retry_delay(attempt, &mut rand::rng());
            DeliveryResult {
                at,
                state: DeliveryState::Pending,
                next_attempt_at: Some(
                    at.plus_millis(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                ),
                status: status.map(i32::from),
                error: Some(error.clone()),
                external_ref: None,
            }
        }
        Outcome::Retry { status, error } | Outcome::Failed { status, error } => DeliveryResult {
            at,
            state: DeliveryState::Failed,
            next_attempt_at: None,
            status: status.map(i32::from),
            error: Some(error.clone()),
            external_ref: None,
        },
    }
}

async fn deliver_one(
    store: &dyn Store,
    notifiers: &Notifiers,
    settings: &DispatchSettings,
    clock: &Clock,
    n: NoticeRecord,
) {
    let result = match serde_json::from_value::<PlaybookEvent>(n.payload.clone()) {
        Err(e) => DeliveryResult {
            at: clock.now(),
            state: DeliveryState::Failed,
            next_attempt_at: None,
            status: None,
            error: Some(format!("the stored notice cannot be read: {e}")),
            external_ref: None,
        },
        Ok(event) => {
            let mut approval = None;
            let mut wait = false;
            if matches!(n.destination, Destination::Slack { .. }) && event.updates_approval() {
                match store.approval_message(n.execution_id, &n.destination).await {
                    Ok(ApprovalMessage::Delivered(r)) => approval = r,
                    // The approval request is still on its way: update it once it is there.
                    Ok(ApprovalMessage::Pending) => wait = true,
                    Ok(ApprovalMessage::None | ApprovalMessage::Failed) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the approval message");
                        wait = true;
                    }
                }
            }
            if wait {
                let at = clock.now();
                DeliveryResult {
                    at,
                    state: DeliveryState::Pending,
                    next_attempt_at: Some(at.plus_millis(
                        i64::try_from(APPROVAL_MESSAGE_WAIT.as_millis()).unwrap_or(1000),
                    )),
                    status: None,
                    error: Some("waiting for the approval message".to_owned()),
                    external_ref: None,
                }
            } else {
                let outcome = notifiers
                    .deliver_notice(&n.destination, &event, approval.as_deref())
                    .await;
                result_for(&outcome, n.attempts, settings, clock.now())
            }
        }
    };
    let channel = n.destination.channel();
    match result.state {
        DeliveryState::Delivered => {
            metrics::counter!("medic_playbook_notices_total", "channel" => channel,
                "outcome" => "delivered")
            .increment(1);
        }
        DeliveryState::Failed => {
            metrics::counter!("medic_playbook_notices_total", "channel" => channel,
                "outcome" => "failed")
            .increment(1);
            tracing::warn!(
                notice = n.id,
                execution = n.execution_id,
                channel,
                error = result.error.as_deref().unwrap_or(""),
                "playbook notice not delivered"
            );
        }
        DeliveryState::Pending => {}
    }
    if let Err(e) = store.finish_notice(n.id, &result).await {
        // The lease runs out and the notice is sent again: a rare duplicate, never a loss.
        tracing::error!(notice = n.id, error = %e, "could not record a playbook notice");
    }
}

/// Delivers the playbook outbox until `shutdown`; `wake` is poked when notices are queued.
pub async fn run_dispatcher(
    store: Arc<dyn Store>,
    notifiers: Notifiers,
    settings: DispatchSettings,
    wake: Arc<tokio::sync::Notify>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let lease_ms = i64::try_from(settings.lease.as_millis()).unwrap_or(60_000);
    let mut ticks = clock.ticks();
    loop {
        let now = clock.now();
        let pause = match store
            .claim_notices(now, now.plus_millis(lease_ms), settings.batch)
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                let full = batch.len() >= settings.batch as usize;
                futures::stream::iter(batch)
                    .for_each_concurrent(settings.concurrency, |n| {
                        deliver_one(store.as_ref(), &notifiers, &settings, &clock, n)
                    })
                    .await;
                if full {
                    Duration::ZERO
                } else {
                    Duration::from_millis(1)
                }
            }
            Ok(_) => match store.next_notice_at().await {
                Ok(next) => {
                    let cap = i64::try_from(settings.max_sleep.as_millis()).unwrap_or(60_000);
                    let ms =
                        next.map_or(cap, |t| (t.millis() - clock.now().millis()).clamp(0, cap));
                    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                        .max(Duration::from_millis(10))
                }
                Err(_) => settings.max_sleep,
            },
            Err(e) => {
                tracing::error!(error = %e, "claiming playbook notices failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
            () = ticks.advanced() => {}
        }
    }
}
