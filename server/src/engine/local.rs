//! Script steps on the server itself (`on: server`), when the operator allows them
//! (`MEDIC_SERVER_SCRIPTS`).
//!
//! They run through **the agent's executor** (`medic_agent::exec`), not a second one, so they
//! have the agent's guarantees: the server's own allowlist of script names, the approved
//! version's hash checked against the text that runs, a cleared environment with the parameters
//! as `MEDIC_PARAM_*` data (never substituted into the text), an unprivileged account
//! (`MEDIC_SERVER_SCRIPTS_USER`; never root), a timeout that kills the whole process group, and
//! an output cap. Run ids are remembered in a journal in the work directory, so one id never
//! runs twice on this host, and the step machine marks the step in flight before the script
//! starts: a server that dies while a script runs does not run it again after the restart (the
//! step ends `interrupted` and the execution follows its `on_failure`). Cancelling the
//! execution kills the script's process group at once when the cancel is decided on the
//! replica running it, and within [`CANCEL_RECHECK`] otherwise (the worker reads the execution
//! again that often while its script runs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use medic_agent::exec::{
    Allowlist, ExecSettings, Executor, INTERPRETER_DIRS, ResourceLimits, RunAs, Stop,
    switching_capabilities,
};
use medic_protocol::{AgentId, RunId, RunRequest, RunStatus as Ended};

use crate::playbook::machine::Outcome;
use crate::playbook::plan::{Plan, StepKind};
use crate::playbook::vars::Scope;
use crate::store::Store;

/// How often a worker running a script on the server reads the execution again, to stop the
/// script when another replica decided the execution (cancelled it).
pub const CANCEL_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The executor's id for the server, passed to scripts as `MEDIC_AGENT_ID`.
pub const SERVER_ID: &str = "medic-server";

/// The most output kept per stream of a script run on the server.
const OUTPUT_CAP_BYTES: u64 = 64 * 1024;

/// The most scripts running on the server at once; a step that finds them all busy fails with
/// that reason.
const MAX_CONCURRENT: usize = 8;

/// What the operator allowed (`MEDIC_SERVER_SCRIPTS*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerScriptSettings {
    /// The names of the scripts that may run on the server.
    pub allow: BTreeSet<String>,
    /// Where private run directories and the run-id journal are kept.
    pub dir: PathBuf,
    /// The account scripts run as.
    pub user: Option<String>,
}

/// Runs allowed scripts on the server. A cheap handle.
#[derive(Debug, Clone)]
pub struct ServerScripts {
    executor: Executor,
    allow: BTreeSet<String>,
}

impl ServerScripts {
    /// An executor for `settings`, or why the server cannot run scripts (the caller refuses to
    /// start: a server told to run scripts that cannot do so safely must not come up quietly).
    pub fn start(settings: &ServerScriptSettings) -> Result<Self, String> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let euid = rustix::process::geteuid().as_raw();
        let can_switch = switching_capabilities();
        if settings.user.is_none() && (euid == 0 || can_switch) {
            return Err(
                "MEDIC_SERVER_SCRIPTS is set and the server can switch users (it runs as root or \
                 holds CAP_SETUID and CAP_SETGID), but MEDIC_SERVER_SCRIPTS_USER is not set: \
                 name the unprivileged account scripts run as"
                    .to_owned(),
            );
        }
        let run_as = RunAs::resolve(settings.user.as_deref(), euid, can_switch, &passwd)
            .map_err(|e| format!("MEDIC_SERVER_SCRIPTS_USER: {}", e.replace("run_as ", "")))?;
        let mut allowlist = Allowlist::default();
        for name in &settings.allow {
            allowlist.insert(name.clone(), None);
        }
        let exec = ExecSettings {
            agent_id: AgentId::new(SERVER_ID),
            allowlist,
            work_dir: settings.dir.clone(),
            output_cap_bytes: OUTPUT_CAP_BYTES,
            max_concurrent_runs: MAX_CONCURRENT,
            pass_env: Vec::new(),
            limits: ResourceLimits::default(),
            run_as,
            interpreter_dirs: INTERPRETER_DIRS.iter().map(PathBuf::from).collect(),
        };
        let dir = settings.dir.display();
        // Only the base variables (`PATH`, `HOME`, …) are ever read from this map.
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let executor = Executor::new(exec, env)
            .and_then(|e| e.with_journal(&journal_path(&settings.dir)))
            .map_err(|e| format!("MEDIC_SERVER_SCRIPTS_DIR {dir}: {e}"))?;
        Ok(Self {
            executor,
            allow: settings.allow.clone(),
        })
    }

    /// Whether the operator allowed `script` on the server.
    pub fn allows(&self, script: &str) -> bool {
        self.allow.contains(script)
    }

    /// The names allowed, for `check-config` and the logs.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.allow.iter().map(String::as_str)
    }
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal")
}

fn failure(error: String) -> Outcome {
    Outcome {
        ok: false,
        error: Some(error),
        ..Outcome::default()
    }
}

/// Runs step `step` of an execution (a script `on: server`) and answers its outcome, output and
/// errors masked. The step must already be committed as in flight. Dropping `stop`'s
/// [`Stopper`](medic_agent::exec::Stopper) kills the script's process group (the execution was
/// cancelled).
#[allow(clippy::too_many_arguments)]
pub async fn run_step(
    scripts: Option<&ServerScripts>,
    store: &dyn Store,
    plan: &Plan,
    step: usize,
    execution_id: i64,
    scope: &Scope,
    pins: &BTreeMap<String, super::PinnedScript>,
    stop: Option<Stop>,
) -> Outcome {
    let StepKind::Script(s) = &plan.steps[step].kind else {
        return failure("not a script step".to_owned());
    };
    let Some(scripts) = scripts else {
        return failure("scripts on the server are disabled (MEDIC_SERVER_SCRIPTS)".to_owned());
    };
    if !scripts.allows(&s.script) {
        return failure(format!(
            "script `{}` is not in MEDIC_SERVER_SCRIPTS, the server's allowlist",
            s.script
        ));
    }
    let pin = match super::runs::pinned_version(store, pins, &s.script).await {
        Ok(pin) => pin,
        Err(e) => return failure(e),
    };
    let version = match store
        .get_script_version(crate::store::ScriptId(pin.script_id), pin.version)
        .await
    {
        Ok(Some(v)) if v.sha256 == pin.sha256 => v,
        Ok(_) => {
            return failure(format!(
                "version {} of script `{}` changed after it was pinned",
                pin.version, s.script
            ));
        }
        Err(e) => return failure(format!("cannot read script `{}`: {e}", s.script)),
    };
    let masker = scope.masker();
    let mut parameters = BTreeMap::new();
    for (name, template) in &s.params {
        match template.render(scope) {
            Ok(v) => {
                parameters.insert(name.clone(), v);
            }
            Err(e) => return failure(masker.mask(&format!("params.{name}: {e}"))),
        }
    }
    let request = RunRequest {
        // Deterministic, as the agents' runs are, so the journal refuses a second attempt.
        run_id: RunId::new(format!("{execution_id}.{step}.server")),
        script: s.script.clone(),
        version: u32::try_from(version.version).unwrap_or(0),
        interpreter: version.interpreter,
        content: version.content,
        sha256: version.sha256,
        approved: true,
        parameters,
        timeout_seconds: u32::try_from(s.timeout.as_secs().max(1)).unwrap_or(u32::MAX),
        output_cap_bytes: None,
        stream_output: false,
        expires_at: None,
    };
    let executor = scripts.executor.clone();
    let ran = tokio::task::spawn_blocking(move || match stop {
        Some(stop) => executor.execute_until(&request, SystemTime::now(), stop),
        None => executor.execute(&request, SystemTime::now()),
    })
    .await;
    let result = match ran {
        Ok(Ok(result)) => result,
        Ok(Err(refusal)) => {
            return failure(masker.mask(&format!(
                "the server refused to run it: {}: {}",
                refusal.reason.as_str(),
                refusal.detail
            )));
        }
        Err(e) => return failure(format!("the script's runner failed: {e}")),
    };
    let output = super::runs::step_output(
        &masker,
        (&result.stdout, result.stdout_truncated),
        (&result.stderr, result.stderr_truncated),
    );
    let output = (!output.is_empty()).then_some(output);
    match result.status {
        Ended::Succeeded => Outcome {
            ok: true,
            exit_code: result.exit_code,
            output,
            ..Outcome::default()
        },
        Ended::Failed => Outcome {
            ok: false,
            exit_code: result.exit_code,
            output,
            error: Some(match (result.exit_code, result.signal) {
                (Some(c), _) => format!("the script exited with code {c}"),
                (None, Some(sig)) => format!("the script was killed by signal {sig}"),
                (None, None) => "the script could not be started".to_owned(),
            }),
            ..Outcome::default()
        },
        Ended::TimedOut => Outcome {
            ok: false,
            exit_code: result.exit_code,
            output,
            error: Some(format!(
                "the script ran past its timeout of {} s and was killed",
                s.timeout.as_secs()
            )),
            ..Outcome::default()
        },
    }
}
