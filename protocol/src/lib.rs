//! The wire contract between the Medic agent and the Medic server.
//!
//! The agent dials `wss://<server>/v2/agents/connect` with `Authorization: Bearer <agent key>`.
//! Each WebSocket text frame carries exactly one JSON message. The agent speaks first with
//! [`AgentMessage::Hello`]; the server answers [`ServerMessage::Welcome`] (or
//! [`ServerMessage::Error`] and closes). After that the agent sends heartbeats and reports on
//! runs, and the server sends run requests, acknowledgements and drain notices.
//! `docs/protocol.md` describes the conversation and the versioning rules.
//!
//! This crate is types and pure functions only: no runtime, no sockets, no clock reads, and no
//! dependency beyond `serde` and `serde_json`, so the agent binary stays small.
//!
//! # Layout
//!
//! - [`message`] — the two message enums, [`AgentMessage`] (agent → server) and
//!   [`ServerMessage`] (server → agent), the payload struct of every variant and the small enums
//!   they use ([`RunStatus`], [`SkipReason`], [`ErrorCode`], …).
//! - [`ids`] — [`AgentId`], [`RunId`], [`SessionId`]: opaque string newtypes.
//! - [`time`] — [`Timestamp`], an RFC 3339 instant with millisecond precision, formatted and
//!   parsed without a date library.
//! - [`limits`] — every named limit ([`MAX_FRAME_BYTES`], [`HANDSHAKE_TIMEOUT`], …), the protocol
//!   version constants and [`VersionRange::negotiate`].
//! - [`validate`] — pure checks for names, parameters, labels and whole messages
//!   ([`RunRequest::validate`], [`Hello::validate`]); a failed check names the [`SkipReason`]
//!   the agent reports.
//! - [`frame`] — [`encode`] / [`decode`] of one frame, with the size limit applied, and
//!   [`FrameError`], which maps to the [`ErrorCode`] the receiver answers with.
#![forbid(unsafe_code)]

pub mod frame;
pub mod ids;
pub mod limits;
pub mod message;
pub mod time;
pub mod validate;

pub use frame::{FrameError, Message, decode, encode};
pub use ids::{AgentId, RunId, SessionId};
pub use limits::*;
pub use message::*;
pub use time::Timestamp;
pub use validate::{ValidationError, ValidationProblem, ValidationSubject};
