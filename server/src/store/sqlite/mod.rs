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
mod notices;
mod playbooks;
mod runs;
mod scripts;
mod secrets;
mod services;
mod sessions;
mod snapshots;
mod teams;

use std::collections::HashMap;
use std::str::FromStr;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, QueryBuilder, Row, Sqlite};

use super::services::SERVICE_COLUMNS;
/// The statements both backends share, on SQLite.
type Sql = shared::Sql<Sqlite>;
use super::*;
use crate::domain::Timestamp;

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
    classify(e)
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
            // Readers are not replaced on a timer either (a network database's reason for a
            // lifetime does not apply to a file). With sqlx's default lifetime every reader was
            // replaced at minute 30 and each refilled its cache: RSS stepped up 3.5–6.5 MB in the
            // 10,000-service soaks, and without the lifetime it does not (docs/benchmarks.md).
            // One that stays idle (10 minutes, sqlx's default) still closes.
            let read = SqlitePoolOptions::new()
                .max_connections(n)
                .max_lifetime(None)
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
        // Nor are the readers replaced on a timer (sqlx's default: every 30 minutes); an idle
        // one still closes.
        assert_eq!(store.read.options().get_max_lifetime(), None);
        assert!(store.read.options().get_idle_timeout().is_some());
        let budget = pragma(&mut writer, "soft_heap_limit").await;
        assert_eq!(budget, 32 << 20, "SQLite's process-wide heap budget");
        // With the default pool every cache can be full at once within the budget.
        assert!((write_cache_kib + read_cache_kib) * 1024 <= budget);
        drop(readers);
        drop(writer);
        store.close().await;
    }
}
