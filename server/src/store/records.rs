//! The stored JSON forms of values kept in JSON columns: a service as a snapshot records it
//! (`snapshots.snapshot_data`) and a notification target's `config`.
//!
//! These are the only store-side types that derive `Serialize`: the column's format is a
//! contract with every row already written, so it is spelled out here, apart from the types the
//! rest of the server works with. A field added to [`Service`] must be added here with a
//! `#[serde(default)]` so that older snapshots still read.

use serde::{Deserialize, Serialize};

use super::{Monitoring, Mute, ScheduleSpec, Service, TargetConfig};
use crate::domain::{Priority, ServiceId, ServiceState, Timestamp};

#[derive(Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    id: ServiceId,
    heartbeat_name: String,
    service_name: String,
    environment: Option<String>,
    active: bool,
    interval_seconds: i64,
    threshold: i32,
    grace_seconds: i64,
    team: String,
    priority: Priority,
    runbook: Option<String>,
    state: ServiceState,
    mute: Option<MuteRecord>,
    max_duration_ms: Option<i64>,
    last_heartbeat_at: Option<Timestamp>,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// Added with the monitor: snapshots taken before it read as the defaults.
    #[serde(default)]
    monitoring: MonitoringRecord,
}

#[derive(Serialize, Deserialize)]
struct MuteRecord {
    at: Timestamp,
    until: Option<Timestamp>,
    reason: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct ScheduleRecord {
    cron: String,
    timezone: String,
}

#[derive(Serialize, Deserialize)]
struct MonitoringRecord {
    #[serde(default)]
    schedule: Option<ScheduleRecord>,
    #[serde(default)]
    renotify_seconds: Option<i64>,
    #[serde(default)]
    parent_id: Option<ServiceId>,
    #[serde(default = "yes")]
    alert_on_failure: bool,
}

fn yes() -> bool {
    true
}

impl Default for MonitoringRecord {
    fn default() -> Self {
        (&Monitoring::default()).into()
    }
}

impl From<&Service> for ServiceRecord {
    fn from(s: &Service) -> Self {
        Self {
            id: s.id,
            heartbeat_name: s.heartbeat_name.clone(),
            service_name: s.service_name.clone(),
            environment: s.environment.clone(),
            active: s.active,
            interval_seconds: s.interval_seconds,
            threshold: s.threshold,
            grace_seconds: s.grace_seconds,
            team: s.team.clone(),
            priority: s.priority,
            runbook: s.runbook.clone(),
            state: s.state,
            mute: s.mute.as_ref().map(|m| MuteRecord {
                at: m.at,
                until: m.until,
                reason: m.reason.clone(),
            }),
            max_duration_ms: s.max_duration_ms,
            last_heartbeat_at: s.last_heartbeat_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            monitoring: (&s.monitoring).into(),
        }
    }
}

impl From<ServiceRecord> for Service {
    fn from(r: ServiceRecord) -> Self {
        Self {
            id: r.id,
            heartbeat_name: r.heartbeat_name,
            service_name: r.service_name,
            environment: r.environment,
            active: r.active,
            interval_seconds: r.interval_seconds,
            threshold: r.threshold,
            grace_seconds: r.grace_seconds,
            team: r.team,
            priority: r.priority,
            runbook: r.runbook,
            state: r.state,
            mute: r.mute.map(|m| Mute {
                at: m.at,
                until: m.until,
                reason: m.reason,
            }),
            max_duration_ms: r.max_duration_ms,
            last_heartbeat_at: r.last_heartbeat_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            monitoring: r.monitoring.into(),
        }
    }
}

impl From<&Monitoring> for MonitoringRecord {
    fn from(m: &Monitoring) -> Self {
        Self {
            schedule: m.schedule.as_ref().map(|s| ScheduleRecord {
                cron: s.cron.clone(),
                timezone: s.timezone.clone(),
            }),
            renotify_seconds: m.renotify_seconds,
            parent_id: m.parent_id,
            alert_on_failure: m.alert_on_failure,
        }
    }
}

impl From<MonitoringRecord> for Monitoring {
    fn from(m: MonitoringRecord) -> Self {
        Self {
            schedule: m.schedule.map(|s| ScheduleSpec {
                cron: s.cron,
                timezone: s.timezone,
            }),
            renotify_seconds: m.renotify_seconds,
            parent_id: m.parent_id,
            alert_on_failure: m.alert_on_failure,
        }
    }
}

/// A target's `config` column, tagged by `kind`. Secrets are stored as given and masked by the
/// HTTP layer.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum TargetConfigRecord {
    Slack { channel: String },
    Pagerduty { routing_key: String },
    Webhook { url: String, secret: String },
}

impl From<&TargetConfig> for TargetConfigRecord {
    fn from(c: &TargetConfig) -> Self {
        match c.clone() {
            TargetConfig::Slack { channel } => Self::Slack { channel },
            TargetConfig::Pagerduty { routing_key } => Self::Pagerduty { routing_key },
            TargetConfig::Webhook { url, secret } => Self::Webhook { url, secret },
        }
    }
}

impl From<TargetConfigRecord> for TargetConfig {
    fn from(c: TargetConfigRecord) -> Self {
        match c {
            TargetConfigRecord::Slack { channel } => Self::Slack { channel },
            TargetConfigRecord::Pagerduty { routing_key } => Self::Pagerduty { routing_key },
            TargetConfigRecord::Webhook { url, secret } => Self::Webhook { url, secret },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot written before the monitor existed (no `monitoring`) reads with the defaults,
    /// and a record survives the round trip unchanged.
    #[test]
    fn old_snapshots_read_and_records_round_trip() {
        let old = r#"{"id":7,"heartbeat_name":"db-backup","service_name":"db","environment":null,
            "active":true,"interval_seconds":300,"threshold":1,"grace_seconds":0,"team":"ops",
            "priority":"p2","runbook":null,"state":"up","mute":null,"max_duration_ms":null,
            "last_heartbeat_at":null,"created_at":"2026-11-23T18:27:47.123+00:00","updated_at":"2026-11-23T18:27:47.123+00:00"}"#;
        let record: ServiceRecord = serde_json::from_str(old).expect("an old snapshot reads");
        let service = Service::from(record);
        assert_eq!(service.monitoring, Monitoring::default());
        let again = serde_json::to_string(&ServiceRecord::from(&service)).unwrap();
        let back = Service::from(serde_json::from_str::<ServiceRecord>(&again).unwrap());
        assert_eq!(back, service);

        let target = TargetConfig::Webhook {
            url: "https://example.com/hook".into(),
            secret: "s".into(),
        };
        let text = serde_json::to_string(&TargetConfigRecord::from(&target)).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"webhook","url":"https://example.com/hook","secret":"s"}"#
        );
        let read: TargetConfigRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(TargetConfig::from(read), target);
    }
}
