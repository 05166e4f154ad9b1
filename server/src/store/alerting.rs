//! Values crossing the store boundary for the monitor, alerts and the notification outbox.

use std::collections::HashMap;

use super::*;
use crate::domain::{
    AlertKind, AlertState, Destination, EventKind, Priority, RunStatus, ServiceId, TargetId,
    Timestamp,
};

/// An alert's extra columns (added with the monitor), read with every alert.
#[derive(Debug, Clone, PartialEq, Default, sqlx::FromRow)]
pub struct AlertDetails {
    pub priority: Option<Priority>,
    pub team: Option<String>,
    pub down_since: Option<Timestamp>,
    pub last_notified_at: Option<Timestamp>,
    pub acknowledged_by: Option<String>,
    pub resolved_by: Option<String>,
    pub resolve_reason: Option<String>,
    pub run_id: Option<String>,
    pub summary: Option<String>,
}

/// The live heartbeat alert of a service, as the monitor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveAlert {
    pub id: i64,
    pub state: AlertState,
    pub created_at: Timestamp,
    pub last_notified_at: Option<Timestamp>,
}

/// A service whose deadline has passed, with what judging it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DueService {
    pub service: Service,
    pub deadline_at: Option<Timestamp>,
    /// The newest heartbeats (at most `threshold` of them), newest first.
    pub recent_beats: Vec<Timestamp>,
    /// The open or acknowledged `heartbeat_missing` alert, if any.
    pub live_alert: Option<LiveAlert>,
    /// The dedup key of the newest `heartbeat_missing` alert in any state (an incident an
    /// operator resolved by hand is not opened again).
    pub last_incident_key: Option<String>,
    /// The service's running job runs and its latest finished one.
    pub runs: Vec<RunView>,
    /// Live job alerts, and any job or refusal alert about one of `runs` or `refusals`.
    pub job_alerts: Vec<JobAlertView>,
    /// Runs the service's agent (an `agent:<id>` service) refused in the last day for a reason
    /// that raises an alert, newest first.
    pub refusals: Vec<RefusalView>,
}

/// Heartbeat names of the services agents beat on are this prefix and the agent id.
pub const AGENT_SERVICE_PREFIX: &str = "agent:";

/// A run an agent refused, as the monitor needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalView {
    pub run_id: String,
    pub agent_id: String,
    pub script: String,
    pub reason: String,
    pub detail: Option<String>,
    pub at: Timestamp,
}

/// A job run, as the monitor needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

/// A `job_failed` or `job_overdue` alert, as the monitor needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobAlertView {
    pub id: i64,
    pub kind: AlertKind,
    pub run_id: Option<String>,
    pub state: AlertState,
    pub dedup_key: String,
}

/// What a monitor pass reads once, in its transaction, besides the due services.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MonitorContext {
    pub teams: Vec<Team>,
    /// Enabled targets only, ordered by priority then id.
    pub targets: Vec<NotificationTarget>,
    /// Recurring windows and one-time windows that ended less than a day ago or later.
    pub windows: Vec<MaintenanceWindowRecord>,
    /// Services (among all) whose state is `down` with a live alert: the possible parents.
    pub down_parents: Vec<(ServiceId, i64)>,
}

/// One notification to queue: where, and for which target (`None`: deployment defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub target_id: Option<TargetId>,
    pub destination: Destination,
}

/// What to do with the alert of a judged service.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOp {
    Open {
        kind: AlertKind,
        name: String,
        dedup_key: String,
        priority: Priority,
        team: String,
        down_since: Timestamp,
        summary: String,
        /// The job run a job alert is about.
        run_id: Option<String>,
        notify: Vec<Routed>,
    },
    Renotify {
        alert_id: i64,
        notify: Vec<Routed>,
    },
    /// Closes the alert and tells everyone who was told it opened.
    Resolve {
        alert_id: i64,
        reason: String,
    },
}

/// An alert held back: recorded once per incident and reason.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSuppression {
    pub kind: AlertKind,
    pub reason: SuppressionReason,
    pub incident_key: String,
    pub parent_alert_id: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuppressionReason {
    Maintenance,
    Muted,
    Parent,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maintenance => "maintenance",
            Self::Muted => "muted",
            Self::Parent => "parent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "maintenance" => Some(Self::Maintenance),
            "muted" => Some(Self::Muted),
            "parent" => Some(Self::Parent),
            _ => None,
        }
    }
}

/// The monitor's verdict on one due service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// The state to store; `None` keeps it.
    pub state: Option<crate::domain::ServiceState>,
    /// The next moment to look; `None` waits for a heartbeat or an operator.
    pub deadline_at: Option<Timestamp>,
    pub alerts: Vec<AlertOp>,
    pub suppressions: Vec<NewSuppression>,
}

/// Judges one due service (pure; called inside the pass's transaction).
pub type Judge<'a> = dyn Fn(&MonitorContext, &DueService) -> Verdict + Send + Sync + 'a;

/// An alert a monitor pass just opened or escalated (re-notified), as alert triggers see it.
#[derive(Debug, Clone)]
pub struct TriggeringAlert<'a> {
    pub alert_id: i64,
    pub service: &'a Service,
    pub kind: AlertKind,
    /// Real consecutive failures: missed heartbeat intervals since the last heartbeat, or
    /// consecutive failed job runs; 1 for an overdue job or a refused run.
    pub consecutive_failures: u32,
    /// When each playbook last fired an alert execution for this service.
    pub last_fired: &'a HashMap<i64, Timestamp>,
    /// Playbooks that already fired for this alert (at most once per incident).
    pub fired_for_alert: &'a [i64],
    pub now: Timestamp,
}

/// Builds an alert execution's first state (an owned [`BuildExecution`]).
pub type OwnedBuild = Box<dyn Fn(i64, &RecentStarts) -> ExecutionWrite + Send + Sync>;

/// An execution an alert trigger starts, built inside the pass's transaction.
pub struct TriggeredStart {
    pub new: NewExecution,
    /// Where the circuit breaker's window starts.
    pub window_from: Timestamp,
    pub build: OwnedBuild,
}

/// The alert triggers a monitor pass evaluates each time it opens or escalates an alert; the
/// executions they give are inserted in the pass's transaction.
pub trait AlertTriggers: Send + Sync {
    /// Whether any trigger exists at all (a pass without any skips the lookups).
    fn is_empty(&self) -> bool;
    fn fire(&self, alert: &TriggeringAlert<'_>) -> Vec<TriggeredStart>;
}

/// No alert triggers.
pub struct NoTriggers;

impl AlertTriggers for NoTriggers {
    fn is_empty(&self) -> bool {
        true
    }
    fn fire(&self, _: &TriggeringAlert<'_>) -> Vec<TriggeredStart> {
        Vec::new()
    }
}

/// Real consecutive failures behind a `heartbeat_missing` alert at `now`: whole intervals
/// (after the grace period) since the last heartbeat, or since registration; at least 1.
pub fn missed_intervals(service: &Service, now: Timestamp) -> u32 {
    let since = service.last_heartbeat_at.unwrap_or(service.created_at);
    let interval = service.interval_seconds.max(1) * 1000;
    let late = now.millis() - since.millis() - service.grace_seconds.max(0) * 1000;
    u32::try_from((late / interval).max(1)).unwrap_or(u32::MAX)
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PassReport {
    pub examined: usize,
    /// (kind, priority, team, due) of every alert opened; `due` is when it became due (the
    /// later of the service's down time and the deadline the pass woke for).
    pub opened: Vec<(AlertKind, Priority, String, Timestamp)>,
    pub renotified: usize,
    pub resolved: usize,
    pub suppressed: Vec<SuppressionReason>,
    /// Executions alert triggers started.
    pub executions_started: usize,
    /// The earliest deadline left after the pass (any service, also ones not due).
    pub next_deadline: Option<Timestamp>,
}

// ---- the outbox -------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A row of the delivery log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: i64,
    pub alert_id: i64,
    pub target_id: Option<TargetId>,
    pub event: EventKind,
    pub destination: Destination,
    pub actor: Option<String>,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: Timestamp,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub external_ref: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A delivery a dispatcher has leased, with the alert and service it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub delivery: DeliveryRecord,
    pub alert: Alert,
    pub service: Service,
}

/// How an attempt ended, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryResult {
    pub at: Timestamp,
    pub state: DeliveryState,
    /// For `Pending`: when to try again.
    pub next_attempt_at: Option<Timestamp>,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub external_ref: Option<String>,
}

/// Filters for `GET /v2/alerts` (AND-combined). Newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertFilter {
    pub states: Vec<AlertState>,
    pub kind: Option<AlertKind>,
    pub service: Option<ServiceId>,
    /// Case-insensitive.
    pub team: Option<String>,
    pub priority: Option<Priority>,
    pub since: Option<Timestamp>,
}

/// What an operator's acknowledge or resolve did.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    NotFound,
    /// Already in (or past) the requested state.
    Unchanged(Alert),
    Changed(Alert),
}

/// Open alerts by (priority, team), for the gauge.
pub type OpenAlertCounts = Vec<(Option<Priority>, Option<String>, i64)>;

/// Retention ages for housekeeping (milliseconds); each table is trimmed in small batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub heartbeats_ms: i64,
    pub deliveries_ms: i64,
    pub resolved_alerts_ms: i64,
    pub snapshots_ms: i64,
    pub audit_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: i64 = 86_400_000;
        Self {
            heartbeats_ms: 30 * DAY,
            deliveries_ms: 90 * DAY,
            resolved_alerts_ms: 90 * DAY,
            snapshots_ms: 90 * DAY,
            audit_ms: 90 * DAY,
        }
    }
}

/// What housekeeping trims, oldest rows first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeTable {
    /// `heartbeat_events` received before the cutoff.
    HeartbeatEvents,
    /// Finished (delivered or failed) deliveries created before the cutoff.
    Deliveries,
    /// Alerts resolved before the cutoff, with their deliveries.
    ResolvedAlerts,
    /// Alert suppression records created before the cutoff.
    Suppressions,
    Snapshots,
    AuditEntries,
    /// Finished playbook notices created before the cutoff (the deliveries' retention).
    ExecutionNotices,
}

impl PurgeTable {
    pub const ALL: [Self; 7] = [
        Self::HeartbeatEvents,
        Self::Deliveries,
        Self::ResolvedAlerts,
        Self::Suppressions,
        Self::Snapshots,
        Self::AuditEntries,
        Self::ExecutionNotices,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeartbeatEvents => "heartbeat_events",
            Self::Deliveries => "deliveries",
            Self::ResolvedAlerts => "alerts",
            Self::Suppressions => "alert_suppressions",
            Self::Snapshots => "snapshots",
            Self::AuditEntries => "audit_log",
            Self::ExecutionNotices => "execution_notices",
        }
    }

    /// The statements deleting one batch (`?1`/`$1`: cutoff, `?2`/`$2`: batch size), for the
    /// backends to run in order in one short transaction; the last one's row count is the
    /// batch's. Placeholders are written `$1`/`$2`; SQLite accepts them too.
    pub fn statements(self) -> &'static [&'static str] {
        match self {
            Self::HeartbeatEvents => &[
                "DELETE FROM heartbeat_events WHERE id IN (SELECT id FROM heartbeat_events \
                 WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
            ],
            Self::Deliveries => &[
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                 WHERE state <> 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2)",
            ],
            Self::ResolvedAlerts => &[
                "DELETE FROM deliveries WHERE state <> 'pending' AND alert_id IN (SELECT id FROM alerts \
                 WHERE state = 'resolved' AND resolved_at < $1 ORDER BY resolved_at LIMIT $2)",
                "DELETE FROM alerts WHERE id IN (SELECT id FROM alerts a WHERE state = 'resolved' \
                 AND resolved_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                 WHERE d.alert_id = a.id) ORDER BY resolved_at LIMIT $2)",
            ],
            Self::Suppressions => &[
                "DELETE FROM alert_suppressions WHERE id IN (SELECT id FROM \
                 alert_suppressions WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
            ],
            Self::Snapshots => &[
                "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
            ],
            Self::AuditEntries => &[
                "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log \
                 WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
            ],
            Self::ExecutionNotices => &[
                "DELETE FROM execution_notices WHERE id IN (SELECT id FROM execution_notices \
                 WHERE state <> 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2)",
            ],
        }
    }
}

// ---- alerts -----------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub service_id: ServiceId,
    pub kind: AlertKind,
    pub name: String,
    pub dedup_key: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Alert {
    #[sqlx(rename = "id")]
    pub alert_id: i64,
    pub service_id: ServiceId,
    pub kind: AlertKind,
    #[sqlx(rename = "name")]
    pub alert_name: String,
    pub state: AlertState,
    pub dedup_key: String,
    pub external_reference_id: Option<String>,
    pub alert_cycle: i32,
    pub created_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    #[sqlx(flatten)]
    pub details: AlertDetails,
}

/// Alerts, the monitor pass that opens and closes them, and the notification outbox.
#[async_trait::async_trait]
pub trait AlertStore: Send + Sync {
    // ---- alerts -----------------------------------------------------------------------------

    /// Opens an alert for a service.
    async fn open_alert(&self, new: &NewAlert) -> StoreResult<Alert>;
    /// Newest first. `active`: only open/acknowledged (`true`) or only resolved (`false`).
    async fn list_alerts(&self, active: Option<bool>, limit: u32) -> StoreResult<Vec<Alert>>;
    async fn get_alert(&self, id: i64) -> StoreResult<Option<Alert>>;
    async fn list_alerts_filtered(
        &self,
        filter: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>>;
    /// Open → acknowledged, queueing an `acknowledged` notification to every destination the
    /// alert's trigger went to, in one transaction.
    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange>;
    /// Open or acknowledged → resolved, queueing `resolved` notifications likewise. The monitor
    /// does not open the same incident again.
    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange>;
    /// Live (open or acknowledged) alerts by priority and team, counted by the database.
    async fn open_alert_counts(&self) -> StoreResult<OpenAlertCounts>;

    // ---- monitor ----------------------------------------------------------------------------

    /// One monitor pass, in one transaction: takes up to `limit` live services whose deadline
    /// is at or before `now` (on PostgreSQL skipping rows another replica holds, so each due
    /// service is judged by exactly one process), reads the [`MonitorContext`], judges each
    /// with `judge`, and writes states, deadlines, alert changes, suppressions and outbox rows.
    async fn monitor_pass(
        &self,
        now: Timestamp,
        limit: u32,
        judge: &Judge<'_>,
    ) -> StoreResult<PassReport> {
        self.monitor_pass_triggering(now, limit, judge, &NoTriggers)
            .await
    }
    /// [`AlertStore::monitor_pass`], also inserting the executions `triggers` start for each
    /// alert the pass opens or re-notifies, in the same transaction (at most one per playbook
    /// and alert).
    async fn monitor_pass_triggering(
        &self,
        now: Timestamp,
        limit: u32,
        judge: &Judge<'_>,
        triggers: &dyn AlertTriggers,
    ) -> StoreResult<PassReport>;
    /// The earliest deadline of any live service.
    async fn next_deadline(&self) -> StoreResult<Option<Timestamp>>;

    // ---- notification outbox ----------------------------------------------------------------

    /// Leases up to `limit` pending deliveries that are due and not leased by a live
    /// dispatcher (a crashed dispatcher's lease runs out at `lease_until`).
    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;
    /// Records an attempt's outcome and releases the lease; a delivered `triggered` or
    /// `renotified` event also stamps the alert's `last_notified_at` and external reference.
    async fn finish_delivery(&self, id: i64, result: &DeliveryResult) -> StoreResult<()>;
    /// The delivery log of one target, newest first.
    async fn list_deliveries(
        &self,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>>;
    /// When the next pending delivery is due (now or later), if any.
    async fn next_delivery_at(&self) -> StoreResult<Option<Timestamp>>;
}
