//! Pure domain types and decisions.
//!
//! This module owns the vocabulary of Medic — ids, names, priorities, service states, alert kinds
//! and states, notification events and destinations, run statuses, API key scopes, run
//! statistics — as plain Rust values with their parsing rules ("parse, don't
//! validate"). It performs no I/O: nothing here touches the database, the network or the clock
//! (time is always a parameter).

pub mod alert;
pub mod apikey;
pub mod ids;
pub mod monitor;
pub mod run;
pub mod schedule;
pub mod service;
pub mod stats;
pub mod time;

pub use alert::{AlertKind, AlertState, Destination, EventKind};
pub use apikey::{ApiKeyId, KeyParseError, OwnerId, OwnerKind, Scope, Scopes};
pub use ids::{PlaybookId, ScriptId, TargetId, TeamId, WindowId};
pub use run::{AgentRunStatus, RunStatus, SignalKind};
pub use service::{
    HeartbeatName, NameError, Priority, ServiceId, ServiceState, SnapshotAction, SnapshotId,
};
pub use time::Timestamp;
