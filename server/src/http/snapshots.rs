//! Snapshots: the before-image of every service change, listable and restorable (undo).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, ok};
use super::extract::{Caller, MAX_ACTOR_LEN, OptionalJsonBody, Params, actor, paginated, path_id};
use super::services::v2_service;
use crate::domain::{Scope, ServiceId, SnapshotAction, SnapshotId};
use crate::store::{RestoreOutcome, Service, SnapshotFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .routes(routes!(restore))
}

/// List snapshots, newest first.
#[utoipa::path(get, path = "/v2/snapshots", tag = "snapshots",
    params(("service_id" = Option<i64>, Query), ("action_type" = Option<String>, Query),
           ("start_date" = Option<String>, Query), ("end_date" = Option<String>, Query),
           ("limit" = Option<u32>, Query, description = "1..250, default 50"), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "A page of snapshots"), (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let page = params.page(50, 250)?;
    let action_type = params
        .text("action_type")
        .map(|a| {
            SnapshotAction::parse(a).ok_or_else(|| {
                ApiError::bad_request(
                    "action_type must be one of deactivate, activate, mute, unmute, edit, \
                     bulk_edit, priority_change, team_change, delete.",
                )
            })
        })
        .transpose()?;
    let filter = SnapshotFilter {
        service_id: params.int("service_id", 1, i64::MAX)?.map(ServiceId),
        action_type,
        start: params.time("start_date")?,
        end: params.time("end_date")?,
    };
    let found = app.store.list_snapshots(&filter, page).await?;
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(&found.entries, found.total_count, page),
    ))
}

/// Fetch one snapshot.
#[utoipa::path(get, path = "/v2/snapshots/{snapshot_id}", tag = "snapshots",
    params(("snapshot_id" = i64, Path)),
    responses((status = 200, description = "The snapshot"), (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_one(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = SnapshotId(path_id(&id, "snapshot_id")?);
    let snap = app
        .store
        .get_snapshot(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Snapshot {} was not found.", id.0)))?;
    Ok(ok(StatusCode::OK, "", snap))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreIn {
    /// Who is restoring (else the X-Actor header, else the API key's name).
    #[serde(default)]
    actor: Option<String>,
}

/// Put a service back as the snapshot recorded it (undeleting it if needed).
#[utoipa::path(post, path = "/v2/snapshots/{snapshot_id}/restore", tag = "snapshots",
    params(("snapshot_id" = i64, Path)), request_body(content = RestoreIn, description = "Optional"),
    responses((status = 200, description = "Restored"), (status = 400, description = "Already restored"),
              (status = 404, description = "Not found"), (status = 409, description = "Name now taken")),
    security(("bearer" = [])))]
async fn restore(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RestoreIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let id = SnapshotId(path_id(&id, "snapshot_id")?);
    let who = match body.actor.as_deref().map(str::trim) {
        Some(a) if !a.is_empty() => {
            if a.len() > MAX_ACTOR_LEN || a.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "actor must be 1 to {MAX_ACTOR_LEN} printable characters."
                )));
            }
            a.to_owned()
        }
        _ => actor(&headers, &caller)?,
    };
    let audit = |service: &Service| {
        entry(
            "snapshot_restored",
            &who,
            Some(service.id),
            json!({ "snapshot_id": id }),
        )
    };
    match app.store.restore_snapshot(id, &who, Some(&audit)).await? {
        RestoreOutcome::Restored(service) => Ok(ok(
            StatusCode::OK,
            "Snapshot restored.",
            v2_service(&service),
        )),
        RestoreOutcome::NotFound => Err(ApiError::not_found(format!(
            "Snapshot {} was not found.",
            id.0
        ))),
        RestoreOutcome::AlreadyRestored => Err(ApiError::bad_request(format!(
            "Snapshot {} has already been restored.",
            id.0
        ))),
        RestoreOutcome::NameTaken => Err(ApiError::conflict(
            "Another service now uses this snapshot's heartbeat_name; rename it first.",
        )),
    }
}
