//! Secret values at rest: AES-256-GCM under `MEDIC_SECRETS_KEY`.
//!
//! Each value is sealed with a fresh random 96-bit nonce and the secret's **name as associated
//! data**, so a ciphertext copied onto another secret's row does not decrypt. Every sealed value
//! records the **key id** it was sealed under; the id is derived from the key itself (the first
//! 8 bytes of SHA-256 over a fixed label and the key, in hex), so operators never manage ids and
//! a wrong key is recognised as such instead of failing as "tampered". A [`Keyring`] holds the
//! current key and any number of old ones: values sealed under an old key still open, and
//! [`Keyring::reseal`] moves them to the current key (the rotation command's job).
//!
//! `aes-gcm` is RustCrypto's audited-in-practice AEAD implementation (constant-time, pure
//! Rust, no C); nonces come from `rand`'s OS-seeded CSPRNG, which the server already uses.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};

/// The environment variable that holds the current key.
pub const KEY_ENV: &str = "MEDIC_SECRETS_KEY";
/// The environment variable that holds old keys during a rotation (comma-separated).
pub const OLD_KEYS_ENV: &str = "MEDIC_SECRETS_OLD_KEYS";

const NONCE_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// A secret's plaintext. `Debug` never shows it and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext, for the one place that needs it (substitution, masking).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// A key id: 16 hex characters derived from the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One 256-bit key. `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretsKey {
    id: KeyId,
    cipher: Aes256Gcm,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey({}, <redacted>)", self.id)
    }
}

/// Why a configured key is unusable. The messages name the variable and never the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{var} is not valid base64 (generate a key with `openssl rand -base64 32`)")]
    NotBase64 { var: &'static str },
    #[error(
        "{var} must decode to exactly 32 bytes, got {len} (generate a key with `openssl rand -base64 32`)"
    )]
    WrongLength { var: &'static str, len: usize },
}

impl SecretsKey {
    /// A key from its base64 text as found in `var` (named in errors).
    pub fn from_base64(text: &str, var: &'static str) -> Result<Self, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64 { var })?;
        let bytes: [u8; KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::WrongLength {
                    var,
                    len: bytes.len(),
                })?;
        Ok(Self::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"medic-secrets-key-id\0")
            .chain_update(bytes)
            .finalize();
        Self {
            id: KeyId(hex::encode(&digest[..8])),
            cipher: Aes256Gcm::new(&(*bytes).into()),
        }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }
}

/// A sealed value as stored: key id, nonce and ciphertext (with its 16-byte tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

const SEALED_VERSION: &str = "v1";

impl Sealed {
    /// One text column: `v1:<key id>:<base64 nonce>:<base64 ciphertext>`.
    pub fn to_text(&self) -> String {
        format!(
            "{SEALED_VERSION}:{}:{}:{}",
            self.key_id,
            BASE64.encode(self.nonce),
            BASE64.encode(&self.ciphertext)
        )
    }

    pub fn from_text(text: &str) -> Result<Self, OpenError> {
        let mut parts = text.split(':');
        let (Some(SEALED_VERSION), Some(key_id), Some(nonce), Some(ct), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(OpenError::Malformed);
        };
        let nonce: [u8; NONCE_LEN] = BASE64
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(OpenError::Malformed)?;
        let ciphertext = BASE64.decode(ct).map_err(|_| OpenError::Malformed)?;
        Ok(Self {
            key_id: key_id.to_owned(),
            nonce,
            ciphertext,
        })
    }
}

/// Why a sealed value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "secret {name:?} was encrypted under key id {key_id}, which is neither {KEY_ENV} nor one of {OLD_KEYS_ENV}: the server has the wrong key"
    )]
    UnknownKey { name: String, key_id: String },
    #[error(
        "secret {name:?} does not decrypt under key id {key_id}: the stored value was altered or belongs to another secret"
    )]
    Tampered { name: String, key_id: String },
    #[error("the stored secret is not in the v1 sealed format")]
    Malformed,
    #[error("secret {name:?} decrypted to bytes that are not UTF-8")]
    NotUtf8 { name: String },
}

/// The current key and the old ones still accepted for opening.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: SecretsKey,
    old: Vec<SecretsKey>,
}

impl Keyring {
    pub fn new(current: SecretsKey, old: Vec<SecretsKey>) -> Self {
        Self { current, old }
    }

    /// From the two variables' values: the current key, and a comma-separated list of old keys
    /// (empty entries ignored).
    pub fn from_env_values(current: &str, old: Option<&str>) -> Result<Self, KeyError> {
        let current = SecretsKey::from_base64(current, KEY_ENV)?;
        let old = old
            .unwrap_or_default()
            .split(',')
            .filter(|k| !k.trim().is_empty())
            .map(|k| SecretsKey::from_base64(k, OLD_KEYS_ENV))
            .collect::<Result<_, _>>()?;
        Ok(Self::new(current, old))
    }

    pub fn current_id(&self) -> &KeyId {
        self.current.id()
    }

    /// Seals `value` for the secret called `name` under the current key.
    pub fn seal(&self, name: &str, value: &SecretValue) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let payload = Payload {
            msg: value.expose().as_bytes(),
            aad: name.as_bytes(),
        };
        let ciphertext = self
            .current
            .cipher
            .encrypt(&Nonce::from(nonce), payload)
            // AES-GCM encryption fails only for inputs beyond 64 GiB; secret values are capped
            // far below that by the API.
            .unwrap_or_default();
        Sealed {
            key_id: self.current.id.0.clone(),
            nonce,
            ciphertext,
        }
    }

    /// Opens a value sealed for the secret called `name`.
    pub fn open(&self, name: &str, sealed: &Sealed) -> Result<SecretValue, OpenError> {
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id.0 == sealed.key_id)
            .ok_or_else(|| OpenError::UnknownKey {
                name: name.to_owned(),
                key_id: sealed.key_id.clone(),
            })?;
        let payload = Payload {
            msg: &sealed.ciphertext,
            aad: name.as_bytes(),
        };
        let plain = key
            .cipher
            .decrypt(&Nonce::from(sealed.nonce), payload)
            .map_err(|_| OpenError::Tampered {
                name: name.to_owned(),
                key_id: sealed.key_id.clone(),
            })?;
        String::from_utf8(plain)
            .map(SecretValue)
            .map_err(|_| OpenError::NotUtf8 {
                name: name.to_owned(),
            })
    }

    /// Whether `sealed` is under an old key and should be resealed.
    pub fn needs_reseal(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current.id.0
    }

    /// Opens and seals again under the current key (with a new nonce).
    pub fn reseal(&self, name: &str, sealed: &Sealed) -> Result<Sealed, OpenError> {
        let value = self.open(name, sealed)?;
        Ok(self.seal(name, &value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_bytes(&[byte; KEY_LEN])
    }

    fn ring(byte: u8) -> Keyring {
        Keyring::new(key(byte), vec![])
    }

    #[test]
    fn round_trip_through_the_stored_text() {
        let ring = ring(1);
        let value = SecretValue::new("hunter2-🦀");
        let sealed = ring.seal("DEPLOY_TOKEN", &value);
        assert_eq!(sealed.key_id, ring.current_id().as_str());
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        let text = sealed.to_text();
        assert!(!text.contains("hunter2"));
        let back = Sealed::from_text(&text).unwrap();
        assert_eq!(ring.open("DEPLOY_TOKEN", &back).unwrap(), value);
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let ring = ring(1);
        let v = SecretValue::new("same");
        let a = ring.seal("A", &v);
        let b = ring.seal("A", &v);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn the_name_is_bound_as_associated_data() {
        let ring = ring(1);
        let sealed = ring.seal("A", &SecretValue::new("v"));
        let err = ring.open("B", &sealed).unwrap_err();
        assert!(matches!(err, OpenError::Tampered { ref name, .. } if name == "B"));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = ring(1);
        let sealed = ring.seal("A", &SecretValue::new("value"));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            ring.open("A", &flipped),
            Err(OpenError::Tampered { .. })
        ));
        let mut nonce = sealed.clone();
        nonce.nonce[0] ^= 1;
        assert!(matches!(
            ring.open("A", &nonce),
            Err(OpenError::Tampered { .. })
        ));
        let mut truncated = sealed;
        truncated.ciphertext.pop();
        assert!(matches!(
            ring.open("A", &truncated),
            Err(OpenError::Tampered { .. })
        ));
        assert_eq!(Sealed::from_text("v1:abc:!!:xx"), Err(OpenError::Malformed));
        assert_eq!(Sealed::from_text("v2:a:b:c"), Err(OpenError::Malformed));
    }

    #[test]
    fn a_wrong_key_is_named_as_such() {
        let sealed = ring(1).seal("A", &SecretValue::new("value"));
        let err = ring(2).open("A", &sealed).unwrap_err();
        assert!(matches!(err, OpenError::UnknownKey { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(KEY_ENV) && msg.contains(&sealed.key_id),
            "{msg}"
        );
        // Same id but different key material cannot happen by accident; forging the id is
        // caught by the tag.
        let mut forged = sealed;
        forged.key_id = ring(2).current_id().to_string();
        assert!(matches!(
            ring(2).open("A", &forged),
            Err(OpenError::Tampered { .. })
        ));
    }

    #[test]
    fn rotation_opens_old_values_and_reseals_them_under_the_current_key() {
        let old = ring(1);
        let sealed = old.seal("A", &SecretValue::new("value"));
        let rotated = Keyring::new(key(2), vec![key(1)]);
        assert!(rotated.needs_reseal(&sealed));
        assert_eq!(rotated.open("A", &sealed).unwrap().expose(), "value");
        let resealed = rotated.reseal("A", &sealed).unwrap();
        assert_eq!(resealed.key_id, rotated.current_id().as_str());
        assert!(!rotated.needs_reseal(&resealed));
        // After the rotation, the old key can be dropped.
        assert_eq!(ring(2).open("A", &resealed).unwrap().expose(), "value");
        assert!(ring(2).open("A", &sealed).is_err());
    }

    #[test]
    fn keys_from_the_environment_with_clear_errors() {
        let good = BASE64.encode([7u8; 32]);
        let ring = Keyring::from_env_values(&good, Some(&format!(" , {good}"))).unwrap();
        assert_eq!(ring.current_id(), key(7).id());
        assert_eq!(
            Keyring::from_env_values("not base64!", None).unwrap_err(),
            KeyError::NotBase64 { var: KEY_ENV }
        );
        let short = BASE64.encode([7u8; 16]);
        let err = Keyring::from_env_values(&short, None).unwrap_err();
        assert_eq!(
            err,
            KeyError::WrongLength {
                var: KEY_ENV,
                len: 16
            }
        );
        assert!(err.to_string().contains("exactly 32 bytes"));
        assert_eq!(
            Keyring::from_env_values(&good, Some("bad!")).unwrap_err(),
            KeyError::NotBase64 { var: OLD_KEYS_ENV }
        );
    }

    #[test]
    fn debug_never_shows_values_or_keys() {
        let v = SecretValue::new("hunter2");
        assert!(!format!("{v:?}").contains("hunter2"));
        let k = key(0xAB);
        let shown = format!("{:?}", Keyring::new(k.clone(), vec![k]));
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("abab"),
            "{shown}"
        );
    }
}
