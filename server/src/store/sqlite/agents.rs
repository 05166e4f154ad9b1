//! The agent registry on SQLite. Writes go through the single writer connection, so the
//! revoked-check and the upsert of [`agent_connected`](crate::store::Store::agent_connected)
//! cannot interleave with a revocation.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, QueryBuilder, Sqlite};

use super::*;
use crate::domain::Timestamp;
use crate::store::shared::agents::{AgentSql, agent_columns};
use crate::store::sql::JsonText;
use crate::store::*;

impl AgentSql for Sqlite {
    fn push_labels_filter(qb: &mut QueryBuilder<Self>, labels: &BTreeMap<String, String>) {
        for (key, value) in labels {
            qb.push(" AND EXISTS (SELECT 1 FROM json_each(agents.labels) l WHERE l.key = ")
                .push_bind(key.clone())
                .push(" AND l.value = ")
                .push_bind(value.clone())
                .push(")");
        }
    }
}

#[async_trait::async_trait]
impl AgentStore for SqliteStore {
    async fn agent_connected(&self, c: &AgentConnection) -> StoreResult<AgentConnectOutcome> {
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let existing: Option<(Option<i64>, JsonText<BTreeMap<String, String>>)> =
            sqlx::query_as("SELECT revoked_at, label_grants FROM agents WHERE id = $1")
                .bind(&c.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if matches!(existing, Some((Some(_), _))) {
            return Ok(AgentConnectOutcome::Revoked);
        }
        let grants = existing.map(|(_, g)| g.0).unwrap_or_default();
        let json = |m: &BTreeMap<String, String>| {
            serde_json::to_string(m).map_err(|e| StoreError::Unavailable(e.to_string()))
        };
        let labels = json(&carried_labels(&c.declared_labels, &c.key_labels, &grants))?;
        let at = c.at.millis();
        let sql = format!(
            "INSERT INTO agents (id, hostname, agent_version, os, arch, labels, connected, \
             session_id, remote_addr, first_seen_at, connected_at, last_seen_at, key_id, \
             service_id, declared_labels, key_labels) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, \
             agent_version = excluded.agent_version, os = excluded.os, arch = excluded.arch, \
             labels = excluded.labels, declared_labels = excluded.declared_labels, \
             key_labels = excluded.key_labels, connected = 1, session_id = excluded.session_id, \
             remote_addr = excluded.remote_addr, connected_at = excluded.connected_at, \
             last_seen_at = excluded.last_seen_at, key_id = excluded.key_id, \
             service_id = coalesce(excluded.service_id, agents.service_id) \
             RETURNING {columns}",
            columns = agent_columns::<Sqlite>()
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
            .bind(json(&c.declared_labels)?)
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
        Sql::agent_disconnected(&self.write, id, session_id, at).await
    }

    async fn agent_host_facts(
        &self,
        id: &str,
        session_id: &str,
        facts: &str,
        at: Timestamp,
    ) -> StoreResult<()> {
        Sql::agent_host_facts(&self.write, id, session_id, facts, at).await
    }

    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>> {
        Sql::get_agent(&self.read, id).await
    }

    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>> {
        Sql::list_agents(&self.read, filter, page).await
    }

    async fn set_agent_label_grants(
        &self,
        id: &str,
        grants: &BTreeMap<String, String>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AgentRecord>> {
        Sql::set_agent_label_grants(&self.write, id, grants, audit).await
    }

    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool> {
        Sql::revoke_agent(&self.write, id, by, at, audit).await
    }
}
