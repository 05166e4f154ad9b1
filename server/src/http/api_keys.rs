//! API keys: create (the plaintext is shown once), list, revoke. Admin scope.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, ok};
use super::extract::{Caller, JsonBody};
use crate::domain::apikey::{self, ApiKeyId};
use crate::domain::{Scope, Scopes, Timestamp};
use crate::store::{ApiKeyRecord, NewApiKey};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// Named rate-limit tiers (requests per minute).
pub const TIERS: [(&str, u32); 3] = [("basic", 100), ("standard", 1000), ("premium", 5000)];

/// Scopes as a list or a comma-separated string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ScopesIn {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyIn {
    name: String,
    /// Any of read, write, admin, agent.
    scopes: ScopesIn,
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    /// basic (100/min), standard (1000/min) or premium (5000/min).
    #[serde(default)]
    tier: Option<String>,
    /// Explicit requests per minute (overrides tier).
    #[serde(default)]
    rate_limit_per_minute: Option<u32>,
}

fn key_json(k: &ApiKeyRecord, now: Timestamp) -> Value {
    let status = if k.revoked_at.is_some() {
        "revoked"
    } else if k.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    };
    json!({
        "id": k.id,
        "name": k.name,
        "scopes": k.scopes.list(),
        "status": status,
        "created_at": k.created_at,
        "created_by": k.created_by,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
        "rate_limit_per_minute": k.rate_limit_per_minute,
    })
}

/// Create an API key. The key itself is in the response and never shown again.
#[utoipa::path(post, path = "/v2/api-keys", tag = "api-keys", request_body = CreateKeyIn,
    responses((status = 201, description = "Created; results.key is the secret"),
              (status = 400, description = "Invalid")),
    security(("bearer" = [])))]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateKeyIn>,
) -> ApiResult {
    let admin = caller.require(Scope::Admin)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 255 printable characters.",
        ));
    }
    let scopes = match &body.scopes {
        ScopesIn::Text(s) => Scopes::parse_list(s),
        ScopesIn::List(l) => Scopes::parse_list(&l.join(",")),
    }
    .map_err(|e| ApiError::bad_request(format!("scopes: {e}.")))?;
    if scopes.is_empty() {
        return Err(ApiError::bad_request("scopes must not be empty."));
    }
    let now = app.clock.now();
    if body.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::bad_request("expires_at must be in the future."));
    }
    let tier = match body.tier.as_deref() {
        None => None,
        Some(t) => Some(
            TIERS
                .iter()
                .find(|(n, _)| *n == t)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    ApiError::bad_request("tier must be one of basic, standard, premium.")
                })?,
        ),
    };
    if body.rate_limit_per_minute == Some(0) {
        return Err(ApiError::bad_request(
            "rate_limit_per_minute must be positive.",
        ));
    }
    let generated = apikey::generate();
    let record = app
        .store
        .create_api_key(&NewApiKey {
            audit: Some(entry(
                "api_key_created",
                &admin.actor(),
                None,
                json!({ "key_id": generated.id, "name": name, "scopes": scopes.list() }),
            )),
            id: generated.id.clone(),
            name: name.to_owned(),
            digest: generated.digest,
            scopes,
            expires_at: body.expires_at,
            rate_limit_per_minute: body.rate_limit_per_minute.or(tier),
            created_by: Some(admin.actor()),
            created_at: now,
        })
        .await?;
    let mut results = key_json(&record, now);
    results["key"] = json!(generated.plaintext);
    Ok(ok(
        StatusCode::CREATED,
        "API key created. Store it now: it is not shown again.",
        results,
    ))
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/v2/api-keys", tag = "api-keys",
    responses((status = 200, description = "All keys")),
    security(("bearer" = [])))]
async fn list(State(app): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Scope::Admin)?;
    let now = app.clock.now();
    let keys: Vec<Value> = app
        .store
        .list_api_keys()
        .await?
        .iter()
        .map(|k| key_json(k, now))
        .collect();
    Ok(ok(StatusCode::OK, "", keys))
}

/// Revoke an API key (effective at once here, within the key cache time on other replicas).
#[utoipa::path(delete, path = "/v2/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 200, description = "Revoked"), (status = 404, description = "No such active key")),
    security(("bearer" = [])))]
async fn revoke(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult {
    let admin = caller.require(Scope::Admin)?;
    let id = ApiKeyId(id.trim().to_ascii_lowercase());
    let now = app.clock.now();
    let audit = entry(
        "api_key_revoked",
        &admin.actor(),
        None,
        json!({ "key_id": id }),
    );
    if !app.store.revoke_api_key(&id, now, Some(&audit)).await? {
        return Err(ApiError::not_found(format!(
            "No active API key with id {id}."
        )));
    }
    app.auth.forget(&id);
    Ok(ok(StatusCode::OK, "API key revoked.", json!({ "id": id })))
}
