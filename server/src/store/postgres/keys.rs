//! API keys and key owners on PostgreSQL: the statements are shared (`shared/keys.rs`).

use super::*;
use crate::domain::OwnerId;

#[async_trait::async_trait]
impl KeyStore for PgStore {
    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
        Sql::create_api_key(&self.pool, key).await
    }

    async fn get_api_key(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKeyRecord>> {
        Sql::get_api_key(&self.pool, id).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Sql::list_api_keys(&self.pool).await
    }

    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Sql::revoke_api_key(&self.pool, id, at, audit).await
    }

    async fn get_key_owner(&self, id: &OwnerId) -> StoreResult<Option<KeyOwner>> {
        Sql::get_key_owner(&self.pool, id).await
    }

    async fn find_key_owner(&self, name: &str) -> StoreResult<Option<KeyOwner>> {
        Sql::find_key_owner(&self.pool, name).await
    }

    async fn list_key_owners(&self) -> StoreResult<Vec<KeyOwner>> {
        Sql::list_key_owners(&self.pool).await
    }

    async fn find_key_owner_by_slack_user(
        &self,
        slack_user_id: &str,
    ) -> StoreResult<Option<KeyOwner>> {
        Sql::find_key_owner_by_slack_user(&self.pool, slack_user_id).await
    }

    async fn set_key_owner_slack_user(
        &self,
        id: &OwnerId,
        slack_user_id: Option<&str>,
        audit: &NewAuditEntry,
    ) -> StoreResult<bool> {
        Sql::set_key_owner_slack_user(&self.pool, id, slack_user_id, audit).await
    }
}
