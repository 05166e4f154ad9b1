//! Runs: job runs reported by job signals, and script runs on agents. Their statuses and the
//! two rules every store applies to them — what a job signal does to a run, and which report
//! may end an agent run — as plain functions, so both backends decide alike.

use medic_protocol::SkipReason;
use serde::{Deserialize, Serialize};

use super::Timestamp;

// ---- job runs ---------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    Start,
    Complete,
    Fail,
}

impl SignalKind {
    /// The heartbeat status this signal is recorded as.
    pub fn heartbeat_status(self) -> &'static str {
        match self {
            Self::Start => "STARTED",
            Self::Complete => "COMPLETED",
            Self::Fail => "FAILED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What a job signal does to the run it names (by run id, or else the service's newest running
/// run). `R` is the stored run, handed back where the step needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalStep<R> {
    /// A redelivered start, or a signal for a run that already finished: the run stays as it is.
    Keep(R),
    /// A new run starts (`running`).
    Start,
    /// The running run finishes with this status.
    Finish(R, RunStatus),
    /// No run was started: a finished run is recorded with this status.
    RecordFinished(RunStatus),
}

/// The status a `complete` or `fail` signal finishes a run with: `fail`, or any non-zero exit
/// code, is a failure.
pub fn finished_status(kind: SignalKind, exit_code: Option<i32>) -> RunStatus {
    match (kind, exit_code) {
        (SignalKind::Fail, _) => RunStatus::Failed,
        (_, Some(code)) if code != 0 => RunStatus::Failed,
        _ => RunStatus::Completed,
    }
}

/// The job-signal transition: what `kind` (with `exit_code`) does to `existing`, the run it
/// names with that run's status (`None`: no such run).
pub fn signal_step<R>(
    kind: SignalKind,
    exit_code: Option<i32>,
    existing: Option<(R, RunStatus)>,
) -> SignalStep<R> {
    let finished = finished_status(kind, exit_code);
    match (kind, existing) {
        (SignalKind::Start, Some((run, _))) => SignalStep::Keep(run),
        (_, Some((run, status))) if status != RunStatus::Running => SignalStep::Keep(run),
        (SignalKind::Start, None) => SignalStep::Start,
        (_, Some((run, _))) => SignalStep::Finish(run, finished),
        (_, None) => SignalStep::RecordFinished(finished),
    }
}

/// The heartbeat status a job signal is recorded as (whatever it did to the run): `STARTED`,
/// `FAILED` (a `fail`, or a non-zero exit code) or `COMPLETED`.
pub fn signal_heartbeat_status(kind: SignalKind, exit_code: Option<i32>) -> &'static str {
    match kind {
        SignalKind::Start => "STARTED",
        _ if finished_status(kind, exit_code) == RunStatus::Failed => "FAILED",
        _ => "COMPLETED",
    }
}

/// How long a run that started at `started_at` took when it finishes at `at` (never negative;
/// `None` for a run that never signalled its start).
pub fn run_duration_ms(started_at: Option<Timestamp>, at: Timestamp) -> Option<i64> {
    started_at.map(|s| (at.millis() - s.millis()).max(0))
}

// ---- runs on agents ---------------------------------------------------------------------------

/// Where a run on an agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRunStatus {
    /// Waiting for a session of its agent.
    Queued,
    /// Sent to the agent; not yet accepted.
    Dispatched,
    /// The agent accepted it and started the script.
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The agent refused it (see the refusal reason).
    Refused,
    /// Still queued when its expiry passed; never sent.
    Expired,
    /// Dispatched or running, and the agent did not report within the run's deadline (its timeout
    /// plus a grace), or came back as a new process that no longer knew the run. A result the
    /// agent reports later still replaces it.
    Lost,
}

impl AgentRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Dispatched => "dispatched",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Refused => "refused",
            Self::Expired => "expired",
            Self::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "dispatched" => Self::Dispatched,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            "refused" => Self::Refused,
            "expired" => Self::Expired,
            "lost" => Self::Lost,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::Failed
                | Self::TimedOut
                | Self::Refused
                | Self::Expired
                | Self::Lost
        )
    }

    /// Every status, for metrics that start at zero.
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Dispatched,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Refused,
        Self::Expired,
        Self::Lost,
    ];
}

/// The run-ending rule: whether a report stores its ending on a run whose status is `current`.
/// A run's ending is stored once — except that a real result (`is_result`; not a refusal)
/// replaces `lost`, since the agent did run it after all.
pub fn report_ends_run(current: AgentRunStatus, is_result: bool) -> bool {
    !current.is_final() || (current == AgentRunStatus::Lost && is_result)
}

/// Refusal reasons that open a `run_refused` alert: the request and the host disagree about
/// what may run, which an operator must look at. Not: `busy` and `draining` (the agent was full
/// or stopping; queue the run again), `expired` and `duplicate` (stored as `expired` / `lost`).
pub const ALERTING_REFUSALS: [SkipReason; 8] = [
    SkipReason::NotInAllowlist,
    SkipReason::NotApproved,
    SkipReason::HashMismatch,
    SkipReason::InvalidName,
    SkipReason::InvalidParameters,
    SkipReason::InvalidRequest,
    SkipReason::UnsupportedInterpreter,
    SkipReason::Unknown,
];

/// Whether a refusal with this stored reason opens a `run_refused` alert.
pub fn refusal_alerts(reason: &str) -> bool {
    ALERTING_REFUSALS.iter().any(|r| r.as_str() == reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    use AgentRunStatus as A;
    use SignalKind::{Complete, Fail, Start};

    fn step(kind: SignalKind, code: Option<i32>, existing: Option<RunStatus>) -> SignalStep<()> {
        signal_step(kind, code, existing.map(|s| ((), s)))
    }

    #[test]
    fn a_start_begins_a_run_once() {
        assert_eq!(step(Start, None, None), SignalStep::Start);
        assert_eq!(
            step(Start, None, Some(RunStatus::Running)),
            SignalStep::Keep(())
        );
        assert_eq!(
            step(Start, None, Some(RunStatus::Completed)),
            SignalStep::Keep(())
        );
    }

    #[test]
    fn complete_and_fail_finish_the_running_run() {
        let running = Some(RunStatus::Running);
        assert_eq!(
            step(Complete, None, running),
            SignalStep::Finish((), RunStatus::Completed)
        );
        assert_eq!(
            step(Complete, Some(0), running),
            SignalStep::Finish((), RunStatus::Completed)
        );
        assert_eq!(
            step(Complete, Some(3), running),
            SignalStep::Finish((), RunStatus::Failed)
        );
        assert_eq!(
            step(Fail, Some(0), running),
            SignalStep::Finish((), RunStatus::Failed)
        );
    }

    #[test]
    fn a_finished_run_is_never_finished_again() {
        for done in [RunStatus::Completed, RunStatus::Failed] {
            assert_eq!(step(Complete, None, Some(done)), SignalStep::Keep(()));
            assert_eq!(step(Fail, Some(1), Some(done)), SignalStep::Keep(()));
        }
    }

    #[test]
    fn an_ending_without_a_start_is_recorded_finished() {
        assert_eq!(
            step(Complete, None, None),
            SignalStep::RecordFinished(RunStatus::Completed)
        );
        assert_eq!(
            step(Fail, None, None),
            SignalStep::RecordFinished(RunStatus::Failed)
        );
    }

    #[test]
    fn heartbeat_status_follows_the_signal_and_exit_code() {
        assert_eq!(signal_heartbeat_status(Start, Some(1)), "STARTED");
        assert_eq!(signal_heartbeat_status(Complete, None), "COMPLETED");
        assert_eq!(signal_heartbeat_status(Complete, Some(2)), "FAILED");
        assert_eq!(signal_heartbeat_status(Fail, Some(0)), "FAILED");
    }

    #[test]
    fn duration_is_never_negative_and_needs_a_start() {
        let t = Timestamp::from_millis(10_000);
        assert_eq!(
            run_duration_ms(Some(Timestamp::from_millis(4_000)), t),
            Some(6_000)
        );
        assert_eq!(
            run_duration_ms(Some(Timestamp::from_millis(12_000)), t),
            Some(0)
        );
        assert_eq!(run_duration_ms(None, t), None);
    }

    #[test]
    fn an_open_run_takes_any_report() {
        for open in [A::Queued, A::Dispatched, A::Running] {
            assert!(report_ends_run(open, true));
            assert!(report_ends_run(open, false));
        }
    }

    #[test]
    fn an_ending_stays_except_a_result_replaces_lost() {
        assert!(report_ends_run(A::Lost, true));
        assert!(!report_ends_run(A::Lost, false));
        for done in [A::Succeeded, A::Failed, A::TimedOut, A::Refused, A::Expired] {
            assert!(!report_ends_run(done, true), "{done:?}");
            assert!(!report_ends_run(done, false), "{done:?}");
        }
    }

    #[test]
    fn only_disagreements_raise_alerts() {
        assert!(refusal_alerts("not_approved"));
        assert!(refusal_alerts("hash_mismatch"));
        assert!(!refusal_alerts("busy"));
        assert!(!refusal_alerts("draining"));
        assert!(!refusal_alerts("duplicate"));
        assert!(!refusal_alerts("expired"));
    }
}
