//! Outbound notifications.
//!
//! This module will own delivery to Slack, PagerDuty and generic webhooks. Today it holds the
//! SSRF guard ([`ssrf`]) that every user-settable outbound URL must pass before Medic connects
//! to it. It must not talk to the store directly: delivery state goes through store methods.

pub mod ssrf;
