//! Outbound notifications.
//!
//! This module owns delivery to Slack, PagerDuty and generic webhooks: what a notification says
//! ([`event`]), how each channel renders and signs it ([`slack`], [`pagerduty`], [`webhook`]),
//! one delivery attempt ([`Notifiers::deliver`]), when to try again ([`retry_delay`]), and the
//! SSRF guard ([`ssrf`]) that every user-settable outbound URL must pass before Medic connects
//! to it. It must not talk to the store directly: the monitor writes notifications into the
//! outbox and the dispatcher records outcomes through store methods.

mod deliver;
pub mod event;
pub mod pagerduty;
pub mod playbook;
mod retry;
#[cfg(test)]
pub(crate) mod sample;
pub mod slack;
pub mod ssrf;
pub mod webhook;

pub use deliver::{
    DEFAULT_PAGERDUTY_EVENTS_URL, DEFAULT_SLACK_API_URL, DEFAULT_TIMEOUT, GuardRefusal, Notifiers,
    NotifiersError, NotifySettings, guarded_client, read_capped, transport_error_text,
};
pub use event::{AlertEvent, AlertRef, Destination, EventKind, Outcome, ServiceRef};
pub use retry::{BASE_DELAY, MAX_ATTEMPTS, MAX_DELAY, MIN_DELAY, delay_ceiling, retry_delay};
