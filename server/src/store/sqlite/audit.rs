//! The audit log on SQLite: the statements are shared (`shared/audit.rs`).

use super::*;

#[async_trait::async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        Sql::append_audit(&self.write, e).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        Sql::list_audit(&self.read, filter, page).await
    }
}
