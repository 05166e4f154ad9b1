//! Playbook executions on PostgreSQL. Starts take a transaction-scoped advisory lock so the
//! circuit breaker's count and the insert are one step for every replica; claims lock the
//! rows they take with `FOR UPDATE SKIP LOCKED`, so two workers never lease one execution.

use sqlx::{AssertSqlSafe, FromRow, Postgres, QueryBuilder};

use super::*;
use crate::store::*;

const COLUMNS: &str = "id, playbook_id, playbook_name, playbook_version, playbook_sha256, \
    playbook_source, service_id, alert_id, trigger, requested_by, context::text AS context, \
    status, version, state::text AS state, due_at, lease_owner, lease_until, created_at, updated_at, finished_at";

/// The advisory lock key that serializes execution starts ("medic-pb" in ASCII).
const START_LOCK: i64 = 0x6d65_6469_632d_7062;

/// Most start times read per scope for the breaker (far above any sensible limit).
const MAX_STARTS: i64 = 100_000;

fn push_filter(qb: &mut QueryBuilder<Postgres>, f: &ExecutionFilter) {
    qb.push(" WHERE true");
    if let Some(v) = f.playbook_id {
        qb.push(" AND playbook_id = ").push_bind(v);
    }
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = &f.status {
        qb.push(" AND status = ").push_bind(v.clone());
    }
    if let Some(v) = f.trigger {
        qb.push(" AND trigger = ").push_bind(v.as_str());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(v);
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(v);
    }
}

/// Start times in one breaker scope (`kind`: playbook, service or global, keyed by `value`)
/// since `from` and since the scope's last reset: the executions that count (`skipped` false)
/// or the ones the open breaker skipped (`skipped` true).
async fn starts(
    tx: &mut Transaction<'_, Postgres>,
    scope: &str,
    value: Option<i64>,
    from: Timestamp,
    kind: &str,
    skipped: bool,
) -> Result<Vec<Timestamp>, sqlx::Error> {
    let status = if skipped {
        "status = 'skipped'"
    } else {
        "status <> 'skipped'"
    };
    let sql = format!(
        "SELECT created_at FROM playbook_executions WHERE {status} \
         AND created_at > $1 {scope} AND NOT EXISTS (SELECT 1 FROM circuit_breaker_resets r \
         WHERE r.scope = $4 AND r.scope_key = coalesce($2::bigint, 0) AND r.last_execution_id >= playbook_executions.id) \
         ORDER BY created_at DESC LIMIT $3"
    );
    sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(from)
        .bind(value)
        .bind(MAX_STARTS)
        .bind(kind)
        .fetch_all(&mut **tx)
        .await
}

/// The breaker's view of the recent starts for `new`.
async fn recent(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewExecution,
    from: Timestamp,
) -> Result<RecentStarts, sqlx::Error> {
    let mut out = RecentStarts::default();
    for skipped in [false, true] {
        let playbook = starts(
            tx,
            "AND playbook_id = $2",
            Some(new.pinned.playbook_id),
            from,
            "playbook",
            skipped,
        )
        .await?;
        let service = match new.service_id {
            Some(s) => {
                starts(
                    tx,
                    "AND service_id = $2",
                    Some(s.0),
                    from,
                    "service",
                    skipped,
                )
                .await?
            }
            None => Vec::new(),
        };
        let global = starts(tx, "AND $2::bigint IS NULL", None, from, "global", skipped).await?;
        if skipped {
            out.skipped_playbook = playbook;
            out.skipped_service = service;
            out.skipped_global = global;
        } else {
            out.playbook = playbook;
            out.service = service;
            out.global = global;
        }
    }
    Ok(out)
}

async fn write(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    expected: Option<i64>,
    w: &ExecutionWrite,
) -> StoreResult<bool> {
    let (owner, until) = match &w.lease {
        Some((o, u)) => (Some(o.as_str()), Some(*u)),
        None => (None, None),
    };
    let done = sqlx::query(
        "UPDATE playbook_executions SET status = $1, version = $2, state = $3::jsonb, due_at = $4, \
         lease_owner = $5, lease_until = $6, finished_at = $7, updated_at = $8 \
         WHERE id = $9 AND ($10::bigint IS NULL OR version = $10)",
    )
    .bind(&w.status)
    .bind(w.version)
    .bind(w.state.to_string())
    .bind(w.due_at)
    .bind(owner)
    .bind(until)
    .bind(w.finished_at)
    .bind(w.at)
    .bind(id)
    .bind(expected)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?
    .rows_affected();
    if done != 1 {
        return Ok(false);
    }
    for e in &w.audit {
        let entry = NewAuditEntry {
            execution_id: Some(id),
            ..e.clone()
        };
        insert_audit(tx, &entry).await?;
    }
    Sql::insert_notices(tx, id, w.at, &w.notices).await?;
    Ok(true)
}

/// Inserts an execution inside `tx` (the start's own transaction, or a monitor pass's): counts
/// the recent starts, allocates the id, builds the first state and writes it with its audit.
pub(super) async fn insert_execution(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewExecution,
    window_from: Timestamp,
    build: BuildExecution<'_>,
) -> StoreResult<ExecutionRecord> {
    // One start at a time across replicas: the breaker counts what it decides on.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(START_LOCK)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    let recent = recent(&mut *tx, new, window_from)
        .await
        .map_err(unavailable)?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO playbook_executions (playbook_id, playbook_name, playbook_version, \
         playbook_sha256, playbook_source, service_id, alert_id, trigger, requested_by, \
         context, status, version, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, 'new', 0, '{}'::jsonb, $11, $11) \
         RETURNING id",
    )
    .bind(new.pinned.playbook_id)
    .bind(&new.pinned.name)
    .bind(new.pinned.version)
    .bind(&new.pinned.sha256)
    .bind(&new.pinned.source)
    .bind(new.service_id.map(|s| s.0))
    .bind(new.alert_id)
    .bind(new.trigger.as_str())
    .bind(&new.requested_by)
    .bind(new.context.to_string())
    .bind(new.at)
    .fetch_one(&mut **tx)
    .await
    .map_err(unavailable)?;
    let first = build(id, &recent);
    write(tx, id, None, &first).await?;
    let sql = format!("SELECT {COLUMNS} FROM playbook_executions WHERE id = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_one(&mut **tx)
        .await
        .map_err(unavailable)?;
    let record = ExecutionRecord::from_row(&row).map_err(unavailable)?;
    Ok(record)
}

#[async_trait::async_trait]
impl ExecutionStore for PgStore {
    async fn create_execution(
        &self,
        new: &NewExecution,
        window_from: Timestamp,
        build: BuildExecution<'_>,
    ) -> StoreResult<ExecutionRecord> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let record = insert_execution(&mut tx, new, window_from, build).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(record)
    }

    async fn update_execution(
        &self,
        id: i64,
        expected_version: i64,
        w: &ExecutionWrite,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if !write(&mut tx, id, Some(expected_version), w).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn claim_executions(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let sql = format!(
            "UPDATE playbook_executions SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
                 SELECT id FROM playbook_executions WHERE due_at IS NOT NULL AND due_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY due_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut out = rows
            .iter()
            .map(ExecutionRecord::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        out.sort_by_key(|r| (r.due_at, r.id));
        Ok(out)
    }

    async fn release_execution(
        &self,
        id: i64,
        owner: &str,
        due_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE playbook_executions SET lease_owner = NULL, lease_until = NULL, \
             due_at = $3 WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .bind(due_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn release_all_execution_leases(&self, now: Timestamp) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE playbook_executions SET lease_owner = NULL, lease_until = NULL, \
             due_at = CASE WHEN due_at IS NULL OR due_at > $1 THEN $1 ELSE due_at END \
             WHERE lease_owner IS NOT NULL AND finished_at IS NULL",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }

    async fn next_execution_due(&self) -> StoreResult<Option<Timestamp>> {
        let v: Option<Timestamp> = sqlx::query_scalar(
            "SELECT min(GREATEST(due_at, lease_until)) FROM playbook_executions \
             WHERE due_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(v)
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM playbook_executions WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| ExecutionRecord::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ExecutionRecord>> {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*) FROM playbook_executions");
        push_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut qb =
            QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM playbook_executions"));
        push_filter(&mut qb, filter);
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
            .map(ExecutionRecord::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }
}
