//! The agent gateway: one WebSocket session per connected agent (`GET /v2/agents/connect`).
//!
//! This module owns the live sessions of this replica and the conversation of
//! `docs/protocol.md`: it reads the agent's `hello`, negotiates the version, registers the agent
//! ([`Store::agent_connected`](crate::store::Store::agent_connected)), answers `welcome`, then
//! records every agent heartbeat as a heartbeat of the agent's own service (`agent:<id>`)
//! through the same [`HeartbeatWriter`](crate::store::batch::HeartbeatWriter) as
//! `POST /heartbeat`, so the monitor treats a silent host like any silent service.
//! The session after `welcome` (frames in; control, run requests and drain out) is
//! [`converse`]; this module keeps the handshake, registration and the session registry.
//!
//! Runs queued through `POST /v2/runs` are sent as `run_request`s and the agent's reports stored
//! and acknowledged ([`runs`]): at the start of a session, when a run is queued for an agent
//! connected here ([`Gateway::notify_run`]), when this replica's queue poll finds runs queued
//! (on any replica) for an agent connected here ([`Gateway::poll_queue`], every second), and at
//! every heartbeat. [`sweep_runs`] ends runs that expired in the queue or were lost with their
//! agent.
//!
//! Every refusal is an `error` frame with a protocol [`ErrorCode`] followed by a close frame
//! whose reason is that code, and ends only that one session. It does not authenticate (the
//! HTTP gate did, before the upgrade) and it never runs SQL itself.
//!
//! Sessions are tracked: [`Gateway::drain`] (server shutdown) sends `drain` to every agent and
//! closes; [`Gateway::wait`] waits until each session has marked its agent disconnected.
//! [`Gateway::kick`] closes one agent's session (revocation). Another replica learns of a
//! revocation at the agent's next heartbeat, when
//! [`Store::agent_seen`](crate::store::Store::agent_seen) answers `false`.

mod converse;
mod runs;
mod watch;

pub use runs::{LATENCY_METRIC, REFUSED_METRIC, RUNS_METRIC, sweep_runs};
pub use watch::{MAX_WAIT, RECHECK_INTERVAL, RunWatch};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use medic_protocol::{
    AgentMessage, ErrorCode, ErrorMessage, HANDSHAKE_TIMEOUT, Hello, ServerMessage, SessionId,
    VersionRange, Welcome,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::domain::service::HeartbeatName;
use crate::domain::{ApiKeyId, Priority};
use crate::store::batch::HeartbeatWriter;
use crate::store::{AgentConnectOutcome, AgentConnection, CreateOutcome, NewService, Store};
use converse::Open;

/// How often agents send heartbeats, as announced in `welcome`. An agent configured for a
/// shorter interval keeps its own.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(20);

/// A session that sends nothing for this long is closed (three missed heartbeats).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3 * 20);

/// How long agents wait before dialling again after a `drain`.
pub const DRAIN_RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The alert interval of an agent's service: an agent that misses this many seconds of
/// heartbeats is down.
pub const AGENT_SERVICE_INTERVAL_SECONDS: i64 = 60;

/// The service name an agent's heartbeats are recorded under.
pub fn service_name(agent_id: &str) -> String {
    format!("{}{agent_id}", crate::store::AGENT_SERVICE_PREFIX)
}

/// The gauge of sessions open on this replica.
const CONNECTED_METRIC: &str = "medic_agents_connected";

/// Why the gateway closes a session from the outside.
#[derive(Debug, Clone)]
enum Control {
    Close(ErrorCode, String),
    /// A run was queued for this agent: send what is pending.
    Dispatch,
}

struct Live {
    session_id: String,
    control: mpsc::Sender<Control>,
}

struct Shared {
    sessions: Mutex<HashMap<String, Live>>,
    drain: CancellationToken,
    tracker: TaskTracker,
    /// Added to a run's timeout to make its deadline (see [`Gateway::with_run_grace`]).
    run_grace: Duration,
    /// Callers waiting for runs to end.
    runs_ended: Arc<RunWatch>,
    clock: Clock,
    /// The secrets of runs whose parameters use them (playbook script steps).
    secrets: runs::RunSecrets,
}

/// The live sessions of this replica. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// [`Gateway::downgrade`]: does nothing once the gateway is gone.
#[derive(Clone)]
pub struct WeakGateway(std::sync::Weak<Shared>);

impl WeakGateway {
    /// [`Gateway::notify_run`], if the gateway still exists.
    pub fn notify_run(&self, agent_id: &str) {
        if let Some(shared) = self.0.upgrade() {
            Gateway { shared }.notify_run(agent_id);
        }
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

/// The default of [`Gateway::with_run_grace`].
pub const DEFAULT_RUN_GRACE: Duration = Duration::from_secs(60);

/// How often each replica looks for runs queued (on any replica) for its connected agents.
pub const QUEUE_POLL_INTERVAL: Duration = Duration::from_secs(1);

impl Gateway {
    pub fn new() -> Self {
        Self::with_run_grace(DEFAULT_RUN_GRACE)
    }

    /// A gateway whose runs are lost when the agent has not reported `grace` after the run's
    /// timeout (counted from when it was sent, and again from when it started), or `grace`
    /// after the agent reconnected without it.
    pub fn with_run_grace(grace: Duration) -> Self {
        Self::with_clock(grace, Clock::system())
    }

    /// [`Self::with_run_grace`], reading the time from `clock`.
    pub fn with_clock(grace: Duration, clock: Clock) -> Self {
        metrics::describe_gauge!(
            CONNECTED_METRIC,
            "Agent sessions open on this replica (past the handshake)"
        );
        metrics::gauge!(CONNECTED_METRIC).set(0.0);
        Self {
            shared: Arc::new(Shared {
                sessions: Mutex::new(HashMap::new()),
                drain: CancellationToken::new(),
                tracker: TaskTracker::new(),
                run_grace: grace,
                runs_ended: Arc::default(),
                clock,
                secrets: runs::RunSecrets::default(),
            }),
        }
    }

    /// This gateway, opening the secrets that playbook script steps pass to their scripts with
    /// `keyring` (`MEDIC_SECRETS_KEY`). Call before the gateway is cloned or used.
    #[must_use]
    pub fn with_secrets(mut self, keyring: Option<crate::playbook::secrets::Keyring>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.secrets = runs::RunSecrets::new(keyring);
        }
        self
    }

    fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the agent has a session open on this replica.
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.sessions().contains_key(agent_id)
    }

    /// How many agents have a session open on this replica.
    pub fn connected(&self) -> usize {
        self.sessions().len()
    }

    /// Closes the agent's session on this replica, if it has one, with `unauthorized`.
    pub fn kick(&self, agent_id: &str, why: &str) -> bool {
        let control = self.sessions().get(agent_id).map(|l| l.control.clone());
        match control {
            Some(c) => c
                .try_send(Control::Close(ErrorCode::Unauthorized, why.to_owned()))
                .is_ok(),
            None => false,
        }
    }

    /// Where callers wait for runs to end (`GET /v2/runs/{id}?wait_seconds=`).
    pub fn runs_ended(&self) -> &Arc<RunWatch> {
        &self.shared.runs_ended
    }

    /// A handle that does not keep the gateway alive: for a listener held by something the
    /// gateway itself holds (the engine, whose `run_ended` the gateway calls).
    pub fn downgrade(&self) -> WeakGateway {
        WeakGateway(Arc::downgrade(&self.shared))
    }

    /// Tells the agent's session on this replica, if any, that a run was queued for it. A
    /// session on another replica picks it up at that replica's next queue poll
    /// ([`Self::poll_queue`]).
    pub fn notify_run(&self, agent_id: &str) {
        let control = self.sessions().get(agent_id).map(|l| l.control.clone());
        if let Some(c) = control {
            let _ = c.try_send(Control::Dispatch);
        }
    }

    /// Until `stop`, every [`QUEUE_POLL_INTERVAL`] asks the store which agents have queued
    /// runs and tells those with a session here to send them: how a run queued on another
    /// replica reaches its agent. Skips the query while no agent is connected here.
    pub async fn poll_queue(self, store: Arc<dyn Store>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(QUEUE_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.connected() == 0 {
                continue;
            }
            match store.agents_with_queued_runs(self.clock().now()).await {
                Ok(agents) => {
                    for agent_id in agents {
                        self.notify_run(&agent_id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not poll the run queue"),
            }
        }
    }

    /// Tells every session to send `drain` and close; new connections are refused.
    pub fn drain(&self) {
        self.shared.drain.cancel();
    }

    /// Waits until every session has ended (after [`Self::drain`]).
    pub async fn wait(&self) {
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    /// Registers a session past its handshake; an older session of the same agent is told to
    /// close with `session_replaced`.
    fn register(&self, agent_id: &str, session_id: &str, control: mpsc::Sender<Control>) {
        let mut sessions = self.sessions();
        let old = sessions.insert(
            agent_id.to_owned(),
            Live {
                session_id: session_id.to_owned(),
                control,
            },
        );
        metrics::gauge!(CONNECTED_METRIC).set(sessions.len() as f64);
        drop(sessions);
        if let Some(old) = old {
            let _ = old.control.try_send(Control::Close(
                ErrorCode::SessionReplaced,
                "a newer connection of this agent replaced this one".to_owned(),
            ));
        }
    }

    fn unregister(&self, agent_id: &str, session_id: &str) {
        let mut sessions = self.sessions();
        if sessions
            .get(agent_id)
            .is_some_and(|l| l.session_id == session_id)
        {
            sessions.remove(agent_id);
        }
        metrics::gauge!(CONNECTED_METRIC).set(sessions.len() as f64);
    }

    /// Runs one upgraded connection to its end. Tracked, so [`Self::wait`] waits for it.
    pub async fn serve(&self, ctx: SessionContext, socket: WebSocket) {
        if self.shared.drain.is_cancelled() {
            let mut socket = socket;
            let _ = refuse(
                &mut socket,
                ErrorCode::Internal,
                "the server is shutting down",
                1012,
            )
            .await;
            return;
        }
        let gateway = self.clone();
        self.shared
            .tracker
            .track_future(async move { gateway.session(ctx, socket).await })
            .await;
    }

    async fn session(&self, ctx: SessionContext, mut socket: WebSocket) {
        let hello = match read_hello(&mut socket).await {
            Ok(hello) => hello,
            Err(Some((code, message, close))) => {
                metrics::counter!(SESSIONS_REFUSED_METRIC, "reason" => code.as_str()).increment(1);
                let _ = refuse(&mut socket, code, &message, close).await;
                return;
            }
            Err(None) => return,
        };
        let (record_service, session_id, version) = match self.open(&ctx, &hello).await {
            Ok(opened) => opened,
            Err((code, message)) => {
                metrics::counter!(SESSIONS_REFUSED_METRIC, "reason" => code.as_str()).increment(1);
                let _ = refuse(&mut socket, code, &message, close_code(code)).await;
                return;
            }
        };
        let agent_id = hello.agent_id.as_str().to_owned();
        if let Some(host) = &hello.host {
            let now = self.clock().now();
            converse::record_host_facts(&*ctx.store, &agent_id, &session_id, host, now).await;
        }
        let (control_tx, mut control) = mpsc::channel(4);
        self.register(&agent_id, &session_id, control_tx);
        tracing::info!(agent_id, session_id, version, remote = ?ctx.remote, "agent connected");
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: version,
            session_id: SessionId::new(session_id.clone()),
            heartbeat_interval_ms: HEARTBEAT_INTERVAL.as_millis() as u64,
            server_time: medic_protocol::Timestamp::from_unix_millis(self.clock().now().millis()),
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        let ended = if send(&mut socket, &welcome).await.is_err() {
            "send failed"
        } else {
            let open = Open {
                agent_id: &agent_id,
                session_id: &session_id,
                service_key: record_service,
                running: &hello.running,
            };
            self.converse(&ctx, &mut socket, &mut control, open).await
        };
        self.unregister(&agent_id, &session_id);
        if let Err(e) = ctx
            .store
            .agent_disconnected(&agent_id, &session_id, self.clock().now())
            .await
        {
            tracing::warn!(agent_id, error = %e, "could not mark the agent disconnected");
        }
        tracing::info!(agent_id, session_id, ended, "agent disconnected");
    }

    /// Negotiates, registers the agent's service and the agent itself. Returns the service's
    /// heartbeat key, the session id and the negotiated version.
    async fn open(
        &self,
        ctx: &SessionContext,
        hello: &Hello,
    ) -> Result<(String, String, u32), (ErrorCode, String)> {
        if let Err(e) = hello.validate() {
            return Err((ErrorCode::Malformed, e.to_string()));
        }
        let agent_range = VersionRange {
            min: hello.min_protocol_version,
            max: hello.protocol_version,
        };
        let server = VersionRange::SUPPORTED;
        let Some(version) = server.negotiate(agent_range) else {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "the agent speaks protocol versions {}..={}, this server {}..={}",
                    agent_range.min, agent_range.max, server.min, server.max
                ),
            ));
        };
        let agent_id = hello.agent_id.as_str();
        let internal = |e: &dyn std::fmt::Display| {
            tracing::warn!(agent_id, error = %e, "agent registration failed");
            (
                ErrorCode::Internal,
                "the server could not register the agent; try again later".to_owned(),
            )
        };
        let now = self.clock().now();
        // A refused agent gets no service either: check before creating anything.
        if let Some(existing) = ctx
            .store
            .get_agent(agent_id)
            .await
            .map_err(|e| internal(&e))?
        {
            if existing.revoked_at.is_some() {
                return Err((ErrorCode::Unauthorized, "this agent was revoked".to_owned()));
            }
            // An agent id belongs to the key it connected with until that key can no longer be
            // used (revoked or expired): another agent key cannot take a live host's id.
            if let Some(bound) = existing.key_id.filter(|k| Some(k) != ctx.key_id.as_ref()) {
                let holder = ctx
                    .store
                    .get_api_key(&ApiKeyId(bound))
                    .await
                    .map_err(|e| internal(&e))?;
                let usable = holder.is_some_and(|k| {
                    k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now)
                });
                if usable {
                    return Err((
                        ErrorCode::Unauthorized,
                        "this agent id belongs to another API key; revoke that key to move it"
                            .to_owned(),
                    ));
                }
            }
        }
        let name = HeartbeatName::parse(&service_name(agent_id)).map_err(|e| internal(&e))?;
        let service = match ctx
            .store
            .create_service(&NewService {
                heartbeat_name: name.clone(),
                service_name: "medic-agent".to_owned(),
                environment: None,
                interval_seconds: AGENT_SERVICE_INTERVAL_SECONDS,
                threshold: 1,
                grace_seconds: 0,
                team: "site-reliability".to_owned(),
                priority: Priority::P3,
                runbook: None,
                max_duration_ms: None,
                monitoring: crate::store::Monitoring::default(),
                at: now,
            })
            .await
            .map_err(|e| internal(&e))?
        {
            CreateOutcome::Created(s) | CreateOutcome::Exists(s) => s,
        };
        let session_id = uuid::Uuid::new_v4().to_string();
        let outcome = ctx
            .store
            .agent_connected(&AgentConnection {
                id: agent_id.to_owned(),
                hostname: hello.hostname.clone(),
                agent_version: hello.agent_version.clone(),
                os: hello.os.clone(),
                arch: hello.arch.clone(),
                declared_labels: hello.labels.clone(),
                key_labels: ctx.granted_labels.clone(),
                session_id: session_id.clone(),
                remote_addr: ctx.remote.map(|a| a.to_string()),
                key_id: ctx.key_id.clone(),
                service_id: Some(service.id),
                at: now,
            })
            .await
            .map_err(|e| internal(&e))?;
        match outcome {
            AgentConnectOutcome::Connected(_) => Ok((name.key(), session_id, version)),
            AgentConnectOutcome::Revoked => {
                Err((ErrorCode::Unauthorized, "this agent was revoked".to_owned()))
            }
        }
    }
}

/// What a session needs from the application.
pub struct SessionContext {
    pub store: Arc<dyn Store>,
    pub writer: HeartbeatWriter,
    /// The client's address (after trusted proxies).
    pub remote: Option<SocketAddr>,
    /// The id of the API key the connection authenticated with.
    pub key_id: Option<String>,
    /// The labels that key grants; the agent carries only those of its hello's labels that
    /// these or an operator's grants on the agent allow (`store::carried_labels`).
    pub granted_labels: BTreeMap<String, String>,
}

/// A refusal: the error code, its message and the close code.
type Refusal = (ErrorCode, String, u16);

/// Waits for the first frame, which must be a `hello`. `Err(None)`: the connection went away.
async fn read_hello(socket: &mut WebSocket) -> Result<Hello, Option<Refusal>> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => {
                return Err(Some((
                    ErrorCode::HandshakeTimeout,
                    format!("no hello within {} seconds", HANDSHAKE_TIMEOUT.as_secs()),
                    close_code(ErrorCode::HandshakeTimeout),
                )));
            }
            Ok(None | Some(Err(_))) => return Err(None),
            Ok(Some(Ok(frame))) => frame,
        };
        let text = match frame {
            Message::Text(text) => text,
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(None),
            Message::Binary(_) => {
                return Err(Some((
                    ErrorCode::Malformed,
                    "binary frames are not used; send JSON text frames".to_owned(),
                    1003,
                )));
            }
        };
        return match medic_protocol::decode::<AgentMessage>(text.as_str()) {
            Ok(AgentMessage::Hello(hello)) => Ok(hello),
            Ok(other) => Err(Some((
                ErrorCode::UnexpectedMessage,
                format!("the first frame must be hello, not {}", other.kind()),
                close_code(ErrorCode::UnexpectedMessage),
            ))),
            Err(e) => {
                let m = e.to_error_message();
                Err(Some((m.code, m.message, close_code(m.code))))
            }
        };
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    let text = medic_protocol::encode(message).map_err(axum::Error::new)?;
    socket.send(Message::Text(Utf8Bytes::from(text))).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await
}

/// Sends `error` and closes with `code` and the error code as the reason.
async fn refuse(
    socket: &mut WebSocket,
    code: ErrorCode,
    message: &str,
    close_code: u16,
) -> Result<(), axum::Error> {
    let error = ServerMessage::Error(ErrorMessage {
        code,
        message: message.to_owned(),
    });
    send(socket, &error).await?;
    close(socket, close_code, code.as_str()).await
}

/// The WebSocket close code for a protocol error.
fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::FrameTooLarge => 1009,
        ErrorCode::Malformed | ErrorCode::UnexpectedMessage => 1002,
        ErrorCode::Internal => 1011,
        ErrorCode::RateLimited => 1013,
        _ => 1008,
    }
}

/// Connections refused before or at the handshake, by the protocol error code sent.
pub const SESSIONS_REFUSED_METRIC: &str = "medic_agent_sessions_refused_total";
