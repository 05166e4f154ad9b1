//! Medic server: heartbeat monitoring and auto-remediation.
//!
//! # Layout
//!
//! - [`domain`] — pure types and decisions (names, priorities, states, key scopes, statistics).
//! - [`store`] — the storage trait and its SQLite and PostgreSQL implementations; all SQL.
#![forbid(unsafe_code)]

pub mod domain;
pub mod store;
