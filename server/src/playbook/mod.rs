//! Playbooks: the pure core of the auto-remediation engine.
//!
//! This module owns the playbook **document** (parsing with size, depth and alias limits,
//! strict keys), its validation into a typed plan (every problem at once), **variables**
//! and secret **masking**, the **secrets** cipher and keyring, the **execution state machine**
//! (what to persist and what to do next, as a function of `(now, state, event)`), alert
//! **trigger** matching and the **circuit breaker**.
//!
//! It must not do I/O: no store, no HTTP, no clock, no spawned task. Time is a parameter;
//! the world (scripts, secrets) is reached through the caller's catalog. The driver that
//! loads executions, applies decisions in store transactions, sends webhooks and dispatches
//! runs lives elsewhere and stands on these functions.
//!
//! Layout:
//! - [`secrets`] — AES-256-GCM sealing with the name as associated data, key ids, rotation.

pub mod secrets;
