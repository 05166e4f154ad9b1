//! API keys as stored (digests, never secrets) and [`KeyStore`]. SQL in `shared/keys.rs`.

use super::*;
use std::collections::BTreeMap;

use crate::domain::{ApiKeyId, OwnerId, OwnerKind, Scopes, Timestamp};

/// How a key's granted labels are stored: a JSON object, or NULL for none.
pub(super) fn labels_text(labels: &BTreeMap<String, String>) -> Option<String> {
    (!labels.is_empty()).then(|| serde_json::to_string(labels).unwrap_or_default())
}

/// A new key owner (a person or a service account). Made only by `medic-server api-key create
/// --owner <name>`, never through the API.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKeyOwner {
    pub id: OwnerId,
    pub name: String,
    pub kind: OwnerKind,
    pub created_by: String,
    pub created_at: Timestamp,
    /// Written in the same transaction as the owner.
    pub audit: Option<NewAuditEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyOwner {
    pub id: OwnerId,
    pub name: String,
    pub kind: OwnerKind,
    pub created_by: String,
    pub created_at: Timestamp,
    /// The owner's Slack user id (`U024BE7LH`), when linked: their button presses in Slack are
    /// theirs for four-eyes.
    pub slack_user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub name: String,
    pub digest: [u8; 32],
    pub scopes: Scopes,
    pub expires_at: Option<Timestamp>,
    pub rate_limit_per_minute: Option<u32>,
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    /// The key's owner: an existing one, or `new_owner`'s id.
    pub owner_id: OwnerId,
    /// An owner to create first, in the same transaction (the command line only).
    pub new_owner: Option<NewKeyOwner>,
    /// For agent keys: the labels an agent connecting with this key may carry.
    pub labels: BTreeMap<String, String>,
    /// Written in the same transaction as the key.
    pub audit: Option<NewAuditEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    pub digest: Vec<u8>,
    pub scopes: Scopes,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub rate_limit_per_minute: Option<u32>,
    pub created_by: Option<String>,
    pub owner_id: OwnerId,
    /// The labels an agent connecting with this key may carry (empty: none).
    pub labels: BTreeMap<String, String>,
}

/// API keys (their digests; never the secrets).
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    // ---- API keys ---------------------------------------------------------------------------

    /// Creates the key (and `key.new_owner` first, when given). A `new_owner` whose name is
    /// taken (case-insensitively) is a `Conflict`, and nothing is written.
    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord>;
    async fn get_api_key(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Marks a key revoked, with `audit` in the same transaction. `false` (and nothing
    /// written) when no such unrevoked key exists.
    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;

    // ---- key owners -------------------------------------------------------------------------

    async fn get_key_owner(&self, id: &OwnerId) -> StoreResult<Option<KeyOwner>>;
    /// The owner with this name, compared case-insensitively.
    async fn find_key_owner(&self, name: &str) -> StoreResult<Option<KeyOwner>>;
    async fn list_key_owners(&self) -> StoreResult<Vec<KeyOwner>>;
    /// The owner linked to this Slack user id.
    async fn find_key_owner_by_slack_user(
        &self,
        slack_user_id: &str,
    ) -> StoreResult<Option<KeyOwner>>;
    /// Links the owner to a Slack user id (`None`: unlinks), with `audit` in the same
    /// transaction. `false` (and nothing written) when there is no such owner; a Slack user
    /// linked to another owner is a `Conflict`.
    async fn set_key_owner_slack_user(
        &self,
        id: &OwnerId,
        slack_user_id: Option<&str>,
        audit: &NewAuditEntry,
    ) -> StoreResult<bool>;
}

/// The columns of a `key_owners` row, in [`KeyOwnerRow`]'s order.
pub(super) const KEY_OWNER_COLUMNS: &str = "id, name, kind, created_at, created_by, slack_user_id";

/// A `key_owners` row.
#[derive(sqlx::FromRow)]
pub(super) struct KeyOwnerRow {
    id: String,
    name: String,
    kind: String,
    created_by: String,
    created_at: Timestamp,
    slack_user_id: Option<String>,
}

impl From<KeyOwnerRow> for KeyOwner {
    fn from(r: KeyOwnerRow) -> Self {
        Self {
            id: OwnerId(r.id),
            name: r.name,
            // The table's CHECK allows only the two kinds.
            kind: OwnerKind::parse(&r.kind).unwrap_or(OwnerKind::Person),
            created_by: r.created_by,
            created_at: r.created_at,
            slack_user_id: r.slack_user_id,
        }
    }
}
sql::from_row_via!(KeyOwner, KeyOwnerRow);

/// An `api_keys` row.
#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyRow {
    id: ApiKeyId,
    name: String,
    digest: Vec<u8>,
    scopes: Scopes,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    revoked_at: Option<Timestamp>,
    rate_limit_per_minute: Option<i64>,
    created_by: Option<String>,
    owner_id: Option<String>,
    labels: Option<String>,
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
        // Every key has one since the owners migration, which gave older keys their own.
        let owner_id = OwnerId(r.owner_id.unwrap_or_else(|| r.id.0.clone()));
        Self {
            id: r.id,
            name: r.name,
            digest: r.digest,
            scopes: r.scopes,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            rate_limit_per_minute: r
                .rate_limit_per_minute
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
            created_by: r.created_by,
            owner_id,
            // Written only by `labels_text`; anything unreadable grants nothing.
            labels: r
                .labels
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
        }
    }
}
sql::from_row_via!(ApiKeyRecord, ApiKeyRow);
