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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::json_response;
use super::schema::Time;
use crate::domain::Priority;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
}

/// The state of the server or of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    /// Serving, but a configured component (Redis) is failing.
    Degraded,
    Unhealthy,
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthOut {
    pub status: HealthStatus,
    /// The server's version.
    pub version: String,
    pub uptime_seconds: u64,
    /// The server's clock when it answered (the old service's CLI shows it).
    pub timestamp: Time,
    pub components: Components,
}

/// The components the deployment configured.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Components {
    pub database: DatabaseHealth,
    /// Present only when `REDIS_URL` is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisHealth>,
    pub rate_limiter: LimiterHealth,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatabaseHealth {
    pub status: HealthStatus,
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// How long the ping took.
    pub latency_ms: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RedisHealth {
    pub status: HealthStatus,
    /// Null when Redis did not answer.
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LimiterHealth {
    pub status: HealthStatus,
    /// Where the counters live: `memory` or `redis`.
    pub backend: String,
}

/// `GET /health/live`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LiveOut {
    /// Always `alive`.
    pub status: String,
}

/// `GET /health/ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyOut {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Why not (503 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, description = "healthy or degraded", body = HealthOut),
              (status = 503, description = "unhealthy: the database is unreachable", body = HealthOut)))]
async fn health(State(app): State<AppState>) -> Response {
    let started = Instant::now();
    let db = within_deadline(&app, app.store.ping()).await;
    let db_ms = started.elapsed().as_secs_f64() * 1000.0;
    let database = DatabaseHealth {
        status: if db.is_ok() {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        },
        backend: app.store.backend().as_str().to_owned(),
        latency_ms: (db_ms * 100.0).round() / 100.0,
    };
    let redis = app.limiter.ping().await.map(|redis| match redis {
        Ok(d) => RedisHealth {
            status: HealthStatus::Healthy,
            latency_ms: Some((d.as_secs_f64() * 100_000.0).round() / 100.0),
        },
        Err(_) => RedisHealth {
            status: HealthStatus::Unhealthy,
            latency_ms: None,
        },
    });
    let degraded = redis
        .as_ref()
        .is_some_and(|r| r.status == HealthStatus::Unhealthy);
    let (code, status) = match (db.is_ok(), degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, HealthStatus::Unhealthy),
        (true, true) => (StatusCode::OK, HealthStatus::Degraded),
        (true, false) => (StatusCode::OK, HealthStatus::Healthy),
    };
    let body = HealthOut {
        status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: app.started.elapsed().as_secs(),
        timestamp: Time(app.clock.now()),
        components: Components {
            database,
            redis,
            rate_limiter: LimiterHealth {
                status: HealthStatus::Healthy,
                backend: app.limiter.backend().to_owned(),
            },
        },
    };
    json_response(code, &body)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "operations", security(()),
    responses((status = 200, description = "alive", body = LiveOut)))]
async fn live() -> Response {
    json_response(
        StatusCode::OK,
        &LiveOut {
            status: "alive".to_owned(),
        },
    )
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/health/ready", tag = "operations", security(()),
    responses((status = 200, description = "ready", body = ReadyOut),
              (status = 503, description = "database unreachable", body = ReadyOut)))]
async fn ready(State(app): State<AppState>) -> Response {
    match within_deadline(&app, app.store.ping()).await {
        Ok(()) => json_response(
            StatusCode::OK,
            &ReadyOut {
                status: "ready".to_owned(),
                reason: None,
            },
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &ReadyOut {
                    status: "not_ready".to_owned(),
                    reason: Some("database unreachable".to_owned()),
                },
            )
        }
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text exposition format",
               content_type = "text/plain; version=0.0.4", body = String)))]
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
