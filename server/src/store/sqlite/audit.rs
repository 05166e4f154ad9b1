//! The audit log on SQLite.

use super::*;

fn push_audit_filter(qb: &mut QueryBuilder<Sqlite>, f: &AuditFilter) {
    qb.push(" WHERE 1 = 1");
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
    conn: &mut sqlx::SqliteConnection,
    e: &NewAuditEntry,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (action_type, actor, service_id, execution_id, details, \
         created_at, on_behalf_of) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
impl AuditStore for SqliteStore {
    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<()> {
        let mut conn = self.write.acquire().await.map_err(unavailable)?;
        insert_audit(&mut conn, e).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*) FROM audit_log");
        push_audit_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.read)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM audit_log");
        push_audit_filter(&mut qb, filter);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.read)
            .await
            .map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(AuditEntry::from_row)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count: total,
        })
    }
}
