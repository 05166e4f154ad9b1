//! The messages: one enum per direction, internally tagged by `"type"`.
//!
//! Every variant wraps a struct of the same name, so `{"type": "heartbeat", "seq": 7, …}` is
//! [`AgentMessage::Heartbeat`] holding a [`Heartbeat`]. Unknown fields are ignored; an unknown
//! `"type"` is an error (the receiver answers [`ErrorCode::Malformed`]). Fields added after
//! version 1 carry `#[serde(default)]` so that older peers' messages still decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AgentId, RunId, SessionId, Timestamp};

/// Everything the agent sends to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The first frame of every connection: who the agent is and which versions it speaks.
    Hello(Hello),
    /// Periodic proof of life, at the interval the server named in its welcome.
    Heartbeat(Heartbeat),
    /// The agent took a run request and started the script.
    RunAccepted(RunAccepted),
    /// A piece of a running script's output, sent only when the request asked for streaming.
    RunOutput(RunOutput),
    /// The final outcome of a run the agent accepted. Sent again after a reconnection until
    /// the server acknowledges it.
    RunResult(RunResult),
    /// The agent refused a run request and did not start anything.
    RunSkipped(RunSkipped),
    /// The agent could not process a frame; it closes the connection after sending this.
    Error(ErrorMessage),
}

/// Everything the server sends to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to a valid hello: the session is open.
    Welcome(Welcome),
    /// Run this script.
    RunRequest(RunRequest),
    /// The server has durably stored a run's result or skip report; the agent may forget it.
    Ack(Ack),
    /// The server is going away: take no new runs, finish and report the ones in flight, then
    /// reconnect.
    Drain(Drain),
    /// Close this connection now and dial again later.
    Reconnect(Reconnect),
    /// The server refuses the connection or a frame; it closes the connection after sending
    /// this.
    Error(ErrorMessage),
}

impl AgentMessage {
    /// The message's `"type"` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Heartbeat(_) => "heartbeat",
            Self::RunAccepted(_) => "run_accepted",
            Self::RunOutput(_) => "run_output",
            Self::RunResult(_) => "run_result",
            Self::RunSkipped(_) => "run_skipped",
            Self::Error(_) => "error",
        }
    }
}

impl ServerMessage {
    /// The message's `"type"` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "welcome",
            Self::RunRequest(_) => "run_request",
            Self::Ack(_) => "ack",
            Self::Drain(_) => "drain",
            Self::Reconnect(_) => "reconnect",
            Self::Error(_) => "error",
        }
    }
}

macro_rules! into_message {
    ($enum:ident: $($variant:ident($payload:ty)),* $(,)?) => {
        $(impl From<$payload> for $enum {
            fn from(payload: $payload) -> Self {
                Self::$variant(payload)
            }
        })*
    };
}

into_message!(AgentMessage:
    Hello(Hello),
    Heartbeat(Heartbeat),
    RunAccepted(RunAccepted),
    RunOutput(RunOutput),
    RunResult(RunResult),
    RunSkipped(RunSkipped),
);

into_message!(ServerMessage:
    Welcome(Welcome),
    RunRequest(RunRequest),
    Ack(Ack),
    Drain(Drain),
    Reconnect(Reconnect),
);

// ---------------------------------------------------------------------------------------------
// Agent → server
// ---------------------------------------------------------------------------------------------

/// The agent's introduction. See [`Hello::validate`](crate::Hello::validate) for its limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The newest protocol version the agent speaks.
    pub protocol_version: u32,
    /// The oldest protocol version the agent speaks.
    pub min_protocol_version: u32,
    /// The agent's stable id (its host name unless configured otherwise).
    pub agent_id: AgentId,
    /// The host name as the operating system reports it.
    pub hostname: String,
    /// The agent's own release, e.g. `"0.1.0"`.
    pub agent_version: String,
    /// The operating system, as Rust names it: `"linux"`, `"macos"`.
    pub os: String,
    /// The CPU architecture, as Rust names it: `"x86_64"`, `"aarch64"`.
    pub arch: String,
    /// Free-form labels from the agent's configuration (`env = "prod"`, `role = "db"`), used by
    /// playbooks to choose agents.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Runs the agent is still executing from an earlier connection, so the server neither
    /// dispatches them again nor declares them lost.
    #[serde(default)]
    pub running: Vec<RunId>,
    /// Facts about the host, as the agent read them at connect time. Added after version 1:
    /// absent from older agents, ignored by older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFacts>,
}

/// What the agent knows about its host: sent in the hello and again every few minutes in a
/// heartbeat. Every field is optional: a platform that cannot tell leaves it out. Added after
/// version 1, so older peers neither send nor expect it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The operating system's name, e.g. `"Debian GNU/Linux"`, `"Darwin"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// The operating system's version, e.g. `"12"`, `"14.5"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// The kernel's release, e.g. `"6.1.0-18-amd64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// The CPU architecture as the kernel reports it, e.g. `"x86_64"`, `"arm64"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Logical CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Physical memory, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total_bytes: Option<u64>,
    /// Memory available to new work without swapping, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_bytes: Option<u64>,
    /// The 1, 5 and 15 minute load averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<[f64; 3]>,
    /// Size of the file system mounted at `/`, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk_total_bytes: Option<u64>,
    /// Space on `/` available to unprivileged users, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_disk_available_bytes: Option<u64>,
    /// Seconds since the host booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
}

/// The agent's proof of life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Counts up from 0 within one connection; a gap means lost frames.
    pub seq: u64,
    /// When the agent sent this heartbeat, by its own clock.
    pub sent_at: Timestamp,
    /// Seconds since the agent process started.
    pub uptime_seconds: u64,
    /// How many scripts the agent is running right now.
    pub running_runs: u32,
    /// The host's 1, 5 and 15 minute load averages, when the platform reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_average: Option<[f64; 3]>,
    /// Fresh host facts, every few minutes rather than in every heartbeat. Added after
    /// version 1: absent from older agents, ignored by older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostFacts>,
}

/// The agent accepted a run request and started the script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAccepted {
    /// The run, as named in the request.
    pub run_id: RunId,
    /// When the script process started.
    pub started_at: Timestamp,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// The script's standard output.
    Stdout,
    /// The script's standard error.
    Stderr,
}

/// A piece of a running script's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutput {
    /// The run this output belongs to.
    pub run_id: RunId,
    /// The stream the chunk was read from.
    pub stream: OutputStream,
    /// Counts up from 0 across both streams of one run, so the receiver can order chunks.
    pub seq: u64,
    /// The text, at most [`MAX_OUTPUT_CHUNK_BYTES`](crate::MAX_OUTPUT_CHUNK_BYTES) bytes;
    /// invalid UTF-8 is replaced with U+FFFD.
    pub chunk: String,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The script exited with status 0.
    Succeeded,
    /// The script exited with another status, was killed by a signal, or could not be started.
    Failed,
    /// The script ran past its timeout and was killed.
    TimedOut,
}

/// The outcome of a run the agent accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run, as named in the request.
    pub run_id: RunId,
    /// How the run ended.
    pub status: RunStatus,
    /// The exit status, when the script exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the script, when one did (Unix only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The start of standard output, at most the run's output cap; invalid UTF-8 is replaced
    /// with U+FFFD.
    pub stdout: String,
    /// The start of standard error, under the same rules as `stdout`.
    pub stderr: String,
    /// Whether standard output was longer than what `stdout` holds.
    pub stdout_truncated: bool,
    /// Whether standard error was longer than what `stderr` holds.
    pub stderr_truncated: bool,
    /// When the script process started.
    pub started_at: Timestamp,
    /// When the script process ended (or was killed).
    pub finished_at: Timestamp,
    /// Wall-clock run time in milliseconds, measured with a monotonic clock.
    pub duration_ms: u64,
}

/// Why the agent refused a run request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The script name is not in the agent's local allowlist.
    NotInAllowlist,
    /// The request says the script is not approved centrally.
    NotApproved,
    /// The script body does not hash to the request's `sha256`, or not to the hash the local
    /// allowlist pins for this name.
    HashMismatch,
    /// The script name is empty, too long, or path-like.
    InvalidName,
    /// A parameter name or value breaks the rules, or there are too many.
    InvalidParameters,
    /// Another field is out of bounds: an oversized script, a malformed hash, a timeout or
    /// output cap beyond the limits.
    InvalidRequest,
    /// The agent cannot run this interpreter (not installed, or disabled locally).
    UnsupportedInterpreter,
    /// The request's `expires_at` had passed when it arrived.
    Expired,
    /// The agent is already running as many scripts as it is allowed to.
    Busy,
    /// The agent already ran, or is running, this run id.
    Duplicate,
    /// The agent is shutting down or was asked to drain.
    Draining,
    /// A reason this build does not know, sent by a newer peer.
    #[serde(other)]
    Unknown,
}

impl SkipReason {
    /// Every reason, in declaration order (for metrics that start at zero).
    pub const ALL: [Self; 12] = [
        Self::NotInAllowlist,
        Self::NotApproved,
        Self::HashMismatch,
        Self::InvalidName,
        Self::InvalidParameters,
        Self::InvalidRequest,
        Self::UnsupportedInterpreter,
        Self::Expired,
        Self::Busy,
        Self::Duplicate,
        Self::Draining,
        Self::Unknown,
    ];

    /// The reason's name on the wire (`not_in_allowlist`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInAllowlist => "not_in_allowlist",
            Self::NotApproved => "not_approved",
            Self::HashMismatch => "hash_mismatch",
            Self::InvalidName => "invalid_name",
            Self::InvalidParameters => "invalid_parameters",
            Self::InvalidRequest => "invalid_request",
            Self::UnsupportedInterpreter => "unsupported_interpreter",
            Self::Expired => "expired",
            Self::Busy => "busy",
            Self::Duplicate => "duplicate",
            Self::Draining => "draining",
            Self::Unknown => "unknown",
        }
    }
}

/// The agent refused a run request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSkipped {
    /// The run, as named in the request.
    pub run_id: RunId,
    /// The script name, as named in the request.
    pub script: String,
    /// Why, as a machine-readable code.
    pub reason: SkipReason,
    /// Why, for a human: which check failed and on what.
    pub detail: String,
}

/// What went wrong, as a machine-readable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The version ranges of the two sides do not overlap.
    UnsupportedVersion,
    /// The API key is not allowed to connect as this agent, or was revoked during the session.
    Unauthorized,
    /// A frame was larger than [`MAX_FRAME_BYTES`](crate::MAX_FRAME_BYTES).
    FrameTooLarge,
    /// A frame was not valid JSON, had an unknown `"type"`, or broke a field's rules.
    Malformed,
    /// A valid message arrived at the wrong time, such as anything but `hello` first.
    UnexpectedMessage,
    /// The handshake did not finish within [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT).
    HandshakeTimeout,
    /// Another connection with the same agent id replaced this one.
    SessionReplaced,
    /// The peer is sending too much; dial again later.
    RateLimited,
    /// The sender failed on its own side; nothing is wrong with the frame.
    Internal,
    /// A code this build does not know, sent by a newer peer.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, in declaration order (for metrics that start at zero).
    pub const ALL: [Self; 10] = [
        Self::UnsupportedVersion,
        Self::Unauthorized,
        Self::FrameTooLarge,
        Self::Malformed,
        Self::UnexpectedMessage,
        Self::HandshakeTimeout,
        Self::SessionReplaced,
        Self::RateLimited,
        Self::Internal,
        Self::Unknown,
    ];

    /// The code's name on the wire (`unsupported_version`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsupportedVersion => "unsupported_version",
            Self::Unauthorized => "unauthorized",
            Self::FrameTooLarge => "frame_too_large",
            Self::Malformed => "malformed",
            Self::UnexpectedMessage => "unexpected_message",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::SessionReplaced => "session_replaced",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

/// An error report; the sender closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for humans. Never holds secrets or internal detail.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// Server → agent
// ---------------------------------------------------------------------------------------------

/// The server accepted the hello; the session is open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides use for the rest of the connection (see
    /// [`VersionRange::negotiate`](crate::VersionRange::negotiate)).
    pub protocol_version: u32,
    /// This connection's id.
    pub session_id: SessionId,
    /// How often the agent sends a heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// The server's clock when it sent the welcome, so the agent can log clock skew.
    pub server_time: Timestamp,
    /// The server's release, e.g. `"0.1.0"`.
    pub server_version: String,
}

/// The program that runs a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpreter {
    /// GNU Bash.
    Bash,
    /// A POSIX shell.
    Sh,
    /// Python 3.
    Python3,
}

impl Interpreter {
    /// The interpreter's name on the wire and, by convention, its executable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Sh => "sh",
            Self::Python3 => "python3",
        }
    }
}

/// Run this script. See [`RunRequest::validate`](crate::RunRequest::validate) for its limits.
///
/// The agent runs it only if the request validates, `approved` is true, the name is in its
/// local allowlist, and the body hashes both to `sha256` and to the allowlist's pinned hash.
/// Otherwise it answers [`RunSkipped`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The run's id; every later message about the run carries it.
    pub run_id: RunId,
    /// The registered script's name, which is also its allowlist key.
    pub script: String,
    /// The registered script's version number on the server.
    pub version: u32,
    /// The program that runs the script.
    pub interpreter: Interpreter,
    /// The script's full text.
    pub content: String,
    /// SHA-256 of `content`'s UTF-8 bytes, as 64 lowercase hex digits.
    pub sha256: String,
    /// Whether this exact version was approved centrally. The agent refuses `false`.
    pub approved: bool,
    /// Values the script receives as environment variables. Passed verbatim, never pasted into
    /// the script text, so shell metacharacters are inert.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Kill the script after this many seconds.
    pub timeout_seconds: u32,
    /// Keep at most this many bytes of each output stream; the agent's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cap_bytes: Option<u64>,
    /// Send [`RunOutput`] chunks while the script runs, not only the final [`RunResult`].
    #[serde(default)]
    pub stream_output: bool,
    /// Do not start the run after this instant (a request queued across a long disconnection
    /// may be stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// The server durably stored what the agent reported about a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The run whose [`RunResult`] or [`RunSkipped`] was stored.
    pub run_id: RunId,
}

/// The server is going away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// Why, for logs: `"shutdown"`, `"deploy"`, …
    pub reason: String,
    /// Wait at least this long (plus jitter) before dialling again, in milliseconds; the
    /// agent's own backoff when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_after_ms: Option<u64>,
}

/// Close this connection and dial again later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnect {
    /// Wait at least this long (plus jitter) before dialling again, in milliseconds.
    pub after_ms: u64,
    /// Why, for logs.
    #[serde(default)]
    pub reason: String,
}
