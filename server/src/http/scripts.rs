//! v2 registered scripts: the remediation scripts agents may run, each change a new version
//! that an admin approves or rejects.
//!
//! Names, interpreters and the size limit are the agent protocol's ([`medic_protocol`]), so
//! nothing the server accepts is refused by an agent for its shape. The server computes each
//! version's SHA-256. Registering content equal to the latest version's changes nothing. No key
//! of the owner whose key registered a version may decide it (four-eyes compares owners, so a
//! second key minted by the same admin is not a second person).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{
    Caller, JsonBody, OptionalJsonBody, Page, PageParams, Params, actor, paginated, path_id,
};
use super::legacy::clean_text;
use super::schema::{self, Time, time};
use crate::domain::Scope;
use crate::store::{
    DecideOutcome, Decision, NewScriptVersion, RegisterOutcome, Script, ScriptDecision,
    ScriptFilter, ScriptId, ScriptStatus, ScriptVersion, parse_interpreter,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scripts, register_script))
        .routes(routes!(get_script))
        .routes(routes!(approve_version))
        .routes(routes!(reject_version))
        .routes(routes!(approve_latest))
        .routes(routes!(reject_latest))
}

/// Longest description or decision reason.
const MAX_TEXT: usize = 1024;

/// The v2 representation of a script version; `content` only where a route says so.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionOut {
    #[schema(minimum = 1)]
    pub version: i32,
    /// `bash`, `sh` or `python3`.
    pub interpreter: String,
    /// Hex SHA-256 of the content's UTF-8 bytes.
    pub sha256: String,
    pub description: Option<String>,
    pub status: schema::ScriptStatus,
    pub created_by: String,
    /// The API key that registered the version.
    pub created_by_key: Option<String>,
    /// The owner of that key (four-eyes compares owners).
    pub created_by_owner: Option<String>,
    pub created_at: Time,
    pub decided_by: Option<String>,
    pub decided_by_key: Option<String>,
    pub decided_by_owner: Option<String>,
    pub decided_at: Option<Time>,
    pub decision_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl VersionOut {
    fn new(v: &ScriptVersion, with_content: bool) -> Self {
        Self {
            version: v.version,
            interpreter: v.interpreter.as_str().to_owned(),
            sha256: v.sha256.clone(),
            description: v.description.clone(),
            status: v.status.into(),
            created_by: v.created_by.clone(),
            created_by_key: v.created_by_key.as_ref().map(|k| k.0.clone()),
            created_by_owner: v.created_by_owner.as_ref().map(|o| o.0.clone()),
            created_at: v.created_at.into(),
            decided_by: v.decided_by.clone(),
            decided_by_key: v.decided_by_key.as_ref().map(|k| k.0.clone()),
            decided_by_owner: v.decided_by_owner.as_ref().map(|o| o.0.clone()),
            decided_at: time(v.decided_at),
            decision_reason: v.decision_reason.clone(),
            content: with_content.then(|| v.content.clone()),
        }
    }
}

/// A script in a list: its latest version, without content.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScriptSummaryOut {
    pub script_id: i64,
    pub name: String,
    pub created_at: Time,
    pub latest_version: Option<VersionOut>,
}

impl From<&Script> for ScriptSummaryOut {
    fn from(s: &Script) -> Self {
        Self {
            script_id: s.id.0,
            name: s.name.clone(),
            created_at: s.created_at.into(),
            latest_version: s.versions.last().map(|v| VersionOut::new(v, false)),
        }
    }
}

/// A script with every version, oldest first, content included.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScriptOut {
    pub script_id: i64,
    pub name: String,
    pub created_at: Time,
    pub versions: Vec<VersionOut>,
}

impl From<&Script> for ScriptOut {
    fn from(s: &Script) -> Self {
        Self {
            script_id: s.id.0,
            name: s.name.clone(),
            created_at: s.created_at.into(),
            versions: s
                .versions
                .iter()
                .map(|v| VersionOut::new(v, true))
                .collect(),
        }
    }
}

/// A registered version in brief.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisteredOut {
    pub script_id: i64,
    pub name: String,
    pub version: i32,
    pub sha256: String,
    pub status: schema::ScriptStatus,
}

impl RegisteredOut {
    fn new(name: &str, v: &ScriptVersion) -> Self {
        Self {
            script_id: v.script_id.0,
            name: name.to_owned(),
            version: v.version,
            sha256: v.sha256.clone(),
            status: v.status.into(),
        }
    }
}

/// A decided version with its script.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecidedOut {
    pub script_id: i64,
    pub name: String,
    #[serde(flatten)]
    pub version: VersionOut,
}

fn optional_text(raw: Option<&str>, field: &str) -> Result<Option<String>, ApiError> {
    Ok(raw
        .map(|r| clean_text(r, field, MAX_TEXT))
        .transpose()?
        .filter(|s| !s.is_empty()))
}

/// Hex SHA-256 of the content's UTF-8 bytes.
pub fn sha256_hex(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// List scripts, each with its latest version (without content).
#[utoipa::path(get, path = "/v2/scripts", tag = "scripts",
    params(("status" = Option<schema::ScriptStatus>, Query, description = "Status of the latest version"),
           ("name" = Option<String>, Query, description = "Case-insensitive substring of the name"),
           PageParams),
    responses((status = 200, description = "A page of scripts", body = Envelope<Page<ScriptSummaryOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_scripts(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let status = params
        .text("status")
        .map(|s| {
            ScriptStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status must be pending, approved or rejected.")
            })
        })
        .transpose()?;
    let filter = ScriptFilter {
        status,
        name_contains: params
            .text("name")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    };
    let found = app.store.list_scripts(&filter, page).await?;
    let entries: Vec<ScriptSummaryOut> = found.entries.iter().map(ScriptSummaryOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterScriptIn {
    /// `A-Z a-z 0-9 . _ -`, starting with a letter or digit; unique case-insensitively.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length = 128)]
    name: String,
    /// `bash`, `sh` or `python3`.
    #[schema(pattern = "^(bash|sh|python3)$")]
    interpreter: String,
    /// The script's text (UTF-8, not blank, no NUL, at most 256 KiB; longer is a 413).
    #[schema(min_length = 1)]
    content: String,
    #[serde(default)]
    #[schema(max_length = 1024)]
    description: Option<String>,
}

/// Register a script, or its next version (pending until approved).
#[utoipa::path(post, path = "/v2/scripts", tag = "scripts", request_body = RegisterScriptIn,
    responses((status = 201, description = "New version registered", body = Envelope<RegisteredOut>),
              (status = 200, description = "Content equals the latest version's; nothing changed",
               body = Envelope<RegisteredOut>),
              (status = 400, description = "Invalid"), (status = 413, description = "Content too large")),
    security(("bearer" = [])))]
async fn register_script(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RegisterScriptIn>,
) -> ApiResult {
    let principal = caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    medic_protocol::validate::validate_script_name(&body.name)
        .map_err(|e| ApiError::bad_request(format!("name: {e}.")))?;
    let interpreter = parse_interpreter(&body.interpreter)
        .ok_or_else(|| ApiError::bad_request("interpreter must be bash, sh or python3."))?;
    if body.content.len() > medic_protocol::MAX_SCRIPT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "content is longer than {} bytes.",
                medic_protocol::MAX_SCRIPT_BYTES
            ),
        ));
    }
    if body.content.trim().is_empty() {
        return Err(ApiError::bad_request("content must not be empty."));
    }
    if body.content.contains('\0') {
        return Err(ApiError::bad_request("content must not contain NUL."));
    }
    let now = app.clock.now();
    let sha256 = sha256_hex(&body.content);
    let new = NewScriptVersion {
        // The store adds `script_id` and `version` once the version exists.
        audit: Some(entry(
            "script_registered",
            &who,
            None,
            json!({ "name": body.name, "sha256": sha256, "status": schema::ScriptStatus::Pending }),
        )),
        name: body.name,
        interpreter,
        sha256,
        content: body.content,
        description: optional_text(body.description.as_deref(), "description")?,
        created_by: who.label(),
        created_by_key: principal.key_id.clone(),
        created_by_owner: principal.owner_id.clone(),
        at: now,
    };
    match app.store.register_script_version(&new).await? {
        RegisterOutcome::Created { name, version } => {
            let out = RegisteredOut::new(&name, &version);
            Ok(ok(
                StatusCode::CREATED,
                "Script version registered; it needs approval by another person's admin key.",
                out,
            ))
        }
        RegisterOutcome::Unchanged { name, version } => Ok(ok(
            StatusCode::OK,
            "Content equals the latest version's; nothing changed.",
            RegisteredOut::new(&name, &version),
        )),
    }
}

/// Fetch one script with every version, content included.
#[utoipa::path(get, path = "/v2/scripts/{script_id}", tag = "scripts",
    params(("script_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The script", body = Envelope<ScriptOut>),
              (status = 400, description = "Bad script_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_script(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let s = load(&app, &id).await?;
    Ok(ok(StatusCode::OK, "", ScriptOut::from(&s)))
}

async fn load(app: &AppState, raw: &str) -> Result<Script, ApiError> {
    let id = ScriptId(path_id(raw, "script_id")?);
    app.store
        .get_script(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Script {id} was not found.")))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideIn {
    #[serde(default)]
    #[schema(max_length = 1024)]
    reason: Option<String>,
}

/// Approves or rejects `version` of the script (`None`: the latest).
async fn decide(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    raw_id: &str,
    raw_version: Option<&str>,
    body: DecideIn,
    decision: Decision,
) -> ApiResult {
    let principal = caller.require(Scope::Admin)?;
    let who = actor(headers, caller)?;
    let reason = optional_text(body.reason.as_deref(), "reason")?;
    let script = load(app, raw_id).await?;
    let target = match raw_version {
        Some(raw) => {
            let n = i32::try_from(path_id(raw, "version")?)
                .map_err(|_| ApiError::bad_request("version is out of range."))?;
            script
                .versions
                .iter()
                .find(|v| v.version == n)
                .ok_or_else(|| {
                    ApiError::not_found(format!("Script {} has no version {n}.", script.id))
                })?
        }
        None => script
            .versions
            .last()
            .ok_or_else(|| ApiError::not_found(format!("Script {} has no versions.", script.id)))?,
    };
    let (action, message) = match decision {
        Decision::Approve => ("script_approved", "Script version approved."),
        Decision::Reject => ("script_rejected", "Script version rejected."),
    };
    let now = app.clock.now();
    let mut details = json!(RegisteredOut::new(&script.name, target));
    details["status"] = json!(schema::ScriptStatus::from(decision.status()));
    details["reason"] = json!(reason);
    let d = ScriptDecision {
        decision,
        actor: who.label(),
        key_id: principal.key_id.clone(),
        owner_id: principal.owner_id.clone(),
        reason: reason.clone(),
        at: now,
        audit: Some(entry(action, &who, None, details)),
    };
    match app.store.decide_script_version(target.id, &d).await? {
        DecideOutcome::Decided(v) => Ok(ok(
            StatusCode::OK,
            message,
            DecidedOut {
                script_id: v.script_id.0,
                name: script.name.clone(),
                version: VersionOut::new(&v, false),
            },
        )),
        DecideOutcome::AlreadyDecided(v) => Err(ApiError::conflict(format!(
            "Version {} of script {} is already {}.",
            v.version,
            script.name,
            v.status.as_str()
        ))),
        DecideOutcome::SameOwner => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "This script version was registered with a key of the same owner; another person's \
             admin key must approve or reject it (keys created through the API belong to their \
             creator's owner).",
        )),
        DecideOutcome::NotFound => Err(ApiError::not_found(format!(
            "Version {} of script {} was not found.",
            target.version, script.name
        ))),
    }
}

/// Approve one version (admin; not the key that registered it).
#[utoipa::path(post, path = "/v2/scripts/{script_id}/versions/{version}/approve", tag = "scripts",
    params(("script_id" = i64, Path, minimum = 1), ("version" = i32, Path, minimum = 1)),
    request_body(content = DecideIn, description = "Optional"),
    responses((status = 200, description = "Approved", body = Envelope<DecidedOut>), (status = 403, description = "Same key or no admin scope"),
              (status = 404, description = "Not found"), (status = 409, description = "Already decided")),
    security(("bearer" = [])))]
async fn approve_version(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<DecideIn>,
) -> ApiResult {
    decide(
        &app,
        &caller,
        &headers,
        &id,
        Some(&version),
        body,
        Decision::Approve,
    )
    .await
}

/// Reject one version (admin; not the key that registered it).
#[utoipa::path(post, path = "/v2/scripts/{script_id}/versions/{version}/reject", tag = "scripts",
    params(("script_id" = i64, Path, minimum = 1), ("version" = i32, Path, minimum = 1)),
    request_body(content = DecideIn, description = "Optional"),
    responses((status = 200, description = "Rejected", body = Envelope<DecidedOut>), (status = 403, description = "Same key or no admin scope"),
              (status = 404, description = "Not found"), (status = 409, description = "Already decided")),
    security(("bearer" = [])))]
async fn reject_version(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, version)): Path<(String, String)>,
    OptionalJsonBody(body): OptionalJsonBody<DecideIn>,
) -> ApiResult {
    decide(
        &app,
        &caller,
        &headers,
        &id,
        Some(&version),
        body,
        Decision::Reject,
    )
    .await
}

/// Approve the latest version.
#[utoipa::path(post, path = "/v2/scripts/{script_id}/approve", tag = "scripts",
    params(("script_id" = i64, Path, minimum = 1)),
    request_body(content = DecideIn, description = "Optional"),
    responses((status = 200, description = "Approved", body = Envelope<DecidedOut>), (status = 403, description = "Same key or no admin scope"),
              (status = 404, description = "Not found"), (status = 409, description = "Already decided")),
    security(("bearer" = [])))]
async fn approve_latest(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<DecideIn>,
) -> ApiResult {
    decide(&app, &caller, &headers, &id, None, body, Decision::Approve).await
}

/// Reject the latest version.
#[utoipa::path(post, path = "/v2/scripts/{script_id}/reject", tag = "scripts",
    params(("script_id" = i64, Path, minimum = 1)),
    request_body(content = DecideIn, description = "Optional"),
    responses((status = 200, description = "Rejected", body = Envelope<DecidedOut>), (status = 403, description = "Same key or no admin scope"),
              (status = 404, description = "Not found"), (status = 409, description = "Already decided")),
    security(("bearer" = [])))]
async fn reject_latest(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<DecideIn>,
) -> ApiResult {
    decide(&app, &caller, &headers, &id, None, body, Decision::Reject).await
}
