//! The playbook outbox: notices about executions (started, awaiting approval, decided,
//! finished, escalated, skipped by the circuit breaker), one row per (event, destination),
//! written with the execution change they announce ([`super::ExecutionWrite::notices`]) and
//! delivered, retried and recorded by the notice dispatcher (`engine::notices`). SQL in
//! `shared/notices.rs`.

use super::sql::JsonText;
use super::*;
use crate::domain::{Destination, TargetId, Timestamp};

/// One notice to queue with an execution's change.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotice {
    pub target_id: Option<TargetId>,
    /// The event name (`execution.started`, `execution.awaiting_approval`, …).
    pub event: String,
    pub destination: Destination,
    /// The event as sent (secrets already masked).
    pub payload: serde_json::Value,
}

/// A queued or finished notice.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NoticeRecord {
    pub id: i64,
    pub execution_id: i64,
    pub target_id: Option<TargetId>,
    pub event: String,
    pub destination: Destination,
    #[sqlx(try_from = "JsonText<serde_json::Value>")]
    pub payload: serde_json::Value,
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: Timestamp,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub external_ref: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// Where an execution's approval request to one Slack channel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalMessage {
    /// No approval request went to that channel.
    None,
    /// Queued, not delivered yet.
    Pending,
    /// Delivered: Slack's reference of the message (`"<channel id> <ts>"`), when it said.
    Delivered(Option<String>),
    /// It could not be delivered.
    Failed,
}

/// The event name of the approval request (the message a decision updates).
pub const AWAITING_APPROVAL_EVENT: &str = "execution.awaiting_approval";

/// The columns a [`NoticeRecord`] is read from (`destination` and `payload` are JSON text on both
/// backends).
pub(crate) const NOTICE_COLUMNS: &str = "id, execution_id, target_id, event, destination, \
    payload, state, attempts, next_attempt_at, last_status, last_error, external_ref, created_at, \
    finished_at";

/// The playbook outbox.
#[async_trait::async_trait]
pub trait NoticeStore: Send + Sync {
    /// Leases up to `limit` pending notices that are due and not leased by a live dispatcher.
    async fn claim_notices(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<NoticeRecord>>;
    /// Records an attempt's outcome and releases the lease.
    async fn finish_notice(&self, id: i64, result: &DeliveryResult) -> StoreResult<()>;
    /// When the next pending notice is due, if any.
    async fn next_notice_at(&self) -> StoreResult<Option<Timestamp>>;
    /// An execution's notices, oldest first.
    async fn list_notices(&self, execution_id: i64) -> StoreResult<Vec<NoticeRecord>>;
    /// Where the execution's approval request to `destination` stands (the newest one).
    async fn approval_message(
        &self,
        execution_id: i64,
        destination: &Destination,
    ) -> StoreResult<ApprovalMessage>;
}

pub(crate) fn approval_state(row: Option<(String, Option<String>)>) -> ApprovalMessage {
    match row {
        None => ApprovalMessage::None,
        Some((state, r)) => match DeliveryState::parse(&state) {
            Some(DeliveryState::Delivered) => ApprovalMessage::Delivered(r),
            Some(DeliveryState::Pending) => ApprovalMessage::Pending,
            _ => ApprovalMessage::Failed,
        },
    }
}

/// Admins' circuit breaker resets.
#[async_trait::async_trait]
pub trait BreakerStore: Send + Sync {
    /// Resets the breaker of one scope (`playbook`, `service` or `global`; `key` is the
    /// playbook or service id, 0 for global) at `at`, with its audit entry, in one transaction.
    async fn reset_breaker(
        &self,
        scope: &str,
        key: i64,
        at: Timestamp,
        actor: &str,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
}
