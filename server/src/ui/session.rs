//! Sessions of the web page: sign-in with an API key, the session cookie, CSRF tokens and the
//! same-origin check.
//!
//! The cookie carries a random 256-bit session id; the database keeps only its SHA-256
//! (`ui_sessions`), with the API key signed in with, the session's CSRF token and its times.
//! Every request re-reads the key, so revoking or expiring the key ends its sessions at once.

use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Principal;
use crate::domain::apikey::ApiKeyId;
use crate::domain::{OwnerId, Scope, Timestamp};
use crate::http::AppState;
use crate::store::{StoreError, UiSession};

/// The cookie's name; the `__Host-` prefix makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`.
pub const COOKIE: &str = "__Host-medic_session";

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Absolute lifetime (`MEDIC_UI_SESSION_HOURS`, default 12).
    pub absolute_ms: i64,
    /// Idle lifetime (`MEDIC_UI_SESSION_IDLE_MINUTES`, default 60).
    pub idle_ms: i64,
}

impl Lifetimes {
    pub fn new(config: &crate::config::Config) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            absolute_ms: ms(config.ui_session),
            idle_ms: ms(config.ui_session_idle),
        }
    }
}

/// A request's signed-in session.
#[derive(Debug, Clone)]
pub struct Signed {
    pub principal: Principal,
    pub session: UiSession,
}

fn hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    hex::encode(b)
}

/// The session id the request's cookie carries.
fn cookie_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(id: &str, max_age_ms: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        max_age_ms / 1000
    ))
    .expect("ASCII cookie")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"
    ))
    .expect("ASCII cookie")
}

/// Why signing in failed (the page says so in these words).
pub enum SignInError {
    Refused(&'static str),
    Unavailable,
}

/// Verifies `key` like the API does and opens a session; returns the cookie's session id.
pub async fn sign_in(
    app: &AppState,
    lifetimes: Lifetimes,
    key: &str,
) -> Result<String, SignInError> {
    let now = app.clock.now();
    let principal = app.auth.authenticate(key, now).await.map_err(|e| match e {
        crate::auth::AuthError::Unavailable => SignInError::Unavailable,
        e => SignInError::Refused(e.message()),
    })?;
    if !principal.scopes.allows(Scope::Read) {
        return Err(SignInError::Refused(
            "This API key cannot read: the web page needs a read, write or admin key.",
        ));
    }
    let id = random_hex();
    let session = UiSession {
        id_hash: hash(&id),
        key_id: principal.key_id.as_ref().map(|k| k.0.clone()),
        csrf_token: random_hex(),
        created_at: now,
        expires_at: now.plus_millis(lifetimes.absolute_ms),
        last_seen_at: now,
    };
    app.store
        .create_ui_session(&session)
        .await
        .map_err(|_| SignInError::Unavailable)?;
    Ok(id)
}

/// The request's session, if it has a live one; expired sessions are deleted on sight.
pub async fn resolve(
    app: &AppState,
    lifetimes: Lifetimes,
    headers: &HeaderMap,
) -> Result<Option<Signed>, StoreError> {
    let Some(id) = cookie_id(headers) else {
        return Ok(None);
    };
    let id_hash = hash(&id);
    let Some(session) = app.store.get_ui_session(&id_hash).await? else {
        return Ok(None);
    };
    let now = app.clock.now();
    let idle = now.millis() - session.last_seen_at.millis() >= lifetimes.idle_ms;
    let principal = if now >= session.expires_at || idle {
        None
    } else {
        principal(app, session.key_id.as_deref(), now).await?
    };
    let Some(principal) = principal else {
        app.store.delete_ui_session(&id_hash).await?;
        return Ok(None);
    };
    app.store.touch_ui_session(&id_hash, now).await?;
    Ok(Some(Signed { principal, session }))
}

/// Who the session acts as: its key as it is now (revoked or expired keys end the session).
async fn principal(
    app: &AppState,
    key_id: Option<&str>,
    now: Timestamp,
) -> Result<Option<Principal>, StoreError> {
    let Some(key_id) = key_id else {
        // The bootstrap admin key: only while the server is still configured with one.
        return Ok(app.config.admin_api_key.as_ref().map(|_| Principal {
            key_id: None,
            name: "bootstrap-admin".to_owned(),
            scopes: [Scope::Admin].into_iter().collect(),
            rate_limit_per_minute: None,
            owner_id: OwnerId::bootstrap(),
            labels: Default::default(),
        }));
    };
    let Some(r) = app.store.get_api_key(&ApiKeyId(key_id.to_owned())).await? else {
        return Ok(None);
    };
    if r.revoked_at.is_some() || r.expires_at.is_some_and(|e| e <= now) {
        return Ok(None);
    }
    Ok(Some(Principal {
        key_id: Some(r.id),
        name: r.name,
        scopes: r.scopes,
        rate_limit_per_minute: r.rate_limit_per_minute,
        owner_id: r.owner_id,
        labels: r.labels,
    }))
}

/// Ends the request's session, if any.
pub async fn sign_out(app: &AppState, headers: &HeaderMap) -> Result<(), StoreError> {
    if let Some(id) = cookie_id(headers) {
        app.store.delete_ui_session(&hash(&id)).await?;
    }
    Ok(())
}

/// Whether a form's token is the session's.
pub fn csrf_ok(session: &UiSession, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| {
        p.len() == session.csrf_token.len()
            && bool::from(p.as_bytes().ct_eq(session.csrf_token.as_bytes()))
    })
}

/// Whether a state-changing request comes from the page itself: its `Origin` (or, without one,
/// `Sec-Fetch-Site`) must name this server.
pub fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    match text(header::ORIGIN) {
        Some(origin) => {
            let host = text(header::HOST).unwrap_or_default();
            let ours = [format!("http://{host}"), format!("https://{host}")];
            let public = public_url
                .and_then(|u| url::Url::parse(u).ok())
                .map(|u| u.origin().ascii_serialization());
            !host.is_empty() && ours.iter().any(|o| o == origin)
                || public.as_deref() == Some(origin)
        }
        None => matches!(
            headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
            None | Some("same-origin") | Some("none")
        ),
    }
}
