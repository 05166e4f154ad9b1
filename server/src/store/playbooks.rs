//! Playbook documents with immutable versions, and [`PlaybookStore`]. SQL in
//! `shared/playbooks.rs`.
//!
//! A playbook is an integer id, a name (its current document's `name`, unique
//! case-insensitively through `name_key`, also while disabled), an `enabled` flag and its
//! versions. A version is the document's text as written, its SHA-256, who wrote it and when; it
//! never changes once stored (both backends refuse an `UPDATE` of a version row). Writing a text
//! whose SHA-256 equals the current version's adds nothing. The execution engine pins a version
//! by `(playbook_id, version)` and loads it with [`PlaybookStore::get_playbook_version`].

use super::*;
use crate::domain::{ApiKeyId, PlaybookId, Timestamp};

/// A document to store as a new playbook or as a playbook's next version. The caller has
/// validated it (`playbook::validate`); the store keeps the text as given.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPlaybookVersion {
    /// The document's `name`.
    pub name: String,
    /// The document's `description`, shown in lists.
    pub description: Option<String>,
    /// The document as written (YAML or JSON text).
    pub source: String,
    /// Hex SHA-256 of `source`'s UTF-8 bytes (`playbook::plan::content_sha256`).
    pub sha256: String,
    pub author: String,
    /// `None` for the bootstrap admin key.
    pub author_key: Option<ApiKeyId>,
    pub at: Timestamp,
}

/// One stored version, with the playbook's `enabled` flag as it is now.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PlaybookVersion {
    pub playbook_id: PlaybookId,
    /// The document's `name` in this version.
    pub name: String,
    pub version: i32,
    pub sha256: String,
    /// The document text, byte for byte as it was stored.
    pub source: String,
    pub author: String,
    pub author_key: Option<ApiKeyId>,
    pub created_at: Timestamp,
    pub enabled: bool,
}

/// A version in a playbook's history (without its text).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PlaybookVersionInfo {
    pub version: i32,
    pub sha256: String,
    pub author: String,
    pub author_key: Option<ApiKeyId>,
    pub created_at: Timestamp,
}

/// A playbook's row: what lists show.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct PlaybookRecord {
    pub id: PlaybookId,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub current_version: i32,
    /// The current version's SHA-256.
    pub sha256: String,
    pub created_at: Timestamp,
    /// When the current version was stored (or the playbook last disabled or restored).
    pub updated_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
    pub disabled_by: Option<String>,
}

/// A playbook with its current version and every version's summary, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Playbook {
    pub record: PlaybookRecord,
    pub current: PlaybookVersion,
    pub versions: Vec<PlaybookVersionInfo>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlaybookFilter {
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Only enabled (`true`) or only disabled (`false`) playbooks.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CreatePlaybookOutcome {
    /// The new playbook's first version.
    Created(PlaybookVersion),
    /// Another playbook (maybe disabled) already has this name, case-insensitively.
    NameTaken { id: PlaybookId, enabled: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub enum AddVersionOutcome {
    /// The next version, now current.
    Created(PlaybookVersion),
    /// The text hashes like the current version's: that version, and nothing written.
    Unchanged(PlaybookVersion),
    NotFound,
    /// A disabled playbook takes no new version until it is restored.
    Disabled,
    /// The new document renames the playbook to a name another playbook has.
    NameTaken {
        id: PlaybookId,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToggleOutcome {
    /// Disabled (or restored) now.
    Done(PlaybookRecord),
    /// It already was; nothing written.
    Unchanged(PlaybookRecord),
    NotFound,
}

/// Playbooks and their versions.
#[async_trait::async_trait]
pub trait PlaybookStore: Send + Sync {
    // ---- playbooks --------------------------------------------------------------------------

    /// Stores a new playbook and its version 1, with the audit entry `audit` builds from that
    /// version, in one transaction.
    async fn create_playbook(
        &self,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<CreatePlaybookOutcome>;
    /// Adds the playbook's next version (now current) with its audit entry, unless the text
    /// hashes like the current version's. The playbook takes the new document's name.
    async fn add_playbook_version(
        &self,
        id: PlaybookId,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<AddVersionOutcome>;
    /// The playbook with its current version and the summary of every version.
    async fn get_playbook(&self, id: PlaybookId) -> StoreResult<Option<Playbook>>;
    /// The current version alone (what a new execution pins).
    async fn current_playbook_version(
        &self,
        id: PlaybookId,
    ) -> StoreResult<Option<PlaybookVersion>>;
    /// Version `version` of the playbook (what a running execution reloads).
    async fn get_playbook_version(
        &self,
        id: PlaybookId,
        version: i32,
    ) -> StoreResult<Option<PlaybookVersion>>;
    /// Playbooks by id.
    async fn list_playbooks(
        &self,
        filter: &PlaybookFilter,
        page: PageRequest,
    ) -> StoreResult<Page<PlaybookRecord>>;
    /// Disables the playbook (restorable; its versions stay), with its audit entry.
    async fn disable_playbook(
        &self,
        id: PlaybookId,
        actor: &str,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome>;
    /// Enables a disabled playbook again, with its audit entry.
    async fn restore_playbook(
        &self,
        id: PlaybookId,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome>;
}

/// The columns of [`PlaybookVersion`], from `playbook_versions v JOIN playbooks p`.
pub(crate) const VERSION_COLUMNS: &str = "v.playbook_id, v.name, v.version, v.sha256, v.source, \
    v.author, v.author_key, v.created_at, p.enabled";

/// The columns of [`PlaybookVersionInfo`], from `playbook_versions`.
pub(crate) const VERSION_INFO_COLUMNS: &str = "version, sha256, author, author_key, created_at";

/// The columns of [`PlaybookRecord`], from `playbooks p JOIN playbook_versions v` on the current
/// version.
pub(crate) const RECORD_COLUMNS: &str = "p.id, p.name, p.description, p.enabled, \
    p.current_version, v.sha256, p.created_at, p.updated_at, p.disabled_at, p.disabled_by";

/// The tables of [`RECORD_COLUMNS`]: each playbook joined to its current version.
pub(crate) const RECORD_FROM: &str = "playbooks p JOIN playbook_versions v ON v.playbook_id = p.id \
     AND v.version = p.current_version";
