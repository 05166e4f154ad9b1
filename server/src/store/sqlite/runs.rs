//! Script runs dispatched to agents on SQLite: claiming (the script version read through
//! subqueries, as SQLite's `RETURNING` cannot name another table) and orphan marking
//! (`json_each`) are SQLite's; the rest is `shared/runs.rs`.

use sqlx::{AssertSqlSafe, Row};

use super::*;
use crate::domain::Timestamp;
use crate::store::shared::runs::run_columns;
use crate::store::*;

#[async_trait::async_trait]
impl RunStore for SqliteStore {
    async fn create_agent_runs(&self, new: &[NewAgentRun]) -> StoreResult<Vec<AgentRun>> {
        Sql::create_agent_runs(&self.write, new).await
    }

    async fn get_agent_run(&self, run_id: &str) -> StoreResult<Option<AgentRun>> {
        Sql::get_agent_run(&self.read, run_id).await
    }

    async fn list_agent_runs(
        &self,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>> {
        Sql::list_agent_runs(&self.read, filter, page).await
    }

    async fn unaccepted_agent_runs(&self, agent_id: &str) -> StoreResult<Vec<AgentRun>> {
        Sql::unaccepted_agent_runs(&self.read, agent_id).await
    }

    async fn claim_agent_runs(
        &self,
        agent_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>> {
        // One autocommit statement reads and claims; the script version comes along in
        // subqueries (SQLite's RETURNING cannot name another table directly).
        let version = |col: &str| {
            format!(
                "(SELECT v.{col} FROM script_versions v WHERE v.script_id = agent_runs.script_id \
                 AND v.version = agent_runs.script_version) AS version_{col}"
            )
        };
        let columns = run_columns::<Sqlite>();
        let sql = format!(
            "UPDATE agent_runs SET status = 'dispatched', dispatched_at = $1, \
             lost_after = $2 + timeout_seconds * 1000 \
             WHERE agent_id = $3 AND status = 'queued' AND (expires_at IS NULL OR expires_at > $1) \
             RETURNING {columns}, \
             (SELECT s.name FROM scripts s WHERE s.id = agent_runs.script_id) AS script_name, \
             {}, {}, {}, {}",
            version("interpreter"),
            version("content"),
            version("sha256"),
            version("status"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(at)
            .bind(lost_base)
            .bind(agent_id)
            .fetch_all(&self.write)
            .await
            .map_err(unavailable)?;
        let claimed = rows
            .iter()
            .map(|r| {
                Ok(ClaimedRun {
                    run: AgentRun::from_row(r)?,
                    script_name: r.try_get("script_name")?,
                    interpreter: decode(
                        "interpreter",
                        parse_interpreter(r.try_get("version_interpreter")?),
                    )?,
                    content: r.try_get("version_content")?,
                    sha256: r.try_get("version_sha256")?,
                    approved: ScriptStatus::parse(r.try_get("version_status")?)
                        == Some(ScriptStatus::Approved),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(unavailable)?;
        Ok(ClaimedRun::oldest_first(claimed))
    }

    async fn expire_queued_agent_runs(
        &self,
        run_ids: &[String],
        at: Timestamp,
    ) -> StoreResult<u64> {
        Sql::expire_queued_agent_runs(&self.write, run_ids, at).await
    }

    async fn requeue_agent_run(&self, agent_id: &str, run_id: &str) -> StoreResult<bool> {
        Sql::requeue_agent_run(&self.write, agent_id, run_id).await
    }

    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        Sql::agent_run_sent(&self.write, run_id, at, lost_base).await
    }

    async fn agent_run_started(
        &self,
        agent_id: &str,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        Sql::agent_run_started(&self.write, agent_id, run_id, at, lost_base).await
    }

    async fn orphan_agent_runs(
        &self,
        agent_id: &str,
        still_running: &[String],
        lost_after: Timestamp,
    ) -> StoreResult<u64> {
        let ids = serde_json::to_string(still_running)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let updated = sqlx::query(
            "UPDATE agent_runs SET lost_after = min(coalesce(lost_after, $1), $1) \
             WHERE agent_id = $2 AND status = 'running' \
             AND id NOT IN (SELECT value FROM json_each($3))",
        )
        .bind(lost_after)
        .bind(agent_id)
        .bind(ids)
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        Ok(updated.rows_affected())
    }

    async fn sweep_agent_runs(&self, now: Timestamp) -> StoreResult<RunSweep> {
        Sql::sweep_agent_runs(&self.write, now).await
    }

    async fn agents_with_queued_runs(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        Sql::agents_with_queued_runs(&self.read, now).await
    }

    async fn finish_agent_run(
        &self,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>> {
        Sql::finish_agent_run(&self.write, agent_id, run_id, end).await
    }
}
