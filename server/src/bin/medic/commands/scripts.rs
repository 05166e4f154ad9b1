//! `medic scripts …` and `medic runs …`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{Paging, key_value, read_text};
use crate::client::{Client, Failure, query, seg};
use crate::duration;
use crate::output::{self, Format};
use medic_server::http::runs::{RunOut, RunsQueuedOut};
use medic_server::http::schema::{AgentRunStatus, ScriptStatus};
use medic_server::http::scripts::{ScriptOut, VersionOut};

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Register a script from a file (a new version if the name exists); it waits for approval.
    Register {
        /// The script's file (`-`: standard input).
        #[arg(short, long)]
        file: String,
        /// The script's name (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// The interpreter the agent runs it with (default: from the #! line, else sh).
        #[arg(long)]
        interpreter: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List scripts.
    #[command(visible_alias = "ls")]
    List {
        /// pending, approved or rejected (the latest version's status).
        #[arg(long)]
        status: Option<String>,
        /// Substring of the name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Scripts whose latest version waits for approval.
    Pending,
    /// A script's versions.
    Versions { script_id: i64 },
    /// The content of one version (default: the latest).
    #[command(disable_version_flag = true)]
    Show {
        script_id: i64,
        #[arg(long)]
        version: Option<i32>,
    },
    /// A unified diff between two versions (default: the latest against the one before).
    Diff {
        script_id: i64,
        #[arg(long)]
        from: Option<i32>,
        #[arg(long)]
        to: Option<i32>,
    },
    /// Approve a version (default: the latest) — by another owner than its author.
    #[command(disable_version_flag = true)]
    Approve(Decision),
    /// Reject a version (default: the latest).
    #[command(disable_version_flag = true)]
    Reject(Decision),
}

#[derive(Debug, Args)]
pub struct Decision {
    script_id: i64,
    #[arg(long)]
    version: Option<i32>,
    #[arg(long)]
    reason: Option<String>,
}

fn interpreter_of(content: &str) -> String {
    content
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let first = parts.next().unwrap_or("sh");
            let prog = if first.ends_with("/env") {
                parts.next().unwrap_or("sh")
            } else {
                first
            };
            prog.rsplit('/').next().unwrap_or(prog).to_owned()
        })
        .unwrap_or_else(|| "sh".to_owned())
}

fn status_name(s: ScriptStatus) -> &'static str {
    match s {
        ScriptStatus::Pending => "pending",
        ScriptStatus::Approved => "approved",
        ScriptStatus::Rejected => "rejected",
    }
}

fn version(script: &ScriptOut, v: Option<i32>) -> Result<&VersionOut, Failure> {
    match v {
        Some(n) => script.versions.iter().find(|x| x.version == n),
        None => script.versions.iter().max_by_key(|x| x.version),
    }
    .ok_or_else(|| {
        Failure::NotFound(format!(
            "script {} has no version {}",
            script.script_id,
            v.map(|v| v.to_string()).unwrap_or_default()
        ))
    })
}

/// A unified diff of two versions' contents.
pub fn diff(from: &VersionOut, to: &VersionOut) -> String {
    let a = from.content.as_deref().unwrap_or_default();
    let b = to.content.as_deref().unwrap_or_default();
    similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("version {} ({})", from.version, status_name(from.status)),
            &format!("version {} ({})", to.version, status_name(to.status)),
        )
        .to_string()
}

pub fn run(c: &Client, format: Format, cmd: &Cmd) -> Result<(), Failure> {
    const COLUMNS: &[&str] = &[
        "script_id",
        "name",
        "latest_version.version",
        "latest_version.status",
        "latest_version.created_by",
        "latest_version.interpreter",
        "created_at",
    ];
    let get =
        |id: i64| -> Result<ScriptOut, Failure> { c.get(&format!("/v2/scripts/{id}"))?.decode() };
    match cmd {
        Cmd::Register {
            file,
            name,
            interpreter,
            description,
        } => {
            let content = read_text(file)?;
            let name = match name {
                Some(n) => n.clone(),
                None if file != "-" => std::path::Path::new(file)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                None => return Err(Failure::Usage("give --name when reading stdin".to_owned())),
            };
            let interpreter = interpreter
                .clone()
                .unwrap_or_else(|| interpreter_of(&content));
            let body = json!({"name": name, "interpreter": interpreter, "content": content,
                              "description": description});
            output::object(format, &c.post("/v2/scripts", Some(&body))?)
        }
        Cmd::List {
            status,
            name,
            paging,
        } => {
            let mut pairs = vec![("status", status.clone()), ("name", name.clone())];
            pairs.extend(paging.pairs());
            output::list(
                format,
                &c.get(&format!("/v2/scripts{}", query(&pairs)))?,
                COLUMNS,
            )
        }
        Cmd::Pending => output::list(format, &c.get("/v2/scripts?status=pending")?, COLUMNS),
        Cmd::Versions { script_id } => {
            let ans = c.get(&format!("/v2/scripts/{script_id}"))?;
            if output::machine(format, &ans.results)? {
                return Ok(());
            }
            let versions = ans.results.get("versions").cloned().unwrap_or_default();
            output::rows(
                versions.as_array().map(Vec::as_slice).unwrap_or_default(),
                &[
                    "version",
                    "status",
                    "sha256",
                    "created_by",
                    "created_at",
                    "decided_by",
                    "decision_reason",
                ],
            );
            Ok(())
        }
        Cmd::Show {
            script_id,
            version: v,
        } => {
            let script = get(*script_id)?;
            let ver = version(&script, *v)?;
            if output::machine(format, &serde_json::to_value(ver).unwrap_or_default())? {
                return Ok(());
            }
            out!("{}", ver.content.as_deref().unwrap_or_default());
            Ok(())
        }
        Cmd::Diff {
            script_id,
            from,
            to,
        } => {
            let script = get(*script_id)?;
            let to_v = version(&script, *to)?;
            let from_v = match from {
                Some(_) => version(&script, *from)?,
                None => script
                    .versions
                    .iter()
                    .filter(|x| x.version < to_v.version)
                    .max_by_key(|x| x.version)
                    .ok_or_else(|| {
                        Failure::NotFound(format!(
                            "script {script_id} has no version before {}",
                            to_v.version
                        ))
                    })?,
            };
            out!("{}", diff(from_v, to_v));
            Ok(())
        }
        Cmd::Approve(d) | Cmd::Reject(d) => {
            let verb = if matches!(cmd, Cmd::Approve(_)) {
                "approve"
            } else {
                "reject"
            };
            let path = match d.version {
                Some(v) => format!("/v2/scripts/{}/versions/{v}/{verb}", d.script_id),
                None => format!("/v2/scripts/{}/{verb}", d.script_id),
            };
            let body = json!({"reason": d.reason});
            output::done(format, &c.post(&path, Some(&body))?)
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Run an approved script on agents: by id (`--agent`) or by labels (`--label`).
    #[command(disable_version_flag = true)]
    Create(CreateRun),
    /// List runs.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        script_id: Option<i64>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a run.
    Show { run_id: String },
    /// Print a run's output (stdout, then stderr on standard error).
    Output { run_id: String },
}

#[derive(Debug, Args)]
pub struct CreateRun {
    /// An agent id (repeatable).
    #[arg(long = "agent", required_unless_present = "labels")]
    agents: Vec<String>,
    /// Every agent with these labels (repeatable KEY=VALUE).
    #[arg(long = "label", value_parser = key_value, conflicts_with = "agents")]
    labels: Vec<(String, String)>,
    /// The script by id.
    #[arg(long, required_unless_present = "script", conflicts_with = "script")]
    script_id: Option<i64>,
    /// The script by name.
    #[arg(long)]
    script: Option<String>,
    /// An approved version (default: the latest approved).
    #[arg(long)]
    version: Option<i32>,
    /// A parameter (repeatable KEY=VALUE).
    #[arg(long = "param", value_parser = key_value)]
    params: Vec<(String, String)>,
    /// How long the script may run, e.g. 5m.
    #[arg(long, value_parser = duration::arg)]
    timeout: Option<Duration>,
    /// Wait for every run to end, with a status line; exits 1 unless all succeeded.
    #[arg(long)]
    wait: bool,
}

fn run_status(s: AgentRunStatus) -> &'static str {
    match s {
        AgentRunStatus::Queued => "queued",
        AgentRunStatus::Dispatched => "dispatched",
        AgentRunStatus::Running => "running",
        AgentRunStatus::Succeeded => "succeeded",
        AgentRunStatus::Failed => "failed",
        AgentRunStatus::TimedOut => "timed_out",
        AgentRunStatus::Refused => "refused",
        AgentRunStatus::Expired => "expired",
        AgentRunStatus::Lost => "lost",
    }
}

fn ended(s: AgentRunStatus) -> bool {
    !matches!(
        s,
        AgentRunStatus::Queued | AgentRunStatus::Dispatched | AgentRunStatus::Running
    )
}

pub fn runs(c: &Client, format: Format, cmd: &RunCmd) -> Result<(), Failure> {
    const COLUMNS: &[&str] = &[
        "run_id",
        "agent_id",
        "script_id",
        "script_version",
        "status",
        "exit_code",
        "duration_ms",
        "created_at",
    ];
    match cmd {
        RunCmd::Create(a) => {
            let params: BTreeMap<&str, &str> = a
                .params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut body = json!({"script_id": a.script_id, "script": a.script,
                                  "version": a.version, "parameters": params,
                                  "timeout_seconds": a.timeout.map(|d| d.as_secs())});
            if !a.labels.is_empty() {
                let labels: BTreeMap<&str, &str> = a
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                body["labels"] = json!(labels);
            } else if a.agents.len() == 1 {
                body["agent_id"] = json!(a.agents[0]);
            } else {
                body["agent_ids"] = json!(a.agents);
            }
            let ans = c.post("/v2/runs", Some(&body))?;
            let queued: RunsQueuedOut = ans.decode()?;
            if !a.wait {
                return output::list(
                    format,
                    &crate::client::Answer {
                        status: ans.status,
                        message: ans.message.clone(),
                        results: ans.results.get("runs").cloned().unwrap_or_default(),
                    },
                    COLUMNS,
                );
            }
            wait(c, format, &queued.run_ids)
        }
        RunCmd::List {
            agent,
            status,
            script_id,
            paging,
        } => {
            let mut pairs = vec![
                ("agent_id", agent.clone()),
                ("status", status.clone()),
                ("script_id", script_id.map(|s| s.to_string())),
            ];
            pairs.extend(paging.pairs());
            output::list(
                format,
                &c.get(&format!("/v2/runs{}", query(&pairs)))?,
                COLUMNS,
            )
        }
        RunCmd::Show { run_id } => {
            output::object(format, &c.get(&format!("/v2/runs/{}", seg(run_id)))?)
        }
        RunCmd::Output { run_id } => {
            let run: RunOut = c.get(&format!("/v2/runs/{}", seg(run_id)))?.decode()?;
            out!("{}", run.stdout.as_deref().unwrap_or_default());
            eprint!("{}", run.stderr.as_deref().unwrap_or_default());
            Ok(())
        }
    }
}

/// Long-polls each run until it ends, with one status line (rewritten on a terminal).
fn wait(c: &Client, format: Format, ids: &[String]) -> Result<(), Failure> {
    let long = Client::new(
        c.base(),
        c.key().map(str::to_owned),
        Duration::from_secs(40),
    )?;
    let tty = std::io::stderr().is_terminal();
    let mut done: Vec<RunOut> = Vec::new();
    for id in ids {
        let mut last = String::new();
        loop {
            let run: RunOut = long
                .get(&format!("/v2/runs/{}?wait_seconds=25", seg(id)))?
                .decode()?;
            let line = format!("run {id} on {}: {}", run.agent_id, run_status(run.status));
            if line != last {
                if tty {
                    eprint!("\r\x1b[2K{line}");
                    let _ = std::io::stderr().flush();
                } else {
                    eprintln!("{line}");
                }
                last = line;
            }
            if ended(run.status) {
                if tty {
                    eprintln!();
                }
                done.push(run);
                break;
            }
        }
    }
    let results = serde_json::to_value(&done).unwrap_or_default();
    if !output::machine(format, &results)? {
        output::rows(
            results.as_array().map(Vec::as_slice).unwrap_or_default(),
            &["run_id", "agent_id", "status", "exit_code", "duration_ms"],
        );
        for r in &done {
            if let Some(out) = r.stdout.as_deref().filter(|s| !s.is_empty()) {
                outln!("--- {} stdout\n{}", r.run_id, out.trim_end());
            }
        }
    }
    let failed = done
        .iter()
        .filter(|r| r.status != AgentRunStatus::Succeeded)
        .count();
    if failed > 0 {
        return Err(Failure::Other(format!(
            "{failed} of {} runs did not succeed",
            done.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreters_come_from_the_shebang() {
        assert_eq!(interpreter_of("#!/bin/bash\necho"), "bash");
        assert_eq!(interpreter_of("#!/usr/bin/env python3\n"), "python3");
        assert_eq!(interpreter_of("echo hi\n"), "sh");
    }

    #[test]
    fn diffs_show_changed_lines() {
        let v = |n: i32, text: &str| -> VersionOut {
            serde_json::from_value(json!({
                "version": n, "interpreter": "sh", "sha256": "x", "description": null,
                "status": "pending", "created_by": "a", "created_by_key": null,
                "created_by_owner": null, "created_at": "2026-01-01T00:00:00.000+00:00",
                "decided_by": null, "decided_by_key": null, "decided_by_owner": null,
                "decided_at": null, "decision_reason": null, "content": text
            }))
            .unwrap()
        };
        let d = diff(&v(1, "a\nb\n"), &v(2, "a\nc\n"));
        assert!(d.contains("--- version 1 (pending)"), "{d}");
        assert!(d.contains("-b\n") && d.contains("+c\n"), "{d}");
    }
}
