//! The audit log on PostgreSQL.

use super::*;

fn push_audit_filter(qb: &mut QueryBuilder<Postgres>, f: &AuditFilter) {
    qb.push(" WHERE true");
    if let Some(v) = f.execution_id {
        qb.push(" AND execution_id = ").push_bind(v);
    }
    if let Some(v) = f.service_id {
        qb.push(" AND service_id = ").push_bind(v.0);
    }
    if let Some(v) = &f.action_type {
        qb.push(" AND action_type = ").push_bind(v.clone());
    }
    if let Some(v) = &f.actor {
        qb.push(" AND actor = ").push_bind(v.clone());
    }
    if let Some(v) = f.start {
        qb.push(" AND created_at >= ").push_bind(v);
    }
    if let Some(v) = f.end {
        qb.push(" AND created_at <= ").push_bind(v);
    }
}

/// Appends an audit entry on `conn` (a pooled connection or an open transaction).
pub(super) async fn insert_audit(
    conn: &mut sqlx::PgConnection,
    e: &NewAuditEntry,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (action_type, actor, service_id, execution_id, details, \
         created_at, on_behalf_of) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
    )
    .bind(&e.action_type)
    .bind(&e.actor)
    .bind(e.service_id.map(|s| s.0))
    .bind(e.execution_id)
    .bind(e.details.to_string())
    .bind(e.at)
    .bind(&e.on_behalf_of)
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait::async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        insert_audit(&mut conn, e).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        self.page(
            "audit_log",
            AUDIT_COLUMNS,
            |qb| push_audit_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
            |r| AuditEntry::from_row(r),
        )
        .await
    }
}
