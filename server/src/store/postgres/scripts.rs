//! Registered scripts and their versions on PostgreSQL. A registration locks the script's row
//! and a decision the version's (`FOR UPDATE`), so concurrent replicas neither number two
//! versions alike nor decide one version twice.

use super::*;
use crate::domain::service::name_key;

#[async_trait::async_trait]
impl ScriptStore for PgStore {
    async fn register_script_version(
        &self,
        new: &NewScriptVersion,
    ) -> StoreResult<RegisterOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO scripts (name, name_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name_key) DO NOTHING",
        )
        .bind(&new.name)
        .bind(name_key(&new.name))
        .bind(new.at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (script_id, name): (i64, String) =
            sqlx::query_as("SELECT id, name FROM scripts WHERE name_key = $1 FOR UPDATE")
                .bind(name_key(&new.name))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        Sql::add_script_version(tx, script_id, name, new).await
    }

    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>> {
        Sql::get_script(&self.pool, id).await
    }

    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>> {
        Sql::script_id_by_name(&self.pool, name).await
    }

    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>> {
        Sql::list_scripts(&self.pool, filter, page).await
    }

    async fn get_script_version(
        &self,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>> {
        Sql::get_script_version(&self.pool, id, version).await
    }

    async fn decide_script_version(
        &self,
        version_id: i64,
        d: &ScriptDecision,
    ) -> StoreResult<DecideOutcome> {
        Sql::decide_script_version(&self.pool, version_id, d).await
    }
}
