//! Script runs dispatched to agents, on PostgreSQL. State changes are guarded `UPDATE`s
//! (`WHERE status IN (…)`); finishing locks the run's row (`FOR UPDATE`), so two replicas
//! storing the same resent report keep only the first.

use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row};

use super::*;
use crate::domain::Timestamp;
use crate::domain::run::report_ends_run;
use crate::store::*;

const RUN_COLUMNS: &str = "id, agent_id, script_id, script_version, parameters::text AS parameters, \
    secret_parameters::text AS secret_parameters, timeout_seconds, status, requested_by, created_at, dispatched_at, started_at, finished_at, \
    exit_code, signal, stdout, stderr, stdout_truncated, stderr_truncated, duration_ms, \
    refusal_reason, refusal_detail, expires_at, reported_at";

#[async_trait::async_trait]
impl RunStore for PgStore {
    async fn create_agent_runs(&self, new: &[NewAgentRun]) -> StoreResult<Vec<AgentRun>> {
        let sql = format!(
            "INSERT INTO agent_runs (id, agent_id, script_id, script_version, parameters, \
             timeout_seconds, requested_by, created_at, expires_at, secret_parameters) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10::jsonb) RETURNING {RUN_COLUMNS}"
        );
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
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
                insert_audit(&mut tx, e).await?;
            }
            runs.push(AgentRun::from_row(&row).map_err(unavailable)?);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(runs)
    }

    async fn get_agent_run(&self, run_id: &str) -> StoreResult<Option<AgentRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM agent_runs WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref()
            .map(AgentRun::from_row)
            .transpose()
            .map_err(unavailable)
    }

    async fn list_agent_runs(
        &self,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>> {
        let push_filter = |qb: &mut QueryBuilder<Postgres>| {
            qb.push(" FROM agent_runs WHERE true");
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
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*)");
        push_filter(&mut count);
        let total_count: i64 = count
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {RUN_COLUMNS}"));
        push_filter(&mut qb);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(AgentRun::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count,
        })
    }

    async fn unaccepted_agent_runs(&self, agent_id: &str) -> StoreResult<Vec<AgentRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM agent_runs WHERE agent_id = $1 AND status = 'dispatched' \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(AgentRun::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)
    }

    async fn claim_agent_runs(
        &self,
        agent_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>> {
        // One statement reads and claims (a racing session waits on the row locks, then finds
        // the runs no longer queued); the script version comes along from the join.
        let columns = RUN_COLUMNS
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
        let mut n = 0;
        for id in run_ids {
            n += sqlx::query(
                "UPDATE agent_runs SET expires_at = $1 WHERE id = $2 AND status = 'queued'",
            )
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        }
        Ok(n)
    }

    async fn requeue_agent_run(&self, agent_id: &str, run_id: &str) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE agent_runs SET status = 'queued', dispatched_at = NULL, lost_after = NULL \
             WHERE id = $1 AND agent_id = $2 AND status = 'dispatched'",
        )
        .bind(run_id)
        .bind(agent_id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE agent_runs SET status = 'dispatched', dispatched_at = $1, \
             lost_after = $3 + make_interval(secs => timeout_seconds) \
             WHERE id = $2 AND (status = 'dispatched' \
                 OR (status = 'queued' AND (expires_at IS NULL OR expires_at > $1)))",
        )
        .bind(at)
        .bind(run_id)
        .bind(lost_base)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn agent_run_started(
        &self,
        agent_id: &str,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE agent_runs SET status = 'running', started_at = coalesce(started_at, $1), \
             lost_after = $4 + make_interval(secs => timeout_seconds) \
             WHERE id = $2 AND agent_id = $3 AND status IN ('queued', 'dispatched')",
        )
        .bind(at)
        .bind(run_id)
        .bind(agent_id)
        .bind(lost_base)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(updated.rows_affected() == 1)
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
        // Each statement re-checks its WHERE on rows another replica changed meanwhile, so a
        // run is ended by one sweep only.
        let expired = sqlx::query(
            "UPDATE agent_runs SET status = 'expired', finished_at = $1 \
             WHERE status = 'queued' AND expires_at <= $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let lost = sqlx::query(
            "UPDATE agent_runs SET status = 'lost', finished_at = $1 \
             WHERE status IN ('dispatched', 'running') AND lost_after <= $1",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(RunSweep { expired, lost })
    }

    async fn agents_with_queued_runs(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT agent_id FROM agent_runs \
             WHERE status = 'queued' AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn finish_agent_run(
        &self,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let found: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT status, dispatched_at FROM agent_runs WHERE id = $1 AND agent_id = $2 FOR UPDATE",
        )
        .bind(run_id)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some((status, dispatched_at)) = found else {
            return Ok(None);
        };
        let status = decode("run status", AgentRunStatus::parse(&status)).map_err(unavailable)?;
        let dispatched_at = dispatched_at.map(Timestamp::from_datetime);
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
                        "UPDATE services SET deadline_at = least(coalesce(deadline_at, $1), $1) \
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
