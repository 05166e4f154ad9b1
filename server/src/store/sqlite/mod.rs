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
mod executions;
mod keys;
mod outbox;
mod playbooks;
mod runs;
mod scripts;
mod secrets;
mod services;
mod snapshots;
mod teams;

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, QueryBuilder, Row, Sqlite, Transaction};

use self::audit::insert_audit;
use super::services::SERVICE_COLUMNS;
use super::sql::escape_like;
use super::*;
use crate::domain::run::{SignalStep, run_duration_ms, signal_heartbeat_status, signal_step};
use crate::domain::service::name_key;
use crate::domain::{Priority, SnapshotAction, Timestamp};

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
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1 AND deleted_at IS NULL");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| Service::from_row(&r))
            .transpose()
    }

    async fn insert_snapshot(
        tx: &mut Transaction<'_, Sqlite>,
        service: &Service,
        action: SnapshotAction,
        actor: &Actor,
        at: Timestamp,
    ) -> Result<SnapshotId, sqlx::Error> {
        let data = serde_json::to_string(&records::ServiceRecord::from(service))
            .map_err(|e| sqlx::Error::Encode(e.into()))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO snapshots (service_id, action_type, snapshot_data, actor, created_at, \
             on_behalf_of) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(service.id.0)
        .bind(action.as_str())
        .bind(data)
        .bind(&actor.name)
        .bind(at)
        .bind(&actor.on_behalf_of)
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
            "UPDATE services SET heartbeat_name = $1, name_key = $2, service_name = $3, \
             environment = $4, active = $5, interval_seconds = $6, threshold = $7, grace_seconds = $8, \
             team = $9, priority = $10, runbook = $11, state = $12, muted_at = $13, muted_until = $14, \
             mute_reason = $15, max_duration_ms = $16, updated_at = $17, deadline_at = $18, schedule = $19, \
             schedule_tz = $20, renotify_seconds = $21, parent_id = $22, alert_on_failure = $23{} WHERE id = $24",
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
            .bind(s.updated_at)
            .bind(s.updated_at)
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
                .bind(before)
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
