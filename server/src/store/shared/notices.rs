//! The playbook outbox (`execution_notices`) and circuit breaker resets, on both backends.
//!
//! Notices are queued in the transaction that commits the execution change they announce
//! ([`Sql::insert_notices`], called by `shared/executions.rs`). A dispatcher leases the due ones
//! (`lease_until`); the claim skips rows another replica is claiming on PostgreSQL
//! (`Db::SKIP_LOCKED`), which is the only difference between the backends here.

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, Pool, Type};

use super::{Db, Sql, collect, unavailable};
use crate::domain::{Destination, Timestamp};
use crate::store::*;

fn destination_json(d: &Destination) -> StoreResult<String> {
    serde_json::to_string(d)
        .map_err(|e| StoreError::Unavailable(format!("notice destination: {e}")))
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
    /// Queues `notices` for execution `id` on `conn` (the transaction that commits its change).
    pub(crate) async fn insert_notices(
        conn: &mut DB::Connection,
        id: i64,
        at: Timestamp,
        notices: &[NewNotice],
    ) -> StoreResult<()> {
        for n in notices {
            sqlx::query(
                "INSERT INTO execution_notices (execution_id, target_id, event, channel, \
                 destination, payload, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(id)
            .bind(n.target_id.map(|t| t.0))
            .bind(&n.event)
            .bind(n.destination.channel())
            .bind(destination_json(&n.destination)?)
            .bind(n.payload.to_string())
            .bind(at)
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(crate) async fn claim_notices(
        pool: &Pool<DB>,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<NoticeRecord>> {
        let sql = format!(
            "UPDATE execution_notices SET lease_until = $1 WHERE id IN ( \
                 SELECT id FROM execution_notices WHERE state = 'pending' \
                 AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until <= $2) \
                 ORDER BY next_attempt_at, id LIMIT $3{}) \
             RETURNING {NOTICE_COLUMNS}",
            DB::SKIP_LOCKED
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        // `RETURNING` gives no order.
        let mut out: Vec<NoticeRecord> = collect(&rows)?;
        out.sort_by_key(|n| (n.next_attempt_at, n.id));
        Ok(out)
    }

    pub(crate) async fn finish_notice(
        pool: &Pool<DB>,
        id: i64,
        res: &DeliveryResult,
    ) -> StoreResult<()> {
        let done = res.state != DeliveryState::Pending;
        sqlx::query(
            "UPDATE execution_notices SET state = $1, attempts = attempts + 1, \
             next_attempt_at = coalesce($2, next_attempt_at), lease_until = NULL, \
             last_status = $3, last_error = $4, external_ref = coalesce($5, external_ref), \
             finished_at = $6 WHERE id = $7",
        )
        .bind(res.state.as_str())
        .bind(res.next_attempt_at)
        .bind(res.status)
        .bind(&res.error)
        .bind(&res.external_ref)
        .bind(done.then_some(res.at))
        .bind(id)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn next_notice_at(pool: &Pool<DB>) -> StoreResult<Option<Timestamp>> {
        sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM execution_notices WHERE state = 'pending'",
        )
        .fetch_one(pool)
        .await
        .map_err(unavailable)
    }

    pub(crate) async fn list_notices(
        pool: &Pool<DB>,
        execution_id: i64,
    ) -> StoreResult<Vec<NoticeRecord>> {
        let sql = format!(
            "SELECT {NOTICE_COLUMNS} FROM execution_notices WHERE execution_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(execution_id)
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        collect(&rows)
    }

    pub(crate) async fn approval_message(
        pool: &Pool<DB>,
        execution_id: i64,
        destination: &Destination,
    ) -> StoreResult<ApprovalMessage> {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT state, external_ref FROM execution_notices WHERE execution_id = $1 \
             AND event = $2 AND destination = $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(execution_id)
        .bind(AWAITING_APPROVAL_EVENT)
        .bind(destination_json(destination)?)
        .fetch_optional(pool)
        .await
        .map_err(unavailable)?;
        Ok(approval_state(row))
    }

    pub(crate) async fn reset_breaker(
        pool: &Pool<DB>,
        scope: &str,
        key: i64,
        at: Timestamp,
        actor: &str,
        audit: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO circuit_breaker_resets (scope, scope_key, reset_at, actor, \
             last_execution_id) SELECT $1, $2, $3, $4, coalesce(max(id), 0) \
             FROM playbook_executions",
        )
        .bind(scope)
        .bind(key)
        .bind(at)
        .bind(actor)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Self::insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(unavailable)
    }
}
