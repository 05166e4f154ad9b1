//! The conversation after `welcome`: the agent's frames in (heartbeats, run reports), the
//! gateway's control messages (close, dispatch) and the server's drain out, until one side ends
//! the session.

use axum::extract::ws::{Message, WebSocket};
use medic_protocol::{AgentMessage, Drain, ErrorCode, HostFacts, RunId, ServerMessage};
use tokio::sync::mpsc;

use super::{
    Control, DRAIN_RECONNECT_AFTER, Gateway, IDLE_TIMEOUT, SessionContext, close, close_code,
    refuse, runs, send,
};
use crate::domain::Timestamp;
use crate::store::{HeartbeatOutcome, NewHeartbeat, Store};

/// An open session: who it is and what its hello said.
pub(super) struct Open<'a> {
    pub(super) agent_id: &'a str,
    pub(super) session_id: &'a str,
    /// The heartbeat key of the agent's service.
    pub(super) service_key: String,
    /// Runs the agent said are still executing.
    pub(super) running: &'a [RunId],
}

impl Gateway {
    /// The session after `welcome`: heartbeats in, control and drain from the gateway. Returns
    /// why it ended, for the log.
    pub(super) async fn converse(
        &self,
        ctx: &SessionContext,
        socket: &mut WebSocket,
        control: &mut mpsc::Receiver<Control>,
        open: Open<'_>,
    ) -> &'static str {
        let Open {
            agent_id,
            session_id,
            service_key,
            running,
        } = open;
        let store = &*ctx.store;
        let grace = self.shared.run_grace;
        let clock = &self.shared.clock;
        // Runs this agent was running that its hello no longer lists: a result still held by
        // the agent arrives right after `welcome`; otherwise they end `lost` after the grace.
        let still: Vec<String> = running.iter().map(|r| r.as_str().to_owned()).collect();
        let lost_after = clock
            .now()
            .plus_millis(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        match store.orphan_agent_runs(agent_id, &still, lost_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(agent_id, runs = n, "runs the agent no longer runs"),
            Err(e) => tracing::warn!(agent_id, error = %e, "could not check the agent's runs"),
        }
        if runs::dispatch(
            store,
            clock,
            socket,
            agent_id,
            true,
            running,
            grace,
            &self.shared.secrets,
        )
        .await
        .is_err()
        {
            return "send failed";
        }
        loop {
            let frame = tokio::select! {
                frame = tokio::time::timeout(IDLE_TIMEOUT, socket.recv()) => frame,
                Some(control) = control.recv() => match control {
                    Control::Close(code, why) => {
                        let _ = refuse(socket, code, &why, close_code(code)).await;
                        return code.as_str();
                    }
                    Control::Dispatch => {
                        if runs::dispatch(store, clock, socket, agent_id, false, &[], grace, &self.shared.secrets).await.is_err() {
                            return "send failed";
                        }
                        continue;
                    }
                },
                () = self.shared.drain.cancelled() => {
                    let drain = ServerMessage::Drain(Drain {
                        reason: "shutdown".to_owned(),
                        reconnect_after_ms: Some(DRAIN_RECONNECT_AFTER.as_millis() as u64),
                    });
                    let _ = send(socket, &drain).await;
                    let _ = close(socket, 1012, "drain").await;
                    return "drain";
                }
            };
            let text = match frame {
                Err(_) => {
                    let _ = close(socket, 1001, "idle").await;
                    return "idle";
                }
                Ok(None) | Ok(Some(Err(_))) => return "connection lost",
                Ok(Some(Ok(Message::Close(_)))) => return "closed by the agent",
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    let _ = refuse(
                        socket,
                        ErrorCode::Malformed,
                        "binary frames are not used; send JSON text frames",
                        1003,
                    )
                    .await;
                    return "malformed";
                }
                Ok(Some(Ok(Message::Text(text)))) => text,
            };
            let message = match medic_protocol::decode::<AgentMessage>(text.as_str()) {
                Ok(m) => m,
                Err(e) => {
                    let error = e.to_error_message();
                    let _ =
                        refuse(socket, error.code, &error.message, close_code(error.code)).await;
                    return error.code.as_str();
                }
            };
            match message {
                AgentMessage::Heartbeat(beat) => {
                    let now = clock.now();
                    if let Some(host) = &beat.host {
                        record_host_facts(store, agent_id, session_id, host, now).await;
                    }
                    match ctx
                        .writer
                        .record(NewHeartbeat {
                            name_key: service_key.clone(),
                            status: "UP".to_owned(),
                            run_id: None,
                            received_at: now,
                        })
                        .await
                    {
                        Ok(HeartbeatOutcome::Recorded { .. }) => {
                            metrics::counter!("medic_heartbeats_received_total", "outcome" => "accepted")
                                .increment(1);
                        }
                        Ok(other) => {
                            tracing::warn!(agent_id, ?other, "agent heartbeat not recorded");
                        }
                        Err(e) => tracing::warn!(agent_id, error = %e, "agent heartbeat failed"),
                    }
                    match ctx.store.agent_seen(agent_id, session_id, now).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Revoked, or a newer session (here or on another replica) took
                            // over the agent.
                            let revoked = matches!(
                                ctx.store.get_agent(agent_id).await,
                                Ok(Some(a)) if a.revoked_at.is_some()
                            );
                            let (code, why) = if revoked {
                                (ErrorCode::Unauthorized, "this agent was revoked")
                            } else {
                                (
                                    ErrorCode::SessionReplaced,
                                    "a newer connection of this agent replaced this one",
                                )
                            };
                            let _ = refuse(socket, code, why, close_code(code)).await;
                            return code.as_str();
                        }
                        Err(e) => tracing::warn!(agent_id, error = %e, "agent_seen failed"),
                    }
                    // Runs queued through another replica reach the agent within a heartbeat.
                    if runs::dispatch(
                        store,
                        clock,
                        socket,
                        agent_id,
                        false,
                        &[],
                        grace,
                        &self.shared.secrets,
                    )
                    .await
                    .is_err()
                    {
                        return "send failed";
                    }
                }
                AgentMessage::Hello(_) => {
                    let code = ErrorCode::UnexpectedMessage;
                    let _ = refuse(
                        socket,
                        code,
                        "hello is only valid as the first frame",
                        close_code(code),
                    )
                    .await;
                    return "unexpected_message";
                }
                AgentMessage::Error(e) => {
                    tracing::warn!(agent_id, code = ?e.code, message = e.message, "agent reported an error");
                    return "error from the agent";
                }
                report => {
                    let report = match runs::checked_report(report) {
                        Ok(report) => report,
                        Err(why) => {
                            let code = ErrorCode::Malformed;
                            let _ = refuse(socket, code, &why, close_code(code)).await;
                            return code.as_str();
                        }
                    };
                    if runs::report(
                        store,
                        clock,
                        socket,
                        agent_id,
                        report,
                        grace,
                        &self.shared.runs_ended,
                        &self.shared.secrets,
                    )
                    .await
                    .is_err()
                    {
                        return "send failed";
                    }
                }
            }
        }
    }
}

/// Stores the host facts of a hello or heartbeat. Facts that break the protocol's rules are
/// dropped (the session goes on: they are informative only), as is a failed write.
pub(super) async fn record_host_facts(
    store: &dyn Store,
    agent_id: &str,
    session_id: &str,
    host: &HostFacts,
    at: Timestamp,
) {
    if let Err(e) = host.validate() {
        tracing::warn!(agent_id, error = %e, "host facts ignored");
        return;
    }
    let Ok(json) = serde_json::to_string(host) else {
        return;
    };
    if let Err(e) = store
        .agent_host_facts(agent_id, session_id, &json, at)
        .await
    {
        tracing::warn!(agent_id, error = %e, "could not store the agent's host facts");
    }
}
