//! `POST /v2/playbooks/breaker/reset`: an admin closes an open remediation circuit breaker.
//!
//! The breaker counts executions that started in the last hour per playbook (its own
//! `circuit_breaker.max_per_hour`), per service and globally. A reset makes the starts (and
//! skips) of one scope before now no longer count, so executions may start again at once; the
//! next opening is announced to the team again. The reset and its `circuit_breaker_reset`
//! audit entry commit together.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, JsonBody, actor};
use super::schema::Time;
use crate::domain::{Scope, ServiceId};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(reset_breaker))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerResetIn {
    /// `playbook`, `service` or `global`.
    scope: String,
    /// Required for `scope: playbook`.
    #[serde(default)]
    playbook_id: Option<i64>,
    /// Required for `scope: service`.
    #[serde(default)]
    service_id: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BreakerResetOut {
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_id: Option<i64>,
    pub reset_at: Time,
    pub reset_by: String,
}

/// Reset a circuit breaker scope (admin). Audited as `circuit_breaker_reset`.
#[utoipa::path(post, path = "/v2/playbooks/breaker/reset", tag = "playbooks",
    request_body = BreakerResetIn,
    responses((status = 200, description = "Reset", body = Envelope<BreakerResetOut>),
              (status = 400, description = "Unknown scope, or the id the scope needs is missing or extra"),
              (status = 404, description = "No such playbook or service")),
    security(("bearer" = [])))]
async fn reset_breaker(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody<BreakerResetIn>,
) -> ApiResult {
    caller.require(Scope::Admin)?;
    let who = actor(&headers, &caller)?;
    let positive = |v: Option<i64>, field: &str| -> Result<i64, ApiError> {
        v.filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field} must be a positive integer for this scope."
            ))
        })
    };
    let (key, service) = match body.scope.as_str() {
        "playbook" => {
            if body.service_id.is_some() {
                return Err(ApiError::bad_request(
                    "service_id is not allowed with scope playbook.",
                ));
            }
            let id = positive(body.playbook_id, "playbook_id")?;
            if app
                .store
                .get_playbook(crate::domain::PlaybookId(id))
                .await?
                .is_none()
            {
                return Err(ApiError::not_found(format!("Playbook {id} was not found.")));
            }
            (id, None)
        }
        "service" => {
            if body.playbook_id.is_some() {
                return Err(ApiError::bad_request(
                    "playbook_id is not allowed with scope service.",
                ));
            }
            let id = positive(body.service_id, "service_id")?;
            if app.store.get_service(ServiceId(id)).await?.is_none() {
                return Err(ApiError::not_found(format!("Service {id} was not found.")));
            }
            (id, Some(ServiceId(id)))
        }
        "global" => {
            if body.playbook_id.is_some() || body.service_id.is_some() {
                return Err(ApiError::bad_request(
                    "playbook_id and service_id are not allowed with scope global.",
                ));
            }
            (0, None)
        }
        _ => {
            return Err(ApiError::bad_request(
                "scope must be playbook, service or global.",
            ));
        }
    };
    let now = app.clock.now();
    let mut audit = entry(
        "circuit_breaker_reset",
        &who,
        service,
        json!({"scope": body.scope, "playbook_id": body.playbook_id, "service_id": body.service_id}),
    );
    audit.at = now;
    app.store
        .reset_breaker(&body.scope, key, now, &who.name, &audit)
        .await?;
    let label = match body.scope.as_str() {
        "playbook" => "playbook",
        "service" => "service",
        _ => "global",
    };
    metrics::gauge!("medic_circuit_breaker_open", "scope" => label).set(0.0);
    Ok(ok(
        StatusCode::OK,
        "Circuit breaker reset.",
        BreakerResetOut {
            scope: body.scope.clone(),
            playbook_id: body.playbook_id,
            service_id: body.service_id,
            reset_at: now.into(),
            reset_by: who.name.clone(),
        },
    ))
}
