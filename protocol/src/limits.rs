//! Named limits and the protocol version.
//!
//! Both sides enforce these; a message outside them is refused (a run request with a
//! [`SkipReason`](crate::SkipReason), anything else with an [`Error`](crate::ErrorMessage)).
//! Raising a limit that receivers enforce is a protocol change: see `docs/protocol.md`.

use std::time::Duration;

/// The protocol version this crate speaks, and the highest one it offers in a handshake.
pub const PROTOCOL_VERSION: u32 = 1;

/// The oldest protocol version this crate still understands.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The largest WebSocket text frame either side sends or accepts, in bytes of encoded JSON.
///
/// Sized so that every message within the other limits fits even in the worst case of JSON
/// escaping (6 bytes per control character): a run request with the largest script and the
/// most, largest parameters, or a result carrying both output streams in full.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// How long the server waits for the agent's `hello`, and the agent for the server's
/// `welcome`, after the WebSocket upgrade. Past it, the waiting side closes the connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most labels an agent may announce in its `hello`.
pub const MAX_LABELS: usize = 32;

/// The longest label key, in bytes.
pub const MAX_LABEL_KEY_LEN: usize = 63;

/// The longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 255;

/// The longest agent id, in bytes (the longest DNS host name).
pub const MAX_AGENT_ID_LEN: usize = 253;

/// The longest run id, in bytes.
pub const MAX_RUN_ID_LEN: usize = 128;

/// The longest free-text field of a `hello` (host name, agent version, OS, architecture).
pub const MAX_HELLO_TEXT_LEN: usize = 255;

/// The longest script name, in bytes.
pub const MAX_SCRIPT_NAME_LEN: usize = 128;

/// The largest script body a run request may carry, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 256 * 1024;

/// The most parameters a run request may carry.
pub const MAX_PARAMETERS: usize = 64;

/// The longest parameter name, in bytes.
pub const MAX_PARAMETER_NAME_LEN: usize = 64;

/// The longest parameter value, in bytes.
pub const MAX_PARAMETER_VALUE_BYTES: usize = 4 * 1024;

/// The most runs an agent may have in flight at once; bounds [`Hello::running`](crate::Hello::running).
pub const MAX_CONCURRENT_RUNS: usize = 64;

/// The longest run the server may ask for.
pub const MAX_RUN_TIMEOUT_SECONDS: u32 = 60 * 60;

/// The most output the agent keeps per stream (stdout, stderr) of one run, in bytes; the upper
/// bound for [`RunRequest::output_cap_bytes`](crate::RunRequest::output_cap_bytes).
pub const MAX_OUTPUT_BYTES: u64 = 128 * 1024;

/// The output the agent keeps per stream when the run request names no cap.
pub const DEFAULT_OUTPUT_CAP_BYTES: u64 = 64 * 1024;

/// The largest `chunk` of one [`RunOutput`](crate::RunOutput) message, in bytes.
pub const MAX_OUTPUT_CHUNK_BYTES: usize = 16 * 1024;

/// A range of protocol versions one side speaks, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionRange {
    /// The oldest version spoken.
    pub min: u32,
    /// The newest version spoken.
    pub max: u32,
}

impl VersionRange {
    /// The versions this crate speaks: [`MIN_PROTOCOL_VERSION`]..=[`PROTOCOL_VERSION`].
    pub const SUPPORTED: Self = Self {
        min: MIN_PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// The version both sides use: the newest one in both ranges, or `None` when the ranges do
    /// not overlap (the server then answers `unsupported_version` and closes).
    pub fn negotiate(self, other: Self) -> Option<u32> {
        let chosen = self.max.min(other.max);
        (chosen >= self.min.max(other.min)).then_some(chosen)
    }

    /// Whether `version` lies in this range.
    pub fn contains(self, version: u32) -> bool {
        (self.min..=self.max).contains(&version)
    }
}
