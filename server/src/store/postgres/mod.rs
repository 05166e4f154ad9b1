//! The PostgreSQL store: for multi-replica deployments.
//!
//! Behaves exactly like the SQLite store (the conformance suite in `tests/it/store.rs` runs
//! against both); only the mechanics differ:
//!
//! - Timestamps are `timestamptz`; the server only ever writes whole milliseconds, so values
//!   round-trip exactly. Flags are `boolean`; snapshot payloads and audit details are `jsonb`
//!   (sent and read as text, cast in SQL).
//! - Case-insensitive matches of team and service name use `lower(… COLLATE "C")`, which folds
//!   ASCII only — exactly what SQLite's `lower()` does — so results do not depend on the
//!   cluster's locale. (Heartbeat names fold fully, in Rust, through `name_key`.)
//! - Several server replicas may write at once, so every read-modify-write locks what it is about
//!   to change: `FOR NO KEY UPDATE` on `services` rows (the strongest lock that still lets
//!   other transactions insert rows referencing the service — we never change a service's id)
//!   and `FOR UPDATE` on snapshots and job runs. A transaction that locks several services
//!   locks them in id order, so concurrent heartbeat batches cannot deadlock.
//! - [`Store::record_heartbeats`] takes a constant number of round trips whatever the batch
//!   size: one lookup-and-lock of every named service, one `INSERT … SELECT FROM unnest(…)` of
//!   all events, one `UPDATE … FROM unnest(…)` of `last_heartbeat_at`.

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

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, FromRow, Postgres, Row};

use super::services::SERVICE_COLUMNS;
/// The statements both backends share, on PostgreSQL.
type Sql = shared::Sql<Postgres>;
use super::*;
use crate::domain::Timestamp;

/// Upper bound on any one statement, so a stuck query frees its connection. A migration that
/// needs longer starts with `SET LOCAL statement_timeout = 0` (each migration is a transaction).
const STATEMENT_TIMEOUT: &str = "30s";

pub struct PgStore {
    pool: PgPool,
    max: u32,
}

/// Opens a PostgreSQL store (without migrating).
pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Arc<dyn Store>> {
    Ok(Arc::new(PgStore::connect(url, opts).await?))
}

fn unavailable(e: sqlx::Error) -> StoreError {
    classify(e)
}

fn dt(t: Timestamp) -> DateTime<Utc> {
    t.datetime()
}

fn decode<T>(what: &str, v: Option<T>) -> Result<T, sqlx::Error> {
    v.ok_or_else(|| sqlx::Error::Decode(format!("invalid {what} in database").into()))
}

impl PgStore {
    pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Self> {
        let conn = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .application_name("medic-server")
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let max = opts.max_connections.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(opts.acquire_timeout)
            // No ping before every acquire (a round trip per query); a connection that broke
            // while idle fails its next query once and is discarded, and idle connections are
            // recycled after a minute.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(60))
            .connect_with(conn)
            .await
            .map_err(unavailable)?;
        Ok(Self { pool, max })
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats {
            size,
            idle: idle.min(size),
            max: self.max,
        }
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn purge_batch(
        &self,
        table: PurgeTable,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
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
