//! Snapshots: the before-image of every service change, listable and restorable (undo).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{
    Caller, MAX_ACTOR_LEN, OptionalJsonBody, Page, PageParams, Params, actor, paginated, path_id,
};
use super::schema::{self, Time, time};
use super::services::{MuteOut, ScheduleOut, ServiceOut};
use crate::domain::{Scope, ServiceId, SnapshotAction, SnapshotId};
use crate::store::{Monitoring, RestoreOutcome, Service, Snapshot, SnapshotFilter};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_snapshots))
        .routes(routes!(get_snapshot))
        .routes(routes!(restore_snapshot))
}

/// The before-image of a service change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotOut {
    pub snapshot_id: i64,
    pub service_id: i64,
    pub action_type: schema::SnapshotAction,
    /// The service as it was before the change.
    pub snapshot_data: StoredServiceOut,
    /// The API key that made the change, as `name (id)`.
    pub actor: String,
    /// Whom the key said it acted for (`X-Actor`), as told: not verified.
    pub on_behalf_of: Option<String>,
    pub created_at: Time,
    pub restored_at: Option<Time>,
    /// The API key that restored it.
    pub restored_by: Option<String>,
    /// Whom that key said it restored for (the body's `actor`, else `X-Actor`).
    pub restored_on_behalf_of: Option<String>,
}

impl From<&Snapshot> for SnapshotOut {
    fn from(s: &Snapshot) -> Self {
        Self {
            snapshot_id: s.snapshot_id.0,
            service_id: s.service_id.0,
            action_type: s.action_type.into(),
            snapshot_data: (&s.snapshot_data).into(),
            actor: s.actor.clone(),
            on_behalf_of: s.on_behalf_of.clone(),
            created_at: s.created_at.into(),
            restored_at: time(s.restored_at),
            restored_by: s.restored_by.clone(),
            restored_on_behalf_of: s.restored_on_behalf_of.clone(),
        }
    }
}

/// A service as a snapshot keeps it (the stored form: `id`, and the monitor's settings under
/// `monitoring`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StoredServiceOut {
    pub id: i64,
    pub heartbeat_name: String,
    pub service_name: String,
    pub environment: Option<String>,
    pub active: bool,
    pub interval_seconds: i64,
    pub threshold: i32,
    pub grace_seconds: i64,
    pub team: String,
    pub priority: schema::Priority,
    pub runbook: Option<String>,
    pub state: schema::ServiceState,
    pub mute: Option<MuteOut>,
    pub max_duration_ms: Option<i64>,
    pub last_heartbeat_at: Option<Time>,
    pub created_at: Time,
    pub updated_at: Time,
    pub monitoring: MonitoringOut,
}

impl From<&Service> for StoredServiceOut {
    fn from(s: &Service) -> Self {
        Self {
            id: s.id.0,
            heartbeat_name: s.heartbeat_name.clone(),
            service_name: s.service_name.clone(),
            environment: s.environment.clone(),
            active: s.active,
            interval_seconds: s.interval_seconds,
            threshold: s.threshold,
            grace_seconds: s.grace_seconds,
            team: s.team.clone(),
            priority: s.priority.into(),
            runbook: s.runbook.clone(),
            state: s.state.into(),
            mute: s.mute.as_ref().map(MuteOut::from),
            max_duration_ms: s.max_duration_ms,
            last_heartbeat_at: time(s.last_heartbeat_at),
            created_at: s.created_at.into(),
            updated_at: s.updated_at.into(),
            monitoring: (&s.monitoring).into(),
        }
    }
}

/// The monitor's settings of a stored service.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MonitoringOut {
    pub schedule: Option<ScheduleOut>,
    pub renotify_seconds: Option<i64>,
    pub parent_id: Option<i64>,
    pub alert_on_failure: bool,
}

impl From<&Monitoring> for MonitoringOut {
    fn from(m: &Monitoring) -> Self {
        Self {
            schedule: m.schedule.as_ref().map(ScheduleOut::from),
            renotify_seconds: m.renotify_seconds,
            parent_id: m.parent_id.map(|p| p.0),
            alert_on_failure: m.alert_on_failure,
        }
    }
}

/// List snapshots, newest first.
#[utoipa::path(get, path = "/v2/snapshots", tag = "snapshots",
    params(("service_id" = Option<i64>, Query, minimum = 1),
           ("action_type" = Option<schema::SnapshotAction>, Query),
           ("start_date" = Option<String>, Query, format = DateTime, description = "RFC 3339, or a date (its midnight UTC)"),
           ("end_date" = Option<String>, Query, format = DateTime, description = "RFC 3339, or a date (its midnight UTC)"),
           PageParams),
    responses((status = 200, description = "A page of snapshots, newest first", body = Envelope<Page<SnapshotOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_snapshots(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
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
        paginated(
            found.entries.iter().map(SnapshotOut::from).collect(),
            found.total_count,
            page,
        ),
    ))
}

/// Fetch one snapshot.
#[utoipa::path(get, path = "/v2/snapshots/{snapshot_id}", tag = "snapshots",
    params(("snapshot_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The snapshot", body = Envelope<SnapshotOut>),
              (status = 400, description = "Bad snapshot_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_snapshot(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = SnapshotId(path_id(&id, "snapshot_id")?);
    let snap = app
        .store
        .get_snapshot(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Snapshot {} was not found.", id.0)))?;
    Ok(ok(StatusCode::OK, "", SnapshotOut::from(&snap)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreIn {
    /// On whose behalf the key restores (else the X-Actor header): recorded as
    /// `restored_on_behalf_of`; the key itself is `restored_by`.
    #[serde(default)]
    #[schema(max_length = 255)]
    actor: Option<String>,
}

/// Put a service back as the snapshot recorded it (undeleting it if needed).
#[utoipa::path(post, path = "/v2/snapshots/{snapshot_id}/restore", tag = "snapshots",
    params(("snapshot_id" = i64, Path, minimum = 1)),
    request_body(content = RestoreIn, description = "Optional"),
    responses((status = 200, description = "Restored: the service as it is now", body = Envelope<ServiceOut>),
              (status = 400, description = "Already restored, or a bad actor"),
              (status = 404, description = "Not found"), (status = 409, description = "Name now taken")),
    security(("bearer" = [])))]
async fn restore_snapshot(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<RestoreIn>,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let id = SnapshotId(path_id(&id, "snapshot_id")?);
    // The body's "actor" (else X-Actor) says whom the key restores for; the key is the actor.
    let who = match body.actor.as_deref().map(str::trim) {
        Some(a) if !a.is_empty() => {
            if a.len() > MAX_ACTOR_LEN || a.chars().any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "actor must be 1 to {MAX_ACTOR_LEN} printable characters."
                )));
            }
            let mut who = actor(&HeaderMap::new(), &caller)?;
            who.on_behalf_of = Some(a.to_owned());
            who
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
            ServiceOut::from(&service),
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
