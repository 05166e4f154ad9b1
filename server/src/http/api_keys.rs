//! API keys: create (the plaintext is shown once), list, revoke. Admin scope.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::extract::{Caller, JsonBody};
use super::schema::{KeyScope, Time, time};
use crate::domain::apikey::{self, ApiKeyId};
use crate::domain::{Scope, Scopes, Timestamp};
use crate::store::{Actor, ApiKeyRecord, NewApiKey};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
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
    /// Printable characters.
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    /// Any of read, write, admin, run, ingest, agent (a list, or one comma-separated string);
    /// not empty. The key belongs to its creator's owner, always.
    scopes: ScopesIn,
    /// In the future; absent: never expires.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    expires_at: Option<Timestamp>,
    /// basic (100/min), standard (1000/min) or premium (5000/min).
    #[serde(default)]
    #[schema(value_type = Option<Tier>)]
    tier: Option<String>,
    /// Explicit requests per minute (overrides tier).
    #[serde(default)]
    #[schema(minimum = 1)]
    rate_limit_per_minute: Option<u32>,
    /// Agent keys only: the labels an agent connecting with this key may carry (it carries
    /// those of its configured labels that are granted here, with the same value). Label
    /// names and values as the agent protocol allows them.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A named rate-limit tier.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Tier {
    Basic,
    Standard,
    Premium,
}

/// Whether a key is usable.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

/// An API key as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyOut {
    /// The key's public id (the part after `mdk_`).
    pub id: String,
    pub name: String,
    pub scopes: Vec<KeyScope>,
    pub status: KeyStatus,
    pub created_at: Time,
    pub created_by: Option<String>,
    /// The person or service account the key belongs to: its creator's, for keys made
    /// through the API (`bootstrap` for the bootstrap admin key's).
    pub owner_id: String,
    pub expires_at: Option<Time>,
    pub revoked_at: Option<Time>,
    /// Absent: the server's per-route-class limits.
    pub rate_limit_per_minute: Option<u32>,
    /// The labels an agent connecting with this key may carry.
    pub labels: BTreeMap<String, String>,
}

impl KeyOut {
    fn new(k: &ApiKeyRecord, now: Timestamp) -> Self {
        let status = if k.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if k.expires_at.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        };
        Self {
            id: k.id.0.clone(),
            name: k.name.clone(),
            scopes: k.scopes.list().into_iter().map(KeyScope::from).collect(),
            status,
            created_at: k.created_at.into(),
            created_by: k.created_by.clone(),
            owner_id: k.owner_id.0.clone(),
            expires_at: time(k.expires_at),
            revoked_at: time(k.revoked_at),
            rate_limit_per_minute: k.rate_limit_per_minute,
            labels: k.labels.clone(),
        }
    }
}

/// A new API key, with its secret: shown once, never again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedKeyOut {
    #[serde(flatten)]
    pub record: KeyOut,
    /// The whole key to send as `Authorization: Bearer <key>`.
    pub key: String,
}

/// A revoked key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokedKeyOut {
    pub id: String,
}

/// Create an API key. The key itself is in the response and never shown again.
#[utoipa::path(post, path = "/v2/api-keys", tag = "api-keys", request_body = CreateKeyIn,
    responses((status = 201, description = "Created; results.key is the secret", body = Envelope<CreatedKeyOut>),
              (status = 400, description = "Invalid")),
    security(("bearer" = [])))]
async fn create_api_key(
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
    if !body.labels.is_empty() {
        if !scopes.allows(Scope::Agent) {
            return Err(ApiError::bad_request(
                "labels are granted only to keys with the agent scope.",
            ));
        }
        medic_protocol::validate::validate_labels(&body.labels)
            .map_err(|e| ApiError::bad_request(format!("labels: {e}.")))?;
    }
    let generated = apikey::generate();
    let record = app
        .store
        .create_api_key(&NewApiKey {
            audit: Some(entry(
                "api_key_created",
                &Actor::new(admin.actor()),
                None,
                json!({
                    "key_id": generated.id.0,
                    "name": name,
                    "scopes": scopes.list().into_iter().map(KeyScope::from).collect::<Vec<_>>(),
                    "labels": body.labels,
                }),
            )),
            id: generated.id.clone(),
            name: name.to_owned(),
            digest: generated.digest,
            scopes,
            expires_at: body.expires_at,
            rate_limit_per_minute: body.rate_limit_per_minute.or(tier),
            created_by: Some(admin.actor()),
            created_at: now,
            // A key made through the API is its creator's: four-eyes sees one person.
            owner_id: admin.owner_id.clone(),
            new_owner: None,
            labels: body.labels.clone(),
        })
        .await?;
    Ok(ok(
        StatusCode::CREATED,
        "API key created. Store it now: it is not shown again.",
        CreatedKeyOut {
            record: KeyOut::new(&record, now),
            key: generated.plaintext,
        },
    ))
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/v2/api-keys", tag = "api-keys",
    responses((status = 200, description = "All keys", body = Envelope<Vec<KeyOut>>)),
    security(("bearer" = [])))]
async fn list_api_keys(State(app): State<AppState>, caller: Caller) -> ApiResult {
    caller.require(Scope::Admin)?;
    let now = app.clock.now();
    let keys: Vec<KeyOut> = app
        .store
        .list_api_keys()
        .await?
        .iter()
        .map(|k| KeyOut::new(k, now))
        .collect();
    Ok(ok(StatusCode::OK, "", keys))
}

/// Revoke an API key (effective at once here, within the key cache time on other replicas).
#[utoipa::path(delete, path = "/v2/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 200, description = "Revoked", body = Envelope<RevokedKeyOut>),
              (status = 404, description = "No such active key")),
    security(("bearer" = [])))]
async fn revoke_api_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let admin = caller.require(Scope::Admin)?;
    let id = ApiKeyId(id.trim().to_ascii_lowercase());
    let now = app.clock.now();
    let audit = entry(
        "api_key_revoked",
        &Actor::new(admin.actor()),
        None,
        json!({ "key_id": id.0 }),
    );
    if !app.store.revoke_api_key(&id, now, Some(&audit)).await? {
        return Err(ApiError::not_found(format!(
            "No active API key with id {id}."
        )));
    }
    app.auth.forget(&id);
    Ok(ok(
        StatusCode::OK,
        "API key revoked.",
        RevokedKeyOut { id: id.0 },
    ))
}

/// The key owner behind a requester or an approver as executions record them: `key:<key id>`
/// (that key's owner; `key:bootstrap-admin` is the bootstrap owner) or `slack:<Slack user id>`
/// (the owner linked to that Slack user, if any). `None`: no owner is known, so only the
/// recorded identities themselves can be compared.
pub(crate) async fn owner_behind(
    store: &dyn crate::store::Store,
    who: &str,
) -> Result<Option<apikey::OwnerId>, crate::store::StoreError> {
    if who == "key:bootstrap-admin" {
        return Ok(Some(apikey::OwnerId::bootstrap()));
    }
    if let Some(id) = who.strip_prefix("owner:") {
        return Ok(Some(apikey::OwnerId(id.to_owned())));
    }
    if let Some(id) = who.strip_prefix("key:") {
        return Ok(store
            .get_api_key(&ApiKeyId(id.to_owned()))
            .await?
            .map(|k| k.owner_id));
    }
    if let Some(user) = who.strip_prefix("slack:") {
        return Ok(store
            .find_key_owner_by_slack_user(user)
            .await?
            .map(|o| o.id));
    }
    Ok(None)
}

/// Four-eyes between a requester and an approver as executions record them: not the same
/// identity, and not the same owner once keys and linked Slack users are resolved to owners.
pub(crate) async fn second_pair_of_eyes(
    store: &dyn crate::store::Store,
    requester: &str,
    approver: &str,
) -> Result<bool, crate::store::StoreError> {
    if requester == approver {
        return Ok(false);
    }
    let (Some(r), Some(a)) = (
        owner_behind(store, requester).await?,
        owner_behind(store, approver).await?,
    ) else {
        return Ok(true);
    };
    Ok(apikey::second_pair_of_eyes(&r, &a))
}
