//! `medic services …` and `medic heartbeats …`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::{Paging, from_now, read_document, service_id};
use crate::client::{Client, Failure, enc, query};
use crate::duration;
use crate::output::{self, Format};

const COLUMNS: &[&str] = &[
    "service_id",
    "heartbeat_name",
    "state",
    "muted",
    "interval_seconds",
    "team",
    "priority",
    "last_heartbeat_at",
];

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List services.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one service (by id or heartbeat name).
    Get { service: String },
    /// Register a service from flags or a JSON/YAML file (the API's fields).
    Create(ServiceArgs),
    /// Change a service from flags or a JSON/YAML file (only the fields given).
    Update {
        service: String,
        #[command(flatten)]
        args: ServiceArgs,
    },
    /// Delete a service (restorable: the answer names the snapshot).
    Delete { service: String },
    /// Undo a deletion or change by restoring a snapshot.
    Restore { snapshot_id: i64 },
    /// Mute a service: until unmuted, or `--for` a while.
    Mute {
        service: String,
        /// How long, e.g. 2h or 1d (default: until unmuted).
        #[arg(long = "for", value_parser = duration::arg)]
        for_: Option<Duration>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Unmute a service.
    Unmute { service: String },
    /// Snooze a service's alerts for a while (a maintenance window of the service).
    Snooze {
        service: String,
        /// How long, in whole minutes at least, e.g. 30m or 2h.
        #[arg(long = "for", value_parser = duration::arg)]
        for_: Duration,
        #[arg(long)]
        reason: Option<String>,
    },
    /// A service's job runs.
    Runs {
        service: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// A service's run-duration statistics.
    Stats { service: String },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Substring of the heartbeat name.
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// new, up, late or down.
    #[arg(long)]
    state: Option<String>,
    /// p1 … p5.
    #[arg(long)]
    priority: Option<String>,
    /// Only muted (true) or unmuted (false) services.
    #[arg(long)]
    muted: Option<bool>,
    /// Only active (true) or inactive (false) services.
    #[arg(long)]
    active: Option<bool>,
    #[command(flatten)]
    paging: Paging,
}

#[derive(Debug, Default, Args)]
pub struct ServiceArgs {
    /// A JSON or YAML file with the API's fields (`-`: standard input); flags override it.
    #[arg(short, long)]
    file: Option<String>,
    /// The heartbeat name (unique).
    #[arg(long)]
    name: Option<String>,
    /// Expected time between heartbeats, e.g. 5m.
    #[arg(long, value_parser = duration::arg)]
    interval: Option<Duration>,
    /// Grace after the deadline, e.g. 1m.
    #[arg(long, value_parser = duration::arg)]
    grace: Option<Duration>,
    /// A readable name.
    #[arg(long)]
    service_name: Option<String>,
    #[arg(long)]
    environment: Option<String>,
    /// Heartbeats expected per interval.
    #[arg(long)]
    threshold: Option<i32>,
    #[arg(long)]
    team: Option<String>,
    /// p1 … p5.
    #[arg(long)]
    priority: Option<String>,
    #[arg(long)]
    runbook: Option<String>,
    /// A cron expression to expect heartbeats on instead of the interval.
    #[arg(long)]
    cron: Option<String>,
    /// The cron expression's IANA time zone.
    #[arg(long, requires = "cron")]
    timezone: Option<String>,
    /// Longest acceptable job run, e.g. 10m.
    #[arg(long, value_parser = duration::arg)]
    max_duration: Option<Duration>,
    /// A parent service id.
    #[arg(long)]
    parent: Option<i64>,
    /// Whether a failed run opens an alert.
    #[arg(long)]
    alert_on_failure: Option<bool>,
    /// Whether the service is monitored (update only).
    #[arg(long)]
    active: Option<bool>,
}

impl ServiceArgs {
    fn body(&self) -> Result<Value, Failure> {
        let mut map = match &self.file {
            Some(f) => match read_document(f)? {
                Value::Object(m) => m,
                _ => return Err(Failure::Usage(format!("{f}: expected an object"))),
            },
            None => Map::new(),
        };
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                map.insert(k.to_owned(), v);
            }
        };
        set("heartbeat_name", self.name.clone().map(Value::from));
        set(
            "interval_seconds",
            self.interval.map(|d| json!(d.as_secs())),
        );
        set("grace_seconds", self.grace.map(|d| json!(d.as_secs())));
        set("service_name", self.service_name.clone().map(Value::from));
        set("environment", self.environment.clone().map(Value::from));
        set("threshold", self.threshold.map(Value::from));
        set("team", self.team.clone().map(Value::from));
        set("priority", self.priority.clone().map(Value::from));
        set("runbook", self.runbook.clone().map(Value::from));
        set(
            "schedule",
            self.cron
                .clone()
                .map(|c| json!({"cron": c, "timezone": self.timezone.clone()})),
        );
        set(
            "max_duration_ms",
            self.max_duration.map(|d| json!(d.as_millis() as u64)),
        );
        set("parent_id", self.parent.map(Value::from));
        set("alert_on_failure", self.alert_on_failure.map(Value::from));
        set("active", self.active.map(Value::from));
        Ok(Value::Object(map))
    }
}

pub fn run(c: &Client, format: Format, cmd: &Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::List(a) => {
            let mut pairs = vec![
                ("name", a.name.clone()),
                ("team", a.team.clone()),
                ("state", a.state.clone()),
                ("priority", a.priority.clone()),
                ("muted", a.muted.map(|b| b.to_string())),
                ("active", a.active.map(|b| b.to_string())),
            ];
            pairs.extend(a.paging.pairs());
            let ans = c.get(&format!("/v2/services{}", query(&pairs)))?;
            output::list(format, &ans, COLUMNS)
        }
        Cmd::Get { service } => {
            let id = service_id(c, service)?;
            output::object(format, &c.get(&format!("/v2/services/{id}"))?)
        }
        Cmd::Create(a) => {
            let body = a.body()?;
            if body.get("heartbeat_name").is_none() || body.get("interval_seconds").is_none() {
                return Err(Failure::Usage(
                    "a service needs --name and --interval (or both in --file)".to_owned(),
                ));
            }
            output::object(format, &c.post("/v2/services", Some(&body))?)
        }
        Cmd::Update { service, args } => {
            let body = args.body()?;
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(Failure::Usage(
                    "nothing to change: give flags or --file".to_owned(),
                ));
            }
            let id = service_id(c, service)?;
            output::object(format, &c.patch(&format!("/v2/services/{id}"), &body)?)
        }
        Cmd::Delete { service } => {
            let id = service_id(c, service)?;
            output::object(format, &c.delete(&format!("/v2/services/{id}"))?)
        }
        Cmd::Restore { snapshot_id } => output::object(
            format,
            &c.post(&format!("/v2/snapshots/{snapshot_id}/restore"), None)?,
        ),
        Cmd::Mute {
            service,
            for_,
            reason,
        } => {
            let id = service_id(c, service)?;
            let until = for_.map(from_now).transpose()?;
            let body = json!({"until": until, "reason": reason});
            let ans = c.post(&format!("/v2/services/{id}/mute"), Some(&body))?;
            if output::machine(format, &ans.results)? {
                return Ok(());
            }
            let name = output::cell(ans.results.get("heartbeat_name"));
            match until {
                Some(u) => outln!("Muted {name} (service {id}) until {u}."),
                None => outln!("Muted {name} (service {id}) until unmuted."),
            }
            Ok(())
        }
        Cmd::Unmute { service } => {
            let id = service_id(c, service)?;
            let ans = c.post(&format!("/v2/services/{id}/unmute"), None)?;
            if output::machine(format, &ans.results)? {
                return Ok(());
            }
            let name = output::cell(ans.results.get("heartbeat_name"));
            outln!("Unmuted {name} (service {id}).");
            Ok(())
        }
        Cmd::Snooze {
            service,
            for_,
            reason,
        } => {
            let minutes = for_.as_secs() / 60;
            if minutes == 0 || for_.as_secs() % 60 != 0 {
                return Err(Failure::Usage(
                    "--for must be whole minutes, e.g. 30m or 2h".to_owned(),
                ));
            }
            let id = service_id(c, service)?;
            let body = json!({"minutes": minutes, "reason": reason});
            output::object(
                format,
                &c.post(&format!("/v2/services/{id}/snooze"), Some(&body))?,
            )
        }
        Cmd::Runs { service, paging } => {
            let id = service_id(c, service)?;
            let ans = c.get(&format!("/v2/services/{id}/runs{}", query(&paging.pairs())))?;
            output::list(
                format,
                &ans,
                &[
                    "run_id",
                    "status",
                    "started_at",
                    "finished_at",
                    "duration_ms",
                    "exit_code",
                ],
            )
        }
        Cmd::Stats { service } => {
            let id = service_id(c, service)?;
            output::object(format, &c.get(&format!("/v2/services/{id}/stats"))?)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HeartbeatCmd {
    /// Send a heartbeat for a service (by heartbeat name).
    Send {
        heartbeat_name: String,
        /// The status sent (UP unless told otherwise).
        #[arg(long, default_value = "UP")]
        status: String,
        /// A run id to attach.
        #[arg(long)]
        run_id: Option<String>,
    },
    /// A service's heartbeats, newest first.
    #[command(visible_alias = "ls")]
    List {
        service: String,
        #[command(flatten)]
        paging: Paging,
    },
}

pub fn heartbeats(c: &Client, format: Format, cmd: &HeartbeatCmd) -> Result<(), Failure> {
    match cmd {
        HeartbeatCmd::Send {
            heartbeat_name,
            status,
            run_id,
        } => {
            let mut body = json!({"heartbeat_name": heartbeat_name, "status": status});
            if let Some(r) = run_id {
                body["run_id"] = Value::from(r.clone());
            }
            output::done(format, &c.post("/heartbeat", Some(&body))?)
        }
        HeartbeatCmd::List { service, paging } => {
            let id = service_id(c, service)?;
            let ans = c.get(&format!(
                "/v2/services/{}/heartbeats{}",
                enc(&id.to_string()),
                query(&paging.pairs())
            ))?;
            output::list(format, &ans, &["heartbeat_id", "time", "status", "run_id"])
        }
    }
}
