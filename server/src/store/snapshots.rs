//! Snapshots of services (the before-image of every change) and [`SnapshotStore`]. SQL in
//! `shared/snapshots.rs`.

use super::*;
use crate::domain::{ServiceId, SnapshotAction, SnapshotId, Timestamp};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Snapshot {
    #[sqlx(rename = "id")]
    pub snapshot_id: SnapshotId,
    pub service_id: ServiceId,
    pub action_type: SnapshotAction,
    /// The service as it was before the change.
    pub snapshot_data: Service,
    /// The API key that made the change.
    pub actor: String,
    /// Whom it said it acted for (`X-Actor`).
    pub on_behalf_of: Option<String>,
    pub created_at: Timestamp,
    pub restored_at: Option<Timestamp>,
    /// The API key that restored it.
    pub restored_by: Option<String>,
    /// Whom that key said it restored for (the body's `actor`, else `X-Actor`).
    pub restored_on_behalf_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotFilter {
    pub service_id: Option<ServiceId>,
    pub action_type: Option<SnapshotAction>,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

// Returned once per restore, never stored in bulk: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RestoreOutcome {
    Restored(Service),
    NotFound,
    AlreadyRestored,
    /// Another live service now holds the snapshot's name.
    NameTaken,
}

/// Snapshots of services, and restoring them.
#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    // ---- snapshots --------------------------------------------------------------------------

    async fn list_snapshots(
        &self,
        filter: &SnapshotFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Snapshot>>;
    async fn get_snapshot(&self, id: SnapshotId) -> StoreResult<Option<Snapshot>>;
    /// Puts the service back as the snapshot recorded it (undeleting it if needed), snapshotting
    /// the current state first, and marks the snapshot restored — all in one transaction.
    /// Restores the service as the snapshot recorded it, with the audit entry `audit` builds
    /// from the restored service in the same transaction.
    async fn restore_snapshot(
        &self,
        id: SnapshotId,
        actor: &Actor,
        audit: Option<AuditWith<'_, Service>>,
    ) -> StoreResult<RestoreOutcome>;
}
