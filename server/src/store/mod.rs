//! Persistence.
//!
//! This module owns every byte of SQL in Medic. [`Store`] is the one storage trait, the sum of
//! one trait per area with use-case-sized methods; each area has one file here (its boundary
//! types and its trait: `services.rs`, `snapshots.rs`, `alerting.rs`, `teams.rs`, `agents.rs`,
//! `runs.rs`, `scripts.rs`, `keys.rs`, `audit.rs`, `playbooks.rs`, `secrets.rs`,
//! `executions.rs`, `sessions.rs`) and one file in
//! each backend, [`sqlite`] and [`postgres`], each with its own migrations (same version
//! numbers) under `server/migrations/<backend>/`. What the backends share below the trait — how
//! values are stored, row types read with `sqlx::FromRow` — is in `sql.rs`, and the statements
//! that are the same on both are written once in `shared/` (generic over sqlx's `Database`);
//! neither backend imports the other. The backend is chosen by the scheme of `DATABASE_URL` ([`connect`]). Each
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
    /// The database could not be reached or a query failed for a reason outside the caller's
    /// control. The message is for logs only.
    #[error("database unavailable: {0}")]
    Unavailable(String),
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
