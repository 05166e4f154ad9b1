//! Snapshots on PostgreSQL: the statements are shared (`shared/snapshots.rs`).

use super::*;

#[async_trait::async_trait]
impl SnapshotStore for PgStore {
    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>> {
        Sql::list_snapshots(&self.pool, filter, page).await
    }

    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>> {
        Sql::get_snapshot(&self.pool, id).await
    }

    async fn restore_snapshot(
        &self,
        id: SnapshotId,
        actor: &Actor,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome> {
        Sql::restore_snapshot(&self.pool, id, actor, audit).await
    }
}
