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
