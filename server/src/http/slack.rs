//! `POST /v2/slack/interactions`: Slack's interactivity callback.
//!
//! Slack posts a form (`payload=<JSON>`) when someone presses a button in a Medic message. The
//! request is accepted only with a valid signature: `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<X-Slack-Request-Timestamp>:<body>">` under `SLACK_SIGNING_SECRET`, with a timestamp
//! within five minutes (no replays). Handled actions: `ack_alert` (value = alert id) acknowledges
//! the alert as `slack:<user id>`; `approve_playbook` / `reject_playbook` (COMPAT; value =
//! execution id) approve or reject a playbook execution as `slack:<user id>`, with the same
//! four-eyes rule and race-free decision as the API (`http::executions`): a Slack user linked to a
//! key owner (`medic-server api-key link-slack`) is that owner for four-eyes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::alerts::AlertOut;
use super::audit::entry;
use super::error::{ApiError, ApiResult, Envelope, ok};
use super::executions::{self, ExecutionOut};
use super::schema::AlertKind;
use crate::store::{Alert, AlertChange};

/// Oldest accepted `X-Slack-Request-Timestamp`, in seconds from now (Slack's recommendation).
const MAX_SKEW_SECONDS: i64 = 300;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(slack_interactions))
}

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Invalid Slack signature.")
}

/// What a button press answers with.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SlackOut {
    Alert(Box<AlertOut>),
    Execution(Box<ExecutionOut>),
}

/// Checks Slack's signature over the raw body.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now_s: i64) -> Result<(), ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let stamp = header("x-slack-request-timestamp").ok_or_else(unauthorized)?;
    let ts: i64 = stamp.trim().parse().map_err(|_| unauthorized())?;
    if (now_s - ts).abs() > MAX_SKEW_SECONDS {
        return Err(unauthorized());
    }
    let sig = header("x-slack-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(unauthorized)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| unauthorized())?;
    mac.update(b"v0:");
    mac.update(stamp.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| unauthorized())
}

/// Slack's interactivity callback (button presses in Medic's messages).
#[utoipa::path(post, path = "/v2/slack/interactions", tag = "alerts",
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
                 description = "payload=<block_actions JSON>, signed by Slack"),
    security(("slack_signature" = [])),
    responses((status = 200, description = "Handled: the alert (`ack_alert`) or the execution (`approve_playbook`, `reject_playbook`)", body = Envelope<SlackOut>),
              (status = 403, description = "The Slack user requested the execution and cannot approve it"),
              (status = 409, description = "The execution is not waiting for approval, or another decision came first"),
              (status = 400, description = "Malformed payload"),
              (status = 401, description = "Bad, stale or missing signature, or no signing secret configured"),
              (status = 404, description = "No such alert or execution")))]
async fn slack_interactions(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let secret = app
        .config
        .slack_signing_secret
        .as_ref()
        .ok_or_else(unauthorized)?;
    let now = app.clock.now();
    verify(secret.expose(), &headers, &body, now.millis() / 1000)?;
    let payload = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::bad_request("payload is required."))?;
    let payload: Value = serde_json::from_str(&payload)
        .map_err(|_| ApiError::bad_request("payload must be JSON."))?;
    if payload["type"] != "block_actions" {
        return Err(ApiError::bad_request("Only block_actions are handled."));
    }
    let action = &payload["actions"][0];
    let action_id = action["action_id"].as_str().unwrap_or_default();
    let value = action["value"].as_str().unwrap_or_default();
    // The user id (`U024BE7LH`): a Slack user can change their name, never their id.
    let user_id = payload["user"]["id"]
        .as_str()
        .map(str::trim)
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
        })
        .ok_or_else(|| ApiError::bad_request("user.id must be a Slack user id."))?;
    let actor = format!("slack:{user_id}");
    // The name at the time, for people reading the audit log.
    let user_name: Option<String> = payload["user"]["username"]
        .as_str()
        .or_else(|| payload["user"]["name"].as_str())
        .map(|n| n.chars().filter(|c| !c.is_control()).take(64).collect());
    let id: i64 = value
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request("actions[0].value must be a positive integer."))?;
    match action_id {
        "ack_alert" => match app
            .store
            .acknowledge_alert(
                id,
                &actor,
                now,
                Some(&|a: &Alert| {
                    entry(
                        "alert_acknowledged",
                        &crate::store::Actor::new(actor.clone()),
                        Some(a.service_id),
                        json!({"alert_id": a.alert_id, "kind": AlertKind::from(a.kind), "via": "slack",
                               "slack_user_name": user_name}),
                    )
                }),
            )
            .await?
        {
            AlertChange::NotFound => Err(ApiError::not_found(format!("Alert {id} was not found."))),
            AlertChange::Unchanged(a) => Ok(ok(
                StatusCode::OK,
                &format!("Alert {id} is already {}.", a.state.as_str()),
                AlertOut::from(&a),
            )),
            AlertChange::Changed(a) => {
                app.outbox.poke();
                Ok(ok(
                    StatusCode::OK,
                    "Alert acknowledged.",
                    AlertOut::from(&a),
                ))
            }
        },
        "approve_playbook" => {
            let by = crate::playbook::machine::OwnerId(actor.clone());
            let event = crate::playbook::machine::Event::Approve { by };
            executions::decide(&app, &id.to_string(), event, &actor, "Execution approved.").await
        }
        "reject_playbook" => {
            let by = crate::playbook::machine::OwnerId(actor.clone());
            let event = crate::playbook::machine::Event::Reject {
                by,
                reason: "rejected in Slack".to_owned(),
            };
            executions::decide(&app, &id.to_string(), event, &actor, "Execution rejected.").await
        }
        _ => Err(ApiError::bad_request(
            "actions[0].action_id must be ack_alert, approve_playbook or reject_playbook.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &str, ts: i64, body: &str) -> HeaderMap {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("v0:{ts}:{body}").as_bytes());
        let mut h = HeaderMap::new();
        h.insert(
            "x-slack-request-timestamp",
            ts.to_string().parse().expect("header"),
        );
        h.insert(
            "x-slack-signature",
            format!("v0={}", hex::encode(mac.finalize().into_bytes()))
                .parse()
                .expect("header"),
        );
        h
    }

    #[test]
    fn signatures_are_checked_with_the_secret_body_and_time() {
        let body = "payload=%7B%7D";
        let h = signed("s3cret", 1_000_000, body);
        assert!(verify("s3cret", &h, body.as_bytes(), 1_000_010).is_ok());
        assert!(verify("other", &h, body.as_bytes(), 1_000_010).is_err());
        assert!(verify("s3cret", &h, b"payload=x", 1_000_010).is_err());
        // Replayed after five minutes.
        assert!(verify("s3cret", &h, body.as_bytes(), 1_000_301).is_err());
        assert!(verify("s3cret", &HeaderMap::new(), body.as_bytes(), 1_000_000).is_err());
    }
}
