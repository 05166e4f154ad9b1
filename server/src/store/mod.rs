//! Persistence.
//!
//! This module owns every byte of SQL in Medic. [`Store`] is the one storage trait, the sum of
//! one trait per area with use-case-sized methods; each area has one file here (its boundary
//! types and its trait: `services.rs`, `snapshots.rs`, `alerting.rs`, `teams.rs`, `agents.rs`,
//! `runs.rs`, `scripts.rs`, `keys.rs`, `audit.rs`, `playbooks.rs`, `secrets.rs`,
//! `executions.rs`, `notices.rs`, `sessions.rs`), its statements in `shared/<area>.rs` (generic over sqlx's
//! `Database`), and one file in each backend, [`sqlite`] and [`postgres`], with the trait impl
//! and only what differs there; each backend has its own migrations (same version numbers)
//! under `server/migrations/<backend>/`. What the backends share below the trait — how values
//! are stored, row types read with `sqlx::FromRow` — is in `sql.rs`; neither backend imports
//! the other. The backend is chosen by the scheme of `DATABASE_URL` ([`connect`]). Each
//! method owns its transaction: a method either does all of its writes or none.
//!
//! Nothing outside this module names `sqlx`. The store never decides policy (whether a service
//! is down, who may do what, what a job signal or a run report does to a run: those rules are
//! `domain`'s); it records what it is told and answers queries.

mod agents;
mod alerting;
mod audit;
pub mod batch;
mod executions;
mod keys;
mod notices;
mod playbooks;
pub mod postgres;
mod records;
mod runs;
mod scripts;
mod secrets;
mod services;
mod sessions;
mod shared;
mod snapshots;
mod sql;
pub mod sqlite;
mod teams;
mod types;

use std::sync::Arc;
use std::time::Duration;

pub use agents::*;
pub use alerting::*;
pub use audit::*;
pub use executions::*;
pub use keys::*;
pub use notices::*;
pub use playbooks::*;
pub use runs::*;
pub use scripts::*;
pub use secrets::*;
pub use services::*;
pub use sessions::*;
pub use snapshots::*;
pub use teams::*;
pub use types::*;

use crate::domain::{ApiKeyId, ServiceId, SnapshotId, Timestamp};
// The vocabulary the store records, defined in `domain` and re-exported here for callers that
// name it through the store.
pub use crate::domain::{
    AgentRunStatus, AlertKind, AlertState, Destination, EventKind, PlaybookId, RunStatus, ScriptId,
    SignalKind, TargetId, TeamId, WindowId,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached, or it refused the work for a passing reason (a lock,
    /// a full disk, a restart): retrying later may succeed. The message is for logs only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered but refused the statement, or its answer could not be read: a fault
    /// in this request or in the server, which retrying will not cure. The message is for logs
    /// only.
    #[error("database error: {0}")]
    Failed(String),
    /// A uniqueness constraint was violated (for example a duplicate service name).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The configuration (URL, options) is invalid.
    #[error("invalid database configuration: {0}")]
    Config(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Files a database error under what the caller should do about it: a uniqueness violation is a
/// [`StoreError::Conflict`]; a connection, pool or I/O failure, or a refusal the database marks
/// as passing (see [`is_transient_sqlstate`] and [`is_transient_sqlite`]), is [`StoreError::Unavailable`]; anything else — a
/// statement the database refused, a value that could not be decoded — is [`StoreError::Failed`].
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let transient = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                is_transient_sqlite(&code)
            } else {
                is_transient_sqlstate(&code)
            };
            if transient {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Failed(e.to_string())
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Failed(e.to_string()),
    }
}

/// Whether a PostgreSQL SQLSTATE names a passing condition: classes 08 (connection), 40
/// (serialisation failure, deadlock), 53 (insufficient resources), 57 (operator intervention:
/// shutdown, a cancelled statement), 58 (system I/O), and 55P03 (lock not available).
pub(crate) fn is_transient_sqlstate(code: &str) -> bool {
    code == "55P03"
        || ["08", "40", "53", "57", "58"]
            .iter()
            .any(|c| code.starts_with(c))
}

/// Whether a SQLite (extended) result code, as a decimal number, names a passing condition. The
/// low byte is the primary code: BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, IOERR 10, FULL 13,
/// CANTOPEN 14, PROTOCOL 15.
pub(crate) fn is_transient_sqlite(code: &str) -> bool {
    code.parse::<u32>()
        .is_ok_and(|n| matches!(n & 0xff, 5..=8 | 10 | 13..=15))
}

/// Connection pool tuning shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::Config(
                "DATABASE_URL must start with sqlite: or postgres://".into(),
            ))
        }
    }
}

/// Opens the store named by `url` (without migrating).
pub async fn connect(url: &str, opts: &PoolOptions) -> StoreResult<Arc<dyn Store>> {
    match Backend::from_url(url)? {
        Backend::Sqlite => Ok(Arc::new(sqlite::SqliteStore::connect(url, opts).await?)),
        Backend::Postgres => postgres::connect(url, opts).await,
    }
}

/// Everything Medic persists: one trait per area, and what concerns the database as a whole.
///
/// Callers hold an `Arc<dyn Store>`; the area traits' methods are callable on it without
/// importing them (a trait object offers its supertraits' methods). Code that names a concrete
/// store imports [`prelude`].
#[async_trait::async_trait]
pub trait Store:
    ServiceStore
    + SnapshotStore
    + AlertStore
    + TeamStore
    + AgentStore
    + RunStore
    + ScriptStore
    + KeyStore
    + AuditStore
    + PlaybookStore
    + SecretStore
    + ExecutionStore
    + NoticeStore
    + BreakerStore
    + SessionStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;
    fn pool_stats(&self) -> PoolStats;
    /// Closes every connection (after in-flight work finishes).
    async fn close(&self);

    // ---- housekeeping -----------------------------------------------------------------------

    /// Deletes up to `limit` of the oldest rows of `table` older than `before`, in one short
    /// transaction; returns how many went.
    async fn purge_batch(
        &self,
        table: PurgeTable,
        before: Timestamp,
        limit: u32,
    ) -> StoreResult<u64>;
}

/// The store traits, for code that calls store methods on a concrete store.
pub mod prelude {
    pub use super::{
        AgentStore, AlertStore, AuditStore, ExecutionStore, KeyStore, PlaybookStore, RunStore,
        ScriptStore, SecretStore, ServiceStore, SessionStore, SnapshotStore, Store, TeamStore,
    };
}

#[cfg(test)]
mod tests {
    use super::{is_transient_sqlite, is_transient_sqlstate};

    #[test]
    fn postgres_codes_of_passing_conditions() {
        // connection failure, serialisation failure, deadlock, too many connections, admin
        // shutdown, cancelled statement, I/O error, lock not available
        for code in [
            "08006", "40001", "40P01", "53300", "57P01", "57014", "58030", "55P03",
        ] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        // invalid byte sequence (a NUL), syntax error, undefined column, not-null violation,
        // object in use (not a lock wait)
        for code in ["22021", "42601", "42703", "23502", "55006", ""] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn sqlite_codes_of_passing_conditions() {
        // BUSY, BUSY_SNAPSHOT, LOCKED, IOERR_FSYNC, FULL, CANTOPEN
        for code in ["5", "517", "6", "1034", "13", "14"] {
            assert!(is_transient_sqlite(code), "{code}");
        }
        // ERROR, CONSTRAINT_NOTNULL, MISMATCH, CORRUPT, not a number
        for code in ["1", "1299", "20", "11", "SQLITE_BUSY", ""] {
            assert!(!is_transient_sqlite(code), "{code}");
        }
    }
}
