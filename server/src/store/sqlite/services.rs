//! Services, heartbeats and job signals on SQLite: the batch insert of heartbeats and the create
//! (time in integer milliseconds, one writer) are SQLite's; the rest is `shared/services.rs`.

use super::*;
use crate::store::shared::services::ServiceSql;

impl ServiceSql for Sqlite {
    const TOUCH_AFTER_SIGNAL: &'static str = "UPDATE services \
        SET last_heartbeat_at = max(coalesce(last_heartbeat_at, 0), $1), \
        deadline_at = min(coalesce(deadline_at, $1), $1) WHERE id = $2";
}

#[async_trait::async_trait]
impl ServiceStore for SqliteStore {
    async fn record_heartbeats(
        &self,
        batch: &[NewHeartbeat],
    ) -> StoreResult<Vec<HeartbeatOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        // 1. Resolve every distinct name with one query per chunk.
        let mut keys: Vec<&str> = batch.iter().map(|h| h.name_key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut services: HashMap<String, (i64, bool, String)> = HashMap::new();
        for chunk in keys.chunks(SQLITE_CHUNK) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT id, active, heartbeat_name, name_key FROM services \
                 WHERE deleted_at IS NULL AND name_key IN (",
            );
            let mut sep = qb.separated(", ");
            for k in chunk {
                sep.push_bind(k.to_string());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *tx).await.map_err(unavailable)? {
                let key: String = row.try_get(3).map_err(unavailable)?;
                let id: i64 = row.try_get(0).map_err(unavailable)?;
                let active: i64 = row.try_get(1).map_err(unavailable)?;
                let name: String = row.try_get(2).map_err(unavailable)?;
                services.insert(key, (id, active != 0, name));
            }
        }
        // 2. Insert the events of active services, several rows per statement.
        let accepted: Vec<(usize, i64)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match services.get(&h.name_key) {
                Some((id, true, _)) => Some((i, *id)),
                _ => None,
            })
            .collect();
        let mut event_ids: Vec<i64> = Vec::with_capacity(accepted.len());
        for chunk in accepted.chunks(SQLITE_CHUNK / 4) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO heartbeat_events (service_id, status, run_id, received_at) ",
            );
            qb.push_values(chunk, |mut row, (i, id)| {
                let h = &batch[*i];
                row.push_bind(*id)
                    .push_bind(h.status.clone())
                    .push_bind(h.run_id.clone())
                    .push_bind(h.received_at);
            });
            qb.push(" RETURNING id");
            let mut ids: Vec<i64> = qb
                .build_query_scalar()
                .fetch_all(&mut *tx)
                .await
                .map_err(unavailable)?;
            // Row ids grow in insertion order within one statement.
            ids.sort_unstable();
            event_ids.extend(ids);
        }
        // 3. Move each service's last_heartbeat_at forward, once per service.
        let mut latest: HashMap<i64, i64> = HashMap::new();
        for (i, id) in &accepted {
            let at = batch[*i].received_at.millis();
            latest
                .entry(*id)
                .and_modify(|m| *m = (*m).max(at))
                .or_insert(at);
        }
        let latest: Vec<(i64, i64)> = latest.into_iter().collect();
        for chunk in latest.chunks(SQLITE_CHUNK / 2) {
            let mut qb = QueryBuilder::<Sqlite>::new("WITH v(id, at) AS (");
            qb.push_values(chunk, |mut row, (id, at)| {
                row.push_bind(*id).push_bind(*at);
            });
            qb.push(
                ") UPDATE services SET last_heartbeat_at = \
                 max(coalesce(last_heartbeat_at, 0), (SELECT at FROM v WHERE v.id = services.id)), \
                 deadline_at = CASE WHEN state = 'up' AND threshold = 1 AND schedule IS NULL \
                   AND muted_at IS NULL \
                 THEN max(coalesce(last_heartbeat_at, 0), (SELECT at FROM v WHERE v.id = services.id)) \
                   + interval_seconds * 1000 \
                 ELSE min(coalesce(deadline_at, (SELECT at FROM v WHERE v.id = services.id)), \
                   (SELECT at FROM v WHERE v.id = services.id)) END \
                 WHERE id IN (SELECT id FROM v)",
            );
            qb.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        let mut ids = event_ids.into_iter();
        Ok(batch
            .iter()
            .map(|h| match services.get(&h.name_key) {
                None => HeartbeatOutcome::UnknownService,
                Some((_, false, name)) => HeartbeatOutcome::Inactive {
                    heartbeat_name: name.clone(),
                },
                Some((id, true, _)) => HeartbeatOutcome::Recorded {
                    service_id: ServiceId(*id),
                    event_id: ids.next().unwrap_or_default(),
                },
            })
            .collect())
    }

    async fn list_heartbeats(&self, q: &HeartbeatQuery) -> StoreResult<Vec<HeartbeatRow>> {
        Sql::list_heartbeats(&self.read, q).await
    }

    async fn record_job_signal(&self, sig: &JobSignal) -> StoreResult<JobSignalOutcome> {
        Sql::record_job_signal(&self.write, sig).await
    }

    async fn recent_run_durations(&self, service: ServiceId, limit: u32) -> StoreResult<Vec<i64>> {
        Sql::recent_run_durations(&self.read, service, limit).await
    }

    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>> {
        Sql::list_runs(&self.read, service, page).await
    }

    async fn create_service(&self, new: &NewService) -> StoreResult<CreateOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name_key = $1 AND deleted_at IS NULL"
        );
        if let Some(r) = sqlx::query(AssertSqlSafe(sql))
            .bind(new.heartbeat_name.key())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        {
            return Ok(CreateOutcome::Exists(
                Service::from_row(&r).map_err(unavailable)?,
            ));
        }
        let sql = format!(
            "INSERT INTO services (heartbeat_name, name_key, service_name, environment, \
             interval_seconds, threshold, grace_seconds, team, priority, runbook, \
             max_duration_ms, created_at, updated_at, deadline_at, schedule, schedule_tz, \
             renotify_seconds, parent_id, alert_on_failure) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 + $15 * 1000, $16, $17, $18, $19, $20) \
             RETURNING {SERVICE_COLUMNS}"
        );
        let r = sqlx::query(AssertSqlSafe(sql))
            .bind(new.heartbeat_name.as_str())
            .bind(new.heartbeat_name.key())
            .bind(&new.service_name)
            .bind(&new.environment)
            .bind(new.interval_seconds)
            .bind(new.threshold)
            .bind(new.grace_seconds)
            .bind(&new.team)
            .bind(new.priority.as_str())
            .bind(&new.runbook)
            .bind(new.max_duration_ms)
            .bind(new.at)
            .bind(new.at)
            .bind(new.at)
            .bind(new.interval_seconds)
            .bind(new.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(new.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(new.monitoring.renotify_seconds)
            .bind(new.monitoring.parent_id.map(|p| p.0))
            .bind(i64::from(new.monitoring.alert_on_failure))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let s = Service::from_row(&r).map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(CreateOutcome::Created(s))
    }

    async fn get_service(&self, id: ServiceId) -> StoreResult<Option<Service>> {
        Sql::get_service(&self.read, id).await
    }

    async fn find_service(&self, key: &str) -> StoreResult<Option<Service>> {
        Sql::find_service(&self.read, key).await
    }

    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Service>> {
        Sql::list_services(&self.read, filter, page).await
    }

    async fn update_service(
        &self,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>> {
        Sql::update_service(&self.write, id, patch, change).await
    }

    async fn delete_service(
        &self,
        id: ServiceId,
        actor: &Actor,
    ) -> StoreResult<Option<SnapshotId>> {
        Sql::delete_service(&self.write, id, actor).await
    }
}
