//! Authentication: turning an `Authorization: Bearer …` header into a [`Principal`].
//!
//! Keys are looked up by their public id and verified by comparing SHA-256 digests in constant
//! time; an unknown id is compared against a dummy digest so it costs the same as a wrong secret.
//! Verified keys are cached for a short time (`MEDIC_API_KEY_CACHE_SECONDS`, default 5 s):
//! a revocation takes effect at once on the replica that performed it and within that time on
//! every other replica. Expiry is checked on every request, cached or not.
//!
//! The cache also remembers unknown key ids (so a flood of made-up keys costs one lookup each
//! per interval, not one per request), which makes its size something a stranger can drive: it
//! is bounded by `MEDIC_API_KEY_CACHE_MAX_ENTRIES` (50,000 by default, a few hundred bytes
//! each); reaching the bound clears it, which costs each live key one lookup.
//!
//! This module decides *who* is calling; *what they may do* is checked by the HTTP handlers
//! against [`Scopes`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::Secret;
use crate::domain::apikey::{self, ApiKeyId};
use crate::domain::{OwnerId, Scopes, Timestamp};
use crate::store::{ApiKeyRecord, Store, StoreError};

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// `None` for the bootstrap admin key from the environment.
    pub key_id: Option<ApiKeyId>,
    pub name: String,
    pub scopes: Scopes,
    /// Per-key requests per minute, overriding the per-class limits.
    pub rate_limit_per_minute: Option<u32>,
    /// The person or service account the key belongs to (four-eyes compares these).
    pub owner_id: OwnerId,
    /// For agent keys: the labels an agent connecting with this key may carry.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Principal {
    /// A label for audit entries and snapshots.
    pub fn actor(&self) -> String {
        match &self.key_id {
            Some(id) => format!("{} ({id})", self.name),
            None => self.name.clone(),
        }
    }

    /// The rate-limit bucket for this caller.
    pub fn rate_key(&self) -> String {
        match &self.key_id {
            Some(id) => format!("key:{id}"),
            None => "key:bootstrap-admin".to_owned(),
        }
    }
}

/// Why a credential was refused. Only [`AuthError::message`] reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Malformed,
    UnknownKey,
    BadSecret,
    Expired,
    Revoked,
    /// The key store could not be reached; not the caller's fault.
    Unavailable,
}

impl AuthError {
    /// Label for `medic_auth_failures_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSecret => "bad_secret",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Unavailable => "unavailable",
        }
    }

    /// What the client is told: unknown ids and wrong secrets look the same.
    pub fn message(self) -> &'static str {
        match self {
            Self::Malformed | Self::UnknownKey | Self::BadSecret => "Invalid API key.",
            Self::Expired => "API key has expired.",
            Self::Revoked => "API key has been revoked.",
            Self::Unavailable => "Authentication is temporarily unavailable.",
        }
    }
}

#[derive(Clone)]
struct CachedKey {
    record: Option<ApiKeyRecord>,
    fetched: Instant,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    bootstrap_digest: Option<[u8; 32]>,
    cache: DashMap<ApiKeyId, CachedKey>,
    ttl: Duration,
    max_entries: usize,
}

/// Default bound on cached entries; beyond it the cache is cleared (a cheap, safe reset).
pub const DEFAULT_MAX_CACHE_ENTRIES: usize = 50_000;

/// Digest compared against when the key id is unknown, so the comparison still happens.
const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, bootstrap: Option<&Secret>, ttl: Duration) -> Self {
        Self {
            store,
            bootstrap_digest: bootstrap.map(|s| apikey::digest(s.expose().trim())),
            cache: DashMap::new(),
            ttl,
            max_entries: DEFAULT_MAX_CACHE_ENTRIES,
        }
    }

    /// Bounds the cache to `max` entries (at least 1).
    pub fn with_max_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        self
    }

    /// Keys (and unknown key ids) cached right now.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Whether `token` is a key this replica verified recently (the bootstrap key, or a cached
    /// key whose secret matches), found without asking the store or touching the cache. The
    /// gate spends a client address's budget before looking up any other token.
    pub fn recognises(&self, token: &str) -> bool {
        let token = token.trim();
        let presented = apikey::digest(token);
        if self
            .bootstrap_digest
            .is_some_and(|boot| apikey::digests_match(&presented, &boot))
        {
            return true;
        }
        let Ok(id) = apikey::parse_id(token) else {
            return false;
        };
        self.cache.get(&id).is_some_and(|hit| {
            hit.fetched.elapsed() < self.ttl
                && hit
                    .record
                    .as_ref()
                    .is_some_and(|r| apikey::digests_match(&r.digest, &presented))
        })
    }

    /// Verifies a presented token (the part after `Bearer `).
    pub async fn authenticate(&self, token: &str, now: Timestamp) -> Result<Principal, AuthError> {
        let token = token.trim();
        let presented = apikey::digest(token);
        if let Some(boot) = &self.bootstrap_digest
            && apikey::digests_match(&presented, boot)
        {
            return Ok(Principal {
                key_id: None,
                name: "bootstrap-admin".to_owned(),
                scopes: [crate::domain::Scope::Admin].into_iter().collect(),
                rate_limit_per_minute: None,
                owner_id: OwnerId::bootstrap(),
                labels: Default::default(),
            });
        }
        let id = apikey::parse_id(token).map_err(|_| AuthError::Malformed)?;
        let record = self.lookup(&id).await?;
        let stored: &[u8] = record
            .as_ref()
            .map_or(DUMMY_DIGEST.as_slice(), |r| r.digest.as_slice());
        // Always compare, so an unknown id costs the same as a wrong secret.
        let secret_ok = apikey::digests_match(stored, &presented);
        let record = match record {
            Some(r) if secret_ok => r,
            Some(_) => return Err(AuthError::BadSecret),
            None => return Err(AuthError::UnknownKey),
        };
        if record.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if record.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        Ok(Principal {
            key_id: Some(record.id),
            name: record.name,
            scopes: record.scopes,
            rate_limit_per_minute: record.rate_limit_per_minute,
            owner_id: record.owner_id,
            labels: record.labels,
        })
    }

    async fn lookup(&self, id: &ApiKeyId) -> Result<Option<ApiKeyRecord>, AuthError> {
        if let Some(hit) = self.cache.get(id)
            && hit.fetched.elapsed() < self.ttl
        {
            return Ok(hit.record.clone());
        }
        let record = self.store.get_api_key(id).await.map_err(|e| match e {
            StoreError::Unavailable(_) | StoreError::Conflict(_) => AuthError::Unavailable,
            StoreError::Failed(_) | StoreError::Config(_) | StoreError::Migration(_) => {
                AuthError::Unavailable
            }
        })?;
        if self.cache.len() >= self.max_entries {
            self.cache.clear();
        }
        self.cache.insert(
            id.clone(),
            CachedKey {
                record: record.clone(),
                fetched: Instant::now(),
            },
        );
        metrics::gauge!("medic_api_key_cache_entries").set(self.cache.len() as f64);
        Ok(record)
    }

    /// Drops a key from this replica's cache (after revocation).
    pub fn forget(&self, id: &ApiKeyId) {
        self.cache.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn made_up_keys_cannot_grow_the_cache_past_its_bound() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("medic.db").display());
        let store = crate::store::connect(&url, &crate::store::PoolOptions::default())
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        let auth = Authenticator::new(store, None, Duration::from_secs(60)).with_max_entries(10);
        for i in 0..100u32 {
            let token = format!("mdk_{i:012x}_{}", "ab".repeat(32));
            assert_eq!(
                auth.authenticate(&token, Timestamp::now()).await,
                Err(AuthError::UnknownKey)
            );
            assert!(auth.cached() <= 10, "{} entries after {i}", auth.cached());
        }
    }
}
