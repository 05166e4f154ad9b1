//! The playbook outbox and circuit breaker resets on SQLite: the statements are shared
//! (`shared/notices.rs`).

use super::*;
use crate::domain::{Destination, Timestamp};
use crate::store::*;

#[async_trait::async_trait]
impl NoticeStore for SqliteStore {
    async fn claim_notices(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<NoticeRecord>> {
        Sql::claim_notices(&self.write, now, lease_until, limit).await
    }

    async fn finish_notice(&self, id: i64, res: &DeliveryResult) -> StoreResult<()> {
        Sql::finish_notice(&self.write, id, res).await
    }

    async fn next_notice_at(&self) -> StoreResult<Option<Timestamp>> {
        Sql::next_notice_at(&self.read).await
    }

    async fn list_notices(&self, execution_id: i64) -> StoreResult<Vec<NoticeRecord>> {
        Sql::list_notices(&self.read, execution_id).await
    }

    async fn approval_message(
        &self,
        execution_id: i64,
        destination: &Destination,
    ) -> StoreResult<ApprovalMessage> {
        Sql::approval_message(&self.write, execution_id, destination).await
    }
}

#[async_trait::async_trait]
impl BreakerStore for SqliteStore {
    async fn reset_breaker(
        &self,
        scope: &str,
        key: i64,
        at: Timestamp,
        actor: &str,
        audit: &NewAuditEntry,
    ) -> StoreResult<()> {
        Sql::reset_breaker(&self.write, scope, key, at, actor, audit).await
    }
}
