//! The monitor and the notification dispatcher: the server's background workers.
//!
//! **Monitor.** Every service row carries `deadline_at`, the next moment anything about it can
//! change without a heartbeat or an operator (it becomes late, down, is due a re-notification,
//! or a mute or window ends). Heartbeat batches keep it (see the stores' `record_heartbeats`);
//! the monitor sleeps until the earliest deadline (at most [`MonitorSettings::max_sleep`], so a
//! deadline moved by another replica is seen promptly), then runs a pass: the store takes the
//! due services with one indexed query, [`judge::judge`] decides each one purely, and the store
//! writes states, deadlines, alert changes and the outbox rows in the same transaction.
//!
//! **Dispatcher.** Leases due outbox rows, delivers them through a [`Deliver`] implementation,
//! and records each outcome (delivered, retry later with backoff, failed). A crash between the
//! alert's commit and the delivery loses nothing: the row stays pending and is delivered after
//! the restart (or by another replica once the lease runs out).
//!
//! Both take "now" from the application's [`Clock`]; besides their real-time caps they wake
//! whenever a manual clock is advanced, so tests move time instead of waiting for it.

pub mod judge;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::Timestamp;
use crate::notify::event::{
    AlertEvent, AlertRef, Destination, EventKind, Outcome, ServiceRef, WEBHOOK_SCHEMA_VERSION,
};
use crate::store::{ClaimedDelivery, DeliveryResult, DeliveryState, PurgeTable, Retention, Store};

pub use judge::Defaults;

/// Delivers one notification (implemented by [`crate::notify::Notifiers`]; tests may use
/// anything that speaks to a local recording server).
#[async_trait::async_trait]
pub trait Deliver: Send + Sync + 'static {
    async fn deliver(&self, destination: &Destination, event: &AlertEvent) -> Outcome;
}

#[async_trait::async_trait]
impl Deliver for crate::notify::Notifiers {
    async fn deliver(&self, destination: &Destination, event: &AlertEvent) -> Outcome {
        crate::notify::Notifiers::deliver(self, destination, event).await
    }
}

#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// Due services judged per transaction.
    pub batch: u32,
    /// The longest the monitor sleeps without looking at the deadlines.
    pub max_sleep: Duration,
    pub defaults: Defaults,
    /// The playbook engine whose alert triggers each pass fires (`None`: no triggers).
    pub triggers: Option<crate::engine::Engine>,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            batch: 500,
            max_sleep: Duration::from_millis(500),
            defaults: Defaults::default(),
            triggers: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// How long a claimed delivery is held before another dispatcher may take it.
    pub lease: Duration,
    pub batch: u32,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Attempts before a retryable failure becomes final.
    pub max_attempts: u32,
    /// The longest the dispatcher sleeps without looking at the outbox.
    pub max_sleep: Duration,
    pub public_url: Option<String>,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            batch: 50,
            concurrency: 8,
            max_attempts: crate::notify::MAX_ATTEMPTS,
            max_sleep: Duration::from_secs(1),
            public_url: None,
        }
    }
}

/// Wakes the dispatcher when the outbox gains rows (a pass opened or resolved alerts, an
/// operator acknowledged one).
#[derive(Debug, Default)]
pub struct OutboxSignal(Notify);

impl OutboxSignal {
    pub fn poke(&self) {
        self.0.notify_one();
    }
}

fn sleep_until(t: Option<Timestamp>, now: Timestamp, cap: Duration) -> Duration {
    let cap_ms = i64::try_from(cap.as_millis()).unwrap_or(i64::MAX);
    let ms = t.map_or(cap_ms, |t| (t.millis() - now.millis()).clamp(0, cap_ms));
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Runs monitor passes until `shutdown`. Time is `clock`'s: a manual clock's advance wakes the
/// monitor for a pass at once.
pub async fn run_monitor(
    store: Arc<dyn Store>,
    settings: MonitorSettings,
    outbox: Arc<OutboxSignal>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    tracing::info!(batch = settings.batch, "monitor started");
    let mut ticks = clock.ticks();
    loop {
        let now = clock.now();
        let started = Instant::now();
        let defaults = &settings.defaults;
        let judge = |ctx: &_, d: &_| judge::judge(now, defaults, ctx, d);
        // The pass fires alert triggers in its own transaction; without them it waits.
        let armed = match &settings.triggers {
            Some(engine) => match engine.alert_triggers().await {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(error = %e, "reading the playbooks' alert triggers failed");
                    metrics::counter!("medic_monitor_pass_errors_total").increment(1);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            },
            None => None,
        };
        let hook: &dyn crate::store::AlertTriggers = match &armed {
            Some(a) => a,
            None => &crate::store::NoTriggers,
        };
        let pass = store.monitor_pass_triggering(now, settings.batch, &judge, hook);
        let pass = tracing::Instrument::instrument(pass, tracing::info_span!("monitor_pass"));
        let pause = match pass.await {
            Ok(report) => {
                if report.executions_started > 0
                    && let Some(engine) = &settings.triggers
                {
                    // Counted now that they committed, like the API's starts.
                    let pending = armed.as_ref().is_some_and(|a| a.committed());
                    engine.started_elsewhere();
                    if pending {
                        engine.count_pending().await;
                    }
                }
                let took = started.elapsed();
                metrics::histogram!("medic_monitor_pass_seconds").record(took.as_secs_f64());
                if report.examined > 0 {
                    metrics::counter!("medic_monitor_services_judged_total")
                        .increment(report.examined as u64);
                }
                for (kind, priority, team, due) in &report.opened {
                    metrics::counter!("medic_alerts_opened_total",
                        "kind" => kind.as_str(), "priority" => priority.as_str(),
                        "team" => crate::telemetry::team_label(team))
                    .increment(1);
                    let lag = (clock.now().millis() - due.millis()).max(0);
                    metrics::histogram!("medic_monitor_detection_lag_seconds")
                        .record(lag as f64 / 1000.0);
                    tracing::warn!(kind = kind.as_str(), priority = priority.as_str(),
                        team = %team, lag_ms = lag, "alert opened");
                }
                for reason in &report.suppressed {
                    metrics::counter!("medic_alerts_suppressed_total", "reason" => reason.as_str())
                        .increment(1);
                }
                if !report.opened.is_empty() || report.renotified > 0 || report.resolved > 0 {
                    outbox.poke();
                }
                if report.examined >= settings.batch as usize {
                    Duration::ZERO
                } else {
                    // Rows another replica holds stay due; do not spin on them.
                    sleep_until(report.next_deadline, clock.now(), settings.max_sleep)
                        .max(Duration::from_millis(20))
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "monitor pass failed");
                metrics::counter!("medic_monitor_pass_errors_total").increment(1);
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
            () = ticks.advanced() => {}
        }
    }
    tracing::info!("monitor stopped");
}

/// A delivery's `event_id`: a UUID derived from the delivery row (its id and creation time) and
/// the alert it belongs to (its dedup key, which holds the service and the incident's start, and
/// its opening time), so every retry, on any replica, sends the same id, while another
/// deployment or a reset database — whose row ids start again at 1 — never produces it again.
pub fn event_id(c: &ClaimedDelivery) -> String {
    use sha2::Digest;
    let d = &c.delivery;
    let a = &c.alert;
    let mut h = sha2::Sha256::new();
    for part in [
        "medic-event".to_owned(),
        d.id.to_string(),
        d.created_at.millis().to_string(),
        format!("{:?}", d.event),
        format!("{:?}", d.destination),
        a.alert_id.to_string(),
        a.dedup_key.clone(),
        a.created_at.millis().to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The webhook body / notification content for a claimed delivery.
pub fn event_for(c: &ClaimedDelivery, public_url: Option<&str>) -> AlertEvent {
    let d = &c.delivery;
    let a = &c.alert;
    let s = &c.service;
    let summary = a
        .details
        .summary
        .clone()
        .unwrap_or_else(|| a.alert_name.clone());
    let summary = match d.event {
        EventKind::Triggered | EventKind::Renotified => summary,
        EventKind::Acknowledged => format!(
            "Acknowledged by {}: {summary}",
            d.actor.as_deref().unwrap_or("someone")
        ),
        EventKind::Resolved => match d.actor.as_deref() {
            Some(actor) => format!("Resolved by {actor}: {summary}"),
            None => format!("Resolved: {} is beating again", s.heartbeat_name),
        },
    };
    AlertEvent {
        schema_version: WEBHOOK_SCHEMA_VERSION,
        event_id: event_id(c),
        event: d.event,
        at: d.created_at,
        alert: AlertRef {
            id: a.alert_id,
            kind: a.kind,
            state: a.state,
            dedup_key: a.dedup_key.clone(),
            opened_at: a.created_at,
            actor: d.actor.clone(),
        },
        service: ServiceRef {
            id: s.id.0,
            name: s.heartbeat_name.clone(),
            service_name: s.service_name.clone(),
            environment: s.environment.clone(),
            team: s.team.clone(),
            priority: a.details.priority.unwrap_or(s.priority),
            runbook: s.runbook.clone(),
        },
        summary,
        url: public_url.map(|u| format!("{}/ui/alerts/{}", u.trim_end_matches('/'), a.alert_id)),
    }
}

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
    deliver: &dyn Deliver,
    settings: &DispatchSettings,
    clock: &Clock,
    c: ClaimedDelivery,
) {
    let event = event_for(&c, settings.public_url.as_deref());
    let channel = c.delivery.destination.channel();
    let outcome = deliver.deliver(&c.delivery.destination, &event).await;
    let result = result_for(&outcome, c.delivery.attempts, settings, clock.now());
    let label = match result.state {
        DeliveryState::Delivered => "delivered",
        DeliveryState::Pending => "retry",
        DeliveryState::Failed => "failed",
    };
    if result.state != DeliveryState::Pending {
        metrics::counter!("medic_notifications_total", "channel" => channel, "outcome" => label)
            .increment(1);
    }
    if result.state == DeliveryState::Delivered {
        let latency = (result.at.millis() - c.delivery.created_at.millis()).max(0);
        metrics::histogram!("medic_notification_delivery_seconds", "channel" => channel)
            .record(latency as f64 / 1000.0);
    } else {
        tracing::warn!(
            delivery = c.delivery.id,
            channel,
            outcome = label,
            error = result.error.as_deref().unwrap_or(""),
            "notification not delivered"
        );
    }
    if let Err(e) = store.finish_delivery(c.delivery.id, &result).await {
        // The lease runs out and the delivery is retried: a rare duplicate, never a loss.
        tracing::error!(delivery = c.delivery.id, error = %e, "could not record a delivery");
    }
}

/// Delivers the outbox until `shutdown`. Time is `clock`'s: a manual clock's advance wakes the
/// dispatcher to look for deliveries that became due.
pub async fn run_dispatcher(
    store: Arc<dyn Store>,
    deliver: Arc<dyn Deliver>,
    settings: DispatchSettings,
    outbox: Arc<OutboxSignal>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    tracing::info!("dispatcher started");
    let lease_ms = i64::try_from(settings.lease.as_millis()).unwrap_or(30_000);
    let mut ticks = clock.ticks();
    loop {
        let now = clock.now();
        let claimed = store
            .claim_deliveries(now, now.plus_millis(lease_ms), settings.batch)
            .await;
        let pause = match claimed {
            Ok(batch) if !batch.is_empty() => {
                let full = batch.len() >= settings.batch as usize;
                futures::stream::iter(batch)
                    .for_each_concurrent(settings.concurrency, |c| {
                        deliver_one(store.as_ref(), deliver.as_ref(), &settings, &clock, c)
                    })
                    .await;
                if full {
                    Duration::ZERO
                } else {
                    Duration::from_millis(1)
                }
            }
            Ok(_) => match store.next_delivery_at().await {
                Ok(next) => sleep_until(next, clock.now(), settings.max_sleep)
                    .max(Duration::from_millis(10)),
                Err(_) => settings.max_sleep,
            },
            Err(e) => {
                tracing::error!(error = %e, "claiming deliveries failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = outbox.0.notified() => {}
            () = tokio::time::sleep(pause) => {}
            () = ticks.advanced() => {}
        }
    }
    tracing::info!("dispatcher stopped");
}

/// Rows deleted per housekeeping statement: small, so no lock is held for long.
pub const PURGE_BATCH: u32 = 1000;

fn age_of(r: &Retention, t: PurgeTable) -> i64 {
    match t {
        PurgeTable::HeartbeatEvents => r.heartbeats_ms,
        PurgeTable::Deliveries | PurgeTable::ExecutionNotices => r.deliveries_ms,
        PurgeTable::ResolvedAlerts | PurgeTable::Suppressions => r.resolved_alerts_ms,
        PurgeTable::Snapshots => r.snapshots_ms,
        PurgeTable::AuditEntries => r.audit_ms,
    }
}

/// One housekeeping round: trims every table to its retention age, batch by batch, pausing
/// between batches so writers are never kept waiting. Returns the rows deleted per table.
pub async fn housekeep(
    store: &dyn Store,
    retention: &Retention,
    now: Timestamp,
    shutdown: &CancellationToken,
) -> Vec<(PurgeTable, u64)> {
    let mut out = Vec::new();
    for table in PurgeTable::ALL {
        let before = now.plus_millis(-age_of(retention, table));
        let mut total = 0;
        loop {
            match store.purge_batch(table, before, PURGE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(PURGE_BATCH) || shutdown.is_cancelled() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(table = table.as_str(), error = %e, "housekeeping failed");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if total > 0 {
            metrics::counter!("medic_housekeeping_deleted_total", "table" => table.as_str())
                .increment(total);
            tracing::info!(table = table.as_str(), deleted = total, "housekeeping");
        }
        out.push((table, total));
    }
    out
}

/// Runs [`housekeep`] every `every` of `clock`'s time until `shutdown` (first round one minute
/// after start).
pub async fn run_housekeeping(
    store: Arc<dyn Store>,
    retention: Retention,
    every: Duration,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let mut pause = Duration::from_secs(60).min(every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = clock.sleep(pause) => {}
        }
        housekeep(store.as_ref(), &retention, clock.now(), &shutdown).await;
        pause = every;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_end_in_failure_after_the_last_attempt() {
        let s = DispatchSettings::default();
        let at = Timestamp::from_millis(1_700_000_000_000);
        let retry = Outcome::Retry {
            status: Some(500),
            error: "boom".into(),
        };
        assert_eq!(result_for(&retry, 0, &s, at).state, DeliveryState::Pending);
        assert!(result_for(&retry, 0, &s, at).next_attempt_at.is_some());
        let last = i32::try_from(s.max_attempts).expect("small") - 1;
        assert_eq!(
            result_for(&retry, last, &s, at).state,
            DeliveryState::Failed
        );
        let failed = Outcome::Failed {
            status: Some(400),
            error: "bad".into(),
        };
        assert_eq!(result_for(&failed, 0, &s, at).state, DeliveryState::Failed);
    }
}
