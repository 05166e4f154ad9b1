//! Script runs dispatched to agents: what the runs routes queue and the gateway sends, starts
//! and finishes. SQL for them lives in `sqlite/runs.rs` and `postgres/runs.rs`.

use std::collections::BTreeMap;

use super::sql::JsonText;
use super::*;
pub use crate::domain::run::{ALERTING_REFUSALS, refusal_alerts};
use crate::domain::{AgentRunStatus, ScriptId, Timestamp};
pub use crate::playbook::vars::ParamPart;

/// A run to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgentRun {
    /// The protocol's run id (a UUID).
    pub id: String,
    pub agent_id: String,
    pub script_id: ScriptId,
    pub script_version: i32,
    pub parameters: BTreeMap<String, String>,
    /// The parameters that use secrets, with each secret kept as its name (their entries in
    /// `parameters` are masked); the values are put in only when the run is sent.
    pub secret_parameters: BTreeMap<String, Vec<ParamPart>>,
    pub timeout_seconds: i32,
    pub requested_by: String,
    pub at: Timestamp,
    /// Unsent by then, the run expires.
    pub expires_at: Timestamp,
    /// The audit entry recording the request, written in the run's own transaction (so a queued
    /// run always has it, and queueing costs one commit).
    pub audit: Option<NewAuditEntry>,
}

/// Which runs to list (every field narrows; the default lists all).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub agent_id: Option<String>,
    pub status: Option<AgentRunStatus>,
    pub script_id: Option<ScriptId>,
}

/// One run.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AgentRun {
    #[sqlx(rename = "id")]
    pub run_id: String,
    pub agent_id: String,
    pub script_id: ScriptId,
    pub script_version: i32,
    #[sqlx(try_from = "JsonText<BTreeMap<String, String>>")]
    pub parameters: BTreeMap<String, String>,
    /// See [`NewAgentRun::secret_parameters`].
    #[sqlx(try_from = "JsonText<BTreeMap<String, Vec<ParamPart>>>")]
    pub secret_parameters: BTreeMap<String, Vec<ParamPart>>,
    pub timeout_seconds: i32,
    pub status: AgentRunStatus,
    pub requested_by: String,
    pub created_at: Timestamp,
    pub dispatched_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: Option<bool>,
    pub stderr_truncated: Option<bool>,
    pub duration_ms: Option<i64>,
    pub refusal_reason: Option<String>,
    pub refusal_detail: Option<String>,
    /// When a run still queued expires (absent on runs queued before expiry existed).
    pub expires_at: Option<Timestamp>,
    /// When the server stored the agent's result or refusal (the server's clock; absent while
    /// no report arrived, and for runs the server ended itself: `expired`, `lost`).
    pub reported_at: Option<Timestamp>,
}

/// A run claimed for sending, with what the agent needs of its script version.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    /// The run, already `dispatched`.
    pub run: AgentRun,
    pub script_name: String,
    pub interpreter: Interpreter,
    pub content: String,
    pub sha256: String,
    /// Whether the version is approved (a run is only queued for an approved version, and a
    /// decision is final, so this is `true` unless the database was edited by hand).
    pub approved: bool,
}

impl ClaimedRun {
    /// Oldest first, as runs are sent (`UPDATE … RETURNING` gives no order).
    pub fn oldest_first(mut claimed: Vec<Self>) -> Vec<Self> {
        claimed.sort_by(|a, b| {
            (a.run.created_at, &a.run.run_id).cmp(&(b.run.created_at, &b.run.run_id))
        });
        claimed
    }
}

/// What storing a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFinish {
    /// The run's status after the report.
    pub status: AgentRunStatus,
    /// Whether this report ended the run (`false`: an ending was already stored).
    pub stored: bool,
    /// When the run was last sent to the agent.
    pub dispatched_at: Option<Timestamp>,
}

/// Runs the sweep ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSweep {
    pub expired: u64,
    pub lost: u64,
}

/// How a run ended, as the agent reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentRunEnd {
    Finished {
        /// `Succeeded`, `Failed` or `TimedOut`.
        status: AgentRunStatus,
        exit_code: Option<i32>,
        signal: Option<i32>,
        stdout: String,
        stderr: String,
        stdout_truncated: bool,
        stderr_truncated: bool,
        started_at: Timestamp,
        finished_at: Timestamp,
        duration_ms: i64,
    },
    Refused {
        reason: String,
        detail: String,
        at: Timestamp,
    },
}

impl AgentRunEnd {
    /// Whether storing this ending opens a `run_refused` alert on the agent's service.
    pub fn raises_alert(&self) -> bool {
        matches!(self, Self::Refused { reason, .. } if refusal_alerts(reason))
    }

    /// The status this ending stores. A refusal because the agent already knew the run id
    /// (`duplicate`) while it neither runs it nor holds its result means a previous process of
    /// the agent took the run and died with it: `lost`. A refusal because the run had expired
    /// on arrival is `expired`.
    pub fn status(&self) -> AgentRunStatus {
        match self {
            Self::Finished { status, .. } => *status,
            Self::Refused { reason, .. } => match reason.as_str() {
                "duplicate" => AgentRunStatus::Lost,
                "expired" => AgentRunStatus::Expired,
                _ => AgentRunStatus::Refused,
            },
        }
    }
}

/// Script runs on agents.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
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
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>>;
    /// Claims one queued run (not expired at `at`) or an already sent one for sending to the
    /// agent at `at`; it is lost unless the agent reports by `lost_base` + the run's timeout.
    /// `false`: the run ended meanwhile (expired, or finished elsewhere) and must not be sent.
    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
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
        at: Timestamp,
        lost_base: Timestamp,
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
        lost_after: Timestamp,
    ) -> StoreResult<u64>;
    /// Ends, in single guarded `UPDATE`s (safe on several replicas at once), the queued runs
    /// whose expiry has passed (`expired`) and the sent or running runs past their deadline
    /// (`lost`).
    async fn sweep_agent_runs(&self, now: Timestamp) -> StoreResult<RunSweep>;
    /// Makes these runs, if still queued, expire at `at`: they are never sent after it, and the
    /// sweep ends them `expired` (a cancelled playbook execution's runs). Returns how many.
    async fn expire_queued_agent_runs(&self, run_ids: &[String], at: Timestamp)
    -> StoreResult<u64>;
    /// Agents that have runs queued and not expired at `now`.
    async fn agents_with_queued_runs(&self, now: Timestamp) -> StoreResult<Vec<String>>;
}
