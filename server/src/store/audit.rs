//! The audit log and [`AuditStore`]. SQL in `shared/audit.rs`.

use super::sql::JsonText;
use super::*;
use crate::domain::{ServiceId, Timestamp};

/// Who made a change: the authenticated key, and whom it says it acted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The authenticated API key as `name (id)`, `bootstrap-admin`, `anonymous`, or the
    /// component that acted (the command line, Slack).
    pub name: String,
    /// The `X-Actor` header (or a restore's `actor`), recorded as told and never trusted.
    pub on_behalf_of: Option<String>,
}

impl Actor {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            on_behalf_of: None,
        }
    }

    /// One line for the places that hold a single name (a window's or a script version's
    /// author, an alert's acknowledger): `alice via ops (4f1c…)`, or the key alone.
    pub fn label(&self) -> String {
        match &self.on_behalf_of {
            Some(o) => format!("{o} via {}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub action_type: String,
    /// Who acted: the authenticated API key (its name and id), never a name the caller sent.
    pub actor: String,
    /// Whom the caller says it acted for (`X-Actor`), as told; absent when it said nothing.
    pub on_behalf_of: Option<String>,
    pub service_id: Option<ServiceId>,
    pub execution_id: Option<i64>,
    pub details: serde_json::Value,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub action_type: String,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    pub service_id: Option<ServiceId>,
    pub execution_id: Option<i64>,
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub details: serde_json::Value,
    #[sqlx(rename = "created_at")]
    pub timestamp: Timestamp,
}

/// Builds a change's audit entry from the row the change produced; the store writes it in the
/// change's own transaction.
pub type AuditWith<'a, T> = &'a (dyn Fn(&T) -> NewAuditEntry + Sync);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditFilter {
    pub execution_id: Option<i64>,
    pub service_id: Option<ServiceId>,
    pub action_type: Option<String>,
    pub actor: Option<String>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

/// The audit log.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    // ---- audit log --------------------------------------------------------------------------

    async fn append_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>>;
}
