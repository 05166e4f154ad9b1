//! Registered scripts and their versions on SQLite. Writes go through the single writer
//! connection, so a transaction's read-then-write cannot interleave with another writer.

use super::*;
use crate::domain::service::name_key;

#[async_trait::async_trait]
impl ScriptStore for SqliteStore {
    async fn register_script_version(
        &self,
        new: &NewScriptVersion,
    ) -> StoreResult<RegisterOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let existing: Option<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM scripts WHERE name_key = $1")
                .bind(name_key(&new.name))
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let (script_id, name) = match existing {
            Some(found) => found,
            None => sqlx::query_as(
                "INSERT INTO scripts (name, name_key, created_at) VALUES ($1, $2, $3) \
                 RETURNING id, name",
            )
            .bind(&new.name)
            .bind(name_key(&new.name))
            .bind(new.at)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?,
        };
        Sql::add_script_version(tx, script_id, name, new).await
    }

    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>> {
        Sql::get_script(&self.read, id).await
    }

    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>> {
        Sql::script_id_by_name(&self.read, name).await
    }

    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>> {
        Sql::list_scripts(&self.read, filter, page).await
    }

    async fn get_script_version(
        &self,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>> {
        Sql::get_script_version(&self.read, id, version).await
    }

    async fn decide_script_version(
        &self,
        version_id: i64,
        d: &ScriptDecision,
    ) -> StoreResult<DecideOutcome> {
        Sql::decide_script_version(&self.write, version_id, d).await
    }
}
