//! The audit log and [`AuditStore`]. SQL in `sqlite/audit.rs` and `postgres/audit.rs`.

use super::sql::JsonText;
use super::*;
use crate::domain::{ServiceId, Timestamp};

#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub action_type: String,
    pub actor: String,
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
