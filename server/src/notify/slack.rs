//! Slack: the `chat.postMessage` body for an alert event and what Slack's answer means.
//!
//! Pure functions; [`super::Notifiers`] does the request. The message has a plain-text
//! `text` (what notifications and old clients show) and Block Kit `blocks`: a header, the
//! summary, the facts (service, priority, team, state, runbook), a context line, and — while
//! the alert is open — an **Acknowledge** button (`action_id` [`ACK_ACTION_ID`], `value` the
//! alert id) that Slack posts to the interactions route.

use serde_json::{Value, json};

use super::event::{AlertEvent, EventKind, Outcome};

/// `action_id` of the Acknowledge button.
pub const ACK_ACTION_ID: &str = "ack_alert";

/// Slack's limit for a header block's text.
const HEADER_MAX_CHARS: usize = 150;
/// Slack's limit for a section's text (3000) with room to spare.
const SECTION_MAX_CHARS: usize = 2900;

/// Slack `error` codes that mean "try again later".
const TRANSIENT_ERRORS: [&str; 5] = [
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
];

/// The JSON body of `chat.postMessage` for `event` in `channel`.
pub fn message(channel: &str, event: &AlertEvent) -> Value {
    let service = &event.service;
    let title = truncate(
        &format!(
            "{} {}: {}",
            emoji(event.event),
            headline(event.event),
            service.name
        ),
        HEADER_MAX_CHARS,
    );
    let mut facts = vec![
        field("Service", &service_label(event)),
        field("Priority", &service.priority.as_str().to_ascii_uppercase()),
        field("Team", &service.team),
        field("State", &state_label(event)),
        field(
            "Alert",
            &format!("{} #{}", event.alert.kind.as_str(), event.alert.id),
        ),
    ];
    facts.push(json!({
        "type": "mrkdwn",
        "text": format!("*Runbook*\n{}", runbook_mrkdwn(service.runbook.as_deref())),
    }));
    let mut context = format!("Opened {}", event.alert.opened_at.rfc3339());
    if let Some(url) = event.url.as_deref().and_then(link_target) {
        context.push_str(&format!(" · <{url}|View in Medic>"));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": title, "emoji": true}}),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&escape(&event.summary), SECTION_MAX_CHARS)},
            "fields": facts,
        }),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}),
    ];
    if matches!(event.event, EventKind::Triggered | EventKind::Renotified) {
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("alert_{}", event.alert.id),
            "elements": [{
                "type": "button",
                "action_id": ACK_ACTION_ID,
                "text": {"type": "plain_text", "text": "Acknowledge", "emoji": false},
                "style": "primary",
                "value": event.alert.id.to_string(),
            }],
        }));
    }
    json!({
        "channel": channel,
        "text": fallback_text(event),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// The plain-text line shown in notifications and by clients without Block Kit.
pub fn fallback_text(event: &AlertEvent) -> String {
    escape(&format!(
        "[{}] {}: {}",
        event.service.priority.as_str().to_ascii_uppercase(),
        headline(event.event),
        event.summary
    ))
}

/// What Slack's answer to `chat.postMessage` means. `body` is the response body (Slack
/// answers 200 with `{"ok": false, "error": …}` for most errors).
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    if status == 429 || status == 408 || status >= 500 {
        return Outcome::Retry {
            status: Some(status),
            error: format!("Slack answered HTTP {status}"),
        };
    }
    if !(200..300).contains(&status) {
        return Outcome::Failed {
            status: Some(status),
            error: format!("Slack answered HTTP {status}"),
        };
    }
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Outcome::Retry {
            status: Some(status),
            error: "Slack answered with something that is not JSON".to_owned(),
        };
    };
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Outcome::Delivered {
            status,
            external_ref: answer.get("ts").and_then(Value::as_str).map(str::to_owned),
        };
    }
    let code = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error");
    let error = format!("Slack error: {}", truncate(code, 100));
    if TRANSIENT_ERRORS.contains(&code) {
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

fn headline(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Triggered => "Alert",
        EventKind::Renotified => "Still alerting",
        EventKind::Acknowledged => "Acknowledged",
        EventKind::Resolved => "Resolved",
    }
}

fn emoji(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Triggered | EventKind::Renotified => ":rotating_light:",
        EventKind::Acknowledged => ":eyes:",
        EventKind::Resolved => ":white_check_mark:",
    }
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", truncate(&escape(value), 1900))})
}

fn service_label(event: &AlertEvent) -> String {
    let s = &event.service;
    let mut label = s.name.clone();
    if !s.service_name.is_empty() && s.service_name != s.name {
        label.push_str(&format!(" ({})", s.service_name));
    }
    if let Some(env) = s.environment.as_deref().filter(|e| !e.is_empty()) {
        label.push_str(&format!(" · {env}"));
    }
    label
}

fn state_label(event: &AlertEvent) -> String {
    let state = event.alert.state.as_str();
    match event.alert.actor.as_deref() {
        Some(actor) if event.event != EventKind::Triggered => format!("{state} by {actor}"),
        _ => state.to_owned(),
    }
}

fn runbook_mrkdwn(runbook: Option<&str>) -> String {
    match runbook.map(str::trim).filter(|r| !r.is_empty()) {
        None => "none".to_owned(),
        Some(r) => match link_target(r) {
            Some(url) => format!("<{url}|Open runbook>"),
            None => escape(r),
        },
    }
}

/// `raw` as a URL safe inside Slack's `<url|text>` syntax, when it is an http(s) URL.
pub(crate) fn link_target(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    Some(
        url.as_str()
            .replace('|', "%7C")
            .replace('<', "%3C")
            .replace('>', "%3E"),
    )
}

/// Escapes the three characters Slack's mrkdwn treats as markup.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample::sample_event;

    fn blocks_of(kind: &str, v: &Value) -> Vec<Value> {
        v["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == kind)
            .cloned()
            .collect()
    }

    #[test]
    fn an_open_alert_gets_an_acknowledge_button() {
        for kind in [EventKind::Triggered, EventKind::Renotified] {
            let event = sample_event(kind);
            let m = message("C0123", &event);
            assert_eq!(m["channel"], "C0123");
            let actions = blocks_of("actions", &m);
            assert_eq!(actions.len(), 1, "{kind:?}");
            let button = &actions[0]["elements"][0];
            assert_eq!(button["type"], "button");
            assert_eq!(button["action_id"], ACK_ACTION_ID);
            assert_eq!(button["value"], event.alert.id.to_string());
        }
        for kind in [EventKind::Acknowledged, EventKind::Resolved] {
            let m = message("C0123", &sample_event(kind));
            assert!(blocks_of("actions", &m).is_empty(), "{kind:?}");
        }
    }

    #[test]
    fn the_message_says_what_service_priority_team_state_and_runbook() {
        let event = sample_event(EventKind::Triggered);
        let m = message("C0123", &event);
        let header = &blocks_of("header", &m)[0];
        assert_eq!(header["text"]["type"], "plain_text");
        assert!(
            header["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .contains("payments-nightly")
        );
        let section = &blocks_of("section", &m)[0];
        let facts: Vec<&str> = section["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["text"].as_str())
            .collect();
        let all = facts.join("\n");
        for want in [
            "*Service*\npayments-nightly (Payments nightly export) · prod",
            "*Priority*\nP1",
            "*Team*\npayments",
            "*State*\nopen",
            "<https://wiki.example.com/runbooks/payments-nightly|Open runbook>",
        ] {
            assert!(all.contains(want), "{want:?} not in {all}");
        }
        assert!(
            m["text"]
                .as_str()
                .unwrap_or_default()
                .starts_with("[P1] Alert: payments-nightly")
        );
        let context = blocks_of("context", &m)[0]["elements"][0]["text"].clone();
        assert!(
            context
                .as_str()
                .unwrap_or_default()
                .contains("|View in Medic>")
        );
    }

    #[test]
    fn user_text_cannot_inject_markup() {
        let mut event = sample_event(EventKind::Acknowledged);
        event.summary = "<!channel> & <https://evil.example|click>".into();
        event.service.runbook = Some("see <wiki>".into());
        event.alert.actor = Some("slack:U1".into());
        let m = message("C1", &event);
        let text = m.to_string();
        assert!(!text.contains("<!channel>"));
        assert!(text.contains("&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"));
        assert!(text.contains("see &lt;wiki&gt;"));
        assert!(text.contains("acknowledged by slack:U1"));
        assert_eq!(
            link_target("https://x.example/a|b<c>"),
            Some("https://x.example/a%7Cb%3Cc%3E".into())
        );
        assert_eq!(link_target("javascript:alert(1)"), None);
    }

    #[test]
    fn long_text_is_cut_to_slacks_limits() {
        let mut event = sample_event(EventKind::Triggered);
        event.service.name = "x".repeat(400);
        let m = message("C1", &event);
        let header = blocks_of("header", &m)[0]["text"]["text"].clone();
        assert_eq!(
            header.as_str().unwrap_or_default().chars().count(),
            HEADER_MAX_CHARS
        );
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(
            outcome(
                200,
                br#"{"ok":true,"channel":"C1","ts":"1700000000.000100"}"#
            ),
            Outcome::Delivered {
                status: 200,
                external_ref: Some("1700000000.000100".into())
            }
        );
        assert!(matches!(
            outcome(200, br#"{"ok":false,"error":"ratelimited"}"#),
            Outcome::Retry { status: Some(200), ref error } if error.contains("ratelimited")
        ));
        assert!(matches!(
            outcome(200, br#"{"ok":false,"error":"channel_not_found"}"#),
            Outcome::Failed { status: Some(200), ref error } if error.contains("channel_not_found")
        ));
        assert!(matches!(
            outcome(200, br#"{"ok":false,"error":"invalid_auth"}"#),
            Outcome::Failed { .. }
        ));
        assert!(matches!(outcome(200, b"<html>"), Outcome::Retry { .. }));
        assert!(matches!(
            outcome(429, b""),
            Outcome::Retry {
                status: Some(429),
                ..
            }
        ));
        assert!(matches!(
            outcome(503, b""),
            Outcome::Retry {
                status: Some(503),
                ..
            }
        ));
        assert!(matches!(
            outcome(404, b""),
            Outcome::Failed {
                status: Some(404),
                ..
            }
        ));
    }
}
