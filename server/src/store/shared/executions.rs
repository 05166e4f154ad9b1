//! Playbook executions, on both backends. Starts are serialized so the circuit breaker's count
//! and the insert are one step ([`ExecutionSql::START_LOCK`]: a transaction-scoped advisory
//! lock on PostgreSQL; SQLite's single writer serializes them anyway); claims lock the rows they
//! take with `FOR UPDATE SKIP LOCKED` on PostgreSQL (`Db::SKIP_LOCKED`), so two workers never
//! lease one execution. Every change is written over the version it was computed from, with its
//! audit entries and notices (`shared/notices.rs`) in the same transaction.

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Type,
};

use super::{Db, Sql, collect, unavailable};
use crate::domain::Timestamp;
use crate::store::*;

/// What differs between the backends in this area.
pub(crate) trait ExecutionSql: Db {
    /// Run first in a start's transaction, so starts across the processes sharing the database
    /// happen one at a time; empty where one writer serializes them already.
    const START_LOCK: &'static str;
    /// When the next execution becomes claimable: the earliest `due_at`, or its lease's end if
    /// later (SQLite's scalar `max` against PostgreSQL's `GREATEST`, which ignores NULL).
    const NEXT_DUE: &'static str;
}

/// Most start times read per scope for the breaker (far above any sensible limit).
const MAX_STARTS: i64 = 100_000;

/// The columns an [`ExecutionRecord`] is read from.
fn execution_columns<DB: Db>() -> String {
    format!(
        "id, playbook_id, playbook_name, playbook_version, playbook_sha256, playbook_source, \
         service_id, alert_id, trigger, requested_by, context{t} AS context, status, version, \
         state{t} AS state, due_at, lease_owner, lease_until, created_at, updated_at, finished_at",
        t = DB::TEXT
    )
}

fn push_filter<DB: Db>(qb: &mut QueryBuilder<DB>, f: &ExecutionFilter)
where
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Timestamp: Encode<'a, DB> + Type<DB>,
{
    qb.push(" WHERE 1 = 1");
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

impl<DB: ExecutionSql> Sql<DB>
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
    /// Start times in one breaker scope (`kind`: playbook, service or global, keyed by
    /// `value`) since `from` and since the scope's last reset, newest first: the executions
    /// that count (`skipped` false, up to [`MAX_STARTS`], read through the partial indexes
    /// of migration 0020) or the newest one the open breaker skipped (`skipped` true: all
    /// that announcing an opening once needs, however many a burst skipped).
    async fn starts(
        conn: &mut DB::Connection,
        scope: &str,
        value: Option<i64>,
        from: Timestamp,
        kind: &str,
        skipped: bool,
    ) -> StoreResult<Vec<Timestamp>> {
        let status = if skipped {
            "status = 'skipped'"
        } else {
            "status <> 'skipped'"
        };
        let sql = format!(
            "SELECT created_at FROM playbook_executions WHERE {status} \
             AND created_at > $1 {scope} AND NOT EXISTS (SELECT 1 FROM circuit_breaker_resets r \
             WHERE r.scope = $4 AND r.scope_key = coalesce($2{bigint}, 0) \
             AND r.last_execution_id >= playbook_executions.id) \
             ORDER BY created_at DESC LIMIT $3",
            bigint = DB::BIGINT
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(from)
            .bind(value)
            .bind(if skipped { 1 } else { MAX_STARTS })
            .bind(kind)
            .fetch_all(conn)
            .await
            .map_err(unavailable)
    }

    /// The breaker's view of the recent starts for `new`.
    async fn recent_starts(
        conn: &mut DB::Connection,
        new: &NewExecution,
        from: Timestamp,
    ) -> StoreResult<RecentStarts> {
        let global_scope = format!("AND $2{} IS NULL", DB::BIGINT);
        let mut out = RecentStarts::default();
        for skipped in [false, true] {
            let playbook = Self::starts(
                &mut *conn,
                "AND playbook_id = $2",
                Some(new.pinned.playbook_id),
                from,
                "playbook",
                skipped,
            )
            .await?;
            let service = match new.service_id {
                Some(s) => {
                    Self::starts(
                        &mut *conn,
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
            let global =
                Self::starts(&mut *conn, &global_scope, None, from, "global", skipped).await?;
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

    /// Writes `w` over execution `id` (if it is still at `expected`, when given) with its audit
    /// entries and notices. `false`: another change came first; nothing was written.
    async fn write_execution(
        conn: &mut DB::Connection,
        id: i64,
        expected: Option<i64>,
        w: &ExecutionWrite,
    ) -> StoreResult<bool> {
        let (owner, until) = match &w.lease {
            Some((o, u)) => (Some(o.as_str()), Some(*u)),
            None => (None, None),
        };
        let sql = format!(
            "UPDATE playbook_executions SET status = $1, version = $2, state = $3{jsonb}, \
             due_at = $4, lease_owner = $5, lease_until = $6, finished_at = $7, updated_at = $8 \
             WHERE id = $9 AND ($10{bigint} IS NULL OR version = $10)",
            jsonb = DB::JSONB,
            bigint = DB::BIGINT
        );
        let done = sqlx::query(AssertSqlSafe(sql))
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
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        if DB::rows_affected(&done) != 1 {
            return Ok(false);
        }
        for e in &w.audit {
            let entry = NewAuditEntry {
                execution_id: Some(id),
                ..e.clone()
            };
            Self::insert_audit(&mut *conn, &entry).await?;
        }
        Self::insert_notices(conn, id, w.at, &w.notices).await?;
        Ok(true)
    }

    /// Inserts an execution on `conn` (the start's own transaction, or a monitor pass's):
    /// counts the recent starts, allocates the id, builds the first state and writes it with
    /// its audit.
    pub(crate) async fn insert_execution(
        conn: &mut DB::Connection,
        new: &NewExecution,
        window_from: Timestamp,
        build: BuildExecution<'_>,
    ) -> StoreResult<ExecutionRecord> {
        // One start at a time: the breaker counts what it decides on.
        if !DB::START_LOCK.is_empty() {
            sqlx::query(DB::START_LOCK)
                .execute(&mut *conn)
                .await
                .map_err(unavailable)?;
        }
        let recent = Self::recent_starts(&mut *conn, new, window_from).await?;
        let sql = format!(
            "INSERT INTO playbook_executions (playbook_id, playbook_name, playbook_version, \
             playbook_sha256, playbook_source, service_id, alert_id, trigger, requested_by, \
             context, status, version, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10{jsonb}, 'new', 0, '{{}}'{jsonb}, \
             $11, $11) RETURNING id",
            jsonb = DB::JSONB
        );
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
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
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        let first = build(id, &recent);
        Self::write_execution(&mut *conn, id, None, &first).await?;
        let sql = format!(
            "SELECT {} FROM playbook_executions WHERE id = $1",
            execution_columns::<DB>()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        ExecutionRecord::from_row(&row).map_err(unavailable)
    }

    pub(crate) async fn create_execution(
        pool: &Pool<DB>,
        new: &NewExecution,
        window_from: Timestamp,
        build: BuildExecution<'_>,
    ) -> StoreResult<ExecutionRecord> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let record = Self::insert_execution(&mut tx, new, window_from, build).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(record)
    }

    pub(crate) async fn update_execution(
        pool: &Pool<DB>,
        id: i64,
        expected_version: i64,
        w: &ExecutionWrite,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        if !Self::write_execution(&mut tx, id, Some(expected_version), w).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    pub(crate) async fn claim_executions(
        pool: &Pool<DB>,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        let sql = format!(
            "UPDATE playbook_executions SET lease_owner = $1, lease_until = $2 WHERE id IN ( \
                 SELECT id FROM playbook_executions WHERE due_at IS NOT NULL AND due_at <= $3 \
                 AND (lease_until IS NULL OR lease_until <= $3) \
                 ORDER BY due_at, id LIMIT $4{}) \
             RETURNING {}",
            DB::SKIP_LOCKED,
            execution_columns::<DB>()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        // `RETURNING` gives no order.
        let mut out: Vec<ExecutionRecord> = collect(&rows)?;
        out.sort_by_key(|r| (r.due_at, r.id));
        Ok(out)
    }

    pub(crate) async fn release_execution(
        pool: &Pool<DB>,
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
        .execute(pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn hasten_executions(
        pool: &Pool<DB>,
        ids: &[i64],
        at: Timestamp,
    ) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut qb = QueryBuilder::<DB>::new("UPDATE playbook_executions SET due_at = ");
        qb.push_bind(at)
            .push(" WHERE finished_at IS NULL AND due_at > ")
            .push_bind(at)
            .push(" AND id");
        DB::push_in_ids(&mut qb, ids);
        let done = qb.build().execute(pool).await.map_err(unavailable)?;
        Ok(DB::rows_affected(&done))
    }

    pub(crate) async fn release_all_execution_leases(
        pool: &Pool<DB>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE playbook_executions SET lease_owner = NULL, lease_until = NULL, \
             due_at = CASE WHEN due_at IS NULL OR due_at > $1 THEN $1 ELSE due_at END \
             WHERE lease_owner IS NOT NULL AND finished_at IS NULL",
        )
        .bind(now)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        Ok(DB::rows_affected(&done))
    }

    pub(crate) async fn next_execution_due(pool: &Pool<DB>) -> StoreResult<Option<Timestamp>> {
        sqlx::query_scalar(DB::NEXT_DUE)
            .fetch_one(pool)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn get_execution(
        pool: &Pool<DB>,
        id: i64,
    ) -> StoreResult<Option<ExecutionRecord>> {
        let sql = format!(
            "SELECT {} FROM playbook_executions WHERE id = $1",
            execution_columns::<DB>()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| ExecutionRecord::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn list_executions(
        pool: &Pool<DB>,
        filter: &ExecutionFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ExecutionRecord>> {
        Self::page(
            pool,
            "playbook_executions",
            &execution_columns::<DB>(),
            |qb| push_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
        )
        .await
    }
}
