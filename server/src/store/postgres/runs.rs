//! Script runs dispatched to agents on PostgreSQL: claiming (an `UPDATE … FROM` join) and
//! orphan marking (`<> ALL(array)`) are PostgreSQL's; the rest is `shared/runs.rs`.

use sqlx::{AssertSqlSafe, Row};

use super::*;
use crate::domain::Timestamp;
use crate::store::shared::runs::run_columns;
use crate::store::*;

#[async_trait::async_trait]
impl RunStore for PgStore {
    async fn create_agent_runs(&self, new: &[NewAgentRun]) -> StoreResult<Vec<AgentRun>> {
        Sql::create_agent_runs(&self.pool, new).await
    }

    async fn get_agent_run(&self, run_id: &str) -> StoreResult<Option<AgentRun>> {
        Sql::get_agent_run(&self.pool, run_id).await
    }

    async fn list_agent_runs(
        &self,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>> {
        Sql::list_agent_runs(&self.pool, filter, page).await
    }

    async fn unaccepted_agent_runs(&self, agent_id: &str) -> StoreResult<Vec<AgentRun>> {
        Sql::unaccepted_agent_runs(&self.pool, agent_id).await
    }

    async fn claim_agent_runs(
        &self,
        agent_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>> {
        // One statement reads and claims (a racing session waits on the row locks, then finds
        // the runs no longer queued); the script version comes along from the join.
        let columns = run_columns::<Postgres>()
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE agent_runs r SET status = 'dispatched', dispatched_at = $1, \
             lost_after = $2 + make_interval(secs => r.timeout_seconds) \
             FROM script_versions v JOIN scripts s ON s.id = v.script_id \
             WHERE r.agent_id = $3 AND r.status = 'queued' \
             AND (r.expires_at IS NULL OR r.expires_at > $1) \
             AND v.script_id = r.script_id AND v.version = r.script_version \
             RETURNING {columns}, s.name AS script_name, v.interpreter AS version_interpreter, \
             v.content AS version_content, v.sha256 AS version_sha256, \
             v.status AS version_status"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(at)
            .bind(lost_base)
            .bind(agent_id)
            .fetch_all(&self.pool)
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
        Sql::expire_queued_agent_runs(&self.pool, run_ids, at).await
    }

    async fn requeue_agent_run(&self, agent_id: &str, run_id: &str) -> StoreResult<bool> {
        Sql::requeue_agent_run(&self.pool, agent_id, run_id).await
    }

    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        Sql::agent_run_sent(&self.pool, run_id, at, lost_base).await
    }

    async fn agent_run_started(
        &self,
        agent_id: &str,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        Sql::agent_run_started(&self.pool, agent_id, run_id, at, lost_base).await
    }

    async fn orphan_agent_runs(
        &self,
        agent_id: &str,
        still_running: &[String],
        lost_after: Timestamp,
    ) -> StoreResult<u64> {
        let updated = sqlx::query(
            "UPDATE agent_runs SET lost_after = least(coalesce(lost_after, $3), $3) \
             WHERE agent_id = $1 AND status = 'running' AND id <> ALL($2::text[])",
        )
        .bind(agent_id)
        .bind(still_running)
        .bind(lost_after)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(updated.rows_affected())
    }

    async fn sweep_agent_runs(&self, now: Timestamp) -> StoreResult<RunSweep> {
        Sql::sweep_agent_runs(&self.pool, now).await
    }

    async fn agents_with_queued_runs(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        Sql::agents_with_queued_runs(&self.pool, now).await
    }

    async fn finish_agent_run(
        &self,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>> {
        Sql::finish_agent_run(&self.pool, agent_id, run_id, end).await
    }
}
