//! v2 maintenance windows and the service snooze: periods in which alerts are suppressed.
//!
//! A window is one-time (`starts_at`..`ends_at`, half-open) or recurring (a cron expression in
//! a time zone, lasting `duration_minutes` from each fire time), and applies to one service,
//! one team (every service whose `team` matches it) or everything (`global`). Windows are
//! validated through the domain's [`MaintenanceWindow`] before anything is saved. This module
//! records windows; deciding what they suppress is the monitor's job.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, JsonBody, OptionalJsonBody, Params, actor, path_id};
use super::legacy::clean_text;
use super::schema::Time;
use super::services::load as load_service;
use crate::domain::schedule::{MAX_WINDOW_MINUTES, MaintenanceWindow, MaintenanceWindowSpec};
use crate::domain::{Scope, ServiceId, Timestamp};
use crate::store::{
    MaintenanceWindowRecord, NewWindow, ScopeKind, TeamId, WindowFilter, WindowId, WindowScope,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_windows, create_window))
        .routes(routes!(get_window, delete_window))
        .routes(routes!(snooze_service))
}

/// Longest window reason.
const MAX_REASON_LEN: usize = 500;

/// When a window applies, as the API reads and writes it (tagged by `kind`).
#[derive(ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(dead_code)]
pub enum WindowDoc {
    /// From `starts_at` (inclusive) to `ends_at` (exclusive).
    OneTime {
        #[schema(value_type = String, format = DateTime)]
        starts_at: Timestamp,
        #[schema(value_type = String, format = DateTime)]
        ends_at: Timestamp,
    },
    /// From each time the cron expression fires, in the time zone, for the duration.
    Recurring {
        cron: String,
        /// An IANA time zone.
        timezone: String,
        #[schema(minimum = 1, maximum = 10080)]
        duration_minutes: u32,
    },
}

/// What a window applies to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeOut {
    Service,
    Team,
    Global,
}

/// The v2 representation of a window; `active` is evaluated at the time of the answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WindowOut {
    pub window_id: i64,
    pub scope: ScopeOut,
    pub service_id: Option<i64>,
    pub team_id: Option<i64>,
    #[schema(value_type = WindowDoc)]
    pub window: MaintenanceWindow,
    /// Whether the window is open now.
    pub active: bool,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: Time,
}

impl WindowOut {
    fn new(w: &MaintenanceWindowRecord, now: Timestamp) -> Self {
        let (scope, service_id, team_id) = match w.scope {
            WindowScope::Service(s) => (ScopeOut::Service, Some(s.0), None),
            WindowScope::Team(t) => (ScopeOut::Team, None, Some(t.0)),
            WindowScope::Global => (ScopeOut::Global, None, None),
        };
        Self {
            window_id: w.id.0,
            scope,
            service_id,
            team_id,
            window: w.window.clone(),
            active: w.window.is_active(now),
            reason: w.reason.clone(),
            created_by: w.created_by.clone(),
            created_at: w.created_at.into(),
        }
    }
}

/// A deleted window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeletedWindowOut {
    pub window_id: i64,
}

fn service_of(w: &MaintenanceWindowRecord) -> Option<ServiceId> {
    match w.scope {
        WindowScope::Service(s) => Some(s),
        _ => None,
    }
}

fn reason(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(raw
        .map(|r| clean_text(r, "reason", MAX_REASON_LEN))
        .transpose()?
        .filter(|r| !r.is_empty()))
}

/// List maintenance windows.
#[utoipa::path(get, path = "/v2/maintenance-windows", tag = "maintenance",
    params(("scope" = Option<ScopeOut>, Query),
           ("service_id" = Option<i64>, Query, minimum = 1), ("team_id" = Option<i64>, Query, minimum = 1),
           ("active_at" = Option<String>, Query, format = DateTime, description = "Only windows active at this RFC 3339 time"),
           ("active" = Option<bool>, Query, description = "1: only windows active now")),
    responses((status = 200, description = "Windows, by id", body = Envelope<Vec<WindowOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_windows(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let now = app.clock.now();
    let scope = params
        .text("scope")
        .map(|s| {
            ScopeKind::parse(s)
                .ok_or_else(|| ApiError::bad_request("scope must be one of service, team, global."))
        })
        .transpose()?;
    let mut active_at = params.time("active_at")?;
    if params.flag("active")? == Some(true) {
        active_at.get_or_insert(now);
    }
    let filter = WindowFilter {
        scope,
        service: params.int("service_id", 1, i64::MAX)?.map(ServiceId),
        team: params.int("team_id", 1, i64::MAX)?.map(TeamId),
        active_at,
    };
    let windows = app.store.list_windows(&filter).await?;
    let entries: Vec<WindowOut> = windows.iter().map(|w| WindowOut::new(w, now)).collect();
    Ok(ok(StatusCode::OK, "", entries))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWindowIn {
    /// `service` (needs `service_id`), `team` (needs `team_id`) or `global`.
    #[schema(value_type = ScopeOut)]
    scope: String,
    #[serde(default)]
    #[schema(minimum = 1)]
    service_id: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 1)]
    team_id: Option<i64>,
    /// A one-time window must end in the future.
    #[schema(value_type = WindowDoc)]
    window: Value,
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// Parses and checks a window: a valid spec, and a one-time window must not be over already.
fn window(raw: Value, now: Timestamp) -> Result<MaintenanceWindow, ApiError> {
    let spec: MaintenanceWindowSpec =
        serde_json::from_value(raw).map_err(|e| ApiError::bad_request(format!("window: {e}.")))?;
    let w = MaintenanceWindow::try_from(spec)
        .map_err(|e| ApiError::bad_request(format!("window: {e}.")))?;
    if let MaintenanceWindow::OneTime { ends_at, .. } = &w
        && *ends_at <= now
    {
        return Err(ApiError::bad_request(
            "window: ends_at must be in the future.",
        ));
    }
    Ok(w)
}

/// Create a maintenance window.
#[utoipa::path(post, path = "/v2/maintenance-windows", tag = "maintenance", request_body = CreateWindowIn,
    responses((status = 201, description = "Created", body = Envelope<WindowOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "No such service or team")),
    security(("bearer" = [])))]
async fn create_window(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateWindowIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let now = app.clock.now();
    let scope = match (body.scope.trim(), body.service_id, body.team_id) {
        ("service", Some(id), None) => WindowScope::Service(ServiceId(id)),
        ("team", None, Some(id)) => WindowScope::Team(TeamId(id)),
        ("global", None, None) => WindowScope::Global,
        ("service", _, _) => {
            return Err(ApiError::bad_request(
                "service_id is required (and team_id not allowed) for scope service.",
            ));
        }
        ("team", _, _) => {
            return Err(ApiError::bad_request(
                "team_id is required (and service_id not allowed) for scope team.",
            ));
        }
        ("global", _, _) => {
            return Err(ApiError::bad_request(
                "service_id and team_id are not allowed for scope global.",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "scope must be one of service, team, global.",
            ));
        }
    };
    let new = NewWindow {
        scope,
        window: window(body.window, now)?,
        reason: reason(body.reason.as_deref())?,
        created_by: who.label(),
        at: now,
    };
    match scope {
        WindowScope::Service(id) => {
            load_service(&app, &id.0.to_string()).await?;
        }
        WindowScope::Team(id) => {
            if app.store.get_team(id).await?.is_none() {
                return Err(ApiError::not_found(format!("Team {id} was not found.")));
            }
        }
        // Silencing every alert is an administrator's call.
        WindowScope::Global => {
            caller.require(Scope::Admin)?;
        }
    }
    let audit = |w: &MaintenanceWindowRecord| {
        entry(
            "maintenance_window_created",
            &who,
            service_of(w),
            WindowOut::new(w, now),
        )
    };
    let w = app.store.create_window(&new, Some(&audit)).await?;
    Ok(ok(
        StatusCode::CREATED,
        "Maintenance window created.",
        WindowOut::new(&w, now),
    ))
}

/// Fetch one maintenance window.
#[utoipa::path(get, path = "/v2/maintenance-windows/{window_id}", tag = "maintenance",
    params(("window_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The window", body = Envelope<WindowOut>),
              (status = 400, description = "Bad window_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_window(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = WindowId(path_id(&id, "window_id")?);
    let w =
        app.store.get_window(id).await?.ok_or_else(|| {
            ApiError::not_found(format!("Maintenance window {id} was not found."))
        })?;
    Ok(ok(StatusCode::OK, "", WindowOut::new(&w, app.clock.now())))
}

/// Delete a maintenance window (ends it at once).
#[utoipa::path(delete, path = "/v2/maintenance-windows/{window_id}", tag = "maintenance",
    params(("window_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Deleted", body = Envelope<DeletedWindowOut>),
              (status = 400, description = "Bad window_id or X-Actor"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn delete_window(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    let id = WindowId(path_id(&id, "window_id")?);
    let Some(w) = app.store.get_window(id).await? else {
        return Err(ApiError::not_found(format!(
            "Maintenance window {id} was not found."
        )));
    };
    if w.scope == WindowScope::Global {
        caller.require(Scope::Admin)?;
    }
    let audit = entry(
        "maintenance_window_deleted",
        &who,
        service_of(&w),
        json!({ "window_id": id.0 }),
    );
    if !app.store.delete_window(id, Some(&audit)).await? {
        return Err(ApiError::not_found(format!(
            "Maintenance window {id} was not found."
        )));
    }
    Ok(ok(
        StatusCode::OK,
        "Maintenance window deleted.",
        DeletedWindowOut { window_id: id.0 },
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeIn {
    /// Up to one week.
    #[schema(minimum = 1, maximum = 10080)]
    minutes: u32,
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// Snooze a service: a one-time maintenance window from now for `minutes`. Needs only a
/// `write` key, so a host can snooze its own service before planned work.
#[utoipa::path(post, path = "/v2/services/{service_id}/snooze", tag = "maintenance",
    params(("service_id" = i64, Path, minimum = 1)), request_body = SnoozeIn,
    responses((status = 201, description = "The window created", body = Envelope<WindowOut>),
              (status = 400, description = "Invalid"),
              (status = 404, description = "No such service")),
    security(("bearer" = [])))]
async fn snooze_service(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<SnoozeIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(&headers, &caller)?;
    if !(1..=MAX_WINDOW_MINUTES).contains(&body.minutes) {
        return Err(ApiError::bad_request(format!(
            "minutes must be between 1 and {MAX_WINDOW_MINUTES}."
        )));
    }
    let reason = reason(body.reason.as_deref())?;
    let s = load_service(&app, &id).await?;
    let now = app.clock.now();
    let ends = now.plus_millis(i64::from(body.minutes) * 60_000);
    let w = MaintenanceWindow::one_time(now, ends).map_err(|e| ApiError::internal(&e))?;
    let audit = |rec: &MaintenanceWindowRecord| {
        entry(
            "service_snoozed",
            &who,
            Some(s.id),
            WindowOut::new(rec, now),
        )
    };
    let rec = app
        .store
        .create_window(
            &NewWindow {
                scope: WindowScope::Service(s.id),
                window: w,
                reason,
                created_by: who.label(),
                at: now,
            },
            Some(&audit),
        )
        .await?;
    Ok(ok(
        StatusCode::CREATED,
        &format!("Service snoozed for {} minutes.", body.minutes),
        WindowOut::new(&rec, now),
    ))
}
