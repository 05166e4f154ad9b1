//! Playbook notices: what Medic says about an execution, to Slack, webhooks and — when a
//! condition escalates — PagerDuty.
//!
//! [`PlaybookEvent`] is both the stored payload of a notice (the playbook outbox) and, unchanged,
//! the body of a webhook delivery (schema in `docs/playbooks.md`). Slack gets a Block Kit
//! message; the approval request carries the **Approve** / **Reject** buttons
//! (`approve_playbook` / `reject_playbook`, value = the execution id) that Slack posts to the
//! interactions route, and a decision later **updates that message in place** (`chat.update`)
//! so nobody presses a button that no longer means anything. PagerDuty only hears about
//! escalations (a `trigger` with its own dedup key per execution and step).
//!
//! Pure functions; [`super::Notifiers::deliver_notice`] does the requests. Every text field
//! was masked by the engine before the event was stored: no secret value reaches a receiver.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::event::Outcome;
use super::slack::{escape, link_target, truncate};
use crate::domain::Timestamp;

/// Version of the webhook body's schema (`schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// `action_id` of the Approve button (COMPAT.md).
pub const APPROVE_ACTION_ID: &str = "approve_playbook";
/// `action_id` of the Reject button (COMPAT.md).
pub const REJECT_ACTION_ID: &str = "reject_playbook";

const HEADER_MAX_CHARS: usize = 150;
const SECTION_MAX_CHARS: usize = 2900;

/// The kinds of notice, by their `event` name.
pub mod events {
    pub const STARTED: &str = "execution.started";
    pub const AWAITING_APPROVAL: &str = crate::store::AWAITING_APPROVAL_EVENT;
    pub const APPROVED: &str = "execution.approved";
    pub const REJECTED: &str = "execution.rejected";
    pub const COMPLETED: &str = "execution.completed";
    pub const FAILED: &str = "execution.failed";
    pub const CANCELLED: &str = "execution.cancelled";
    pub const EXPIRED: &str = "execution.expired";
    pub const ESCALATED: &str = "execution.escalated";
    pub const BREAKER_OPEN: &str = "circuit_breaker.opened";
    /// Every event name, in the order the docs list them.
    pub const ALL: [&str; 10] = [
        STARTED,
        AWAITING_APPROVAL,
        APPROVED,
        REJECTED,
        COMPLETED,
        FAILED,
        CANCELLED,
        EXPIRED,
        ESCALATED,
        BREAKER_OPEN,
    ];
}

/// The execution a notice is about, as it was when the notice was queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRef {
    pub id: i64,
    pub status: String,
    pub playbook_id: i64,
    pub playbook_name: String,
    pub playbook_version: i64,
    pub trigger: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The step the notice is about (the failing or escalating step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why it failed or escalated (masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who decided (approve, reject, cancel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The service an execution concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionService {
    pub id: i64,
    /// The heartbeat name.
    pub name: String,
    pub service_name: String,
    pub team: String,
}

/// One notice: the outbox payload and the webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaybookEvent {
    pub schema_version: u32,
    /// Unique per notice; the same on every retry.
    pub event_id: String,
    pub event: String,
    pub at: Timestamp,
    pub execution: ExecutionRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ExecutionService>,
    /// For `circuit_breaker.opened`: the scope (`playbook`, `service`, `global`) and the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<Value>,
    /// One line for humans.
    pub summary: String,
    /// The execution in Medic, when `MEDIC_PUBLIC_URL` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl PlaybookEvent {
    /// Whether this notice goes to `channel` (`slack`, `webhook`, `pagerduty`): PagerDuty pages
    /// only for escalations; Slack and webhooks hear everything.
    pub fn goes_to(&self, channel: &str) -> bool {
        channel != "pagerduty" || self.event == events::ESCALATED
    }

    /// Whether, in Slack, this notice updates the approval request (when one was sent to that
    /// channel) instead of posting anew: the decisions and endings of a pending approval.
    pub fn updates_approval(&self) -> bool {
        matches!(
            self.event.as_str(),
            events::APPROVED | events::REJECTED | events::EXPIRED | events::CANCELLED
        )
    }
}

fn headline(e: &PlaybookEvent) -> (&'static str, &'static str) {
    match e.event.as_str() {
        events::STARTED => (":arrow_forward:", "Playbook started"),
        events::AWAITING_APPROVAL => (":raised_hand:", "Playbook awaiting approval"),
        events::APPROVED => (":white_check_mark:", "Playbook approved"),
        events::REJECTED => (":no_entry:", "Playbook rejected"),
        events::COMPLETED => (":white_check_mark:", "Playbook completed"),
        events::FAILED => (":x:", "Playbook failed"),
        events::CANCELLED => (":heavy_multiplication_x:", "Playbook cancelled"),
        events::EXPIRED => (":hourglass:", "Playbook approval expired"),
        events::ESCALATED => (":rotating_light:", "Playbook escalated"),
        events::BREAKER_OPEN => (":octagonal_sign:", "Remediation circuit breaker open"),
        _ => (":information_source:", "Playbook"),
    }
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", truncate(&escape(value), 500))})
}

/// The Block Kit blocks and fallback text of a notice. `with_buttons`: the approval request
/// while it is still open.
fn blocks(e: &PlaybookEvent, with_buttons: bool) -> (Vec<Value>, String) {
    let (emoji, title) = headline(e);
    let x = &e.execution;
    let header = truncate(
        &format!("{emoji} {title}: {}", x.playbook_name),
        HEADER_MAX_CHARS,
    );
    let mut facts = vec![
        field("Execution", &format!("#{} ({})", x.id, x.status)),
        field(
            "Playbook",
            &format!("{} v{}", x.playbook_name, x.playbook_version),
        ),
        field("Trigger", &x.trigger),
    ];
    if let Some(s) = &e.service {
        let name = if s.service_name.is_empty() {
            s.name.clone()
        } else {
            format!("{} ({})", s.service_name, s.name)
        };
        facts.push(field("Service", &name));
        facts.push(field("Team", &s.team));
    }
    if let Some(step) = &x.step {
        facts.push(field("Step", step));
    }
    if let Some(by) = &x.decided_by {
        facts.push(field("Decided by", by));
    } else if let Some(by) = &x.requested_by {
        facts.push(field("Requested by", by));
    }
    let mut out = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&escape(&e.summary), SECTION_MAX_CHARS)},
            "fields": facts,
        }),
    ];
    let mut context = e.at.rfc3339();
    if let Some(url) = e.url.as_deref().and_then(link_target) {
        context.push_str(&format!(" · <{url}|View in Medic>"));
    }
    out.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    if with_buttons {
        out.push(json!({
            "type": "actions",
            "block_id": format!("execution_{}", x.id),
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION_ID,
                    "text": {"type": "plain_text", "text": "Approve", "emoji": false},
                    "style": "primary",
                    "value": x.id.to_string(),
                },
                {
                    "type": "button",
                    "action_id": REJECT_ACTION_ID,
                    "text": {"type": "plain_text", "text": "Reject", "emoji": false},
                    "style": "danger",
                    "value": x.id.to_string(),
                },
            ],
        }));
    }
    let text = escape(&format!("{title}: {}", e.summary));
    (out, text)
}

/// The `chat.postMessage` body for a notice in `channel`.
pub fn slack_message(channel: &str, e: &PlaybookEvent) -> Value {
    let (blocks, text) = blocks(e, e.event == events::AWAITING_APPROVAL);
    json!({
        "channel": channel,
        "text": text,
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// The `chat.update` body that replaces the approval request (`reference`, as
/// [`slack_reference`] made it) with the decision: no buttons any more.
pub fn slack_update(reference: &str, e: &PlaybookEvent) -> Option<Value> {
    let (channel, ts) = reference.split_once(' ')?;
    let (blocks, text) = blocks(e, false);
    Some(json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}))
}

/// What Slack's answer to `chat.postMessage` / `chat.update` means; a delivered message's
/// reference is `"<channel id> <ts>"` (what `chat.update` needs).
pub fn slack_outcome(status: u16, body: &[u8]) -> Outcome {
    match super::slack::outcome(status, body) {
        Outcome::Delivered { status, .. } => {
            let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let reference = match (answer["channel"].as_str(), answer["ts"].as_str()) {
                (Some(c), Some(t)) => Some(format!("{c} {t}")),
                _ => None,
            };
            Outcome::Delivered {
                status,
                external_ref: reference,
            }
        }
        other => other,
    }
}

/// The PagerDuty dedup key of an escalation: one incident per execution and step.
pub fn escalation_dedup_key(e: &PlaybookEvent) -> String {
    format!(
        "medic-execution-{}-{}",
        e.execution.id,
        e.execution.step.as_deref().unwrap_or("execution")
    )
}

/// The Events API body of an escalation (a `trigger`, severity `critical`).
pub fn pagerduty_body(routing_key: &str, e: &PlaybookEvent) -> Value {
    let x = &e.execution;
    let mut details = Map::new();
    details.insert("event".into(), json!(e.event));
    details.insert("event_id".into(), json!(e.event_id));
    details.insert("execution_id".into(), json!(x.id));
    details.insert("playbook".into(), json!(x.playbook_name));
    details.insert("playbook_version".into(), json!(x.playbook_version));
    details.insert("trigger".into(), json!(x.trigger));
    if let Some(step) = &x.step {
        details.insert("step".into(), json!(step));
    }
    if let Some(err) = &x.error {
        details.insert("error".into(), json!(err));
    }
    if let Some(a) = x.alert_id {
        details.insert("alert_id".into(), json!(a));
    }
    if let Some(url) = &e.url {
        details.insert("url".into(), json!(url));
    }
    let (component, group) = e.service.as_ref().map_or_else(
        || (x.playbook_name.clone(), String::new()),
        |s| (s.name.clone(), s.team.clone()),
    );
    if let Some(s) = &e.service {
        details.insert("service_id".into(), json!(s.id));
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": escalation_dedup_key(e),
        "payload": {
            "summary": truncate(&e.summary, 1024),
            "source": super::pagerduty::SOURCE,
            "severity": "critical",
            "timestamp": e.at,
            "component": component,
            "group": group,
            "class": "playbook_escalation",
            "custom_details": details,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> PlaybookEvent {
        PlaybookEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "e-1".into(),
            event: kind.into(),
            at: Timestamp::from_millis(1_700_000_000_000),
            execution: ExecutionRef {
                id: 42,
                status: "pending_approval".into(),
                playbook_id: 7,
                playbook_name: "restart-api".into(),
                playbook_version: 3,
                trigger: "manual".into(),
                alert_id: None,
                requested_by: Some("key:1".into()),
                step: None,
                error: None,
                decided_by: None,
                reason: None,
            },
            service: Some(ExecutionService {
                id: 5,
                name: "api-hb".into(),
                service_name: "API".into(),
                team: "core".into(),
            }),
            breaker: None,
            summary: "restart-api <b> for API".into(),
            url: None,
        }
    }

    #[test]
    fn the_approval_request_has_both_buttons_with_the_execution_id() {
        let m = slack_message("#ops", &event(events::AWAITING_APPROVAL));
        let actions = m["blocks"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
            .cloned()
            .unwrap_or(Value::Null);
        let ids: Vec<_> = actions["elements"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|b| (b["action_id"].clone(), b["value"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            ids,
            [
                (json!("approve_playbook"), json!("42")),
                (json!("reject_playbook"), json!("42"))
            ]
        );
        assert!(m["text"].as_str().is_some_and(|t| t.contains("&lt;b&gt;")));
        let started = slack_message("#ops", &event(events::STARTED));
        assert!(!started.to_string().contains("approve_playbook"));
    }

    #[test]
    fn an_update_names_the_message_and_drops_the_buttons() {
        let u = slack_update("C123 1700.0001", &event(events::APPROVED));
        let u = u.unwrap_or(Value::Null);
        assert_eq!(u["channel"], "C123");
        assert_eq!(u["ts"], "1700.0001");
        assert!(!u.to_string().contains("approve_playbook"));
        assert!(slack_update("no-space", &event(events::APPROVED)).is_none());
    }

    #[test]
    fn slack_answers_keep_channel_and_ts() {
        let o = slack_outcome(200, br#"{"ok":true,"channel":"C9","ts":"1.2"}"#);
        assert_eq!(
            o,
            Outcome::Delivered {
                status: 200,
                external_ref: Some("C9 1.2".into())
            }
        );
        assert!(matches!(
            slack_outcome(200, br#"{"ok":false,"error":"ratelimited"}"#),
            Outcome::Retry { .. }
        ));
    }

    #[test]
    fn only_escalations_page() {
        assert!(!event(events::FAILED).goes_to("pagerduty"));
        assert!(event(events::FAILED).goes_to("slack"));
        let mut e = event(events::ESCALATED);
        e.execution.step = Some("verify".into());
        assert!(e.goes_to("pagerduty"));
        let body = pagerduty_body("rk", &e);
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "medic-execution-42-verify");
        assert_eq!(body["payload"]["custom_details"]["step"], "verify");
    }
}
