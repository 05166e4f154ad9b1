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

/// Page cache of the one write connection, in KiB (`PRAGMA cache_size = -N`). Its pages stay
/// valid between its own transactions, so this is the cache that saves reads: the heartbeat
/// batches' index and table pages.
const WRITE_CACHE_KIB: i64 = 16_000;

/// Page cache of each read connection, in KiB (about 120 pages). Readers serve short indexed
/// queries, and a reader's cache is emptied whenever another connection has committed since its
/// last read (WAL), so a large one would mostly hold pages the operating system's file cache
/// holds anyway — while sixteen of them at the writer's size could grow to ~270 MB.
const READ_CACHE_KIB: i64 = 512;

/// SQLite's heap budget for the whole process, in bytes (`PRAGMA soft_heap_limit`): above it
/// every page cache reuses its own oldest pages instead of allocating more, so the total stays
/// near this figure whatever `MEDIC_DB_MAX_CONNECTIONS` is. The write cache plus sixteen read
/// caches (24 MiB) fit inside it.
const SOFT_HEAP_LIMIT_BYTES: i64 = 32 << 20;

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
            .pragma("soft_heap_limit", SOFT_HEAP_LIMIT_BYTES.to_string());
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // The writer lives as long as the store: replacing it (sqlx's default lifetime is 30
        // minutes) would throw away a full cache and build another one.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(
                base.clone()
                    .pragma("cache_size", format!("-{WRITE_CACHE_KIB}")),
            )
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
                .connect_with(
                    base.read_only(true)
                        .pragma("cache_size", format!("-{READ_CACHE_KIB}")),
                )
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

#[cfg(test)]
mod tests {
    use sqlx::SqliteConnection;

    use super::*;

    async fn pragma(conn: &mut SqliteConnection, name: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(conn)
            .await
            .expect("pragma")
    }

    /// SQLite's memory has one bound whatever the pool size: every connection's page cache is
    /// what the invariant in ARCHITECTURE.md says (a small one per reader, the larger one for the
    /// writer) and the process-wide heap budget is set.
    #[tokio::test]
    async fn every_connection_has_a_bounded_page_cache_and_the_heap_budget_is_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("memory.db").display());
        let opts = PoolOptions::default();
        let store = SqliteStore::connect(&url, &opts).await.expect("connect");
        store.migrate().await.expect("migrate");

        // Hold every read connection at once, so each one answers for itself.
        let mut readers = Vec::new();
        for _ in 0..opts.max_connections {
            readers.push(store.read.acquire().await.expect("read connection"));
        }
        assert_eq!(readers.len(), 16);
        let mut read_cache_kib = 0;
        for conn in &mut readers {
            let size = pragma(conn, "cache_size").await;
            assert_eq!(size, -READ_CACHE_KIB, "a read connection's cache_size");
            read_cache_kib += -size;
            assert_eq!(pragma(conn, "soft_heap_limit").await, 32 << 20);
        }
        let mut writer = store.write.acquire().await.expect("write connection");
        let write_cache_kib = -pragma(&mut writer, "cache_size").await;
        assert_eq!(write_cache_kib, 16_000, "the write connection's cache_size");
        assert_eq!(store.write.options().get_max_lifetime(), None);
        assert_eq!(store.write.options().get_idle_timeout(), None);
        let budget = pragma(&mut writer, "soft_heap_limit").await;
        assert_eq!(budget, 32 << 20, "SQLite's process-wide heap budget");
        // With the default pool every cache can be full at once within the budget.
        assert!((write_cache_kib + read_cache_kib) * 1024 <= budget);
        drop(readers);
        drop(writer);
        store.close().await;
    }
}
