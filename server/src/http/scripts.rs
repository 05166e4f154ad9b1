//! v2 registered scripts: the remediation scripts agents may run, each change a new version
//! that an admin approves or rejects.
//!
//! Names, interpreters and the size limit are the agent protocol's ([`medic_protocol`]), so
//! nothing the server accepts is refused by an agent for its shape. The server computes each
//! version's SHA-256. Registering content equal to the latest version's changes nothing. The
//! API key that registered a version may not decide it; the bootstrap admin key, which has no
//! key id, counts as one key of its own.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, ok};
use super::extract::{Caller, JsonBody, OptionalJsonBody, Params, actor, paginated, path_id};
use super::legacy::clean_text;
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

/// The v2 representation of a version; `content` only when asked for.
fn v2_version(v: &ScriptVersion, with_content: bool) -> Value {
    let mut out = json!({
        "version": v.version,
        "interpreter": v.interpreter.as_str(),
        "sha256": v.sha256,
        "description": v.description,
        "status": v.status,
        "created_by": v.created_by,
        "created_by_key": v.created_by_key.as_ref().map(|k| k.0.as_str()),
        "created_at": v.created_at,
        "decided_by": v.decided_by,
        "decided_by_key": v.decided_by_key.as_ref().map(|k| k.0.as_str()),
        "decided_at": v.decided_at,
        "decision_reason": v.decision_reason,
    });
    if with_content {
        out["content"] = json!(v.content);
    }
    out
}

fn v2_script(s: &Script, with_content: bool) -> Value {
    let mut out = json!({
        "script_id": s.id,
        "name": s.name,
        "created_at": s.created_at,
    });
    if with_content {
        out["versions"] = s
            .versions
            .iter()
            .map(|v| v2_version(v, true))
            .collect::<Vec<_>>()
            .into();
    } else {
        out["latest_version"] = s
            .versions
            .last()
            .map_or(Value::Null, |v| v2_version(v, false));
    }
    out
}

fn summary(name: &str, v: &ScriptVersion) -> Value {
    json!({
        "script_id": v.script_id,
        "name": name,
        "version": v.version,
        "sha256": v.sha256,
        "status": v.status,
    })
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
    params(("status" = Option<String>, Query, description = "Status of the latest version: pending, approved or rejected"),
           ("name" = Option<String>, Query, description = "Case-insensitive substring of the name"),
           ("limit" = Option<u32>, Query, description = "1..250, default 50"), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "A page of scripts"), (status = 400, description = "Bad filter")),
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
    let entries: Vec<Value> = found.entries.iter().map(|s| v2_script(s, false)).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(&entries, found.total_count, page),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterScriptIn {
    /// `A-Z a-z 0-9 . _ -`, starting with a letter or digit; unique case-insensitively.
    name: String,
    /// `bash`, `sh` or `python3`.
    interpreter: String,
    /// The script's text (UTF-8, no NUL, at most the protocol's script size limit).
    content: String,
    #[serde(default)]
    description: Option<String>,
}

/// Register a script, or its next version (pending until approved).
#[utoipa::path(post, path = "/v2/scripts", tag = "scripts", request_body = RegisterScriptIn,
    responses((status = 201, description = "New version registered"),
              (status = 200, description = "Content equals the latest version's; nothing changed"),
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
            json!({ "name": body.name, "sha256": sha256, "status": ScriptStatus::Pending }),
        )),
        name: body.name,
        interpreter,
        sha256,
        content: body.content,
        description: optional_text(body.description.as_deref(), "description")?,
        created_by: who.clone(),
        created_by_key: principal.key_id.clone(),
        at: now,
    };
    match app.store.register_script_version(&new).await? {
        RegisterOutcome::Created { name, version } => {
            let out = summary(&name, &version);
            Ok(ok(
                StatusCode::CREATED,
                "Script version registered; it needs approval by another admin key.",
                out,
            ))
        }
        RegisterOutcome::Unchanged { name, version } => Ok(ok(
            StatusCode::OK,
            "Content equals the latest version's; nothing changed.",
            summary(&name, &version),
        )),
    }
}

/// Fetch one script with every version, content included.
#[utoipa::path(get, path = "/v2/scripts/{script_id}", tag = "scripts",
    params(("script_id" = i64, Path)),
    responses((status = 200, description = "The script"), (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_script(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let s = load(&app, &id).await?;
    Ok(ok(StatusCode::OK, "", v2_script(&s, true)))
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
    let mut details = summary(&script.name, target);
    details["status"] = json!(decision.status());
    details["reason"] = json!(reason);
    let d = ScriptDecision {
        decision,
        actor: who.clone(),
        key_id: principal.key_id.clone(),
        reason: reason.clone(),
        at: now,
        audit: Some(entry(action, &who, None, details)),
    };
    match app.store.decide_script_version(target.id, &d).await? {
        DecideOutcome::Decided(v) => {
            let mut out = v2_version(&v, false);
            out["script_id"] = json!(v.script_id);
            out["name"] = json!(script.name);
            Ok(ok(StatusCode::OK, message, out))
        }
        DecideOutcome::AlreadyDecided(v) => Err(ApiError::conflict(format!(
            "Version {} of script {} is already {}.",
            v.version,
            script.name,
            v.status.as_str()
        ))),
        DecideOutcome::SameKey => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "The API key that registered this script version may not approve or reject it; \
             another admin key must decide.",
        )),
        DecideOutcome::NotFound => Err(ApiError::not_found(format!(
            "Version {} of script {} was not found.",
            target.version, script.name
        ))),
    }
}

/// Approve one version (admin; not the key that registered it).
#[utoipa::path(post, path = "/v2/scripts/{script_id}/versions/{version}/approve", tag = "scripts",
    params(("script_id" = i64, Path), ("version" = i32, Path)), request_body = DecideIn,
    responses((status = 200, description = "Approved"), (status = 403, description = "Same key or no admin scope"),
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
    params(("script_id" = i64, Path), ("version" = i32, Path)), request_body = DecideIn,
    responses((status = 200, description = "Rejected"), (status = 403, description = "Same key or no admin scope"),
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
    params(("script_id" = i64, Path)), request_body = DecideIn,
    responses((status = 200, description = "Approved"), (status = 403, description = "Same key or no admin scope"),
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
    params(("script_id" = i64, Path)), request_body = DecideIn,
    responses((status = 200, description = "Rejected"), (status = 403, description = "Same key or no admin scope"),
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
