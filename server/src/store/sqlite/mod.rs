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
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, QueryBuilder, Row, Sqlite, Transaction};

use self::audit::insert_audit;
use super::services::SERVICE_COLUMNS;
/// The statements both backends share, on SQLite.
type Sql = shared::Sql<Sqlite>;
use super::*;
use crate::domain::Timestamp;

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
