//! Playbooks and their versions on PostgreSQL: the statements are shared
//! (`shared/playbooks.rs`), with PostgreSQL's row lock on a new version and its
//! `REPEATABLE READ` snapshot for a playbook's history.

use super::*;
use crate::store::*;

#[async_trait::async_trait]
impl PlaybookStore for PgStore {
    async fn create_playbook(
        &self,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<CreatePlaybookOutcome> {
        Sql::create_playbook(&self.pool, new, audit).await
    }

    async fn add_playbook_version(
        &self,
        id: PlaybookId,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<AddVersionOutcome> {
        Sql::add_playbook_version(&self.pool, id, new, audit).await
    }

    async fn get_playbook(&self, id: PlaybookId) -> StoreResult<Option<Playbook>> {
        Sql::get_playbook(&self.pool, id).await
    }

    async fn current_playbook_version(
        &self,
        id: PlaybookId,
    ) -> StoreResult<Option<PlaybookVersion>> {
        Sql::playbook_version(&self.pool, id, None).await
    }

    async fn get_playbook_version(
        &self,
        id: PlaybookId,
        version: i32,
    ) -> StoreResult<Option<PlaybookVersion>> {
        Sql::playbook_version(&self.pool, id, Some(version)).await
    }

    async fn list_playbooks(
        &self,
        filter: &PlaybookFilter,
        page: PageRequest,
    ) -> StoreResult<Page<PlaybookRecord>> {
        Sql::list_playbooks(&self.pool, filter, page).await
    }

    async fn disable_playbook(
        &self,
        id: PlaybookId,
        actor: &str,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        Sql::disable_playbook(&self.pool, id, actor, at, audit).await
    }

    async fn restore_playbook(
        &self,
        id: PlaybookId,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        Sql::restore_playbook(&self.pool, id, at, audit).await
    }
}
