//! Alert vocabulary: what an alert is about, where it stands, what happened to it and where a
//! notification about it goes. Shared by the store (which records them) and `notify` (which
//! tells people), so neither needs the other.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    HeartbeatMissing,
    JobFailed,
    JobOverdue,
    /// An agent refused a run for a reason an operator must look at (see
    /// [`super::run::refusal_alerts`]).
    RunRefused,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeartbeatMissing => "heartbeat_missing",
            Self::JobFailed => "job_failed",
            Self::JobOverdue => "job_overdue",
            Self::RunRefused => "run_refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "heartbeat_missing" => Some(Self::HeartbeatMissing),
            "job_failed" => Some(Self::JobFailed),
            "job_overdue" => Some(Self::JobOverdue),
            "run_refused" => Some(Self::RunRefused),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "acknowledged" => Some(Self::Acknowledged),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The alert opened.
    Triggered,
    /// The alert is still open and unacknowledged; said again on the renotify cadence.
    Renotified,
    /// Someone took the alert.
    Acknowledged,
    /// The alert closed (the service recovered, was deactivated, or an operator resolved it).
    Resolved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Triggered => "triggered",
            Self::Renotified => "renotified",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "triggered" => Some(Self::Triggered),
            "renotified" => Some(Self::Renotified),
            "acknowledged" => Some(Self::Acknowledged),
            "resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}

/// Where one notification goes. Built by the monitor from a notification target (or from the
/// legacy `SLACK_CHANNEL_ID` / `PAGERDUTY_ROUTING_KEY` defaults) and stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// `chat.postMessage` to a channel with the server's bot token (`SLACK_API_TOKEN`).
    Slack { channel: String },
    /// PagerDuty Events API v2 with the service's routing key.
    Pagerduty { routing_key: String },
    /// A signed POST of the alert event's JSON.
    Webhook { url: String, secret: String },
}

impl Destination {
    pub fn channel(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Pagerduty { .. } => "pagerduty",
            Self::Webhook { .. } => "webhook",
        }
    }
}
