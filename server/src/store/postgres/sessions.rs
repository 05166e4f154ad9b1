//! Web page sessions: the statements are shared (`shared/sessions.rs`).

use super::*;

#[async_trait::async_trait]
impl SessionStore for PgStore {
    async fn create_ui_session(&self, s: &UiSession) -> StoreResult<()> {
        Sql::create_ui_session(&self.pool, s).await
    }

    async fn get_ui_session(&self, id_hash: &str) -> StoreResult<Option<UiSession>> {
        Sql::get_ui_session(&self.pool, id_hash).await
    }

    async fn touch_ui_session(&self, id_hash: &str, now: Timestamp) -> StoreResult<()> {
        Sql::touch_ui_session(&self.pool, id_hash, now).await
    }

    async fn delete_ui_session(&self, id_hash: &str) -> StoreResult<bool> {
        Sql::delete_ui_session(&self.pool, id_hash).await
    }
}
