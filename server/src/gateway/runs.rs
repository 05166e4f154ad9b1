//! Runs inside a session: sending queued runs as `run_request`s, and storing what the agent
//! reports about them (`run_accepted`, `run_result`, `run_skipped`), answering `ack` once a
//! report is durable.
//!
//! A run is sent at most once per session: the first dispatch of a session also resends runs
//! that an earlier session sent but the agent never accepted (the agent's own run-id memory makes
//! that safe), except those the agent lists in `hello.running`; later dispatches (a new run was
//! queued, or a heartbeat arrived) send only queued runs.

use axum::extract::ws::WebSocket;
use medic_protocol::{Ack, AgentMessage, RunId, RunRequest, RunStatus, ServerMessage};

use super::send;
use crate::domain::Timestamp;
use crate::store::{AgentRunEnd, AgentRunStatus, ScriptStatus, Store};

fn at(t: &medic_protocol::Timestamp) -> Timestamp {
    Timestamp::from_millis(t.unix_millis())
}

/// Sends the agent's pending runs. Store failures are logged; the runs stay queued.
pub(super) async fn dispatch(
    store: &dyn Store,
    socket: &mut WebSocket,
    agent_id: &str,
    resend: bool,
    running: &[RunId],
) -> Result<(), axum::Error> {
    let pending = match store.pending_agent_runs(agent_id, resend).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(agent_id, error = %e, "could not load pending runs");
            return Ok(());
        }
    };
    for run in pending {
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
            .iter()
            .find(|v| v.version == run.script_version)
        else {
            continue;
        };
        let request = ServerMessage::RunRequest(RunRequest {
            run_id: RunId::new(run.run_id.clone()),
            script: script.name.clone(),
            version: u32::try_from(version.version).unwrap_or(0),
            interpreter: version.interpreter,
            content: version.content.clone(),
            sha256: version.sha256.clone(),
            approved: version.status == ScriptStatus::Approved,
            parameters: run.parameters.clone(),
            timeout_seconds: u32::try_from(run.timeout_seconds).unwrap_or(1),
            output_cap_bytes: None,
            stream_output: false,
            expires_at: None,
        });
        send(socket, &request).await?;
        if let Err(e) = store.agent_run_sent(&run.run_id, Timestamp::now()).await {
            tracing::warn!(agent_id, run_id = run.run_id, error = %e, "could not mark a run sent");
        }
        tracing::info!(
            agent_id,
            run_id = run.run_id,
            script = script.name,
            "run sent"
        );
    }
    Ok(())
}

/// Stores a report about a run and acknowledges it once stored.
pub(super) async fn report(
    store: &dyn Store,
    socket: &mut WebSocket,
    agent_id: &str,
    message: AgentMessage,
) -> Result<(), axum::Error> {
    let (run_id, end) = match message {
        AgentMessage::RunAccepted(a) => {
            if let Err(e) = store
                .agent_run_started(agent_id, a.run_id.as_str(), at(&a.started_at))
                .await
            {
                tracing::warn!(agent_id, run_id = %a.run_id, error = %e, "could not mark a run started");
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
                stdout: r.stdout,
                stderr: r.stderr,
                stdout_truncated: r.stdout_truncated,
                stderr_truncated: r.stderr_truncated,
                started_at: at(&r.started_at),
                finished_at: at(&r.finished_at),
                duration_ms: i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            };
            (r.run_id, end)
        }
        AgentMessage::RunSkipped(s) => {
            let reason = serde_json::to_value(s.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned());
            tracing::warn!(agent_id, run_id = %s.run_id, script = s.script, reason, "run skipped by the agent");
            let end = AgentRunEnd::Skipped {
                reason,
                detail: s.detail,
                at: Timestamp::now(),
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
        Ok(Some(status)) => {
            metrics::counter!("medic_agent_runs_finished_total", "status" => status.as_str())
                .increment(1);
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
