//! API keys and key owners on SQLite: the statements are shared (`shared/keys.rs`).

use super::*;
use crate::domain::OwnerId;

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
        Sql::create_api_key(&self.write, key).await
    }

    async fn get_api_key(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKeyRecord>> {
        Sql::get_api_key(&self.read, id).await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        Sql::list_api_keys(&self.read).await
    }

    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Sql::revoke_api_key(&self.write, id, at, audit).await
    }

    async fn get_key_owner(&self, id: &OwnerId) -> StoreResult<Option<KeyOwner>> {
        Sql::get_key_owner(&self.read, id).await
    }

    async fn find_key_owner(&self, name: &str) -> StoreResult<Option<KeyOwner>> {
        Sql::find_key_owner(&self.read, name).await
    }

    async fn list_key_owners(&self) -> StoreResult<Vec<KeyOwner>> {
        Sql::list_key_owners(&self.read).await
    }

    async fn find_key_owner_by_slack_user(
        &self,
        slack_user_id: &str,
    ) -> StoreResult<Option<KeyOwner>> {
        Sql::find_key_owner_by_slack_user(&self.read, slack_user_id).await
    }

    async fn set_key_owner_slack_user(
        &self,
        id: &OwnerId,
        slack_user_id: Option<&str>,
        audit: &NewAuditEntry,
    ) -> StoreResult<bool> {
        Sql::set_key_owner_slack_user(&self.write, id, slack_user_id, audit).await
    }
}
