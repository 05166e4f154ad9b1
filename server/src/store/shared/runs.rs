//! Script runs dispatched to agents, on both backends. State changes are guarded `UPDATE`s
//! (`WHERE status IN (…)`), so a resent report or a racing session cannot move a run
//! backwards; finishing locks the run's row on PostgreSQL (`FOR UPDATE`), so two replicas
//! storing the same resent report keep only the first. Claiming runs (one statement that reads
//! the script version too) and marking orphans (a list of run ids) stay in the backends.

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Type,
};

use super::{Db, Sql, unavailable};
use crate::domain::Timestamp;
use crate::domain::run::report_ends_run;
use crate::store::*;

/// The columns an [`AgentRun`] is read from.
pub(crate) fn run_columns<DB: Db>() -> String {
    format!(
        "id, agent_id, script_id, script_version, parameters{} AS parameters, \
         secret_parameters{} AS secret_parameters, timeout_seconds, status, requested_by, created_at, dispatched_at, started_at, \
         finished_at, exit_code, signal, stdout, stderr, stdout_truncated, stderr_truncated, \
         duration_ms, refusal_reason, refusal_detail, expires_at, reported_at",
        DB::TEXT,
        DB::TEXT
    )
}

impl<DB: Db> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> i32: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Decode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Timestamp: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i32>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<bool>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<Timestamp>: Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    pub(crate) async fn create_agent_runs(
        pool: &Pool<DB>,
        new: &[NewAgentRun],
    ) -> StoreResult<Vec<AgentRun>> {
        let sql = format!(
            "INSERT INTO agent_runs (id, agent_id, script_id, script_version, parameters, \
             timeout_seconds, requested_by, created_at, expires_at, secret_parameters) \
             VALUES ($1, $2, $3, $4, $5{jsonb}, $6, $7, $8, $9, $10{jsonb}) RETURNING {}",
            run_columns::<DB>(),
            jsonb = DB::JSONB,
        );
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let mut runs = Vec::with_capacity(new.len());
        for new in new {
            let parameters = serde_json::to_string(&new.parameters)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let secret_parameters = serde_json::to_string(&new.secret_parameters)
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let row = sqlx::query(AssertSqlSafe(sql.as_str()))
                .bind(&new.id)
                .bind(&new.agent_id)
                .bind(new.script_id.0)
                .bind(new.script_version)
                .bind(parameters)
                .bind(new.timeout_seconds)
                .bind(&new.requested_by)
                .bind(new.at)
                .bind(new.expires_at)
                .bind(secret_parameters)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            if let Some(e) = &new.audit {
                Self::insert_audit(&mut tx, e).await?;
            }
            runs.push(AgentRun::from_row(&row).map_err(unavailable)?);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(runs)
    }

    pub(crate) async fn get_agent_run(
        pool: &Pool<DB>,
        run_id: &str,
    ) -> StoreResult<Option<AgentRun>> {
        let sql = format!(
            "SELECT {} FROM agent_runs WHERE id = $1",
            run_columns::<DB>()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
        row.as_ref()
            .map(AgentRun::from_row)
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn list_agent_runs(
        pool: &Pool<DB>,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>> {
        let push_filter = |qb: &mut QueryBuilder<DB>| {
            qb.push(" WHERE 1 = 1");
            if let Some(agent_id) = &filter.agent_id {
                qb.push(" AND agent_id = ").push_bind(agent_id.clone());
            }
            if let Some(status) = filter.status {
                qb.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(script_id) = filter.script_id {
                qb.push(" AND script_id = ").push_bind(script_id.0);
            }
        };
        Self::page(
            pool,
            "agent_runs",
            &run_columns::<DB>(),
            push_filter,
            "created_at DESC, id DESC",
            page,
        )
        .await
    }

    pub(crate) async fn unaccepted_agent_runs(
        pool: &Pool<DB>,
        agent_id: &str,
    ) -> StoreResult<Vec<AgentRun>> {
        let sql = format!(
            "SELECT {} FROM agent_runs WHERE agent_id = $1 AND status = 'dispatched' \
             ORDER BY created_at, id",
            run_columns::<DB>()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(agent_id)
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(AgentRun::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)
    }

    pub(crate) async fn expire_queued_agent_runs(
        pool: &Pool<DB>,
        run_ids: &[String],
        at: Timestamp,
    ) -> StoreResult<u64> {
        let mut n = 0;
        for id in run_ids {
            let done = sqlx::query(
                "UPDATE agent_runs SET expires_at = $1 WHERE id = $2 AND status = 'queued'",
            )
            .bind(at)
            .bind(id)
            .execute(pool)
            .await
            .map_err(unavailable)?;
            n += DB::rows_affected(&done);
        }
        Ok(n)
    }

    pub(crate) async fn requeue_agent_run(
        pool: &Pool<DB>,
        agent_id: &str,
        run_id: &str,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE agent_runs SET status = 'queued', dispatched_at = NULL, lost_after = NULL \
             WHERE id = $1 AND agent_id = $2 AND status = 'dispatched'",
        )
        .bind(run_id)
        .bind(agent_id)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        Ok(DB::rows_affected(&updated) == 1)
    }

    pub(crate) async fn agent_run_sent(
        pool: &Pool<DB>,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE agent_runs SET status = 'dispatched', dispatched_at = $1, lost_after = {} \
             WHERE id = $2 AND (status = 'dispatched' \
                 OR (status = 'queued' AND (expires_at IS NULL OR expires_at > $1)))",
            DB::plus_seconds("$3", "timeout_seconds")
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(at)
            .bind(run_id)
            .bind(lost_base)
            .execute(pool)
            .await
            .map_err(unavailable)?;
        Ok(DB::rows_affected(&updated) == 1)
    }

    pub(crate) async fn agent_run_started(
        pool: &Pool<DB>,
        agent_id: &str,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        let sql = format!(
            "UPDATE agent_runs SET status = 'running', started_at = coalesce(started_at, $1), \
             lost_after = {} WHERE id = $2 AND agent_id = $3 \
             AND status IN ('queued', 'dispatched')",
            DB::plus_seconds("$4", "timeout_seconds")
        );
        let updated = sqlx::query(AssertSqlSafe(sql))
            .bind(at)
            .bind(run_id)
            .bind(agent_id)
            .bind(lost_base)
            .execute(pool)
            .await
            .map_err(unavailable)?;
        Ok(DB::rows_affected(&updated) == 1)
    }

    pub(crate) async fn sweep_agent_runs(pool: &Pool<DB>, now: Timestamp) -> StoreResult<RunSweep> {
        // Each statement re-checks its WHERE on rows another replica changed meanwhile, so a
        // run is ended by one sweep only.
        let done = sqlx::query(
            "UPDATE agent_runs SET status = 'expired', finished_at = $1 \
             WHERE status = 'queued' AND expires_at <= $1",
        )
        .bind(now)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        let expired = DB::rows_affected(&done);
        let done = sqlx::query(
            "UPDATE agent_runs SET status = 'lost', finished_at = $1 \
             WHERE status IN ('dispatched', 'running') AND lost_after <= $1",
        )
        .bind(now)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        let lost = DB::rows_affected(&done);
        Ok(RunSweep { expired, lost })
    }

    pub(crate) async fn agents_with_queued_runs(
        pool: &Pool<DB>,
        now: Timestamp,
    ) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT agent_id FROM agent_runs \
             WHERE status = 'queued' AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(now)
        .fetch_all(pool)
        .await
        .map_err(unavailable)
    }

    pub(crate) async fn finish_agent_run(
        pool: &Pool<DB>,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT status, dispatched_at FROM agent_runs WHERE id = $1 AND agent_id = $2{}",
            DB::FOR_UPDATE
        );
        let found: Option<(AgentRunStatus, Option<Timestamp>)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(run_id)
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        let Some((status, dispatched_at)) = found else {
            return Ok(None);
        };
        if !report_ends_run(status, matches!(end, AgentRunEnd::Finished { .. })) {
            return Ok(Some(RunFinish {
                status,
                stored: false,
                dispatched_at,
            }));
        }
        let stored = match end {
            AgentRunEnd::Finished {
                status,
                exit_code,
                signal,
                stdout,
                stderr,
                stdout_truncated,
                stderr_truncated,
                started_at,
                finished_at,
                duration_ms,
            } => {
                sqlx::query(
                    "UPDATE agent_runs SET status = $1, exit_code = $2, signal = $3, \
                     stdout = $4, stderr = $5, stdout_truncated = $6, stderr_truncated = $7, \
                     started_at = coalesce(started_at, $8), finished_at = $9, \
                     duration_ms = $10 WHERE id = $11",
                )
                .bind(status.as_str())
                .bind(exit_code)
                .bind(signal)
                .bind(stdout)
                .bind(stderr)
                .bind(stdout_truncated)
                .bind(stderr_truncated)
                .bind(*started_at)
                .bind(*finished_at)
                .bind(duration_ms)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                *status
            }
            AgentRunEnd::Refused { reason, detail, at } => {
                sqlx::query(
                    "UPDATE agent_runs SET status = $5, refusal_reason = $1, \
                     refusal_detail = $2, finished_at = $3 WHERE id = $4",
                )
                .bind(reason)
                .bind(detail)
                .bind(*at)
                .bind(run_id)
                .bind(end.status().as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
                if end.raises_alert() {
                    // The monitor opens the `run_refused` alert on its next pass.
                    sqlx::query(
                        "UPDATE services SET deadline_at = CASE WHEN deadline_at IS NULL \
                         OR deadline_at > $1 THEN $1 ELSE deadline_at END \
                         WHERE id = (SELECT service_id FROM agents WHERE id = $2)",
                    )
                    .bind(*at)
                    .bind(agent_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                }
                end.status()
            }
        };
        // When the server stored the report (its own clock; `finished_at` is the agent's).
        sqlx::query("UPDATE agent_runs SET reported_at = $1 WHERE id = $2")
            .bind(Timestamp::now())
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(RunFinish {
            status: stored,
            stored: true,
            dispatched_at,
        }))
    }
}
