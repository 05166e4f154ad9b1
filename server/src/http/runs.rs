//! v2 agent runs: run an approved script version on agents chosen by id or by labels, and read
//! how it went.
//!
//! `POST /v2/runs` queues one run per chosen agent durably (all in one transaction) and tells
//! each agent's session (if it is connected to this replica); the [`gateway`](crate::gateway)
//! sends them, stores the agents' reports and acknowledges them. A run waits in the queue
//! while its agent is disconnected. Only approved versions can be queued; the agent checks
//! approval, its allowlist and the hash again, and a refusal is stored as a `refused` run with
//! the agent's reason. A run still queued at its expiry (`expires_in_seconds`) ends `expired`;
//! one whose agent vanished mid-run ends `lost` (see [`gateway`](crate::gateway)).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use medic_protocol::{Interpreter, RunId, RunRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, JsonBody, Page, PageParams, Params, actor, paginated};
use super::schema::{self, Time, time};
use crate::domain::Scope;
use crate::store::{
    AgentFilter, AgentRecord, AgentRun, AgentRunStatus, NewAgentRun, PageRequest, RunFilter,
    ScriptId, ScriptStatus,
};

/// Timeout of a run that names none.
const DEFAULT_TIMEOUT_SECONDS: u32 = 300;

/// How long a run may wait in the queue for its agent when the request names no expiry.
const DEFAULT_EXPIRES_IN_SECONDS: u32 = 3600;

/// The longest a run may wait in the queue (7 days).
const MAX_EXPIRES_IN_SECONDS: u32 = 7 * 86_400;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs, create_run))
        .routes(routes!(get_run))
}

/// The most agents one `POST /v2/runs` may reach.
pub const MAX_FAN_OUT: usize = 1000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRunIn {
    /// The target, exactly one of `agent_id`, `agent_ids` and `labels`: one agent (the answer
    /// is that run) …
    #[serde(default)]
    agent_id: Option<String>,
    /// … these agents (one run each, no repeats; the answer lists them) …
    #[serde(default)]
    #[schema(min_items = 1, max_items = 1000)]
    agent_ids: Option<Vec<String>>,
    /// … or every registered, unrevoked agent carrying all these labels (one run each).
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    /// The registered script, by id or by `script` (its name): exactly one.
    #[serde(default)]
    #[schema(minimum = 1)]
    script_id: Option<i64>,
    #[serde(default)]
    script: Option<String>,
    /// The version to run; the latest approved one when absent.
    #[serde(default)]
    #[schema(minimum = 1)]
    version: Option<i32>,
    /// Passed to the script as `MEDIC_PARAM_<NAME>` variables.
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    /// Default 300.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3600)]
    timeout_seconds: Option<u32>,
    /// How long the run may wait for its agent before it is `expired` and never sent
    /// (default 3600).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604800)]
    expires_in_seconds: Option<u32>,
}

/// A run of a script on an agent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunOut {
    pub run_id: String,
    pub agent_id: String,
    pub script_id: i64,
    pub script_version: i32,
    pub parameters: BTreeMap<String, String>,
    pub timeout_seconds: i32,
    pub status: schema::AgentRunStatus,
    pub requested_by: String,
    pub created_at: Time,
    pub dispatched_at: Option<Time>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub exit_code: Option<i32>,
    /// The signal that ended the script, if one did.
    pub signal: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: Option<bool>,
    pub stderr_truncated: Option<bool>,
    pub duration_ms: Option<i64>,
    /// Why the agent refused the run (`refused` runs).
    pub refusal_reason: Option<String>,
    pub refusal_detail: Option<String>,
    /// When a run still queued expires.
    pub expires_at: Option<Time>,
    /// When the server stored the agent's result or refusal.
    pub reported_at: Option<Time>,
}

impl From<&AgentRun> for RunOut {
    fn from(r: &AgentRun) -> Self {
        Self {
            run_id: r.run_id.clone(),
            agent_id: r.agent_id.clone(),
            script_id: r.script_id.0,
            script_version: r.script_version,
            parameters: r.parameters.clone(),
            timeout_seconds: r.timeout_seconds,
            status: r.status.into(),
            requested_by: r.requested_by.clone(),
            created_at: r.created_at.into(),
            dispatched_at: time(r.dispatched_at),
            started_at: time(r.started_at),
            finished_at: time(r.finished_at),
            exit_code: r.exit_code,
            signal: r.signal,
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
            refusal_reason: r.refusal_reason.clone(),
            refusal_detail: r.refusal_detail.clone(),
            expires_at: time(r.expires_at),
            reported_at: time(r.reported_at),
        }
    }
}

/// The runs one request queued on several agents.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunsQueuedOut {
    pub run_ids: Vec<String>,
    pub runs: Vec<RunOut>,
}

/// What `POST /v2/runs` answers: the run (`agent_id`), or every run queued (`agent_ids`,
/// `labels`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum QueuedOut {
    One(Box<RunOut>),
    Many(RunsQueuedOut),
}

/// Run an approved script version on one agent, on several by id, or on every agent with
/// some labels.
#[utoipa::path(post, path = "/v2/runs", tag = "agents", request_body = CreateRunIn,
    responses((status = 201, description = "Queued: the run (`agent_id`), or `{run_ids, runs}` (`agent_ids`, `labels`)",
               body = Envelope<QueuedOut>),
              (status = 400, description = "Invalid target, parameters, timeout or expiry"),
              (status = 404, description = "Unknown agent, script or version, or no agent has the labels"),
              (status = 409, description = "Revoked agent, or the version is not approved")),
    security(("bearer" = [])))]
async fn create_run(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRunIn>,
) -> ApiResult {
    caller.require(Scope::Run)?;
    let who = actor(&headers, &caller)?;
    let script_id = match (body.script_id, &body.script) {
        (Some(id), None) => ScriptId(id),
        (None, Some(name)) => app
            .store
            .script_id_by_name(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("No script named {name:?}.")))?,
        _ => {
            return Err(ApiError::bad_request(
                "Give exactly one of script_id and script (its name).",
            ));
        }
    };
    let script = app
        .store
        .get_script(script_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No script {}.", script_id.0)))?;
    let version = match body.version {
        Some(n) => script
            .versions
            .iter()
            .find(|v| v.version == n)
            .ok_or_else(|| {
                ApiError::not_found(format!("Script {} has no version {n}.", script.id.0))
            })?,
        None => script
            .versions
            .iter()
            .rev()
            .find(|v| v.status == ScriptStatus::Approved)
            .ok_or_else(|| {
                ApiError::conflict(format!("Script {:?} has no approved version.", script.name))
            })?,
    };
    if version.status != ScriptStatus::Approved {
        return Err(ApiError::conflict(format!(
            "Version {} of script {:?} is not approved.",
            version.version, script.name
        )));
    }
    let timeout = body.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let expires_in = body
        .expires_in_seconds
        .unwrap_or(DEFAULT_EXPIRES_IN_SECONDS);
    if !(1..=MAX_EXPIRES_IN_SECONDS).contains(&expires_in) {
        return Err(ApiError::bad_request(format!(
            "expires_in_seconds must be between 1 and {MAX_EXPIRES_IN_SECONDS}."
        )));
    }
    // The agent would refuse what the protocol's rules refuse; say so now instead.
    let probe = RunRequest {
        run_id: RunId::new(uuid::Uuid::new_v4().to_string()),
        script: script.name.clone(),
        version: u32::try_from(version.version).unwrap_or(0),
        interpreter: Interpreter::Sh,
        content: version.content.clone(),
        sha256: version.sha256.clone(),
        approved: true,
        parameters: body.parameters.clone(),
        timeout_seconds: timeout,
        output_cap_bytes: None,
        stream_output: false,
        expires_at: None,
    };
    probe
        .validate()
        .map_err(|e| ApiError::bad_request(format!("{e}.")))?;
    let single = body.agent_id.is_some();
    let agents = target_agents(&app, body.agent_id, body.agent_ids, body.labels).await?;

    let now = app.clock.now();
    let new: Vec<NewAgentRun> = agents
        .iter()
        .map(|agent| {
            let run_id = uuid::Uuid::new_v4().to_string();
            NewAgentRun {
                audit: Some(entry(
                    "agent_run_requested",
                    &who,
                    agent.service_id,
                    json!({
                        "run_id": run_id, "agent_id": agent.id, "script_id": script.id.0,
                        "script": script.name, "version": version.version,
                    }),
                )),
                id: run_id,
                agent_id: agent.id.clone(),
                script_id: script.id,
                script_version: version.version,
                parameters: body.parameters.clone(),
                secret_parameters: BTreeMap::new(),
                timeout_seconds: i32::try_from(timeout).unwrap_or(i32::MAX),
                requested_by: who.label(),
                at: now,
                expires_at: now.plus_millis(i64::from(expires_in) * 1000),
            }
        })
        .collect();
    let runs = app.store.create_agent_runs(&new).await?;
    metrics::counter!(crate::gateway::RUNS_METRIC, "status" => "queued")
        .increment(runs.len() as u64);
    for run in &runs {
        app.gateway.notify_run(&run.agent_id);
    }
    if single && let Some(run) = runs.first() {
        return Ok(ok(
            StatusCode::CREATED,
            "Run queued.",
            QueuedOut::One(Box::new(run.into())),
        ));
    }
    Ok(ok(
        StatusCode::CREATED,
        &format!("{} runs queued.", runs.len()),
        QueuedOut::Many(RunsQueuedOut {
            run_ids: runs.iter().map(|r| r.run_id.clone()).collect(),
            runs: runs.iter().map(RunOut::from).collect(),
        }),
    ))
}

/// The agents a run request names: exactly one of one id, a list of ids (each registered and
/// not revoked, no repeats) or a label selector (registered, unrevoked agents carrying every
/// label); at most [`MAX_FAN_OUT`], at least one.
async fn target_agents(
    app: &AppState,
    agent_id: Option<String>,
    agent_ids: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
) -> Result<Vec<AgentRecord>, ApiError> {
    let ids = match (agent_id, agent_ids, labels) {
        (Some(id), None, None) => vec![id],
        (None, Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_FAN_OUT {
                return Err(ApiError::bad_request(format!(
                    "agent_ids must list 1 to {MAX_FAN_OUT} agents."
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = ids.iter().find(|id| !seen.insert(id.as_str())) {
                return Err(ApiError::bad_request(format!(
                    "agent_ids lists {twice:?} more than once."
                )));
            }
            ids
        }
        (None, None, Some(labels)) => return agents_with_labels(app, labels).await,
        _ => {
            return Err(ApiError::bad_request(
                "Give exactly one target: agent_id, agent_ids or labels.",
            ));
        }
    };
    let mut agents = Vec::with_capacity(ids.len());
    for id in ids {
        let agent = app
            .store
            .get_agent(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("No agent {id:?} is registered.")))?;
        if agent.revoked_at.is_some() {
            return Err(ApiError::conflict(format!("Agent {id:?} is revoked.")));
        }
        agents.push(agent);
    }
    Ok(agents)
}

async fn agents_with_labels(
    app: &AppState,
    labels: BTreeMap<String, String>,
) -> Result<Vec<AgentRecord>, ApiError> {
    if labels.is_empty() {
        return Err(ApiError::bad_request(
            "labels must name at least one label (an empty selector would pick every agent).",
        ));
    }
    medic_protocol::validate::validate_labels(&labels)
        .map_err(|e| ApiError::bad_request(format!("labels: {e}.")))?;
    let filter = AgentFilter {
        revoked: Some(false),
        labels: labels.clone(),
        ..AgentFilter::default()
    };
    let page = PageRequest {
        limit: u32::try_from(MAX_FAN_OUT + 1).unwrap_or(u32::MAX),
        offset: 0,
    };
    let found = app.store.list_agents(&filter, page).await?;
    if found.entries.is_empty() {
        return Err(ApiError::not_found(format!(
            "No registered agent carries the labels {}.",
            json!(labels)
        )));
    }
    if found.entries.len() > MAX_FAN_OUT {
        return Err(ApiError::bad_request(format!(
            "The labels {} match {} agents; one request may reach at most {MAX_FAN_OUT}.",
            json!(labels),
            found.total_count
        )));
    }
    Ok(found.entries)
}

/// List runs, newest first.
#[utoipa::path(get, path = "/v2/runs", tag = "agents",
    params(("agent_id" = Option<String>, Query, description = "Only this agent's runs"),
           ("status" = Option<schema::AgentRunStatus>, Query, description = "Only runs with this status"),
           ("script_id" = Option<i64>, Query, minimum = 1, description = "Only runs of this script"),
           PageParams),
    responses((status = 200, description = "A page of runs, newest first", body = Envelope<Page<RunOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_runs(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let status = match params.text("status") {
        None => None,
        Some(s) => Some(AgentRunStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status must be one of {}.",
                AgentRunStatus::ALL.map(AgentRunStatus::as_str).join(", ")
            ))
        })?),
    };
    let filter = RunFilter {
        agent_id: params.text("agent_id").map(str::to_owned),
        status,
        script_id: params.int("script_id", 1, i64::MAX)?.map(ScriptId),
    };
    let found = app.store.list_agent_runs(&filter, page).await?;
    let entries: Vec<RunOut> = found.entries.iter().map(RunOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

/// One run, with its output once it has ended. With `wait_seconds`, a run that has not ended
/// is answered when it ends or when that many seconds have passed, whichever is first (the
/// answer then shows the run as it is); never later than a second before the request timeout.
#[utoipa::path(get, path = "/v2/runs/{run_id}", tag = "agents",
    params(("run_id" = String, Path),
           ("wait_seconds" = Option<u32>, Query, minimum = 0, maximum = 60,
            description = "Wait up to this long for the run to end (default 0)")),
    responses((status = 200, description = "The run", body = Envelope<RunOut>),
              (status = 400, description = "Bad wait_seconds"),
               (status = 404, description = "Unknown run")),
    security(("bearer" = [])))]
async fn get_run(
    State(app): State<AppState>,
    caller: Caller,
    Path(run_id): Path<String>,
    params: Params,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let max_wait = i64::try_from(crate::gateway::MAX_WAIT.as_secs()).unwrap_or(i64::MAX);
    let wait = params.int("wait_seconds", 0, max_wait)?.unwrap_or(0);
    let read = || async {
        let run = app
            .store
            .get_agent_run(&run_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("No run {run_id:?}.")))?;
        let ended = run.status.is_final();
        Ok::<_, ApiError>((run, ended))
    };
    let run = if wait == 0 {
        read().await?.0
    } else {
        // Answered a second before the request timeout would turn the wait into a 503.
        let at_most = std::time::Duration::from_secs(u64::try_from(wait).unwrap_or(0)).min(
            app.config
                .request_timeout
                .saturating_sub(std::time::Duration::from_secs(1)),
        );
        app.gateway
            .runs_ended()
            .wait_for(&run_id, at_most, read)
            .await?
    };
    Ok(ok(StatusCode::OK, "", RunOut::from(&run)))
}
