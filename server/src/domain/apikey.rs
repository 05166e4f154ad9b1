//! API keys: `mdk_<id>_<secret>`.
//!
//! The id (12 hex characters) is public and indexes the key; the secret carries 256 bits from the
//! operating system's CSPRNG. Only the SHA-256 digest of the whole key is stored. A fast hash is
//! the right choice here: the secret is uniformly random, so there is nothing for a slow
//! password hash to protect against, and a per-request bcrypt/argon2 cost would only slow down
//! every authenticated call.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const KEY_PREFIX: &str = "mdk_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;

/// Public identifier of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyId(pub String);

impl std::fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The person or service account an API key belongs to.
///
/// Owners are what four-eyes compares: two keys of one owner are one pair of eyes. A key
/// created through the API belongs to its creator's owner; a new owner is made only by
/// `medic-server api-key create --owner <name>` run against the database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OwnerId(pub String);

impl OwnerId {
    /// The owner of the bootstrap admin key and of every key it creates.
    pub fn bootstrap() -> Self {
        Self(BOOTSTRAP_OWNER.to_owned())
    }

    /// A new random owner id (12 hex characters, like a key id).
    pub fn generate() -> Self {
        let mut id = [0u8; ID_BYTES];
        rand::fill(&mut id);
        Self(hex::encode(id))
    }
}

impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of the bootstrap admin key's owner.
pub const BOOTSTRAP_OWNER: &str = "bootstrap";

/// Whether an owner is a person or a service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OwnerKind {
    Person,
    Service,
}

impl OwnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "person" => Some(Self::Person),
            "service" => Some(Self::Service),
            _ => None,
        }
    }
}

/// The four-eyes rule: an approval counts only when the approver is another owner than the
/// requester. Script decisions use it, and so must every other approval (playbook steps).
pub fn second_pair_of_eyes(requester: &OwnerId, approver: &OwnerId) -> bool {
    requester != approver
}

/// A freshly generated key: the plaintext (shown once) and what the store keeps.
pub struct GeneratedKey {
    pub id: ApiKeyId,
    pub plaintext: String,
    pub digest: [u8; 32],
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .field("plaintext", &"<redacted>")
            .finish()
    }
}

pub fn generate() -> GeneratedKey {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rand::fill(&mut id);
    rand::fill(&mut secret);
    let id = ApiKeyId(hex::encode(id));
    let plaintext = format!("{KEY_PREFIX}{}_{}", id.0, hex::encode(secret));
    let digest = digest(&plaintext);
    GeneratedKey {
        id,
        plaintext,
        digest,
    }
}

pub fn digest(plaintext: &str) -> [u8; 32] {
    Sha256::digest(plaintext.as_bytes()).into()
}

/// Constant-time digest comparison.
pub fn digests_match(a: &[u8], b: &[u8; 32]) -> bool {
    a.len() == 32 && bool::from(a.ct_eq(b.as_slice()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("not a Medic API key")]
    Malformed,
}

/// Splits a presented key into its id, checking only the shape (not the secret).
pub fn parse_id(presented: &str) -> Result<ApiKeyId, KeyParseError> {
    let rest = presented
        .strip_prefix(KEY_PREFIX)
        .ok_or(KeyParseError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(KeyParseError::Malformed)?;
    let hex_ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex_ok(id, ID_BYTES * 2) || !hex_ok(secret, SECRET_BYTES * 2) {
        return Err(KeyParseError::Malformed);
    }
    Ok(ApiKeyId(id.to_ascii_lowercase()))
}

/// A permission an API key may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
    Agent,
    /// Heartbeats and job signals, nothing else: the key a cron job holds.
    Ingest,
    /// Runs on agents (`POST /v2/runs`); `write` does not imply it.
    Run,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Ingest => "ingest",
            Self::Run => "run",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            "agent" => Some(Self::Agent),
            "ingest" => Some(Self::Ingest),
            "run" => Some(Self::Run),
            _ => None,
        }
    }
}

/// The set of scopes a key holds. `admin` implies `write` and `run`; `write` implies `read` and
/// `ingest`; `ingest` (heartbeats and job signals) and `run` (runs on agents) imply nothing;
/// `agent` is separate (an agent credential cannot manage services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(it: I) -> Self {
        Self(it.into_iter().fold(0, |acc, s| acc | Self::bit(s)))
    }
}

impl Scopes {
    /// Parses a comma-separated list (`read,write`). Empty or unknown entries are errors.
    pub fn parse_list(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            out.push(Scope::parse(part).ok_or_else(|| format!("unknown scope {:?}", part.trim()))?);
        }
        Ok(out.into_iter().collect())
    }

    fn bit(s: Scope) -> u8 {
        match s {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
            Scope::Agent => 8,
            Scope::Ingest => 16,
            Scope::Run => 32,
        }
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a key with these scopes may act where `needed` is required.
    pub fn allows(self, needed: Scope) -> bool {
        let has = |s| self.0 & Self::bit(s) != 0;
        match needed {
            Scope::Read => has(Scope::Read) || has(Scope::Write) || has(Scope::Admin),
            Scope::Write => has(Scope::Write) || has(Scope::Admin),
            Scope::Admin => has(Scope::Admin),
            Scope::Agent => has(Scope::Agent),
            Scope::Ingest => has(Scope::Ingest) || has(Scope::Write) || has(Scope::Admin),
            Scope::Run => has(Scope::Run) || has(Scope::Admin),
        }
    }

    pub fn list(self) -> Vec<Scope> {
        [
            Scope::Read,
            Scope::Write,
            Scope::Admin,
            Scope::Agent,
            Scope::Ingest,
            Scope::Run,
        ]
        .into_iter()
        .filter(|s| self.0 & Self::bit(*s) != 0)
        .collect()
    }

    /// Canonical comma-separated form, as stored.
    pub fn to_list_string(self) -> String {
        self.list()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let k = generate();
        assert!(k.plaintext.starts_with("mdk_"));
        assert_eq!(k.plaintext.len(), 4 + 12 + 1 + 64);
        assert_eq!(parse_id(&k.plaintext).unwrap(), k.id);
        assert!(digests_match(&digest(&k.plaintext), &k.digest));
        assert!(!digests_match(&digest("mdk_x"), &k.digest));
        assert_ne!(generate().plaintext, k.plaintext);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in ["", "mdk_", "mdk_abc_def", "Bearer x", "mdk_zzzzzzzzzzzz_00"] {
            assert_eq!(parse_id(bad), Err(KeyParseError::Malformed), "{bad}");
        }
    }

    #[test]
    fn four_eyes_compares_owners() {
        let alice = OwnerId("a1".into());
        assert!(!second_pair_of_eyes(&alice, &alice.clone()));
        assert!(second_pair_of_eyes(&alice, &OwnerId::bootstrap()));
        assert_ne!(OwnerId::generate(), OwnerId::generate());
    }

    #[test]
    fn scope_implications() {
        let admin = Scopes::parse_list("admin").unwrap();
        assert!(admin.allows(Scope::Read) && admin.allows(Scope::Write));
        assert!(!admin.allows(Scope::Agent));
        let read = Scopes::parse_list("read").unwrap();
        assert!(!read.allows(Scope::Write));
        assert!(Scopes::parse_list("read,bogus").is_err());
        let ingest = Scopes::parse_list("ingest").unwrap();
        assert!(ingest.allows(Scope::Ingest));
        for s in [
            Scope::Read,
            Scope::Write,
            Scope::Admin,
            Scope::Agent,
            Scope::Run,
        ] {
            assert!(!ingest.allows(s), "ingest allows {s:?}");
        }
        let write = Scopes::parse_list("write").unwrap();
        assert!(write.allows(Scope::Ingest) && !write.allows(Scope::Run));
        assert!(admin.allows(Scope::Run) && admin.allows(Scope::Ingest));
        let run = Scopes::parse_list("run").unwrap();
        assert!(run.allows(Scope::Run) && !run.allows(Scope::Read));
        assert_eq!(
            Scopes::parse_list("write, read").unwrap().to_list_string(),
            "read,write"
        );
    }
}
