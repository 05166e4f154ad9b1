//! `medic playbooks …` and `medic executions …`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{Paging, key_value, read_text, service_id};
use crate::client::{Client, Failure, enc, query};
use crate::output::{self, Format};
use medic_server::http::executions::ExecutionOut;
use medic_server::http::extract::Page;
use medic_server::http::playbooks::{PlaybookSummaryOut, ValidateOut};
use medic_server::http::schema::ExecutionStatus;

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Check playbook documents without storing them; problems are printed with file and line.
    Validate {
        /// Files or directories (their *.yaml and *.yml).
        #[arg(short, long = "file", required = true)]
        files: Vec<PathBuf>,
    },
    /// Store playbooks from files or directories: prints what will change, then applies it.
    Apply {
        /// Files or directories (their *.yaml and *.yml).
        #[arg(short, long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
    /// List playbooks.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a playbook (by id or name) with its current document.
    Show { playbook: String },
    /// Start an execution by hand.
    Execute {
        playbook: String,
        /// The service it acts on (id or heartbeat name).
        #[arg(long)]
        service: Option<String>,
        /// An input variable (repeatable KEY=VALUE).
        #[arg(long = "var", value_parser = key_value)]
        vars: Vec<(String, String)>,
    },
    /// Disable a playbook.
    Disable { playbook: String },
    /// Enable a disabled playbook again.
    Enable { playbook: String },
}

/// The YAML files named, directories expanded (sorted).
fn documents(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Failure::Usage(format!(
                    "no *.yaml files in {}",
                    p.display()
                )));
            }
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn validate(c: &Client, file: &Path) -> Result<(String, ValidateOut), Failure> {
    let text = read_text(&file.to_string_lossy())?;
    let v: ValidateOut = c
        .post("/v2/playbooks/validate", Some(&json!({"document": text})))?
        .decode()?;
    Ok((text, v))
}

fn problems(file: &Path, v: &ValidateOut) -> Vec<String> {
    v.problems
        .iter()
        .map(|p| {
            let at = match (p.line, p.column) {
                (Some(l), Some(c)) => format!("{}:{l}:{c}", file.display()),
                (Some(l), None) => format!("{}:{l}", file.display()),
                _ => file.display().to_string(),
            };
            let step = p
                .step
                .as_deref()
                .map(|s| format!(" (step {s})"))
                .unwrap_or_default();
            format!("{at}: {}{step}: {}", p.field, p.message)
        })
        .collect()
}

/// A playbook by id or exact name.
fn find(c: &Client, given: &str) -> Result<Option<PlaybookSummaryOut>, Failure> {
    if let Ok(id) = given.parse::<i64>() {
        return Ok(Some(c.get(&format!("/v2/playbooks/{id}"))?.decode()?));
    }
    let page: Page<PlaybookSummaryOut> = c
        .get(&format!("/v2/playbooks?limit=250&name={}", enc(given)))?
        .decode()?;
    Ok(page.entries.into_iter().find(|p| p.name == given))
}

fn playbook_id(c: &Client, given: &str) -> Result<i64, Failure> {
    find(c, given)?
        .map(|p| p.playbook_id)
        .ok_or_else(|| Failure::NotFound(format!("no playbook named {given:?}")))
}

pub fn run(c: &Client, format: Format, cmd: &Cmd) -> Result<(), Failure> {
    match cmd {
        Cmd::Validate { files } => {
            let mut bad = Vec::new();
            for f in documents(files)? {
                let (_, v) = validate(c, &f)?;
                if v.valid {
                    let name = v.plan.as_ref().map(|p| p.name.clone()).unwrap_or_default();
                    let steps = v.plan.as_ref().map(|p| p.steps.len()).unwrap_or_default();
                    outln!("{}: valid ({name}, {steps} steps)", f.display());
                } else {
                    bad.extend(problems(&f, &v));
                }
            }
            if bad.is_empty() {
                Ok(())
            } else {
                Err(Failure::Refused(format!(
                    "invalid playbooks:\n{}",
                    bad.join("\n")
                )))
            }
        }
        Cmd::Apply { files, dry_run } => apply(c, format, files, *dry_run),
        Cmd::List { name, paging } => {
            let mut pairs = vec![("name", name.clone())];
            pairs.extend(paging.pairs());
            output::list(
                format,
                &c.get(&format!("/v2/playbooks{}", query(&pairs)))?,
                &[
                    "playbook_id",
                    "name",
                    "enabled",
                    "current_version",
                    "updated_at",
                    "description",
                ],
            )
        }
        Cmd::Show { playbook } => {
            let id = playbook_id(c, playbook)?;
            let ans = c.get(&format!("/v2/playbooks/{id}"))?;
            if output::machine(format, &ans.results)? {
                return Ok(());
            }
            let mut summary = ans.results.clone();
            let source = summary
                .pointer("/current/source")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if let Some(m) = summary.as_object_mut() {
                m.remove("current");
                m.remove("versions");
            }
            output::show(&summary);
            out!("{source}");
            Ok(())
        }
        Cmd::Execute {
            playbook,
            service,
            vars,
        } => {
            let id = playbook_id(c, playbook)?;
            let service = service.as_deref().map(|s| service_id(c, s)).transpose()?;
            let vars: BTreeMap<&str, &str> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let body = json!({"service_id": service, "variables": vars});
            output::object(
                format,
                &c.post(&format!("/v2/playbooks/{id}/execute"), Some(&body))?,
            )
        }
        Cmd::Disable { playbook } => {
            let id = playbook_id(c, playbook)?;
            output::done(format, &c.delete(&format!("/v2/playbooks/{id}"))?)
        }
        Cmd::Enable { playbook } => {
            let id = playbook_id(c, playbook)?;
            output::done(
                format,
                &c.post(&format!("/v2/playbooks/{id}/restore"), None)?,
            )
        }
    }
}

enum Change {
    Create,
    Update { id: i64, from: i32 },
    Unchanged { id: i64, version: i32 },
}

/// Validates everything first, prints the plan, then creates or updates (GitOps style).
fn apply(c: &Client, format: Format, files: &[PathBuf], dry_run: bool) -> Result<(), Failure> {
    let mut plan = Vec::new();
    let mut bad = Vec::new();
    for f in documents(files)? {
        let (text, v) = validate(c, &f)?;
        if !v.valid {
            bad.extend(problems(&f, &v));
            continue;
        }
        let name = v.plan.as_ref().map(|p| p.name.clone()).unwrap_or_default();
        let change = match find(c, &name)? {
            None => Change::Create,
            Some(p) if p.sha256 == v.sha256 => Change::Unchanged {
                id: p.playbook_id,
                version: p.current_version,
            },
            Some(p) => Change::Update {
                id: p.playbook_id,
                from: p.current_version,
            },
        };
        plan.push((f, name, text, change));
    }
    if !bad.is_empty() {
        return Err(Failure::Refused(format!(
            "nothing applied; invalid playbooks:\n{}",
            bad.join("\n")
        )));
    }
    let mut out = Vec::new();
    for (f, name, _, change) in &plan {
        let what = match change {
            Change::Create => "create".to_owned(),
            Change::Update { id, from } => {
                format!("update playbook {id}: v{from} -> v{}", from + 1)
            }
            Change::Unchanged { id, version } => format!("unchanged (playbook {id} v{version})"),
        };
        eprintln!("{name} ({}): {what}", f.display());
    }
    if dry_run {
        eprintln!("dry run: nothing applied");
        return Ok(());
    }
    for (_, _, text, change) in &plan {
        let body = json!({"document": text});
        let ans = match change {
            Change::Create => c.post("/v2/playbooks", Some(&body))?,
            Change::Update { id, .. } => c.put(&format!("/v2/playbooks/{id}"), &body)?,
            Change::Unchanged { .. } => continue,
        };
        out.push(ans.results);
    }
    let results = Value::Array(out);
    if !output::machine(format, &results)? {
        let n = results.as_array().map(Vec::len).unwrap_or_default();
        outln!("Applied {n} change(s).");
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ExecCmd {
    /// List executions.
    #[command(visible_alias = "ls")]
    List(ExecFilter),
    /// Show an execution with its steps.
    Show { execution_id: i64 },
    /// Approve an execution that waits for approval.
    Approve(ExecDecision),
    /// Reject an execution that waits for approval.
    Reject(ExecDecision),
    /// Cancel a running or waiting execution.
    Cancel(ExecDecision),
    /// Follow an execution's steps until it ends; exits 1 unless it completed.
    Watch {
        execution_id: i64,
        /// Seconds between polls.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
}

#[derive(Debug, Args)]
pub struct ExecFilter {
    #[arg(long)]
    playbook: Option<String>,
    /// A service id or heartbeat name.
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    trigger: Option<String>,
    #[command(flatten)]
    paging: Paging,
}

#[derive(Debug, Args)]
pub struct ExecDecision {
    execution_id: i64,
    #[arg(long)]
    reason: Option<String>,
}

fn ended(s: ExecutionStatus) -> bool {
    matches!(
        s,
        ExecutionStatus::Completed
            | ExecutionStatus::Failed
            | ExecutionStatus::Cancelled
            | ExecutionStatus::Skipped
            | ExecutionStatus::Expired
    )
}

pub fn executions(c: &Client, format: Format, cmd: &ExecCmd) -> Result<(), Failure> {
    let steps = [
        "index",
        "name",
        "kind",
        "status",
        "attempt",
        "exit_code",
        "http_status",
        "error",
    ];
    match cmd {
        ExecCmd::List(f) => {
            let playbook = f
                .playbook
                .as_deref()
                .map(|p| playbook_id(c, p))
                .transpose()?;
            let service = f.service.as_deref().map(|s| service_id(c, s)).transpose()?;
            let mut pairs = vec![
                ("playbook_id", playbook.map(|v| v.to_string())),
                ("service_id", service.map(|v| v.to_string())),
                ("status", f.status.clone()),
                ("trigger", f.trigger.clone()),
            ];
            pairs.extend(f.paging.pairs());
            output::list(
                format,
                &c.get(&format!("/v2/executions{}", query(&pairs)))?,
                &[
                    "execution_id",
                    "playbook_name",
                    "playbook_version",
                    "status",
                    "trigger",
                    "service_id",
                    "created_at",
                    "finished_at",
                ],
            )
        }
        ExecCmd::Show { execution_id } => {
            let ans = c.get(&format!("/v2/executions/{execution_id}"))?;
            if output::machine(format, &ans.results)? {
                return Ok(());
            }
            let mut head = ans.results.clone();
            let list = head
                .as_object_mut()
                .and_then(|m| m.remove("steps"))
                .unwrap_or_default();
            output::show(&head);
            output::rows(
                list.as_array().map(Vec::as_slice).unwrap_or_default(),
                &steps,
            );
            Ok(())
        }
        ExecCmd::Approve(d) | ExecCmd::Reject(d) | ExecCmd::Cancel(d) => {
            let verb = match cmd {
                ExecCmd::Approve(_) => "approve",
                ExecCmd::Reject(_) => "reject",
                _ => "cancel",
            };
            let body = json!({"reason": d.reason});
            output::done(
                format,
                &c.post(
                    &format!("/v2/executions/{}/{verb}", d.execution_id),
                    Some(&body),
                )?,
            )
        }
        ExecCmd::Watch {
            execution_id,
            interval,
        } => {
            let mut seen: Vec<String> = Vec::new();
            let mut last_status = String::new();
            loop {
                let ans = c.get(&format!("/v2/executions/{execution_id}"))?;
                let e: ExecutionOut = ans.decode()?;
                let v = &ans.results;
                let status = output::cell(v.get("status"));
                if status != last_status {
                    eprintln!("execution {execution_id} ({}): {status}", e.playbook_name);
                    last_status = status.clone();
                }
                for (i, s) in v
                    .get("steps")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let line = format!(
                        "  step {} {} [{}]: {}{}",
                        i + 1,
                        output::cell(s.get("name")),
                        output::cell(s.get("kind")),
                        output::cell(s.get("status")),
                        s.get("error")
                            .and_then(Value::as_str)
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    );
                    if seen.get(i) != Some(&line) {
                        eprintln!("{line}");
                        if i < seen.len() {
                            seen[i] = line;
                        } else {
                            seen.push(line);
                        }
                    }
                }
                if ended(e.status) {
                    if output::machine(format, v)? {
                        // printed
                    }
                    return if e.status == ExecutionStatus::Completed {
                        Ok(())
                    } else {
                        Err(Failure::Other(format!(
                            "execution {execution_id} ended {status}{}",
                            e.error.map(|x| format!(": {x}")).unwrap_or_default()
                        )))
                    };
                }
                std::thread::sleep(Duration::from_secs((*interval).max(1)));
            }
        }
    }
}
