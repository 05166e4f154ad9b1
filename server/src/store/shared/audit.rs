//! The audit log, on both backends.

use sqlx::{ColumnIndex, Decode, Encode, Executor, Pool, QueryBuilder, Type};

use super::{Db, Sql, unavailable};
use crate::domain::Timestamp;
use crate::store::{AuditEntry, AuditFilter, NewAuditEntry, Page, PageRequest, StoreResult};

fn push_audit_filter<DB: Db>(qb: &mut QueryBuilder<DB>, f: &AuditFilter)
where
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Timestamp: Encode<'a, DB> + Type<DB>,
{
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

impl<DB: Db> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> i32: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Decode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Timestamp: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i32>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<bool>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<Timestamp>: Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Appends an audit entry on `conn` (a pooled connection or an open transaction).
    pub(crate) async fn insert_audit(
        conn: &mut DB::Connection,
        e: &NewAuditEntry,
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO audit_log (action_type, actor, service_id, execution_id, details, \
             created_at, on_behalf_of) VALUES ($1, $2, $3, $4, $5{jsonb}, $6, $7)",
            jsonb = DB::JSONB
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
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

    pub(crate) async fn append_audit(pool: &Pool<DB>, e: &NewAuditEntry) -> StoreResult<()> {
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        Self::insert_audit(&mut conn, e).await
    }

    pub(crate) async fn list_audit(
        pool: &Pool<DB>,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let columns = format!(
            "id, action_type, actor, on_behalf_of, service_id, execution_id, \
             details{text} AS details, created_at",
            text = DB::TEXT
        );
        Self::page(
            pool,
            "audit_log",
            &columns,
            |qb| push_audit_filter(qb, filter),
            "created_at DESC, id DESC",
            page,
        )
        .await
    }
}
