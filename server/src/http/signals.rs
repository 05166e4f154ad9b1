//! Job signals (`POST /v2/heartbeat/{service_id}/start|complete|fail`) and run statistics
//! (`GET /v2/services/{service_id}/stats`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, OptionalJsonBody, path_id};
use super::legacy::RunIdValue;
use crate::domain::stats::{DurationStats, STATS_WINDOW, duration_stats};
use crate::domain::{Scope, ServiceId};
use crate::store::{JobRun, JobSignal, JobSignalOutcome, RunStatus, Service, SignalKind};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(complete))
        .routes(routes!(fail))
        .routes(routes!(stats))
}

/// Largest job output body kept with a run, in bytes. Longer bodies keep their last
/// `MAX_RUN_BODY_BYTES` (the end of a log is usually what matters) and are flagged truncated.
pub const MAX_RUN_BODY_BYTES: usize = 10 * 1024;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalIn {
    /// A string or a number, kept as text. On start, absent means the server makes one up; on
    /// complete/fail, absent means the newest running run of the service.
    #[serde(default)]
    #[schema(value_type = Option<String>, max_length = 255)]
    run_id: Option<RunIdValue>,
    /// Process exit code; non-zero marks the run failed.
    #[serde(default)]
    exit_code: Option<i32>,
    /// Short text output, without NUL (longer than 10 KiB keeps its last 10 KiB).
    #[serde(default)]
    body: Option<String>,
}

/// How a job signal left its run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum SignalStatus {
    Started,
    Completed,
    Failed,
}

/// A recorded job signal.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignalOut {
    pub service_id: i64,
    pub heartbeat_name: String,
    pub status: SignalStatus,
    pub run_id: String,
    pub exit_code: Option<i32>,
    /// Whether the stored body kept only the tail of what was sent.
    pub body_truncated: bool,
    /// Present once the run has both a start and an end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Present when the service has `max_duration_ms` and the run has a duration: whether the
    /// run took longer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_alert: Option<bool>,
}

impl SignalOut {
    fn new(kind: SignalKind, service: &Service, run: JobRun) -> Self {
        let status = match (kind, run.status) {
            (SignalKind::Start, _) | (_, RunStatus::Running) => SignalStatus::Started,
            (_, RunStatus::Failed) => SignalStatus::Failed,
            (_, RunStatus::Completed) => SignalStatus::Completed,
        };
        let duration_alert = match (run.duration_ms, service.max_duration_ms) {
            (Some(d), Some(max)) => Some(d > max),
            _ => None,
        };
        Self {
            service_id: service.id.0,
            heartbeat_name: service.heartbeat_name.clone(),
            status,
            run_id: run.run_id,
            exit_code: run.exit_code,
            body_truncated: run.body_truncated,
            duration_ms: run.duration_ms,
            duration_alert,
        }
    }
}

/// Run-duration statistics of a service; the figures are null below 5 finished runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsOut {
    pub service_id: i64,
    /// Finished runs considered (the last 100 at most).
    pub run_count: usize,
    pub avg_duration_ms: Option<f64>,
    pub p50_duration_ms: Option<i64>,
    pub p95_duration_ms: Option<i64>,
    pub p99_duration_ms: Option<i64>,
    pub min_duration_ms: Option<i64>,
    pub max_duration_ms: Option<i64>,
}

impl StatsOut {
    fn new(id: ServiceId, run_count: usize, s: Option<&DurationStats>) -> Self {
        Self {
            service_id: id.0,
            run_count,
            avg_duration_ms: s.map(|s| s.avg_duration_ms),
            p50_duration_ms: s.map(|s| s.p50_duration_ms),
            p95_duration_ms: s.map(|s| s.p95_duration_ms),
            p99_duration_ms: s.map(|s| s.p99_duration_ms),
            min_duration_ms: s.map(|s| s.min_duration_ms),
            max_duration_ms: s.map(|s| s.max_duration_ms),
        }
    }
}

/// Keeps at most the last `max` bytes of `s`, on a character boundary.
pub fn tail(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_owned(), false);
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    (s[start..].to_owned(), true)
}

async fn signal(
    app: AppState,
    caller: Caller,
    raw_id: String,
    kind: SignalKind,
    body: SignalIn,
) -> ApiResult {
    caller.require_or_anonymous(Scope::Ingest, app.config.allow_anonymous_heartbeats)?;
    let id = ServiceId(path_id(&raw_id, "service_id")?);
    let run_id = body
        .run_id
        .map(RunIdValue::into_text)
        .transpose()?
        .flatten();
    if body.body.as_deref().is_some_and(|b| b.contains('\0')) {
        return Err(ApiError::bad_request(
            "body must not contain NUL characters.",
        ));
    }
    let (text, truncated) = match body.body.as_deref() {
        Some(b) => {
            let (t, cut) = tail(b, MAX_RUN_BODY_BYTES);
            (Some(t), cut)
        }
        None => (None, false),
    };
    let outcome = app
        .store
        .record_job_signal(&JobSignal {
            service_id: id,
            kind,
            run_id,
            exit_code: body.exit_code,
            body: text,
            body_truncated: truncated,
            at: app.clock.now(),
        })
        .await?;
    match outcome {
        JobSignalOutcome::UnknownService => {
            metrics::counter!("medic_heartbeats_received_total", "outcome" => "unknown_service")
                .increment(1);
            Err(ApiError::not_found(format!(
                "Service {id} is not a registered service."
            )))
        }
        JobSignalOutcome::Inactive { heartbeat_name } => {
            metrics::counter!("medic_heartbeats_received_total", "outcome" => "inactive")
                .increment(1);
            Err(ApiError::bad_request(format!(
                "{heartbeat_name} was located, but is marked inactive. Does this need to be re-enabled?"
            )))
        }
        JobSignalOutcome::Recorded { service, run } => {
            metrics::counter!("medic_heartbeats_received_total", "outcome" => "accepted")
                .increment(1);
            Ok(ok(
                StatusCode::CREATED,
                "Job signal recorded.",
                SignalOut::new(kind, &service, run),
            ))
        }
    }
}

/// Signal that a job run started.
#[utoipa::path(post, path = "/v2/heartbeat/{service_id}/start", tag = "heartbeats",
    operation_id = "signal_start", params(("service_id" = i64, Path, minimum = 1)),
    request_body(content = SignalIn, description = "Optional"), security(("bearer" = []), ()),
    responses((status = 201, description = "Recorded", body = Envelope<SignalOut>),
              (status = 404, description = "Unknown service"),
              (status = 400, description = "Invalid body or inactive service")))]
async fn start(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<SignalIn>,
) -> ApiResult {
    signal(app, caller, id, SignalKind::Start, body).await
}

/// Signal that a job run completed (a non-zero `exit_code` records it as failed).
#[utoipa::path(post, path = "/v2/heartbeat/{service_id}/complete", tag = "heartbeats",
    operation_id = "signal_complete", params(("service_id" = i64, Path, minimum = 1)),
    request_body(content = SignalIn, description = "Optional"), security(("bearer" = []), ()),
    responses((status = 201, description = "Recorded", body = Envelope<SignalOut>),
              (status = 404, description = "Unknown service"),
              (status = 400, description = "Invalid body or inactive service")))]
async fn complete(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<SignalIn>,
) -> ApiResult {
    signal(app, caller, id, SignalKind::Complete, body).await
}

/// Signal that a job run failed.
#[utoipa::path(post, path = "/v2/heartbeat/{service_id}/fail", tag = "heartbeats",
    operation_id = "signal_fail", params(("service_id" = i64, Path, minimum = 1)),
    request_body(content = SignalIn, description = "Optional"), security(("bearer" = []), ()),
    responses((status = 201, description = "Recorded", body = Envelope<SignalOut>),
              (status = 404, description = "Unknown service"),
              (status = 400, description = "Invalid body or inactive service")))]
async fn fail(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<SignalIn>,
) -> ApiResult {
    signal(app, caller, id, SignalKind::Fail, body).await
}

/// Run-duration statistics over the last 100 finished runs (null below 5 runs).
#[utoipa::path(get, path = "/v2/services/{service_id}/stats", tag = "services",
    operation_id = "service_stats", params(("service_id" = i64, Path, minimum = 1)),
    responses((status = 200, description = "Statistics", body = Envelope<StatsOut>),
              (status = 400, description = "Bad service_id"),
              (status = 404, description = "Unknown service")),
    security(("bearer" = [])))]
async fn stats(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    caller.require(Scope::Read)?;
    let id = ServiceId(path_id(&id, "service_id")?);
    if app.store.get_service(id).await?.is_none() {
        return Err(ApiError::not_found(format!("Service {id} was not found.")));
    }
    let durations = app
        .store
        .recent_run_durations(id, STATS_WINDOW as u32)
        .await?;
    let s = duration_stats(&durations);
    Ok(ok(
        StatusCode::OK,
        "",
        StatsOut::new(id, durations.len(), s.as_ref()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("short", 10), ("short".to_owned(), false));
        let (t, cut) = tail("abcdéf", 3);
        assert!(cut);
        assert_eq!(t, "éf");
        // Never splits a character: 2 bytes from the end falls inside "é".
        assert_eq!(tail("abcdéf", 2), ("f".to_owned(), true));
    }
}
