//! The legacy v1 routes, as docs/api.md ("Legacy v1 routes") states them: `POST/GET /heartbeat`,
//! `POST/GET /service`, `POST/GET /service/<heartbeat_name>`, `GET /alerts` and
//! `GET /v1/healthcheck/network`. Booleans are 0/1 here and intervals are minutes; the v2 API
//! speaks seconds and real booleans.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Envelope, NoResults, ok};
use super::extract::{Caller, JsonBody, Params, actor};
use super::schema::{self, Bit, Time, time};
use crate::domain::service::name_key;
use crate::domain::{HeartbeatName, Priority, Scope, ServiceState, SnapshotAction};
use crate::store::batch::WriteError;
use crate::store::{
    Alert, AlertState, ChangeMeta, CreateOutcome, HeartbeatOutcome, HeartbeatQuery, HeartbeatRow,
    MuteChange, NewHeartbeat, NewService, Service, ServiceFilter, ServicePatch,
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
            // Integers beyond 64 bits reach us as floats with their digits rounded away: a
            // float that large cannot be kept as sent.
            Self::Number(n)
                if n.as_f64()
                    .is_some_and(|f| f.abs() >= 9_007_199_254_740_992.0)
                    && n.as_i64().is_none()
                    && n.as_u64().is_none() =>
            {
                return Err(ApiError::bad_request(
                    "run_id is too large a number to keep exactly; send it as a string.",
                ));
            }
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
    /// A registered service's heartbeat name (case-insensitive).
    #[schema(min_length = 1, max_length = 255)]
    heartbeat_name: String,
    /// Free text (`UP`, `DOWN`, …); printable characters.
    #[schema(min_length = 1, max_length = 255)]
    status: String,
    /// Accepted and ignored (legacy clients send it).
    #[serde(default)]
    #[allow(dead_code)]
    service_name: Option<String>,
    /// A job's run id: a string or a number, kept as text.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 255)]
    run_id: Option<RunIdValue>,
}

fn parse_name(raw: &str, field: &str) -> Result<HeartbeatName, ApiError> {
    HeartbeatName::parse(raw).map_err(|e| ApiError::bad_request(format!("{field} {e}.")))
}

/// Record a heartbeat.
#[utoipa::path(post, path = "/heartbeat", tag = "heartbeats", operation_id = "v1_post_heartbeat",
    request_body = HeartbeatIn, security(("bearer" = []), ()),
    responses((status = 201, description = "Heartbeat Posted Successfully.", body = Envelope<NoResults>),
              (status = 400, description = "Invalid body, or the service is inactive"),
              (status = 404, description = "Unknown heartbeat name"),
              (status = 503, description = "The server is shutting down; retry")))]
async fn post_heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<HeartbeatIn>,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Ingest, app.config.allow_anonymous_heartbeats)?;
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
                NoResults::Empty,
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

/// `maxCount` as the old service read it: above 250 is 250, anything that is not an integer
/// (a clipped digit string included) is the default, 250; zero or negative is an error.
fn max_count(raw: Option<&str>) -> Result<i64, ApiError> {
    let Some(raw) = raw else {
        return Ok(MAX_HEARTBEAT_ROWS);
    };
    let negative = raw.starts_with('-');
    let digits = raw.strip_prefix(['-', '+']).unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(MAX_HEARTBEAT_ROWS);
    }
    if negative || digits.bytes().all(|b| b == b'0') {
        return Err(ApiError::bad_request(format!(
            "Query parameter maxCount must be a positive integer (at most {MAX_HEARTBEAT_ROWS} rows are returned)."
        )));
    }
    Ok(digits
        .parse::<i64>()
        .map_or(MAX_HEARTBEAT_ROWS, |n| n.min(MAX_HEARTBEAT_ROWS)))
}

/// List recent heartbeats, newest first.
#[utoipa::path(get, path = "/heartbeat", tag = "heartbeats", operation_id = "v1_list_heartbeats",
    params(("heartbeat_name" = Option<String>, Query), ("service_name" = Option<String>, Query),
           ("maxCount" = Option<i64>, Query, minimum = 1,
            description = "Default 250; larger values are capped at 250 and a value that is not an integer means 250")),
    security(("bearer" = []), ()),
    responses((status = 200, description = "Heartbeats, newest first", body = Envelope<Vec<V1Heartbeat>>),
              (status = 400, description = "maxCount is zero or negative")))]
async fn get_heartbeats(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let max = max_count(params.text("maxCount"))?;
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
    let list: Vec<V1Heartbeat> = rows.iter().map(V1Heartbeat::from).collect();
    Ok(ok(StatusCode::OK, "", list))
}

/// A heartbeat as `GET /heartbeat` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Heartbeat {
    heartbeat_id: i64,
    heartbeat_name: String,
    service_name: String,
    time: Time,
    status: String,
    team: String,
    priority: schema::Priority,
    run_id: Option<String>,
}

impl From<&HeartbeatRow> for V1Heartbeat {
    fn from(r: &HeartbeatRow) -> Self {
        Self {
            heartbeat_id: r.heartbeat_id,
            heartbeat_name: r.heartbeat_name.clone(),
            service_name: r.service_name.clone(),
            time: r.time.into(),
            status: r.status.clone(),
            team: r.team.clone(),
            priority: r.priority.into(),
            run_id: r.run_id.clone(),
        }
    }
}

/// Seconds as minutes: an integer when whole, else a fraction.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum Minutes {
    Whole(i64),
    Fraction(f64),
}

impl Minutes {
    fn from_seconds(seconds: i64) -> Self {
        if seconds % 60 == 0 {
            Self::Whole(seconds / 60)
        } else {
            Self::Fraction(seconds as f64 / 60.0)
        }
    }
}

/// The v1 representation of a service (0/1 booleans, interval in minutes).
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Service {
    service_id: i64,
    heartbeat_name: String,
    service_name: String,
    environment: Option<String>,
    active: Bit,
    /// Minutes: an integer when whole, else a fraction.
    #[schema(value_type = f64)]
    alert_interval: Minutes,
    threshold: i32,
    team: String,
    priority: schema::Priority,
    muted: Bit,
    down: Bit,
    runbook: Option<String>,
    date_added: Time,
    date_modified: Time,
    date_muted: Option<Time>,
    muted_until: Option<Time>,
    grace_period_seconds: i64,
    max_duration_ms: Option<i64>,
    state: schema::ServiceState,
    last_heartbeat: Option<Time>,
}

impl From<&Service> for V1Service {
    fn from(s: &Service) -> Self {
        Self {
            service_id: s.id.0,
            heartbeat_name: s.heartbeat_name.clone(),
            service_name: s.service_name.clone(),
            environment: s.environment.clone(),
            active: s.active.into(),
            alert_interval: Minutes::from_seconds(s.interval_seconds),
            threshold: s.threshold,
            team: s.team.clone(),
            priority: s.priority.into(),
            muted: s.mute.is_some().into(),
            down: (s.state == ServiceState::Down).into(),
            runbook: s.runbook.clone(),
            date_added: s.created_at.into(),
            date_modified: s.updated_at.into(),
            date_muted: s.mute.as_ref().map(|m| m.at.into()),
            muted_until: time(s.mute.as_ref().and_then(|m| m.until)),
            grace_period_seconds: s.grace_seconds,
            max_duration_ms: s.max_duration_ms,
            state: s.state.into(),
            last_heartbeat: time(s.last_heartbeat_at),
        }
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
    /// Prefixed with `<environment>-` when `environment` is given; unique case-insensitively.
    #[schema(min_length = 1, max_length = 255)]
    heartbeat_name: String,
    #[schema(max_length = 2048)]
    service_name: String,
    /// Minutes.
    #[schema(minimum = 1, maximum = 525600)]
    alert_interval: i64,
    #[serde(default)]
    #[schema(max_length = 64)]
    environment: Option<String>,
    /// Heartbeats expected per interval (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    threshold: Option<i32>,
    /// Default `site-reliability`.
    #[serde(default)]
    #[schema(max_length = 255)]
    team: Option<String>,
    /// `p1`..`p5` (default `p3`).
    #[serde(default)]
    #[schema(pattern = "^\\s*[pP][1-5]\\s*$")]
    priority: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    runbook: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31536000)]
    grace_period_seconds: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 1)]
    max_duration_ms: Option<i64>,
}

/// Register a service.
#[utoipa::path(post, path = "/service", tag = "services", operation_id = "v1_register_service",
    request_body = ServiceIn, security(("bearer" = []), ()),
    responses((status = 201, description = "Heartbeat successfully registered.", body = Envelope<NoResults>),
              (status = 200, description = "Heartbeat is already registered.", body = Envelope<NoResults>),
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
            NoResults::Empty,
        )),
        CreateOutcome::Exists(_) => Ok(ok(
            StatusCode::OK,
            "Heartbeat is already registered.",
            NoResults::Empty,
        )),
    }
}

/// List services.
#[utoipa::path(get, path = "/service", tag = "services", operation_id = "v1_list_services",
    params(("service_name" = Option<String>, Query),
           ("active" = Option<i32>, Query, minimum = 0, maximum = 1, description = "0 or 1")),
    security(("bearer" = []), ()),
    responses((status = 200, description = "Services", body = Envelope<Vec<V1Service>>),
              (status = 400, description = "Bad active")))]
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
        all.extend(page.entries.iter().map(V1Service::from));
        offset += n;
        if n < 1000 {
            break;
        }
    }
    Ok(ok(StatusCode::OK, "", all))
}

/// Fetch one service by heartbeat name (a list of 0 or 1 item).
#[utoipa::path(get, path = "/service/{heartbeat_name}", tag = "services",
    operation_id = "v1_get_service", params(("heartbeat_name" = String, Path)),
    security(("bearer" = []), ()),
    responses((status = 200, description = "List with 0 or 1 service", body = Envelope<Vec<V1Service>>)))]
async fn get_service(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let found = app.store.find_service(&name_key(&name)).await?;
    let list: Vec<V1Service> = found.iter().map(V1Service::from).collect();
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
    #[schema(max_length = 2048)]
    service_name: Option<String>,
    /// 0/1 (or false/true).
    #[serde(default)]
    muted: Option<Flag>,
    /// 0/1 (or false/true).
    #[serde(default)]
    active: Option<Flag>,
    /// Minutes (may be fractional; at least one second, at most a year).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 525600)]
    alert_interval: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    threshold: Option<i32>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    team: Option<String>,
    /// `p1`..`p5`.
    #[serde(default)]
    #[schema(pattern = "^\\s*[pP][1-5]\\s*$")]
    priority: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    runbook: Option<String>,
    /// 0/1 (or false/true).
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
    operation_id = "v1_update_service", params(("heartbeat_name" = String, Path)),
    request_body = ServiceUpdateIn, security(("bearer" = []), ()),
    responses((status = 200, description = "Successfully posted update", body = Envelope<NoResults>),
              (status = 400, description = "Invalid body"),
              (status = 404, description = "Unknown service")))]
async fn update_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ServiceUpdateIn>,
) -> ApiResult {
    // Anonymous callers may register services, not change existing ones, unless the operator
    // also allows that.
    caller.require_or_anonymous(
        Scope::Write,
        app.config.allow_anonymous_heartbeats && app.config.allow_anonymous_service_changes,
    )?;
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
    Ok(ok(
        StatusCode::OK,
        "Successfully posted update",
        NoResults::Empty,
    ))
}

/// The v1 representation of an alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct V1Alert {
    alert_id: i64,
    alert_name: String,
    service_id: i64,
    /// 1 while open or acknowledged.
    active: Bit,
    external_reference_id: Option<String>,
    alert_cycle: i32,
    created_date: Time,
    closed_date: Option<Time>,
    kind: schema::AlertKind,
    state: schema::AlertState,
}

impl From<&Alert> for V1Alert {
    fn from(a: &Alert) -> Self {
        Self {
            alert_id: a.alert_id,
            alert_name: a.alert_name.clone(),
            service_id: a.service_id.0,
            active: (a.state != AlertState::Resolved).into(),
            external_reference_id: a.external_reference_id.clone(),
            alert_cycle: a.alert_cycle,
            created_date: a.created_at.into(),
            closed_date: time(a.resolved_at),
            kind: a.kind.into(),
            state: a.state.into(),
        }
    }
}

/// List alerts, newest first (the latest 100 without a filter).
#[utoipa::path(get, path = "/alerts", tag = "alerts", operation_id = "v1_list_alerts",
    params(("active" = Option<i32>, Query, minimum = 0, maximum = 1, description = "0 or 1")),
    security(("bearer" = []), ()),
    responses((status = 200, description = "Alerts, newest first", body = Envelope<Vec<V1Alert>>),
              (status = 400, description = "Bad active")))]
async fn get_alerts(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require_or_anonymous(Scope::Read, app.config.allow_anonymous_heartbeats)?;
    let active = params.flag("active")?;
    let limit = if active.is_some() {
        10_000
    } else {
        DEFAULT_ALERT_ROWS
    };
    let alerts = app.store.list_alerts(active, limit).await?;
    let list: Vec<V1Alert> = alerts.iter().map(V1Alert::from).collect();
    Ok(ok(StatusCode::OK, "", list))
}

/// Network reachability probe: 204, no body.
#[utoipa::path(get, path = "/v1/healthcheck/network", tag = "operations",
    operation_id = "v1_network_check", security(()),
    responses((status = 204, description = "Reachable")))]
async fn network_check() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
