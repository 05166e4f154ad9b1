//! v2 alerts: list and filter, one alert, a service's alert history, acknowledge and resolve;
//! and the delivery log of a notification target.
//!
//! The monitor opens, re-notifies and resolves alerts; operators acknowledge (stops the
//! re-notifications and tells PagerDuty and the other destinations) and resolve (closes the
//! alert; the monitor does not open the same incident again — the next one opens after the
//! service has beaten and gone silent again).

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
use super::extract::{Caller, Page, PageParams, Params, actor, paginated, path_id};
use super::schema::{self, Time, time};
use super::services::load as load_service;
use super::teams::mask;
use crate::domain::{Priority, Scope};
use crate::notify::event::Destination;
use crate::store::{
    Alert, AlertChange, AlertFilter, AlertKind, AlertState, DeliveryRecord, TargetId,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(resolve_alert))
        .routes(routes!(list_service_alerts))
        .routes(routes!(list_deliveries))
}

/// The v2 representation of an alert.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AlertOut {
    pub alert_id: i64,
    pub service_id: i64,
    pub kind: schema::AlertKind,
    pub name: String,
    pub state: schema::AlertState,
    pub priority: Option<schema::Priority>,
    pub team: Option<String>,
    pub summary: Option<String>,
    /// The incident's key at PagerDuty and in webhook events.
    pub dedup_key: String,
    pub external_reference_id: Option<String>,
    pub down_since: Option<Time>,
    pub created_at: Time,
    pub last_notified_at: Option<Time>,
    pub acknowledged_at: Option<Time>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<Time>,
    pub resolved_by: Option<String>,
    pub resolve_reason: Option<String>,
    /// The job or agent run the alert is about.
    pub run_id: Option<String>,
}

impl From<&Alert> for AlertOut {
    fn from(a: &Alert) -> Self {
        Self {
            alert_id: a.alert_id,
            service_id: a.service_id.0,
            kind: a.kind.into(),
            name: a.alert_name.clone(),
            state: a.state.into(),
            priority: a.details.priority.map(Into::into),
            team: a.details.team.clone(),
            summary: a.details.summary.clone(),
            dedup_key: a.dedup_key.clone(),
            external_reference_id: a.external_reference_id.clone(),
            down_since: time(a.details.down_since),
            created_at: a.created_at.into(),
            last_notified_at: time(a.details.last_notified_at),
            acknowledged_at: time(a.acknowledged_at),
            acknowledged_by: a.details.acknowledged_by.clone(),
            resolved_at: time(a.resolved_at),
            resolved_by: a.details.resolved_by.clone(),
            resolve_reason: a.details.resolve_reason.clone(),
            run_id: a.details.run_id.clone(),
        }
    }
}

fn filter(params: &Params) -> Result<AlertFilter, ApiError> {
    let states = match params.text("state") {
        None => Vec::new(),
        Some(raw) => raw
            .split(',')
            .map(|s| match s.trim() {
                "active" => Ok(vec![AlertState::Open, AlertState::Acknowledged]),
                other => AlertState::parse(other).map(|s| vec![s]).ok_or_else(|| {
                    ApiError::bad_request(
                        "state must be a comma-separated list of open, acknowledged, \
                         resolved, active.",
                    )
                }),
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
    };
    let kind = params
        .text("kind")
        .map(|k| {
            AlertKind::parse(k.trim()).ok_or_else(|| {
                ApiError::bad_request(
                    "kind must be one of heartbeat_missing, job_failed, job_overdue, run_refused.",
                )
            })
        })
        .transpose()?;
    let priority = params
        .text("priority")
        .map(|p| {
            Priority::parse(p).ok_or_else(|| ApiError::bad_request("priority must be p1..p5."))
        })
        .transpose()?;
    Ok(AlertFilter {
        states,
        kind,
        service: params
            .int("service_id", 1, i64::MAX)?
            .map(crate::domain::ServiceId),
        team: params
            .text("team")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        priority,
        since: params.time("since")?,
    })
}

/// List alerts, newest first.
#[utoipa::path(get, path = "/v2/alerts", tag = "alerts",
    params(("state" = Option<String>, Query, pattern = "^\\s*(open|acknowledged|resolved|active)\\s*(,\\s*(open|acknowledged|resolved|active)\\s*)*$",
            description = "open, acknowledged, resolved or active (open and acknowledged), comma-separated"),
           ("kind" = Option<schema::AlertKind>, Query),
           ("service_id" = Option<i64>, Query, minimum = 1), ("team" = Option<String>, Query),
           ("priority" = Option<schema::Priority>, Query),
           ("since" = Option<String>, Query, format = DateTime, description = "RFC 3339; opened at or after"),
           PageParams),
    responses((status = 200, description = "A page of alerts, newest first", body = Envelope<Page<AlertOut>>),
              (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list_alerts(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let f = filter(&params)?;
    let page = params.page(50, 250)?;
    let found = app.store.list_alerts_filtered(&f, page).await?;
    let entries: Vec<AlertOut> = found.entries.iter().map(AlertOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

async fn load(app: &AppState, raw: &str) -> Result<Alert, ApiError> {
    let id = path_id(raw, "alert_id")?;
    app.store
        .get_alert(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Alert {id} was not found.")))
}

/// Fetch one alert.
#[utoipa::path(get, path = "/v2/alerts/{alert_id}", tag = "alerts",
    params(("alert_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "The alert", body = Envelope<AlertOut>),
              (status = 400, description = "Bad alert_id"),
              (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_alert(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    caller.require(Scope::Read)?;
    Ok(ok(
        StatusCode::OK,
        "",
        AlertOut::from(&load(&app, &id).await?),
    ))
}

async fn change(
    app: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    raw: &str,
    resolve: bool,
) -> ApiResult {
    caller.require(Scope::Write)?;
    let who = actor(headers, caller)?;
    let id = path_id(raw, "alert_id")?;
    let now = app.clock.now();
    let action = if resolve {
        "alert_resolved"
    } else {
        "alert_acknowledged"
    };
    let audit = |a: &Alert| {
        entry(
            action,
            &who,
            Some(a.service_id),
            json!({"alert_id": a.alert_id, "kind": schema::AlertKind::from(a.kind)}),
        )
    };
    let outcome = if resolve {
        app.store
            .resolve_alert(id, &who.label(), now, Some(&audit))
            .await?
    } else {
        app.store
            .acknowledge_alert(id, &who.label(), now, Some(&audit))
            .await?
    };
    let verb = if resolve { "resolved" } else { "acknowledged" };
    match outcome {
        AlertChange::NotFound => Err(ApiError::not_found(format!("Alert {id} was not found."))),
        AlertChange::Unchanged(a) => Err(ApiError::conflict(format!(
            "Alert {id} is {}; it cannot be {verb}.",
            a.state.as_str()
        ))),
        AlertChange::Changed(a) => {
            app.outbox.poke();
            Ok(ok(
                StatusCode::OK,
                &format!("Alert {verb}."),
                AlertOut::from(&a),
            ))
        }
    }
}

/// Acknowledge an open alert: re-notifications stop; PagerDuty and the other destinations the
/// alert went to are told.
#[utoipa::path(post, path = "/v2/alerts/{alert_id}/ack", tag = "alerts",
    params(("alert_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Acknowledged", body = Envelope<AlertOut>),
              (status = 400, description = "Bad alert_id or X-Actor"),
              (status = 404, description = "Not found"), (status = 409, description = "Not open")),
    security(("bearer" = [])))]
async fn acknowledge_alert(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    change(&app, &caller, &headers, &id, false).await
}

/// Resolve an open or acknowledged alert by hand.
#[utoipa::path(post, path = "/v2/alerts/{alert_id}/resolve", tag = "alerts",
    params(("alert_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Resolved", body = Envelope<AlertOut>),
              (status = 400, description = "Bad alert_id or X-Actor"),
              (status = 404, description = "Not found"), (status = 409, description = "Already resolved")),
    security(("bearer" = [])))]
async fn resolve_alert(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    change(&app, &caller, &headers, &id, true).await
}

/// A service's alert history, newest first.
#[utoipa::path(get, path = "/v2/services/{service_id}/alerts", tag = "alerts",
    params(("service_id" = i64, Path, minimum = 1),
           ("state" = Option<String>, Query, pattern = "^\\s*(open|acknowledged|resolved|active)\\s*(,\\s*(open|acknowledged|resolved|active)\\s*)*$",
            description = "open, acknowledged, resolved or active, comma-separated"),
           ("kind" = Option<schema::AlertKind>, Query), PageParams),
    responses((status = 200, description = "A page of alerts, newest first", body = Envelope<Page<AlertOut>>),
              (status = 400, description = "Bad service_id or filter"),
              (status = 404, description = "No such service")),
    security(("bearer" = [])))]
async fn list_service_alerts(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let service = load_service(&app, &id).await?;
    let mut f = filter(&params)?;
    f.service = Some(service.id);
    let page = params.page(50, 250)?;
    let found = app.store.list_alerts_filtered(&f, page).await?;
    let entries: Vec<AlertOut> = found.entries.iter().map(AlertOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}

/// Where a notification went, secrets masked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationOut {
    Slack {
        channel: String,
    },
    /// Only the routing key's last four characters.
    Pagerduty {
        routing_key: String,
    },
    Webhook {
        url: String,
    },
}

impl From<&Destination> for DestinationOut {
    fn from(d: &Destination) -> Self {
        match d {
            Destination::Slack { channel } => Self::Slack {
                channel: channel.clone(),
            },
            Destination::Pagerduty { routing_key } => Self::Pagerduty {
                routing_key: mask(routing_key),
            },
            Destination::Webhook { url, .. } => Self::Webhook { url: url.clone() },
        }
    }
}

/// One notification queued for a target: its attempts and how it ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryOut {
    pub delivery_id: i64,
    pub alert_id: i64,
    pub target_id: Option<i64>,
    pub event: schema::EventKind,
    pub destination: DestinationOut,
    pub state: schema::DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: Time,
    /// The receiver's last HTTP status.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// What the receiver calls the notification (Slack's message, PagerDuty's dedup key).
    pub external_ref: Option<String>,
    pub created_at: Time,
    pub finished_at: Option<Time>,
}

impl From<&DeliveryRecord> for DeliveryOut {
    fn from(d: &DeliveryRecord) -> Self {
        Self {
            delivery_id: d.id,
            alert_id: d.alert_id,
            target_id: d.target_id.map(|t| t.0),
            event: d.event.into(),
            destination: (&d.destination).into(),
            state: d.state.into(),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.into(),
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            external_ref: d.external_ref.clone(),
            created_at: d.created_at.into(),
            finished_at: time(d.finished_at),
        }
    }
}

/// The delivery log of a webhook (any notification target): every notification queued for it,
/// newest first, with attempts and the last status or error.
#[utoipa::path(get, path = "/v2/webhooks/{target_id}/deliveries", tag = "alerts",
    params(("target_id" = i64, Path, minimum = 1), PageParams),
    responses((status = 200, description = "A page of deliveries, newest first", body = Envelope<Page<DeliveryOut>>),
              (status = 400, description = "Bad target_id, limit or offset"),
              (status = 404, description = "No such target")),
    security(("bearer" = [])))]
async fn list_deliveries(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = TargetId(path_id(&id, "target_id")?);
    let page = params.page(50, 250)?;
    // The log outlives a deleted target; an id that never had a delivery nor a target is 404.
    let target = app.store.get_target(id).await?;
    let found = app.store.list_deliveries(id, page).await?;
    if target.is_none() && found.total_count == 0 {
        return Err(ApiError::not_found(format!(
            "Notification target {id} was not found."
        )));
    }
    let entries: Vec<DeliveryOut> = found.entries.iter().map(DeliveryOut::from).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(entries, found.total_count, page),
    ))
}
