//! Identifier newtypes. Each is a string on the wire (`#[serde(transparent)]`).
//!
//! All three are opaque to the side that did not mint them: the receiver compares and echoes
//! them, never parses them. That is why [`RunId`] is a string rather than an integer: the server
//! chooses the scheme (UUIDs today, whatever its store prefers tomorrow) without a protocol
//! change, and JSON readers that hold numbers as doubles cannot corrupt it.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id. No check is made here; see the `validate` module.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The owned text of the id.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }
    };
}

string_id! {
    /// The agent's stable name, chosen by the agent (its hostname unless configured) and sent in
    /// [`Hello`](crate::Hello). The server's agent registry is keyed by it. Checked by
    /// [`validate_agent_id`](crate::validate::validate_agent_id).
    AgentId
}

string_id! {
    /// One run of one script on one agent, minted by the server in
    /// [`RunRequest`](crate::RunRequest) and echoed in every message about that run. The agent
    /// uses it to drop duplicate requests; the server uses it to drop duplicate results.
    RunId
}

string_id! {
    /// One connection of an agent, minted by the server in [`Welcome`](crate::Welcome). Useful
    /// in logs on both sides to tell reconnections apart.
    SessionId
}
