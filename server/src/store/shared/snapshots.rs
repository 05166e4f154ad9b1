//! Snapshots and restores, on both backends.

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Type,
};

use super::services::ServiceSql;
use super::{Db, Sql, unavailable};
use crate::domain::service::name_key;
use crate::domain::{SnapshotAction, SnapshotId, Timestamp};
use crate::store::services::SERVICE_COLUMNS;
use crate::store::*;

fn snapshot_columns<DB: Db>() -> String {
    format!(
        "id, service_id, action_type, snapshot_data{} AS snapshot_data, actor, on_behalf_of, \
         created_at, restored_at, restored_by, restored_on_behalf_of",
        DB::TEXT
    )
}

fn push_snapshot_filter<DB: Db>(qb: &mut QueryBuilder<DB>, f: &SnapshotFilter)
where
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Timestamp: Encode<'a, DB> + Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = f.action_type {
        qb.push(" AND action_type = ").push_bind(v.as_str());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(v);
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(v);
    }
}

impl<DB: ServiceSql> Sql<DB>
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
    pub(crate) async fn list_snapshots(
        pool: &Pool<DB>,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>> {
        Self::page(
            pool,
            "snapshots",
            &snapshot_columns::<DB>(),
            |qb| push_snapshot_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
        )
        .await
    }

    pub(crate) async fn get_snapshot(
        pool: &Pool<DB>,
        id: SnapshotId,
    ) -> StoreResult<Option<Snapshot>> {
        let sql = format!(
            "SELECT {} FROM snapshots WHERE id = $1",
            snapshot_columns::<DB>()
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?
            .map(|r| Snapshot::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn restore_snapshot(
        pool: &Pool<DB>,
        id: SnapshotId,
        actor: &Actor,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        // Locking the snapshot makes a concurrent second restore wait, then see it restored.
        let sql = format!(
            "SELECT {} FROM snapshots WHERE id = $1{}",
            snapshot_columns::<DB>(),
            DB::FOR_UPDATE
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(RestoreOutcome::NotFound);
        };
        let snap = Snapshot::from_row(&row).map_err(unavailable)?;
        if snap.restored_at.is_some() {
            return Ok(RestoreOutcome::AlreadyRestored);
        }
        let now = Timestamp::now();
        let key = name_key(&snap.snapshot_data.heartbeat_name);
        let holder: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM services WHERE name_key = $1 AND deleted_at IS NULL AND id <> $2",
        )
        .bind(&key)
        .bind(snap.service_id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if holder.is_some() {
            return Ok(RestoreOutcome::NameTaken);
        }
        // Snapshot what is there now (live or deleted) so the restore itself can be undone.
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1{}",
            DB::FOR_NO_KEY_UPDATE
        );
        let current = sqlx::query(AssertSqlSafe(sql))
            .bind(snap.service_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|r| Service::from_row(&r))
            .transpose()
            .map_err(unavailable)?;
        let Some(current) = current else {
            return Ok(RestoreOutcome::NotFound);
        };
        Self::insert_snapshot(&mut tx, &current, SnapshotAction::Edit, actor, now).await?;
        let mut restored = snap.snapshot_data.clone();
        restored.id = snap.service_id;
        restored.updated_at = now;
        // Observations are facts, not configuration: keep the newest.
        restored.last_heartbeat_at = current.last_heartbeat_at;
        restored.state = current.state;
        Self::write_service(&mut tx, &restored, true).await?;
        sqlx::query(
            "UPDATE snapshots SET restored_at = $1, restored_by = $2, restored_on_behalf_of = $4 \
             WHERE id = $3",
        )
        .bind(now)
        .bind(&actor.name)
        .bind(id.0)
        .bind(&actor.on_behalf_of)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(entry) = audit {
            Self::insert_audit(&mut tx, &entry(&restored)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RestoreOutcome::Restored(restored))
    }
}
