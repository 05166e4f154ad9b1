//! Values crossing the store boundary. Plain data: no behaviour beyond small conversions.

use serde::{Deserialize, Serialize};

use crate::domain::monitor::PagingPeriod;
use crate::domain::schedule::{MaintenanceWindow, WorkingHours};
use crate::domain::{
    AlertKind, AlertState, ApiKeyId, HeartbeatName, Priority, RunStatus, Scopes, ScriptId,
    ServiceId, ServiceState, SignalKind, SnapshotAction, SnapshotId, TargetId, TeamId, Timestamp,
    WindowId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections (idle + in use).
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub entries: Vec<T>,
    /// Number of rows matching the filter, ignoring limit/offset.
    pub total_count: i64,
}

// ---- heartbeats -------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct NewHeartbeat {
    /// Case-folded heartbeat name ([`crate::domain::service::name_key`]).
    pub name_key: String,
    pub status: String,
    pub run_id: Option<String>,
    pub received_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeartbeatOutcome {
    Recorded {
        service_id: ServiceId,
        event_id: i64,
    },
    UnknownService,
    /// The service exists but is marked inactive; nothing was recorded.
    Inactive {
        heartbeat_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct HeartbeatQuery {
    pub service_id: Option<ServiceId>,
    /// Case-folded heartbeat name.
    pub name_key: Option<String>,
    /// Exact (case-insensitive) service name.
    pub service_name: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeartbeatRow {
    pub heartbeat_id: i64,
    pub service_id: ServiceId,
    pub heartbeat_name: String,
    pub service_name: String,
    pub status: String,
    pub run_id: Option<String>,
    pub time: Timestamp,
    pub team: String,
    pub priority: Priority,
}

// ---- job runs ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct JobSignal {
    pub service_id: ServiceId,
    pub kind: SignalKind,
    /// `None` on start: the store generates one. `None` on complete/fail: the newest running run
    /// of the service is finished (or a start-less run is recorded).
    pub run_id: Option<String>,
    pub exit_code: Option<i32>,
    pub body: Option<String>,
    pub body_truncated: bool,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRun {
    pub id: i64,
    pub service_id: ServiceId,
    pub run_id: String,
    pub status: RunStatus,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub body: Option<String>,
    pub body_truncated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobSignalOutcome {
    Recorded { service: Box<Service>, run: JobRun },
    UnknownService,
    Inactive { heartbeat_name: String },
}

// ---- services ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    pub at: Timestamp,
    pub until: Option<Timestamp>,
    pub reason: Option<String>,
}

/// A registered service, as stored. Also the payload of snapshots, so its serialized form is
/// stable across backends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: ServiceId,
    pub heartbeat_name: String,
    pub service_name: String,
    pub environment: Option<String>,
    pub active: bool,
    pub interval_seconds: i64,
    pub threshold: i32,
    pub grace_seconds: i64,
    pub team: String,
    pub priority: Priority,
    pub runbook: Option<String>,
    pub state: ServiceState,
    pub mute: Option<Mute>,
    pub max_duration_ms: Option<i64>,
    pub last_heartbeat_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// How the monitor watches the service beyond the interval (added with the monitor;
    /// snapshots taken before it read as the defaults).
    #[serde(default)]
    pub monitoring: Monitoring,
}

/// An expected schedule: a cron expression in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub cron: String,
    pub timezone: String,
}

/// The monitor's per-service settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitoring {
    /// Expected schedule instead of the fixed interval (the interval still sets the default
    /// re-notification cadence).
    #[serde(default)]
    pub schedule: Option<ScheduleSpec>,
    /// Re-notify an open, unacknowledged alert this often; `None`: every interval; 0: never.
    #[serde(default)]
    pub renotify_seconds: Option<i64>,
    /// While this service's parent has an open alert, this service's alerts fold into it.
    #[serde(default)]
    pub parent_id: Option<ServiceId>,
    /// Open a `job_failed` alert when a run fails.
    #[serde(default = "yes")]
    pub alert_on_failure: bool,
}

fn yes() -> bool {
    true
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            schedule: None,
            renotify_seconds: None,
            parent_id: None,
            alert_on_failure: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewService {
    pub heartbeat_name: HeartbeatName,
    pub service_name: String,
    pub environment: Option<String>,
    pub interval_seconds: i64,
    pub threshold: i32,
    pub grace_seconds: i64,
    pub team: String,
    pub priority: Priority,
    pub runbook: Option<String>,
    pub max_duration_ms: Option<i64>,
    pub monitoring: Monitoring,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    Created(Service),
    /// A service with the same case-folded name already exists; nothing changed.
    Exists(Service),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceFilter {
    /// Case-insensitive substring of the heartbeat name.
    pub name_contains: Option<String>,
    /// Exact, case-insensitive service name.
    pub service_name: Option<String>,
    /// Exact, case-insensitive team.
    pub team: Option<String>,
    pub active: Option<bool>,
    pub muted: Option<bool>,
    pub state: Option<ServiceState>,
    pub priority: Option<Priority>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MuteChange {
    Mute {
        until: Option<Timestamp>,
        reason: Option<String>,
    },
    Unmute,
}

/// Fields to change; `None` leaves a field as it is. `Some(None)` clears an optional field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServicePatch {
    pub heartbeat_name: Option<HeartbeatName>,
    pub service_name: Option<String>,
    pub active: Option<bool>,
    pub interval_seconds: Option<i64>,
    pub threshold: Option<i32>,
    pub grace_seconds: Option<i64>,
    pub team: Option<String>,
    pub priority: Option<Priority>,
    pub runbook: Option<Option<String>>,
    pub max_duration_ms: Option<Option<i64>>,
    pub state: Option<ServiceState>,
    pub mute: Option<MuteChange>,
    pub schedule: Option<Option<ScheduleSpec>>,
    pub renotify_seconds: Option<Option<i64>>,
    pub parent_id: Option<Option<ServiceId>>,
    pub alert_on_failure: Option<bool>,
}

impl ServicePatch {
    /// Applies the patch to a copy of `s` (the stores persist the result).
    pub fn apply(&self, s: &Service, at: Timestamp) -> Service {
        let mut out = s.clone();
        if let Some(n) = &self.heartbeat_name {
            out.heartbeat_name = n.as_str().to_owned();
        }
        if let Some(v) = &self.service_name {
            out.service_name.clone_from(v);
        }
        if let Some(v) = self.active {
            out.active = v;
        }
        if let Some(v) = self.interval_seconds {
            out.interval_seconds = v;
        }
        if let Some(v) = self.threshold {
            out.threshold = v;
        }
        if let Some(v) = self.grace_seconds {
            out.grace_seconds = v;
        }
        if let Some(v) = &self.team {
            out.team.clone_from(v);
        }
        if let Some(v) = self.priority {
            out.priority = v;
        }
        if let Some(v) = &self.runbook {
            out.runbook.clone_from(v);
        }
        if let Some(v) = self.max_duration_ms {
            out.max_duration_ms = v;
        }
        if let Some(v) = self.state {
            out.state = v;
        }
        if let Some(v) = &self.schedule {
            out.monitoring.schedule.clone_from(v);
        }
        if let Some(v) = self.renotify_seconds {
            out.monitoring.renotify_seconds = v;
        }
        if let Some(v) = self.parent_id {
            out.monitoring.parent_id = v;
        }
        if let Some(v) = self.alert_on_failure {
            out.monitoring.alert_on_failure = v;
        }
        match &self.mute {
            Some(MuteChange::Mute { until, reason }) => {
                out.mute = Some(Mute {
                    at,
                    until: *until,
                    reason: reason.clone(),
                });
            }
            Some(MuteChange::Unmute) => out.mute = None,
            None => {}
        }
        out.updated_at = at;
        out
    }
}

/// Who changed something, when, and how the snapshot is labelled.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeMeta {
    pub action: SnapshotAction,
    pub actor: String,
    pub at: Timestamp,
}

// ---- snapshots --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub snapshot_id: SnapshotId,
    pub service_id: ServiceId,
    pub action_type: SnapshotAction,
    /// The service as it was before the change.
    pub snapshot_data: Service,
    pub actor: String,
    pub created_at: Timestamp,
    pub restored_at: Option<Timestamp>,
    pub restored_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotFilter {
    pub service_id: Option<ServiceId>,
    pub action_type: Option<SnapshotAction>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

// Returned once per restore, never stored in bulk: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreOutcome {
    Restored(Service),
    NotFound,
    AlreadyRestored,
    /// Another live service now holds the snapshot's name.
    NameTaken,
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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub alert_id: i64,
    pub service_id: ServiceId,
    pub kind: AlertKind,
    pub alert_name: String,
    pub state: AlertState,
    pub dedup_key: String,
    pub external_reference_id: Option<String>,
    pub alert_cycle: i32,
    pub created_at: Timestamp,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    #[serde(flatten)]
    pub details: super::AlertDetails,
}

// ---- API keys ---------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub digest: [u8; 32],
    pub scopes: Scopes,
    pub expires_at: Option<Timestamp>,
    pub rate_limit_per_minute: Option<u32>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    /// Written in the same transaction as the key.
    pub audit: Option<NewAuditEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    pub digest: Vec<u8>,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub rate_limit_per_minute: Option<u32>,
    pub created_by: Option<String>,
}

// ---- audit log --------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub action_type: String,
    pub actor: String,
    pub service_id: Option<ServiceId>,
    pub execution_id: Option<i64>,
    pub details: serde_json::Value,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub action_type: String,
    pub actor: String,
    pub service_id: Option<ServiceId>,
    pub execution_id: Option<i64>,
    pub details: serde_json::Value,
    pub timestamp: Timestamp,
}

/// Builds a change's audit entry from the row the change produced; the store writes it in the
/// change's own transaction.
pub type AuditWith<'a, T> = &'a (dyn Fn(&T) -> NewAuditEntry + Sync);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditFilter {
    pub execution_id: Option<i64>,
    pub service_id: Option<ServiceId>,
    pub action_type: Option<String>,
    pub actor: Option<String>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

// ---- teams, notification targets, maintenance windows -----------------------------------------

/// A team: who is paged for the services whose `team` matches its name (case-insensitively).
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    /// `None`: the team has no working hours (every moment counts as inside them).
    pub working_hours: Option<WorkingHours>,
    pub slack_channel: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTeam {
    pub name: String,
    pub working_hours: Option<WorkingHours>,
    pub slack_channel: Option<String>,
    pub at: Timestamp,
}

/// Fields to change; `None` leaves a field as it is, `Some(None)` clears an optional one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TeamPatch {
    pub name: Option<String>,
    pub working_hours: Option<Option<WorkingHours>>,
    pub slack_channel: Option<Option<String>>,
}

impl TeamPatch {
    /// Applies the patch to a copy of `t` (the stores persist the result).
    pub fn apply(&self, t: &Team, at: Timestamp) -> Team {
        let mut out = t.clone();
        if let Some(n) = &self.name {
            out.name.clone_from(n);
        }
        if let Some(h) = &self.working_hours {
            out.working_hours.clone_from(h);
        }
        if let Some(c) = &self.slack_channel {
            out.slack_channel.clone_from(c);
        }
        out.updated_at = at;
        out
    }
}

/// What a notification target belongs to: exactly one team or one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetOwner {
    Team(TeamId),
    Service(ServiceId),
}

/// Where and how a target is notified. Serialized (tagged by `kind`) into the `config` column;
/// secrets are stored as given and masked by the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetConfig {
    Slack { channel: String },
    Pagerduty { routing_key: String },
    Webhook { url: String, secret: String },
}

impl TargetConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Pagerduty { .. } => "pagerduty",
            Self::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationTarget {
    pub id: TargetId,
    pub owner: TargetOwner,
    pub config: TargetConfig,
    /// Lower numbers are notified first.
    pub priority: i32,
    pub period: PagingPeriod,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewTarget {
    pub owner: TargetOwner,
    pub config: TargetConfig,
    pub priority: i32,
    pub period: PagingPeriod,
    pub enabled: bool,
    pub at: Timestamp,
}

/// Fields to change; the owner never changes. A new `config` must keep the target's kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetPatch {
    pub config: Option<TargetConfig>,
    pub priority: Option<i32>,
    pub period: Option<PagingPeriod>,
    pub enabled: Option<bool>,
}

impl TargetPatch {
    /// Applies the patch to a copy of `t` (the stores persist the result).
    pub fn apply(&self, t: &NotificationTarget, at: Timestamp) -> NotificationTarget {
        let mut out = t.clone();
        if let Some(c) = &self.config {
            out.config = c.clone();
        }
        if let Some(p) = self.priority {
            out.priority = p;
        }
        if let Some(p) = self.period {
            out.period = p;
        }
        if let Some(e) = self.enabled {
            out.enabled = e;
        }
        out.updated_at = at;
        out
    }
}

/// Which targets to list: `None` for both lists every target.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TargetFilter {
    pub team: Option<TeamId>,
    pub service: Option<ServiceId>,
}

/// What a maintenance window silences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowScope {
    Service(ServiceId),
    Team(TeamId),
    Global,
}

impl WindowScope {
    pub fn kind(self) -> ScopeKind {
        match self {
            Self::Service(_) => ScopeKind::Service,
            Self::Team(_) => ScopeKind::Team,
            Self::Global => ScopeKind::Global,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service(_) => "service",
            Self::Team(_) => "team",
            Self::Global => "global",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceWindowRecord {
    pub id: WindowId,
    pub scope: WindowScope,
    pub window: MaintenanceWindow,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewWindow {
    pub scope: WindowScope,
    pub window: MaintenanceWindow,
    pub reason: Option<String>,
    pub created_by: String,
    pub at: Timestamp,
}

/// Which scope kind a window listing is restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Service,
    Team,
    Global,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Team => "team",
            Self::Global => "global",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "service" => Some(Self::Service),
            "team" => Some(Self::Team),
            "global" => Some(Self::Global),
            _ => None,
        }
    }
}

/// Filters combine with AND. Results are ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowFilter {
    pub scope: Option<ScopeKind>,
    pub service: Option<ServiceId>,
    pub team: Option<TeamId>,
    /// Only windows active at this instant.
    pub active_at: Option<Timestamp>,
}

impl WindowFilter {
    /// Whether `w` passes the filter (the stores narrow in SQL first, then apply this, since a
    /// recurring window's activity needs its cron schedule).
    pub fn matches(&self, w: &MaintenanceWindowRecord) -> bool {
        let scope_ok = self.scope.is_none_or(|k| w.scope.kind() == k);
        let service_ok = self
            .service
            .is_none_or(|s| w.scope == WindowScope::Service(s));
        let team_ok = self.team.is_none_or(|t| w.scope == WindowScope::Team(t));
        let active_ok = self.active_at.is_none_or(|t| w.window.is_active(t));
        scope_ok && service_ok && team_ok && active_ok
    }
}

/// The bounds stored beside a window's spec: `Some` for one-time windows only.
pub fn one_time_bounds(w: &MaintenanceWindow) -> Option<(Timestamp, Timestamp)> {
    match w {
        MaintenanceWindow::OneTime { starts_at, ends_at } => Some((*starts_at, *ends_at)),
        MaintenanceWindow::Recurring { .. } => None,
    }
}

// ---- scripts ----------------------------------------------------------------------------------

pub use medic_protocol::Interpreter;

/// The interpreter named `s` on the wire (`bash`, `sh`, `python3`).
pub fn parse_interpreter(s: &str) -> Option<Interpreter> {
    [Interpreter::Bash, Interpreter::Sh, Interpreter::Python3]
        .into_iter()
        .find(|i| i.as_str() == s)
}

/// Where a script version stands in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptStatus {
    Pending,
    Approved,
    Rejected,
}

impl ScriptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A registration: the named script's next version, unless its content equals the latest's.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScriptVersion {
    /// Already validated with [`medic_protocol::validate::validate_script_name`].
    pub name: String,
    pub interpreter: Interpreter,
    pub content: String,
    /// SHA-256 of `content`, 64 lowercase hex digits.
    pub sha256: String,
    pub description: Option<String>,
    pub created_by: String,
    /// `None` for the bootstrap admin key.
    pub created_by_key: Option<ApiKeyId>,
    pub at: Timestamp,
    /// Written in the same transaction when a version is created (not when the content is
    /// unchanged); the store adds the new version's `script_id` and `version` to its details.
    pub audit: Option<NewAuditEntry>,
}

impl NewScriptVersion {
    /// The audit entry to write for the version this registration `created`, if any.
    pub fn audit_for(&self, created: &ScriptVersion) -> Option<NewAuditEntry> {
        let mut entry = self.audit.clone()?;
        if let Some(details) = entry.details.as_object_mut() {
            details.insert("script_id".to_owned(), serde_json::json!(created.script_id));
            details.insert("version".to_owned(), serde_json::json!(created.version));
        }
        Some(entry)
    }
}

/// One version of a script.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptVersion {
    pub id: i64,
    pub script_id: ScriptId,
    pub version: i32,
    pub interpreter: Interpreter,
    pub content: String,
    pub sha256: String,
    pub description: Option<String>,
    pub status: ScriptStatus,
    pub created_by: String,
    pub created_by_key: Option<ApiKeyId>,
    pub created_at: Timestamp,
    pub decided_by: Option<String>,
    pub decided_by_key: Option<ApiKeyId>,
    pub decided_at: Option<Timestamp>,
    pub decision_reason: Option<String>,
}

/// A script with its versions, oldest first ([`Store::list_scripts`] gives only the latest).
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub id: ScriptId,
    pub name: String,
    pub created_at: Timestamp,
    pub versions: Vec<ScriptVersion>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RegisterOutcome {
    /// A new version (of a new or existing script).
    Created {
        name: String,
        version: ScriptVersion,
    },
    /// The content hashes like the latest version's: that version, unchanged.
    Unchanged {
        name: String,
        version: ScriptVersion,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScriptFilter {
    /// Status of each script's latest version.
    pub status: Option<ScriptStatus>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn status(self) -> ScriptStatus {
        match self {
            Self::Approve => ScriptStatus::Approved,
            Self::Reject => ScriptStatus::Rejected,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScriptDecision {
    pub decision: Decision,
    pub actor: String,
    /// `None` for the bootstrap admin key, which counts as a key of its own.
    pub key_id: Option<ApiKeyId>,
    pub reason: Option<String>,
    pub at: Timestamp,
    /// Written in the same transaction when the decision is made.
    pub audit: Option<NewAuditEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DecideOutcome {
    Decided(ScriptVersion),
    /// Approved or rejected before; unchanged.
    AlreadyDecided(ScriptVersion),
    NotFound,
    /// The deciding key registered the version; unchanged.
    SameKey,
}
