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
            on_behalf_of: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::breaker::Breaker;
    use crate::playbook::machine::{self, Event, Outcome, OwnerId, Settings};

    fn plan(approval: &str) -> crate::playbook::Plan {
        let yaml = format!(
            "name: t\napproval: {approval}\nsteps:\n  - name: call\n    type: webhook\n    \
             url: https://example.com/x\n  - name: pause\n    type: wait\n    duration: 1m\n"
        );
        crate::playbook::validate(&yaml, &crate::engine::Pinned).expect("valid")
    }

    fn actions(entries: &[NewAuditEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.action_type.as_str()).collect()
    }

    const T0: i64 = 1_767_225_600_000;

    #[test]
    fn each_transition_has_its_entries_and_nothing_twice() {
        let p = plan("required");
        let t = Timestamp::from_millis(T0);
        let start = machine::start(
            &p,
            "7",
            Some(OwnerId("key:a".into())),
            t,
            Settings::default(),
            Breaker::Closed,
        );
        let e0 = start.execution;
        assert_eq!(
            actions(&entries(None, &e0, "key:a", None, t)),
            ["approval_requested"]
        );
        let approve = Event::Approve {
            by: OwnerId("key:b".into()),
        };
        let e1 = machine::decide(&p, &e0, t, approve)
            .expect("approve")
            .execution;
        assert_eq!(
            actions(&entries(Some(&e0), &e1, "key:b", None, t)),
            ["approved", "execution_started"]
        );
        let e2 = machine::decide(&p, &e1, t, Event::Sending { step: 0 })
            .expect("sending")
            .execution;
        assert!(entries(Some(&e1), &e2, ENGINE, None, t).is_empty());
        let done = Event::StepDone {
            step: 0,
            outcome: Outcome {
                ok: true,
                http_status: Some(200),
                ..Outcome::default()
            },
        };
        let e3 = machine::decide(&p, &e2, t, done).expect("done").execution;
        let step = entries(Some(&e2), &e3, ENGINE, None, t);
        assert_eq!(actions(&step), ["step_completed"]);
        assert_eq!(step[0].details["step"], "call");
        assert_eq!(step[0].details["http_status"], 200);
        // The same state again: no new entry.
        assert!(entries(Some(&e3), &e3, ENGINE, None, t).is_empty());
        let later = Timestamp::from_millis(T0 + 60_000);
        let e4 = machine::decide(&p, &e3, later, Event::Timer)
            .expect("timer")
            .execution;
        assert_eq!(
            actions(&entries(Some(&e3), &e4, ENGINE, None, later)),
            ["step_completed", "execution_completed"]
        );
    }

    #[test]
    fn endings_other_than_completion_are_named() {
        let p = plan("required");
        let t = Timestamp::from_millis(T0);
        let e0 = machine::start(&p, "1", None, t, Settings::default(), Breaker::Closed).execution;
        let reject = Event::Reject {
            by: OwnerId("key:b".into()),
            reason: "no".into(),
        };
        let rejected = machine::decide(&p, &e0, t, reject)
            .expect("reject")
            .execution;
        assert_eq!(
            actions(&entries(Some(&e0), &rejected, "b", None, t)),
            ["rejected"]
        );
        let cancel = Event::Cancel {
            by: None,
            reason: "x".into(),
        };
        let cancelled = machine::decide(&p, &e0, t, cancel)
            .expect("cancel")
            .execution;
        assert_eq!(
            actions(&entries(Some(&e0), &cancelled, "b", None, t)),
            ["execution_cancelled"]
        );
        let expiry = Timestamp::from_millis(T0 + 24 * 3_600_000);
        let expired = machine::decide(&p, &e0, expiry, Event::Timer)
            .expect("expire")
            .execution;
        assert_eq!(
            actions(&entries(Some(&e0), &expired, ENGINE, None, expiry)),
            ["execution_expired"]
        );
        let open = Breaker::Open {
            scope: crate::playbook::breaker::Scope::Global,
            count: 50,
            limit: 50,
            closes_at: t,
        };
        let skipped = machine::start(&p, "2", None, t, Settings::default(), open).execution;
        assert_eq!(
            actions(&entries(None, &skipped, "x", None, t)),
            ["execution_skipped"]
        );
    }

    #[test]
    fn a_stored_state_reads_back_as_it_was_written() {
        let p = plan("none");
        let t = Timestamp::from_millis(T0);
        let e = machine::start(&p, "3", None, t, Settings::default(), Breaker::Closed).execution;
        let e = machine::decide(&p, &e, t, Event::Sending { step: 0 })
            .expect("sending")
            .execution;
        let json = serde_json::to_value(&e).expect("json");
        let back: Execution = serde_json::from_value(json).expect("read back");
        assert_eq!(back, e);
    }

    const ENGINE: &str = crate::engine::ENGINE_ACTOR;
}
