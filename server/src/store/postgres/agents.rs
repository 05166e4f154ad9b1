//! The agent registry on PostgreSQL. Several replicas may serve agents at once: a connection
//! locks the agent's row (`FOR UPDATE`) before it checks revocation and marks the agent
//! connected, so a revocation on another replica either happens first (and refuses the
//! connection) or after (and the session learns of it at its next heartbeat, through
//! [`agent_seen`](crate::store::Store::agent_seen)).

use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use super::*;
use crate::domain::Timestamp;
use crate::store::*;

const AGENT_COLUMNS: &str = "id, hostname, agent_version, os, arch, labels::text AS labels, \
    connected, session_id, remote_addr, first_seen_at, connected_at, disconnected_at, \
    last_seen_at, revoked_at, revoked_by, key_id, service_id, host_facts::text AS host_facts, \
    host_facts_at";

fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &AgentFilter) {
    qb.push(" FROM agents WHERE true");
    if let Some(c) = filter.connected {
        qb.push(" AND connected = ").push_bind(c);
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
        let wanted = serde_json::to_string(&filter.labels).unwrap_or_else(|_| "{}".to_owned());
        qb.push(" AND labels @> ").push_bind(wanted).push("::jsonb");
    }
}

#[async_trait::async_trait]
impl AgentStore for PgStore {
    async fn agent_connected(&self, c: &AgentConnection) -> StoreResult<AgentConnectOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let labels =
            serde_json::to_string(&c.labels).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Insert first (a no-op when the row exists), then lock the row and look at it: two
        // replicas racing on a new agent serialise on the primary key.
        sqlx::query(
            "INSERT INTO agents (id, hostname, agent_version, os, arch, labels, connected, \
             first_seen_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6::jsonb, false, $7, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&c.id)
        .bind(&c.hostname)
        .bind(&c.agent_version)
        .bind(&c.os)
        .bind(&c.arch)
        .bind(&labels)
        .bind(c.at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let revoked: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT revoked_at FROM agents WHERE id = $1 FOR UPDATE")
                .bind(&c.id)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        if revoked.is_some() {
            tx.rollback().await.map_err(unavailable)?;
            return Ok(AgentConnectOutcome::Revoked);
        }
        let sql = format!(
            "UPDATE agents SET hostname = $2, agent_version = $3, os = $4, arch = $5, \
             labels = $6::jsonb, connected = true, session_id = $7, remote_addr = $8, \
             connected_at = $9, last_seen_at = $9, service_id = coalesce($10, service_id), \
             key_id = $11 \
             WHERE id = $1 RETURNING {AGENT_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&c.id)
            .bind(&c.hostname)
            .bind(&c.agent_version)
            .bind(&c.os)
            .bind(&c.arch)
            .bind(&labels)
            .bind(&c.session_id)
            .bind(&c.remote_addr)
            .bind(c.at)
            .bind(c.service_id.map(|s| s.0))
            .bind(&c.key_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let record = AgentRecord::from_row(&row).map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(AgentConnectOutcome::Connected(Box::new(record)))
    }

    async fn agent_seen(&self, id: &str, session_id: &str, at: Timestamp) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE agents SET last_seen_at = greatest(last_seen_at, $1) \
             WHERE id = $2 AND session_id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(&self.pool)
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
            "UPDATE agents SET connected = false, disconnected_at = $1 \
             WHERE id = $2 AND session_id = $3",
        )
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(&self.pool)
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
            "UPDATE agents SET host_facts = $1::jsonb, host_facts_at = $2 \
             WHERE id = $3 AND session_id = $4",
        )
        .bind(facts)
        .bind(at)
        .bind(id)
        .bind(session_id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
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
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*)");
        push_filter(&mut count, filter);
        let total_count: i64 = count
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {AGENT_COLUMNS}"));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
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
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
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
        let revoked = updated.rows_affected() == 1;
        if revoked && let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(revoked)
    }
}
