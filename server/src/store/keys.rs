//! API keys as stored (digests, never secrets) and [`KeyStore`]. SQL in `sqlite/keys.rs` and
//! `postgres/keys.rs`.

use super::*;
use crate::domain::{ApiKeyId, Scopes, Timestamp};

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
}

/// API keys (their digests; never the secrets).
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    // ---- API keys ---------------------------------------------------------------------------

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
}

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
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(r: ApiKeyRow) -> Self {
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
        }
    }
}
sql::from_row_via!(ApiKeyRecord, ApiKeyRow);
