//! Outbound notifications.
//!
//! This module owns delivery to Slack, PagerDuty and generic webhooks: what a notification says
//! ([`event`]), and the SSRF guard ([`ssrf`]) that every user-settable outbound URL must pass
//! before Medic connects to it. It must not talk to the store directly: the monitor writes
//! notifications into the outbox and the dispatcher records outcomes through store methods.

pub mod event;
pub mod ssrf;
