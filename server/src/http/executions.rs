//! v2 playbook executions: list and read them with their step timeline, and decide on them
//! (approve, reject, cancel).
//!
//! Each decision is one conditional write of the execution's state (see [`crate::engine`]): of
//! any number of concurrent decisions on one execution exactly one commits; the others are
//! answered 409 and change nothing. **Four-eyes:** whoever requested an execution cannot
//! approve it. Requester and approver are recorded as `owner:<owner id>` (the owner of the
//! API key; the bootstrap admin key and the keys it made share the `bootstrap` owner) or
//! `slack:<user id>`; the rule compares those and, through the Slack users linked to owners,
//! the owners behind them: another key of the same person, or their linked Slack user, is no
//! second pair of eyes.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{
    Caller, OptionalJsonBody, Page, PageParams, Params, actor, paginated, path_id,
};
use super::schema::{self, Time, time};
use crate::auth::Principal;
use crate::domain::{Scope, ServiceId};
use crate::engine::DecideError;
use crate::playbook::machine::{self, Event, Execution, OwnerId};
use crate::store::{ExecutionFilter, ExecutionRecord, ExecutionTrigger};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(approve_execution))
        .routes(routes!(reject_execution))
        .routes(routes!(cancel_execution))
}

/// Longest accepted decision reason.
pub const MAX_REASON_LEN: usize = 1000;

/// Who a caller is for the four-eyes rule: the owner of its API key (`owner:<owner id>`), so
/// that two keys of one person are one requester.
pub fn owner_of(p: &Principal) -> String {
    format!("owner:{}", p.owner_id.0)
}

/// One agent run of a script step.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StepRunOut {
    pub agent_id: String,
    pub run_id: String,
    pub dispatched: bool,
    pub ok: Option<bool>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// One step of an execution's timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StepOut {
    pub index: usize,
    pub name: String,
    /// `webhook`, `script`, `wait` or `condition`.
    pub kind: String,
    pub status: schema::StepStatus,
    /// 1, or more when a step marked `idempotent: true` was sent again after a restart.
    pub attempt: u32,
    pub started_at: Time,
    pub finished_at: Option<Time>,
    /// When a wait ends, or when a condition gives up.
    pub deadline: Option<Time>,
    pub exit_code: Option<i32>,
    pub http_status: Option<u16>,
    /// Captured and capped output (64 KiB), secrets masked.
    pub output: Option<String>,
    pub error: Option<String>,
    pub runs: Vec<StepRunOut>,
}

/// How the approval was decided.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApprovalOut {
    pub outcome: schema::ApprovalOutcome,
    pub by: Option<String>,
    pub at: Time,
    pub reason: Option<String>,
}

/// A playbook execution and its step timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionOut {
    pub execution_id: i64,
    pub playbook_id: i64,
    pub playbook_name: String,
    /// The playbook version the execution pinned when it started.
    pub playbook_version: i64,
    pub playbook_sha256: String,
    pub service_id: Option<i64>,
    pub alert_id: Option<i64>,
    pub trigger: schema::ExecutionTrigger,
    pub status: schema::ExecutionStatus,
    /// Who requested it, as the four-eyes rule compares: `owner:<key owner>` or
    /// `slack:<user id>`; absent for alert triggers.
    pub requested_by: Option<String>,
    /// The API key that requested it.
    pub requested_by_key: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
    pub finished_at: Option<Time>,
    /// The next durable timer: approval deadline, end of a wait, next condition check.
    pub wake_at: Option<Time>,
    pub error: Option<String>,
    pub approval: Option<ApprovalOut>,
    pub steps: Vec<StepOut>,
}

impl ExecutionOut {
    pub(crate) fn new(r: &ExecutionRecord) -> Result<Self, ApiError> {
        let exec: Execution = serde_json::from_value(r.state.clone())
            .map_err(|e| ApiError::internal(&format!("execution {}: {e}", r.id)))?;
        let trigger = ExecutionTrigger::parse(&r.trigger)
            .ok_or_else(|| ApiError::internal(&format!("execution {}: trigger", r.id)))?;
        Ok(Self {
            execution_id: r.id,
            playbook_id: r.playbook_id,
            playbook_name: r.playbook_name.clone(),
            playbook_version: r.playbook_version,
            playbook_sha256: r.playbook_sha256.clone(),
            service_id: r.service_id.map(|s| s.0),
            alert_id: r.alert_id,
            trigger: trigger.into(),
            status: exec.status.into(),
            requested_by: r.requested_by.clone(),
            requested_by_key: r.context["requester_key"].as_str().map(str::to_owned),
            created_at: r.created_at.into(),
            updated_at: r.updated_at.into(),
            finished_at: time(r.finished_at),
            wake_at: time(exec.wake_at),
            error: exec.error.clone(),
            approval: exec.approval.as_ref().map(|a| ApprovalOut {
                outcome: a.outcome.into(),
                by: a.by.as_ref().map(|b| b.0.clone()),
                at: a.at.into(),
                reason: a.reason.clone(),
            }),
            steps: exec
                .steps
                .iter()
                .map(|s| StepOut {
                    index: s.index,
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    status: s.status.into(),
                    attempt: s.attempt,
                    started_at: s.started_at.into(),
                    finished_at: time(s.finished_at),
                    deadline: time(s.deadline),
                    exit_code: s.exit_code,
                    http_status: s.http_status,
                    output: s.output.clone(),
                    error: s.error.clone(),
                    runs: s
                        .runs
                        .iter()
                        .map(|run| StepRunOut {
                            agent_id: run.agent_id.clone(),
                            run_id: run.run_id.clone(),
                            dispatched: run.dispatched,
                            ok: run.outcome.as_ref().map(|o| o.ok),
                            exit_code: run.outcome.as_ref().and_then(|o| o.exit_code),
                            error: run.outcome.as_ref().and_then(|o| o.error.clone()),
                        })
                        .collect(),
                })
                .collect(),
        })
    }
}

const STATUSES: [machine::ExecutionStatus; 8] = [
    machine::ExecutionStatus::PendingApproval,
    machine::ExecutionStatus::Running,
    machine::ExecutionStatus::Waiting,
    machine::ExecutionStatus::Completed,
    machine::ExecutionStatus::Failed,
    machine::ExecutionStatus::Cancelled,
    machine::ExecutionStatus::Skipped,
    machine::ExecutionStatus::Expired,
];

/// List playbook executions, newest first.
#[utoipa::path(get, path = "/v2/executions", tag = "executions",
    params(("playbook_id" = Option<i64>, Query, minimum = 1, description = "Only this playbook's executions"),
           ("service_id" = Option<i64>, Query, minimum = 1, description = "Only executions for this service"),
           ("status" = Option<schema::ExecutionStatus>, Query, description = "Only executions with this status"),
           ("trigger" = Option<schema::ExecutionTrigger>, Query, description = "Only executions started this way"),
           ("start_date" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
           ("end_date" = Option<String>, Query, description = "Created at or before (RFC 3339)"),
           PageParams),
    responses((status = 200, description = "A page of executions, newest first", body = Envelope<Page<ExecutionOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_executions(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let status = match params.text("status") {
        None => None,
        Some(s) => Some(
            STATUSES
                .into_iter()
                .find(|st| st.as_str() == s)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status must be one of {}.",
                        STATUSES.map(machine::ExecutionStatus::as_str).join(", ")
                    ))
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let trigger = match params.text("trigger") {
        None => None,
        Some(t) => Some(ExecutionTrigger::parse(t).ok_or_else(|| {
            ApiError::bad_request("trigger must be one of manual, webhook, alert.")
        })?),
    };
    let filter = ExecutionFilter {
        playbook_id: params.int("playbook_id", 1, i64::MAX)?,
        service_id: params.int("service_id", 1, i64::MAX)?.map(ServiceId),
        status,
        trigger,
        start: params.time("start_date")?,
        end: params.time("end_date")?,
    };
    let found = app.store.list_executions(&filter, page).await?;
    let entries = found
        .entries
        .iter()
        .map(ExecutionOut::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

/// One execution with its step timeline.
#[utoipa::path(get, path = "/v2/executions/{execution_id}", tag = "executions",
    params(("execution_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The execution", body = Envelope<ExecutionOut>),
              (status = 400, description = "Bad id"),
              (status = 404, description = "Unknown execution")),
    security(("bearer" = [])))]
async fn get_execution(
    State(app): State<AppState>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = path_id(&raw, "execution")?;
    let record = app
        .store
        .get_execution(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No execution {id}.")))?;
    Ok(ok(StatusCode::OK, "", ExecutionOut::new(&record)?))
}

/// A decision's reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonIn {
    /// Why (required to reject; up to 1000 characters).
    #[serde(default)]
    #[schema(max_length = 1000)]
    reason: Option<String>,
}

fn reason(body: &ReasonIn, required: bool) -> Result<String, ApiError> {
    let text = body.reason.as_deref().map(str::trim).unwrap_or_default();
    if required && text.is_empty() {
        return Err(ApiError::bad_request("A reason is required."));
    }
    if text.chars().count() > MAX_REASON_LEN {
        return Err(ApiError::bad_request(format!(
            "reason must be at most {MAX_REASON_LEN} characters."
        )));
    }
    Ok(text.to_owned())
}

/// Applies a decision and answers with the execution, or the error envelope the decision's
/// refusal means (also used by the Slack buttons).
pub(crate) async fn decide(
    app: &AppState,
    raw: &str,
    event: Event,
    who: &str,
    done: &str,
) -> ApiResult {
    let id = path_id(raw, "execution")?;
    // Four-eyes by owner: another key of the requester's owner, or the Slack user linked to
    // it, is the same person (the state machine compares the recorded identities only).
    if let Event::Approve { by } = &event
        && let Some(requester) = app
            .store
            .get_execution(id)
            .await?
            .and_then(|r| r.requested_by)
        && !super::api_keys::second_pair_of_eyes(&*app.store, &requester, &by.0).await?
    {
        return Err(self_approval());
    }
    match app.engine.decide(id, event, who).await {
        Ok((record, _)) => Ok(ok(StatusCode::OK, done, ExecutionOut::new(&record)?)),
        Err(DecideError::NotFound) => Err(ApiError::not_found(format!("No execution {id}."))),
        Err(DecideError::Refused(machine::Refusal::SelfApproval)) => Err(self_approval()),
        Err(DecideError::Refused(r)) => Err(ApiError::conflict(format!(
            "{}.",
            upper_first(&r.to_string())
        ))),
        Err(DecideError::Lost) => Err(ApiError::conflict(
            "Another decision on this execution came first.",
        )),
        Err(DecideError::Corrupt(e)) => Err(ApiError::internal(&e)),
        Err(DecideError::Store(e)) => Err(e.into()),
    }
}

fn self_approval() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Whoever requested an execution cannot approve it; another person's key must.",
    )
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Approve an execution waiting for approval. The key that requested it cannot.
#[utoipa::path(post, path = "/v2/executions/{execution_id}/approve", tag = "executions",
    params(("execution_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Approved: the execution runs", body = Envelope<ExecutionOut>),
              (status = 400, description = "Bad id"),
              (status = 403, description = "The requester cannot approve their own execution"),
              (status = 404, description = "Unknown execution"),
              (status = 409, description = "Not waiting for approval, or another decision came first")),
    security(("bearer" = [])))]
async fn approve_execution(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult {
    let p = caller.require(Scope::Write)?;
    let by = OwnerId(owner_of(p));
    let who = actor(&headers, &caller)?;
    decide(
        &app,
        &raw,
        Event::Approve { by },
        &who.name,
        "Execution approved.",
    )
    .await
}

/// Reject an execution waiting for approval; it ends `cancelled`.
#[utoipa::path(post, path = "/v2/executions/{execution_id}/reject", tag = "executions",
    params(("execution_id" = i64, Path, minimum = 1)),
    request_body = ReasonIn,
    responses((status = 200, description = "Rejected", body = Envelope<ExecutionOut>),
              (status = 400, description = "Bad id, or no reason"),
              (status = 404, description = "Unknown execution"),
              (status = 409, description = "Not waiting for approval, or another decision came first")),
    security(("bearer" = [])))]
async fn reject_execution(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonIn>,
) -> ApiResult {
    let p = caller.require(Scope::Write)?;
    let by = OwnerId(owner_of(p));
    let who = actor(&headers, &caller)?;
    let reason = reason(&body, true)?;
    decide(
        &app,
        &raw,
        Event::Reject { by, reason },
        &who.name,
        "Execution rejected.",
    )
    .await
}

/// Cancel an execution in any state that has not ended; queued agent runs are cancelled.
#[utoipa::path(post, path = "/v2/executions/{execution_id}/cancel", tag = "executions",
    params(("execution_id" = i64, Path, minimum = 1)),
    request_body(content = ReasonIn, description = "Optional reason"),
    responses((status = 200, description = "Cancelled", body = Envelope<ExecutionOut>),
              (status = 400, description = "Bad id or reason"),
              (status = 404, description = "Unknown execution"),
              (status = 409, description = "Already ended, or another decision came first")),
    security(("bearer" = [])))]
async fn cancel_execution(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ReasonIn>,
) -> ApiResult {
    let p = caller.require(Scope::Write)?;
    let by = Some(OwnerId(owner_of(p)));
    let who = actor(&headers, &caller)?;
    let reason = reason(&body, false)?;
    let reason = if reason.is_empty() {
        "no reason given".to_owned()
    } else {
        reason
    };
    decide(
        &app,
        &raw,
        Event::Cancel { by, reason },
        &who.name,
        "Execution cancelled.",
    )
    .await
}
