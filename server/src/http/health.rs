//! Health and metrics: `/health` (components with latency), `/health/live`, `/health/ready`
//! (503 when the database is unreachable) and `/metrics` (Prometheus text).
//!
//! Every database question asked here has its own short deadline (`MEDIC_READY_TIMEOUT_MS`,
//! 1 s by default): a database that accepts connections and answers nothing makes readiness
//! answer 503 within that time, well inside a Kubernetes probe's timeout, instead of hanging
//! until the request deadline.
//!
//! `/health` reports a component as failing only if the deployment configured it: without
//! `REDIS_URL` there is no Redis component at all.

use std::future::Future;
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::domain::Priority;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
}

/// Runs a database question within the readiness deadline; a late answer is a failure.
async fn within_deadline<T>(
    app: &AppState,
    question: impl Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, String> {
    match tokio::time::timeout(app.config.ready_timeout, question).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {} ms",
            app.config.ready_timeout.as_millis()
        )),
    }
}

/// Overall health with per-component status and latency.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "healthy or degraded"),
              (status = 503, description = "unhealthy: the database is unreachable")))]
async fn health(State(app): State<AppState>) -> Response {
    let started = Instant::now();
    let db = within_deadline(&app, app.store.ping()).await;
    let db_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut components = serde_json::Map::new();
    components.insert(
        "database".into(),
        json!({
            "status": if db.is_ok() { "healthy" } else { "unhealthy" },
            "backend": app.store.backend().as_str(),
            "latency_ms": (db_ms * 100.0).round() / 100.0,
        }),
    );
    let mut degraded = false;
    if let Some(redis) = app.limiter.ping().await {
        let (status, latency) = match redis {
            Ok(d) => (
                "healthy",
                Some((d.as_secs_f64() * 100_000.0).round() / 100.0),
            ),
            Err(_) => {
                degraded = true;
                ("unhealthy", None)
            }
        };
        components.insert(
            "redis".into(),
            json!({ "status": status, "latency_ms": latency }),
        );
    }
    components.insert(
        "rate_limiter".into(),
        json!({ "status": "healthy", "backend": app.limiter.backend() }),
    );
    let (code, status) = match (db.is_ok(), degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "healthy"),
    };
    let body = json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "components": components,
    });
    (code, axum::Json(body)).into_response()
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "alive")))]
async fn live() -> Response {
    axum::Json(json!({ "status": "alive" })).into_response()
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
async fn ready(State(app): State<AppState>) -> Response {
    match within_deadline(&app, app.store.ping()).await {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "not_ready", "reason": "database unreachable" })),
            )
                .into_response()
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format")))]
async fn metrics_text(State(app): State<AppState>) -> Response {
    let pool = app.store.pool_stats();
    metrics::gauge!("medic_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("medic_db_pool_connections", "state" => "in_use")
        .set(f64::from(pool.size.saturating_sub(pool.idle)));
    metrics::gauge!("medic_db_pool_max_connections").set(f64::from(pool.max));
    metrics::gauge!("medic_rate_limiter_buckets").set(app.limiter.memory_buckets() as f64);
    metrics::gauge!("medic_api_key_cache_entries").set(app.auth.cached() as f64);
    // Open alerts come from the database, so every replica reports the same truth (aggregate
    // with max, not sum) and a restart does not reset them.
    match within_deadline(&app, app.store.open_alert_counts()).await {
        Ok(counts) => {
            for p in [
                Priority::P1,
                Priority::P2,
                Priority::P3,
                Priority::P4,
                Priority::P5,
            ] {
                let n: i64 = counts
                    .iter()
                    .filter(|(prio, _, _)| *prio == Some(p))
                    .map(|(_, _, n)| n)
                    .sum();
                metrics::gauge!("medic_alerts_open", "priority" => p.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting open alerts failed"),
    }
    crate::telemetry::upkeep().run();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
