//! The agent registry, on both backends. How an agent connects (an upsert under the single
//! writer, or an insert then a row lock across replicas) and how a label filter reads JSON stay
//! in the backends.

use std::collections::BTreeMap;

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Type,
};

use super::{Db, Sql, unavailable};
use crate::domain::Timestamp;
use crate::store::*;

/// What differs between the backends in this area.
pub(crate) trait AgentSql: Db {
    /// Appends a test that the agent's labels include every `labels` pair.
    fn push_labels_filter(qb: &mut QueryBuilder<Self>, labels: &BTreeMap<String, String>);
}

/// The columns an [`AgentRecord`] is read from.
pub(crate) fn agent_columns<DB: Db>() -> String {
    format!(
        "id, hostname, agent_version, os, arch, labels{t} AS labels, \
         declared_labels{t} AS declared_labels, key_labels{t} AS key_labels, \
         label_grants{t} AS label_grants, connected, session_id, remote_addr, first_seen_at, connected_at, disconnected_at, last_seen_at, revoked_at, \
         revoked_by, key_id, service_id, host_facts{t} AS host_facts, host_facts_at",
        t = DB::TEXT
    )
}

fn push_filter<DB: AgentSql>(qb: &mut QueryBuilder<DB>, filter: &AgentFilter)
where
    for<'a> bool: Encode<'a, DB> + Type<DB>,
{
    if let Some(c) = filter.connected {
        qb.push(" WHERE connected = ").push_bind(c);
    } else {
        qb.push(" WHERE 1 = 1");
    }
    match filter.revoked {
        Some(true) => {
            qb.push(" AND revoked_at IS NOT NULL");
        }
        Some(false) => {
            qb.push(" AND revoked_at IS NULL");
        }
        None => {}
    }
    if !filter.labels.is_empty() {
        DB::push_labels_filter(qb, &filter.labels);
    }
}

impl<DB: AgentSql> Sql<DB>
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
    pub(crate) async fn agent_disconnected(
        pool: &Pool<DB>,
        id: &str,
        session_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET connected = false, disconnected_at = $1 \
             WHERE id = $2 AND session_id = $3",
        )
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn agent_host_facts(
        pool: &Pool<DB>,
        id: &str,
        session_id: &str,
        facts: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE agents SET host_facts = $1{}, host_facts_at = $2 \
             WHERE id = $3 AND session_id = $4",
            DB::JSONB
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(facts)
            .bind(at)
            .bind(id)
            .bind(session_id)
            .execute(pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn get_agent(pool: &Pool<DB>, id: &str) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {} FROM agents WHERE id = $1", agent_columns::<DB>());
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
        row.as_ref()
            .map(AgentRecord::from_row)
            .transpose()
            .map_err(unavailable)
    }

    pub(crate) async fn list_agents(
        pool: &Pool<DB>,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>> {
        Self::page(
            pool,
            "agents",
            &agent_columns::<DB>(),
            |qb| push_filter(qb, filter),
            "id",
            page,
        )
        .await
    }

    /// [`AgentStore::set_agent_label_grants`]: the row is read and written in one transaction
    /// (on PostgreSQL under a row lock, so a connection on another replica waits for it).
    pub(crate) async fn set_agent_label_grants(
        pool: &Pool<DB>,
        id: &str,
        grants: &BTreeMap<String, String>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AgentRecord>> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!(
            "SELECT {} FROM agents WHERE id = $1{}",
            agent_columns::<DB>(),
            DB::FOR_UPDATE
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let before = AgentRecord::from_row(&row).map_err(unavailable)?;
        let labels = carried_labels(&before.declared_labels, &before.key_labels, grants);
        let json = |m: &BTreeMap<String, String>| {
            serde_json::to_string(m).map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let sql = format!(
            "UPDATE agents SET label_grants = $1{j}, labels = $2{j} WHERE id = $3 RETURNING {}",
            agent_columns::<DB>(),
            j = DB::JSONB
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(json(grants)?)
            .bind(json(&labels)?)
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let after = AgentRecord::from_row(&row).map_err(unavailable)?;
        if let Some(e) = audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(after))
    }

    pub(crate) async fn revoke_agent(
        pool: &Pool<DB>,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let updated = sqlx::query(
            "UPDATE agents SET revoked_at = $1, revoked_by = $2, connected = false, \
             disconnected_at = CASE WHEN connected THEN $1 ELSE disconnected_at END \
             WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(by)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let revoked = DB::rows_affected(&updated) == 1;
        if revoked && let Some(e) = audit {
            Self::insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }
}
