//! Services: the things that send heartbeats.

use serde::{Deserialize, Serialize};

/// Database id of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceId(pub i64);

/// Database id of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SnapshotId(pub i64);

impl std::fmt::Display for ServiceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest heartbeat name we accept (bytes).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_NAME_LEN} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    ControlChar,
}

/// A heartbeat name as the user wrote it. Names are unique case-insensitively; [`Self::key`] is
/// the folded form the store indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct HeartbeatName(String);

impl HeartbeatName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::ControlChar);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded lookup key.
    pub fn key(&self) -> String {
        name_key(&self.0)
    }
}

/// Case-folds a name for lookups (Unicode lowercase, surrounding whitespace removed).
pub fn name_key(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Alert priority, `p1` (most urgent) to `p5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    P1,
    P2,
    P3,
    P4,
    P5,
}

impl Priority {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "p1" => Some(Self::P1),
            "p2" => Some(Self::P2),
            "p3" => Some(Self::P3),
            "p4" => Some(Self::P4),
            "p5" => Some(Self::P5),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::P1 => "p1",
            Self::P2 => "p2",
            Self::P3 => "p3",
            Self::P4 => "p4",
            Self::P5 => "p5",
        }
    }
}

/// What the monitor last concluded about a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Registered, never heard from.
    New,
    /// Beating within its deadline.
    Up,
    /// Past its deadline, inside the grace period.
    Late,
    /// Missed its deadline and grace period.
    Down,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Up => "up",
            Self::Late => "late",
            Self::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(Self::New),
            "up" => Some(Self::Up),
            "late" => Some(Self::Late),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

/// Why a snapshot was taken (COMPAT.md's action types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotAction {
    Deactivate,
    Activate,
    Mute,
    Unmute,
    Edit,
    BulkEdit,
    PriorityChange,
    TeamChange,
    Delete,
}

impl SnapshotAction {
    pub const ALL: [Self; 9] = [
        Self::Deactivate,
        Self::Activate,
        Self::Mute,
        Self::Unmute,
        Self::Edit,
        Self::BulkEdit,
        Self::PriorityChange,
        Self::TeamChange,
        Self::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deactivate => "deactivate",
            Self::Activate => "activate",
            Self::Mute => "mute",
            Self::Unmute => "unmute",
            Self::Edit => "edit",
            Self::BulkEdit => "bulk_edit",
            Self::PriorityChange => "priority_change",
            Self::TeamChange => "team_change",
            Self::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_and_trim() {
        let n = HeartbeatName::parse("  Nightly-Backup ").unwrap();
        assert_eq!(n.as_str(), "Nightly-Backup");
        assert_eq!(n.key(), "nightly-backup");
        assert_eq!(HeartbeatName::parse(" "), Err(NameError::Empty));
        assert_eq!(HeartbeatName::parse("a\nb"), Err(NameError::ControlChar));
        assert_eq!(
            HeartbeatName::parse(&"x".repeat(256)),
            Err(NameError::TooLong)
        );
    }

    #[test]
    fn priorities_and_actions_round_trip() {
        assert_eq!(Priority::parse("P2"), Some(Priority::P2));
        assert_eq!(Priority::parse("p9"), None);
        for a in SnapshotAction::ALL {
            assert_eq!(SnapshotAction::parse(a.as_str()), Some(a));
        }
    }
}
