//! One message ↔ one WebSocket text frame.
//!
//! [`decode`] refuses frames over [`MAX_FRAME_BYTES`] before parsing them, and [`encode`]
//! refuses to produce one, so a sender learns at its own end that a message is too big (the
//! agent then trims output and tries again) instead of being disconnected by its peer.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{AgentMessage, ErrorCode, ErrorMessage, MAX_FRAME_BYTES, ServerMessage};

/// A frame that could not be encoded or decoded.
#[derive(Debug)]
pub enum FrameError {
    /// The frame is longer than [`MAX_FRAME_BYTES`].
    TooLarge {
        /// The frame's length in bytes.
        len: usize,
    },
    /// The frame is not valid JSON, has a missing or unknown `"type"`, or a field of the wrong
    /// shape. The inner error names the problem and where it is.
    Malformed(serde_json::Error),
}

impl FrameError {
    /// The code the receiver answers with before closing the connection.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::Malformed(_) => ErrorCode::Malformed,
        }
    }

    /// The error message the receiver answers with before closing the connection.
    pub fn to_error_message(&self) -> ErrorMessage {
        ErrorMessage {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => {
                write!(
                    f,
                    "frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
                )
            }
            Self::Malformed(e) => write!(f, "malformed frame: {e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TooLarge { .. } => None,
            Self::Malformed(e) => Some(e),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::AgentMessage {}
    impl Sealed for crate::ServerMessage {}
}

/// The two message enums; the bound of [`encode`] and [`decode`].
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {}
impl Message for AgentMessage {}
impl Message for ServerMessage {}

/// Writes one message as the JSON text of one frame.
pub fn encode<M: Message>(message: &M) -> Result<String, FrameError> {
    let text = serde_json::to_string(message).map_err(FrameError::Malformed)?;
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: text.len() });
    }
    Ok(text)
}

/// Reads one frame's JSON text as one message.
pub fn decode<M: Message>(frame: &str) -> Result<M, FrameError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len: frame.len() });
    }
    serde_json::from_str(frame).map_err(FrameError::Malformed)
}
