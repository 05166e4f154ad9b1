//! What a notification says, independent of where it goes.
//!
//! The monitor writes one [`Notification`] per (alert event, destination) into the outbox in the
//! same transaction as the alert change; the dispatcher later hands it to
//! [`super::Notifiers::deliver`]. The serialized form of [`AlertEvent`] is stored in the outbox
//! and is also, unchanged, the body of a webhook delivery — its schema is public
//! (`docs/alerts.md`) and only grows by adding optional fields.

use serde::{Deserialize, Serialize};

use crate::domain::{AlertKind, AlertState, Priority, Timestamp};
pub use crate::domain::{Destination, EventKind};

/// Version of the webhook body's schema (`schema_version`); bumped only on incompatible change.
pub const WEBHOOK_SCHEMA_VERSION: u32 = 1;

/// The service an alert is about, as it was when the event happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRef {
    pub id: i64,
    /// The heartbeat name (unique).
    pub name: String,
    /// The display name, may be empty.
    pub service_name: String,
    pub environment: Option<String>,
    pub team: String,
    pub priority: Priority,
    pub runbook: Option<String>,
}

/// One alert event: the outbox payload and the webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub schema_version: u32,
    /// Unique per event; receivers use it to drop a redelivered event.
    pub event_id: String,
    pub event: EventKind,
    /// When the event happened.
    pub at: Timestamp,
    pub alert: AlertRef,
    pub service: ServiceRef,
    /// One line for humans, e.g. "payments-nightly: no heartbeat for 10m (expected every 5m)".
    pub summary: String,
    /// The server's public URL for the alert, when `MEDIC_PUBLIC_URL` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The alert an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRef {
    pub id: i64,
    pub kind: AlertKind,
    pub state: AlertState,
    /// Stable for the alert's whole life; PagerDuty's `dedup_key`. Different for each alert
    /// kind and each incident, so unrelated alerts never collide.
    pub dedup_key: String,
    pub opened_at: Timestamp,
    /// Who acknowledged or resolved it (an API key name or `slack:<user>`), when someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the receiver. `external_ref` is what the receiver calls it (Slack's message
    /// `ts`, PagerDuty's dedup key), when it says.
    Delivered {
        status: u16,
        external_ref: Option<String>,
    },
    /// Worth trying again later: a timeout, a connection error, 429 or 5xx.
    Retry { status: Option<u16>, error: String },
    /// Trying again cannot help: 4xx other than 408/429, a URL the SSRF guard refuses, a
    /// destination that is not configured.
    Failed { status: Option<u16>, error: String },
}
