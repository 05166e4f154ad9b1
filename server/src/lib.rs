//! Medic server: heartbeat monitoring and auto-remediation.
//!
//! # Layout
//!
//! - [`clock`] — the one source of "now": the wall clock, or a manual clock tests advance.
//! - [`config`] — the typed configuration (flags, environment, TOML file) and its validation.
//! - [`domain`] — pure types and decisions (names, priorities, states, key scopes, statistics,
//!   calendars, liveness and alert transitions).
//! - [`store`] — the storage trait and its SQLite and PostgreSQL implementations; all SQL, plus
//!   the group-commit heartbeat writer.
//! - [`auth`] — API key verification and the short-lived key cache.
//! - [`ratelimit`] — per-class GCRA rate limiting, in memory or shared through Redis.
//! - [`gateway`] — the agents' WebSocket sessions: handshake, heartbeats, drain, revocation.
//! - [`http`] — the router, middleware and one module per resource.
//! - [`notify`] — outbound notifications: Slack, PagerDuty and signed webhooks, one delivery
//!   attempt at a time, retry backoff, and the SSRF guard for user-set URLs.
//! - [`engine`] — the playbook engine: durable executions driven on the pure state machine.
//! - [`playbook`] — the pure core of auto-remediation: documents, plans, variables, secrets,
//!   the execution state machine, triggers and the circuit breaker.
//! - [`telemetry`] — logging and the Prometheus recorder.
//! - [`server`] — process lifecycle: start on a bound listener, drain on shutdown.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod monitor;
pub mod notify;
pub mod playbook;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod ui;
