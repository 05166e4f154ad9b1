//! v2 secrets: named values that playbooks use as `${secrets.NAME}`. Admin only.
//!
//! A value is write-only: `PUT` seals it (AES-256-GCM under `MEDIC_SECRETS_KEY`, the name as
//! associated data) and stores only the sealed text; no route, log line or audit entry ever
//! carries it. The list shows names, key ids and times. Without `MEDIC_SECRETS_KEY` every route
//! here answers 503 naming the setting.

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
use super::extract::{Caller, JsonBody, actor};
use super::schema::Time;
use crate::domain::Scope;
use crate::playbook::secrets::{Keyring, SecretValue};
use crate::playbook::vars::is_variable_name;
use crate::store::{NewSecret, PutSecretOutcome, SecretInfo};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
}

/// Longest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// A secret as the API shows it: never its value.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretOut {
    pub name: String,
    /// The id of the key the value is sealed under (derived from the key; not the key).
    pub key_id: String,
    pub created_at: Time,
    pub created_by: String,
    pub updated_at: Time,
    pub updated_by: String,
}

impl From<&SecretInfo> for SecretOut {
    fn from(s: &SecretInfo) -> Self {
        Self {
            name: s.name.clone(),
            key_id: s.key_id.clone(),
            created_at: s.created_at.into(),
            created_by: s.created_by.clone(),
            updated_at: s.updated_at.into(),
            updated_by: s.updated_by.clone(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretIn {
    /// The value (UTF-8, 1 byte to 16 KiB, no NUL). Stored encrypted; never returned.
    #[schema(min_length = 1, max_length = 16384)]
    value: String,
}

/// The keyring, or the 503 that names the missing setting.
fn keyring(app: &AppState) -> Result<&Keyring, ApiError> {
    app.config.secrets.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Secrets are not configured: set MEDIC_SECRETS_KEY (base64 of 32 bytes, e.g. \
             `openssl rand -base64 32`) and restart the server.",
        )
    })
}

fn checked_name(raw: &str) -> Result<&str, ApiError> {
    if is_variable_name(raw) {
        Ok(raw)
    } else {
        Err(ApiError::bad_request(
            "name must be 1 to 64 characters: a letter or _, then letters, digits or _.",
        ))
    }
}

fn details(s: &SecretInfo) -> serde_json::Value {
    json!({ "name": s.name, "key_id": s.key_id })
}

/// List secrets: names, key ids and times (never values).
#[utoipa::path(get, path = "/v2/secrets", tag = "secrets",
    responses((status = 200, description = "Every secret, by name", body = Envelope<Vec<SecretOut>>),
              (status = 503, description = "MEDIC_SECRETS_KEY is not set")),
    security(("bearer" = [])))]
async fn list_secrets(State(app): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Scope::Admin)?;
    keyring(&app)?;
    let all = app.store.list_secrets().await?;
    let out: Vec<SecretOut> = all.iter().map(SecretOut::from).collect();
    Ok(ok(StatusCode::OK, "", out))
}

/// Create or replace a secret. The value is write-only.
#[utoipa::path(put, path = "/v2/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
    request_body = SecretIn,
    responses((status = 201, description = "Created", body = Envelope<SecretOut>),
              (status = 200, description = "Replaced", body = Envelope<SecretOut>),
              (status = 400, description = "Bad name or value"),
              (status = 503, description = "MEDIC_SECRETS_KEY is not set")),
    security(("bearer" = [])))]
async fn put_secret(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<SecretIn>,
) -> ApiResult {
    caller.require(Scope::Admin)?;
    let ring = keyring(&app)?;
    let who = actor(&headers, &caller)?;
    let name = checked_name(&name)?;
    if body.value.is_empty() {
        return Err(ApiError::bad_request("value must not be empty."));
    }
    if body.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::bad_request(format!(
            "value is longer than {MAX_SECRET_BYTES} bytes."
        )));
    }
    if body.value.contains('\0') {
        return Err(ApiError::bad_request("value must not contain NUL."));
    }
    let sealed = ring.seal(name, &SecretValue::new(body.value));
    let new = NewSecret {
        name: name.to_owned(),
        sealed: sealed.to_text(),
        key_id: sealed.key_id,
        actor: who.name.clone(),
        at: app.clock.now(),
    };
    let audit = |s: &SecretInfo| entry("secret_set", &who, None, details(s));
    match app.store.put_secret(&new, &audit).await? {
        PutSecretOutcome::Created(s) => Ok(ok(
            StatusCode::CREATED,
            "Secret stored.",
            SecretOut::from(&s),
        )),
        PutSecretOutcome::Updated(s) => {
            Ok(ok(StatusCode::OK, "Secret replaced.", SecretOut::from(&s)))
        }
    }
}

/// Delete a secret. Playbooks that use it fail validation from now on.
#[utoipa::path(delete, path = "/v2/secrets/{name}", tag = "secrets",
    params(("name" = String, Path)),
    responses((status = 200, description = "Deleted", body = Envelope<SecretOut>),
              (status = 400, description = "Bad name"),
              (status = 404, description = "Not found"),
              (status = 503, description = "MEDIC_SECRETS_KEY is not set")),
    security(("bearer" = [])))]
async fn delete_secret(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    caller.require(Scope::Admin)?;
    keyring(&app)?;
    let who = actor(&headers, &caller)?;
    let name = checked_name(&name)?;
    let audit = |s: &SecretInfo| entry("secret_deleted", &who, None, details(s));
    match app.store.delete_secret(name, &audit).await? {
        Some(s) => Ok(ok(StatusCode::OK, "Secret deleted.", SecretOut::from(&s))),
        None => Err(ApiError::not_found(format!(
            "No secret is called {name:?}."
        ))),
    }
}
