//! Persistence.
//!
//! This module owns every byte of SQL in Medic. [`Store`] is the one storage trait, with
//! use-case-sized methods; [`sqlite`] and [`postgres`] implement it, each with its own
//! migrations (same version numbers) under `server/migrations/<backend>/`. The backend is chosen
//! by the scheme of `DATABASE_URL` ([`connect`]). Each method owns its transaction: a method
//! either does all of its writes or none.
//!
//! Nothing outside this module names `sqlx`. The store never decides policy (whether a service
//! is down, who may do what); it records what it is told and answers queries.

mod agents;
mod alerting;
pub mod batch;
pub mod postgres;
mod runs;
mod sql;
pub mod sqlite;
mod types;

use std::sync::Arc;
use std::time::Duration;

pub use agents::*;
pub use alerting::*;
pub use runs::*;
pub use types::*;

use crate::domain::{ApiKeyId, ServiceId, SnapshotId};
// The vocabulary the store records, defined in `domain` and re-exported here for callers that
// name it through the store.
pub use crate::domain::{
    AgentRunStatus, AlertKind, AlertState, Destination, EventKind, RunStatus, ScriptId, SignalKind,
    TargetId, TeamId, WindowId,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or a query failed for a reason outside the caller's
    /// control. The message is for logs only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness constraint was violated (for example a duplicate service name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The configuration (URL, options) is invalid.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Connection pool tuning shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Config(
                "DATABASE_URL must start with sqlite: or postgres://".into(),
            ))
        }
    }
}

/// Opens the store named by `url` (without migrating).
pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Arc<dyn Store>> {
    match Backend::from_url(url)? {
        Backend::Sqlite => Ok(Arc::new(sqlite::SqliteStore::connect(url, opts).await?)),
        Backend::Postgres => postgres::connect(url, opts).await,
    }
}

/// Everything Medic persists.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes every connection (after in-flight work finishes).
    async fn close(&self);

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
    async fn delete_service(&self, id: ServiceId, actor: &str) -> StoreResult<Option<SnapshotId>>;

    // ---- snapshots --------------------------------------------------------------------------

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>>;
    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>>;
    /// Puts the service back as the snapshot recorded it (undeleting it if needed), snapshotting
    /// the current state first, and marks the snapshot restored — all in one transaction.
    /// Restores the service as the snapshot recorded it, with the audit entry `audit` builds
    /// from the restored service in the same transaction.
    async fn restore_snapshot(
        &self,
        id: SnapshotId,
        actor: &str,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome>;

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
        at: crate::domain::Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange>;
    /// Open or acknowledged → resolved, queueing `resolved` notifications likewise. The monitor
    /// does not open the same incident again.
    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: crate::domain::Timestamp,
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
        now: crate::domain::Timestamp,
        limit: u32,
        judge: &Judge<'_>,
    ) -> StoreResult<PassReport>;
    /// The earliest deadline of any live service.
    async fn next_deadline(&self) -> StoreResult<Option<crate::domain::Timestamp>>;

    // ---- notification outbox ----------------------------------------------------------------

    /// Leases up to `limit` pending deliveries that are due and not leased by a live
    /// dispatcher (a crashed dispatcher's lease runs out at `lease_until`).
    async fn claim_deliveries(
        &self,
        now: crate::domain::Timestamp,
        lease_until: crate::domain::Timestamp,
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
    async fn next_delivery_at(&self) -> StoreResult<Option<crate::domain::Timestamp>>;

    // ---- housekeeping -----------------------------------------------------------------------

    /// Deletes up to `limit` of the oldest rows of `table` older than `before`, in one short
    /// transaction; returns how many went.
    async fn purge_batch(
        &self,
        table: PurgeTable,
        before: crate::domain::Timestamp,
        limit: u32,
    ) -> StoreResult<u64>;

    // ---- API keys ---------------------------------------------------------------------------

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord>;
    async fn get_api_key(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Marks a key revoked, with `audit` in the same transaction. `false` (and nothing
    /// written) when no such unrevoked key exists.
    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: crate::domain::Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    // ---- audit log --------------------------------------------------------------------------

    async fn append_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>>;

    // ---- teams ------------------------------------------------------------------------------

    /// Creates a team. A name already taken (case-insensitively) is a [`StoreError::Conflict`].
    /// With `audit`, the entry it builds from the new team commits with it (likewise below for
    /// every change of teams, targets and windows).
    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team>;
    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>>;
    /// The team whose case-folded name is `name_key` (how a service's `team` finds its team).
    async fn find_team(&self, name_key: &str) -> StoreResult<Option<Team>>;
    /// Every team, ordered by id.
    async fn list_teams(&self) -> StoreResult<Vec<Team>>;
    /// `None` when the team does not exist; a rename onto a taken name is a Conflict.
    async fn update_team(
        &self,
        id: TeamId,
        patch: &TeamPatch,
        at: crate::domain::Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>>;
    /// Deletes a team together with its notification targets and team-scoped maintenance
    /// windows (they mean nothing without it). `false` when no such team exists.
    async fn delete_team(&self, id: TeamId, audit: Option<&NewAuditEntry>) -> StoreResult<bool>;

    // ---- notification targets ---------------------------------------------------------------

    /// The owning team or service must exist (callers check; a dangling owner is refused by the
    /// database).
    async fn create_target(
        &self,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget>;
    async fn get_target(&self, id: TargetId) -> StoreResult<Option<NotificationTarget>>;
    /// Ordered by priority, then id (the order in which targets are notified).
    async fn list_targets(&self, filter: &TargetFilter) -> StoreResult<Vec<NotificationTarget>>;
    async fn update_target(
        &self,
        id: TargetId,
        patch: &TargetPatch,
        at: crate::domain::Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>>;
    async fn delete_target(&self, id: TargetId, audit: Option<&NewAuditEntry>)
    -> StoreResult<bool>;

    // ---- maintenance windows ----------------------------------------------------------------

    async fn create_window(
        &self,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord>;
    async fn get_window(&self, id: WindowId) -> StoreResult<Option<MaintenanceWindowRecord>>;
    /// Ordered by id.
    async fn list_windows(
        &self,
        filter: &WindowFilter,
    ) -> StoreResult<Vec<MaintenanceWindowRecord>>;
    async fn delete_window(&self, id: WindowId, audit: Option<&NewAuditEntry>)
    -> StoreResult<bool>;

    // ---- agents -----------------------------------------------------------------------------

    /// Registers the agent (or updates its row) and marks it connected by `session_id`, in one
    /// transaction; a revoked agent is refused and nothing changes.
    async fn agent_connected(&self, conn: &AgentConnection) -> StoreResult<AgentConnectOutcome>;
    /// Records that the session is alive. `false` when the agent was revoked or the session is
    /// no longer its current one: the session must close.
    async fn agent_seen(
        &self,
        id: &str,
        session_id: &str,
        at: crate::domain::Timestamp,
    ) -> StoreResult<bool>;
    /// Marks the agent disconnected, if `session_id` is still its current session.
    async fn agent_disconnected(
        &self,
        id: &str,
        session_id: &str,
        at: crate::domain::Timestamp,
    ) -> StoreResult<()>;
    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>>;
    /// Ordered by id.
    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>>;
    /// Marks the agent revoked (and disconnected), with `audit` in the same transaction.
    /// `false` (and nothing written) when no such unrevoked agent exists.
    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: crate::domain::Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    // ---- agent runs -------------------------------------------------------------------------

    /// Queues runs (each with its audit entry) in one transaction: all or none. The agents and
    /// the script versions must exist (the database refuses a dangling reference).
    async fn create_agent_runs(&self, new: &[NewAgentRun]) -> StoreResult<Vec<AgentRun>>;
    /// Queues one run (see [`Self::create_agent_runs`]).
    async fn create_agent_run(&self, new: &NewAgentRun) -> StoreResult<AgentRun> {
        self.create_agent_runs(std::slice::from_ref(new))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Unavailable("no run was created".to_owned()))
    }
    async fn get_agent_run(&self, run_id: &str) -> StoreResult<Option<AgentRun>>;
    /// Newest first.
    async fn list_agent_runs(
        &self,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>>;
    /// The agent's runs sent to an earlier session and never accepted (still `dispatched`),
    /// oldest first: sent again at the start of a session.
    async fn unaccepted_agent_runs(&self, agent_id: &str) -> StoreResult<Vec<AgentRun>>;
    /// Claims, in one statement, the agent's queued runs not expired at `at` for sending at
    /// `at` (each lost unless the agent reports by `lost_base` + the run's timeout), oldest
    /// first, each with its script version. A run is claimed once: a session racing this one
    /// claims none of the same runs.
    async fn claim_agent_runs(
        &self,
        agent_id: &str,
        at: crate::domain::Timestamp,
        lost_base: crate::domain::Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>>;
    /// Claims one queued run (not expired at `at`) or an already sent one for sending to the
    /// agent at `at`; it is lost unless the agent reports by `lost_base` + the run's timeout.
    /// `false`: the run ended meanwhile (expired, or finished elsewhere) and must not be sent.
    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: crate::domain::Timestamp,
        lost_base: crate::domain::Timestamp,
    ) -> StoreResult<bool>;
    /// Puts a dispatched run of this agent back in the queue: the agent declined it for now
    /// (`busy`, `draining`) without starting it. `false` when it is not this agent's, or not
    /// dispatched (it started, or ended meanwhile).
    async fn requeue_agent_run(&self, agent_id: &str, run_id: &str) -> StoreResult<bool>;
    /// The agent accepted the run (it is lost unless a result arrives by `lost_base` + the
    /// run's timeout). `false` when it is not this agent's, or not waiting.
    async fn agent_run_started(
        &self,
        agent_id: &str,
        run_id: &str,
        at: crate::domain::Timestamp,
        lost_base: crate::domain::Timestamp,
    ) -> StoreResult<bool>;
    /// Stores how the run ended unless an ending is already stored (a result replaces only
    /// `lost`). `None` when the agent has no such run.
    async fn finish_agent_run(
        &self,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>>;
    /// The agent connected again and runs none of its `running` runs except `still_running`:
    /// each of the others is lost unless its result arrives by `lost_after`. Returns how many.
    async fn orphan_agent_runs(
        &self,
        agent_id: &str,
        still_running: &[String],
        lost_after: crate::domain::Timestamp,
    ) -> StoreResult<u64>;
    /// Ends, in single guarded `UPDATE`s (safe on several replicas at once), the queued runs
    /// whose expiry has passed (`expired`) and the sent or running runs past their deadline
    /// (`lost`).
    async fn sweep_agent_runs(&self, now: crate::domain::Timestamp) -> StoreResult<RunSweep>;
    /// Agents that have runs queued and not expired at `now`.
    async fn agents_with_queued_runs(
        &self,
        now: crate::domain::Timestamp,
    ) -> StoreResult<Vec<String>>;

    // ---- scripts ----------------------------------------------------------------------------

    /// Adds the named script's next version (pending), creating the script on first use; when
    /// the content hashes like the latest version's, returns that version and writes nothing.
    async fn register_script_version(&self, new: &NewScriptVersion)
    -> StoreResult<RegisterOutcome>;
    /// The script with every version, oldest first.
    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>>;
    /// The id of the script with exactly this name.
    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>>;
    /// Scripts by id, each with only its latest version.
    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>>;
    async fn get_script_version(
        &self,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>>;
    /// Approves or rejects a pending version (by its row id). A version is decided once, and
    /// never by the key that registered it.
    async fn decide_script_version(
        &self,
        version_id: i64,
        decision: &ScriptDecision,
    ) -> StoreResult<DecideOutcome>;
}
