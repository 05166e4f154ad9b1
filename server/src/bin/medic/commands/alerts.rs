//! `medic alerts …`.

use clap::{Args, Subcommand};

use super::{Paging, service_id};
use crate::client::{Client, Failure, query};
use crate::output::{self, Format};

const COLUMNS: &[&str] = &[
    "alert_id",
    "service_id",
    "name",
    "kind",
    "state",
    "priority",
    "created_at",
    "acknowledged_by",
];

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List alerts.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one alert.
    Show { alert_id: i64 },
    /// Acknowledge an open alert (re-notifications stop).
    Ack { alert_id: i64 },
    /// Resolve an open or acknowledged alert.
    Resolve { alert_id: i64 },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// open, acknowledged, resolved or active (comma-separated).
    #[arg(long)]
    state: Option<String>,
    /// Only this service's alerts (id or heartbeat name).
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    team: Option<String>,
    #[arg(long)]
    priority: Option<String>,
    /// Opened at or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    #[command(flatten)]
    paging: Paging,
}

pub fn run(c: &Client, format: Format, cmd: &Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::List(a) => {
            let service = a.service.as_deref().map(|s| service_id(c, s)).transpose()?;
            let mut pairs = vec![
                ("state", a.state.clone()),
                ("service_id", service.map(|s| s.to_string())),
                ("kind", a.kind.clone()),
                ("team", a.team.clone()),
                ("priority", a.priority.clone()),
                ("since", a.since.clone()),
            ];
            pairs.extend(a.paging.pairs());
            let ans = c.get(&format!("/v2/alerts{}", query(&pairs)))?;
            output::list(format, &ans, COLUMNS)
        }
        Cmd::Show { alert_id } => {
            output::object(format, &c.get(&format!("/v2/alerts/{alert_id}"))?)
        }
        Cmd::Ack { alert_id } => output::done(
            format,
            &c.post(&format!("/v2/alerts/{alert_id}/ack"), None)?,
        ),
        Cmd::Resolve { alert_id } => output::done(
            format,
            &c.post(&format!("/v2/alerts/{alert_id}/resolve"), None)?,
        ),
    }
}
