//! Services, heartbeats and job runs: the values crossing the store boundary and
//! [`ServiceStore`]. SQL in `shared/services.rs`, and in `sqlite/services.rs` and
//! `postgres/services.rs` where the backends differ.

use super::*;
use crate::domain::{
    HeartbeatName, Priority, RunStatus, ServiceId, ServiceState, SignalKind, SnapshotAction,
    SnapshotId, Timestamp,
};

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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HeartbeatRow {
    #[sqlx(rename = "id")]
    pub heartbeat_id: i64,
    pub service_id: ServiceId,
    pub heartbeat_name: String,
    pub service_name: String,
    pub status: String,
    pub run_id: Option<String>,
    #[sqlx(rename = "received_at")]
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

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq)]
pub struct Mute {
    pub at: Timestamp,
    pub until: Option<Timestamp>,
    pub reason: Option<String>,
}

/// A registered service, as stored. Snapshots keep it in the form `records.rs` fixes.
#[derive(Debug, Clone, PartialEq)]
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
    /// How the monitor watches the service beyond the interval.
    pub monitoring: Monitoring,
}

/// An expected schedule: a cron expression in an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub cron: String,
    pub timezone: String,
}

/// The monitor's per-service settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitoring {
    /// Expected schedule instead of the fixed interval (the interval still sets the default
    /// re-notification cadence).
    pub schedule: Option<ScheduleSpec>,
    /// Re-notify an open, unacknowledged alert this often; `None`: every interval; 0: never.
    pub renotify_seconds: Option<i64>,
    /// While this service's parent has an open alert, this service's alerts fold into it.
    pub parent_id: Option<ServiceId>,
    /// Open a `job_failed` alert when a run fails.
    pub alert_on_failure: bool,
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
    pub actor: Actor,
    pub at: Timestamp,
}

/// Services, their heartbeats and their job runs.
#[async_trait::async_trait]
pub trait ServiceStore: Send + Sync {
    // ---- heartbeats -------------------------------------------------------------------------

    /// Durably records a batch of heartbeats in one transaction and returns one outcome per
    /// input, in order. Unknown or inactive services are reported, not recorded.
    async fn record_heartbeats(&self, batch: &[NewHeartbeat])
    -> StoreResult<Vec<HeartbeatOutcome>>;
    /// Newest first.
    async fn list_heartbeats(&self, query: &HeartbeatQuery) -> StoreResult<Vec<HeartbeatRow>>;

    // ---- job runs ---------------------------------------------------------------------------

    /// Records a start/complete/fail signal (and the heartbeat it counts as) in one transaction.
    async fn record_job_signal(&self, signal: &JobSignal) -> StoreResult<JobSignalOutcome>;
    /// Durations (ms) of the most recent `limit` finished runs that have a duration.
    async fn recent_run_durations(&self, service: ServiceId, limit: u32) -> StoreResult<Vec<i64>>;
    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>>;

    // ---- services ---------------------------------------------------------------------------

    /// Creates a service, or returns the existing one with the same (case-folded) name.
    async fn create_service(&self, new: &NewService) -> StoreResult<CreateOutcome>;
    async fn get_service(&self, id: ServiceId) -> StoreResult<Option<Service>>;
    async fn find_service(&self, name_key: &str) -> StoreResult<Option<Service>>;
    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Service>>;
    /// Takes a snapshot of the current row and applies `patch`, in one transaction. `None` when
    /// the service does not exist. A rename onto an existing name is a [`StoreError::Conflict`].
    async fn update_service(
        &self,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>>;
    /// Snapshots and soft-deletes a service. `None` when it does not exist.
    async fn delete_service(&self, id: ServiceId, actor: &Actor)
    -> StoreResult<Option<SnapshotId>>;
}

/// The columns a [`Service`] is read from.
pub(super) const SERVICE_COLUMNS: &str = "id, heartbeat_name, service_name, environment, active, \
    interval_seconds, threshold, grace_seconds, team, priority, runbook, state, muted_at, \
    muted_until, mute_reason, max_duration_ms, last_heartbeat_at, created_at, updated_at, \
    schedule, schedule_tz, renotify_seconds, parent_id, alert_on_failure";

/// A `services` row ([`SERVICE_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(super) struct ServiceRow {
    id: ServiceId,
    heartbeat_name: String,
    service_name: String,
    environment: Option<String>,
    active: bool,
    interval_seconds: i64,
    threshold: i32,
    grace_seconds: i64,
    team: String,
    priority: Priority,
    runbook: Option<String>,
    state: ServiceState,
    muted_at: Option<Timestamp>,
    muted_until: Option<Timestamp>,
    mute_reason: Option<String>,
    max_duration_ms: Option<i64>,
    last_heartbeat_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
    schedule: Option<String>,
    schedule_tz: Option<String>,
    renotify_seconds: Option<i64>,
    parent_id: Option<ServiceId>,
    alert_on_failure: bool,
}

impl From<ServiceRow> for Service {
    fn from(r: ServiceRow) -> Self {
        Self {
            id: r.id,
            heartbeat_name: r.heartbeat_name,
            service_name: r.service_name,
            environment: r.environment,
            active: r.active,
            interval_seconds: r.interval_seconds,
            threshold: r.threshold,
            grace_seconds: r.grace_seconds,
            team: r.team,
            priority: r.priority,
            runbook: r.runbook,
            state: r.state,
            mute: r.muted_at.map(|at| Mute {
                at,
                until: r.muted_until,
                reason: r.mute_reason,
            }),
            max_duration_ms: r.max_duration_ms,
            last_heartbeat_at: r.last_heartbeat_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            monitoring: Monitoring {
                schedule: r.schedule.map(|cron| ScheduleSpec {
                    cron,
                    timezone: r.schedule_tz.unwrap_or_else(|| "UTC".to_owned()),
                }),
                renotify_seconds: r.renotify_seconds,
                parent_id: r.parent_id,
                alert_on_failure: r.alert_on_failure,
            },
        }
    }
}
sql::from_row_via!(Service, ServiceRow);
