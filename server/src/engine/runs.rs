//! Script steps on agents, through the runs machinery (`RunStore`, `gateway/runs.rs`): the
//! machine's deterministic run ids are queued as ordinary agent runs of the script's approved
//! version, and the runs' endings are read back as the machine's `RunFinished` events.
//!
//! Queueing is idempotent by run id: a run that exists (queued before a restart) is not queued
//! again, and the agent's run-id journal keeps a redelivered run from executing twice. A run's
//! ending stored by a session makes its execution due at once (`Engine::run_ended`); while a
//! step's runs are in flight the engine also reads them every [`RUN_POLL`] (by default), for
//! endings nobody announced (the sweep's `expired` and `lost`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::domain::{ServiceId, Timestamp};
use crate::playbook::machine::{Event, Outcome, cap_output};
use crate::playbook::plan::{Plan, StepKind, Target};
use crate::playbook::vars::{Masker, Scope};
use crate::store::{
    AgentFilter, AgentRun, AgentRunStatus, NewAgentRun, NewAuditEntry, PageRequest, ScriptStatus,
    Store, StoreError,
};

/// How often, by default, the engine reads the runs of a step that has some in flight in case
/// an ending was not announced to it (`EngineSettings::run_poll`).
pub const RUN_POLL: Duration = Duration::from_secs(5);

/// How long a run may wait in the queue for its agent.
const RUN_EXPIRY: Duration = Duration::from_secs(3600);

/// The registered, unrevoked agents that carry every label of step `step`'s target.
pub async fn resolve(store: &dyn Store, plan: &Plan, step: usize) -> Result<Vec<String>, String> {
    let StepKind::Script(s) = &plan.steps[step].kind else {
        return Ok(Vec::new());
    };
    let Target::Labels(labels) = &s.target else {
        return Ok(Vec::new());
    };
    let filter = AgentFilter {
        connected: None,
        revoked: Some(false),
        labels: labels.clone(),
    };
    let page = PageRequest {
        limit: 1000,
        offset: 0,
    };
    let found = store
        .list_agents(&filter, page)
        .await
        .map_err(|e| format!("cannot list agents: {e}"))?;
    let mut ids: Vec<String> = found.entries.into_iter().map(|a| a.id).collect();
    ids.sort();
    Ok(ids)
}

fn ended(outcome: Outcome, step: usize, run_id: String) -> Event {
    Event::RunFinished {
        step,
        run_id,
        outcome,
    }
}

fn failure(error: String) -> Outcome {
    Outcome {
        ok: false,
        error: Some(error),
        ..Outcome::default()
    }
}

/// A script's standard output then its standard error (each with whether it was cut at the
/// output cap), as a step's output: secrets masked — a stream cut at its cap may end in half a
/// secret, masked too — and capped.
pub(super) fn step_output(masker: &Masker, out: (&str, bool), err: (&str, bool)) -> String {
    let mut text = masker.mask_maybe_cut(out.0, out.1);
    if !err.0.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&masker.mask_maybe_cut(err.0, err.1));
    }
    cap_output(&masker.mask(&text))
}

/// What an ended run means for the step, secrets masked; `None` while it has not ended.
fn outcome_of(run: &AgentRun, scope: &Scope) -> Option<Outcome> {
    let masker = scope.masker();
    let output = match (&run.stdout, &run.stderr) {
        (None, None) => None,
        (out, err) => Some(step_output(
            &masker,
            (
                out.as_deref().unwrap_or_default(),
                run.stdout_truncated == Some(true),
            ),
            (
                err.as_deref().unwrap_or_default(),
                run.stderr_truncated == Some(true),
            ),
        )),
    };
    let error = |why: String| Some(masker.mask(&why));
    Some(match run.status {
        AgentRunStatus::Queued | AgentRunStatus::Dispatched | AgentRunStatus::Running => {
            return None;
        }
        AgentRunStatus::Succeeded => Outcome {
            ok: true,
            exit_code: run.exit_code,
            output,
            ..Outcome::default()
        },
        AgentRunStatus::Failed => Outcome {
            ok: false,
            exit_code: run.exit_code,
            output,
            error: error(format!(
                "the script exited with {}",
                run.exit_code.map_or_else(
                    || format!("signal {}", run.signal.unwrap_or_default()),
                    |c| format!("code {c}")
                )
            )),
            ..Outcome::default()
        },
        other => Outcome {
            ok: false,
            exit_code: run.exit_code,
            output,
            error: error(match (&run.refusal_reason, &run.refusal_detail) {
                (Some(r), Some(d)) => format!("the run was {}: {r}: {d}", other.as_str()),
                (Some(r), None) => format!("the run was {}: {r}", other.as_str()),
                _ => format!("the run {}", other.as_str()),
            }),
            ..Outcome::default()
        },
    })
}

/// The execution a dispatch is for.
pub struct ForExecution<'a> {
    pub id: i64,
    pub service_id: Option<ServiceId>,
    pub scope: &'a Scope,
    pub now: Timestamp,
    /// The script versions pinned when the execution started.
    pub scripts: &'a BTreeMap<String, super::PinnedScript>,
}

/// Queues `runs` (agent id, run id) of step `step` unless they exist, and answers the runs
/// that have ended (or could not be queued) as `RunFinished` events.
pub async fn dispatch(
    store: &dyn Store,
    plan: &Plan,
    step: usize,
    runs: Vec<(String, String)>,
    exec: &ForExecution<'_>,
) -> Vec<Event> {
    let StepKind::Script(s) = &plan.steps[step].kind else {
        return Vec::new();
    };
    let mut events = Vec::new();
    // The version pinned at the start (still approved), and the parameters as data.
    let version = match pinned_version(store, exec.scripts, &s.script).await {
        Ok(v) => v,
        Err(e) => {
            return runs
                .into_iter()
                .map(|(_, run_id)| ended(failure(e.clone()), step, run_id))
                .collect();
        }
    };
    // A parameter that uses a secret is stored masked, with its secrets kept as references
    // (`secret_parameters`); the gateway puts the values in when it sends the run.
    let masker = exec.scope.masker();
    let mut parameters = BTreeMap::new();
    let mut secret_parameters = BTreeMap::new();
    for (name, template) in &s.params {
        let rendered = template.render(exec.scope).and_then(|v| {
            if template.uses_secrets() {
                let parts = template.render_parts(exec.scope)?;
                secret_parameters.insert(name.clone(), parts);
                Ok(masker.mask(&v))
            } else {
                Ok(v)
            }
        });
        match rendered {
            Ok(v) => {
                parameters.insert(name.clone(), v);
            }
            Err(e) => {
                let why = format!("params.{name}: {e}");
                return runs
                    .into_iter()
                    .map(|(_, run_id)| ended(failure(why.clone()), step, run_id))
                    .collect();
            }
        }
    }
    let timeout = i32::try_from(s.timeout.as_secs()).unwrap_or(i32::MAX);
    let actor = format!("playbook execution {}", exec.id);
    for (agent_id, run_id) in runs {
        match store.get_agent_run(&run_id).await {
            Ok(Some(run)) => {
                if let Some(o) = outcome_of(&run, exec.scope) {
                    events.push(ended(o, step, run_id));
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(run = %run_id, error = %e, "cannot read a run");
                continue;
            }
        }
        match store.get_agent(&agent_id).await {
            Ok(Some(a)) if a.revoked_at.is_none() => {}
            Ok(_) => {
                events.push(ended(
                    failure(format!("no registered, unrevoked agent `{agent_id}`")),
                    step,
                    run_id,
                ));
                continue;
            }
            Err(e) => {
                tracing::warn!(agent = %agent_id, error = %e, "cannot read an agent");
                continue;
            }
        }
        let new = NewAgentRun {
            id: run_id.clone(),
            agent_id: agent_id.clone(),
            script_id: crate::store::ScriptId(version.script_id),
            script_version: version.version,
            parameters: parameters.clone(),
            secret_parameters: secret_parameters.clone(),
            timeout_seconds: timeout,
            requested_by: actor.clone(),
            at: exec.now,
            expires_at: exec
                .now
                .plus_millis(i64::try_from(RUN_EXPIRY.as_millis()).unwrap_or(i64::MAX)),
            audit: Some(NewAuditEntry {
                action_type: "agent_run_requested".to_owned(),
                actor: actor.clone(),
                on_behalf_of: None,
                service_id: exec.service_id,
                execution_id: Some(exec.id),
                details: json!({
                    "run_id": run_id, "agent_id": agent_id, "script": s.script,
                    "version": version.version, "sha256": version.sha256,
                    "step": plan.steps[step].name,
                }),
                at: exec.now,
            }),
        };
        match store.create_agent_run(&new).await {
            Ok(_) => {
                metrics::counter!(crate::gateway::RUNS_METRIC, "status" => "queued").increment(1);
            }
            // Queued by an earlier attempt: it exists, which is all that is asked.
            Err(StoreError::Conflict(_)) => {}
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(run = %run_id, error = %e, "cannot queue a run; will retry");
            }
            Err(e) => events.push(ended(
                failure(format!("cannot queue the run on `{agent_id}`: {e}")),
                step,
                run_id,
            )),
        }
    }
    events
}

/// The version of `name` an execution pinned, checked to be still approved with the same hash.
pub(super) async fn pinned_version(
    store: &dyn Store,
    pins: &BTreeMap<String, super::PinnedScript>,
    name: &str,
) -> Result<super::PinnedScript, String> {
    let pin = pins
        .get(name)
        .ok_or_else(|| format!("script `{name}` was not pinned when the execution started"))?;
    let v = store
        .get_script_version(crate::store::ScriptId(pin.script_id), pin.version)
        .await
        .map_err(|e| format!("cannot read script `{name}`: {e}"))?
        .ok_or_else(|| {
            format!(
                "version {} of script `{name}` no longer exists",
                pin.version
            )
        })?;
    if v.status != ScriptStatus::Approved || v.sha256 != pin.sha256 {
        return Err(format!(
            "version {} of script `{name}` is no longer the approved text pinned at the start",
            pin.version
        ));
    }
    Ok(pin.clone())
}

/// The latest approved version of script `name`, to pin when an execution starts.
///
/// # Errors
/// The script is not registered, has no approved version, or cannot be read.
pub async fn approved_version(
    store: &dyn Store,
    name: &str,
) -> Result<super::PinnedScript, String> {
    let id = store
        .script_id_by_name(name)
        .await
        .map_err(|e| format!("cannot read script `{name}`: {e}"))?
        .ok_or_else(|| format!("no script is registered as `{name}`"))?;
    let script = store
        .get_script(id)
        .await
        .map_err(|e| format!("cannot read script `{name}`: {e}"))?
        .ok_or_else(|| format!("no script is registered as `{name}`"))?;
    script
        .versions
        .iter()
        .rev()
        .find(|v| v.status == ScriptStatus::Approved)
        .map(|v| super::PinnedScript {
            script_id: script.id.0,
            version: v.version,
            sha256: v.sha256.clone(),
        })
        .ok_or_else(|| format!("script `{name}` has no approved version"))
}
