//! Playbook executions and [`ExecutionStore`]. SQL in `shared/executions.rs`; the start lock
//! and the next-due statement differ per backend (`sqlite/executions.rs`,
//! `postgres/executions.rs`).
//!
//! The store keeps an execution's state machine state as opaque JSON next to the columns that
//! are queried (status, playbook, service, trigger, times) and the engine's bookkeeping: the
//! `version` every change is conditional on, `due_at` (when a worker should look at it next)
//! and the lease of the worker acting on it. What a transition means is the state machine's
//! (`playbook::machine`); the store records what it is told.

use super::sql::JsonText;
use super::*;
use crate::domain::{ServiceId, Timestamp};

/// What started an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionTrigger {
    /// `POST /v2/playbooks/{id}/execute`.
    Manual,
    /// The signed `POST /v2/webhooks/playbooks/{id}/trigger`.
    Webhook,
    /// An alert matched one of the playbook's triggers.
    Alert,
}

impl ExecutionTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Webhook => "webhook",
            Self::Alert => "alert",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Manual, Self::Webhook, Self::Alert]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// The playbook version an execution runs: pinned when it starts, never changed after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedVersion {
    pub playbook_id: i64,
    pub name: String,
    pub version: i64,
    /// Hex SHA-256 of `source`.
    pub sha256: String,
    /// The document's text.
    pub source: String,
}

/// A new execution.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    pub pinned: PinnedVersion,
    pub service_id: Option<ServiceId>,
    pub alert_id: Option<i64>,
    pub trigger: ExecutionTrigger,
    /// Who asked for it (an API key id, a Slack user), for the four-eyes rule.
    pub requested_by: Option<String>,
    /// Context and inputs, as the engine reads them back.
    pub context: serde_json::Value,
    pub at: Timestamp,
}

/// An execution's new state, written only over the version it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionWrite {
    pub status: String,
    pub version: i64,
    pub state: serde_json::Value,
    /// When a worker should look at it next; `None` when nothing is left to do.
    pub due_at: Option<Timestamp>,
    /// The worker that keeps acting on it and until when; `None` frees it.
    pub lease: Option<(String, Timestamp)>,
    pub finished_at: Option<Timestamp>,
    pub at: Timestamp,
    /// Written in the same transaction, each with the execution's id.
    pub audit: Vec<NewAuditEntry>,
    /// Notices queued in the same transaction (the playbook outbox).
    pub notices: Vec<NewNotice>,
}

/// Start times of executions that count for the circuit breaker (every status but
/// `skipped`), inside the window asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecentStarts {
    /// This playbook's (any service).
    pub playbook: Vec<Timestamp>,
    /// This service's (any playbook); empty without a service.
    pub service: Vec<Timestamp>,
    pub global: Vec<Timestamp>,
    /// The newest execution the open breaker skipped, by the same scopes (so an opening is
    /// announced once; at most one each). Every list leaves out what came before the scope's
    /// last reset.
    pub skipped_playbook: Vec<Timestamp>,
    pub skipped_service: Vec<Timestamp>,
    pub skipped_global: Vec<Timestamp>,
}

/// Builds a new execution's first state from its id and the recent starts, inside the
/// transaction that inserts it (so the breaker counts what it decides on).
pub type BuildExecution<'a> = &'a (dyn Fn(i64, &RecentStarts) -> ExecutionWrite + Sync);

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ExecutionRecord {
    pub id: i64,
    pub playbook_id: i64,
    pub playbook_name: String,
    pub playbook_version: i64,
    pub playbook_sha256: String,
    pub playbook_source: String,
    pub service_id: Option<ServiceId>,
    pub alert_id: Option<i64>,
    pub trigger: String,
    pub requested_by: Option<String>,
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub context: serde_json::Value,
    pub status: String,
    pub version: i64,
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub state: serde_json::Value,
    pub due_at: Option<Timestamp>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl ExecutionRecord {
    pub fn pinned(&self) -> PinnedVersion {
        PinnedVersion {
            playbook_id: self.playbook_id,
            name: self.playbook_name.clone(),
            version: self.playbook_version,
            sha256: self.playbook_sha256.clone(),
            source: self.playbook_source.clone(),
        }
    }
}

/// Filters of `GET /v2/executions`; every one given must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecutionFilter {
    pub playbook_id: Option<i64>,
    pub service_id: Option<ServiceId>,
    pub status: Option<String>,
    pub trigger: Option<ExecutionTrigger>,
    /// Created at or after.
    pub start: Option<Timestamp>,
    /// Created at or before.
    pub end: Option<Timestamp>,
}

/// Playbook executions.
#[async_trait::async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Inserts an execution: counts the starts since `window_from`, allocates the id, builds
    /// the first state with `build` and writes it and its audit entries, in one transaction.
    /// Starts are serialized (PostgreSQL: a transaction-scoped advisory lock), so two
    /// concurrent starts never both see room under a limit.
    async fn create_execution(
        &self,
        new: &NewExecution,
        window_from: Timestamp,
        build: BuildExecution<'_>,
    ) -> StoreResult<ExecutionRecord>;

    /// Writes `write` if the execution is still at `expected_version`, with its audit
    /// entries, in one transaction. `false`: another change came first; nothing was written.
    async fn update_execution(
        &self,
        id: i64,
        expected_version: i64,
        write: &ExecutionWrite,
    ) -> StoreResult<bool>;

    /// Leases up to `limit` executions that are due (`due_at <= now`) and not leased by a
    /// live worker, to `owner` until `lease_until`. PostgreSQL skips rows another
    /// transaction is claiming (`FOR UPDATE SKIP LOCKED`).
    async fn claim_executions(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>>;

    /// Drops `owner`'s lease on execution `id` and sets when it is due next, if `owner` still
    /// holds it (otherwise someone else changed it since, and nothing is written).
    async fn release_execution(
        &self,
        id: i64,
        owner: &str,
        due_at: Option<Timestamp>,
    ) -> StoreResult<()>;

    /// Makes the unfinished executions among `ids` due at `at` if they were due later (a run
    /// of theirs ended: they need not wait for their next look at the runs). A leased one is
    /// due now already while held; its worker sets its timer when it lets it go.
    async fn hasten_executions(&self, ids: &[i64], at: Timestamp) -> StoreResult<u64>;

    /// Drops every lease and makes the leased executions due at `now`: for a process that
    /// is the only one on its database (SQLite), at start-up, since the leases' holder is
    /// gone. Returns how many were freed.
    async fn release_all_execution_leases(&self, now: Timestamp) -> StoreResult<u64>;

    /// When the next execution becomes claimable (its `due_at`, or its lease's end if later).
    async fn next_execution_due(&self) -> StoreResult<Option<Timestamp>>;

    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>>;

    /// Newest first.
    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ExecutionRecord>>;
}
