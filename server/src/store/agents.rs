//! The agent registry's records: what the gateway writes when an agent connects, is seen and
//! leaves, and what the agents routes read. SQL for them lives in `sqlite/agents.rs` and
//! `postgres/agents.rs`.

use std::collections::BTreeMap;

use super::sql::JsonText;
use super::*;
use crate::domain::{ServiceId, Timestamp};

/// One agent as the registry knows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AgentRecord {
    /// The agent's own id (`hello.agent_id`).
    pub id: String,
    pub hostname: String,
    pub agent_version: String,
    pub os: String,
    pub arch: String,
    /// The labels it carries (what run label selectors match): [`carried_labels`] of the three
    /// below.
    #[sqlx(try_from = "JsonText<BTreeMap<String, String>>")]
    pub labels: BTreeMap<String, String>,
    /// The labels its last hello declared.
    #[sqlx(try_from = "JsonText<BTreeMap<String, String>>")]
    pub declared_labels: BTreeMap<String, String>,
    /// The labels the API key it last connected with grants.
    #[sqlx(try_from = "JsonText<BTreeMap<String, String>>")]
    pub key_labels: BTreeMap<String, String>,
    /// The labels an operator granted to this agent (`PUT /v2/agents/{id}/labels`).
    #[sqlx(try_from = "JsonText<BTreeMap<String, String>>")]
    pub label_grants: BTreeMap<String, String>,
    /// Whether a session was open when it last changed. A replica that died without closing
    /// its sessions leaves this set; readers also look at `last_seen_at`.
    pub connected: bool,
    pub session_id: Option<String>,
    pub remote_addr: Option<String>,
    pub first_seen_at: Timestamp,
    pub connected_at: Option<Timestamp>,
    pub disconnected_at: Option<Timestamp>,
    pub last_seen_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<String>,
    /// The API key the agent last connected with.
    pub key_id: Option<String>,
    /// The service the agent's heartbeats are recorded on.
    pub service_id: Option<ServiceId>,
    /// The agent's last host-fact report, a JSON object (`medic_protocol::HostFacts`).
    pub host_facts: Option<String>,
    /// When that report arrived.
    pub host_facts_at: Option<Timestamp>,
}

/// A session that passed the handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConnection {
    pub id: String,
    pub hostname: String,
    pub agent_version: String,
    pub os: String,
    pub arch: String,
    /// The labels the hello declares.
    pub declared_labels: BTreeMap<String, String>,
    /// The labels the session's API key grants. The agent carries the declared labels that
    /// these or its operator grants allow ([`carried_labels`]); the store works them out with
    /// the grants it holds, in the same transaction.
    pub key_labels: BTreeMap<String, String>,
    pub session_id: String,
    pub remote_addr: Option<String>,
    /// The API key the session authenticated with.
    pub key_id: Option<String>,
    pub service_id: Option<ServiceId>,
    pub at: Timestamp,
}

/// The labels an agent carries: those it declares that are granted with the same value, by an
/// operator on the agent (`grants`, which win) or else by its API key. A label selects targets
/// for runs, so an agent never gives itself one, and an operator's grant takes effect only on
/// a label the host's own configuration declares.
pub fn carried_labels(
    declared: &BTreeMap<String, String>,
    key: &BTreeMap<String, String>,
    grants: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    declared
        .iter()
        .filter(|(k, v)| grants.get(*k).or_else(|| key.get(*k)) == Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What [`Store::agent_connected`](super::Store::agent_connected) did.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentConnectOutcome {
    /// The agent is registered (created or updated) and marked connected.
    Connected(Box<AgentRecord>),
    /// The agent was revoked; nothing changed.
    Revoked,
}

/// Which agents to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFilter {
    /// Only agents whose stored `connected` flag is this.
    pub connected: Option<bool>,
    /// Include revoked agents (default: yes).
    pub revoked: Option<bool>,
    /// Only agents that carry every one of these labels with exactly this value.
    pub labels: BTreeMap<String, String>,
}

/// The agent registry.
#[async_trait::async_trait]
pub trait AgentStore: Send + Sync {
    // ---- agents -----------------------------------------------------------------------------

    /// Registers the agent (or updates its row) and marks it connected by `session_id`, in one
    /// transaction; a revoked agent is refused and nothing changes.
    async fn agent_connected(&self, conn: &AgentConnection) -> StoreResult<AgentConnectOutcome>;
    /// Records that the session is alive. `false` when the agent was revoked or the session is
    /// no longer its current one: the session must close.
    async fn agent_seen(&self, id: &str, session_id: &str, at: Timestamp) -> StoreResult<bool>;
    /// Marks the agent disconnected, if `session_id` is still its current session.
    async fn agent_disconnected(
        &self,
        id: &str,
        session_id: &str,
        at: Timestamp,
    ) -> StoreResult<()>;
    /// Stores the agent's latest host facts (a JSON object), if `session_id` is still its
    /// current session.
    async fn agent_host_facts(
        &self,
        id: &str,
        session_id: &str,
        facts: &str,
        at: Timestamp,
    ) -> StoreResult<()>;
    async fn get_agent(&self, id: &str) -> StoreResult<Option<AgentRecord>>;
    /// Ordered by id.
    async fn list_agents(
        &self,
        filter: &AgentFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AgentRecord>>;
    /// Replaces the labels an operator granted to the agent and works out the labels it carries
    /// again ([`carried_labels`]), with `audit` in the same transaction; a connected agent's
    /// runs by label see them at once. `None` (and nothing written) when no such agent exists.
    async fn set_agent_label_grants(
        &self,
        id: &str,
        grants: &BTreeMap<String, String>,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<Option<AgentRecord>>;
    /// Marks the agent revoked (and disconnected), with `audit` in the same transaction.
    /// `false` (and nothing written) when no such unrevoked agent exists.
    async fn revoke_agent(
        &self,
        id: &str,
        by: &str,
        at: Timestamp,
        audit: Option<&NewAuditEntry>,
    ) -> StoreResult<bool>;
}
