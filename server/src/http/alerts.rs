//! v2 alerts: list and filter, one alert, a service's alert history, acknowledge and resolve;
//! and the delivery log of a notification target.
//!
//! The monitor opens, re-notifies and resolves alerts; operators acknowledge (stops the
//! re-notifications and tells PagerDuty and the other destinations) and resolve (closes the
//! alert; the monitor does not open the same incident again — the next one opens after the
//! service has beaten and gone silent again).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, ok};
use super::extract::{Caller, Params, actor, paginated, path_id};
use super::services::load as load_service;
use super::teams::mask;
use crate::domain::{Priority, Scope};
use crate::notify::event::Destination;
use crate::store::{
    Alert, AlertChange, AlertFilter, AlertKind, AlertState, DeliveryRecord, TargetId,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
        .routes(routes!(acknowledge))
        .routes(routes!(resolve))
        .routes(routes!(history))
        .routes(routes!(deliveries))
}

/// The v2 representation of an alert.
pub fn v2_alert(a: &Alert) -> Value {
    json!({
        "alert_id": a.alert_id,
        "service_id": a.service_id,
        "kind": a.kind,
        "name": a.alert_name,
        "state": a.state,
        "priority": a.details.priority,
        "team": a.details.team,
        "summary": a.details.summary,
        "dedup_key": a.dedup_key,
        "external_reference_id": a.external_reference_id,
        "down_since": a.details.down_since,
        "created_at": a.created_at,
        "last_notified_at": a.details.last_notified_at,
        "acknowledged_at": a.acknowledged_at,
        "acknowledged_by": a.details.acknowledged_by,
        "resolved_at": a.resolved_at,
        "resolved_by": a.details.resolved_by,
        "resolve_reason": a.details.resolve_reason,
        "run_id": a.details.run_id,
    })
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
    params(("state" = Option<String>, Query, description = "open, acknowledged, resolved or active (comma-separated)"),
           ("kind" = Option<String>, Query, description = "heartbeat_missing, job_failed, job_overdue, run_refused"),
           ("service_id" = Option<i64>, Query), ("team" = Option<String>, Query),
           ("priority" = Option<String>, Query), ("since" = Option<String>, Query, description = "RFC 3339; opened at or after"),
           ("limit" = Option<u32>, Query, description = "1..250, default 50"), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "A page of alerts"), (status = 400, description = "Bad filter")),
    security(("bearer" = [])))]
async fn list(State(app): State<AppState>, caller: Caller, params: Params) -> ApiResult {
    caller.require(Scope::Read)?;
    let f = filter(&params)?;
    let page = params.page(50, 250)?;
    let found = app.store.list_alerts_filtered(&f, page).await?;
    let entries: Vec<Value> = found.entries.iter().map(v2_alert).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(&entries, found.total_count, page),
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
    params(("alert_id" = i64, Path)),
    responses((status = 200, description = "The alert"), (status = 404, description = "Not found")),
    security(("bearer" = [])))]
async fn get_one(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.require(Scope::Read)?;
    Ok(ok(StatusCode::OK, "", v2_alert(&load(&app, &id).await?)))
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
            json!({"alert_id": a.alert_id, "kind": a.kind}),
        )
    };
    let outcome = if resolve {
        app.store.resolve_alert(id, &who, now, Some(&audit)).await?
    } else {
        app.store
            .acknowledge_alert(id, &who, now, Some(&audit))
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
            Ok(ok(StatusCode::OK, &format!("Alert {verb}."), v2_alert(&a)))
        }
    }
}

/// Acknowledge an open alert: re-notifications stop; PagerDuty and the other destinations the
/// alert went to are told.
#[utoipa::path(post, path = "/v2/alerts/{alert_id}/ack", tag = "alerts",
    params(("alert_id" = i64, Path)),
    responses((status = 200, description = "Acknowledged"), (status = 404, description = "Not found"),
              (status = 409, description = "Not open")),
    security(("bearer" = [])))]
async fn acknowledge(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    change(&app, &caller, &headers, &id, false).await
}

/// Resolve an open or acknowledged alert by hand.
#[utoipa::path(post, path = "/v2/alerts/{alert_id}/resolve", tag = "alerts",
    params(("alert_id" = i64, Path)),
    responses((status = 200, description = "Resolved"), (status = 404, description = "Not found"),
              (status = 409, description = "Already resolved")),
    security(("bearer" = [])))]
async fn resolve(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    change(&app, &caller, &headers, &id, true).await
}

/// A service's alert history, newest first.
#[utoipa::path(get, path = "/v2/services/{service_id}/alerts", tag = "alerts",
    params(("service_id" = String, Path, description = "Numeric id or heartbeat name"),
           ("state" = Option<String>, Query), ("kind" = Option<String>, Query),
           ("limit" = Option<u32>, Query), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "A page of alerts"), (status = 404, description = "No such service")),
    security(("bearer" = [])))]
async fn history(
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
    let entries: Vec<Value> = found.entries.iter().map(v2_alert).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(&entries, found.total_count, page),
    ))
}

fn v2_delivery(d: &DeliveryRecord) -> Value {
    let destination = match &d.destination {
        Destination::Slack { channel } => json!({"kind": "slack", "channel": channel}),
        Destination::Pagerduty { routing_key } => {
            json!({"kind": "pagerduty", "routing_key": mask(routing_key)})
        }
        Destination::Webhook { url, .. } => json!({"kind": "webhook", "url": url}),
    };
    json!({
        "delivery_id": d.id,
        "alert_id": d.alert_id,
        "target_id": d.target_id,
        "event": d.event,
        "destination": destination,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "external_ref": d.external_ref,
        "created_at": d.created_at,
        "finished_at": d.finished_at,
    })
}

/// The delivery log of a webhook (any notification target): every notification queued for it,
/// newest first, with attempts and the last status or error.
#[utoipa::path(get, path = "/v2/webhooks/{target_id}/deliveries", tag = "alerts",
    params(("target_id" = i64, Path), ("limit" = Option<u32>, Query), ("offset" = Option<u32>, Query)),
    responses((status = 200, description = "A page of deliveries"), (status = 404, description = "No such target")),
    security(("bearer" = [])))]
async fn deliveries(
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
    let entries: Vec<Value> = found.entries.iter().map(v2_delivery).collect();
    Ok(ok(
        StatusCode::OK,
        "",
        paginated(&entries, found.total_count, page),
    ))
}
