//! Services, heartbeats and job signals on PostgreSQL.

use super::*;

fn push_service_filter(qb: &mut QueryBuilder<Postgres>, f: &ServiceFilter) {
    qb.push(" WHERE deleted_at IS NULL");
    if let Some(v) = &f.name_contains {
        let pattern = format!("%{}%", escape_like(&name_key(v)));
        qb.push(" AND name_key LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = &f.service_name {
        qb.push(" AND lower(service_name COLLATE \"C\") = lower(")
            .push_bind(v.clone())
            .push(" COLLATE \"C\")");
    }
    if let Some(v) = &f.team {
        qb.push(" AND lower(team COLLATE \"C\") = lower(")
            .push_bind(v.clone())
            .push(" COLLATE \"C\")");
    }
    if let Some(v) = f.active {
        qb.push(" AND active = ").push_bind(v);
    }
    if let Some(v) = f.muted {
        qb.push(if v {
            " AND muted_at IS NOT NULL"
        } else {
            " AND muted_at IS NULL"
        });
    }
    if let Some(v) = f.state {
        qb.push(" AND state = ").push_bind(v.as_str());
    }
    if let Some(v) = f.priority {
        qb.push(" AND priority = ").push_bind(v.as_str());
    }
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
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT e.id, e.service_id, s.heartbeat_name, s.service_name, e.status, e.run_id, \
             e.received_at, s.team, s.priority FROM heartbeat_events e \
             JOIN services s ON s.id = e.service_id WHERE true",
        );
        if let Some(id) = q.service_id {
            qb.push(" AND e.service_id = ").push_bind(id.0);
        }
        if let Some(k) = &q.name_key {
            qb.push(" AND s.name_key = ").push_bind(k.clone());
        }
        if let Some(n) = &q.service_name {
            qb.push(" AND lower(s.service_name COLLATE \"C\") = lower(")
                .push_bind(n.clone())
                .push(" COLLATE \"C\")");
        }
        qb.push(" ORDER BY e.received_at DESC, e.id DESC LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(q.offset));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        collect(&rows, |r| HeartbeatRow::from_row(r))
    }

    async fn record_job_signal(&self, sig: &JobSignal) -> StoreResult<JobSignalOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Locking the service serialises signals for one service across replicas.
        let Some(service) = Self::lock_service(&mut tx, sig.service_id)
            .await
            .map_err(unavailable)?
        else {
            return Ok(JobSignalOutcome::UnknownService);
        };
        if !service.active {
            return Ok(JobSignalOutcome::Inactive {
                heartbeat_name: service.heartbeat_name,
            });
        }
        let at = dt(sig.at);
        let existing: Option<PgRow> = match (&sig.run_id, sig.kind) {
            (Some(run_id), _) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM job_runs WHERE service_id = $1 AND run_id = $2 \
                     FOR UPDATE"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .bind(run_id)
                    .fetch_optional(&mut *tx)
                    .await
            }
            (None, SignalKind::Start) => Ok(None),
            (None, _) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM job_runs WHERE service_id = $1 \
                     AND status = 'running' ORDER BY started_at DESC NULLS LAST, id DESC \
                     LIMIT 1 FOR UPDATE"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .fetch_optional(&mut *tx)
                    .await
            }
        }
        .map_err(unavailable)?;
        let existing = existing
            .map(|r| JobRun::from_row(&r))
            .transpose()
            .map_err(unavailable)?;
        let new_run_id = || {
            sig.run_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
        };
        let existing = existing.map(|run| {
            let status = run.status;
            (run, status)
        });
        let run_row = match signal_step(sig.kind, sig.exit_code, existing) {
            SignalStep::Keep(run) => run,
            SignalStep::Start => {
                let sql = format!(
                    "INSERT INTO job_runs (service_id, run_id, status, started_at, body, \
                     body_truncated) VALUES ($1, $2, 'running', $3, $4, $5) \
                     RETURNING {RUN_COLUMNS}"
                );
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .bind(new_run_id())
                    .bind(at)
                    .bind(&sig.body)
                    .bind(sig.body_truncated)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                JobRun::from_row(&r).map_err(unavailable)?
            }
            SignalStep::Finish(run, finished_status) => {
                let duration = run_duration_ms(run.started_at, sig.at);
                let sql = format!(
                    "UPDATE job_runs SET status = $1, finished_at = $2, duration_ms = $3, \
                     exit_code = $4, body = coalesce($5, body), body_truncated = $6 \
                     WHERE id = $7 RETURNING {RUN_COLUMNS}"
                );
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(finished_status.as_str())
                    .bind(at)
                    .bind(duration)
                    .bind(sig.exit_code)
                    .bind(&sig.body)
                    .bind(sig.body_truncated || run.body_truncated)
                    .bind(run.id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                JobRun::from_row(&r).map_err(unavailable)?
            }
            SignalStep::RecordFinished(finished_status) => {
                let sql = format!(
                    "INSERT INTO job_runs (service_id, run_id, status, finished_at, exit_code, \
                     body, body_truncated) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     RETURNING {RUN_COLUMNS}"
                );
                let r = sqlx::query(AssertSqlSafe(sql))
                    .bind(service.id.0)
                    .bind(new_run_id())
                    .bind(finished_status.as_str())
                    .bind(at)
                    .bind(sig.exit_code)
                    .bind(&sig.body)
                    .bind(sig.body_truncated)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                JobRun::from_row(&r).map_err(unavailable)?
            }
        };
        let status = signal_heartbeat_status(sig.kind, sig.exit_code);
        sqlx::query(
            "INSERT INTO heartbeat_events (service_id, status, run_id, received_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(service.id.0)
        .bind(status)
        .bind(&run_row.run_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "UPDATE services SET last_heartbeat_at = GREATEST(last_heartbeat_at, $1), \
             deadline_at = LEAST(deadline_at, $1) WHERE id = $2",
        )
        .bind(at)
        .bind(service.id.0)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(JobSignalOutcome::Recorded {
            service: Box::new(service),
            run: run_row,
        })
    }

    async fn recent_run_durations(&self, service: ServiceId, limit: u32) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT duration_ms FROM job_runs WHERE service_id = $1 \
             AND finished_at IS NOT NULL AND duration_ms IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT $2",
        )
        .bind(service.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>> {
        self.page(
            "job_runs",
            RUN_COLUMNS,
            |qb| {
                qb.push(" WHERE service_id = ").push_bind(service.0);
            },
            "coalesce(started_at, finished_at) DESC NULLS LAST, id DESC",
            page,
            |r| JobRun::from_row(r),
        )
        .await
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
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| Service::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn find_service(&self, key: &str) -> StoreResult<Option<Service>> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name_key = $1 AND deleted_at IS NULL"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| Service::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Service>> {
        self.page(
            "services",
            SERVICE_COLUMNS,
            |qb| push_service_filter(qb, filter),
            "id",
            page,
            |r| Service::from_row(r),
        )
        .await
    }

    async fn update_service(
        &self,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some(before) = Self::lock_service(&mut tx, id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        Self::insert_snapshot(&mut tx, &before, change.action, &change.actor, change.at)
            .await
            .map_err(unavailable)?;
        let after = patch.apply(&before, change.at);
        Self::write_service(&mut tx, &after, false)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(after))
    }

    async fn delete_service(
        &self,
        id: ServiceId,
        actor: &Actor,
    ) -> StoreResult<Option<SnapshotId>> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let Some(before) = Self::lock_service(&mut tx, id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let snap = Self::insert_snapshot(&mut tx, &before, SnapshotAction::Delete, actor, now)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE services SET deleted_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(snap))
    }
}
