//! Sealed secrets for playbooks, and [`SecretStore`]. SQL in `shared/secrets.rs`; how a write
//! tells a new secret from a replaced one differs per backend (`sqlite/secrets.rs`,
//! `postgres/secrets.rs`).
//!
//! The store never sees a plaintext value: callers seal with `playbook::secrets::Keyring` and
//! hand over the sealed text (`v1:<key id>:<nonce>:<ciphertext>`) and its key id. Names are
//! exact (`${secrets.NAME}` is case-sensitive, and the name is the cipher's associated data).

use super::*;
use crate::domain::Timestamp;

/// A value to store under `name` (created or replaced).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSecret {
    pub name: String,
    /// The sealed text; never the plaintext.
    pub sealed: String,
    /// The id of the key `sealed` was sealed under.
    pub key_id: String,
    pub actor: String,
    pub at: Timestamp,
}

/// What the API may show about a secret: never its value.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SecretInfo {
    pub name: String,
    pub key_id: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// A stored sealed value, for the one caller that opens it (the engine, the start-up check,
/// the rotation).
#[derive(Clone, PartialEq, sqlx::FromRow)]
pub struct SealedSecret {
    pub name: String,
    pub sealed: String,
    pub key_id: String,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PutSecretOutcome {
    Created(SecretInfo),
    Updated(SecretInfo),
}

/// A value sealed again under the current key.
#[derive(Debug, Clone, PartialEq)]
pub struct Resealed {
    pub sealed: String,
    pub key_id: String,
}

/// What a rotation does to one stored value: `Ok(None)` leaves it (already under the current
/// key), `Ok(Some(..))` replaces it, `Err(reason)` stops the rotation and writes nothing.
pub type Reseal<'a> = &'a (dyn Fn(&SealedSecret) -> Result<Option<Resealed>, String> + Sync);

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateSummary {
    /// Secrets stored.
    pub total: usize,
    /// Secrets sealed again under the current key.
    pub resealed: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RotateOutcome {
    Done(RotateSummary),
    /// `name` could not be resealed; nothing was written.
    Failed {
        name: String,
        reason: String,
    },
}

/// Sealed secrets.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync {
    // ---- secrets ----------------------------------------------------------------------------

    /// Creates or replaces the secret, with the audit entry `audit` builds from the result.
    async fn put_secret(
        &self,
        new: &NewSecret,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<PutSecretOutcome>;
    /// Deletes the secret with its audit entry; `None` when there was none.
    async fn delete_secret(
        &self,
        name: &str,
        audit: AuditWith<'_, SecretInfo>,
    ) -> StoreResult<Option<SecretInfo>>;
    /// Every secret's name and times, by name.
    async fn list_secrets(&self) -> StoreResult<Vec<SecretInfo>>;
    /// The sealed values of those of `names` that exist, by name.
    async fn sealed_secrets(&self, names: &[String]) -> StoreResult<Vec<SealedSecret>>;
    /// Every sealed value, by name (the start-up check).
    async fn all_sealed_secrets(&self) -> StoreResult<Vec<SealedSecret>>;
    /// Reseals every stored value through `reseal` in one transaction (all or nothing), with
    /// the audit entry `audit` builds from the summary.
    async fn rotate_secrets(
        &self,
        reseal: Reseal<'_>,
        audit: AuditWith<'_, RotateSummary>,
    ) -> StoreResult<RotateOutcome>;
}

pub(crate) const SECRET_INFO_COLUMNS: &str =
    "name, key_id, created_at, created_by, updated_at, updated_by";
