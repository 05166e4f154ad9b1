//! v2 maintenance windows and the service snooze: periods in which alerts are suppressed.
//!
//! A window is one-time (`starts_at`..`ends_at`, half-open) or recurring (a cron expression in
//! a time zone, lasting `duration_minutes` from each fire time), and applies to one service,
//! one team (every service whose `team` matches it) or everything (`global`). Windows are
//! validated through the domain's [`MaintenanceWindow`] before anything is saved. This module
//! records windows; deciding what they suppress is the monitor's job.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, ok};
use super::extract::{Caller, JsonBody, OptionalJsonBody, Params, actor, path_id};
use super::legacy::clean_text;
use super::services::load as load_service;
use crate::domain::schedule::{MAX_WINDOW_MINUTES, MaintenanceWindow, MaintenanceWindowSpec};
use crate::domain::{Scope, ServiceId, Timestamp};
use crate::store::{
    MaintenanceWindowRecord, NewWindow, ScopeKind, TeamId, WindowFilter, WindowId, WindowScope,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, delete))
        .routes(routes!(snooze))
}

/// Longest window reason.
const MAX_REASON_LEN: usize = 500;

/// The v2 representation of a window; `active` is evaluated at `now`.
pub fn v2_window(w: &MaintenanceWindowRecord, now: Timestamp) -> Value {
    let (service_id, team_id) = match w.scope {
        WindowScope::Service(s) => (Some(s.0), None),
        WindowScope::Team(t) => (None, Some(t.0)),
        WindowScope::Global => (None, None),
    };
    json!({
        "window_id": w.id,
        "scope": w.scope.as_str(),
        "service_id": service_id,
        "team_id": team_id,
        "window": w.window,
        "active": w.window.is_active(now),
        "reason": w.reason,
        "created_by": w.created_by,
        "created_at": w.created_at,
    })
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
    params(("scope" = Option<String>, Query, description = "service, team or global"),
           ("service_id" = Option<i64>, Query), ("team_id" = Option<i64>, Query),
           ("active_at" = Option<String>, Query, description = "Only windows active at this RFC 3339 time"),
           ("active" = Option<bool>, Query, description = "1: only windows active now")),
    responses((status = 200, description = "Windows, by id"), (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
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
    let entries: Vec<Value> = windows.iter().map(|w| v2_window(w, now)).collect();
    Ok(ok(StatusCode::OK, "", entries))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWindowIn {
    /// `service` (needs `service_id`), `team` (needs `team_id`) or `global`.
    scope: String,
    #[serde(default)]
    service_id: Option<i64>,
    #[serde(default)]
    team_id: Option<i64>,
    /// `{"kind": "one_time", "starts_at": "…", "ends_at": "…"}` or
    /// `{"kind": "recurring", "cron": "0 3 * * sun", "timezone": "Europe/Berlin", "duration_minutes": 60}`.
    #[schema(value_type = Object)]
    window: Value,
    #[serde(default)]
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
    responses((status = 201, description = "Created"), (status = 400, description = "Invalid"),
              (status = 404, description = "No such service or team")),
    security(("bearer" = [])))]
async fn create(
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
        created_by: who,
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
        WindowScope::Global => {}
    }
    let audit = |w: &MaintenanceWindowRecord| {
        entry(
            "maintenance_window_created",
            &w.created_by,
            service_of(w),
            v2_window(w, now),
        )
    };
    let w = app.store.create_window(&new, Some(&audit)).await?;
    Ok(ok(
        StatusCode::CREATED,
        "Maintenance window created.",
        v2_window(&w, now),
    ))
}

/// Fetch one maintenance window.
#[utoipa::path(get, path = "/v2/maintenance-windows/{window_id}", tag = "maintenance",
    params(("window_id" = i64, Path)),
    responses((status = 200, description = "The window"), (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_one(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = WindowId(path_id(&id, "window_id")?);
    let w =
        app.store.get_window(id).await?.ok_or_else(|| {
            ApiError::not_found(format!("Maintenance window {id} was not found."))
        })?;
    Ok(ok(StatusCode::OK, "", v2_window(&w, app.clock.now())))
}

/// Delete a maintenance window (ends it at once).
#[utoipa::path(delete, path = "/v2/maintenance-windows/{window_id}", tag = "maintenance",
    params(("window_id" = i64, Path)),
    responses((status = 200, description = "Deleted"), (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn delete(
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
    let audit = entry(
        "maintenance_window_deleted",
        &who,
        service_of(&w),
        json!({ "window_id": id }),
    );
    if !app.store.delete_window(id, Some(&audit)).await? {
        return Err(ApiError::not_found(format!(
            "Maintenance window {id} was not found."
        )));
    }
    Ok(ok(
        StatusCode::OK,
        "Maintenance window deleted.",
        json!({ "window_id": id }),
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeIn {
    /// 1 to 10080 (one week).
    minutes: u32,
    #[serde(default)]
    reason: Option<String>,
}

/// Snooze a service: a one-time maintenance window from now for `minutes`. Needs only a
/// `write` key, so a host can snooze its own service before planned work.
#[utoipa::path(post, path = "/v2/services/{service_id}/snooze", tag = "maintenance",
    params(("service_id" = i64, Path)), request_body = SnoozeIn,
    responses((status = 201, description = "The window created"), (status = 400, description = "Invalid"),
              (status = 404, description = "No such service")),
    security(("bearer" = [])))]
async fn snooze(
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
            &rec.created_by,
            Some(s.id),
            v2_window(rec, now),
        )
    };
    let rec = app
        .store
        .create_window(
            &NewWindow {
                scope: WindowScope::Service(s.id),
                window: w,
                reason,
                created_by: who,
                at: now,
            },
            Some(&audit),
        )
        .await?;
    Ok(ok(
        StatusCode::CREATED,
        &format!("Service snoozed for {} minutes.", body.minutes),
        v2_window(&rec, now),
    ))
}
