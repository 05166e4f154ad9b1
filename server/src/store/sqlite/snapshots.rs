//! Snapshots on SQLite.

use super::*;

fn push_snapshot_filter(qb: &mut QueryBuilder<Sqlite>, f: &SnapshotFilter) {
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

#[async_trait::async_trait]
impl SnapshotStore for SqliteStore {
    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM snapshots");
        push_snapshot_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM snapshots");
        push_snapshot_filter(&mut qb, filter);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(Snapshot::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>> {
        sqlx::query("SELECT * FROM snapshots WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.read)
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(row) = sqlx::query("SELECT * FROM snapshots WHERE id = $1")
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
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1");
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
