//! The agent registry on SQLite. Writes go through the single writer connection, so the
//! revoked-check and the upsert of [`agent_connected`](crate::store::Store::agent_connected)
//! cannot interleave with a revocation.

use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};

use super::*;
use crate::domain::Timestamp;
use crate::store::*;

const AGENT_COLUMNS: &str = "id, hostname, agent_version, os, arch, labels, connected, \
    session_id, remote_addr, first_seen_at, connected_at, disconnected_at, last_seen_at, \
    revoked_at, revoked_by, key_id, service_id, host_facts, host_facts_at";

fn push_filter(qb: &mut QueryBuilder<Sqlite>, filter: &AgentFilter) {
    qb.push(" FROM agents WHERE 1 = 1");
    if let Some(c) = filter.connected {
        qb.push(" AND connected = ").push_bind(i64::from(c));
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
    for (key, value) in &filter.labels {
        qb.push(" AND EXISTS (SELECT 1 FROM json_each(agents.labels) l WHERE l.key = ")
            .push_bind(key.clone())
            .push(" AND l.value = ")
            .push_bind(value.clone())
            .push(")");
    }
}

#[async_trait::async_trait]
impl AgentStore for SqliteStore {
    async fn agent_connected(&self, c: &AgentConnection) -> StoreResult<AgentConnectOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let revoked: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM agents WHERE id = $1")
                .bind(&c.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if matches!(revoked, Some(Some(_))) {
            return Ok(AgentConnectOutcome::Revoked);
        }
        let labels =
            serde_json::to_string(&c.labels).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let at = c.at.millis();
        let sql = format!(
            "INSERT INTO agents (id, hostname, agent_version, os, arch, labels, connected, \
             session_id, remote_addr, first_seen_at, connected_at, last_seen_at, key_id, \
             service_id) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, \
             agent_version = excluded.agent_version, os = excluded.os, arch = excluded.arch, \
             labels = excluded.labels, connected = 1, session_id = excluded.session_id, \
             remote_addr = excluded.remote_addr, connected_at = excluded.connected_at, \
             last_seen_at = excluded.last_seen_at, key_id = excluded.key_id, \
             service_id = coalesce(excluded.service_id, agents.service_id) \
             RETURNING {AGENT_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&c.id)
            .bind(&c.hostname)
            .bind(&c.agent_version)
            .bind(&c.os)
            .bind(&c.arch)
            .bind(labels)
            .bind(&c.session_id)
            .bind(&c.remote_addr)
            .bind(at)
            .bind(at)
            .bind(at)
            .bind(&c.key_id)
            .bind(c.service_id.map(|s| s.0))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let record = AgentRecord::from_row(&row).map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(AgentConnectOutcome::Connected(Box::new(record)))
    }

    async fn agent_seen(&self, id: &str, session_id: &str, at: Timestamp) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE agents SET last_seen_at = max(last_seen_at, $1) \
             WHERE id = $2 AND session_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn agent_disconnected(
        &self,
        id: &str,
        session_id: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET connected = 0, disconnected_at = $1 \
             WHERE id = $2 AND session_id = $3",
        )
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn agent_host_facts(
        &self,
        id: &str,
        session_id: &str,
        facts: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE agents SET host_facts = $1, host_facts_at = $2 \
             WHERE id = $3 AND session_id = $4",
        )
        .bind(facts)
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(unavailable)?;
        row.as_ref()
            .map(AgentRecord::from_row)
            .transpose()
            .map_err(unavailable)
    }

    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>> {
        let mut tx = self.read.begin().await.map_err(unavailable)?;
        let mut count = QueryBuilder::<Sqlite>::new("SELECT count(*)");
        push_filter(&mut count, filter);
        let total_count: i64 = count
            .build_query_scalar()
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Sqlite>::new(format!("SELECT {AGENT_COLUMNS}"));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(unavailable)?;
        let entries = rows
            .iter()
            .map(AgentRecord::from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count,
        })
    }

    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let updated = sqlx::query(
            "UPDATE agents SET revoked_at = $1, revoked_by = $2, connected = 0, \
             disconnected_at = CASE WHEN connected = 1 THEN $3 ELSE disconnected_at END \
             WHERE id = $4 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(by)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let revoked = updated.rows_affected() == 1;
        if revoked && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }
}
