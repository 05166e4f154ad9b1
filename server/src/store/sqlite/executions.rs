//! Playbook executions on SQLite: the statements are shared (`shared/executions.rs`). Writes go
//! through the single writer connection, so starts are serialized without a lock and a claim
//! never races another (SQLite serves one process).

use sqlx::Sqlite;

use super::*;
use crate::domain::Timestamp;
use crate::store::shared::executions::ExecutionSql;
use crate::store::*;

impl ExecutionSql for Sqlite {
    const START_LOCK: &'static str = "";
    const NEXT_DUE: &'static str = "SELECT min(max(due_at, coalesce(lease_until, 0))) \
        FROM playbook_executions WHERE due_at IS NOT NULL";
}

#[async_trait::async_trait]
impl ExecutionStore for SqliteStore {
    async fn create_execution(
        &self,
        new: &NewExecution,
        window_from: Timestamp,
        build: BuildExecution<'_>,
    ) -> StoreResult<ExecutionRecord> {
        Sql::create_execution(&self.write, new, window_from, build).await
    }

    async fn update_execution(
        &self,
        id: i64,
        expected_version: i64,
        w: &ExecutionWrite,
    ) -> StoreResult<bool> {
        Sql::update_execution(&self.write, id, expected_version, w).await
    }

    async fn claim_executions(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<ExecutionRecord>> {
        Sql::claim_executions(&self.write, owner, now, lease_until, limit).await
    }

    async fn release_execution(
        &self,
        id: i64,
        owner: &str,
        due_at: Option<Timestamp>,
    ) -> StoreResult<()> {
        Sql::release_execution(&self.write, id, owner, due_at).await
    }

    async fn hasten_executions(&self, ids: &[i64], at: Timestamp) -> StoreResult<u64> {
        Sql::hasten_executions(&self.write, ids, at).await
    }

    async fn release_all_execution_leases(&self, now: Timestamp) -> StoreResult<u64> {
        Sql::release_all_execution_leases(&self.write, now).await
    }

    async fn next_execution_due(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_execution_due(&self.read).await
    }

    async fn get_execution(&self, id: i64) -> StoreResult<Option<ExecutionRecord>> {
        Sql::get_execution(&self.read, id).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: PageRequest,
    ) -> StoreResult<Page<ExecutionRecord>> {
        Sql::list_executions(&self.read, filter, page).await
    }
}
