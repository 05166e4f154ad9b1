//! `POST /v2/webhooks/playbooks/{id}/trigger`: start a playbook from another system.
//!
//! The route takes no API key; it is authenticated with the shared secret
//! `MEDIC_WEBHOOK_SECRET` (without one configured it answers 503), in one of two forms:
//!
//! - **Signed (recommended):** `X-Medic-Timestamp: <unix seconds>` and
//!   `X-Medic-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the secret>`.
//!   A timestamp outside the replay window (`MEDIC_WEBHOOK_REPLAY_WINDOW_SECONDS`, 300 by
//!   default, either way) is refused, and so is a signature this process already accepted
//!   within the window.
//! - **Legacy (COMPAT):** `X-Webhook-Secret: <secret>`, compared in constant time.
//!
//! When the signature headers are present they are the ones checked. The body and the
//! answer are those of `POST /v2/playbooks/{id}/execute`; the execution's trigger is
//! `webhook` and its audit actor `webhook`; it has no requester for the four-eyes rule, so
//! any person may approve it.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::error::{ApiError, ApiResult, Envelope};
use super::playbooks::{ExecuteIn, Requester, StartedOut, execute_body, start_execution};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(trigger_playbook))
}

/// Most signatures remembered for replay refusal; beyond it new signed triggers are refused
/// (503) until older ones leave the window.
pub const MAX_REMEMBERED_SIGNATURES: usize = 10_000;

fn unauthorized(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, why.to_owned())
}

/// Signatures accepted recently, with their timestamps (seconds), by secret-derived key.
fn seen() -> &'static Mutex<HashMap<Vec<u8>, i64>> {
    static SEEN: OnceLock<Mutex<HashMap<Vec<u8>, i64>>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The signature of `body` sent at `timestamp` under `secret`: `sha256=<hex>`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(secret, timestamp, body)))
}

fn mac(secret: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Checks a request's credentials against `secret` at `now_s` (unix seconds).
///
/// # Errors
/// 401 for a missing, wrong, stale or replayed credential; 503 when too many signatures are
/// remembered.
pub fn verify(
    secret: &str,
    window_s: i64,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(sig) = header("x-medic-signature") {
        let stamp = header("x-medic-timestamp")
            .map(str::trim)
            .ok_or_else(|| unauthorized("X-Medic-Timestamp is required with X-Medic-Signature."))?;
        let ts: i64 = stamp
            .parse()
            .map_err(|_| unauthorized("X-Medic-Timestamp must be unix seconds."))?;
        if (now_s - ts).abs() > window_s {
            return Err(unauthorized(
                "X-Medic-Timestamp is outside the replay window; sign the request again.",
            ));
        }
        let given = sig
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .ok_or_else(|| unauthorized("Invalid webhook signature."))?;
        let expected = mac(secret, stamp, body);
        if !bool::from(expected.ct_eq(&given)) {
            return Err(unauthorized("Invalid webhook signature."));
        }
        let mut seen = seen()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|_, at| (now_s - *at).abs() <= window_s);
        if seen.contains_key(&expected) {
            return Err(unauthorized(
                "This signature was already used; sign each request anew.",
            ));
        }
        if seen.len() >= MAX_REMEMBERED_SIGNATURES {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many signed triggers in the replay window; try again shortly.",
            ));
        }
        seen.insert(expected, ts);
        return Ok(());
    }
    let given = header("x-webhook-secret")
        .ok_or_else(|| unauthorized("X-Webhook-Secret (or X-Medic-Signature) is required."))?;
    if bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized("Invalid webhook secret."))
    }
}

/// Start a playbook from another system, authenticated by the webhook secret.
#[utoipa::path(post, path = "/v2/webhooks/playbooks/{playbook_id}/trigger", tag = "playbooks",
    params(("playbook_id" = i64, Path, minimum = 1),
           ("X-Webhook-Secret" = Option<String>, Header, description = "The shared secret (legacy form)"),
           ("X-Medic-Timestamp" = Option<String>, Header, description = "Unix seconds (signed form)"),
           ("X-Medic-Signature" = Option<String>, Header, description = "sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\">")),
    request_body(content = ExecuteIn, description = "Optional; `{}` when empty"),
    responses((status = 201, description = "Started (or skipped by the circuit breaker); not awaited", body = Envelope<StartedOut>),
              (status = 400, description = "Bad body, or variables that do not fit the inputs"),
              (status = 401, description = "Missing, invalid, stale or replayed secret or signature"),
              (status = 404, description = "Unknown playbook or service"),
              (status = 409, description = "Disabled playbook, or a script without an approved version"),
              (status = 429, description = "Rate limited"),
              (status = 503, description = "No webhook secret configured")),
    security(()))]
async fn trigger_playbook(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> ApiResult {
    let secret = app.config.webhook_secret.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The webhook trigger is not configured (MEDIC_WEBHOOK_SECRET).",
        )
    })?;
    let window = i64::try_from(app.config.webhook_replay_window.as_secs()).unwrap_or(300);
    verify(
        secret.expose(),
        window,
        &headers,
        &body,
        app.clock.now().millis() / 1000,
    )?;
    let parsed: ExecuteIn = execute_body(&body)?;
    let who = Requester {
        requested_by: None,
        key: None,
        actor: crate::store::Actor::new("webhook"),
    };
    start_execution(
        &app,
        &raw,
        parsed,
        crate::store::ExecutionTrigger::Webhook,
        who,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_legacy_secret_is_compared_whole() {
        let ok = headers(&[("x-webhook-secret", "s3cret".into())]);
        assert!(verify("s3cret", 300, &ok, b"{}", 0).is_ok());
        for wrong in ["s3cre", "s3cret!", "S3CRET", ""] {
            let h = headers(&[("x-webhook-secret", wrong.into())]);
            assert!(verify("s3cret", 300, &h, b"{}", 0).is_err(), "{wrong}");
        }
        assert!(verify("s3cret", 300, &HeaderMap::new(), b"{}", 0).is_err());
    }

    #[test]
    fn signatures_cover_the_timestamp_and_body_and_are_used_once() {
        let now = 1_900_000_000;
        let ts = now.to_string();
        let body = br#"{"variables":{"unit":"api"}}"#;
        let good = headers(&[
            ("x-medic-timestamp", ts.clone()),
            ("x-medic-signature", signature("k", &ts, body)),
        ]);
        assert!(verify("k", 300, &good, body, now).is_ok());
        // The same signature again: a replay.
        assert!(verify("k", 300, &good, body, now + 1).is_err());
        // Another body under the same signature.
        let fresh = (now + 2).to_string();
        let other = headers(&[
            ("x-medic-timestamp", fresh.clone()),
            ("x-medic-signature", signature("k", &fresh, body)),
        ]);
        assert!(verify("k", 300, &other, b"{}", now).is_err());
        // Stale and future timestamps.
        for at in [now - 301, now + 301] {
            let t = at.to_string();
            let h = headers(&[
                ("x-medic-timestamp", t.clone()),
                ("x-medic-signature", signature("k", &t, body)),
            ]);
            assert!(verify("k", 300, &h, body, now).is_err(), "{at}");
        }
    }
}
