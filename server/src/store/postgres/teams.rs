//! Teams, notification targets and maintenance windows on PostgreSQL: the statements are shared
//! (`shared/teams.rs`).

use super::*;

#[async_trait::async_trait]
impl TeamStore for PgStore {
    async fn create_team(
        &self,
        new: &NewTeam,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Team> {
        Sql::create_team(&self.pool, new, audit).await
    }

    async fn get_team(&self, id: TeamId) -> StoreResult<Option<Team>> {
        Sql::get_team(&self.pool, id).await
    }

    async fn find_team(&self, key: &str) -> StoreResult<Option<Team>> {
        Sql::find_team(&self.pool, key).await
    }

    async fn list_teams(&self) -> StoreResult<Vec<Team>> {
        Sql::list_teams(&self.pool).await
    }

    async fn update_team(
        &self,
        id: TeamId,
        patch: &TeamPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, Team>>,
    ) -> StoreResult<Option<Team>> {
        Sql::update_team(&self.pool, id, patch, at, audit).await
    }

    async fn delete_team(&self, id: TeamId, audit: Option<&NewAuditEntry>) -> StoreResult<bool> {
        Sql::delete_team(&self.pool, id, audit).await
    }

    async fn create_target(
        &self,
        new: &NewTarget,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<NotificationTarget> {
        Sql::create_target(&self.pool, new, audit).await
    }

    async fn get_target(&self, id: TargetId) -> StoreResult<Option<NotificationTarget>> {
        Sql::get_target(&self.pool, id).await
    }

    async fn list_targets(&self, f: &TargetFilter) -> StoreResult<Vec<NotificationTarget>> {
        Sql::list_targets(&self.pool, f).await
    }

    async fn update_target(
        &self,
        id: TargetId,
        patch: &TargetPatch,
        at: Timestamp,
        audit: Option<AuditWith<'_, NotificationTarget>>,
    ) -> StoreResult<Option<NotificationTarget>> {
        Sql::update_target(&self.pool, id, patch, at, audit).await
    }

    async fn delete_target(
        &self,
        id: TargetId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Sql::delete_target(&self.pool, id, audit).await
    }

    async fn create_window(
        &self,
        new: &NewWindow,
        audit: Option<AuditWith<'_, MaintenanceWindowRecord>>,
    ) -> StoreResult<MaintenanceWindowRecord> {
        Sql::create_window(&self.pool, new, audit).await
    }

    async fn get_window(&self, id: WindowId) -> StoreResult<Option<MaintenanceWindowRecord>> {
        Sql::get_window(&self.pool, id).await
    }

    async fn list_windows(&self, f: &WindowFilter) -> StoreResult<Vec<MaintenanceWindowRecord>> {
        Sql::list_windows(&self.pool, f).await
    }

    async fn delete_window(
        &self,
        id: WindowId,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Sql::delete_window(&self.pool, id, audit).await
    }
}
