//! Runs inside a session: sending queued runs as `run_request`s, and storing what the agent
//! reports about them (`run_accepted`, `run_result`, `run_skipped`), answering `ack` once a
//! report is durable.
//!
//! A run is sent at most once per session: the first dispatch of a session also resends runs
//! that an earlier session sent but the agent never accepted (the agent's own run-id memory makes
//! that safe), except those the agent lists in `hello.running`; later dispatches (a new run was
//! queued, or a heartbeat arrived) send only queued runs, and never one past its expiry.
//!
//! A run that ends without a report is ended here too, by [`sweep_runs`]: `expired` when it
//! was still queued at its expiry, `lost` when it was sent or running and the agent did not
//! report by its deadline (timeout + grace after it was sent or started, or a grace after the
//! agent came back without it). A `duplicate` refusal of a resent run (the agent's journal
//! knows the id but nothing else) is `lost` at once.

use std::time::Duration;

use axum::extract::ws::WebSocket;
use medic_protocol::{Ack, AgentMessage, RunId, RunRequest, RunStatus, ServerMessage, SkipReason};

use super::send;
use crate::clock::Clock;
use crate::domain::Timestamp;
use crate::playbook::secrets::SecretValue;
use crate::playbook::vars::{Masker, join_parts, secret_names};
use crate::store::{AgentRun, AgentRunEnd, AgentRunStatus, ScriptStatus, Store};

/// Runs that reached each status (`status` label), counted once by the replica that stored it.
pub const RUNS_METRIC: &str = "medic_agent_runs_total";

/// Refusals by the agent, by its reason (`reason` label).
pub const REFUSED_METRIC: &str = "medic_agent_runs_refused_total";

/// Refusals that mean "not now" (the agent is at its concurrency limit, or stopping): the run
/// goes back to the queue and is sent again (within about a second, or when the agent
/// reconnects) until it runs or expires.
fn defers(reason: SkipReason) -> bool {
    matches!(reason, SkipReason::Busy | SkipReason::Draining)
}

/// Puts a run the agent declined for now back in the queue, and acknowledges the refusal.
async fn defer(
    store: &dyn Store,
    socket: &mut WebSocket,
    agent_id: &str,
    run_id: RunId,
    reason: &str,
) -> Result<(), axum::Error> {
    match store.requeue_agent_run(agent_id, run_id.as_str()).await {
        Ok(requeued) => {
            if requeued {
                metrics::counter!(REFUSED_METRIC, "reason" => reason.to_owned()).increment(1);
            }
            tracing::info!(agent_id, run_id = %run_id, reason, requeued, "run deferred by the agent");
        }
        // Not stored: no ack, so the agent resends the refusal after its next welcome.
        Err(e) => {
            tracing::warn!(agent_id, run_id = %run_id, error = %e, "could not requeue a run");
            return Ok(());
        }
    }
    send(socket, &ServerMessage::Ack(Ack { run_id })).await
}

/// Time from sending a run to storing the agent's report about it.
pub const LATENCY_METRIC: &str = "medic_agent_run_result_seconds";

/// The secrets of runs whose parameters use them (playbook script steps): the values are put
/// into the run's request when it is sent — they are never stored, neither in the run record
/// (which keeps each secret's name and the parameter masked) nor anywhere else — and every
/// secret value is masked in what the agent reports (output, refusal detail) before it is
/// stored.
#[derive(Default)]
pub(crate) struct RunSecrets {
    keyring: Option<crate::playbook::secrets::Keyring>,
    /// The masker of each run this process sent and that has not reported yet (`None`: the
    /// run uses no secret). A run sent elsewhere (another replica, before a restart) is read
    /// from the store when it reports.
    sent: std::sync::Mutex<std::collections::HashMap<String, Option<Masker>>>,
}

/// Most runs [`RunSecrets`] remembers; it starts over when full (and reads the store instead).
const MAX_REMEMBERED_RUNS: usize = 100_000;

/// Why a run's parameters could not be made.
enum ParamsError {
    /// The store could not be read: the run goes back to the queue.
    Store(String),
    /// A secret is not stored (or does not open): the run cannot be sent.
    Missing(String),
}

impl RunSecrets {
    pub(crate) fn new(keyring: Option<crate::playbook::secrets::Keyring>) -> Self {
        Self {
            keyring,
            sent: std::sync::Mutex::default(),
        }
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Option<Masker>>> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, run_id: &str, masker: Option<Masker>) {
        let mut sent = self.sent();
        if sent.len() >= MAX_REMEMBERED_RUNS {
            sent.clear();
        }
        sent.insert(run_id.to_owned(), masker);
    }

    /// The parameters to send for `run`: its own, with the secrets' values put in.
    async fn parameters(
        &self,
        store: &dyn Store,
        run: &AgentRun,
    ) -> Result<std::collections::BTreeMap<String, String>, ParamsError> {
        if run.secret_parameters.is_empty() {
            self.remember(&run.run_id, None);
            return Ok(run.parameters.clone());
        }
        let (values, masker) = self.open(store, run).await?;
        let mut parameters = run.parameters.clone();
        for (name, parts) in &run.secret_parameters {
            let value = join_parts(parts, |n| values.get(n).map(SecretValue::expose)).map_err(
                |missing| {
                    ParamsError::Missing(format!(
                        "parameter {name}: no secret called `{missing}` is stored"
                    ))
                },
            )?;
            parameters.insert(name.clone(), value);
        }
        self.remember(&run.run_id, Some(masker));
        Ok(parameters)
    }

    /// Opens the secrets `run` uses, and a masker of their values.
    async fn open(
        &self,
        store: &dyn Store,
        run: &AgentRun,
    ) -> Result<(std::collections::BTreeMap<String, SecretValue>, Masker), ParamsError> {
        let names = run.secret_parameters.values().flat_map(|p| secret_names(p));
        let values = crate::engine::secrets::open(store, self.keyring.as_ref(), names)
            .await
            .map_err(|e| ParamsError::Store(e.to_string()))?;
        let masker = Masker::new(values.values().map(SecretValue::expose));
        Ok((values, masker))
    }

    /// The masker for what the agent reports about `run_id`, if the run uses secrets.
    async fn masker(&self, store: &dyn Store, run_id: &str) -> Option<Masker> {
        if let Some(m) = self.sent().get(run_id) {
            return m.clone();
        }
        // Without keys no secret can be opened, so there is nothing to mask with.
        self.keyring.as_ref()?;
        match store.get_agent_run(run_id).await {
            Ok(Some(run)) if !run.secret_parameters.is_empty() => {
                self.open(store, &run).await.ok().map(|(_, m)| m)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(run_id, error = %e, "could not read a run to mask its report");
                None
            }
        }
    }

    fn forget(&self, run_id: &str) {
        self.sent().remove(run_id);
    }
}

/// A run sent or started at `now` is lost unless reported by this plus its timeout.
fn lost_base(now: Timestamp, grace: Duration) -> Timestamp {
    now.plus_millis(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX))
}

fn at(t: &medic_protocol::Timestamp) -> Timestamp {
    Timestamp::from_millis(t.unix_millis())
}

/// Sends the agent's pending runs: with `resend` (the start of a session) first those an
/// earlier session sent and the agent never accepted, except the ones it says are `running`;
/// then every queued run, claimed and read in one statement. Store failures are logged; the
/// runs stay where they were.
#[allow(clippy::too_many_arguments)]
pub(super) async fn dispatch(
    store: &dyn Store,
    clock: &Clock,
    socket: &mut WebSocket,
    agent_id: &str,
    resend: bool,
    running: &[RunId],
    grace: Duration,
    secrets: &RunSecrets,
) -> Result<(), axum::Error> {
    if resend {
        resend_unaccepted(store, clock, socket, agent_id, running, grace, secrets).await?;
    }
    let now = clock.now();
    // Claimed before they are sent, so a run that expired (or ended) meanwhile is never sent; a
    // claimed run whose send fails is sent again to the next session.
    let claimed = match store
        .claim_agent_runs(agent_id, now, lost_base(now, grace))
        .await
    {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::warn!(agent_id, error = %e, "could not claim queued runs");
            return Ok(());
        }
    };
    for c in claimed {
        let Some(parameters) = parameters_or_end(store, clock, agent_id, &c.run, secrets).await
        else {
            continue;
        };
        let request = run_request(
            &c.run,
            parameters,
            c.script_name,
            c.interpreter,
            c.content,
            c.sha256,
            c.approved,
        );
        send_run(socket, agent_id, request).await?;
    }
    Ok(())
}

/// The parameters to send for `run` (secrets put in); `None` when it cannot be sent now: back
/// in the queue when the store could not be read, refused (`secret_missing`, naming the
/// secret) when a secret it uses is not stored.
async fn parameters_or_end(
    store: &dyn Store,
    clock: &Clock,
    agent_id: &str,
    run: &AgentRun,
    secrets: &RunSecrets,
) -> Option<std::collections::BTreeMap<String, String>> {
    match secrets.parameters(store, run).await {
        Ok(p) => Some(p),
        Err(ParamsError::Store(e)) => {
            tracing::warn!(agent_id, run_id = run.run_id, error = %e, "could not read a run's secrets");
            if let Err(e) = store.requeue_agent_run(agent_id, &run.run_id).await {
                tracing::warn!(agent_id, run_id = run.run_id, error = %e, "could not requeue a run");
            }
            None
        }
        Err(ParamsError::Missing(detail)) => {
            tracing::warn!(
                agent_id,
                run_id = run.run_id,
                detail,
                "a run's secret is missing"
            );
            let end = AgentRunEnd::Refused {
                reason: "secret_missing".to_owned(),
                detail,
                at: clock.now(),
            };
            if let Err(e) = store.finish_agent_run(agent_id, &run.run_id, &end).await {
                tracing::warn!(agent_id, run_id = run.run_id, error = %e, "could not end a run");
            }
            None
        }
    }
}

/// Sends again the runs an earlier session sent and the agent never accepted.
async fn resend_unaccepted(
    store: &dyn Store,
    clock: &Clock,
    socket: &mut WebSocket,
    agent_id: &str,
    running: &[RunId],
    grace: Duration,
    secrets: &RunSecrets,
) -> Result<(), axum::Error> {
    let unaccepted = match store.unaccepted_agent_runs(agent_id).await {
        Ok(runs) => runs,
        Err(e) => {
            tracing::warn!(agent_id, error = %e, "could not load runs to send again");
            return Ok(());
        }
    };
    for run in unaccepted {
        if running.iter().any(|r| r.as_str() == run.run_id) {
            continue;
        }
        let script = match store.get_script(run.script_id).await {
            Ok(Some(script)) => script,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(agent_id, error = %e, "could not load a run's script");
                return Ok(());
            }
        };
        let Some(version) = script
            .versions
            .into_iter()
            .find(|v| v.version == run.script_version)
        else {
            continue;
        };
        let Some(parameters) = parameters_or_end(store, clock, agent_id, &run, secrets).await
        else {
            continue;
        };
        let request = run_request(
            &run,
            parameters,
            script.name,
            version.interpreter,
            version.content,
            version.sha256,
            version.status == ScriptStatus::Approved,
        );
        let now = clock.now();
        match store
            .agent_run_sent(&run.run_id, now, lost_base(now, grace))
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(agent_id, run_id = run.run_id, error = %e, "could not mark a run sent");
                return Ok(());
            }
        }
        send_run(socket, agent_id, request).await?;
    }
    Ok(())
}

fn run_request(
    run: &AgentRun,
    parameters: std::collections::BTreeMap<String, String>,
    script: String,
    interpreter: medic_protocol::Interpreter,
    content: String,
    sha256: String,
    approved: bool,
) -> RunRequest {
    RunRequest {
        run_id: RunId::new(run.run_id.clone()),
        script,
        version: u32::try_from(run.script_version).unwrap_or(0),
        interpreter,
        content,
        sha256,
        approved,
        parameters,
        timeout_seconds: u32::try_from(run.timeout_seconds).unwrap_or(1),
        output_cap_bytes: None,
        stream_output: false,
        // Only a queued run expires: one already sent may be running on the agent.
        expires_at: None,
    }
}

/// Sends a claimed run and counts it.
async fn send_run(
    socket: &mut WebSocket,
    agent_id: &str,
    request: RunRequest,
) -> Result<(), axum::Error> {
    tracing::info!(agent_id, run_id = %request.run_id, script = request.script, "sending a run");
    send(socket, &ServerMessage::RunRequest(request)).await?;
    metrics::counter!(RUNS_METRIC, "status" => AgentRunStatus::Dispatched.as_str()).increment(1);
    Ok(())
}

/// Checks the strings of a run report before anything is stored, as the HTTP API checks its
/// input. Identifiers (the run id, a refused run's script name) must follow the protocol's
/// rules: a report that breaks them is refused (`Err`, the session ends `malformed`). Text for
/// people is kept, made storable on every backend: the script's output loses only NUL (which
/// PostgreSQL cannot store; colours, tabs and line breaks stay), a refusal's detail every
/// control character but tab and line breaks. Each removed character becomes U+FFFD, as
/// invalid UTF-8 already does.
pub(super) fn checked_report(message: AgentMessage) -> Result<AgentMessage, String> {
    use medic_protocol::validate::{validate_run_id, validate_script_name};
    let run_id = match &message {
        AgentMessage::RunAccepted(a) => Some(&a.run_id),
        AgentMessage::RunOutput(o) => Some(&o.run_id),
        AgentMessage::RunResult(r) => Some(&r.run_id),
        AgentMessage::RunSkipped(s) => Some(&s.run_id),
        _ => None,
    };
    if let Some(run_id) = run_id {
        validate_run_id(run_id.as_str()).map_err(|e| e.to_string())?;
    }
    Ok(match message {
        AgentMessage::RunResult(mut r) => {
            r.stdout = replace(r.stdout, |c| c == '\0');
            r.stderr = replace(r.stderr, |c| c == '\0');
            AgentMessage::RunResult(r)
        }
        AgentMessage::RunOutput(mut o) => {
            o.chunk = replace(o.chunk, |c| c == '\0');
            AgentMessage::RunOutput(o)
        }
        AgentMessage::RunSkipped(mut s) => {
            validate_script_name(&s.script).map_err(|e| e.to_string())?;
            s.detail = replace(s.detail, |c| {
                c.is_control() && !matches!(c, '\t' | '\n' | '\r')
            });
            AgentMessage::RunSkipped(s)
        }
        other => other,
    })
}

/// `text` with every character `bad` matches replaced by U+FFFD (no copy when none does).
fn replace(text: String, bad: impl Fn(char) -> bool) -> String {
    if text.chars().any(&bad) {
        text.chars()
            .map(|c| if bad(c) { '\u{FFFD}' } else { c })
            .collect()
    } else {
        text
    }
}

/// Stores a report about a run and acknowledges it once stored.
#[allow(clippy::too_many_arguments)]
pub(super) async fn report(
    store: &dyn Store,
    clock: &Clock,
    socket: &mut WebSocket,
    agent_id: &str,
    message: AgentMessage,
    grace: Duration,
    runs_ended: &super::RunWatch,
    secrets: &RunSecrets,
) -> Result<(), axum::Error> {
    let mut refused = None;
    // What the agent reports of a run that uses secrets is masked before it is stored.
    let masker = match &message {
        AgentMessage::RunResult(r) => secrets.masker(store, r.run_id.as_str()).await,
        AgentMessage::RunSkipped(s) => secrets.masker(store, s.run_id.as_str()).await,
        _ => None,
    };
    // An output the agent cut at its cap may end in half a secret: that half is masked too.
    let mask_cut = |text: String, cut: bool| match &masker {
        Some(m) => m.mask_maybe_cut(&text, cut),
        None => text,
    };
    let mask = |text: String| mask_cut(text, false);
    let (run_id, end) = match message {
        AgentMessage::RunAccepted(a) => {
            let base = lost_base(clock.now(), grace);
            match store
                .agent_run_started(agent_id, a.run_id.as_str(), at(&a.started_at), base)
                .await
            {
                Ok(true) => {
                    metrics::counter!(RUNS_METRIC, "status" => AgentRunStatus::Running.as_str())
                        .increment(1);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(agent_id, run_id = %a.run_id, error = %e, "could not mark a run started");
                }
            }
            return Ok(());
        }
        AgentMessage::RunResult(r) => {
            let status = match r.status {
                RunStatus::Succeeded => AgentRunStatus::Succeeded,
                RunStatus::Failed => AgentRunStatus::Failed,
                RunStatus::TimedOut => AgentRunStatus::TimedOut,
            };
            let end = AgentRunEnd::Finished {
                status,
                exit_code: r.exit_code,
                signal: r.signal,
                stdout: mask_cut(r.stdout, r.stdout_truncated),
                stderr: mask_cut(r.stderr, r.stderr_truncated),
                stdout_truncated: r.stdout_truncated,
                stderr_truncated: r.stderr_truncated,
                started_at: at(&r.started_at),
                finished_at: at(&r.finished_at),
                duration_ms: i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            };
            (r.run_id, end)
        }
        AgentMessage::RunSkipped(s) => {
            let reason = s.reason.as_str();
            if defers(s.reason) {
                return defer(store, socket, agent_id, s.run_id, reason).await;
            }
            tracing::warn!(agent_id, run_id = %s.run_id, script = s.script, reason, "run refused by the agent");
            refused = Some(reason);
            let end = AgentRunEnd::Refused {
                reason: reason.to_owned(),
                detail: mask(s.detail),
                at: clock.now(),
            };
            (s.run_id, end)
        }
        // Streamed output is best effort and not stored yet.
        _ => return Ok(()),
    };
    match store
        .finish_agent_run(agent_id, run_id.as_str(), &end)
        .await
    {
        Ok(Some(finish)) => {
            secrets.forget(run_id.as_str());
            if finish.stored {
                runs_ended.ended(run_id.as_str());
                metrics::counter!(RUNS_METRIC, "status" => finish.status.as_str()).increment(1);
                if let Some(reason) = refused {
                    metrics::counter!(REFUSED_METRIC, "reason" => reason).increment(1);
                }
                if let Some(sent) = finish.dispatched_at {
                    let took = clock.now().millis().saturating_sub(sent.millis());
                    metrics::histogram!(LATENCY_METRIC).record(took.max(0) as f64 / 1000.0);
                }
            }
        }
        // A run this server never queued for this agent: nothing to keep, and the agent should
        // stop resending it.
        Ok(None) => tracing::warn!(agent_id, run_id = %run_id, "report for an unknown run"),
        // Not stored: no ack, so the agent resends it after its next welcome.
        Err(e) => {
            tracing::warn!(agent_id, run_id = %run_id, error = %e, "could not store a run report");
            return Ok(());
        }
    }
    send(socket, &ServerMessage::Ack(Ack { run_id })).await
}

/// How often [`sweep_runs`] looks for expired and lost runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Until `stop`, ends runs that waited in the queue past their expiry (`expired`) and runs sent
/// or running past their deadline (`lost`), as of `clock`'s time (a manual clock's advance
/// brings the next pass at once). Each pass is two guarded `UPDATE`s, so any number of
/// replicas may sweep at once and a run still ends once.
pub async fn sweep_runs(
    store: std::sync::Arc<dyn Store>,
    clock: Clock,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = clock.ticks();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
            () = ticks.advanced() => {}
        }
        match store.sweep_agent_runs(clock.now()).await {
            Ok(swept) => {
                for (status, n) in [
                    (AgentRunStatus::Expired, swept.expired),
                    (AgentRunStatus::Lost, swept.lost),
                ] {
                    if n > 0 {
                        metrics::counter!(RUNS_METRIC, "status" => status.as_str()).increment(n);
                        tracing::warn!(
                            runs = n,
                            status = status.as_str(),
                            "runs ended by the sweep"
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep runs"),
        }
    }
}
