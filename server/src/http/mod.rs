//! The HTTP API: the legacy v1 contract of COMPAT.md, the v2 management API, health, metrics and
//! docs.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests can drive it over a real
//! socket. One module per resource, each with its handlers; the cross-cutting layers (request
//! id, tracing, panics, metrics, timeout, authentication and rate limiting) live in
//! [`middleware`]. Handlers call the [`Store`](crate::store::Store) through use-case-sized
//! methods and never see SQL.

pub mod agents;
pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod breaker;
pub mod docs;
pub mod error;
pub mod executions;
pub mod extract;
pub mod health;
pub mod legacy;
pub mod maintenance;
pub mod middleware;
pub mod playbooks;
pub mod runs;
pub mod schema;
pub mod scripts;
pub mod secrets;
pub mod services;
pub mod signals;
pub mod slack;
pub mod snapshots;
pub mod teams;
pub mod webhook_trigger;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::ratelimit::RateLimiter;
use crate::store::Store;
use crate::store::batch::HeartbeatWriter;
use error::ApiError;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub writer: HeartbeatWriter,
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub config: Config,
    pub metrics: PrometheusHandle,
    pub started: Instant,
    /// Where handlers read "now" from.
    pub clock: crate::clock::Clock,
    /// Wakes the notification dispatcher after an operator changes an alert.
    pub outbox: Arc<crate::monitor::OutboxSignal>,
    pub gateway: crate::gateway::Gateway,
    /// Starts playbook executions and applies operators' decisions to them.
    pub engine: crate::engine::Engine,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Medic API",
        description = "Heartbeat monitoring and auto-remediation. v1 routes keep the legacy \
            contract; v2 routes need `Authorization: Bearer <api key>`. Heartbeat ingestion \
            and the v1 routes also accept requests without a key when the server runs with \
            `MEDIC_ALLOW_ANONYMOUS_HEARTBEATS=true` (their `security` lists `{}` for that). \
            Every JSON answer is the envelope `{\"success\", \"message\", \"results\"}`; \
            on errors `results` is `\"\"`.",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(error::ErrorEnvelope, error::RateLimitedEnvelope, error::NoResults)),
    tags(
        (name = "heartbeats", description = "Heartbeat ingestion and job signals"),
        (name = "services", description = "Registered services"),
        (name = "alerts", description = "Alerts"),
        (name = "teams", description = "Teams and notification targets"),
        (name = "maintenance", description = "Maintenance windows and snoozes"),
        (name = "snapshots", description = "Undo for service changes"),
        (name = "audit", description = "Audit log"),
        (name = "api-keys", description = "API keys"),
        (name = "operations", description = "Health, metrics and documentation"),
        (name = "scripts", description = "Registered remediation scripts and their approval"),
        (name = "agents", description = "Host agents: the WebSocket gateway and the registry"),
        (name = "playbooks", description = "Remediation playbooks: documents and their versions"),
        (name = "secrets", description = "Secrets that playbooks use (admin; values are write-only)"),
        (name = "executions", description = "Playbook executions: timelines and approvals"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "An API key (`mdk_…`) with the scope the route needs: read, write, admin or agent."
                .to_owned(),
        );
        components.add_security_scheme(docs::BEARER, SecurityScheme::Http(bearer));
        components.add_security_scheme(
            "slack_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Slack-Signature",
                "Slack's request signature (`v0=<hex HMAC-SHA256>` of \
                 `v0:<X-Slack-Request-Timestamp>:<body>` under SLACK_SIGNING_SECRET)",
            ))),
        );
    }
}

/// All routes with their OpenAPI descriptions.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(legacy::router())
        .merge(signals::router())
        .merge(services::router())
        .merge(teams::router())
        .merge(maintenance::router())
        .merge(snapshots::router())
        .merge(audit::router())
        .merge(api_keys::router())
        .merge(health::router())
        .merge(docs::router())
        .merge(scripts::router())
        .merge(alerts::router())
        .merge(slack::router())
        .merge(agents::router())
        .merge(runs::router())
        .merge(playbooks::router())
        .merge(secrets::router())
        .merge(executions::router())
        .merge(webhook_trigger::router())
        .merge(breaker::router())
}

/// The OpenAPI document describing every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes().split_for_parts().1;
    docs::complete(&mut doc);
    doc
}

/// The API's routes without the layers of [`app`], for the web page's in-process calls.
pub(crate) fn api(state: AppState) -> Router {
    routes().split_for_parts().0.with_state(state)
}

/// Builds the application.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes().split_for_parts();
    let router = router.merge(crate::ui::router(state.clone()));
    let body_limit = state.config.max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(
            middleware::reject_control_characters,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::timeout,
        ))
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(middleware::request_id))
                .layer(TraceLayer::new_for_http().make_span_with(middleware::make_span))
                .layer(CatchPanicLayer::custom(middleware::panic_response)),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("No such route.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed for this route.",
    )
}
