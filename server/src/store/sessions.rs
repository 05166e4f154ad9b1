//! Sessions of the web page (`/ui`): who signed in, until when. The statements are shared
//! (`shared/sessions.rs`).

use super::StoreResult;
use crate::domain::Timestamp;

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    /// Hex SHA-256 of the session id the cookie carries.
    pub id_hash: String,
    /// The API key signed in with; `None` for the bootstrap admin key.
    pub key_id: Option<String>,
    /// The token every form of this session carries.
    pub csrf_token: String,
    pub created_at: Timestamp,
    /// Absolute end of the session.
    pub expires_at: Timestamp,
    /// Last request seen (the idle expiry counts from it).
    pub last_seen_at: Timestamp,
}

#[async_trait::async_trait]
pub trait SessionStore: Send + Sync {
    /// Records a new session, and deletes the sessions that expired before `s.created_at`.
    async fn create_ui_session(&self, s: &UiSession) -> StoreResult<()>;
    async fn get_ui_session(&self, id_hash: &str) -> StoreResult<Option<UiSession>>;
    /// Moves the session's last-seen time to `now`.
    async fn touch_ui_session(&self, id_hash: &str, now: Timestamp) -> StoreResult<()>;
    /// Ends a session (sign-out, expiry); `true` when there was one.
    async fn delete_ui_session(&self, id_hash: &str) -> StoreResult<bool>;
}
