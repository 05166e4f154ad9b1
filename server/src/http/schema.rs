//! The vocabulary of response bodies that several resources share: timestamps and the
//! enumerations (priorities, states, kinds) as they appear on the wire.
//!
//! Each enumeration mirrors a domain or store type and is built from it by an exhaustive
//! `From`, so a new variant there fails to compile here until the API says how it is spelled;
//! a test pins each spelling to the source type's `as_str`. Nothing here is read from
//! requests; the types deserialize too so that the `medic` CLI reads answers back into them.

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::Timestamp;

/// A point in time: RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T18:27:47.123+00:00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(pub Timestamp);

impl PartialSchema for Time {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T18:27:47.123+00:00`",
            ))
            .into()
    }
}

impl ToSchema for Time {}

/// A 0/1 flag, as the v1 API answers booleans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bit(i32);

impl From<bool> for Bit {
    fn from(b: bool) -> Self {
        Self(i32::from(b))
    }
}

impl PartialSchema for Bit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(0))
            .maximum(Some(1))
            .description(Some("A boolean as the v1 API writes it: 0 or 1"))
            .into()
    }
}

impl ToSchema for Bit {}

impl From<Timestamp> for Time {
    fn from(t: Timestamp) -> Self {
        Self(t)
    }
}

/// `Option<Timestamp>` → `Option<Time>`.
pub fn time(t: Option<Timestamp>) -> Option<Time> {
    t.map(Time)
}

/// Declares a wire enumeration mirroring `$src`, variant for variant.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident from $src:ty { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl From<$src> for $name {
            fn from(v: $src) -> Self {
                match v {
                    $(<$src>::$variant => Self::$variant),+
                }
            }
        }

        #[cfg(test)]
        impl $name {
            /// Every source value's own spelling with its wire form.
            fn pairs() -> Vec<(serde_json::Value, serde_json::Value)> {
                vec![$((
                    serde_json::Value::from(<$src>::$variant.as_str()),
                    serde_json::to_value(Self::$variant).expect("wire"),
                )),+]
            }
        }
    };
}

wire_enum! {
    /// A permission an API key carries.
    KeyScope from crate::domain::Scope {
        Read = "read", Write = "write", Admin = "admin", Agent = "agent", Ingest = "ingest", Run = "run",
    }
}

wire_enum! {
    /// A service's priority; alerts page by it (p1 most urgent).
    Priority from crate::domain::Priority { P1 = "p1", P2 = "p2", P3 = "p3", P4 = "p4", P5 = "p5" }
}

wire_enum! {
    /// `new`: never heard from; `up`: within its deadline; `late`: past it, inside the grace
    /// period; `down`: past both.
    ServiceState from crate::domain::ServiceState { New = "new", Up = "up", Late = "late", Down = "down" }
}

wire_enum! {
    /// What a change to a service did (the label of its snapshot).
    SnapshotAction from crate::domain::SnapshotAction {
        Deactivate = "deactivate", Activate = "activate", Mute = "mute", Unmute = "unmute",
        Edit = "edit", BulkEdit = "bulk_edit", PriorityChange = "priority_change",
        TeamChange = "team_change", Delete = "delete",
    }
}

wire_enum! {
    /// Why an alert opened.
    AlertKind from crate::store::AlertKind {
        HeartbeatMissing = "heartbeat_missing", JobFailed = "job_failed",
        JobOverdue = "job_overdue", RunRefused = "run_refused",
    }
}

wire_enum! {
    /// Where an alert is in its life.
    AlertState from crate::store::AlertState {
        Open = "open", Acknowledged = "acknowledged", Resolved = "resolved",
    }
}

wire_enum! {
    /// A job run's state, from its signals.
    RunStatus from crate::store::RunStatus {
        Running = "running", Completed = "completed", Failed = "failed",
    }
}

wire_enum! {
    /// Where a run on an agent is.
    AgentRunStatus from crate::store::AgentRunStatus {
        Queued = "queued", Dispatched = "dispatched", Running = "running",
        Succeeded = "succeeded", Failed = "failed", TimedOut = "timed_out",
        Refused = "refused", Expired = "expired", Lost = "lost",
    }
}

wire_enum! {
    /// A script version's approval state.
    ScriptStatus from crate::store::ScriptStatus {
        Pending = "pending", Approved = "approved", Rejected = "rejected",
    }
}

wire_enum! {
    /// When a notification target is used, relative to its team's working hours.
    PagingPeriod from crate::domain::monitor::PagingPeriod {
        Always = "always", DuringHours = "during_hours", AfterHours = "after_hours",
    }
}

wire_enum! {
    /// What a notification says about its alert.
    EventKind from crate::notify::event::EventKind {
        Triggered = "triggered", Renotified = "renotified",
        Acknowledged = "acknowledged", Resolved = "resolved",
    }
}

wire_enum! {
    /// Where a notification's delivery is.
    DeliveryState from crate::store::DeliveryState {
        Pending = "pending", Delivered = "delivered", Failed = "failed",
    }
}

wire_enum! {
    /// Where a playbook execution is.
    ExecutionStatus from crate::playbook::machine::ExecutionStatus {
        PendingApproval = "pending_approval", Running = "running", Waiting = "waiting",
        Completed = "completed", Failed = "failed", Cancelled = "cancelled",
        Skipped = "skipped", Expired = "expired",
    }
}

wire_enum! {
    /// Where a step of an execution is.
    StepStatus from crate::playbook::machine::StepStatus {
        Running = "running", Waiting = "waiting", Completed = "completed", Failed = "failed",
        Interrupted = "interrupted", Cancelled = "cancelled",
    }
}

wire_enum! {
    /// How an execution's approval was decided.
    ApprovalOutcome from crate::playbook::machine::ApprovalOutcome {
        Approved = "approved", Rejected = "rejected", TimedOut = "timed_out",
        Expired = "expired",
    }
}

wire_enum! {
    /// What started an execution.
    ExecutionTrigger from crate::store::ExecutionTrigger {
        Manual = "manual", Webhook = "webhook", Alert = "alert",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_enum_is_spelled_as_its_source() {
        let all = [
            KeyScope::pairs(),
            Priority::pairs(),
            ServiceState::pairs(),
            SnapshotAction::pairs(),
            AlertKind::pairs(),
            AlertState::pairs(),
            RunStatus::pairs(),
            AgentRunStatus::pairs(),
            ScriptStatus::pairs(),
            PagingPeriod::pairs(),
            EventKind::pairs(),
            DeliveryState::pairs(),
            ExecutionStatus::pairs(),
            StepStatus::pairs(),
            ApprovalOutcome::pairs(),
            ExecutionTrigger::pairs(),
        ];
        for (source, wire) in all.into_iter().flatten() {
            assert_eq!(source, wire);
        }
    }

    #[test]
    fn times_are_rfc3339_strings() {
        let t = Timestamp::parse("2026-11-23T18:27:47.123Z").expect("time");
        assert_eq!(
            serde_json::to_value(Time(t)).expect("json"),
            serde_json::to_value(t).expect("json")
        );
    }
}
