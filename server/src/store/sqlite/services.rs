//! Services, heartbeats and job signals on SQLite.

use super::*;

fn push_service_filter(qb: &mut QueryBuilder<Sqlite>, f: &ServiceFilter) {
    qb.push(" WHERE deleted_at IS NULL");
    if let Some(v) = &f.name_contains {
        let pattern = format!("%{}%", escape_like(&name_key(v)));
        qb.push(" AND name_key LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = &f.service_name {
        qb.push(" AND lower(service_name) = lower(")
            .push_bind(v.clone())
            .push(")");
    }
    if let Some(v) = &f.team {
        qb.push(" AND lower(team) = lower(")
            .push_bind(v.clone())
            .push(")");
    }
    if let Some(v) = f.active {
        qb.push(" AND active = ").push_bind(i64::from(v));
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
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT e.id, e.service_id, s.heartbeat_name, s.service_name, e.status, e.run_id, \
             e.received_at, s.team, s.priority FROM heartbeat_events e \
             JOIN services s ON s.id = e.service_id WHERE 1 = 1",
        );
        if let Some(id) = q.service_id {
            qb.push(" AND e.service_id = ").push_bind(id.0);
        }
        if let Some(k) = &q.name_key {
            qb.push(" AND s.name_key = ").push_bind(k.clone());
        }
        if let Some(n) = &q.service_name {
            qb.push(" AND lower(s.service_name) = lower(")
                .push_bind(n.clone())
                .push(")");
        }
        qb.push(" ORDER BY e.received_at DESC, e.id DESC LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(q.offset));
        let rows = qb
            .build()
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(HeartbeatRow::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn record_job_signal(&self, sig: &JobSignal) -> StoreResult<JobSignalOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(service) = Self::service_in_tx(&mut tx, sig.service_id)
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
        let at = sig.at.millis();
        let existing: Option<SqliteRow> = match (&sig.run_id, sig.kind) {
            (Some(run_id), _) => {
                sqlx::query("SELECT * FROM job_runs WHERE service_id = $1 AND run_id = $2")
                    .bind(service.id.0)
                    .bind(run_id)
                    .fetch_optional(&mut *tx)
                    .await
            }
            (None, SignalKind::Start) => Ok(None),
            (None, _) => {
                sqlx::query(
                    "SELECT * FROM job_runs WHERE service_id = $1 AND status = 'running' \
                     ORDER BY started_at DESC, id DESC LIMIT 1",
                )
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
        let existing = existing.map(|run| {
            let status = run.status;
            (run, status)
        });
        let run_row = match signal_step(sig.kind, sig.exit_code, existing) {
            SignalStep::Keep(run) => run,
            SignalStep::Start => {
                let run_id = sig
                    .run_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let r = sqlx::query(
                    "INSERT INTO job_runs (service_id, run_id, status, started_at, body, \
                     body_truncated) VALUES ($1, $2, 'running', $3, $4, $5) RETURNING *",
                )
                .bind(service.id.0)
                .bind(run_id)
                .bind(at)
                .bind(&sig.body)
                .bind(i64::from(sig.body_truncated))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                JobRun::from_row(&r).map_err(unavailable)?
            }
            SignalStep::Finish(run, finished_status) => {
                let duration = run_duration_ms(run.started_at, sig.at);
                let r = sqlx::query(
                    "UPDATE job_runs SET status = $1, finished_at = $2, duration_ms = $3, \
                     exit_code = $4, body = coalesce($5, body), body_truncated = $6 \
                     WHERE id = $7 RETURNING *",
                )
                .bind(finished_status.as_str())
                .bind(at)
                .bind(duration)
                .bind(sig.exit_code)
                .bind(&sig.body)
                .bind(i64::from(sig.body_truncated || run.body_truncated))
                .bind(run.id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                JobRun::from_row(&r).map_err(unavailable)?
            }
            SignalStep::RecordFinished(finished_status) => {
                let run_id = sig
                    .run_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let r = sqlx::query(
                    "INSERT INTO job_runs (service_id, run_id, status, finished_at, exit_code, \
                     body, body_truncated) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                )
                .bind(service.id.0)
                .bind(run_id)
                .bind(finished_status.as_str())
                .bind(at)
                .bind(sig.exit_code)
                .bind(&sig.body)
                .bind(i64::from(sig.body_truncated))
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
            "UPDATE services SET last_heartbeat_at = max(coalesce(last_heartbeat_at, 0), $1), \
             deadline_at = min(coalesce(deadline_at, $1), $1) WHERE id = $2",
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
            "SELECT duration_ms FROM job_runs WHERE service_id = $1 AND finished_at IS NOT NULL \
             AND duration_ms IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT $2",
        )
        .bind(service.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)
    }

    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE service_id = $1")
            .bind(service.0)
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let rows = sqlx::query(
            "SELECT * FROM job_runs WHERE service_id = $1 \
             ORDER BY coalesce(started_at, finished_at) DESC, id DESC LIMIT $2 OFFSET $3",
        )
        .bind(service.0)
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(JobRun::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
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
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.read)
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
            .fetch_optional(&self.read)
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
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM services");
        push_service_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT {SERVICE_COLUMNS} FROM services"));
        push_service_filter(&mut qb, filter);
        qb.push(" ORDER BY id LIMIT ")
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
            .map(Service::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    async fn update_service(
        &self,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(before) = Self::service_in_tx(&mut tx, id)
            .await
            .map_err(unavailable)?
        else {
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(before) = Self::service_in_tx(&mut tx, id)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let snap = Self::insert_snapshot(&mut tx, &before, SnapshotAction::Delete, actor, now)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE services SET deleted_at = $1, updated_at = $2 WHERE id = $3")
            .bind(now)
            .bind(now)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(snap))
    }
}
