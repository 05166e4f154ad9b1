//! The legacy v1 routes, exactly as COMPAT.md states them: `POST/GET /heartbeat`,
//! `POST/GET /service`, `POST/GET /service/<heartbeat_name>`, `GET /alerts` and
//! `GET /v1/healthcheck/network`. Booleans are 0/1 here and intervals are minutes; the v2 API
//! speaks seconds and real booleans.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, ok};
use super::extract::{Caller, JsonBody, Params, actor};
use crate::domain::service::name_key;
use crate::domain::{HeartbeatName, Priority, Scope, ServiceState, SnapshotAction};
use crate::store::batch::WriteError;
use crate::store::{
    Alert, AlertState, ChangeMeta, CreateOutcome, HeartbeatOutcome, HeartbeatQuery, MuteChange,
    NewHeartbeat, NewService, Service, ServiceFilter, ServicePatch,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_heartbeat, get_heartbeats))
        .routes(routes!(post_service, get_services))
        .routes(routes!(update_service, get_service))
        .routes(routes!(get_alerts))
        .routes(routes!(network_check))
}

/// Longest accepted heartbeat status or run id.
pub const MAX_STATUS_LEN: usize = 255;
/// Most rows `GET /heartbeat` returns (also its default).
pub const MAX_HEARTBEAT_ROWS: i64 = 250;
/// Rows `GET /alerts` returns without a filter.
const DEFAULT_ALERT_ROWS: u32 = 100;
const DEFAULT_TEAM: &str = "site-reliability";

/// A job's run id: any JSON string or number, kept as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RunIdValue {
    Text(String),
    Number(serde_json::Number),
}

impl RunIdValue {
    pub fn into_text(self) -> Result<Option<String>, ApiError> {
        let s = match self {
            Self::Text(s) => s.trim().to_owned(),
            Self::Number(n) => n.to_string(),
        };
        if s.is_empty() {
            return Ok(None);
        }
        if s.len() > MAX_STATUS_LEN || s.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "run_id must be at most {MAX_STATUS_LEN} printable characters."
            )));
        }
        Ok(Some(s))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatIn {
    heartbeat_name: String,
    status: String,
    /// Accepted and ignored (legacy clients send it).
    #[serde(default)]
    #[allow(dead_code)]
    service_name: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    run_id: Option<RunIdValue>,
}

fn parse_name(raw: &str, field: &str) -> Result<HeartbeatName, ApiError> {
    HeartbeatName::parse(raw).map_err(|e| ApiError::bad_request(format!("{field} {e}.")))
}

/// Record a heartbeat.
#[utoipa::path(post, path = "/heartbeat", tag = "heartbeats", request_body = HeartbeatIn,
    responses((status = 201, description = "Heartbeat Posted Successfully."),
              (status = 400, description = "Invalid body, or the service is inactive"),
              (status = 404, description = "Unknown heartbeat name")))]
async fn post_heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<HeartbeatIn>,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Write, app.config.allow_anonymous_heartbeats)?;
    let invalid = |e: ApiError| {
        metrics::counter!("medic_heartbeats_received_total", "outcome" => "invalid").increment(1);
        e
    };
    let name = parse_name(&body.heartbeat_name, "heartbeat_name").map_err(invalid)?;
    let status = body.status.trim();
    if status.is_empty() || status.len() > MAX_STATUS_LEN || status.chars().any(char::is_control) {
        return Err(invalid(ApiError::bad_request(format!(
            "status must be 1 to {MAX_STATUS_LEN} printable characters."
        ))));
    }
    let run_id = match body.run_id {
        Some(r) => r.into_text().map_err(invalid)?,
        None => None,
    };
    let outcome = app
        .writer
        .record(NewHeartbeat {
            name_key: name.key(),
            status: status.to_owned(),
            run_id,
            received_at: app.clock.now(),
        })
        .await
        .map_err(|e| match e {
            WriteError::ShuttingDown => {
                ApiError::retry_later("The server is shutting down; retry.")
            }
            WriteError::Store(detail) => ApiError::unavailable(&detail),
        })?;
    match outcome {
        HeartbeatOutcome::Recorded { .. } => {
            metrics::counter!("medic_heartbeats_received_total", "outcome" => "accepted")
                .increment(1);
            Ok(ok(
                StatusCode::CREATED,
                "Heartbeat Posted Successfully.",
                "",
            ))
        }
        HeartbeatOutcome::UnknownService => {
            metrics::counter!("medic_heartbeats_received_total", "outcome" => "unknown_service")
                .increment(1);
            Err(ApiError::not_found(format!(
                "{} is not listed as a registered service.",
                name.as_str()
            )))
        }
        HeartbeatOutcome::Inactive { heartbeat_name } => {
            metrics::counter!("medic_heartbeats_received_total", "outcome" => "inactive")
                .increment(1);
            Err(ApiError::bad_request(format!(
                "{heartbeat_name} was located, but is marked inactive. Does this need to be re-enabled?"
            )))
        }
    }
}

/// List recent heartbeats, newest first.
#[utoipa::path(get, path = "/heartbeat", tag = "heartbeats",
    params(("heartbeat_name" = Option<String>, Query), ("service_name" = Option<String>, Query),
           ("maxCount" = Option<i64>, Query, description = "1..250, default 250")),
    responses((status = 200, description = "List of heartbeats"), (status = 400, description = "Bad maxCount")))]
async fn get_heartbeats(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let max = params
        .int("maxCount", 1, MAX_HEARTBEAT_ROWS)?
        .unwrap_or(MAX_HEARTBEAT_ROWS);
    let rows = app
        .store
        .list_heartbeats(&HeartbeatQuery {
            service_id: None,
            name_key: params.text("heartbeat_name").map(name_key),
            service_name: params.text("service_name").map(str::to_owned),
            limit: max as u32,
            offset: 0,
        })
        .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "heartbeat_id": r.heartbeat_id,
                "heartbeat_name": r.heartbeat_name,
                "service_name": r.service_name,
                "time": r.time,
                "status": r.status,
                "team": r.team,
                "priority": r.priority,
                "run_id": r.run_id,
            })
        })
        .collect();
    Ok(ok(StatusCode::OK, "", list))
}

/// The v1 representation of a service (0/1 booleans, interval in minutes).
pub fn v1_service(s: &Service) -> Value {
    json!({
        "service_id": s.id,
        "heartbeat_name": s.heartbeat_name,
        "service_name": s.service_name,
        "environment": s.environment,
        "active": i32::from(s.active),
        "alert_interval": minutes(s.interval_seconds),
        "threshold": s.threshold,
        "team": s.team,
        "priority": s.priority,
        "muted": i32::from(s.mute.is_some()),
        "down": i32::from(s.state == ServiceState::Down),
        "runbook": s.runbook,
        "date_added": s.created_at,
        "date_modified": s.updated_at,
        "date_muted": s.mute.as_ref().map(|m| m.at),
        "muted_until": s.mute.as_ref().and_then(|m| m.until),
        "grace_period_seconds": s.grace_seconds,
        "max_duration_ms": s.max_duration_ms,
        "state": s.state,
        "last_heartbeat": s.last_heartbeat_at,
    })
}

/// Seconds as minutes: an integer when whole, else a fraction.
fn minutes(seconds: i64) -> Value {
    if seconds % 60 == 0 {
        json!(seconds / 60)
    } else {
        json!(seconds as f64 / 60.0)
    }
}

/// Longest accepted free-text field (service name, team, runbook).
pub const MAX_TEXT_LEN: usize = 2048;

pub fn clean_text(raw: &str, field: &str, max: usize) -> Result<String, ApiError> {
    let s = raw.trim();
    if s.len() > max || s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} printable characters."
        )));
    }
    Ok(s.to_owned())
}

pub fn parse_priority(raw: &str) -> Result<Priority, ApiError> {
    Priority::parse(raw).ok_or_else(|| ApiError::bad_request("priority must be one of p1..p5."))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceIn {
    heartbeat_name: String,
    service_name: String,
    /// Minutes.
    alert_interval: i64,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    threshold: Option<i32>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    runbook: Option<String>,
    #[serde(default)]
    grace_period_seconds: Option<i64>,
    #[serde(default)]
    max_duration_ms: Option<i64>,
}

/// Register a service.
#[utoipa::path(post, path = "/service", tag = "services", request_body = ServiceIn,
    responses((status = 201, description = "Heartbeat successfully registered."),
              (status = 200, description = "Heartbeat is already registered."),
              (status = 400, description = "Invalid body")))]
async fn post_service(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ServiceIn>,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Write, app.config.allow_anonymous_heartbeats)?;
    let environment = body
        .environment
        .as_deref()
        .map(|e| clean_text(e, "environment", 64))
        .transpose()?
        .filter(|e| !e.is_empty());
    let raw_name = match &environment {
        Some(env) => format!("{env}-{}", body.heartbeat_name.trim()),
        None => body.heartbeat_name.clone(),
    };
    let heartbeat_name = parse_name(&raw_name, "heartbeat_name")?;
    if !(1..=525_600).contains(&body.alert_interval) {
        return Err(ApiError::bad_request(
            "alert_interval must be between 1 and 525600 minutes.",
        ));
    }
    let threshold = body.threshold.unwrap_or(1);
    if !(1..=10_000).contains(&threshold) {
        return Err(ApiError::bad_request(
            "threshold must be between 1 and 10000.",
        ));
    }
    let grace = body.grace_period_seconds.unwrap_or(0);
    if !(0..=31_536_000).contains(&grace) {
        return Err(ApiError::bad_request(
            "grace_period_seconds must be between 0 and 31536000.",
        ));
    }
    if body.max_duration_ms.is_some_and(|m| m <= 0) {
        return Err(ApiError::bad_request("max_duration_ms must be positive."));
    }
    let new = NewService {
        heartbeat_name,
        service_name: clean_text(&body.service_name, "service_name", MAX_TEXT_LEN)?,
        environment,
        interval_seconds: body.alert_interval * 60,
        threshold,
        grace_seconds: grace,
        team: match body.team.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => clean_text(t, "team", 255)?,
            _ => DEFAULT_TEAM.to_owned(),
        },
        priority: match body.priority.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => parse_priority(p)?,
            _ => Priority::P3,
        },
        runbook: body
            .runbook
            .as_deref()
            .map(|r| clean_text(r, "runbook", MAX_TEXT_LEN))
            .transpose()?
            .filter(|r| !r.is_empty()),
        max_duration_ms: body.max_duration_ms,
        monitoring: Default::default(),
        at: app.clock.now(),
    };
    match app.store.create_service(&new).await? {
        CreateOutcome::Created(_) => Ok(ok(
            StatusCode::CREATED,
            "Heartbeat successfully registered.",
            "",
        )),
        CreateOutcome::Exists(_) => Ok(ok(StatusCode::OK, "Heartbeat is already registered.", "")),
    }
}

/// List services.
#[utoipa::path(get, path = "/service", tag = "services",
    params(("service_name" = Option<String>, Query), ("active" = Option<i32>, Query, description = "0 or 1")),
    responses((status = 200, description = "List of services"), (status = 400, description = "Bad active")))]
async fn get_services(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let active = params.flag("active")?;
    let filter = ServiceFilter {
        service_name: params.text("service_name").map(str::to_owned),
        active,
        ..ServiceFilter::default()
    };
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let page = app
            .store
            .list_services(
                &filter,
                crate::store::PageRequest {
                    limit: 1000,
                    offset,
                },
            )
            .await?;
        let n = page.entries.len() as u32;
        all.extend(page.entries.iter().map(v1_service));
        offset += n;
        if n < 1000 {
            break;
        }
    }
    Ok(ok(StatusCode::OK, "", all))
}

/// Fetch one service by heartbeat name (a list of 0 or 1 item).
#[utoipa::path(get, path = "/service/{heartbeat_name}", tag = "services",
    params(("heartbeat_name" = String, Path)),
    responses((status = 200, description = "List with 0 or 1 service")))]
async fn get_service(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let found = app.store.find_service(&name_key(&name)).await?;
    let list: Vec<Value> = found.iter().map(v1_service).collect();
    Ok(ok(StatusCode::OK, "", list))
}

/// A 0/1 flag in a JSON body (also true/false).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Flag {
    Bool(bool),
    Int(i64),
}

impl Flag {
    fn get(self, field: &str) -> Result<bool, ApiError> {
        match self {
            Self::Bool(b) => Ok(b),
            Self::Int(0) => Ok(false),
            Self::Int(1) => Ok(true),
            Self::Int(_) => Err(ApiError::bad_request(format!("{field} must be 0 or 1."))),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceUpdateIn {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    muted: Option<Flag>,
    #[serde(default)]
    active: Option<Flag>,
    /// Minutes (may be fractional).
    #[serde(default)]
    alert_interval: Option<f64>,
    #[serde(default)]
    threshold: Option<i32>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    runbook: Option<String>,
    #[serde(default)]
    down: Option<Flag>,
}

/// Picks the snapshot label for a change (COMPAT.md's action types).
pub fn action_for(before: &Service, patch: &ServicePatch) -> SnapshotAction {
    let mut kinds = Vec::new();
    if let Some(a) = patch.active
        && a != before.active
    {
        kinds.push(if a {
            SnapshotAction::Activate
        } else {
            SnapshotAction::Deactivate
        });
    }
    match &patch.mute {
        Some(MuteChange::Mute { .. }) => kinds.push(SnapshotAction::Mute),
        Some(MuteChange::Unmute) => kinds.push(SnapshotAction::Unmute),
        None => {}
    }
    if patch.priority.is_some_and(|p| p != before.priority) {
        kinds.push(SnapshotAction::PriorityChange);
    }
    if patch.team.as_ref().is_some_and(|t| *t != before.team) {
        kinds.push(SnapshotAction::TeamChange);
    }
    let other = patch.heartbeat_name.is_some()
        || patch.service_name.is_some()
        || patch.interval_seconds.is_some()
        || patch.threshold.is_some()
        || patch.grace_seconds.is_some()
        || patch.runbook.is_some()
        || patch.max_duration_ms.is_some()
        || patch.state.is_some();
    match (kinds.as_slice(), other) {
        ([single], false) => *single,
        _ => SnapshotAction::Edit,
    }
}

/// Update a service by heartbeat name (takes a snapshot first).
#[utoipa::path(post, path = "/service/{heartbeat_name}", tag = "services",
    params(("heartbeat_name" = String, Path)), request_body = ServiceUpdateIn,
    responses((status = 200, description = "Successfully posted update"),
              (status = 400, description = "Invalid body"),
              (status = 404, description = "Unknown service")))]
async fn update_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ServiceUpdateIn>,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Write, app.config.allow_anonymous_heartbeats)?;
    let who = actor(&headers, &caller)?;
    let mut patch = ServicePatch::default();
    if let Some(v) = &body.service_name {
        patch.service_name = Some(clean_text(v, "service_name", MAX_TEXT_LEN)?);
    }
    if let Some(v) = body.muted {
        patch.mute = Some(if v.get("muted")? {
            MuteChange::Mute {
                until: None,
                reason: None,
            }
        } else {
            MuteChange::Unmute
        });
    }
    if let Some(v) = body.active {
        patch.active = Some(v.get("active")?);
    }
    if let Some(m) = body.alert_interval {
        let secs = (m * 60.0).round();
        if !m.is_finite() || !(1.0..=31_536_000.0).contains(&secs) {
            return Err(ApiError::bad_request(
                "alert_interval must be a positive number of minutes.",
            ));
        }
        patch.interval_seconds = Some(secs as i64);
    }
    if let Some(t) = body.threshold {
        if !(1..=10_000).contains(&t) {
            return Err(ApiError::bad_request(
                "threshold must be between 1 and 10000.",
            ));
        }
        patch.threshold = Some(t);
    }
    if let Some(t) = &body.team {
        let t = clean_text(t, "team", 255)?;
        if t.is_empty() {
            return Err(ApiError::bad_request("team must not be empty."));
        }
        patch.team = Some(t);
    }
    if let Some(p) = &body.priority {
        patch.priority = Some(parse_priority(p)?);
    }
    if let Some(r) = &body.runbook {
        let r = clean_text(r, "runbook", MAX_TEXT_LEN)?;
        patch.runbook = Some(Some(r).filter(|r| !r.is_empty()));
    }
    if let Some(d) = body.down {
        patch.state = Some(if d.get("down")? {
            ServiceState::Down
        } else {
            ServiceState::Up
        });
    }
    if patch == ServicePatch::default() {
        return Err(ApiError::bad_request("No updatable fields were supplied."));
    }
    let not_located = || {
        ApiError::not_found(format!(
            "The heartbeat registration specified: {name} was not located. Does it exist?"
        ))
    };
    let before = app
        .store
        .find_service(&name_key(&name))
        .await?
        .ok_or_else(not_located)?;
    let change = ChangeMeta {
        action: action_for(&before, &patch),
        actor: who,
        at: app.clock.now(),
    };
    app.store
        .update_service(before.id, &patch, &change)
        .await?
        .ok_or_else(not_located)?;
    Ok(ok(StatusCode::OK, "Successfully posted update", ""))
}

/// The v1 representation of an alert.
fn v1_alert(a: &Alert) -> Value {
    json!({
        "alert_id": a.alert_id,
        "alert_name": a.alert_name,
        "service_id": a.service_id,
        "active": i32::from(a.state != AlertState::Resolved),
        "external_reference_id": a.external_reference_id,
        "alert_cycle": a.alert_cycle,
        "created_date": a.created_at,
        "closed_date": a.resolved_at,
        "kind": a.kind,
        "state": a.state,
    })
}

/// List alerts, newest first (the latest 100 without a filter).
#[utoipa::path(get, path = "/alerts", tag = "alerts",
    params(("active" = Option<i32>, Query, description = "0 or 1")),
    responses((status = 200, description = "List of alerts"), (status = 400, description = "Bad active")))]
async fn get_alerts(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let active = params.flag("active")?;
    let limit = if active.is_some() {
        10_000
    } else {
        DEFAULT_ALERT_ROWS
    };
    let alerts = app.store.list_alerts(active, limit).await?;
    let list: Vec<Value> = alerts.iter().map(v1_alert).collect();
    Ok(ok(StatusCode::OK, "", list))
}

/// Network reachability probe: 204, no body.
#[utoipa::path(get, path = "/v1/healthcheck/network", tag = "operations",
    responses((status = 204, description = "Reachable")))]
async fn network_check() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
