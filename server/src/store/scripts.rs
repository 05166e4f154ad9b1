//! Scripts and their versions under review, and [`ScriptStore`]. SQL in `shared/scripts.rs`, and
//! in `sqlite/scripts.rs` and `postgres/scripts.rs` where the backends differ.

use serde::Deserialize;

use super::sql::InterpreterText;
use super::*;
use crate::domain::{ApiKeyId, OwnerId, ScriptId, Timestamp};

pub use medic_protocol::Interpreter;

/// The interpreter named `s` on the wire (`bash`, `sh`, `python3`).
pub fn parse_interpreter(s: &str) -> Option<Interpreter> {
    [Interpreter::Bash, Interpreter::Sh, Interpreter::Python3]
        .into_iter()
        .find(|i| i.as_str() == s)
}

/// Where a script version stands in review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptStatus {
    Pending,
    Approved,
    Rejected,
}

impl ScriptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// A registration: the named script's next version, unless its content equals the latest's.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScriptVersion {
    /// Already validated with [`medic_protocol::validate::validate_script_name`].
    pub name: String,
    pub interpreter: Interpreter,
    pub content: String,
    /// SHA-256 of `content`, 64 lowercase hex digits.
    pub sha256: String,
    pub description: Option<String>,
    pub created_by: String,
    /// `None` for the bootstrap admin key.
    pub created_by_key: Option<ApiKeyId>,
    /// The owner of the registering key: four-eyes compares it with the decider's.
    pub created_by_owner: OwnerId,
    pub at: Timestamp,
    /// Written in the same transaction when a version is created (not when the content is
    /// unchanged); the store adds the new version's `script_id` and `version` to its details.
    pub audit: Option<NewAuditEntry>,
}

impl NewScriptVersion {
    /// The audit entry to write for the version this registration `created`, if any.
    pub fn audit_for(&self, created: &ScriptVersion) -> Option<NewAuditEntry> {
        let mut entry = self.audit.clone()?;
        if let Some(details) = entry.details.as_object_mut() {
            details.insert("script_id".to_owned(), serde_json::json!(created.script_id));
            details.insert("version".to_owned(), serde_json::json!(created.version));
        }
        Some(entry)
    }
}

/// One version of a script.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ScriptVersion {
    pub id: i64,
    pub script_id: ScriptId,
    pub version: i32,
    #[sqlx(try_from = "InterpreterText")]
    pub interpreter: Interpreter,
    pub content: String,
    pub sha256: String,
    pub description: Option<String>,
    pub status: ScriptStatus,
    pub created_by: String,
    pub created_by_key: Option<ApiKeyId>,
    pub created_at: Timestamp,
    pub decided_by: Option<String>,
    pub decided_by_key: Option<ApiKeyId>,
    pub decided_at: Option<Timestamp>,
    pub decision_reason: Option<String>,
    /// The owners of the registering and deciding keys (`None` only for rows older than
    /// owners, which the owners migration filled in).
    pub created_by_owner: Option<OwnerId>,
    pub decided_by_owner: Option<OwnerId>,
}

/// A script with its versions, oldest first ([`Store::list_scripts`] gives only the latest).
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub id: ScriptId,
    pub name: String,
    pub created_at: Timestamp,
    pub versions: Vec<ScriptVersion>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RegisterOutcome {
    /// A new version (of a new or existing script).
    Created {
        name: String,
        version: ScriptVersion,
    },
    /// The content hashes like the latest version's: that version, unchanged.
    Unchanged {
        name: String,
        version: ScriptVersion,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScriptFilter {
    /// Status of each script's latest version.
    pub status: Option<ScriptStatus>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn status(self) -> ScriptStatus {
        match self {
            Self::Approve => ScriptStatus::Approved,
            Self::Reject => ScriptStatus::Rejected,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScriptDecision {
    pub decision: Decision,
    pub actor: String,
    /// `None` for the bootstrap admin key.
    pub key_id: Option<ApiKeyId>,
    /// The deciding key's owner: it must differ from the registering key's.
    pub owner_id: OwnerId,
    pub reason: Option<String>,
    pub at: Timestamp,
    /// Written in the same transaction when the decision is made.
    pub audit: Option<NewAuditEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DecideOutcome {
    Decided(ScriptVersion),
    /// Approved or rejected before; unchanged.
    AlreadyDecided(ScriptVersion),
    NotFound,
    /// The deciding key belongs to the owner whose key registered the version; unchanged.
    SameOwner,
}

/// Scripts, their versions and their review.
#[async_trait::async_trait]
pub trait ScriptStore: Send + Sync {
    // ---- scripts ----------------------------------------------------------------------------

    /// Adds the named script's next version (pending), creating the script on first use; when
    /// the content hashes like the latest version's, returns that version and writes nothing.
    async fn register_script_version(&self, new: &NewScriptVersion)
    -> StoreResult<RegisterOutcome>;
    /// The script with every version, oldest first.
    async fn get_script(&self, id: ScriptId) -> StoreResult<Option<Script>>;
    /// The id of the script with exactly this name.
    async fn script_id_by_name(&self, name: &str) -> StoreResult<Option<ScriptId>>;
    /// Scripts by id, each with only its latest version.
    async fn list_scripts(
        &self,
        filter: &ScriptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Script>>;
    async fn get_script_version(
        &self,
        id: ScriptId,
        version: i32,
    ) -> StoreResult<Option<ScriptVersion>>;
    /// Approves or rejects a pending version (by its row id). A version is decided once, and
    /// never by a key of the owner whose key registered it.
    async fn decide_script_version(
        &self,
        version_id: i64,
        decision: &ScriptDecision,
    ) -> StoreResult<DecideOutcome>;
}
