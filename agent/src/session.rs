//! The network session: dial the server, hello/welcome, heartbeats, run requests, reports,
//! reconnects.
//!
//! [`run`] loops forever (until shutdown): [`dial`] `…/v2/agents/connect` over TLS (rustls with
//! the ring provider; the webpki roots or the configured CA bundle; an optional client
//! certificate) or, only when the configuration allows it, plain `ws://`; send `hello`; wait
//! for `welcome`; then serve the session. When a session ends it waits — capped exponential
//! backoff with full jitter ([`crate::backoff`]), or the server's `drain`/`reconnect` hint plus
//! jitter — and dials again.
//!
//! Within a session the agent sends a `heartbeat` every `min(configured, welcome)` interval
//! and a WebSocket ping every [`ping_interval`]; a server that sends nothing (not even a pong)
//! for three ping intervals is treated as gone. Run requests go to the [`Executor`] with all of
//! its checks; every `run_result` and `run_skipped` is kept in [`Reports`] until the server's
//! `ack` and sent again after each new `welcome`. A request whose run id is already known is
//! answered from what the agent knows (the stored report, `run_accepted` while running, or
//! `duplicate`), never run twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use medic_protocol::{
    AgentId, AgentMessage, ErrorCode, ErrorMessage, HANDSHAKE_TIMEOUT, Heartbeat, Hello,
    MAX_FRAME_BYTES, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RunAccepted, RunId, RunRequest,
    RunResult, ServerMessage, SkipReason, Timestamp,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::backoff::{self, Jitter};
use crate::config::{Config, Secret};
use crate::exec::{Executor, Refusal};
use crate::{host, metrics};

/// How long SIGTERM waits for runs in flight to finish and their reports to be acknowledged.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// How long one dial (TCP, TLS, WebSocket upgrade) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The WebSocket's initial read buffer (server frames other than run requests are tiny).
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The path of the agent endpoint, appended to the configured server URL.
pub const CONNECT_PATH: &str = "/v2/agents/connect";

/// Everything a session needs besides the executor.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The full endpoint URL (`wss://host[:port]/…/v2/agents/connect`).
    pub endpoint: String,
    /// The API key.
    pub credential: Secret,
    /// TLS settings; `None` for an allowed `ws://` URL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The agent's id.
    pub agent_id: AgentId,
    /// The host name announced in hello.
    pub hostname: String,
    /// Labels announced in hello.
    pub labels: BTreeMap<String, String>,
    /// The configured heartbeat interval (the server may ask for a shorter one).
    pub heartbeat_interval: Duration,
    /// How often a heartbeat carries fresh host facts.
    pub host_facts_interval: Duration,
}

impl SessionSettings {
    /// Settings from the configuration: loads the credential and the TLS files.
    pub fn from_config(config: &Config, hostname: String) -> Result<Self, String> {
        let credential = config.credential.load()?;
        let tls = if config.server_url.is_tls() {
            Some(tls_config(config)?)
        } else {
            None
        };
        Ok(Self {
            endpoint: endpoint(config.server_url.as_str()),
            credential,
            tls,
            agent_id: config.agent_id.clone(),
            hostname,
            labels: config.labels.clone(),
            heartbeat_interval: config.heartbeat_interval,
            host_facts_interval: config.host_facts_interval,
        })
    }
}

/// The endpoint for a configured server URL: the URL with [`CONNECT_PATH`] appended, unless it
/// already ends with it.
pub fn endpoint(server_url: &str) -> String {
    let base = server_url.trim_end_matches('/');
    if base.ends_with(CONNECT_PATH) {
        base.to_owned()
    } else {
        format!("{base}{CONNECT_PATH}")
    }
}

/// The rustls client configuration: ring, TLS 1.2 and 1.3, the configured CA bundle (or the
/// webpki roots when there is none), and the client certificate when configured.
pub fn tls_config(config: &Config) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {} holds no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let tls = match &config.client_identity {
        Some(identity) => {
            let certs = CertificateDer::pem_file_iter(&identity.cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("client_cert {}: {e}", identity.cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(&identity.key)
                .map_err(|e| format!("client_key {}: {e}", identity.key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client_cert: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(tls))
}

/// How often a WebSocket ping goes out: the heartbeat interval, kept within 5..=30 s.
pub fn ping_interval(heartbeat: Duration) -> Duration {
    heartbeat.clamp(Duration::from_secs(5), Duration::from_secs(30))
}

/// A byte stream the WebSocket runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket to the server.
pub type Socket = WebSocketStream<Box<dyn Io>>;

/// Why a dial failed.
#[derive(Debug)]
pub enum DialError {
    /// The server answered the upgrade with an HTTP status (401, 403, 429, 503…) and, when it
    /// sent one, its `Retry-After` in seconds.
    Refused(u16, Option<Duration>),
    /// Anything else: DNS, TCP, TLS, a bad URL.
    Failed(String),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(status, _) => {
                write!(f, "the server refused the connection (HTTP {status})")
            }
            Self::Failed(e) => f.write_str(e),
        }
    }
}

/// Opens the WebSocket: TCP, TLS when configured, the upgrade with the bearer credential.
pub async fn dial(settings: &SessionSettings) -> Result<Socket, DialError> {
    let failed = |e: &dyn std::fmt::Display| DialError::Failed(e.to_string());
    let mut request = settings
        .endpoint
        .as_str()
        .into_client_request()
        .map_err(|e| failed(&e))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", settings.credential.expose()))
        .map_err(|_| DialError::Failed("the credential is not a valid header value".into()))?;
    request.headers_mut().insert("authorization", bearer);
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or_else(|| DialError::Failed("server_url names no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = settings.tls.clone();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| DialError::Failed(format!("connect {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        Some(tls) => {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| DialError::Failed(format!("server name {host:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|e| DialError::Failed(format!("TLS with {host}: {e}")))?;
            Box::new(stream)
        }
        None => Box::new(tcp),
    };
    // A small read buffer that grows for a large frame: tungstenite zero-fills all of it on
    // every read, so its 128 KiB default would be 128 KiB of the agent's idle RSS.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES + 1024))
        .max_frame_size(Some(MAX_FRAME_BYTES + 1024));
    match tokio_tungstenite::client_async_with_config(request, io, Some(ws_config)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(resp)) => {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Err(DialError::Refused(resp.status().as_u16(), retry_after))
        }
        Err(e) => Err(failed(&e)),
    }
}

/// The reports the server has not acknowledged yet, by run id.
#[derive(Debug, Default)]
pub struct Reports {
    unacked: BTreeMap<RunId, AgentMessage>,
}

impl Reports {
    /// Keeps a `run_result` or `run_skipped` until it is acknowledged.
    pub fn keep(&mut self, run_id: RunId, report: AgentMessage) {
        self.unacked.insert(run_id, report);
    }

    /// The server stored the report.
    pub fn ack(&mut self, run_id: &RunId) -> bool {
        self.unacked.remove(run_id).is_some()
    }

    /// The stored report of `run_id`, if any.
    pub fn get(&self, run_id: &RunId) -> Option<&AgentMessage> {
        self.unacked.get(run_id)
    }

    /// Every unacknowledged report.
    pub fn all(&self) -> impl Iterator<Item = &AgentMessage> {
        self.unacked.values()
    }

    /// How many are waiting for an ack.
    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }
}

/// How a session ended, and so how long to wait before the next dial.
#[derive(Debug)]
enum Ended {
    /// Dial again after the backoff.
    Failed(String),
    /// The server asked to come back after this long.
    After(Duration, String),
    /// The agent is shutting down.
    Shutdown,
    /// The configuration was reloaded with different session settings: dial again at once.
    Reconfigured,
}

/// The agent's state across sessions.
pub struct Agent {
    settings: SessionSettings,
    executor: Executor,
    reports: Reports,
    /// Runs in flight: when each started (for a repeated `run_accepted`).
    started: HashMap<RunId, Timestamp>,
    results_tx: mpsc::UnboundedSender<RunResult>,
    results_rx: mpsc::UnboundedReceiver<RunResult>,
    began: Instant,
    jitter: Jitter,
    /// New session settings from a reload (SIGHUP), if the caller sends any.
    updates: Option<watch::Receiver<SessionSettings>>,
}

impl Agent {
    /// An agent that will dial with `settings` and run scripts with `executor`.
    pub fn new(settings: SessionSettings, executor: Executor) -> Self {
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        Self {
            settings,
            executor,
            reports: Reports::default(),
            started: HashMap::new(),
            results_tx,
            results_rx,
            began: Instant::now(),
            jitter: Jitter::from_entropy(),
            updates: None,
        }
    }

    /// Takes new session settings from `updates`: the current session closes (runs in flight
    /// go on, and their reports are kept) and the agent dials again at once with them.
    #[must_use]
    pub fn with_updates(mut self, updates: watch::Receiver<SessionSettings>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// Dials, serves and redials until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut attempt: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if let Some(updates) = &mut self.updates
                && updates.has_changed().unwrap_or(false)
            {
                self.settings = updates.borrow_and_update().clone();
            }
            let opened = Instant::now();
            let dialled = tokio::select! {
                dialled = tokio::time::timeout(DIAL_TIMEOUT, dial(&self.settings)) => dialled
                    .unwrap_or_else(|_| Err(DialError::Failed("dialling timed out".into()))),
                // The only change ever sent is the shutdown.
                _ = shutdown.changed() => return,
            };
            let ended = match dialled {
                Ok(socket) => {
                    let ended = self.session(socket, &mut shutdown).await;
                    metrics::global().session_closed();
                    ended
                }
                // 429 or 503 with Retry-After: the server says when to come back.
                Err(e @ DialError::Refused(_, Some(after))) => Ended::After(after, e.to_string()),
                Err(e) => Ended::Failed(e.to_string()),
            };
            if opened.elapsed() >= backoff::STABLE_SESSION {
                attempt = 0;
            }
            let wait = match ended {
                Ended::Shutdown => return,
                Ended::Reconfigured => {
                    tracing::info!("reconnecting with the reloaded configuration");
                    attempt = 0;
                    continue;
                }
                Ended::Failed(why) => {
                    let wait = backoff::full_jitter(attempt, self.jitter.next_u64());
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(
                        reason = %why,
                        retry_in_ms = wait.as_millis() as u64,
                        "disconnected"
                    );
                    wait
                }
                Ended::After(after, why) => {
                    let wait = backoff::after_hint(after, self.jitter.next_u64());
                    tracing::info!(
                        reason = %why,
                        retry_in_ms = wait.as_millis() as u64,
                        "server asked to reconnect later"
                    );
                    wait
                }
            };
            let sleep = tokio::time::sleep(wait);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            return;
                        }
                    }
                    // Results of runs that finish while disconnected wait in `reports`.
                    Some(result) = self.results_rx.recv() => self.finished(result),
                    // A reload: dial with the new settings now.
                    settings = updated(&mut self.updates) => {
                        self.settings = settings;
                        break;
                    }
                }
            }
        }
    }

    fn finished(&mut self, result: RunResult) {
        self.started.remove(&result.run_id);
        self.reports
            .keep(result.run_id.clone(), AgentMessage::RunResult(result));
    }

    fn hello(&self) -> Hello {
        let mut running: Vec<RunId> = self.started.keys().cloned().collect();
        running.sort();
        Hello {
            protocol_version: PROTOCOL_VERSION,
            min_protocol_version: MIN_PROTOCOL_VERSION,
            agent_id: self.settings.agent_id.clone(),
            hostname: self.settings.hostname.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            labels: self.settings.labels.clone(),
            running,
            host: Some(host::facts()),
        }
    }

    /// Handshake, then the conversation, on one connected socket.
    async fn session(&mut self, mut ws: Socket, shutdown: &mut watch::Receiver<bool>) -> Ended {
        if let Err(e) = send(&mut ws, &AgentMessage::Hello(self.hello())).await {
            return Ended::Failed(format!("sending hello: {e}"));
        }
        let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, next_message(&mut ws)).await {
            Err(_) => return Ended::Failed("no welcome within the handshake timeout".into()),
            Ok(Err(why)) => return Ended::Failed(why),
            Ok(Ok(ServerMessage::Welcome(w))) => w,
            Ok(Ok(other)) => return self.control(other),
        };
        let interval = Duration::from_millis(welcome.heartbeat_interval_ms)
            .min(self.settings.heartbeat_interval)
            .max(Duration::from_secs(1));
        metrics::global().session_opened();
        tracing::info!(
            session_id = welcome.session_id.as_str(),
            protocol_version = welcome.protocol_version,
            heartbeat_interval_ms = interval.as_millis() as u64,
            "connected"
        );
        // Results that finished while disconnected join the unacknowledged ones; all go again.
        while let Ok(result) = self.results_rx.try_recv() {
            self.finished(result);
        }
        let pending: Vec<AgentMessage> = self.reports.all().cloned().collect();
        for report in &pending {
            if let Err(e) = send(&mut ws, report).await {
                return Ended::Failed(format!("resending reports: {e}"));
            }
        }

        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ping_every = ping_interval(interval);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut seq: u64 = 0;
        // The hello carried host facts just now.
        let mut facts_sent = Instant::now();
        let mut last_heard = Instant::now();
        let mut drain: Option<Duration> = None;
        // Set by SIGTERM while runs are in flight or unacknowledged: when to give up waiting.
        let mut stopping: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                frame = ws.next() => {
                    last_heard = Instant::now();
                    let text = match frame {
                        None => return Ended::Failed("the server closed the connection".into()),
                        Some(Err(e)) => return Ended::Failed(format!("connection lost: {e}")),
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map_or_else(String::new, |f| f.reason.to_string());
                            return match drain {
                                Some(after) => Ended::After(after, format!("drain ({why})")),
                                None => Ended::Failed(format!("the server closed the session ({why})")),
                            };
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let _ = refuse(&mut ws, ErrorCode::Malformed, "binary frames are not used").await;
                            return Ended::Failed("the server sent a binary frame".into());
                        }
                        Some(Ok(_)) => {
                            // Ping or pong: tungstenite queued the pong; push it out.
                            let _ = ws.flush().await;
                            continue;
                        }
                    };
                    let message = match medic_protocol::decode::<ServerMessage>(text.as_str()) {
                        Ok(m) => m,
                        Err(e) => {
                            let error = e.to_error_message();
                            let _ = refuse(&mut ws, error.code, &error.message).await;
                            return Ended::Failed(format!("undecodable frame from the server: {e}"));
                        }
                    };
                    match message {
                        ServerMessage::RunRequest(request) => {
                            let draining = drain.is_some() || stopping.is_some();
                            for reply in self.request(request, draining) {
                                if let Err(e) = send(&mut ws, &reply).await {
                                    return Ended::Failed(format!("sending a report: {e}"));
                                }
                            }
                        }
                        ServerMessage::Ack(ack) => {
                            self.reports.ack(&ack.run_id);
                        }
                        ServerMessage::Welcome(_) => {}
                        ServerMessage::Drain(d) => {
                            let after = d.reconnect_after_ms.map_or_else(
                                || backoff::exponential_ceiling(0),
                                Duration::from_millis,
                            );
                            tracing::info!(reason = %d.reason, "the server is draining");
                            drain = Some(after);
                        }
                        other => {
                            let _ = ws.close(None).await;
                            return self.control(other);
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    // Host facts every host_facts_interval (the hello carried the first ones).
                    let host = (facts_sent.elapsed() >= self.settings.host_facts_interval)
                        .then(|| {
                            facts_sent = Instant::now();
                            host::facts()
                        });
                    let beat = AgentMessage::Heartbeat(Heartbeat {
                        seq,
                        sent_at: Timestamp::from_system_time(SystemTime::now()),
                        uptime_seconds: self.began.elapsed().as_secs(),
                        running_runs: self.executor.running() as u32,
                        load_average: host::load_average(),
                        host,
                    });
                    seq += 1;
                    if let Err(e) = send(&mut ws, &beat).await {
                        return Ended::Failed(format!("sending a heartbeat: {e}"));
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > 3 * ping_every {
                        return Ended::Failed("the server stopped answering pings".into());
                    }
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return Ended::Failed(format!("sending a ping: {e}"));
                    }
                }
                Some(result) = self.results_rx.recv() => {
                    let report = AgentMessage::RunResult(result.clone());
                    self.finished(result);
                    if let Err(e) = send(&mut ws, &report).await {
                        return Ended::Failed(format!("sending a result: {e}"));
                    }
                }
                changed = shutdown.changed(), if stopping.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        // Take no new runs; finish, report and hear the acks of the current
                        // ones, within the grace period.
                        stopping = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                        tracing::info!(
                            running = self.executor.running(),
                            unacknowledged = self.reports.len(),
                            "stopping"
                        );
                    }
                }
                settings = updated(&mut self.updates), if stopping.is_none() => {
                    self.settings = settings;
                    let _ = close_away(&mut ws).await;
                    return Ended::Reconfigured;
                }
                () = sleep_until_or_never(stopping) => {
                    tracing::warn!("stopping before every run was reported");
                    let _ = close_away(&mut ws).await;
                    return Ended::Shutdown;
                }
            }
            if stopping.is_some() && self.executor.running() == 0 && self.reports.is_empty() {
                let _ = close_away(&mut ws).await;
                return Ended::Shutdown;
            }
            // Drained: leave once nothing is running and everything was acknowledged.
            if let Some(after) = drain
                && self.executor.running() == 0
                && self.reports.is_empty()
            {
                let _ = ws.close(None).await;
                return Ended::After(after, "drain".into());
            }
        }
    }

    /// A server message that ends the session: `reconnect`, `error`, or one out of place.
    fn control(&self, message: ServerMessage) -> Ended {
        match message {
            ServerMessage::Reconnect(r) => Ended::After(
                Duration::from_millis(r.after_ms),
                format!("reconnect ({})", r.reason),
            ),
            ServerMessage::Drain(d) => Ended::After(
                d.reconnect_after_ms
                    .map_or_else(|| backoff::exponential_ceiling(0), Duration::from_millis),
                format!("drain ({})", d.reason),
            ),
            ServerMessage::Error(e) => {
                Ended::Failed(format!("the server refused: {:?}: {}", e.code, e.message))
            }
            other => Ended::Failed(format!("unexpected {} from the server", other.kind())),
        }
    }

    /// Answers a run request: what the agent already knows about the run id, a refusal, or
    /// `run_accepted` with the script started on a blocking thread.
    fn request(&mut self, request: RunRequest, draining: bool) -> Vec<AgentMessage> {
        let run_id = request.run_id.clone();
        if let Some(report) = self.reports.get(&run_id) {
            return vec![report.clone()];
        }
        if let Some(started_at) = self.started.get(&run_id) {
            return vec![AgentMessage::RunAccepted(RunAccepted {
                run_id,
                started_at: started_at.clone(),
            })];
        }
        let admitted = if draining {
            Err(Refusal {
                reason: SkipReason::Draining,
                detail: "the agent is draining".to_owned(),
            })
        } else {
            self.executor.admit(&request, SystemTime::now())
        };
        match admitted {
            Err(refusal) => {
                metrics::global().run_skipped(&request.script, refusal.reason);
                tracing::info!(
                    run_id = run_id.as_str(),
                    script = %request.script,
                    reason = refusal.reason.as_str(),
                    "run skipped"
                );
                let skipped = AgentMessage::RunSkipped(refusal.to_skipped(&request));
                self.reports.keep(run_id, skipped.clone());
                vec![skipped]
            }
            Ok(permit) => {
                let started_at = Timestamp::from_system_time(SystemTime::now());
                self.started.insert(run_id.clone(), started_at.clone());
                tracing::info!(
                    run_id = run_id.as_str(),
                    script = %request.script,
                    "run accepted"
                );
                let results = self.results_tx.clone();
                let script = request.script.clone();
                tokio::task::spawn_blocking(move || {
                    let result = permit.run();
                    metrics::global().run_finished(
                        &script,
                        result.status,
                        Duration::from_millis(result.duration_ms),
                    );
                    let _ = results.send(result);
                });
                vec![AgentMessage::RunAccepted(RunAccepted {
                    run_id,
                    started_at,
                })]
            }
        }
    }
}

/// Resolves at `deadline`, or never without one.
/// The next settings sent on `updates`; never resolves when there is no sender.
async fn updated(updates: &mut Option<watch::Receiver<SessionSettings>>) -> SessionSettings {
    if let Some(rx) = updates
        && rx.changed().await.is_ok()
    {
        return rx.borrow_and_update().clone();
    }
    std::future::pending().await
}

async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Closes with 1001 (going away), as on shutdown.
async fn close_away(ws: &mut Socket) -> Result<(), tungstenite::Error> {
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Away,
        reason: "shutdown".into(),
    }))
    .await
}

/// The next protocol message, skipping pings and pongs.
async fn next_message(ws: &mut Socket) -> Result<ServerMessage, String> {
    loop {
        match ws.next().await {
            None => return Err("the server closed the connection".into()),
            Some(Err(e)) => return Err(format!("connection lost: {e}")),
            Some(Ok(Message::Text(text))) => {
                return medic_protocol::decode::<ServerMessage>(text.as_str())
                    .map_err(|e| format!("undecodable frame from the server: {e}"));
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map_or_else(String::new, |f| f.reason.to_string());
                return Err(format!("the server closed the session ({why})"));
            }
            Some(Ok(Message::Binary(_))) => return Err("the server sent a binary frame".into()),
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Socket, message: &AgentMessage) -> Result<(), String> {
    let text = medic_protocol::encode(message).map_err(|e| e.to_string())?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// Sends `error` and closes.
async fn refuse(ws: &mut Socket, code: ErrorCode, message: &str) -> Result<(), String> {
    let error = AgentMessage::Error(ErrorMessage {
        code,
        message: message.to_owned(),
    });
    send(ws, &error).await?;
    ws.close(None).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_appended_once() {
        assert_eq!(
            endpoint("wss://medic.example.com"),
            "wss://medic.example.com/v2/agents/connect"
        );
        assert_eq!(
            endpoint("wss://medic.example.com:8443/"),
            "wss://medic.example.com:8443/v2/agents/connect"
        );
        assert_eq!(
            endpoint("ws://127.0.0.1:1/v2/agents/connect"),
            "ws://127.0.0.1:1/v2/agents/connect"
        );
    }

    #[test]
    fn pings_follow_the_heartbeat_within_bounds() {
        assert_eq!(
            ping_interval(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
        assert_eq!(
            ping_interval(Duration::from_secs(20)),
            Duration::from_secs(20)
        );
        assert_eq!(
            ping_interval(Duration::from_secs(600)),
            Duration::from_secs(30)
        );
    }
}
