//! Services, heartbeats and job signals on PostgreSQL: the batch of heartbeats (one statement
//! over `unnest`) and the create (an upsert on the live name, interval arithmetic) are
//! PostgreSQL's; the rest is `shared/services.rs`.

use super::*;
use crate::store::shared::services::ServiceSql;

impl ServiceSql for Postgres {
    const TOUCH_AFTER_SIGNAL: &'static str = "UPDATE services \
        SET last_heartbeat_at = GREATEST(last_heartbeat_at, $1), \
        deadline_at = LEAST(deadline_at, $1) WHERE id = $2";
}

#[async_trait::async_trait]
impl ServiceStore for PgStore {
    async fn record_heartbeats(
        &self,
        batch: &[NewHeartbeat],
    ) -> StoreResult<Vec<HeartbeatOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = batch.iter().map(|h| h.name_key.as_str()).collect();
        let statuses: Vec<&str> = batch.iter().map(|h| h.status.as_str()).collect();
        let run_ids: Vec<Option<&str>> = batch.iter().map(|h| h.run_id.as_deref()).collect();
        let times: Vec<DateTime<Utc>> = batch.iter().map(|h| dt(h.received_at)).collect();
        // One statement, so one round trip and an implicit transaction:
        // - `svc` locks every named live service in id order (concurrent batches, also from
        //   other replicas, lock in the same order, so they queue instead of deadlocking;
        //   NO KEY UPDATE does not conflict with the KEY SHARE lock the event insert's foreign
        //   key check takes);
        // - `ins` records the events of active services in input order (identity values are
        //   drawn in that order, so the sorted ids map one-to-one onto the accepted inputs);
        // - `upd` moves each service's last_heartbeat_at forward once.
        let rows = sqlx::query(
            "WITH input AS ( \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) \
                     WITH ORDINALITY AS t(name_key, status, run_id, received_at, ord)), \
             svc AS ( \
                 SELECT id, name_key, active, heartbeat_name FROM services \
                 WHERE name_key = ANY($1) AND deleted_at IS NULL \
                 ORDER BY id FOR NO KEY UPDATE), \
             ins AS ( \
                 INSERT INTO heartbeat_events (service_id, status, run_id, received_at) \
                 SELECT svc.id, i.status, i.run_id, i.received_at \
                 FROM input i JOIN svc ON svc.name_key = i.name_key \
                 WHERE svc.active ORDER BY i.ord RETURNING id), \
             upd AS ( \
                 UPDATE services s SET last_heartbeat_at = GREATEST(s.last_heartbeat_at, n.at), \
                     deadline_at = CASE WHEN s.state = 'up' AND s.threshold = 1 \
                         AND s.schedule IS NULL AND s.muted_at IS NULL \
                     THEN GREATEST(s.last_heartbeat_at, n.at) \
                         + s.interval_seconds * interval '1 second' \
                     ELSE LEAST(s.deadline_at, n.at) END \
                 FROM (SELECT svc.id, max(i.received_at) AS at \
                       FROM input i JOIN svc ON svc.name_key = i.name_key \
                       WHERE svc.active GROUP BY svc.id) n \
                 WHERE s.id = n.id) \
             SELECT false AS event, id, name_key, active, heartbeat_name FROM svc \
             UNION ALL \
             SELECT true, id, NULL, NULL, NULL FROM ins",
        )
        .bind(&keys)
        .bind(&statuses)
        .bind(&run_ids)
        .bind(&times)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut services: HashMap<String, (i64, bool, String)> = HashMap::new();
        let mut event_ids: Vec<i64> = Vec::with_capacity(batch.len());
        for r in &rows {
            let id: i64 = r.try_get("id").map_err(unavailable)?;
            if r.try_get::<bool, _>("event").map_err(unavailable)? {
                event_ids.push(id);
            } else {
                services.insert(
                    r.try_get("name_key").map_err(unavailable)?,
                    (
                        id,
                        r.try_get("active").map_err(unavailable)?,
                        r.try_get("heartbeat_name").map_err(unavailable)?,
                    ),
                );
            }
        }
        event_ids.sort_unstable();
        let accepted = batch
            .iter()
            .filter(|h| services.get(&h.name_key).is_some_and(|s| s.1))
            .count();
        if accepted != event_ids.len() {
            return Err(StoreError::Unavailable(format!(
                "inserted {} heartbeat events for {accepted} inputs",
                event_ids.len()
            )));
        }
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
        Sql::list_heartbeats(&self.pool, q).await
    }

    async fn record_job_signal(&self, sig: &JobSignal) -> StoreResult<JobSignalOutcome> {
        Sql::record_job_signal(&self.pool, sig).await
    }

    async fn recent_run_durations(&self, service: ServiceId, limit: u32) -> StoreResult<Vec<i64>> {
        Sql::recent_run_durations(&self.pool, service, limit).await
    }

    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>> {
        Sql::list_runs(&self.pool, service, page).await
    }

    async fn create_service(&self, new: &NewService) -> StoreResult<CreateOutcome> {
        let key = new.heartbeat_name.key();
        if let Some(s) = self.find_service(&key).await? {
            return Ok(CreateOutcome::Exists(s));
        }
        // Insert unless a live service holds the name; concurrent creators of one name all see
        // the winner's row instead of a conflict.
        let sql = format!(
            "INSERT INTO services (heartbeat_name, name_key, service_name, environment, \
             interval_seconds, threshold, grace_seconds, team, priority, runbook, \
             max_duration_ms, created_at, updated_at, deadline_at, schedule, schedule_tz, \
             renotify_seconds, parent_id, alert_on_failure) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, \
                     $12 + $5 * interval '1 second', $13, $14, $15, $16, $17) \
             ON CONFLICT (name_key) WHERE deleted_at IS NULL DO NOTHING \
             RETURNING {SERVICE_COLUMNS}"
        );
        let inserted = sqlx::query(AssertSqlSafe(sql))
            .bind(new.heartbeat_name.as_str())
            .bind(&key)
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
            .bind(new.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(new.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(new.monitoring.renotify_seconds)
            .bind(new.monitoring.parent_id.map(|p| p.0))
            .bind(new.monitoring.alert_on_failure)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        if let Some(r) = inserted {
            return Ok(CreateOutcome::Created(
                Service::from_row(&r).map_err(unavailable)?,
            ));
        }
        match self.find_service(&key).await? {
            Some(s) => Ok(CreateOutcome::Exists(s)),
            // The holder was deleted between the two statements.
            None => Err(StoreError::Conflict(format!(
                "service {} changed concurrently",
                new.heartbeat_name.as_str()
            ))),
        }
    }

    async fn get_service(&self, id: ServiceId) -> StoreResult<Option<Service>> {
        Sql::get_service(&self.pool, id).await
    }

    async fn find_service(&self, key: &str) -> StoreResult<Option<Service>> {
        Sql::find_service(&self.pool, key).await
    }

    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Service>> {
        Sql::list_services(&self.pool, filter, page).await
    }

    async fn update_service(
        &self,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>> {
        Sql::update_service(&self.pool, id, patch, change).await
    }

    async fn delete_service(
        &self,
        id: ServiceId,
        actor: &Actor,
    ) -> StoreResult<Option<SnapshotId>> {
        Sql::delete_service(&self.pool, id, actor).await
    }
}
