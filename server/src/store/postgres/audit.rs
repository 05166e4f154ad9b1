//! The audit log on PostgreSQL: the statements are shared (`shared/audit.rs`).

use super::*;

/// Appends an audit entry on `conn` (a pooled connection or an open transaction).
pub(super) async fn insert_audit(
    conn: &mut sqlx::PgConnection,
    e: &NewAuditEntry,
) -> StoreResult<()> {
    Sql::insert_audit(conn, e).await
}

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
