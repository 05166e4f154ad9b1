//! The agent registry on PostgreSQL. Several replicas may serve agents at once: a connection
//! locks the agent's row (`FOR UPDATE`) before it checks revocation and marks the agent
//! connected, so a revocation on another replica either happens first (and refuses the
//! connection) or after (and the session learns of it at its next heartbeat, through
//! [`agent_seen`](crate::store::Store::agent_seen)).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder};

use super::*;
use crate::domain::Timestamp;
use crate::store::shared::agents::{AgentSql, agent_columns};
use crate::store::sql::JsonText;
use crate::store::*;

impl AgentSql for Postgres {
    fn push_labels_filter(qb: &mut QueryBuilder<Self>, labels: &BTreeMap<String, String>) {
        let wanted = serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned());
        qb.push(" AND labels @> ").push_bind(wanted).push("::jsonb");
    }
}

#[async_trait::async_trait]
impl AgentStore for PgStore {
    async fn agent_connected(&self, c: &AgentConnection) -> StoreResult<AgentConnectOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let json = |m: &BTreeMap<String, String>| {
            serde_json::to_string(m).map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let declared = json(&c.declared_labels)?;
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
        .bind(&declared)
        .bind(c.at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let (revoked, grants): (Option<DateTime<Utc>>, JsonText<BTreeMap<String, String>>) =
            sqlx::query_as(
                "SELECT revoked_at, label_grants::text FROM agents WHERE id = $1 FOR UPDATE",
            )
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
             key_id = $11, declared_labels = $12::jsonb, key_labels = $13::jsonb \
             WHERE id = $1 RETURNING {columns}",
            columns = agent_columns::<Postgres>()
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&c.id)
            .bind(&c.hostname)
            .bind(&c.agent_version)
            .bind(&c.os)
            .bind(&c.arch)
            .bind(json(&carried_labels(
                &c.declared_labels,
                &c.key_labels,
                &grants.0,
            ))?)
            .bind(&c.session_id)
            .bind(&c.remote_addr)
            .bind(c.at)
            .bind(c.service_id.map(|s| s.0))
            .bind(&c.key_id)
            .bind(&declared)
            .bind(json(&c.key_labels)?)
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
        Sql::agent_disconnected(&self.pool, id, session_id, at).await
    }

    async fn agent_host_facts(
        &self,
        id: &str,
        session_id: &str,
        facts: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        Sql::agent_host_facts(&self.pool, id, session_id, facts, at).await
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        Sql::get_agent(&self.pool, id).await
    }

    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>> {
        Sql::list_agents(&self.pool, filter, page).await
    }

    async fn set_agent_label_grants(
        &self,
        id: &str,
        grants: &BTreeMap<String, String>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AgentRecord>> {
        Sql::set_agent_label_grants(&self.pool, id, grants, audit).await
    }

    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Sql::revoke_agent(&self.pool, id, by, at, audit).await
    }
}
