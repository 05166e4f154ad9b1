//! Services, heartbeats and job signals, on both backends.

use sqlx::{AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, Pool, QueryBuilder, Type};

use super::{Db, Sql, unavailable};
use crate::domain::run::{SignalStep, run_duration_ms, signal_heartbeat_status, signal_step};
use crate::domain::service::name_key;
use crate::domain::{ServiceId, SnapshotAction, SnapshotId, Timestamp};
use crate::store::services::SERVICE_COLUMNS;
use crate::store::{
    Actor, ChangeMeta, HeartbeatQuery, HeartbeatRow, JobRun, JobSignal, JobSignalOutcome, Page,
    PageRequest, Service, ServiceFilter, ServicePatch, SignalKind, StoreResult, records,
};

/// The columns a [`JobRun`] is read from.
pub(crate) const RUN_COLUMNS: &str = "id, service_id, run_id, status, started_at, finished_at, \
    duration_ms, exit_code, body, body_truncated";

/// The statements of this area that differ between the backends.
pub(crate) trait ServiceSql: Db {
    /// Moves a service's `last_heartbeat_at` forward to `$1` and its deadline back to `$1` at
    /// the latest (service `$2`), after a job signal.
    const TOUCH_AFTER_SIGNAL: &'static str;
}

fn push_service_filter<DB: Db>(qb: &mut QueryBuilder<DB>, f: &ServiceFilter)
where
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
{
    let c = DB::COLLATE_C;
    qb.push(" WHERE deleted_at IS NULL");
    if let Some(v) = &f.name_contains {
        let pattern = format!("%{}%", crate::store::sql::escape_like(&name_key(v)));
        qb.push(" AND name_key LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(v) = &f.service_name {
        qb.push(format!(" AND lower(service_name{c}) = lower("))
            .push_bind(v.clone())
            .push(format!("{c})"));
    }
    if let Some(v) = &f.team {
        qb.push(format!(" AND lower(team{c}) = lower("))
            .push_bind(v.clone())
            .push(format!("{c})"));
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
    /// The live service `id`, locked for the rest of the transaction on PostgreSQL.
    pub(crate) async fn lock_service(
        conn: &mut DB::Connection,
        id: ServiceId,
    ) -> StoreResult<Option<Service>> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL{}",
            DB::FOR_NO_KEY_UPDATE
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(unavailable)
    }

    /// Records the before-image of `service`.
    pub(crate) async fn insert_snapshot(
        conn: &mut DB::Connection,
        service: &Service,
        action: SnapshotAction,
        actor: &Actor,
        at: Timestamp,
    ) -> StoreResult<SnapshotId> {
        let data = serde_json::to_string(&records::ServiceRecord::from(service))
            .map_err(|e| unavailable(sqlx::Error::Encode(e.into())))?;
        let sql = format!(
            "INSERT INTO snapshots (service_id, action_type, snapshot_data, actor, created_at, \
             on_behalf_of) VALUES ($1, $2, $3{}, $4, $5, $6) RETURNING id",
            DB::JSONB
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(service.id)
            .bind(action)
            .bind(data)
            .bind(&actor.name)
            .bind(at)
            .bind(&actor.on_behalf_of)
            .fetch_one(conn)
            .await
            .map_err(unavailable)
    }

    /// Writes every mutable column of `s` (used by update and restore).
    pub(crate) async fn write_service(
        conn: &mut DB::Connection,
        s: &Service,
        undelete: bool,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE services SET heartbeat_name = $1, name_key = $2, service_name = $3, \
             environment = $4, active = $5, interval_seconds = $6, threshold = $7, \
             grace_seconds = $8, team = $9, priority = $10, runbook = $11, state = $12, \
             muted_at = $13, muted_until = $14, mute_reason = $15, max_duration_ms = $16, \
             updated_at = $17, deadline_at = $17, schedule = $19, schedule_tz = $20, \
             renotify_seconds = $21, parent_id = $22, alert_on_failure = $23{} WHERE id = $18",
            if undelete { ", deleted_at = NULL" } else { "" }
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&s.heartbeat_name)
            .bind(name_key(&s.heartbeat_name))
            .bind(&s.service_name)
            .bind(&s.environment)
            .bind(s.active)
            .bind(s.interval_seconds)
            .bind(s.threshold)
            .bind(s.grace_seconds)
            .bind(&s.team)
            .bind(s.priority)
            .bind(&s.runbook)
            .bind(s.state)
            .bind(s.mute.as_ref().map(|m| m.at))
            .bind(s.mute.as_ref().and_then(|m| m.until))
            .bind(s.mute.as_ref().and_then(|m| m.reason.clone()))
            .bind(s.max_duration_ms)
            .bind(s.updated_at)
            .bind(s.id)
            .bind(s.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(s.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(s.monitoring.renotify_seconds)
            .bind(s.monitoring.parent_id.map(|p| p.0))
            .bind(s.monitoring.alert_on_failure)
            .execute(conn)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn list_heartbeats(
        pool: &Pool<DB>,
        q: &HeartbeatQuery,
    ) -> StoreResult<Vec<HeartbeatRow>> {
        let c = DB::COLLATE_C;
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT e.id, e.service_id, s.heartbeat_name, s.service_name, e.status, e.run_id, \
             e.received_at, s.team, s.priority FROM heartbeat_events e \
             JOIN services s ON s.id = e.service_id WHERE 1 = 1",
        );
        if let Some(id) = q.service_id {
            qb.push(" AND e.service_id = ").push_bind(id);
        }
        if let Some(k) = &q.name_key {
            qb.push(" AND s.name_key = ").push_bind(k.clone());
        }
        if let Some(n) = &q.service_name {
            qb.push(format!(" AND lower(s.service_name{c}) = lower("))
                .push_bind(n.clone())
                .push(format!("{c})"));
        }
        qb.push(" ORDER BY e.received_at DESC, e.id DESC LIMIT ")
            .push_bind(i64::from(q.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(q.offset));
        qb.build_query_as()
            .fetch_all(pool)
            .await
            .map_err(unavailable)
    }

    /// Records a job signal: the run it starts or ends (the rule is `domain::run::signal_step`),
    /// a heartbeat event, and the service's last heartbeat.
    pub(crate) async fn record_job_signal(
        pool: &Pool<DB>,
        sig: &JobSignal,
    ) -> StoreResult<JobSignalOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        // Locking the service serialises signals for one service across replicas.
        let Some(service) = Self::lock_service(&mut tx, sig.service_id).await? else {
            return Ok(JobSignalOutcome::UnknownService);
        };
        if !service.active {
            return Ok(JobSignalOutcome::Inactive {
                heartbeat_name: service.heartbeat_name,
            });
        }
        let lock = DB::FOR_UPDATE;
        let existing: Option<JobRun> = match (&sig.run_id, sig.kind) {
            (Some(run_id), _) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM job_runs WHERE service_id = $1 AND run_id = $2{lock}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(service.id)
                    .bind(run_id)
                    .fetch_optional(&mut *tx)
                    .await
            }
            (None, SignalKind::Start) => Ok(None),
            (None, _) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM job_runs WHERE service_id = $1 \
                     AND status = 'running' ORDER BY started_at DESC NULLS LAST, id DESC \
                     LIMIT 1{lock}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(service.id)
                    .fetch_optional(&mut *tx)
                    .await
            }
        }
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
        let run_row: JobRun = match signal_step(sig.kind, sig.exit_code, existing) {
            SignalStep::Keep(run) => run,
            SignalStep::Start => {
                let sql = format!(
                    "INSERT INTO job_runs (service_id, run_id, status, started_at, body, \
                     body_truncated) VALUES ($1, $2, 'running', $3, $4, $5) \
                     RETURNING {RUN_COLUMNS}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(service.id)
                    .bind(new_run_id())
                    .bind(sig.at)
                    .bind(&sig.body)
                    .bind(sig.body_truncated)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?
            }
            SignalStep::Finish(run, finished_status) => {
                let duration = run_duration_ms(run.started_at, sig.at);
                let sql = format!(
                    "UPDATE job_runs SET status = $1, finished_at = $2, duration_ms = $3, \
                     exit_code = $4, body = coalesce($5, body), body_truncated = $6 \
                     WHERE id = $7 RETURNING {RUN_COLUMNS}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(finished_status)
                    .bind(sig.at)
                    .bind(duration)
                    .bind(sig.exit_code)
                    .bind(&sig.body)
                    .bind(sig.body_truncated || run.body_truncated)
                    .bind(run.id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?
            }
            SignalStep::RecordFinished(finished_status) => {
                let sql = format!(
                    "INSERT INTO job_runs (service_id, run_id, status, finished_at, exit_code, \
                     body, body_truncated) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     RETURNING {RUN_COLUMNS}"
                );
                sqlx::query_as(AssertSqlSafe(sql))
                    .bind(service.id)
                    .bind(new_run_id())
                    .bind(finished_status)
                    .bind(sig.at)
                    .bind(sig.exit_code)
                    .bind(&sig.body)
                    .bind(sig.body_truncated)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?
            }
        };
        let status = signal_heartbeat_status(sig.kind, sig.exit_code);
        sqlx::query(
            "INSERT INTO heartbeat_events (service_id, status, run_id, received_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(service.id)
        .bind(status)
        .bind(&run_row.run_id)
        .bind(sig.at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(DB::TOUCH_AFTER_SIGNAL)
            .bind(sig.at)
            .bind(service.id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(JobSignalOutcome::Recorded {
            service: Box::new(service),
            run: run_row,
        })
    }

    pub(crate) async fn recent_run_durations(
        pool: &Pool<DB>,
        service: ServiceId,
        limit: u32,
    ) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT duration_ms FROM job_runs WHERE service_id = $1 \
             AND finished_at IS NOT NULL AND duration_ms IS NOT NULL \
             ORDER BY finished_at DESC, id DESC LIMIT $2",
        )
        .bind(service)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(unavailable)
    }

    pub(crate) async fn list_runs(
        pool: &Pool<DB>,
        service: ServiceId,
        page: PageRequest,
    ) -> StoreResult<Page<JobRun>> {
        Self::page(
            pool,
            "job_runs",
            RUN_COLUMNS,
            |qb| {
                qb.push(" WHERE service_id = ").push_bind(service);
            },
            "coalesce(started_at, finished_at) DESC NULLS LAST, id DESC",
            page,
        )
        .await
    }

    pub(crate) async fn get_service(
        pool: &Pool<DB>,
        id: ServiceId,
    ) -> StoreResult<Option<Service>> {
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL");
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn find_service(pool: &Pool<DB>, key: &str) -> StoreResult<Option<Service>> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name_key = $1 AND deleted_at IS NULL"
        );
        sqlx::query_as(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn list_services(
        pool: &Pool<DB>,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Service>> {
        Self::page(
            pool,
            "services",
            SERVICE_COLUMNS,
            |qb| push_service_filter(qb, filter),
            "id",
            page,
        )
        .await
    }

    pub(crate) async fn update_service(
        pool: &Pool<DB>,
        id: ServiceId,
        patch: &ServicePatch,
        change: &ChangeMeta,
    ) -> StoreResult<Option<Service>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let Some(before) = Self::lock_service(&mut tx, id).await? else {
            return Ok(None);
        };
        Self::insert_snapshot(&mut tx, &before, change.action, &change.actor, change.at).await?;
        let after = patch.apply(&before, change.at);
        Self::write_service(&mut tx, &after, false).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(after))
    }

    pub(crate) async fn delete_service(
        pool: &Pool<DB>,
        id: ServiceId,
        actor: &Actor,
    ) -> StoreResult<Option<SnapshotId>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let Some(before) = Self::lock_service(&mut tx, id).await? else {
            return Ok(None);
        };
        let now = Timestamp::now();
        let snap =
            Self::insert_snapshot(&mut tx, &before, SnapshotAction::Delete, actor, now).await?;
        sqlx::query("UPDATE services SET deleted_at = $1, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(snap))
    }
}
