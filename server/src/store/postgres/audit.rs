//! The audit log on PostgreSQL: the statements are shared (`shared/audit.rs`).

use super::*;

#[async_trait::async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        Sql::append_audit(&self.pool, e).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        Sql::list_audit(&self.pool, filter, page).await
    }
}
