//! Snapshots on PostgreSQL.

use super::*;

fn push_snapshot_filter(qb: &mut QueryBuilder<Postgres>, f: &SnapshotFilter) {
    qb.push(" WHERE true");
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

#[async_trait::async_trait]
impl SnapshotStore for PgStore {
    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>> {
        self.page(
            "snapshots",
            SNAPSHOT_COLUMNS,
            |qb| push_snapshot_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
            |r| Snapshot::from_row(r),
        )
        .await
    }

    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| Snapshot::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn restore_snapshot(
        &self,
        id: SnapshotId,
        actor: &Actor,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Locking the snapshot makes a concurrent second restore wait, then see it restored.
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1 FOR UPDATE");
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
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 FOR NO KEY UPDATE");
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
        Sql::insert_snapshot(&mut tx, &current, SnapshotAction::Edit, actor, now).await?;
        let mut restored = snap.snapshot_data.clone();
        restored.id = snap.service_id;
        restored.updated_at = now;
        // Observations are facts, not configuration: keep the newest.
        restored.last_heartbeat_at = current.last_heartbeat_at;
        restored.state = current.state;
        Sql::write_service(&mut tx, &restored, true).await?;
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
            insert_audit(&mut tx, &entry(&restored)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RestoreOutcome::Restored(restored))
    }
}
