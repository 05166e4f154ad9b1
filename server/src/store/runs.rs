//! Script runs dispatched to agents: what the runs routes queue and the gateway sends, starts
//! and finishes. SQL for them lives in `sqlite/runs.rs` and `postgres/runs.rs`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ScriptId;
use crate::domain::Timestamp;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRunStatus {
    /// Waiting for a session of its agent.
    Queued,
    /// Sent to the agent; not yet accepted.
    Sent,
    /// The agent accepted it and started the script.
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The agent refused it (see the skip reason).
    Skipped,
}

impl AgentRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            "skipped" => Self::Skipped,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::TimedOut | Self::Skipped
        )
    }
}

/// A run to queue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAgentRun {
    /// The protocol's run id (a UUID).
    pub id: String,
    pub agent_id: String,
    pub script_id: ScriptId,
    pub script_version: i32,
    pub parameters: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    pub requested_by: String,
    pub at: Timestamp,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRun {
    pub run_id: String,
    pub agent_id: String,
    pub script_id: ScriptId,
    pub script_version: i32,
    pub parameters: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    pub status: AgentRunStatus,
    pub requested_by: String,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: Option<bool>,
    pub stderr_truncated: Option<bool>,
    pub duration_ms: Option<i64>,
    pub skip_reason: Option<String>,
    pub skip_detail: Option<String>,
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
    Skipped {
        reason: String,
        detail: String,
        at: Timestamp,
    },
}
