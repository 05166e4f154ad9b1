//! The execution state machine: `(plan, execution, now, event) -> decision`.
//!
//! ```text
//! pending_approval ──approve / timeout:<N>m elapsed──▶ running ⇄ waiting ──▶ completed
//!        │                                                │                   failed
//!        ├─ reject / cancel ─▶ cancelled   ◀── cancel ────┘                   cancelled
//!        └─ `required` not decided in time ─▶ expired
//! (breaker open at start) ─▶ skipped
//! ```
//!
//! A [`Decision`] is what the driver does next: persist [`Decision::execution`] with a
//! conditional update on the previous [`Execution::version`] (so of two racing decisions —
//! approve against cancel, two workers — exactly one wins), then perform
//! [`Decision::actions`], then arm a durable timer at [`Execution::wake_at`] and feed the
//! results back as events. Nothing here sleeps, reads a clock or touches the store.
//!
//! # No step runs twice
//! A webhook or a server-side script is sent/started only after the driver has persisted the
//! [`Event::Sending`] transition (phase `ready` → `in_flight`). After a crash, [`Event::Recover`]
//! resolves the step by its kind: `ready` was never sent and is sent now; `in_flight` may have
//! happened, so a webhook is re-sent only when the step says `idempotent: true` (with the same
//! `Idempotency-Key`, execution id + step), and everything else ends `interrupted` and follows
//! its `on_failure`. Agent runs get deterministic run ids, chosen here and persisted before the
//! driver queues them; re-queueing an id that exists changes nothing, and the agent's run-id
//! journal keeps a redelivered run from executing again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

use super::breaker::Breaker;
use super::document::{ExpectedStatus, OnFailure};
use super::plan::{Approval, Check, Plan, StepKind, Target};
use super::trigger::millis;
use super::vars::{Scope, StepField};

/// The most output kept per step (and per run); longer output is cut at a character boundary.
pub const MAX_STEP_OUTPUT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    PendingApproval,
    Running,
    Waiting,
    Completed,
    Failed,
    Cancelled,
    /// Not started: the circuit breaker was open.
    Skipped,
    /// A `required` approval was not given in time.
    Expired,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::Expired => "expired",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::PendingApproval | Self::Running | Self::Waiting)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Waiting,
    Completed,
    Failed,
    /// In flight when the process stopped, and not safe to repeat.
    Interrupted,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Running | Self::Waiting)
    }
}

/// Whether a non-repeatable action (a webhook, a server-side script) may have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Not sent yet: safe to send.
    Ready,
    /// The driver recorded that it is sending: it may have happened.
    InFlight,
}

/// Who asked for or decided on an execution: an API key's owner id, or a Slack user. Compared
/// for the four-eyes rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OwnerId(pub String);

/// How a webhook, a script run or a whole server-side script ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Already masked by the driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One agent run of a script step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRun {
    pub agent_id: String,
    /// Deterministic: `<execution id>.<step index>.<target index>`.
    pub run_id: String,
    pub dispatched: bool,
    pub outcome: Option<Outcome>,
}

/// A step's result, as the timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub status: StepStatus,
    pub phase: Phase,
    pub attempt: u32,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// When a wait ends, or when a condition gives up.
    pub deadline: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub http_status: Option<u16>,
    pub output: Option<String>,
    pub error: Option<String>,
    /// Agent runs (script steps on agents); empty until the targets are known.
    pub runs: Vec<AgentRun>,
    pub targets_resolved: bool,
}

impl StepResult {
    /// The values `${steps.<name>.<field>}` reads.
    pub fn fields(&self) -> Vec<(StepField, String)> {
        let mut out = vec![(StepField::Status, self.status.as_str().to_owned())];
        if let Some(c) = self.exit_code {
            out.push((StepField::ExitCode, c.to_string()));
        }
        if let Some(h) = self.http_status {
            out.push((StepField::HttpStatus, h.to_string()));
        }
        if let Some(o) = &self.output {
            out.push((StepField::Output, o.clone()));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    Approved,
    Rejected,
    /// `timeout:<N>m` elapsed with no decision: proceeds.
    TimedOut,
    /// `required` was not decided in time.
    Expired,
}

impl ApprovalOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::TimedOut => "timed_out",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    pub outcome: ApprovalOutcome,
    pub by: Option<OwnerId>,
    pub at: Timestamp,
    pub reason: Option<String>,
}

/// The persisted state of one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    pub status: ExecutionStatus,
    /// Incremented by every decision; the store updates only from the version it read.
    pub version: u64,
    pub requested_by: Option<OwnerId>,
    pub created_at: Timestamp,
    pub approval: Option<ApprovalDecision>,
    pub steps: Vec<StepResult>,
    /// The next durable timer: approval deadline, end of a wait, next condition check.
    pub wake_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub error: Option<String>,
}

impl Execution {
    /// The step in progress, if any.
    pub fn current(&self) -> Option<&StepResult> {
        self.steps.last().filter(|s| !s.status.is_finished())
    }

    /// Adds the earlier steps' results to a substitution scope.
    pub fn scope_steps(&self, mut scope: Scope) -> Scope {
        for s in &self.steps {
            for (field, value) in s.fields() {
                scope = scope.step(&s.name, field, value);
            }
        }
        scope
    }
}

/// Engine settings from the server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a `required` approval waits before the execution expires.
    pub approval_max_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            approval_max_wait: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Approve {
        by: OwnerId,
    },
    Reject {
        by: OwnerId,
        reason: String,
    },
    Cancel {
        by: Option<OwnerId>,
        reason: String,
    },
    /// [`Execution::wake_at`] has passed.
    Timer,
    /// The driver is about to send the webhook / start the server-side script of `step`.
    Sending {
        step: usize,
    },
    /// A webhook or server-side script finished.
    StepDone {
        step: usize,
        outcome: Outcome,
    },
    /// The agents a `labels` target matched.
    TargetsResolved {
        step: usize,
        agents: Vec<String>,
    },
    RunFinished {
        step: usize,
        run_id: String,
        outcome: Outcome,
    },
    ConditionChecked {
        step: usize,
        met: bool,
        detail: String,
    },
    /// The process restarted: resolve what was in flight.
    Recover,
}

/// Notifications the driver sends (Slack, webhooks) for a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    AwaitingApproval,
    Started,
    Completed,
    Failed,
    Cancelled,
    Expired,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply [`Event::Sending`] first, then send with `Idempotency-Key: idempotency_key`.
    SendWebhook {
        step: usize,
        idempotency_key: String,
        attempt: u32,
    },
    /// Apply [`Event::Sending`] first, then run the script with the server's executor.
    RunOnServer {
        step: usize,
    },
    /// Find the connected agents that carry the step's labels; answer with
    /// [`Event::TargetsResolved`].
    ResolveTargets {
        step: usize,
    },
    /// Queue these runs unless a run with that id exists (idempotent by run id).
    DispatchRuns {
        step: usize,
        runs: Vec<(String, String)>,
    },
    /// Cancel these runs if they are still queued.
    CancelRuns {
        run_ids: Vec<String>,
    },
    /// Evaluate the step's condition; answer with [`Event::ConditionChecked`].
    CheckCondition {
        step: usize,
    },
    /// Page through the service's routing with the execution's context.
    Escalate {
        step: usize,
        reason: String,
    },
    Notify(Notice),
}

/// What to persist, and what to do after it is persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub execution: Execution,
    pub actions: Vec<Action>,
}

/// Why an event changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the execution is already {}", .0.as_str())]
    Terminal(ExecutionStatus),
    #[error("the execution is not waiting for approval (it is {})", .0.as_str())]
    NotPendingApproval(ExecutionStatus),
    #[error("whoever requested an execution cannot approve it")]
    SelfApproval,
    #[error("nothing is due yet")]
    NotDue,
    /// A duplicate or late report (e.g. a resent run result): safe to ignore.
    #[error("stale event: {0}")]
    Stale(String),
}

/// A new execution. With the breaker open it is recorded as `skipped` and never starts.
pub fn start(
    plan: &Plan,
    id: &str,
    requested_by: Option<OwnerId>,
    now: Timestamp,
    settings: Settings,
    breaker: Breaker,
) -> Decision {
    let mut exec = Execution {
        id: id.to_owned(),
        status: ExecutionStatus::Running,
        version: 0,
        requested_by,
        created_at: now,
        approval: None,
        steps: Vec::new(),
        wake_at: None,
        finished_at: None,
        error: None,
    };
    let mut actions = Vec::new();
    if let Breaker::Open {
        scope,
        count,
        limit,
        closes_at,
    } = breaker
    {
        exec.status = ExecutionStatus::Skipped;
        exec.finished_at = Some(now);
        exec.error = Some(format!(
            "circuit breaker open ({} scope: {count} executions in the last hour, limit {limit}; closes at {closes_at})",
            scope.as_str()
        ));
        actions.push(Action::Notify(Notice::Skipped));
        return Decision {
            execution: exec,
            actions,
        };
    }
    match plan.approval {
        Approval::None => {
            actions.push(Action::Notify(Notice::Started));
            begin(plan, &mut exec, 0, now, &mut actions);
        }
        Approval::Required => {
            exec.status = ExecutionStatus::PendingApproval;
            exec.wake_at = Some(now.plus_millis(millis(settings.approval_max_wait)));
            actions.push(Action::Notify(Notice::AwaitingApproval));
        }
        Approval::Timeout(d) => {
            exec.status = ExecutionStatus::PendingApproval;
            exec.wake_at = Some(now.plus_millis(millis(d)));
            actions.push(Action::Notify(Notice::AwaitingApproval));
        }
    }
    Decision {
        execution: exec,
        actions,
    }
}

/// The next decision for `exec` on `event` at `now`.
pub fn decide(
    plan: &Plan,
    exec: &Execution,
    now: Timestamp,
    event: Event,
) -> Result<Decision, Refusal> {
    if exec.status.is_terminal() {
        return Err(Refusal::Terminal(exec.status));
    }
    let mut next = exec.clone();
    next.version += 1;
    let mut actions = Vec::new();
    match event {
        Event::Approve { by } => {
            if exec.status != ExecutionStatus::PendingApproval {
                return Err(Refusal::NotPendingApproval(exec.status));
            }
            if exec.requested_by.as_ref() == Some(&by) {
                return Err(Refusal::SelfApproval);
            }
            next.approval = Some(ApprovalDecision {
                outcome: ApprovalOutcome::Approved,
                by: Some(by),
                at: now,
                reason: None,
            });
            actions.push(Action::Notify(Notice::Started));
            begin(plan, &mut next, 0, now, &mut actions);
        }
        Event::Reject { by, reason } => {
            if exec.status != ExecutionStatus::PendingApproval {
                return Err(Refusal::NotPendingApproval(exec.status));
            }
            next.error = Some(format!("rejected by {}: {reason}", by.0));
            next.approval = Some(ApprovalDecision {
                outcome: ApprovalOutcome::Rejected,
                by: Some(by),
                at: now,
                reason: Some(reason),
            });
            end(&mut next, ExecutionStatus::Cancelled, now, &mut actions);
        }
        Event::Cancel { by, reason } => {
            let who = by.map_or_else(|| "the system".to_owned(), |b| b.0);
            next.error = Some(format!("cancelled by {who}: {reason}"));
            if let Some(cur) = next.steps.last_mut().filter(|s| !s.status.is_finished()) {
                let queued: Vec<String> = cur
                    .runs
                    .iter()
                    .filter(|r| r.dispatched && r.outcome.is_none())
                    .map(|r| r.run_id.clone())
                    .collect();
                if !queued.is_empty() {
                    actions.push(Action::CancelRuns { run_ids: queued });
                }
                cur.status = StepStatus::Cancelled;
                cur.finished_at = Some(now);
                cur.error = Some("the execution was cancelled".to_owned());
            }
            end(&mut next, ExecutionStatus::Cancelled, now, &mut actions);
        }
        Event::Timer => {
            if exec.wake_at.is_none_or(|w| now < w) {
                return Err(Refusal::NotDue);
            }
            next.wake_at = None;
            if exec.status == ExecutionStatus::PendingApproval {
                if let Approval::Timeout(_) = plan.approval {
                    next.approval = Some(ApprovalDecision {
                        outcome: ApprovalOutcome::TimedOut,
                        by: None,
                        at: now,
                        reason: None,
                    });
                    actions.push(Action::Notify(Notice::Started));
                    begin(plan, &mut next, 0, now, &mut actions);
                } else {
                    next.approval = Some(ApprovalDecision {
                        outcome: ApprovalOutcome::Expired,
                        by: None,
                        at: now,
                        reason: None,
                    });
                    next.error = Some("no approval decision in time".to_owned());
                    end(&mut next, ExecutionStatus::Expired, now, &mut actions);
                }
            } else {
                let Some(cur) = exec.current() else {
                    return Err(Refusal::Stale("no step in progress".into()));
                };
                let i = cur.index;
                match &plan.steps[i].kind {
                    StepKind::Wait { .. } => {
                        finish(
                            plan,
                            &mut next,
                            i,
                            Outcome {
                                ok: true,
                                ..Outcome::default()
                            },
                            now,
                            &mut actions,
                        );
                    }
                    StepKind::Condition(_) => {
                        set_status(&mut next, i, StepStatus::Running);
                        next.wake_at = cur.deadline;
                        actions.push(Action::CheckCondition { step: i });
                    }
                    _ => return Err(Refusal::Stale("no timer for this step".into())),
                }
            }
        }
        Event::Sending { step } => {
            let cur = current_at(exec, step)?;
            if !sends_once(plan, step) {
                return Err(Refusal::Stale(format!(
                    "step {step} is not a webhook or a script on the server"
                )));
            }
            if cur.phase != Phase::Ready {
                return Err(Refusal::Stale(format!("step {step} is already in flight")));
            }
            next.steps[step].phase = Phase::InFlight;
        }
        Event::StepDone { step, outcome } => {
            let cur = current_at(exec, step)?;
            if cur.phase != Phase::InFlight {
                return Err(Refusal::Stale(format!("step {step} was never sent")));
            }
            finish(plan, &mut next, step, outcome, now, &mut actions);
        }
        Event::TargetsResolved { step, agents } => {
            let cur = current_at(exec, step)?;
            if cur.targets_resolved {
                return Err(Refusal::Stale(format!(
                    "step {step} already has its targets"
                )));
            }
            resolve_targets(plan, &mut next, step, agents, now, &mut actions);
        }
        Event::RunFinished {
            step,
            run_id,
            outcome,
        } => {
            current_at(exec, step)?;
            let Some(run) = next.steps[step]
                .runs
                .iter_mut()
                .find(|r| r.run_id == run_id)
            else {
                return Err(Refusal::Stale(format!(
                    "run {run_id} is not part of step {step}"
                )));
            };
            if !run.dispatched {
                return Err(Refusal::Stale(format!("run {run_id} was never dispatched")));
            }
            if run.outcome.is_some() {
                return Err(Refusal::Stale(format!("run {run_id} already ended")));
            }
            run.outcome = Some(Outcome {
                output: run_output(&run.agent_id, outcome.output.as_deref()),
                ..outcome
            });
            advance_runs(plan, &mut next, step, now, &mut actions);
        }
        Event::ConditionChecked { step, met, detail } => {
            let cur = current_at(exec, step)?;
            if !matches!(plan.steps[step].kind, StepKind::Condition(_)) {
                return Err(Refusal::Stale(format!("step {step} is not a condition")));
            }
            let deadline = cur.deadline.unwrap_or(now);
            if met {
                finish(
                    plan,
                    &mut next,
                    step,
                    Outcome {
                        ok: true,
                        output: Some(detail),
                        ..Outcome::default()
                    },
                    now,
                    &mut actions,
                );
            } else if now >= deadline {
                let within = match &plan.steps[step].kind {
                    StepKind::Condition(c) => super::duration::format(c.within),
                    _ => String::new(),
                };
                let error = format!("condition not met within {within}: {detail}");
                finish(
                    plan,
                    &mut next,
                    step,
                    Outcome {
                        ok: false,
                        output: Some(detail),
                        error: Some(error),
                        ..Outcome::default()
                    },
                    now,
                    &mut actions,
                );
            } else {
                let every = match &plan.steps[step].kind {
                    StepKind::Condition(c) => c.every,
                    _ => Duration::ZERO,
                };
                set_status(&mut next, step, StepStatus::Waiting);
                next.steps[step].output = Some(cap_output(&detail));
                next.wake_at = Some(now.plus_millis(millis(every)).min(deadline));
            }
        }
        Event::Recover => recover(plan, &mut next, now, &mut actions),
    }
    Ok(Decision {
        execution: next,
        actions,
    })
}

/// Steps whose action cannot be repeated safely, so they go through [`Event::Sending`].
fn sends_once(plan: &Plan, step: usize) -> bool {
    match &plan.steps[step].kind {
        StepKind::Webhook(_) => true,
        StepKind::Script(s) => s.target == Target::Server,
        _ => false,
    }
}

fn current_at(exec: &Execution, step: usize) -> Result<&StepResult, Refusal> {
    match exec.current() {
        Some(cur) if cur.index == step => Ok(cur),
        _ => Err(Refusal::Stale(format!("step {step} is not in progress"))),
    }
}

fn set_status(exec: &mut Execution, step: usize, status: StepStatus) {
    exec.steps[step].status = status;
    exec.status = if status == StepStatus::Waiting {
        ExecutionStatus::Waiting
    } else {
        ExecutionStatus::Running
    };
}

fn end(exec: &mut Execution, status: ExecutionStatus, now: Timestamp, actions: &mut Vec<Action>) {
    exec.status = status;
    exec.finished_at = Some(now);
    exec.wake_at = None;
    actions.push(Action::Notify(match status {
        ExecutionStatus::Completed => Notice::Completed,
        ExecutionStatus::Cancelled => Notice::Cancelled,
        ExecutionStatus::Expired => Notice::Expired,
        ExecutionStatus::Skipped => Notice::Skipped,
        _ => Notice::Failed,
    }));
}

/// Starts step `index` (or completes the execution after the last step).
fn begin(
    plan: &Plan,
    exec: &mut Execution,
    index: usize,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    let Some(step) = plan.steps.get(index) else {
        end(exec, ExecutionStatus::Completed, now, actions);
        return;
    };
    exec.status = ExecutionStatus::Running;
    exec.wake_at = None;
    exec.steps.push(StepResult {
        index,
        name: step.name.clone(),
        kind: step.kind.as_str().to_owned(),
        status: StepStatus::Running,
        phase: Phase::Ready,
        attempt: 1,
        started_at: now,
        finished_at: None,
        deadline: None,
        exit_code: None,
        http_status: None,
        output: None,
        error: None,
        runs: Vec::new(),
        targets_resolved: false,
    });
    match &step.kind {
        StepKind::Webhook(_) => actions.push(Action::SendWebhook {
            step: index,
            idempotency_key: idempotency_key(exec, index),
            attempt: 1,
        }),
        StepKind::Script(s) => match &s.target {
            Target::Server => actions.push(Action::RunOnServer { step: index }),
            Target::Agents(ids) => resolve_targets(plan, exec, index, ids.clone(), now, actions),
            Target::Labels(_) => actions.push(Action::ResolveTargets { step: index }),
        },
        StepKind::Wait { duration } => {
            let until = now.plus_millis(millis(*duration));
            exec.steps[index].deadline = Some(until);
            set_status(exec, index, StepStatus::Waiting);
            exec.wake_at = Some(until);
        }
        StepKind::Condition(c) => {
            let deadline = now.plus_millis(millis(c.within));
            exec.steps[index].deadline = Some(deadline);
            if let Check::StepStatus {
                index: earlier,
                status,
                step,
            } = &c.check
            {
                let actual = exec.steps.get(*earlier).map(|s| s.status);
                let met = actual.is_some_and(|a| {
                    matches!(
                        (status, a),
                        (ExpectedStatus::Completed, StepStatus::Completed)
                            | (ExpectedStatus::Failed, StepStatus::Failed)
                            | (ExpectedStatus::Interrupted, StepStatus::Interrupted)
                    )
                });
                let seen = actual.map_or("not run", StepStatus::as_str);
                let detail = format!("step `{step}` is {seen}");
                let outcome = Outcome {
                    ok: met,
                    error: (!met).then(|| format!("{detail}, expected {}", expected_str(*status))),
                    output: Some(detail),
                    ..Outcome::default()
                };
                finish(plan, exec, index, outcome, now, actions);
            } else {
                exec.wake_at = Some(deadline);
                actions.push(Action::CheckCondition { step: index });
            }
        }
    }
}

fn expected_str(s: ExpectedStatus) -> &'static str {
    match s {
        ExpectedStatus::Completed => "completed",
        ExpectedStatus::Failed => "failed",
        ExpectedStatus::Interrupted => "interrupted",
    }
}

/// The `Idempotency-Key` of a webhook step: the same for every attempt of that step.
pub fn idempotency_key(exec: &Execution, step: usize) -> String {
    format!("{}:{step}", exec.id)
}

/// Ends step `index` with `outcome` and follows `on_failure`, or moves on.
fn finish(
    plan: &Plan,
    exec: &mut Execution,
    index: usize,
    outcome: Outcome,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    finish_as(
        plan,
        exec,
        index,
        if outcome.ok {
            StepStatus::Completed
        } else {
            StepStatus::Failed
        },
        outcome,
        now,
        actions,
    );
}

fn finish_as(
    plan: &Plan,
    exec: &mut Execution,
    index: usize,
    status: StepStatus,
    outcome: Outcome,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    let r = &mut exec.steps[index];
    r.status = status;
    r.finished_at = Some(now);
    r.exit_code = outcome.exit_code.or(r.exit_code);
    r.http_status = outcome.http_status.or(r.http_status);
    if let Some(o) = outcome.output {
        r.output = Some(cap_output(&o));
    }
    r.error = outcome.error.map(|e| cap_output(&e));
    exec.wake_at = None;
    if status == StepStatus::Completed {
        begin(plan, exec, index + 1, now, actions);
        return;
    }
    let step = &plan.steps[index];
    let why = exec.steps[index]
        .error
        .clone()
        .unwrap_or_else(|| format!("step {}", status.as_str()));
    match step.on_failure {
        OnFailure::Continue => begin(plan, exec, index + 1, now, actions),
        OnFailure::Fail => {
            exec.error = Some(format!("step `{}` {}: {why}", step.name, status.as_str()));
            end(exec, ExecutionStatus::Failed, now, actions);
        }
        OnFailure::Escalate => {
            let reason = format!("step `{}` {}: {why}", step.name, status.as_str());
            actions.push(Action::Escalate {
                step: index,
                reason: reason.clone(),
            });
            exec.error = Some(format!("escalated: {reason}"));
            end(exec, ExecutionStatus::Failed, now, actions);
        }
    }
}

fn resolve_targets(
    plan: &Plan,
    exec: &mut Execution,
    step: usize,
    mut agents: Vec<String>,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    let mut seen = std::collections::BTreeSet::new();
    agents.retain(|a| seen.insert(a.clone()));
    let id = exec.id.clone();
    let r = &mut exec.steps[step];
    r.targets_resolved = true;
    r.runs = agents
        .into_iter()
        .enumerate()
        .map(|(i, agent_id)| AgentRun {
            agent_id,
            run_id: format!("{id}.{step}.{i}"),
            dispatched: false,
            outcome: None,
        })
        .collect();
    if r.runs.is_empty() {
        let outcome = Outcome {
            ok: false,
            error: Some("no agent matches the step's target".to_owned()),
            ..Outcome::default()
        };
        finish(plan, exec, step, outcome, now, actions);
        return;
    }
    advance_runs(plan, exec, step, now, actions);
}

/// After targets are known or a run ended: dispatch more (rolling), or end the step.
fn advance_runs(
    plan: &Plan,
    exec: &mut Execution,
    step: usize,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    let StepKind::Script(s) = &plan.steps[step].kind else {
        return;
    };
    let runs = &exec.steps[step].runs;
    let total = runs.len();
    let needed = s.require.needed(total);
    let succeeded = runs
        .iter()
        .filter(|r| r.outcome.as_ref().is_some_and(|o| o.ok))
        .count();
    let failed = runs
        .iter()
        .filter(|r| r.outcome.as_ref().is_some_and(|o| !o.ok))
        .count();
    let in_flight: Vec<String> = runs
        .iter()
        .filter(|r| r.dispatched && r.outcome.is_none())
        .map(|r| r.run_id.clone())
        .collect();
    let summary = || {
        let outputs: Vec<&str> = runs
            .iter()
            .filter_map(|r| r.outcome.as_ref().and_then(|o| o.output.as_deref()))
            .collect();
        let exit_code = runs
            .iter()
            .filter_map(|r| r.outcome.as_ref())
            .find(|o| !o.ok)
            .or_else(|| runs.iter().rev().find_map(|r| r.outcome.as_ref()))
            .and_then(|o| o.exit_code);
        (exit_code, (!outputs.is_empty()).then(|| outputs.join("\n")))
    };
    if total - failed < needed {
        let (exit_code, output) = summary();
        let first_error = runs
            .iter()
            .filter_map(|r| r.outcome.as_ref().filter(|o| !o.ok).map(|o| (r, o)))
            .map(|(r, o)| format!("{}: {}", r.agent_id, o.error.as_deref().unwrap_or("failed")))
            .next()
            .unwrap_or_default();
        let error =
            format!("{succeeded} of {total} agents succeeded, {needed} required; {first_error}");
        if !in_flight.is_empty() {
            actions.push(Action::CancelRuns { run_ids: in_flight });
        }
        finish(
            plan,
            exec,
            step,
            Outcome {
                ok: false,
                exit_code,
                output,
                error: Some(error),
                ..Outcome::default()
            },
            now,
            actions,
        );
        return;
    }
    let undispatched = runs.iter().filter(|r| !r.dispatched).count();
    if undispatched == 0 && in_flight.is_empty() {
        let (exit_code, output) = summary();
        let ok = succeeded >= needed;
        let error =
            (!ok).then(|| format!("{succeeded} of {total} agents succeeded, {needed} required"));
        finish(
            plan,
            exec,
            step,
            Outcome {
                ok,
                exit_code,
                output,
                error,
                ..Outcome::default()
            },
            now,
            actions,
        );
        return;
    }
    let room = s
        .max_parallel
        .map_or(usize::MAX, |m| m as usize)
        .saturating_sub(in_flight.len());
    let batch: Vec<(String, String)> = exec.steps[step]
        .runs
        .iter_mut()
        .filter(|r| !r.dispatched)
        .take(room)
        .map(|r| {
            r.dispatched = true;
            (r.agent_id.clone(), r.run_id.clone())
        })
        .collect();
    if !batch.is_empty() {
        actions.push(Action::DispatchRuns { step, runs: batch });
    }
}

fn recover(plan: &Plan, exec: &mut Execution, now: Timestamp, actions: &mut Vec<Action>) {
    let Some(cur) = exec.current().cloned() else {
        if matches!(
            exec.status,
            ExecutionStatus::Running | ExecutionStatus::Waiting
        ) {
            // Every started step has finished but the next was not begun: begin it.
            let next = exec.steps.len();
            begin(plan, exec, next, now, actions);
        }
        return;
    };
    let i = cur.index;
    match &plan.steps[i].kind {
        StepKind::Webhook(w) => match cur.phase {
            Phase::Ready => actions.push(Action::SendWebhook {
                step: i,
                idempotency_key: idempotency_key(exec, i),
                attempt: cur.attempt,
            }),
            Phase::InFlight if w.idempotent => {
                exec.steps[i].attempt += 1;
                exec.steps[i].phase = Phase::Ready;
                actions.push(Action::SendWebhook {
                    step: i,
                    idempotency_key: idempotency_key(exec, i),
                    attempt: cur.attempt + 1,
                });
            }
            Phase::InFlight => interrupt(
                plan,
                exec,
                i,
                "the server stopped while the webhook was in flight; it is not re-sent because the step is not `idempotent: true`",
                now,
                actions,
            ),
        },
        StepKind::Script(s) => match (&s.target, cur.phase) {
            (Target::Server, Phase::Ready) => actions.push(Action::RunOnServer { step: i }),
            (Target::Server, Phase::InFlight) => interrupt(
                plan,
                exec,
                i,
                "the server stopped while the script was running on it",
                now,
                actions,
            ),
            (Target::Labels(_), _) if !cur.targets_resolved => {
                actions.push(Action::ResolveTargets { step: i })
            }
            _ => {
                let runs: Vec<(String, String)> = cur
                    .runs
                    .iter()
                    .filter(|r| r.dispatched && r.outcome.is_none())
                    .map(|r| (r.agent_id.clone(), r.run_id.clone()))
                    .collect();
                if runs.is_empty() {
                    advance_runs(plan, exec, i, now, actions);
                } else {
                    actions.push(Action::DispatchRuns { step: i, runs });
                }
            }
        },
        StepKind::Wait { .. } => exec.wake_at = cur.deadline,
        StepKind::Condition(_) => {
            if cur.status == StepStatus::Running {
                actions.push(Action::CheckCondition { step: i });
            }
        }
    }
}

fn interrupt(
    plan: &Plan,
    exec: &mut Execution,
    i: usize,
    why: &str,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    let outcome = Outcome {
        ok: false,
        error: Some(why.to_owned()),
        ..Outcome::default()
    };
    finish_as(
        plan,
        exec,
        i,
        StepStatus::Interrupted,
        outcome,
        now,
        actions,
    );
}

fn run_output(agent: &str, output: Option<&str>) -> Option<String> {
    output.map(|o| format!("[{agent}] {}", cap_output(o)))
}

/// Cuts `text` to [`MAX_STEP_OUTPUT_BYTES`] at a character boundary, saying how much was cut.
pub fn cap_output(text: &str) -> String {
    if text.len() <= MAX_STEP_OUTPUT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_STEP_OUTPUT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[… {} more bytes cut]", &text[..end], text.len() - end)
}
