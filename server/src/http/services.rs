//! v2 services: list, create, read, update, delete (restorable), mute/unmute, and each
//! service's heartbeats and runs. Intervals are seconds, booleans are booleans.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{
    Caller, JsonBody, OptionalJsonBody, Page, PageParams, Params, actor, paginated, path_id,
};
use super::legacy::{MAX_TEXT_LEN, action_for, clean_text, parse_priority};
use super::schema::{self, Time, time};
use crate::domain::schedule::CronSchedule;
use crate::domain::{HeartbeatName, Priority, Scope, ServiceId, ServiceState, Timestamp};
use crate::store::{
    ChangeMeta, CreateOutcome, HeartbeatQuery, HeartbeatRow, JobRun, Monitoring, Mute, MuteChange,
    NewService, ScheduleSpec, Service, ServiceFilter, ServicePatch,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services, create_service))
        .routes(routes!(get_service, patch_service, delete_service))
        .routes(routes!(mute_service))
        .routes(routes!(unmute_service))
        .routes(routes!(list_service_heartbeats))
        .routes(routes!(list_service_runs))
}

/// Bounds for v2 numeric settings.
const MAX_INTERVAL_SECONDS: i64 = 366 * 24 * 3600;
const MAX_THRESHOLD: i32 = 10_000;
const MAX_PAGE: u32 = 250;
const DEFAULT_PAGE: u32 = 50;
/// Longest mute reason.
const MAX_REASON_LEN: usize = 500;

/// The v2 representation of a service.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceOut {
    pub service_id: i64,
    pub heartbeat_name: String,
    pub service_name: String,
    pub environment: Option<String>,
    pub active: bool,
    /// Expected seconds between heartbeats.
    pub interval_seconds: i64,
    pub grace_seconds: i64,
    pub threshold: i32,
    pub team: String,
    pub priority: schema::Priority,
    pub runbook: Option<String>,
    pub state: schema::ServiceState,
    pub muted: bool,
    pub mute: Option<MuteOut>,
    pub max_duration_ms: Option<i64>,
    pub schedule: Option<ScheduleOut>,
    pub renotify_seconds: Option<i64>,
    pub parent_id: Option<i64>,
    pub alert_on_failure: bool,
    pub last_heartbeat_at: Option<Time>,
    pub created_at: Time,
    pub updated_at: Time,
}

impl From<&Service> for ServiceOut {
    fn from(s: &Service) -> Self {
        Self {
            service_id: s.id.0,
            heartbeat_name: s.heartbeat_name.clone(),
            service_name: s.service_name.clone(),
            environment: s.environment.clone(),
            active: s.active,
            interval_seconds: s.interval_seconds,
            grace_seconds: s.grace_seconds,
            threshold: s.threshold,
            team: s.team.clone(),
            priority: s.priority.into(),
            runbook: s.runbook.clone(),
            state: s.state.into(),
            muted: s.mute.is_some(),
            mute: s.mute.as_ref().map(MuteOut::from),
            max_duration_ms: s.max_duration_ms,
            schedule: s.monitoring.schedule.as_ref().map(ScheduleOut::from),
            renotify_seconds: s.monitoring.renotify_seconds,
            parent_id: s.monitoring.parent_id.map(|p| p.0),
            alert_on_failure: s.monitoring.alert_on_failure,
            last_heartbeat_at: time(s.last_heartbeat_at),
            created_at: s.created_at.into(),
            updated_at: s.updated_at.into(),
        }
    }
}

/// Since when and until when a service is muted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MuteOut {
    pub at: Time,
    /// Absent: until unmuted.
    pub until: Option<Time>,
    pub reason: Option<String>,
}

impl From<&Mute> for MuteOut {
    fn from(m: &Mute) -> Self {
        Self {
            at: m.at.into(),
            until: time(m.until),
            reason: m.reason.clone(),
        }
    }
}

/// An expected schedule: a cron expression in an IANA time zone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleOut {
    pub cron: String,
    pub timezone: String,
}

impl From<&ScheduleSpec> for ScheduleOut {
    fn from(s: &ScheduleSpec) -> Self {
        Self {
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
        }
    }
}

/// A deleted service and the snapshot that restores it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedServiceOut {
    pub service_id: i64,
    pub snapshot_id: i64,
}

/// A heartbeat of one service.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatOut {
    pub heartbeat_id: i64,
    pub service_id: i64,
    pub heartbeat_name: String,
    pub service_name: String,
    pub status: String,
    pub run_id: Option<String>,
    pub time: Time,
    pub team: String,
    pub priority: schema::Priority,
}

impl From<&HeartbeatRow> for HeartbeatOut {
    fn from(r: &HeartbeatRow) -> Self {
        Self {
            heartbeat_id: r.heartbeat_id,
            service_id: r.service_id.0,
            heartbeat_name: r.heartbeat_name.clone(),
            service_name: r.service_name.clone(),
            status: r.status.clone(),
            run_id: r.run_id.clone(),
            time: r.time.into(),
            team: r.team.clone(),
            priority: r.priority.into(),
        }
    }
}

/// A page of heartbeats: like [`Page`] without the total, which a large table makes costly.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatPage {
    pub entries: Vec<HeartbeatOut>,
    pub limit: u32,
    pub offset: u32,
    pub has_more: bool,
}

/// A job run of a service, from its signals.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobRunOut {
    pub id: i64,
    pub service_id: i64,
    pub run_id: String,
    pub status: schema::RunStatus,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub body: Option<String>,
    pub body_truncated: bool,
}

impl From<&JobRun> for JobRunOut {
    fn from(r: &JobRun) -> Self {
        Self {
            id: r.id,
            service_id: r.service_id.0,
            run_id: r.run_id.clone(),
            status: r.status.into(),
            started_at: time(r.started_at),
            finished_at: time(r.finished_at),
            duration_ms: r.duration_ms,
            exit_code: r.exit_code,
            body: r.body.clone(),
            body_truncated: r.body_truncated,
        }
    }
}

fn check_interval(v: i64) -> Result<i64, ApiError> {
    if (1..=MAX_INTERVAL_SECONDS).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "interval_seconds must be between 1 and {MAX_INTERVAL_SECONDS}."
        )))
    }
}

fn check_grace(v: i64) -> Result<i64, ApiError> {
    if (0..=MAX_INTERVAL_SECONDS).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "grace_seconds must be between 0 and {MAX_INTERVAL_SECONDS}."
        )))
    }
}

fn check_threshold(v: i32) -> Result<i32, ApiError> {
    if (1..=MAX_THRESHOLD).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(format!(
            "threshold must be between 1 and {MAX_THRESHOLD}."
        )))
    }
}

fn check_max_duration(v: Option<i64>) -> Result<Option<i64>, ApiError> {
    match v {
        Some(m) if m <= 0 => Err(ApiError::bad_request("max_duration_ms must be positive.")),
        other => Ok(other),
    }
}

pub(super) async fn load(app: &AppState, raw: &str) -> Result<Service, ApiError> {
    let id = ServiceId(path_id(raw, "service_id")?);
    app.store
        .get_service(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Service {id} was not found.")))
}

/// List services with filters and pagination.
#[utoipa::path(get, path = "/v2/services", tag = "services",
    params(("name" = Option<String>, Query, description = "Substring of the heartbeat name (case-insensitive)"),
           ("service_name" = Option<String>, Query), ("team" = Option<String>, Query),
           ("active" = Option<bool>, Query, description = "0/1 or false/true"),
           ("muted" = Option<bool>, Query, description = "0/1 or false/true"),
           ("state" = Option<schema::ServiceState>, Query),
           ("priority" = Option<schema::Priority>, Query),
           PageParams),
    responses((status = 200, description = "A page of services", body = Envelope<Page<ServiceOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_services(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(DEFAULT_PAGE, MAX_PAGE)?;
    let state = params
        .text("state")
        .map(|s| {
            ServiceState::parse(s)
                .ok_or_else(|| ApiError::bad_request("state must be one of new, up, late, down."))
        })
        .transpose()?;
    let filter = ServiceFilter {
        name_contains: params.text("name").map(str::to_owned),
        service_name: params.text("service_name").map(str::to_owned),
        team: params.text("team").map(str::to_owned),
        active: params.flag("active")?,
        muted: params.flag("muted")?,
        state,
        priority: params.text("priority").map(parse_priority).transpose()?,
    };
    let found = app.store.list_services(&filter, page).await?;
    let entries: Vec<ServiceOut> = found.entries.iter().map(ServiceOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceIn {
    /// Unique case-insensitively.
    #[schema(min_length = 1, max_length = 255)]
    heartbeat_name: String,
    /// Expected seconds between heartbeats (at most 366 days).
    #[schema(minimum = 1, maximum = 31622400)]
    interval_seconds: i64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31622400)]
    grace_seconds: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    service_name: Option<String>,
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
    #[schema(minimum = 1)]
    max_duration_ms: Option<i64>,
    /// Expected schedule instead of the interval: `{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}`.
    #[serde(default)]
    #[schema(value_type = Option<ScheduleIn>)]
    schedule: Option<Value>,
    /// Re-notify an unacknowledged alert this often (default: the interval; 0: never).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 604800)]
    renotify_seconds: Option<i64>,
    /// A service whose open alert absorbs this one's.
    #[serde(default)]
    #[schema(minimum = 1)]
    parent_id: Option<i64>,
    /// Open a `job_failed` alert when a run fails (default true).
    #[serde(default)]
    alert_on_failure: Option<bool>,
}

/// An expected schedule as a request gives it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleIn {
    /// A cron expression (five fields, or six with seconds).
    #[schema(min_length = 1)]
    cron: String,
    /// An IANA time zone (default UTC).
    timezone: Option<String>,
}

/// Parses and checks an expected schedule.
fn check_schedule(raw: Value) -> Result<ScheduleSpec, ApiError> {
    let spec: ScheduleIn = serde_json::from_value(raw).map_err(|_| {
        ApiError::bad_request("schedule must be an object {\"cron\": \"…\", \"timezone\": \"…\"}.")
    })?;
    let tz = spec.timezone.as_deref().unwrap_or_default().trim();
    let tz = if tz.is_empty() { "UTC" } else { tz };
    crate::domain::schedule::parse_timezone(tz)
        .map_err(|e| ApiError::bad_request(format!("schedule.timezone: {e}.")))?;
    CronSchedule::parse(spec.cron.trim(), tz)
        .map_err(|e| ApiError::bad_request(format!("schedule.cron: {e}.")))?;
    Ok(ScheduleSpec {
        cron: spec.cron.trim().to_owned(),
        timezone: tz.to_owned(),
    })
}

fn check_renotify(v: i64) -> Result<i64, ApiError> {
    if (0..=7 * 86_400).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(
            "renotify_seconds must be between 0 (never) and 604800.",
        ))
    }
}

/// A parent must exist and must not lead back to the child.
async fn check_parent(
    app: &AppState,
    child: Option<ServiceId>,
    parent: i64,
) -> Result<ServiceId, ApiError> {
    let mut next = Some(ServiceId(parent));
    let mut depth = 0;
    while let Some(id) = next {
        if Some(id) == child {
            return Err(ApiError::bad_request(
                "parent_id would make the service its own ancestor.",
            ));
        }
        let Some(s) = app.store.get_service(id).await? else {
            return Err(ApiError::bad_request(format!(
                "parent_id: service {id} was not found."
            )));
        };
        depth += 1;
        if depth > 16 {
            return Err(ApiError::bad_request(
                "parent_id: the chain of parents is too deep.",
            ));
        }
        next = s.monitoring.parent_id;
    }
    Ok(ServiceId(parent))
}

/// Register a service (409 if the name is taken, case-insensitively).
#[utoipa::path(post, path = "/v2/services", tag = "services", request_body = CreateServiceIn,
    responses((status = 201, description = "Created", body = Envelope<ServiceOut>),
              (status = 400, description = "Invalid"),
              (status = 409, description = "Name already registered")),
    security(("bearer" = [])))]
async fn create_service(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateServiceIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let heartbeat_name = HeartbeatName::parse(&body.heartbeat_name)
        .map_err(|e| ApiError::bad_request(format!("heartbeat_name {e}.")))?;
    let new = NewService {
        heartbeat_name,
        service_name: body
            .service_name
            .as_deref()
            .map(|s| clean_text(s, "service_name", MAX_TEXT_LEN))
            .transpose()?
            .unwrap_or_default(),
        environment: body
            .environment
            .as_deref()
            .map(|s| clean_text(s, "environment", 64))
            .transpose()?
            .filter(|s| !s.is_empty()),
        interval_seconds: check_interval(body.interval_seconds)?,
        threshold: check_threshold(body.threshold.unwrap_or(1))?,
        grace_seconds: check_grace(body.grace_seconds.unwrap_or(0))?,
        team: match body.team.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => clean_text(t, "team", 255)?,
            _ => "site-reliability".to_owned(),
        },
        priority: body
            .priority
            .as_deref()
            .map(parse_priority)
            .transpose()?
            .unwrap_or(Priority::P3),
        runbook: body
            .runbook
            .as_deref()
            .map(|s| clean_text(s, "runbook", MAX_TEXT_LEN))
            .transpose()?
            .filter(|s| !s.is_empty()),
        max_duration_ms: check_max_duration(body.max_duration_ms)?,
        monitoring: Monitoring {
            schedule: body.schedule.map(check_schedule).transpose()?,
            renotify_seconds: body.renotify_seconds.map(check_renotify).transpose()?,
            parent_id: match body.parent_id {
                Some(p) => Some(check_parent(&app, None, p).await?),
                None => None,
            },
            alert_on_failure: body.alert_on_failure.unwrap_or(true),
        },
        at: app.clock.now(),
    };
    match app.store.create_service(&new).await? {
        CreateOutcome::Created(s) => Ok(ok(
            StatusCode::CREATED,
            "Service created.",
            ServiceOut::from(&s),
        )),
        CreateOutcome::Exists(s) => Err(ApiError::conflict(format!(
            "A service named {} is already registered (service_id {}).",
            s.heartbeat_name, s.id
        ))),
    }
}

/// Fetch one service.
#[utoipa::path(get, path = "/v2/services/{service_id}", tag = "services",
    params(("service_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The service", body = Envelope<ServiceOut>),
              (status = 400, description = "Bad service_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_service(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let s = load(&app, &id).await?;
    Ok(ok(StatusCode::OK, "", ServiceOut::from(&s)))
}

/// Distinguishes an absent field from an explicit `null` (which clears it).
pub(super) fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchServiceIn {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    heartbeat_name: Option<String>,
    #[serde(default)]
    #[schema(max_length = 2048)]
    service_name: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    interval_seconds: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31622400)]
    grace_seconds: Option<i64>,
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
    /// `null` clears the runbook.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>, max_length = 2048)]
    runbook: Option<Option<String>>,
    /// `null` clears the limit.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    max_duration_ms: Option<Option<i64>>,
    /// `null` returns to the fixed interval.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<ScheduleIn>)]
    schedule: Option<Option<Value>>,
    /// `null` returns to the default cadence (the interval).
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 604800)]
    renotify_seconds: Option<Option<i64>>,
    /// `null` removes the parent.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    parent_id: Option<Option<i64>>,
    #[serde(default)]
    alert_on_failure: Option<bool>,
}

/// Change a service (a snapshot of the previous state is kept).
#[utoipa::path(patch, path = "/v2/services/{service_id}", tag = "services",
    params(("service_id" = i64, Path, minimum = 1)), request_body = PatchServiceIn,
    responses((status = 200, description = "Updated", body = Envelope<ServiceOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "Not found"), (status = 409, description = "Name taken")),
    security(("bearer" = [])))]
async fn patch_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PatchServiceIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let mut p = ServicePatch {
        heartbeat_name: body
            .heartbeat_name
            .as_deref()
            .map(|n| {
                HeartbeatName::parse(n)
                    .map_err(|e| ApiError::bad_request(format!("heartbeat_name {e}.")))
            })
            .transpose()?,
        service_name: body
            .service_name
            .as_deref()
            .map(|s| clean_text(s, "service_name", MAX_TEXT_LEN))
            .transpose()?,
        active: body.active,
        interval_seconds: body.interval_seconds.map(check_interval).transpose()?,
        grace_seconds: body.grace_seconds.map(check_grace).transpose()?,
        threshold: body.threshold.map(check_threshold).transpose()?,
        priority: body.priority.as_deref().map(parse_priority).transpose()?,
        ..ServicePatch::default()
    };
    if let Some(t) = &body.team {
        let t = clean_text(t, "team", 255)?;
        if t.is_empty() {
            return Err(ApiError::bad_request("team must not be empty."));
        }
        p.team = Some(t);
    }
    if let Some(r) = body.runbook {
        p.runbook = Some(
            r.as_deref()
                .map(|r| clean_text(r, "runbook", MAX_TEXT_LEN))
                .transpose()?
                .filter(|r| !r.is_empty()),
        );
    }
    if let Some(m) = body.max_duration_ms {
        p.max_duration_ms = Some(check_max_duration(m)?);
    }
    if let Some(v) = body.schedule {
        p.schedule = Some(v.map(check_schedule).transpose()?);
    }
    if let Some(v) = body.renotify_seconds {
        p.renotify_seconds = Some(v.map(check_renotify).transpose()?);
    }
    p.alert_on_failure = body.alert_on_failure;
    let parent = body.parent_id;
    if p == ServicePatch::default() && parent.is_none() {
        return Err(ApiError::bad_request("No updatable fields were supplied."));
    }
    let before = load(&app, &id).await?;
    if let Some(v) = parent {
        p.parent_id = Some(match v {
            Some(pid) => Some(check_parent(&app, Some(before.id), pid).await?),
            None => None,
        });
    }
    let change = ChangeMeta {
        action: action_for(&before, &p),
        actor: who,
        at: app.clock.now(),
    };
    let after = app
        .store
        .update_service(before.id, &p, &change)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ApiError::conflict("Another service already has that heartbeat_name.")
            }
            other => other.into(),
        })?
        .ok_or_else(|| ApiError::not_found(format!("Service {} was not found.", before.id)))?;
    Ok(ok(
        StatusCode::OK,
        "Service updated.",
        ServiceOut::from(&after),
    ))
}

/// Delete a service (restorable from the snapshot it leaves).
#[utoipa::path(delete, path = "/v2/services/{service_id}", tag = "services",
    params(("service_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Deleted; results carry the snapshot id",
               body = Envelope<DeletedServiceOut>),
              (status = 400, description = "Bad service_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn delete_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = ServiceId(path_id(&id, "service_id")?);
    let snap = app
        .store
        .delete_service(id, &who)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Service {id} was not found.")))?;
    Ok(ok(
        StatusCode::OK,
        "Service deleted. Restore it with POST /v2/snapshots/{snapshot_id}/restore.",
        DeletedServiceOut {
            service_id: id.0,
            snapshot_id: snap.0,
        },
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MuteIn {
    /// RFC 3339, in the future; the mute ends by itself at this time. Absent: until unmuted.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    until: Option<Timestamp>,
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// Mute a service (optionally until a time).
#[utoipa::path(post, path = "/v2/services/{service_id}/mute", tag = "services",
    params(("service_id" = i64, Path, minimum = 1)),
    request_body(content = MuteIn, description = "Optional"),
    responses((status = 200, description = "Muted", body = Envelope<ServiceOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn mute_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<MuteIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let now = app.clock.now();
    if body.until.is_some_and(|u| u <= now) {
        return Err(ApiError::bad_request("until must be in the future."));
    }
    let reason = body
        .reason
        .as_deref()
        .map(|r| clean_text(r, "reason", MAX_REASON_LEN))
        .transpose()?
        .filter(|r| !r.is_empty());
    let s = load(&app, &id).await?;
    let patch = ServicePatch {
        mute: Some(MuteChange::Mute {
            until: body.until,
            reason,
        }),
        ..ServicePatch::default()
    };
    change(&app, s, patch, who, now).await
}

/// Unmute a service.
#[utoipa::path(post, path = "/v2/services/{service_id}/unmute", tag = "services",
    params(("service_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Unmuted", body = Envelope<ServiceOut>),
              (status = 400, description = "Bad service_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn unmute_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let s = load(&app, &id).await?;
    let patch = ServicePatch {
        mute: Some(MuteChange::Unmute),
        ..ServicePatch::default()
    };
    change(&app, s, patch, who, app.clock.now()).await
}

async fn change(
    app: &AppState,
    before: Service,
    patch: ServicePatch,
    actor: crate::store::Actor,
    at: Timestamp,
) -> ApiResult {
    let meta = ChangeMeta {
        action: action_for(&before, &patch),
        actor,
        at,
    };
    let after = app
        .store
        .update_service(before.id, &patch, &meta)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Service {} was not found.", before.id)))?;
    Ok(ok(
        StatusCode::OK,
        "Service updated.",
        ServiceOut::from(&after),
    ))
}

/// A service's heartbeats, newest first.
#[utoipa::path(get, path = "/v2/services/{service_id}/heartbeats", tag = "services",
    params(("service_id" = i64, Path, minimum = 1), PageParams),
    responses((status = 200, description = "Heartbeats, newest first", body = Envelope<HeartbeatPage>),
              (status = 400, description = "Bad service_id, limit or offset"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn list_service_heartbeats(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let s = load(&app, &id).await?;
    let page = params.page(DEFAULT_PAGE, MAX_PAGE)?;
    // One extra row tells whether there is more, without counting a large table.
    let mut rows = app
        .store
        .list_heartbeats(&HeartbeatQuery {
            service_id: Some(s.id),
            limit: page.limit + 1,
            offset: page.offset,
            ..HeartbeatQuery::default()
        })
        .await?;
    let has_more = rows.len() > page.limit as usize;
    rows.truncate(page.limit as usize);
    Ok(ok(
        StatusCode::OK,
        "",
        HeartbeatPage {
            entries: rows.iter().map(HeartbeatOut::from).collect(),
            limit: page.limit,
            offset: page.offset,
            has_more,
        },
    ))
}

/// A service's job runs, newest first.
#[utoipa::path(get, path = "/v2/services/{service_id}/runs", tag = "services",
    params(("service_id" = i64, Path, minimum = 1), PageParams),
    responses((status = 200, description = "A page of job runs, newest first", body = Envelope<Page<JobRunOut>>),
              (status = 400, description = "Bad service_id, limit or offset"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn list_service_runs(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let s = load(&app, &id).await?;
    let page = params.page(DEFAULT_PAGE, MAX_PAGE)?;
    let found = app.store.list_runs(s.id, page).await?;
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(
            found.entries.iter().map(JobRunOut::from).collect(),
            found.total_count,
            page,
        ),
    ))
}
