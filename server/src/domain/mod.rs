//! Pure domain types and decisions.
//!
//! This module owns the vocabulary of Medic — ids, names, priorities, service states, API key
//! scopes, run statistics — as plain Rust values with their parsing rules ("parse, don't
//! validate"). It performs no I/O: nothing here touches the database, the network or the clock
//! (time is always a parameter).

pub mod apikey;
pub mod monitor;
pub mod schedule;
pub mod service;
pub mod stats;
pub mod time;

pub use apikey::{ApiKeyId, KeyParseError, Scope, Scopes};
pub use service::{
    HeartbeatName, NameError, Priority, ServiceId, ServiceState, SnapshotAction, SnapshotId,
};
pub use time::Timestamp;
