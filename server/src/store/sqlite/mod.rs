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
mod audit;
mod keys;
mod runs;
mod scripts;
mod services;
mod snapshots;
mod teams;

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite, Transaction};

use self::audit::insert_audit;
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
}
