//! The execution state machine, driven event by event with an explicit clock.

use std::time::Duration;

use super::plan;
use crate::domain::Timestamp;
use crate::playbook::Plan;
use crate::playbook::breaker::{Breaker, Scope as BreakerScope};
use crate::playbook::machine::*;

const T0: i64 = 1_800_000_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn owner(s: &str) -> OwnerId {
    OwnerId(s.to_owned())
}

/// A driver in miniature: applies decisions, keeps the state, checks that every decision moves
/// the version forward by one.
struct Run {
    plan: Plan,
    exec: Execution,
}

impl Run {
    fn start(text: &str, approval_max: Duration) -> (Self, Vec<Action>) {
        Self::start_as(text, Some(owner("alice")), approval_max)
    }

    fn start_as(text: &str, by: Option<OwnerId>, approval_max: Duration) -> (Self, Vec<Action>) {
        let plan = plan(text);
        let settings = Settings {
            approval_max_wait: approval_max,
        };
        let d = start(&plan, "ex1", by, at(0), settings, Breaker::Closed);
        (
            Self {
                plan,
                exec: d.execution,
            },
            d.actions,
        )
    }

    #[track_caller]
    fn on(&mut self, secs: i64, event: Event) -> Vec<Action> {
        let d = decide(&self.plan, &self.exec, at(secs), event)
            .unwrap_or_else(|e| panic!("refused: {e}"));
        assert_eq!(d.execution.version, self.exec.version + 1);
        self.exec = d.execution;
        d.actions
    }

    #[track_caller]
    fn refused(&self, secs: i64, event: Event) -> Refusal {
        decide(&self.plan, &self.exec, at(secs), event).expect_err("expected a refusal")
    }

    fn status(&self) -> ExecutionStatus {
        self.exec.status
    }

    fn step_status(&self, i: usize) -> StepStatus {
        self.exec.steps[i].status
    }
}

fn ok() -> Outcome {
    Outcome {
        ok: true,
        ..Outcome::default()
    }
}

fn failed(error: &str) -> Outcome {
    Outcome {
        ok: false,
        exit_code: Some(1),
        error: Some(error.to_owned()),
        ..Outcome::default()
    }
}

const HOOK_WAIT_CHECK: &str = r#"name: hwc
steps:
  - name: hook
    type: webhook
    url: https://example.com/
  - name: pause
    type: wait
    duration: 5m
  - name: back
    type: condition
    check: {heartbeat_received: {min_count: 1}}
    within: 2m
    every: 30s
"#;

#[test]
fn a_run_goes_through_webhook_wait_and_condition_with_durable_timers() {
    let (mut r, actions) = Run::start(HOOK_WAIT_CHECK, Duration::from_secs(60));
    assert_eq!(r.status(), ExecutionStatus::Running);
    assert_eq!(
        actions,
        [
            Action::Notify(Notice::Started),
            Action::SendWebhook {
                step: 0,
                idempotency_key: "ex1:0".into(),
                attempt: 1
            }
        ]
    );
    // A result before the driver recorded that it is sending is not accepted.
    assert!(matches!(
        r.refused(
            1,
            Event::StepDone {
                step: 0,
                outcome: ok()
            }
        ),
        Refusal::Stale(_)
    ));
    assert!(r.on(1, Event::Sending { step: 0 }).is_empty());
    assert_eq!(r.exec.steps[0].phase, Phase::InFlight);
    let actions = r.on(
        2,
        Event::StepDone {
            step: 0,
            outcome: Outcome {
                http_status: Some(202),
                ..ok()
            },
        },
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(r.step_status(0), StepStatus::Completed);
    // The wait is a durable timer, not a sleep.
    assert_eq!(r.status(), ExecutionStatus::Waiting);
    assert_eq!(r.exec.wake_at, Some(at(302)));
    assert_eq!(r.refused(100, Event::Timer), Refusal::NotDue);
    assert_eq!(
        r.on(302, Event::Timer),
        [Action::CheckCondition { step: 2 }]
    );
    assert_eq!(r.step_status(1), StepStatus::Completed);
    assert_eq!(r.exec.steps[2].deadline, Some(at(422)));
    // Not yet: check again after `every`, never past the deadline.
    assert!(
        r.on(
            303,
            Event::ConditionChecked {
                step: 2,
                met: false,
                detail: "0 heartbeats".into()
            }
        )
        .is_empty()
    );
    assert_eq!(
        (r.status(), r.exec.wake_at),
        (ExecutionStatus::Waiting, Some(at(333)))
    );
    assert_eq!(
        r.on(333, Event::Timer),
        [Action::CheckCondition { step: 2 }]
    );
    assert_eq!(r.status(), ExecutionStatus::Running);
    let actions = r.on(
        334,
        Event::ConditionChecked {
            step: 2,
            met: true,
            detail: "1 heartbeat".into(),
        },
    );
    assert_eq!(actions, [Action::Notify(Notice::Completed)]);
    assert_eq!(r.status(), ExecutionStatus::Completed);
    assert_eq!(r.exec.finished_at, Some(at(334)));
    assert_eq!(r.exec.wake_at, None);
    assert_eq!(r.exec.steps[0].http_status, Some(202));
    assert_eq!(
        r.refused(400, Event::Timer),
        Refusal::Terminal(ExecutionStatus::Completed)
    );
}

#[test]
fn a_condition_not_met_by_its_deadline_fails_its_step() {
    let (mut r, _) = Run::start(HOOK_WAIT_CHECK, Duration::from_secs(60));
    r.on(0, Event::Sending { step: 0 });
    r.on(
        0,
        Event::StepDone {
            step: 0,
            outcome: ok(),
        },
    );
    r.on(300, Event::Timer);
    r.on(
        301,
        Event::ConditionChecked {
            step: 2,
            met: false,
            detail: "0".into(),
        },
    );
    assert_eq!(r.exec.wake_at, Some(at(331)));
    let mut t = 331;
    while r.exec.wake_at.is_some_and(|w| w < at(420)) {
        r.on(t, Event::Timer);
        r.on(
            t,
            Event::ConditionChecked {
                step: 2,
                met: false,
                detail: "0".into(),
            },
        );
        t += 30;
    }
    assert_eq!(
        r.exec.wake_at,
        Some(at(420)),
        "the last check is at the deadline"
    );
    r.on(420, Event::Timer);
    let actions = r.on(
        420,
        Event::ConditionChecked {
            step: 2,
            met: false,
            detail: "0 heartbeats".into(),
        },
    );
    assert_eq!(actions, [Action::Notify(Notice::Failed)]);
    assert_eq!(r.step_status(2), StepStatus::Failed);
    assert!(
        r.exec
            .error
            .as_deref()
            .unwrap()
            .contains("condition not met within 2m"),
        "{:?}",
        r.exec.error
    );
}

const APPROVED: &str =
    "name: ap\napproval: required\nsteps:\n  - {name: w, type: wait, duration: 1m}\n";
const TIMED: &str =
    "name: ap\napproval: timeout:10m\nsteps:\n  - {name: w, type: wait, duration: 1m}\n";

#[test]
fn required_approval_waits_for_another_person_then_runs() {
    let (mut r, actions) = Run::start(APPROVED, Duration::from_secs(3600));
    assert_eq!(r.status(), ExecutionStatus::PendingApproval);
    assert_eq!(actions, [Action::Notify(Notice::AwaitingApproval)]);
    assert_eq!(r.exec.wake_at, Some(at(3600)));
    // Four eyes: the requester cannot approve.
    assert_eq!(
        r.refused(10, Event::Approve { by: owner("alice") }),
        Refusal::SelfApproval
    );
    assert_eq!(r.refused(10, Event::Timer), Refusal::NotDue);
    r.on(20, Event::Approve { by: owner("bob") });
    assert_eq!(r.status(), ExecutionStatus::Waiting);
    let a = r.exec.approval.as_ref().unwrap();
    assert_eq!(
        (a.outcome, a.by.clone(), a.at),
        (ApprovalOutcome::Approved, Some(owner("bob")), at(20))
    );
    // Exactly one decision: a second approve or a reject afterwards is refused.
    assert_eq!(
        r.refused(21, Event::Approve { by: owner("carol") }),
        Refusal::NotPendingApproval(ExecutionStatus::Waiting)
    );
    assert!(matches!(
        r.refused(
            21,
            Event::Reject {
                by: owner("carol"),
                reason: "no".into()
            }
        ),
        Refusal::NotPendingApproval(_)
    ));
}

#[test]
fn an_alert_triggered_execution_can_be_approved_by_anyone() {
    let (mut r, _) = Run::start_as(APPROVED, None, Duration::from_secs(3600));
    r.on(5, Event::Approve { by: owner("alice") });
    assert_eq!(r.status(), ExecutionStatus::Waiting);
}

#[test]
fn required_approval_expires_after_the_configured_maximum() {
    let (mut r, _) = Run::start(APPROVED, Duration::from_secs(3600));
    let actions = r.on(3600, Event::Timer);
    assert_eq!(actions, [Action::Notify(Notice::Expired)]);
    assert_eq!(r.status(), ExecutionStatus::Expired);
    assert!(r.exec.steps.is_empty(), "no step ran");
    assert_eq!(
        r.exec.approval.as_ref().unwrap().outcome,
        ApprovalOutcome::Expired
    );
    assert!(matches!(
        r.refused(3601, Event::Approve { by: owner("bob") }),
        Refusal::Terminal(_)
    ));
}

#[test]
fn timeout_approval_proceeds_on_its_own_unless_rejected() {
    let (mut r, _) = Run::start(TIMED, Duration::from_secs(3600));
    assert_eq!(r.exec.wake_at, Some(at(600)));
    let actions = r.on(600, Event::Timer);
    assert_eq!(actions, [Action::Notify(Notice::Started)]);
    assert_eq!(
        r.exec.approval.as_ref().unwrap().outcome,
        ApprovalOutcome::TimedOut
    );
    assert_eq!(r.status(), ExecutionStatus::Waiting);

    let (mut r, _) = Run::start(TIMED, Duration::from_secs(3600));
    let actions = r.on(
        60,
        Event::Reject {
            by: owner("bob"),
            reason: "not now".into(),
        },
    );
    assert_eq!(actions, [Action::Notify(Notice::Cancelled)]);
    assert_eq!(r.status(), ExecutionStatus::Cancelled);
    assert_eq!(r.exec.error.as_deref(), Some("rejected by bob: not now"));
    assert_eq!(r.exec.wake_at, None, "the approval timer is disarmed");
}

#[test]
fn the_breaker_skips_an_execution_before_it_starts() {
    let plan = plan(APPROVED);
    let breaker = Breaker::Open {
        scope: BreakerScope::Service,
        count: 5,
        limit: 5,
        closes_at: at(60),
    };
    let d = start(&plan, "ex9", None, at(0), Settings::default(), breaker);
    assert_eq!(d.execution.status, ExecutionStatus::Skipped);
    assert_eq!(d.actions, [Action::Notify(Notice::Skipped)]);
    assert!(
        d.execution
            .error
            .as_deref()
            .unwrap()
            .contains("service scope")
    );
    assert!(
        decide(
            &plan,
            &d.execution,
            at(1),
            Event::Cancel {
                by: None,
                reason: "x".into()
            }
        )
        .is_err()
    );
}

const FANOUT: &str = r#"name: fan
steps:
  - name: restart
    type: script
    script: restart-systemd-unit
    on: {labels: {role: api}}
    max_parallel: 1
  - {name: after, type: wait, duration: 1m}
"#;

#[test]
fn cancel_works_in_every_non_terminal_state() {
    // Pending approval.
    let (mut r, _) = Run::start(APPROVED, Duration::from_secs(60));
    r.on(
        1,
        Event::Cancel {
            by: Some(owner("alice")),
            reason: "changed my mind".into(),
        },
    );
    assert_eq!(r.status(), ExecutionStatus::Cancelled);
    // Running a webhook.
    let (mut r, _) = Run::start(HOOK_WAIT_CHECK, Duration::from_secs(60));
    r.on(1, Event::Sending { step: 0 });
    r.on(
        2,
        Event::Cancel {
            by: None,
            reason: "stop".into(),
        },
    );
    assert_eq!(
        (r.status(), r.step_status(0)),
        (ExecutionStatus::Cancelled, StepStatus::Cancelled)
    );
    // A late result changes nothing.
    assert!(matches!(
        r.refused(
            3,
            Event::StepDone {
                step: 0,
                outcome: ok()
            }
        ),
        Refusal::Terminal(_)
    ));
    // Waiting.
    let (mut r, _) = Run::start(HOOK_WAIT_CHECK, Duration::from_secs(60));
    r.on(1, Event::Sending { step: 0 });
    r.on(
        2,
        Event::StepDone {
            step: 0,
            outcome: ok(),
        },
    );
    r.on(
        3,
        Event::Cancel {
            by: None,
            reason: "stop".into(),
        },
    );
    assert_eq!(
        (r.status(), r.exec.wake_at),
        (ExecutionStatus::Cancelled, None)
    );
    // Agent runs in flight are cancelled with it.
    let (mut r, _) = Run::start(FANOUT, Duration::from_secs(60));
    r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec!["a".into(), "b".into()],
        },
    );
    let actions = r.on(
        2,
        Event::Cancel {
            by: None,
            reason: "stop".into(),
        },
    );
    assert_eq!(
        actions,
        [
            Action::CancelRuns {
                run_ids: vec!["ex1.0.0".into()]
            },
            Action::Notify(Notice::Cancelled)
        ]
    );
}

#[test]
fn a_rolling_fan_out_dispatches_one_agent_at_a_time() {
    let (mut r, actions) = Run::start(FANOUT, Duration::from_secs(60));
    assert_eq!(actions[1], Action::ResolveTargets { step: 0 });
    let actions = r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec!["a".into(), "b".into(), "a".into(), "c".into()],
        },
    );
    assert_eq!(
        actions,
        [Action::DispatchRuns {
            step: 0,
            runs: vec![("a".into(), "ex1.0.0".into())]
        }]
    );
    assert_eq!(r.exec.steps[0].runs.len(), 3, "duplicates are dropped");
    assert!(matches!(
        r.refused(
            1,
            Event::TargetsResolved {
                step: 0,
                agents: vec![]
            }
        ),
        Refusal::Stale(_)
    ));
    let actions = r.on(
        5,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.0".into(),
            outcome: Outcome {
                output: Some("restarted".into()),
                exit_code: Some(0),
                ..ok()
            },
        },
    );
    assert_eq!(
        actions,
        [Action::DispatchRuns {
            step: 0,
            runs: vec![("b".into(), "ex1.0.1".into())]
        }]
    );
    // A resent result is acknowledged by the driver and changes nothing.
    assert!(matches!(
        r.refused(
            6,
            Event::RunFinished {
                step: 0,
                run_id: "ex1.0.0".into(),
                outcome: ok()
            }
        ),
        Refusal::Stale(_)
    ));
    r.on(
        7,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.1".into(),
            outcome: ok(),
        },
    );
    r.on(
        9,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.2".into(),
            outcome: Outcome {
                exit_code: Some(0),
                ..ok()
            },
        },
    );
    assert_eq!(r.step_status(0), StepStatus::Completed);
    assert_eq!(r.exec.steps[0].output.as_deref(), Some("[a] restarted"));
    assert_eq!(r.exec.steps[0].exit_code, Some(0));
    assert_eq!(r.status(), ExecutionStatus::Waiting);
}

#[test]
fn require_all_stops_at_the_first_failure() {
    let (mut r, _) = Run::start(FANOUT, Duration::from_secs(60));
    r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec!["a".into(), "b".into()],
        },
    );
    let actions = r.on(
        2,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.0".into(),
            outcome: failed("unit not found"),
        },
    );
    assert_eq!(actions, [Action::Notify(Notice::Failed)]);
    assert!(!r.exec.steps[0].runs[1].dispatched, "b never ran");
    assert_eq!(r.exec.steps[0].exit_code, Some(1));
    let err = r.exec.error.clone().unwrap();
    assert!(
        err.contains("0 of 2 agents succeeded, 2 required") && err.contains("a: unit not found"),
        "{err}"
    );
}

#[test]
fn require_any_and_at_least_n() {
    let any = FANOUT.replace("max_parallel: 1", "require: any");
    let (mut r, _) = Run::start(&any, Duration::from_secs(60));
    let actions = r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec!["a".into(), "b".into()],
        },
    );
    assert_eq!(
        actions,
        [Action::DispatchRuns {
            step: 0,
            runs: vec![
                ("a".into(), "ex1.0.0".into()),
                ("b".into(), "ex1.0.1".into())
            ]
        }]
    );
    r.on(
        2,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.1".into(),
            outcome: failed("x"),
        },
    );
    assert_eq!(r.step_status(0), StepStatus::Running, "a may still succeed");
    r.on(
        3,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.0".into(),
            outcome: ok(),
        },
    );
    assert_eq!(r.step_status(0), StepStatus::Completed);

    let two = FANOUT.replace("max_parallel: 1", "require: 2");
    let (mut r, _) = Run::start(&two, Duration::from_secs(60));
    r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec!["a".into(), "b".into(), "c".into()],
        },
    );
    r.on(
        2,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.0".into(),
            outcome: failed("x"),
        },
    );
    let actions = r.on(
        3,
        Event::RunFinished {
            step: 0,
            run_id: "ex1.0.1".into(),
            outcome: failed("y"),
        },
    );
    assert_eq!(
        actions,
        [
            Action::CancelRuns {
                run_ids: vec!["ex1.0.2".into()]
            },
            Action::Notify(Notice::Failed)
        ],
        "two required, only one can still succeed"
    );

    // Nobody matched the labels: the step fails at once.
    let (mut r, _) = Run::start(FANOUT, Duration::from_secs(60));
    r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec![],
        },
    );
    assert_eq!(r.step_status(0), StepStatus::Failed);
    assert!(
        r.exec.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no agent matches")
    );
}

#[test]
fn on_failure_fail_continue_and_escalate() {
    let text = |on_failure: &str| {
        format!(
            "name: f\nsteps:\n  - name: hook\n    type: webhook\n    url: https://e.com/\n    on_failure: {on_failure}\n  - {{name: w, type: wait, duration: 1m}}\n"
        )
    };
    let run = |on_failure: &str| {
        let (mut r, _) = Run::start(&text(on_failure), Duration::from_secs(60));
        r.on(1, Event::Sending { step: 0 });
        let actions = r.on(
            2,
            Event::StepDone {
                step: 0,
                outcome: Outcome {
                    http_status: Some(500),
                    ..failed("HTTP 500")
                },
            },
        );
        (r, actions)
    };
    let (r, actions) = run("fail");
    assert_eq!(
        (r.status(), actions),
        (
            ExecutionStatus::Failed,
            vec![Action::Notify(Notice::Failed)]
        )
    );
    assert_eq!(r.exec.steps.len(), 1);
    assert_eq!(
        r.exec.error.as_deref(),
        Some("step `hook` failed: HTTP 500")
    );
    let (r, actions) = run("continue");
    assert_eq!((r.status(), actions), (ExecutionStatus::Waiting, vec![]));
    assert_eq!(r.step_status(0), StepStatus::Failed);
    let (r, actions) = run("escalate");
    assert_eq!(r.status(), ExecutionStatus::Failed);
    assert_eq!(
        actions,
        [
            Action::Escalate {
                step: 0,
                reason: "step `hook` failed: HTTP 500".into()
            },
            Action::Notify(Notice::Failed)
        ]
    );
}

#[test]
fn a_step_status_condition_is_decided_without_io() {
    let text = "name: s\nsteps:\n  - name: hook\n    type: webhook\n    url: https://e.com/\n    on_failure: continue\n  - name: was-ok\n    type: condition\n    check: {step_status: {step: hook, status: failed}}\n";
    let (mut r, _) = Run::start(text, Duration::from_secs(60));
    r.on(1, Event::Sending { step: 0 });
    let actions = r.on(
        2,
        Event::StepDone {
            step: 0,
            outcome: failed("HTTP 503"),
        },
    );
    assert_eq!(actions, [Action::Notify(Notice::Completed)]);
    assert_eq!(
        r.exec.steps[1].output.as_deref(),
        Some("step `hook` is failed")
    );
    // The results are what `${steps.hook.status}` reads.
    let scope = r.exec.scope_steps(crate::playbook::vars::Scope::new());
    let t = crate::playbook::vars::Template::parse("${steps.hook.status}/${steps.hook.exit_code}")
        .unwrap();
    assert_eq!(t.render(&scope).unwrap(), "failed/1");
}

#[test]
fn recovery_resolves_each_in_flight_step_by_its_kind() {
    // A webhook not yet sent is sent.
    let (r, _) = Run::start(HOOK_WAIT_CHECK, Duration::from_secs(60));
    let mut crashed = Run {
        plan: r.plan.clone(),
        exec: r.exec.clone(),
    };
    assert_eq!(
        crashed.on(10, Event::Recover),
        [Action::SendWebhook {
            step: 0,
            idempotency_key: "ex1:0".into(),
            attempt: 1
        }]
    );
    // A webhook in flight and not idempotent is interrupted and follows on_failure (fail).
    let mut r = Run {
        plan: r.plan,
        exec: r.exec,
    };
    r.on(1, Event::Sending { step: 0 });
    let mut not_idem = Run {
        plan: r.plan.clone(),
        exec: r.exec.clone(),
    };
    assert_eq!(
        not_idem.on(10, Event::Recover),
        [Action::Notify(Notice::Failed)]
    );
    assert_eq!(not_idem.step_status(0), StepStatus::Interrupted);
    assert!(
        not_idem.exec.steps[0]
            .error
            .as_deref()
            .unwrap()
            .contains("not re-sent")
    );

    // An idempotent one is re-sent with the same key.
    let idem = HOOK_WAIT_CHECK.replace(
        "url: https://example.com/",
        "url: https://example.com/\n    idempotent: true",
    );
    let (mut r, _) = Run::start(&idem, Duration::from_secs(60));
    r.on(1, Event::Sending { step: 0 });
    assert_eq!(
        r.on(10, Event::Recover),
        [Action::SendWebhook {
            step: 0,
            idempotency_key: "ex1:0".into(),
            attempt: 2
        }]
    );
    assert_eq!(
        (r.exec.steps[0].phase, r.exec.steps[0].attempt),
        (Phase::Ready, 2)
    );
    r.on(11, Event::Sending { step: 0 });
    r.on(
        12,
        Event::StepDone {
            step: 0,
            outcome: ok(),
        },
    );
    // A wait keeps its timer.
    let before = r.exec.wake_at;
    assert!(r.on(13, Event::Recover).is_empty());
    assert_eq!(r.exec.wake_at, before);
    // A condition being checked is checked again (read-only).
    r.on(312, Event::Timer);
    assert_eq!(
        r.on(313, Event::Recover),
        [Action::CheckCondition { step: 2 }]
    );

    // Agent runs keep their ids: re-queueing is idempotent by run id.
    let (mut r, _) = Run::start(FANOUT, Duration::from_secs(60));
    assert_eq!(r.clone_and_recover(1), [Action::ResolveTargets { step: 0 }]);
    r.on(
        1,
        Event::TargetsResolved {
            step: 0,
            agents: vec!["a".into(), "b".into()],
        },
    );
    assert_eq!(
        r.clone_and_recover(2),
        [Action::DispatchRuns {
            step: 0,
            runs: vec![("a".into(), "ex1.0.0".into())]
        }]
    );

    // A script on the server that may have run is interrupted.
    let server = "name: s\nsteps:\n  - name: local\n    type: script\n    script: flush-cache\n    on: server\n    on_failure: continue\n";
    let plan = crate::playbook::validate(
        server,
        &super::Known {
            server_scripts: true,
            ..super::CATALOG
        },
    )
    .unwrap();
    let d = start(
        &plan,
        "ex2",
        None,
        at(0),
        Settings::default(),
        Breaker::Closed,
    );
    assert_eq!(d.actions[1], Action::RunOnServer { step: 0 });
    let mut r = Run {
        plan,
        exec: d.execution,
    };
    assert_eq!(r.clone_and_recover(1), [Action::RunOnServer { step: 0 }]);
    r.on(1, Event::Sending { step: 0 });
    assert_eq!(r.on(5, Event::Recover), [Action::Notify(Notice::Completed)]);
    assert_eq!(r.step_status(0), StepStatus::Interrupted);
}

impl Run {
    fn clone_and_recover(&self, secs: i64) -> Vec<Action> {
        decide(&self.plan, &self.exec, at(secs), Event::Recover)
            .unwrap()
            .actions
    }
}

#[test]
fn outputs_are_capped_at_a_character_boundary() {
    let long = "é".repeat(MAX_STEP_OUTPUT_BYTES);
    let capped = cap_output(&long);
    assert!(capped.len() < MAX_STEP_OUTPUT_BYTES + 64);
    assert!(capped.ends_with(&format!(
        "[… {} more bytes cut]",
        long.len() - MAX_STEP_OUTPUT_BYTES
    )));
    assert_eq!(cap_output("short"), "short");
}

#[test]
fn statuses_and_their_names() {
    let all = [
        ExecutionStatus::PendingApproval,
        ExecutionStatus::Running,
        ExecutionStatus::Waiting,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Cancelled,
        ExecutionStatus::Skipped,
        ExecutionStatus::Expired,
    ];
    let terminal: Vec<&str> = all
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        terminal,
        ["completed", "failed", "cancelled", "skipped", "expired"]
    );
    for s in all {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}
