//! Playbook executions on PostgreSQL: the statements are shared (`shared/executions.rs`).
//! Starts take a transaction-scoped advisory lock so the circuit breaker's count and the insert
//! are one step for every replica; claims lock the rows they take with
//! `FOR UPDATE SKIP LOCKED`, so two workers never lease one execution.

use sqlx::Postgres;

use super::*;
use crate::domain::Timestamp;
use crate::store::shared::executions::ExecutionSql;
use crate::store::*;

impl ExecutionSql for Postgres {
    // The lock's key is "medic-pb" in ASCII (0x6d65_6469_632d_7062).
    const START_LOCK: &'static str = "SELECT pg_advisory_xact_lock(7882817126580187234)";
    const NEXT_DUE: &'static str = "SELECT min(GREATEST(due_at, lease_until)) \
        FROM playbook_executions WHERE due_at IS NOT NULL";
}

#[async_trait::async_trait]
impl ExecutionStore for PgStore {
    async fn create_execution(
        &self,
        new: &NewExecution,
        window_from: Timestamp,
        build: BuildExecution<'_>,
    ) -> StoreResult<ExecutionRecord> {
        Sql::create_execution(&self.pool, new, window_from, build).await
    }

    async fn update_execution(
        &self,
        id: i64,
        expected_version: i64,
        w: &ExecutionWrite,
    ) -> StoreResult<bool> {
        Sql::update_execution(&self.pool, id, expected_version, w).await
    }

    async fn claim_executions(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        Sql::claim_executions(&self.pool, owner, now, lease_until, limit).await
    }

    async fn release_execution(
        &self,
        id: i64,
        owner: &str,
        due_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        Sql::release_execution(&self.pool, id, owner, due_at).await
    }

    async fn hasten_executions(&self, ids: &[i64], at: Timestamp) -> StoreResult<u64> {
        Sql::hasten_executions(&self.pool, ids, at).await
    }

    async fn release_all_execution_leases(&self, now: Timestamp) -> StoreResult<u64> {
        Sql::release_all_execution_leases(&self.pool, now).await
    }

    async fn next_execution_due(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_execution_due(&self.pool).await
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
        Sql::get_execution(&self.pool, id).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ExecutionRecord>> {
        Sql::list_executions(&self.pool, filter, page).await
    }
}
