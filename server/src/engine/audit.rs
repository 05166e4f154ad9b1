//! The audit entries of one transition: what changed between the state an execution had and
//! the state a decision gives it. Pure; the store writes the entries in the transition's own
//! transaction.

use serde_json::json;

use crate::domain::{ServiceId, Timestamp};
use crate::playbook::machine::{ApprovalOutcome, Execution, ExecutionStatus, StepStatus};
use crate::store::NewAuditEntry;

/// The action types of the remediation audit log.
pub mod action {
    pub const EXECUTION_STARTED: &str = "execution_started";
    pub const APPROVAL_REQUESTED: &str = "approval_requested";
    pub const APPROVED: &str = "approved";
    pub const REJECTED: &str = "rejected";
    pub const APPROVAL_TIMED_OUT: &str = "approval_timed_out";
    pub const STEP_COMPLETED: &str = "step_completed";
    pub const STEP_FAILED: &str = "step_failed";
    pub const EXECUTION_COMPLETED: &str = "execution_completed";
    pub const EXECUTION_FAILED: &str = "execution_failed";
    pub const EXECUTION_CANCELLED: &str = "execution_cancelled";
    pub const EXECUTION_EXPIRED: &str = "execution_expired";
    pub const EXECUTION_SKIPPED: &str = "execution_skipped";
}

/// The entries for `before → after` (`before` is `None` for a new execution). `actor` is who
/// caused the transition (an operator, or `engine`).
pub fn entries(
    before: Option<&Execution>,
    after: &Execution,
    actor: &str,
    service_id: Option<ServiceId>,
    at: Timestamp,
) -> Vec<NewAuditEntry> {
    let mut out = Vec::new();
    let mut push = |action: &str, details: serde_json::Value| {
        out.push(NewAuditEntry {
            action_type: action.to_owned(),
            actor: actor.to_owned(),
            service_id,
            execution_id: None,
            details,
            at,
        });
    };
    let was = before.map(|b| b.status);
    if before.is_none() {
        match after.status {
            ExecutionStatus::PendingApproval => push(
                action::APPROVAL_REQUESTED,
                json!({ "requested_by": after.requested_by, "wake_at": after.wake_at }),
            ),
            ExecutionStatus::Skipped => {}
            _ => push(
                action::EXECUTION_STARTED,
                json!({ "requested_by": after.requested_by }),
            ),
        }
    }
    let decided_now = before.is_some_and(|b| b.approval.is_none()) && after.approval.is_some();
    if let (true, Some(a)) = (decided_now, &after.approval) {
        let details = json!({ "by": a.by, "reason": a.reason });
        match a.outcome {
            ApprovalOutcome::Approved => push(action::APPROVED, details),
            ApprovalOutcome::Rejected => push(action::REJECTED, details),
            ApprovalOutcome::TimedOut => push(action::APPROVAL_TIMED_OUT, details),
            ApprovalOutcome::Expired => {}
        }
        if matches!(
            a.outcome,
            ApprovalOutcome::Approved | ApprovalOutcome::TimedOut
        ) {
            push(action::EXECUTION_STARTED, json!({ "approval": a.outcome }));
        }
    }
    for step in &after.steps {
        let finished_before = before
            .and_then(|b| b.steps.get(step.index))
            .is_some_and(|s| s.status.is_finished());
        if finished_before || !step.status.is_finished() {
            continue;
        }
        let action = match step.status {
            StepStatus::Completed => action::STEP_COMPLETED,
            StepStatus::Failed | StepStatus::Interrupted => action::STEP_FAILED,
            // The execution's own entry says it was cancelled.
            _ => continue,
        };
        push(
            action,
            json!({
                "step": step.name,
                "index": step.index,
                "kind": step.kind,
                "status": step.status,
                "attempt": step.attempt,
                "exit_code": step.exit_code,
                "http_status": step.http_status,
                "error": step.error,
            }),
        );
    }
    if after.status.is_terminal() && was.is_none_or(|w| !w.is_terminal()) {
        let details = json!({ "error": after.error });
        match after.status {
            ExecutionStatus::Completed => push(action::EXECUTION_COMPLETED, details),
            ExecutionStatus::Failed => push(action::EXECUTION_FAILED, details),
            ExecutionStatus::Cancelled => {
                let rejected = after
                    .approval
                    .as_ref()
                    .is_some_and(|a| a.outcome == ApprovalOutcome::Rejected);
                if !rejected {
                    push(action::EXECUTION_CANCELLED, details);
                }
            }
            ExecutionStatus::Expired => push(action::EXECUTION_EXPIRED, details),
            ExecutionStatus::Skipped => push(action::EXECUTION_SKIPPED, details),
            _ => {}
        }
    }
    out
}
