//! Maintenance windows, teams, targets, API keys, agents, audit, snapshots and health.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Paging, from_now, key_value, service_id};
use crate::client::{Client, Failure, query, seg};
use crate::duration;
use crate::output::{self, Format};
use medic_server::http::api_keys::CreatedKeyOut;
use medic_server::http::health::HealthOut;

// ---- maintenance --------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum MaintenanceCmd {
    /// Open a window: one-time (`--for`, or `--start`/`--end`) or recurring (`--cron`).
    Create(WindowArgs),
    /// List windows.
    #[command(visible_alias = "ls")]
    List {
        /// Only windows active now.
        #[arg(long)]
        active: bool,
        /// Only this service's windows (id or heartbeat name).
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        team_id: Option<i64>,
    },
    /// Show one window.
    Show { window_id: i64 },
    /// End a window now (deletes it).
    End { window_id: i64 },
}

#[derive(Debug, Args)]
pub struct WindowArgs {
    /// The service it covers (id or heartbeat name).
    #[arg(long, conflicts_with_all = ["team_id", "global"])]
    service: Option<String>,
    /// The team it covers.
    #[arg(long)]
    team_id: Option<i64>,
    /// Every service.
    #[arg(long)]
    global: bool,
    /// One-time, from now for this long, e.g. 2h.
    #[arg(long = "for", value_parser = duration::arg, conflicts_with_all = ["start", "cron"])]
    for_: Option<Duration>,
    /// One-time start (RFC 3339; default now).
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// One-time end (RFC 3339).
    #[arg(long)]
    end: Option<String>,
    /// Recurring: a cron expression, e.g. "0 3 * * sun".
    #[arg(long, requires = "duration", conflicts_with = "end")]
    cron: Option<String>,
    /// Recurring: the cron expression's IANA time zone (default UTC).
    #[arg(long, requires = "cron")]
    timezone: Option<String>,
    /// Recurring: how long each window lasts, e.g. 1h.
    #[arg(long, value_parser = duration::arg)]
    duration: Option<Duration>,
    #[arg(long)]
    reason: Option<String>,
}

pub fn maintenance(c: &Client, format: Format, cmd: &MaintenanceCmd) -> Result<(), Failure> {
    const COLUMNS: &[&str] = &[
        "window_id",
        "scope",
        "service_id",
        "team_id",
        "window.kind",
        "window.starts_at",
        "window.ends_at",
        "window.cron",
        "window.duration_minutes",
        "active",
        "reason",
    ];
    match cmd {
        MaintenanceCmd::Create(a) => {
            let (scope, service, team) = match (&a.service, a.team_id, a.global) {
                (Some(s), None, false) => ("service", Some(service_id(c, s)?), None),
                (None, Some(t), false) => ("team", None, Some(t)),
                (None, None, true) => ("global", None, None),
                _ => {
                    return Err(Failure::Usage(
                        "give exactly one of --service, --team-id or --global".to_owned(),
                    ));
                }
            };
            let window = if let Some(cron) = &a.cron {
                let d = a.duration.expect("clap requires --duration");
                if d.as_secs() % 60 != 0 {
                    return Err(Failure::Usage(
                        "--duration must be whole minutes".to_owned(),
                    ));
                }
                json!({"kind": "recurring", "cron": cron,
                       "timezone": a.timezone.clone().unwrap_or_else(|| "UTC".to_owned()),
                       "duration_minutes": d.as_secs() / 60})
            } else if let Some(d) = a.for_ {
                json!({"kind": "one_time", "starts_at": from_now(Duration::ZERO)?,
                       "ends_at": from_now(d)?})
            } else if let Some(end) = &a.end {
                let start = match &a.start {
                    Some(s) => s.clone(),
                    None => from_now(Duration::ZERO)?,
                };
                json!({"kind": "one_time", "starts_at": start, "ends_at": end})
            } else {
                return Err(Failure::Usage(
                    "say when: --for, --start/--end, or --cron with --duration".to_owned(),
                ));
            };
            let body = json!({"scope": scope, "service_id": service, "team_id": team,
                              "window": window, "reason": a.reason});
            output::object(format, &c.post("/v2/maintenance-windows", Some(&body))?)
        }
        MaintenanceCmd::List {
            active,
            service,
            team_id,
        } => {
            let service = service.as_deref().map(|s| service_id(c, s)).transpose()?;
            let q = query(&[
                ("active", active.then(|| "true".to_owned())),
                ("service_id", service.map(|s| s.to_string())),
                ("team_id", team_id.map(|s| s.to_string())),
            ]);
            output::list(
                format,
                &c.get(&format!("/v2/maintenance-windows{q}"))?,
                COLUMNS,
            )
        }
        MaintenanceCmd::Show { window_id } => output::object(
            format,
            &c.get(&format!("/v2/maintenance-windows/{window_id}"))?,
        ),
        MaintenanceCmd::End { window_id } => output::done(
            format,
            &c.delete(&format!("/v2/maintenance-windows/{window_id}"))?,
        ),
    }
}

// ---- teams and targets --------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum TeamCmd {
    #[command(visible_alias = "ls")]
    List(Paging),
    Show {
        team_id: i64,
    },
    /// Create a team.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        slack_channel: Option<String>,
        /// Working hours as the API's JSON object ({"timezone", "ranges"}).
        #[arg(long)]
        working_hours: Option<String>,
    },
    /// Change a team.
    Update {
        team_id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        slack_channel: Option<String>,
        #[arg(long)]
        working_hours: Option<String>,
    },
    Delete {
        team_id: i64,
    },
}

fn json_arg(name: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::Usage(format!("{name}: not JSON: {e}")))
}

pub fn teams(c: &Client, format: Format, cmd: &TeamCmd) -> Result<(), Failure> {
    match cmd {
        TeamCmd::List(p) => output::list(
            format,
            &c.get(&format!("/v2/teams{}", query(&p.pairs())))?,
            &[
                "team_id",
                "name",
                "slack_channel",
                "working_hours.timezone",
                "updated_at",
            ],
        ),
        TeamCmd::Show { team_id } => {
            output::object(format, &c.get(&format!("/v2/teams/{team_id}"))?)
        }
        TeamCmd::Create {
            name,
            slack_channel,
            working_hours,
        } => {
            let mut body = json!({"name": name});
            if let Some(s) = slack_channel {
                body["slack_channel"] = json!(s);
            }
            if let Some(w) = working_hours {
                body["working_hours"] = json_arg("--working-hours", w)?;
            }
            output::object(format, &c.post("/v2/teams", Some(&body))?)
        }
        TeamCmd::Update {
            team_id,
            name,
            slack_channel,
            working_hours,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(s) = slack_channel {
                body["slack_channel"] = json!(s);
            }
            if let Some(w) = working_hours {
                body["working_hours"] = json_arg("--working-hours", w)?;
            }
            output::object(format, &c.patch(&format!("/v2/teams/{team_id}"), &body)?)
        }
        TeamCmd::Delete { team_id } => {
            output::done(format, &c.delete(&format!("/v2/teams/{team_id}"))?)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum TargetCmd {
    /// A team's or a service's targets.
    #[command(visible_alias = "ls")]
    List(Owner),
    /// Add a target (slack, webhook, pagerduty, email… as the server knows them).
    Create {
        #[command(flatten)]
        owner: Owner,
        #[arg(long)]
        kind: String,
        /// The kind's configuration as JSON, e.g. '{"url": "https://…"}'.
        #[arg(long)]
        config: String,
        #[arg(long)]
        priority: Option<i32>,
        /// always, during_hours or after_hours.
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
    /// Change a target.
    Update {
        target_id: i64,
        #[arg(long)]
        config: Option<String>,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
    Delete {
        target_id: i64,
    },
    /// A webhook target's deliveries.
    Deliveries {
        target_id: i64,
        #[command(flatten)]
        paging: Paging,
    },
}

#[derive(Debug, Args)]
pub struct Owner {
    #[arg(long, required_unless_present = "service", conflicts_with = "service")]
    team_id: Option<i64>,
    /// A service id or heartbeat name.
    #[arg(long)]
    service: Option<String>,
}

impl Owner {
    fn path(&self, c: &Client) -> Result<String, Failure> {
        match (&self.team_id, &self.service) {
            (Some(t), _) => Ok(format!("/v2/teams/{t}/targets")),
            (None, Some(s)) => Ok(format!("/v2/services/{}/targets", service_id(c, s)?)),
            (None, None) => Err(Failure::Usage("give --team-id or --service".to_owned())),
        }
    }
}

pub fn targets(c: &Client, format: Format, cmd: &TargetCmd) -> Result<(), Failure> {
    match cmd {
        TargetCmd::List(o) => output::list(
            format,
            &c.get(&o.path(c)?)?,
            &[
                "target_id",
                "kind",
                "priority",
                "period",
                "enabled",
                "team_id",
                "service_id",
            ],
        ),
        TargetCmd::Create {
            owner,
            kind,
            config,
            priority,
            period,
            enabled,
        } => {
            let body = json!({"kind": kind, "config": json_arg("--config", config)?,
                              "priority": priority, "period": period, "enabled": enabled});
            output::object(format, &c.post(&owner.path(c)?, Some(&body))?)
        }
        TargetCmd::Update {
            target_id,
            config,
            priority,
            period,
            enabled,
        } => {
            let mut body = json!({});
            if let Some(cfg) = config {
                body["config"] = json_arg("--config", cfg)?;
            }
            if let Some(p) = priority {
                body["priority"] = json!(p);
            }
            if let Some(p) = period {
                body["period"] = json!(p);
            }
            if let Some(e) = enabled {
                body["enabled"] = json!(e);
            }
            output::object(
                format,
                &c.patch(&format!("/v2/targets/{target_id}"), &body)?,
            )
        }
        TargetCmd::Delete { target_id } => {
            output::done(format, &c.delete(&format!("/v2/targets/{target_id}"))?)
        }
        TargetCmd::Deliveries { target_id, paging } => output::list(
            format,
            &c.get(&format!(
                "/v2/webhooks/{target_id}/deliveries{}",
                query(&paging.pairs())
            ))?,
            &[
                "delivery_id",
                "alert_id",
                "event",
                "state",
                "attempts",
                "last_status",
                "created_at",
            ],
        ),
    }
}

// ---- API keys -----------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    #[command(visible_alias = "ls")]
    List(Paging),
    /// Create a key; the key itself is shown once.
    Create {
        #[arg(long)]
        name: String,
        /// read, write, admin, agent, ingest, run (repeatable or comma-separated).
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Expiry (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        /// A rate-limit tier.
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        rate_limit_per_minute: Option<u32>,
        /// A label granted to the agents that connect with this key (repeatable KEY=VALUE).
        #[arg(long = "label", value_parser = key_value)]
        labels: Vec<(String, String)>,
    },
    /// Revoke a key.
    Revoke { key_id: String },
}

pub fn keys(c: &Client, format: Format, cmd: &KeyCmd) -> Result<(), Failure> {
    match cmd {
        KeyCmd::List(p) => output::list(
            format,
            &c.get(&format!("/v2/api-keys{}", query(&p.pairs())))?,
            &[
                "id",
                "name",
                "scopes",
                "status",
                "owner_id",
                "created_at",
                "expires_at",
                "labels",
            ],
        ),
        KeyCmd::Create {
            name,
            scopes,
            expires_at,
            tier,
            rate_limit_per_minute,
            labels,
        } => {
            let labels: BTreeMap<&str, &str> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut body = json!({"name": name, "scopes": scopes, "expires_at": expires_at,
                                  "tier": tier, "rate_limit_per_minute": rate_limit_per_minute});
            if !labels.is_empty() {
                body["labels"] = json!(labels);
            }
            let ans = c.post("/v2/api-keys", Some(&body))?;
            if output::machine(format, &ans.results)? {
                return Ok(());
            }
            let created: CreatedKeyOut = ans.decode()?;
            let record = serde_json::to_value(&created.record).unwrap_or_default();
            output::show(&record);
            outln!("Key (shown once, store it now):\n{}", created.key);
            Ok(())
        }
        KeyCmd::Revoke { key_id } => {
            output::done(format, &c.delete(&format!("/v2/api-keys/{}", seg(key_id)))?)
        }
    }
}

// ---- agents -------------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// List agents.
    #[command(visible_alias = "ls")]
    List {
        /// Only agents with this label (repeatable KEY=VALUE).
        #[arg(long = "label", value_parser = key_value)]
        labels: Vec<(String, String)>,
        /// Only connected (true) or disconnected (false) agents.
        #[arg(long)]
        connected: Option<bool>,
        /// Only revoked (true) or unrevoked (false) agents.
        #[arg(long)]
        revoked: Option<bool>,
        #[command(flatten)]
        paging: Paging,
    },
    Show {
        agent_id: String,
    },
    /// Revoke an agent (it is disconnected and refused from then on).
    Revoke {
        agent_id: String,
    },
    /// Grant labels to an agent, or revoke grants, without re-keying its host. It carries a
    /// granted label its configuration declares, at once, also while connected.
    #[command(
        after_help = "Examples:\n  medic agents label backup-1 role=backup\n  \
                            medic agents label backup-1 --remove role"
    )]
    Label {
        agent_id: String,
        /// Labels to grant (KEY=VALUE; replaces a grant of the same key).
        #[arg(value_parser = key_value)]
        labels: Vec<(String, String)>,
        /// A granted label to revoke (repeatable KEY).
        #[arg(long = "remove", value_name = "KEY")]
        remove: Vec<String>,
    },
}

pub fn agents(c: &Client, format: Format, cmd: &AgentCmd) -> Result<(), Failure> {
    match cmd {
        AgentCmd::List {
            labels,
            connected,
            revoked,
            paging,
        } => {
            let keys: Vec<String> = labels.iter().map(|(k, _)| format!("label.{k}")).collect();
            let mut pairs: Vec<(&str, Option<String>)> = labels
                .iter()
                .zip(&keys)
                .map(|((_, v), k)| (k.as_str(), Some(v.clone())))
                .collect();
            pairs.push(("connected", connected.map(|b| b.to_string())));
            pairs.push(("revoked", revoked.map(|b| b.to_string())));
            pairs.extend(paging.pairs());
            output::list(
                format,
                &c.get(&format!("/v2/agents{}", query(&pairs)))?,
                &[
                    "agent_id",
                    "hostname",
                    "status",
                    "connected",
                    "agent_version",
                    "labels",
                    "last_seen_at",
                ],
            )
        }
        AgentCmd::Show { agent_id } => {
            output::object(format, &c.get(&format!("/v2/agents/{}", seg(agent_id)))?)
        }
        AgentCmd::Revoke { agent_id } => {
            output::done(format, &c.delete(&format!("/v2/agents/{}", seg(agent_id)))?)
        }
        AgentCmd::Label {
            agent_id,
            labels,
            remove,
        } => {
            if labels.is_empty() && remove.is_empty() {
                return Err(Failure::Usage(
                    "give labels to grant (KEY=VALUE) or --remove KEY".to_owned(),
                ));
            }
            if let Some((k, _)) = labels.iter().find(|(k, _)| remove.contains(k)) {
                return Err(Failure::Usage(format!(
                    "label {k:?} is both granted and removed"
                )));
            }
            let path = format!("/v2/agents/{}", seg(agent_id));
            let mut grants: BTreeMap<String, Value> = c
                .get(&path)?
                .results
                .get("label_grants")
                .and_then(Value::as_object)
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default();
            for k in remove {
                if grants.remove(k).is_none() {
                    eprintln!("medic: {k:?} was not granted to {agent_id}");
                }
            }
            for (k, v) in labels {
                grants.insert(k.clone(), Value::String(v.clone()));
            }
            let answer = c.put(&format!("{path}/labels"), &json!({ "labels": grants }))?;
            if output::machine(format, &answer.results)? {
                return Ok(());
            }
            outln!("{}", answer.message);
            let a = &answer.results;
            output::show(&json!({
                "agent_id": a.get("agent_id"),
                "labels": a.get("labels"),
                "declared_labels": a.get("declared_labels"),
                "key_labels": a.get("key_labels"),
                "label_grants": a.get("label_grants"),
            }));
            Ok(())
        }
    }
}

// ---- audit --------------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Query the audit log, newest first.
    #[command(visible_alias = "ls")]
    Query {
        /// A service id or heartbeat name.
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        execution_id: Option<i64>,
        #[arg(long)]
        action_type: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// From (RFC 3339 or a date).
        #[arg(long)]
        start_date: Option<String>,
        /// Until (RFC 3339 or a date).
        #[arg(long)]
        end_date: Option<String>,
        /// Print CSV as the server exports it.
        #[arg(long)]
        csv: bool,
        #[command(flatten)]
        paging: Paging,
    },
}

pub fn audit(c: &Client, format: Format, cmd: &AuditCmd) -> Result<(), Failure> {
    let AuditCmd::Query {
        service,
        execution_id,
        action_type,
        actor,
        start_date,
        end_date,
        csv,
        paging,
    } = cmd;
    let service = service.as_deref().map(|s| service_id(c, s)).transpose()?;
    let mut pairs = vec![
        ("service_id", service.map(|s| s.to_string())),
        ("execution_id", execution_id.map(|s| s.to_string())),
        ("action_type", action_type.clone()),
        ("actor", actor.clone()),
        ("start_date", start_date.clone()),
        ("end_date", end_date.clone()),
    ];
    pairs.extend(paging.pairs());
    let path = format!("/v2/audit-logs{}", query(&pairs));
    if *csv {
        out!("{}", c.get_text(&path, "text/csv")?);
        return Ok(());
    }
    output::list(
        format,
        &c.get(&path)?,
        &[
            "id",
            "timestamp",
            "action_type",
            "actor",
            "on_behalf_of",
            "service_id",
            "execution_id",
        ],
    )
}

// ---- snapshots ----------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    #[command(visible_alias = "ls")]
    List {
        /// A service id or heartbeat name.
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        action_type: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    Show {
        snapshot_id: i64,
    },
    /// Put the service back as the snapshot has it.
    Restore {
        snapshot_id: i64,
    },
}

pub fn snapshots(c: &Client, format: Format, cmd: &SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::List {
            service,
            action_type,
            paging,
        } => {
            let service = service.as_deref().map(|s| service_id(c, s)).transpose()?;
            let mut pairs = vec![
                ("service_id", service.map(|s| s.to_string())),
                ("action_type", action_type.clone()),
            ];
            pairs.extend(paging.pairs());
            output::list(
                format,
                &c.get(&format!("/v2/snapshots{}", query(&pairs)))?,
                &[
                    "snapshot_id",
                    "service_id",
                    "action_type",
                    "snapshot_data.heartbeat_name",
                    "actor",
                    "created_at",
                    "restored_at",
                ],
            )
        }
        SnapshotCmd::Show { snapshot_id } => {
            output::object(format, &c.get(&format!("/v2/snapshots/{snapshot_id}"))?)
        }
        SnapshotCmd::Restore { snapshot_id } => output::object(
            format,
            &c.post(&format!("/v2/snapshots/{snapshot_id}/restore"), None)?,
        ),
    }
}

// ---- health -------------------------------------------------------------------------------

/// `/health`, which needs no key; exits 1 when the server is not healthy.
pub fn health(c: &Client, format: Format) -> Result<(), Failure> {
    let ans = c.get("/health")?;
    if !output::machine(format, &ans.results)? {
        let h: HealthOut = ans.decode()?;
        let v = serde_json::to_value(&h).unwrap_or_default();
        outln!(
            "{} {} (version {}, up {} s)",
            c.base(),
            output::cell(v.get("status")),
            h.version,
            h.uptime_seconds
        );
        if let Some(comp) = v.get("components").and_then(Value::as_object) {
            for (name, detail) in comp {
                outln!(
                    "  {name}: {} {}",
                    output::cell(detail.get("status")),
                    output::cell(detail.get("backend"))
                );
            }
        }
    }
    Ok(())
}
