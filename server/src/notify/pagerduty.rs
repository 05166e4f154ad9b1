//! PagerDuty Events API v2: the event body for an alert event and what PagerDuty's answer means.
//!
//! Pure functions; [`super::Notifiers`] does the request. Every event of one alert carries the
//! alert's `dedup_key`, so PagerDuty folds them into one incident: `trigger` opens it (a
//! renotification sends `trigger` again, which PagerDuty treats as the same incident),
//! `acknowledge` and `resolve` close the loop.

use serde_json::{Map, Value, json};

use super::event::{AlertEvent, EventKind, Outcome};
use super::slack::truncate;
use crate::domain::Priority;

/// PagerDuty's `payload.source` for every Medic event.
pub const SOURCE: &str = "medic";

/// PagerDuty's limit on `payload.summary`.
const SUMMARY_MAX_CHARS: usize = 1024;

/// PagerDuty severity for a Medic priority (COMPAT.md): p1 critical, p2 error, p3 warning,
/// p4 and p5 info.
pub fn severity(priority: Priority) -> &'static str {
    match priority {
        Priority::P1 => "critical",
        Priority::P2 => "error",
        Priority::P3 => "warning",
        Priority::P4 | Priority::P5 => "info",
    }
}

/// The `event_action` for an alert event.
pub fn event_action(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Triggered | EventKind::Renotified => "trigger",
        EventKind::Acknowledged => "acknowledge",
        EventKind::Resolved => "resolve",
    }
}

/// The JSON body to `POST` to the Events API. `acknowledge` and `resolve` carry only the
/// routing and dedup keys, which is all PagerDuty reads from them.
pub fn event_body(routing_key: &str, event: &AlertEvent) -> Value {
    let action = event_action(event.event);
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": event.alert.dedup_key,
    });
    if action != "trigger" {
        return body;
    }
    let service = &event.service;
    let mut details = Map::new();
    details.insert("event".into(), json!(event.event.as_str()));
    details.insert("event_id".into(), json!(event.event_id));
    details.insert("alert_id".into(), json!(event.alert.id));
    details.insert("opened_at".into(), json!(event.alert.opened_at));
    details.insert("service_id".into(), json!(service.id));
    details.insert("heartbeat_name".into(), json!(service.name));
    if !service.service_name.is_empty() {
        details.insert("service_name".into(), json!(service.service_name));
    }
    if let Some(env) = service.environment.as_deref().filter(|e| !e.is_empty()) {
        details.insert("environment".into(), json!(env));
    }
    details.insert("priority".into(), json!(service.priority.as_str()));
    if let Some(runbook) = service.runbook.as_deref().filter(|r| !r.trim().is_empty()) {
        details.insert("runbook".into(), json!(runbook));
    }
    if let Some(url) = &event.url {
        details.insert("url".into(), json!(url));
    }
    body["payload"] = json!({
        "summary": truncate(&event.summary, SUMMARY_MAX_CHARS),
        "source": SOURCE,
        "severity": severity(service.priority),
        "timestamp": event.at,
        "component": service.name,
        "group": service.team,
        "class": event.alert.kind.as_str(),
        "custom_details": details,
    });
    body["client"] = json!("Medic");
    if let Some(url) = event.url.as_deref().and_then(http_url) {
        body["client_url"] = json!(url);
    }
    if let Some(runbook) = service.runbook.as_deref().and_then(http_url) {
        body["links"] = json!([{"href": runbook, "text": "Runbook"}]);
    }
    body
}

fn http_url(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.into())
}

/// What PagerDuty's answer means: 202 accepted (`external_ref` = the dedup key it filed the
/// event under), 429/408/5xx try again, any other 4xx is a request that will never be accepted
/// (a bad routing key, an invalid event).
pub fn outcome(status: u16, body: &[u8], sent_dedup_key: &str) -> Outcome {
    let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let key = answer
            .get("dedup_key")
            .and_then(Value::as_str)
            .unwrap_or(sent_dedup_key);
        return Outcome::Delivered {
            status,
            external_ref: Some(key.to_owned()),
        };
    }
    let mut error = format!("PagerDuty answered HTTP {status}");
    if let Some(message) = answer.get("message").and_then(Value::as_str) {
        error.push_str(&format!(": {}", truncate(message, 200)));
    }
    if let Some(errors) = answer.get("errors").and_then(Value::as_array) {
        let listed: Vec<&str> = errors.iter().filter_map(Value::as_str).take(5).collect();
        if !listed.is_empty() {
            error.push_str(&format!(" ({})", truncate(&listed.join("; "), 300)));
        }
    }
    if status == 429 || status == 408 || status >= 500 {
        Outcome::Retry {
            status: Some(status),
            error,
        }
    } else {
        Outcome::Failed {
            status: Some(status),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample::sample_event;

    #[test]
    fn severities_follow_compat() {
        assert_eq!(severity(Priority::P1), "critical");
        assert_eq!(severity(Priority::P2), "error");
        assert_eq!(severity(Priority::P3), "warning");
        assert_eq!(severity(Priority::P4), "info");
        assert_eq!(severity(Priority::P5), "info");
    }

    #[test]
    fn a_trigger_carries_the_full_payload() {
        let event = sample_event(EventKind::Triggered);
        let body = event_body("R0UTINGKEY", &event);
        assert_eq!(body["routing_key"], "R0UTINGKEY");
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], event.alert.dedup_key);
        let p = &body["payload"];
        assert_eq!(p["summary"], event.summary);
        assert_eq!(p["source"], "medic");
        assert_eq!(p["severity"], "critical");
        assert_eq!(p["component"], "payments-nightly");
        assert_eq!(p["group"], "payments");
        assert_eq!(p["class"], "heartbeat_missing");
        assert_eq!(p["timestamp"], event.at.rfc3339());
        assert_eq!(p["custom_details"]["alert_id"], event.alert.id);
        assert_eq!(p["custom_details"]["environment"], "prod");
        assert_eq!(
            body["links"],
            json!([{"href": "https://wiki.example.com/runbooks/payments-nightly", "text": "Runbook"}])
        );
        assert_eq!(body["client_url"], event.url.clone().unwrap_or_default());
    }

    #[test]
    fn actions_follow_the_event() {
        let renotify = event_body("k", &sample_event(EventKind::Renotified));
        assert_eq!(renotify["event_action"], "trigger");
        for (kind, action) in [
            (EventKind::Acknowledged, "acknowledge"),
            (EventKind::Resolved, "resolve"),
        ] {
            let event = sample_event(kind);
            let body = event_body("k", &event);
            assert_eq!(
                body,
                json!({"routing_key": "k", "event_action": action, "dedup_key": event.alert.dedup_key})
            );
        }
    }

    #[test]
    fn no_link_without_a_runbook_url() {
        let mut event = sample_event(EventKind::Triggered);
        event.service.runbook = None;
        event.url = None;
        event.service.priority = Priority::P4;
        let body = event_body("k", &event);
        assert!(body.get("links").is_none());
        assert!(body.get("client_url").is_none());
        assert_eq!(body["payload"]["severity"], "info");
        event.service.runbook = Some("ask the payments team".into());
        let body = event_body("k", &event);
        assert!(body.get("links").is_none());
        assert_eq!(
            body["payload"]["custom_details"]["runbook"],
            "ask the payments team"
        );
    }

    #[test]
    fn answers_map_to_outcomes() {
        let ok = br#"{"status":"success","message":"Event processed","dedup_key":"medic-7"}"#;
        assert_eq!(
            outcome(202, ok, "sent"),
            Outcome::Delivered {
                status: 202,
                external_ref: Some("medic-7".into())
            }
        );
        let bad = br#"{"status":"invalid event","message":"Event object is invalid","errors":["'routing_key' is invalid"]}"#;
        match outcome(400, bad, "sent") {
            Outcome::Failed {
                status: Some(400),
                error,
            } => {
                assert!(error.contains("Event object is invalid"), "{error}");
                assert!(error.contains("routing_key"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome(429, b"", "s"),
            Outcome::Retry {
                status: Some(429),
                ..
            }
        ));
        assert!(matches!(
            outcome(502, b"<html>", "s"),
            Outcome::Retry {
                status: Some(502),
                ..
            }
        ));
        assert!(matches!(
            outcome(403, b"", "s"),
            Outcome::Failed {
                status: Some(403),
                ..
            }
        ));
    }
}
