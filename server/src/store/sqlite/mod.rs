//! The embedded SQLite store: Medic's zero-setup default.
//!
//! WAL journal, `synchronous=FULL` (a commit is on disk before we acknowledge), foreign keys on.
//! Writes go through a pool of exactly one connection — SQLite has one writer anyway, and a
//! single writer connection never meets `SQLITE_BUSY` — while reads use their own pool.
//! Timestamps are stored as INTEGER milliseconds since the epoch.
//!
//! SQLite is for one server process. Several processes on one file would each run a monitor;
//! multi-replica deployments need PostgreSQL.

mod agents;
mod alerting;
mod runs;
mod scripts;
mod teams;

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, Transaction};

use super::sql::escape_like;
use super::*;
use crate::domain::run::{SignalStep, run_duration_ms, signal_heartbeat_status, signal_step};
use crate::domain::service::name_key;
use crate::domain::{Priority, ServiceState, SnapshotAction, Timestamp};

/// Bound parameters per statement when batching (SQLite allows 32,766).
const SQLITE_CHUNK: usize = 800;

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    max_read: u32,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_millis)
}

fn ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::millis)
}

fn decode<T>(what: &str, v: Option<T>) -> Result<T, sqlx::Error> {
    v.ok_or_else(|| sqlx::Error::Decode(format!("invalid {what} in database").into()))
}

const SERVICE_COLUMNS: &str = "id, heartbeat_name, service_name, environment, active, \
    interval_seconds, threshold, grace_seconds, team, priority, runbook, state, muted_at, \
    muted_until, mute_reason, max_duration_ms, last_heartbeat_at, created_at, updated_at, \
    schedule, schedule_tz, renotify_seconds, parent_id, alert_on_failure";

fn service_from_row(r: &SqliteRow) -> Result<Service, sqlx::Error> {
    let muted_at: Option<i64> = r.try_get("muted_at")?;
    Ok(Service {
        id: ServiceId(r.try_get("id")?),
        heartbeat_name: r.try_get("heartbeat_name")?,
        service_name: r.try_get("service_name")?,
        environment: r.try_get("environment")?,
        active: r.try_get::<i64, _>("active")? != 0,
        interval_seconds: r.try_get("interval_seconds")?,
        threshold: r.try_get("threshold")?,
        grace_seconds: r.try_get("grace_seconds")?,
        team: r.try_get("team")?,
        priority: decode("priority", Priority::parse(r.try_get("priority")?))?,
        runbook: r.try_get("runbook")?,
        state: decode("state", ServiceState::parse(r.try_get("state")?))?,
        mute: match muted_at {
            Some(at) => Some(Mute {
                at: Timestamp::from_millis(at),
                until: ts(r.try_get("muted_until")?),
                reason: r.try_get("mute_reason")?,
            }),
            None => None,
        },
        max_duration_ms: r.try_get("max_duration_ms")?,
        last_heartbeat_at: ts(r.try_get("last_heartbeat_at")?),
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        updated_at: Timestamp::from_millis(r.try_get("updated_at")?),
        monitoring: Monitoring {
            schedule: schedule_from(r.try_get("schedule")?, r.try_get("schedule_tz")?),
            renotify_seconds: r.try_get("renotify_seconds")?,
            parent_id: r.try_get::<Option<i64>, _>("parent_id")?.map(ServiceId),
            alert_on_failure: r.try_get::<i64, _>("alert_on_failure")? != 0,
        },
    })
}

fn schedule_from(cron: Option<String>, tz: Option<String>) -> Option<ScheduleSpec> {
    cron.map(|cron| ScheduleSpec {
        cron,
        timezone: tz.unwrap_or_else(|| "UTC".to_owned()),
    })
}

fn run_from_row(r: &SqliteRow) -> Result<JobRun, sqlx::Error> {
    Ok(JobRun {
        id: r.try_get("id")?,
        service_id: ServiceId(r.try_get("service_id")?),
        run_id: r.try_get("run_id")?,
        status: decode("run status", RunStatus::parse(r.try_get("status")?))?,
        started_at: ts(r.try_get("started_at")?),
        finished_at: ts(r.try_get("finished_at")?),
        duration_ms: r.try_get("duration_ms")?,
        exit_code: r.try_get("exit_code")?,
        body: r.try_get("body")?,
        body_truncated: r.try_get::<i64, _>("body_truncated")? != 0,
    })
}

fn alert_from_row(r: &SqliteRow) -> Result<Alert, sqlx::Error> {
    Ok(Alert {
        alert_id: r.try_get("id")?,
        service_id: ServiceId(r.try_get("service_id")?),
        kind: decode("alert kind", AlertKind::parse(r.try_get("kind")?))?,
        alert_name: r.try_get("name")?,
        state: decode("alert state", AlertState::parse(r.try_get("state")?))?,
        dedup_key: r.try_get("dedup_key")?,
        external_reference_id: r.try_get("external_reference_id")?,
        alert_cycle: r.try_get("alert_cycle")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        acknowledged_at: ts(r.try_get("acknowledged_at")?),
        resolved_at: ts(r.try_get("resolved_at")?),
        details: AlertDetails {
            priority: r
                .try_get::<Option<String>, _>("priority")?
                .and_then(|p| Priority::parse(&p)),
            team: r.try_get("team")?,
            down_since: ts(r.try_get("down_since")?),
            last_notified_at: ts(r.try_get("last_notified_at")?),
            acknowledged_by: r.try_get("acknowledged_by")?,
            resolved_by: r.try_get("resolved_by")?,
            resolve_reason: r.try_get("resolve_reason")?,
            run_id: r.try_get("run_id")?,
            summary: r.try_get("summary")?,
        },
    })
}

fn snapshot_from_row(r: &SqliteRow) -> Result<Snapshot, sqlx::Error> {
    let data: String = r.try_get("snapshot_data")?;
    Ok(Snapshot {
        snapshot_id: SnapshotId(r.try_get("id")?),
        service_id: ServiceId(r.try_get("service_id")?),
        action_type: decode("action", SnapshotAction::parse(r.try_get("action_type")?))?,
        snapshot_data: serde_json::from_str(&data).map_err(|e| sqlx::Error::Decode(e.into()))?,
        actor: r.try_get("actor")?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        restored_at: ts(r.try_get("restored_at")?),
        restored_by: r.try_get("restored_by")?,
    })
}

fn api_key_from_row(r: &SqliteRow) -> Result<ApiKeyRecord, sqlx::Error> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiKeyRecord {
        id: ApiKeyId(r.try_get("id")?),
        name: r.try_get("name")?,
        digest: r.try_get("digest")?,
        scopes: Scopes::parse_list(&scopes).map_err(|e| sqlx::Error::Decode(e.into()))?,
        created_at: Timestamp::from_millis(r.try_get("created_at")?),
        expires_at: ts(r.try_get("expires_at")?),
        revoked_at: ts(r.try_get("revoked_at")?),
        rate_limit_per_minute: r
            .try_get::<Option<i64>, _>("rate_limit_per_minute")?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        created_by: r.try_get("created_by")?,
    })
}

fn audit_from_row(r: &SqliteRow) -> Result<AuditEntry, sqlx::Error> {
    let details: String = r.try_get("details")?;
    Ok(AuditEntry {
        id: r.try_get("id")?,
        action_type: r.try_get("action_type")?,
        actor: r.try_get("actor")?,
        service_id: r.try_get::<Option<i64>, _>("service_id")?.map(ServiceId),
        execution_id: r.try_get("execution_id")?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        timestamp: Timestamp::from_millis(r.try_get("created_at")?),
    })
}

use crate::domain::Scopes;

impl SqliteStore {
    pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Self> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-16000");
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(base.clone())
            .await
            .map_err(unavailable)?;
        let (read, max_read) = if in_memory {
            // A private in-memory database exists only on its one connection.
            (write.clone(), 1)
        } else {
            let n = opts.max_connections.max(1);
            let read = SqlitePoolOptions::new()
                .max_connections(n)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(base.read_only(true))
                .await
                .map_err(unavailable)?;
            (read, n)
        };
        Ok(Self {
            write,
            read,
            max_read,
        })
    }

    async fn service_in_tx(
        tx: &mut Transaction<'_, Sqlite>,
        id: ServiceId,
    ) -> Result<Option<Service>, sqlx::Error> {
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ? AND deleted_at IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| service_from_row(&r))
            .transpose()
    }

    async fn insert_snapshot(
        tx: &mut Transaction<'_, Sqlite>,
        service: &Service,
        action: SnapshotAction,
        actor: &str,
        at: Timestamp,
    ) -> Result<SnapshotId, sqlx::Error> {
        let data = serde_json::to_string(service).map_err(|e| sqlx::Error::Encode(e.into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO snapshots (service_id, action_type, snapshot_data, actor, created_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(service.id.0)
        .bind(action.as_str())
        .bind(data)
        .bind(actor)
        .bind(at.millis())
        .fetch_one(&mut **tx)
        .await?;
        Ok(SnapshotId(id))
    }

    /// Writes every mutable column of `s` (used by update and restore).
    async fn write_service(
        tx: &mut Transaction<'_, Sqlite>,
        s: &Service,
        undelete: bool,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "UPDATE services SET heartbeat_name = ?, name_key = ?, service_name = ?, \
             environment = ?, active = ?, interval_seconds = ?, threshold = ?, grace_seconds = ?, \
             team = ?, priority = ?, runbook = ?, state = ?, muted_at = ?, muted_until = ?, \
             mute_reason = ?, max_duration_ms = ?, updated_at = ?, deadline_at = ?, schedule = ?, \
             schedule_tz = ?, renotify_seconds = ?, parent_id = ?, alert_on_failure = ?{} WHERE id = ?",
            if undelete { ", deleted_at = NULL" } else { "" }
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&s.heartbeat_name)
            .bind(name_key(&s.heartbeat_name))
            .bind(&s.service_name)
            .bind(&s.environment)
            .bind(i64::from(s.active))
            .bind(s.interval_seconds)
            .bind(s.threshold)
            .bind(s.grace_seconds)
            .bind(&s.team)
            .bind(s.priority.as_str())
            .bind(&s.runbook)
            .bind(s.state.as_str())
            .bind(s.mute.as_ref().map(|m| m.at.millis()))
            .bind(s.mute.as_ref().and_then(|m| ms(m.until)))
            .bind(s.mute.as_ref().and_then(|m| m.reason.clone()))
            .bind(s.max_duration_ms)
            .bind(s.updated_at.millis())
            .bind(s.updated_at.millis())
            .bind(s.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(s.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(s.monitoring.renotify_seconds)
            .bind(s.monitoring.parent_id.map(|p| p.0))
            .bind(i64::from(s.monitoring.alert_on_failure))
            .bind(s.id.0)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

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

fn push_snapshot_filter(qb: &mut QueryBuilder<Sqlite>, f: &SnapshotFilter) {
    qb.push(" WHERE 1 = 1");
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = f.action_type {
        qb.push(" AND action_type = ").push_bind(v.as_str());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(v.millis());
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(v.millis());
    }
}

/// Appends an audit entry on `conn` (a pooled connection or an open transaction).
async fn insert_audit(conn: &mut sqlx::SqliteConnection, e: &NewAuditEntry) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (action_type, actor, service_id, execution_id, details, \
         created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&e.action_type)
    .bind(&e.actor)
    .bind(e.service_id.map(|s| s.0))
    .bind(e.execution_id)
    .bind(e.details.to_string())
    .bind(e.at.millis())
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

fn push_audit_filter(qb: &mut QueryBuilder<Sqlite>, f: &AuditFilter) {
    qb.push(" WHERE 1 = 1");
    if let Some(v) = f.execution_id {
        qb.push(" AND execution_id = ").push_bind(v);
    }
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = &f.action_type {
        qb.push(" AND action_type = ").push_bind(v.clone());
    }
    if let Some(v) = &f.actor {
        qb.push(" AND actor = ").push_bind(v.clone());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(v.millis());
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(v.millis());
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.write)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.read)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.write.size() + self.read.size();
        let idle = (self.write.num_idle() + self.read.num_idle()) as u32;
        PoolStats {
            size,
            idle: idle.min(size),
            max: 1 + self.max_read,
        }
    }

    async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

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
                    .push_bind(h.received_at.millis());
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
            .map(|r| {
                Ok(HeartbeatRow {
                    heartbeat_id: r.try_get(0)?,
                    service_id: ServiceId(r.try_get(1)?),
                    heartbeat_name: r.try_get(2)?,
                    service_name: r.try_get(3)?,
                    status: r.try_get(4)?,
                    run_id: r.try_get(5)?,
                    time: Timestamp::from_millis(r.try_get(6)?),
                    team: r.try_get(7)?,
                    priority: decode("priority", Priority::parse(r.try_get(8)?))?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
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
                sqlx::query("SELECT * FROM job_runs WHERE service_id = ? AND run_id = ?")
                    .bind(service.id.0)
                    .bind(run_id)
                    .fetch_optional(&mut *tx)
                    .await
            }
            (None, SignalKind::Start) => Ok(None),
            (None, _) => {
                sqlx::query(
                    "SELECT * FROM job_runs WHERE service_id = ? AND status = 'running' \
                     ORDER BY started_at DESC, id DESC LIMIT 1",
                )
                .bind(service.id.0)
                .fetch_optional(&mut *tx)
                .await
            }
        }
        .map_err(unavailable)?;
        let existing = existing
            .map(|r| run_from_row(&r))
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
                     body_truncated) VALUES (?, ?, 'running', ?, ?, ?) RETURNING *",
                )
                .bind(service.id.0)
                .bind(run_id)
                .bind(at)
                .bind(&sig.body)
                .bind(i64::from(sig.body_truncated))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                run_from_row(&r).map_err(unavailable)?
            }
            SignalStep::Finish(run, finished_status) => {
                let duration = run_duration_ms(run.started_at, sig.at);
                let r = sqlx::query(
                    "UPDATE job_runs SET status = ?, finished_at = ?, duration_ms = ?, \
                     exit_code = ?, body = coalesce(?, body), body_truncated = ? \
                     WHERE id = ? RETURNING *",
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
                run_from_row(&r).map_err(unavailable)?
            }
            SignalStep::RecordFinished(finished_status) => {
                let run_id = sig
                    .run_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let r = sqlx::query(
                    "INSERT INTO job_runs (service_id, run_id, status, finished_at, exit_code, \
                     body, body_truncated) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
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
                run_from_row(&r).map_err(unavailable)?
            }
        };
        let status = signal_heartbeat_status(sig.kind, sig.exit_code);
        sqlx::query(
            "INSERT INTO heartbeat_events (service_id, status, run_id, received_at) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(service.id.0)
        .bind(status)
        .bind(&run_row.run_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "UPDATE services SET last_heartbeat_at = max(coalesce(last_heartbeat_at, 0), ?1), \
             deadline_at = min(coalesce(deadline_at, ?1), ?1) WHERE id = ?2",
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
            "SELECT duration_ms FROM job_runs WHERE service_id = ? AND finished_at IS NOT NULL \
             AND duration_ms IS NOT NULL ORDER BY finished_at DESC, id DESC LIMIT ?",
        )
        .bind(service.0)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)
    }

    async fn list_runs(&self, service: ServiceId, page: PageRequest) -> StoreResult<Page<JobRun>> {
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs WHERE service_id = ?")
            .bind(service.0)
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let rows = sqlx::query(
            "SELECT * FROM job_runs WHERE service_id = ? \
             ORDER BY coalesce(started_at, finished_at) DESC, id DESC LIMIT ? OFFSET ?",
        )
        .bind(service.0)
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .fetch_all(&self.read)
        .await
        .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(run_from_row)
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
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name_key = ? AND deleted_at IS NULL"
        );
        if let Some(r) = sqlx::query(AssertSqlSafe(sql))
            .bind(new.heartbeat_name.key())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        {
            return Ok(CreateOutcome::Exists(
                service_from_row(&r).map_err(unavailable)?,
            ));
        }
        let sql = format!(
            "INSERT INTO services (heartbeat_name, name_key, service_name, environment, \
             interval_seconds, threshold, grace_seconds, team, priority, runbook, \
             max_duration_ms, created_at, updated_at, deadline_at, schedule, schedule_tz, \
             renotify_seconds, parent_id, alert_on_failure) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? + ? * 1000, ?, ?, ?, ?, ?) \
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
            .bind(new.at.millis())
            .bind(new.at.millis())
            .bind(new.at.millis())
            .bind(new.interval_seconds)
            .bind(new.monitoring.schedule.as_ref().map(|x| x.cron.clone()))
            .bind(new.monitoring.schedule.as_ref().map(|x| x.timezone.clone()))
            .bind(new.monitoring.renotify_seconds)
            .bind(new.monitoring.parent_id.map(|p| p.0))
            .bind(i64::from(new.monitoring.alert_on_failure))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let s = service_from_row(&r).map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(CreateOutcome::Created(s))
    }

    async fn get_service(&self, id: ServiceId) -> StoreResult<Option<Service>> {
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ? AND deleted_at IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| service_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn find_service(&self, key: &str) -> StoreResult<Option<Service>> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE name_key = ? AND deleted_at IS NULL"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(key)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| service_from_row(&r))
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
            .map(service_from_row)
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

    async fn delete_service(&self, id: ServiceId, actor: &str) -> StoreResult<Option<SnapshotId>> {
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
        sqlx::query("UPDATE services SET deleted_at = ?, updated_at = ? WHERE id = ?")
            .bind(now.millis())
            .bind(now.millis())
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(snap))
    }

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
            .map(snapshot_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>> {
        sqlx::query("SELECT * FROM snapshots WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| snapshot_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn restore_snapshot(
        &self,
        id: SnapshotId,
        actor: &str,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let Some(row) = sqlx::query("SELECT * FROM snapshots WHERE id = ?")
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(RestoreOutcome::NotFound);
        };
        let snap = snapshot_from_row(&row).map_err(unavailable)?;
        if snap.restored_at.is_some() {
            return Ok(RestoreOutcome::AlreadyRestored);
        }
        let now = Timestamp::now();
        let key = name_key(&snap.snapshot_data.heartbeat_name);
        let holder: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM services WHERE name_key = ? AND deleted_at IS NULL AND id <> ?",
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
        let sql = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = ?");
        let current = sqlx::query(AssertSqlSafe(sql))
            .bind(snap.service_id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .map(|r| service_from_row(&r))
            .transpose()
            .map_err(unavailable)?;
        let Some(current) = current else {
            return Ok(RestoreOutcome::NotFound);
        };
        Self::insert_snapshot(&mut tx, &current, SnapshotAction::Edit, actor, now)
            .await
            .map_err(unavailable)?;
        let mut restored = snap.snapshot_data.clone();
        restored.id = snap.service_id;
        restored.updated_at = now;
        // Observations are facts, not configuration: keep the newest.
        restored.last_heartbeat_at = current.last_heartbeat_at;
        restored.state = current.state;
        Self::write_service(&mut tx, &restored, true)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE snapshots SET restored_at = ?, restored_by = ? WHERE id = ?")
            .bind(now.millis())
            .bind(actor)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, &entry(&restored)).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RestoreOutcome::Restored(restored))
    }

    async fn open_alert(&self, new: &NewAlert) -> StoreResult<Alert> {
        let r = sqlx::query(
            "INSERT INTO alerts (service_id, kind, name, dedup_key, created_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(new.service_id.0)
        .bind(new.kind.as_str())
        .bind(&new.name)
        .bind(&new.dedup_key)
        .bind(new.at.millis())
        .fetch_one(&self.write)
        .await
        .map_err(unavailable)?;
        alert_from_row(&r).map_err(unavailable)
    }

    async fn list_alerts(&self, active: Option<bool>, limit: u32) -> StoreResult<Vec<Alert>> {
        let filter = match active {
            None => "",
            Some(true) => " WHERE state <> 'resolved'",
            Some(false) => " WHERE state = 'resolved'",
        };
        let sql = format!("SELECT * FROM alerts{filter} ORDER BY created_at DESC, id DESC LIMIT ?");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(alert_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn get_alert(&self, id: i64) -> StoreResult<Option<Alert>> {
        self.get_alert_impl(id).await
    }

    async fn list_alerts_filtered(
        &self,
        filter: &AlertFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Alert>> {
        self.list_alerts_filtered_impl(filter, page).await
    }

    async fn acknowledge_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        self.change_alert_impl(id, actor, at, false, audit).await
    }

    async fn resolve_alert(
        &self,
        id: i64,
        actor: &str,
        at: Timestamp,
        audit: Option<AuditWith<'_, Alert>>,
    ) -> StoreResult<AlertChange> {
        self.change_alert_impl(id, actor, at, true, audit).await
    }

    async fn open_alert_counts(&self) -> StoreResult<OpenAlertCounts> {
        self.open_alert_counts_impl().await
    }

    async fn monitor_pass(
        &self,
        now: Timestamp,
        limit: u32,
        judge: &Judge<'_>,
    ) -> StoreResult<PassReport> {
        self.monitor_pass_impl(now, limit, judge).await
    }

    async fn next_deadline(&self) -> StoreResult<Option<Timestamp>> {
        self.next_deadline_impl().await
    }

    async fn claim_deliveries(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        self.claim_deliveries_impl(now, lease_until, limit).await
    }

    async fn finish_delivery(&self, id: i64, result: &DeliveryResult) -> StoreResult<()> {
        self.finish_delivery_impl(id, result).await
    }

    async fn list_deliveries(
        &self,
        target: TargetId,
        page: PageRequest,
    ) -> StoreResult<Page<DeliveryRecord>> {
        self.list_deliveries_impl(target, page).await
    }

    async fn next_delivery_at(&self) -> StoreResult<Option<Timestamp>> {
        self.next_delivery_at_impl().await
    }

    async fn purge_batch(
        &self,
        table: PurgeTable,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let mut n = 0;
        for sql in table.statements() {
            n = sqlx::query(AssertSqlSafe(*sql))
                .bind(before.millis())
                .bind(i64::from(limit))
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(n)
    }

    async fn create_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyRecord> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let r = sqlx::query(
            "INSERT INTO api_keys (id, name, digest, scopes, created_at, expires_at, \
             rate_limit_per_minute, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
        )
        .bind(&key.id.0)
        .bind(&key.name)
        .bind(key.digest.as_slice())
        .bind(key.scopes.to_list_string())
        .bind(key.created_at.millis())
        .bind(ms(key.expires_at))
        .bind(key.rate_limit_per_minute.map(i64::from))
        .bind(&key.created_by)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let Some(e) = &key.audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        api_key_from_row(&r).map_err(unavailable)
    }

    async fn get_api_key(&self, id: &ApiKeyId) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(&id.0)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?
            .map(|r| api_key_from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(api_key_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)
    }

    async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(at.millis())
                .bind(&id.0)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        let revoked = done.rows_affected() == 1;
        if revoked && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }

    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        let mut conn = self.write.acquire().await.map_err(unavailable)?;
        insert_audit(&mut conn, e).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM audit_log");
        push_audit_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM audit_log");
        push_audit_filter(&mut qb, filter);
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
            .map(audit_from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }

    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team> {
        self.create_team_impl(new, audit).await
    }

    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>> {
        self.get_team_impl(id).await
    }

    async fn find_team(&self, key: &str) -> StoreResult<Option<Team>> {
        self.find_team_impl(key).await
    }

    async fn list_teams(&self) -> StoreResult<Vec<Team>> {
        self.list_teams_impl().await
    }

    async fn update_team(
        &self,
        id: TeamId,
        patch: &TeamPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>> {
        self.update_team_impl(id, patch, at, audit).await
    }

    async fn delete_team(&self, id: TeamId, audit: Option<&NewAuditEntry>) -> StoreResult<bool> {
        self.delete_team_impl(id, audit).await
    }

    async fn create_target(
        &self,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget> {
        self.create_target_impl(new, audit).await
    }

    async fn get_target(&self, id: TargetId) -> StoreResult<Option<NotificationTarget>> {
        self.get_target_impl(id).await
    }

    async fn list_targets(&self, filter: &TargetFilter) -> StoreResult<Vec<NotificationTarget>> {
        self.list_targets_impl(filter).await
    }

    async fn update_target(
        &self,
        id: TargetId,
        patch: &TargetPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>> {
        self.update_target_impl(id, patch, at, audit).await
    }

    async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.delete_target_impl(id, audit).await
    }

    async fn create_window(
        &self,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord> {
        self.create_window_impl(new, audit).await
    }

    async fn get_window(&self, id: WindowId) -> StoreResult<Option<MaintenanceWindowRecord>> {
        self.get_window_impl(id).await
    }

    async fn list_windows(
        &self,
        filter: &WindowFilter,
    ) -> StoreResult<Vec<MaintenanceWindowRecord>> {
        self.list_windows_impl(filter).await
    }

    async fn delete_window(
        &self,
        id: WindowId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.delete_window_impl(id, audit).await
    }

    async fn agent_connected(&self, conn: &AgentConnection) -> StoreResult<AgentConnectOutcome> {
        self.agent_connected_impl(conn).await
    }

    async fn agent_seen(&self, id: &str, session_id: &str, at: Timestamp) -> StoreResult<bool> {
        self.agent_seen_impl(id, session_id, at).await
    }

    async fn agent_disconnected(
        &self,
        id: &str,
        session_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        self.agent_disconnected_impl(id, session_id, at).await
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        self.get_agent_impl(id).await
    }

    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>> {
        self.list_agents_impl(filter, page).await
    }

    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        self.revoke_agent_impl(id, by, at, audit).await
    }

    async fn create_agent_runs(&self, new: &[NewAgentRun]) -> StoreResult<Vec<AgentRun>> {
        self.create_agent_runs_impl(new).await
    }

    async fn get_agent_run(&self, run_id: &str) -> StoreResult<Option<AgentRun>> {
        self.get_agent_run_impl(run_id).await
    }

    async fn list_agent_runs(
        &self,
        filter: &RunFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRun>> {
        self.list_agent_runs_impl(filter, page).await
    }

    async fn unaccepted_agent_runs(&self, agent_id: &str) -> StoreResult<Vec<AgentRun>> {
        self.unaccepted_agent_runs_impl(agent_id).await
    }

    async fn claim_agent_runs(
        &self,
        agent_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<Vec<ClaimedRun>> {
        self.claim_agent_runs_impl(agent_id, at, lost_base).await
    }

    async fn requeue_agent_run(&self, agent_id: &str, run_id: &str) -> StoreResult<bool> {
        self.requeue_agent_run_impl(agent_id, run_id).await
    }

    async fn agent_run_sent(
        &self,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        self.agent_run_sent_impl(run_id, at, lost_base).await
    }

    async fn agent_run_started(
        &self,
        agent_id: &str,
        run_id: &str,
        at: Timestamp,
        lost_base: Timestamp,
    ) -> StoreResult<bool> {
        self.agent_run_started_impl(agent_id, run_id, at, lost_base)
            .await
    }

    async fn finish_agent_run(
        &self,
        agent_id: &str,
        run_id: &str,
        end: &AgentRunEnd,
    ) -> StoreResult<Option<RunFinish>> {
        self.finish_agent_run_impl(agent_id, run_id, end).await
    }

    async fn orphan_agent_runs(
        &self,
        agent_id: &str,
        still_running: &[String],
        lost_after: Timestamp,
    ) -> StoreResult<u64> {
        self.orphan_agent_runs_impl(agent_id, still_running, lost_after)
            .await
    }

    async fn sweep_agent_runs(&self, now: Timestamp) -> StoreResult<RunSweep> {
        self.sweep_agent_runs_impl(now).await
    }

    async fn agents_with_queued_runs(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        self.agents_with_queued_runs_impl(now).await
    }

    async fn register_script_version(
        &self,
        new: &NewScriptVersion,
    ) -> StoreResult<RegisterOutcome> {
        self.register_script_version_impl(new).await
    }

    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>> {
        self.get_script_impl(id).await
    }

    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>> {
        self.script_id_by_name_impl(name).await
    }

    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>> {
        self.list_scripts_impl(filter, page).await
    }

    async fn get_script_version(
        &self,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>> {
        self.get_script_version_impl(id, version).await
    }

    async fn decide_script_version(
        &self,
        version_id: i64,
        decision: &ScriptDecision,
    ) -> StoreResult<DecideOutcome> {
        self.decide_script_version_impl(version_id, decision).await
    }
}
