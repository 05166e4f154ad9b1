//! The playbook outbox on SQLite.

use sqlx::sqlite::SqliteRow;

use super::*;
use crate::store::notices::{NOTICE_COLUMNS_SQLITE as COLUMNS, approval_state, notice_record};

fn from_row(r: &SqliteRow) -> Result<NoticeRecord, sqlx::Error> {
    notice_record(
        r.try_get("id")?,
        r.try_get("execution_id")?,
        r.try_get("target_id")?,
        r.try_get("event")?,
        r.try_get::<&str, _>("destination")?,
        r.try_get::<&str, _>("payload")?,
        r.try_get::<&str, _>("state")?,
        r.try_get("attempts")?,
        r.try_get("next_attempt_at")?,
        r.try_get("last_status")?,
        r.try_get("last_error")?,
        r.try_get("external_ref")?,
        r.try_get("created_at")?,
        r.try_get("finished_at")?,
    )
}

/// Queues `notices` for execution `id` inside the transaction that commits its change.
pub(super) async fn insert_notices(
    tx: &mut Transaction<'_, Sqlite>,
    id: i64,
    at: Timestamp,
    notices: &[NewNotice],
) -> StoreResult<()> {
    for n in notices {
        let destination = serde_json::to_string(&n.destination)
            .map_err(|e| StoreError::Unavailable(format!("notice destination: {e}")))?;
        sqlx::query(
            "INSERT INTO execution_notices (execution_id, target_id, event, channel, destination, \
             payload, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id)
        .bind(n.target_id.map(|t| t.0))
        .bind(&n.event)
        .bind(n.destination.channel())
        .bind(destination)
        .bind(n.payload.to_string())
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl NoticeStore for SqliteStore {
    async fn claim_notices(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<NoticeRecord>> {
        let sql = format!(
            "UPDATE execution_notices SET lease_until = $1 WHERE id IN ( \
                 SELECT id FROM execution_notices WHERE state = 'pending' AND next_attempt_at <= $2 \
                 AND (lease_until IS NULL OR lease_until <= $2) \
                 ORDER BY next_attempt_at, id LIMIT $3) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.write)
            .await
            .map_err(unavailable)?;
        let mut out = rows
            .iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        out.sort_by_key(|n| (n.next_attempt_at, n.id));
        Ok(out)
    }

    async fn finish_notice(&self, id: i64, res: &DeliveryResult) -> StoreResult<()> {
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
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn next_notice_at(&self) -> StoreResult<Option<Timestamp>> {
        sqlx::query_scalar(
            "SELECT min(next_attempt_at) FROM execution_notices WHERE state = 'pending'",
        )
        .fetch_one(&self.read)
        .await
        .map_err(unavailable)
    }

    async fn list_notices(&self, execution_id: i64) -> StoreResult<Vec<NoticeRecord>> {
        let sql =
            format!("SELECT {COLUMNS} FROM execution_notices WHERE execution_id = $1 ORDER BY id");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(execution_id)
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)
    }

    async fn approval_message(
        &self,
        execution_id: i64,
        destination: &Destination,
    ) -> StoreResult<ApprovalMessage> {
        let destination = serde_json::to_string(destination)
            .map_err(|e| StoreError::Unavailable(format!("notice destination: {e}")))?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT state, external_ref FROM execution_notices WHERE execution_id = $1 \
             AND event = $2 AND destination = $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(execution_id)
        .bind(AWAITING_APPROVAL_EVENT)
        .bind(destination)
        .fetch_optional(&self.write)
        .await
        .map_err(unavailable)?;
        Ok(approval_state(row))
    }
}

#[async_trait::async_trait]
impl BreakerStore for SqliteStore {
    async fn reset_breaker(
        &self,
        scope: &str,
        key: i64,
        at: Timestamp,
        actor: &str,
        audit: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
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
        insert_audit(&mut tx, audit).await?;
        tx.commit().await.map_err(unavailable)
    }
}
