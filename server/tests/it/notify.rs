//! Notification delivery over real sockets: Slack, PagerDuty and webhooks against the
//! recording server, with every outcome the dispatcher has to tell apart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medic_server::domain::Priority;
use medic_server::notify::{
    AlertEvent, Destination, EventKind, Notifiers, NotifySettings, Outcome,
};
use medic_server::store::AlertState;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support_recorder::{Answer, Recorder};

const FIXTURES: [(&str, &str); 4] = [
    (
        "triggered",
        include_str!("../fixtures/webhook/triggered.json"),
    ),
    (
        "renotified",
        include_str!("../fixtures/webhook/renotified.json"),
    ),
    (
        "acknowledged",
        include_str!("../fixtures/webhook/acknowledged.json"),
    ),
    (
        "resolved",
        include_str!("../fixtures/webhook/resolved.json"),
    ),
];

/// The documented sample event of this kind (`server/tests/fixtures/webhook/`).
fn event(kind: EventKind) -> AlertEvent {
    let (_, text) = FIXTURES
        .iter()
        .find(|(name, _)| *name == kind.as_str())
        .expect("a fixture per kind");
    serde_json::from_str(text).expect("fixture parses")
}

const SHORT: Duration = Duration::from_millis(400);

fn notifiers(rec: &Recorder, tweak: impl FnOnce(&mut NotifySettings)) -> Notifiers {
    let mut settings = NotifySettings {
        slack_api_url: rec.url("/api"),
        slack_token: Some("xoxb-test-token".into()),
        pagerduty_events_url: rec.url("/v2/enqueue"),
        timeout: SHORT,
        ..NotifySettings::default()
    };
    tweak(&mut settings);
    Notifiers::new(settings).expect("clients build")
}

fn slack() -> Destination {
    Destination::Slack {
        channel: "C0123ALERTS".into(),
    }
}

fn pagerduty() -> Destination {
    Destination::Pagerduty {
        routing_key: "R0UTING0KEY0000000000000000000000".into(),
    }
}

#[track_caller]
fn assert_retry(outcome: &Outcome, status: Option<u16>) {
    match outcome {
        Outcome::Retry { status: s, error } => {
            assert_eq!(*s, status, "{error}");
            assert!(!error.is_empty());
        }
        other => panic!("expected Retry({status:?}), got {other:?}"),
    }
}

#[track_caller]
fn assert_failed(outcome: &Outcome, status: Option<u16>) -> String {
    match outcome {
        Outcome::Failed { status: s, error } => {
            assert_eq!(*s, status, "{error}");
            error.clone()
        }
        other => panic!("expected Failed({status:?}), got {other:?}"),
    }
}

/// A local port nobody listens on.
async fn closed_port_url(path: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}{path}")
}

// ---------------------------------------------------------------------------------------------
// Slack

#[tokio::test]
async fn slack_posts_block_kit_with_an_acknowledge_button() {
    let rec = Recorder::start().await;
    rec.answer(Answer::json(
        200,
        json!({"ok": true, "channel": "C0123ALERTS", "ts": "1764547200.000100"}),
    ));
    let n = notifiers(&rec, |_| {});
    let ev = event(EventKind::Triggered);
    let outcome = n.deliver(&slack(), &ev).await;
    assert_eq!(
        outcome,
        Outcome::Delivered {
            status: 200,
            external_ref: Some("1764547200.000100".into())
        }
    );
    let req = rec.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/api/chat.postMessage");
    assert_eq!(req.header("authorization"), Some("Bearer xoxb-test-token"));
    assert!(
        req.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    assert!(
        req.header("user-agent")
            .unwrap_or_default()
            .starts_with("medic/")
    );
    let body = req.json();
    assert_eq!(body["channel"], "C0123ALERTS");
    assert!(
        body["text"]
            .as_str()
            .unwrap_or_default()
            .contains(&ev.summary)
    );
    let blocks = body["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    let all = body["blocks"].to_string();
    for want in ["payments-nightly", "P1", "payments", "open", "Open runbook"] {
        assert!(all.contains(want), "{want} missing from {all}");
    }
    let actions: Vec<&Value> = blocks.iter().filter(|b| b["type"] == "actions").collect();
    assert_eq!(actions.len(), 1);
    let button = &actions[0]["elements"][0];
    assert_eq!(button["action_id"], "ack_alert");
    assert_eq!(button["value"], "42");
    assert_eq!(button["text"]["text"], "Acknowledge");
}

#[tokio::test]
async fn slack_messages_for_closed_alerts_have_no_button() {
    let rec = Recorder::start().await;
    rec.answer(Answer::json(200, json!({"ok": true, "ts": "1.2"})));
    let n = notifiers(&rec, |_| {});
    for kind in [EventKind::Acknowledged, EventKind::Resolved] {
        rec.clear();
        let outcome = n.deliver(&slack(), &event(kind)).await;
        assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
        let body = rec.only_request().json();
        let blocks = body["blocks"].as_array().expect("blocks");
        assert!(
            blocks.iter().all(|b| b["type"] != "actions"),
            "{kind:?}: {body}"
        );
    }
}

#[tokio::test]
async fn slack_answers_map_to_outcomes() {
    let rec = Recorder::start().await;
    let n = notifiers(&rec, |_| {});
    let ev = event(EventKind::Renotified);

    rec.push(Answer::json(
        200,
        json!({"ok": false, "error": "ratelimited"}),
    ));
    assert_retry(&n.deliver(&slack(), &ev).await, Some(200));

    rec.push(Answer::json(
        200,
        json!({"ok": false, "error": "channel_not_found"}),
    ));
    let error = assert_failed(&n.deliver(&slack(), &ev).await, Some(200));
    assert!(error.contains("channel_not_found"), "{error}");

    rec.push(Answer::json(
        200,
        json!({"ok": false, "error": "invalid_auth"}),
    ));
    assert_failed(&n.deliver(&slack(), &ev).await, Some(200));

    rec.push(Answer::status(429).header("retry-after", "30"));
    assert_retry(&n.deliver(&slack(), &ev).await, Some(429));

    rec.push(Answer::text(500, "oops"));
    assert_retry(&n.deliver(&slack(), &ev).await, Some(500));

    rec.push(Answer::status(404));
    assert_failed(&n.deliver(&slack(), &ev).await, Some(404));

    rec.push(Answer::json(200, json!({"ok": true, "ts": "9.9"})).after(SHORT * 3));
    let outcome = n.deliver(&slack(), &ev).await;
    assert_retry(&outcome, None);
    assert!(format!("{outcome:?}").contains("timed out"), "{outcome:?}");
    assert_eq!(rec.requests().len(), 7);
}

#[tokio::test]
async fn slack_without_a_token_fails_without_a_request() {
    let rec = Recorder::start().await;
    for token in [None, Some(String::new())] {
        let n = notifiers(&rec, |s| s.slack_token = token);
        let error = assert_failed(
            &n.deliver(&slack(), &event(EventKind::Triggered)).await,
            None,
        );
        assert_eq!(error, "Slack is not configured");
    }
    assert!(rec.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// PagerDuty

fn pd_accepted(dedup_key: &str) -> Answer {
    Answer::json(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
    )
}

#[tokio::test]
async fn pagerduty_trigger_carries_the_documented_fields() {
    let rec = Recorder::start().await;
    let ev = event(EventKind::Triggered);
    rec.answer(pd_accepted(&ev.alert.dedup_key));
    let n = notifiers(&rec, |_| {});
    let outcome = n.deliver(&pagerduty(), &ev).await;
    assert_eq!(
        outcome,
        Outcome::Delivered {
            status: 202,
            external_ref: Some(ev.alert.dedup_key.clone())
        }
    );
    let req = rec.only_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v2/enqueue");
    assert_eq!(req.header("authorization"), None);
    let body = req.json();
    assert_eq!(body["routing_key"], "R0UTING0KEY0000000000000000000000");
    assert_eq!(body["event_action"], "trigger");
    assert_eq!(body["dedup_key"], ev.alert.dedup_key);
    let p = &body["payload"];
    assert_eq!(p["summary"], ev.summary);
    assert_eq!(p["source"], "medic");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["component"], "payments-nightly");
    assert_eq!(p["group"], "payments");
    assert_eq!(p["class"], "heartbeat_missing");
    assert_eq!(p["custom_details"]["alert_id"], 42);
    assert_eq!(
        body["links"],
        json!([{"href": "https://wiki.example.com/runbooks/payments-nightly", "text": "Runbook"}])
    );
}

#[tokio::test]
async fn pagerduty_severity_follows_priority() {
    let rec = Recorder::start().await;
    rec.answer(pd_accepted("k"));
    let n = notifiers(&rec, |_| {});
    for (priority, severity) in [
        (Priority::P1, "critical"),
        (Priority::P2, "error"),
        (Priority::P3, "warning"),
        (Priority::P4, "info"),
        (Priority::P5, "info"),
    ] {
        rec.clear();
        let mut ev = event(EventKind::Triggered);
        ev.service.priority = priority;
        n.deliver(&pagerduty(), &ev).await;
        assert_eq!(
            rec.only_request().json()["payload"]["severity"],
            severity,
            "{priority:?}"
        );
    }
}

#[tokio::test]
async fn pagerduty_actions_follow_the_alert() {
    let rec = Recorder::start().await;
    rec.answer(pd_accepted("medic/17/heartbeat_missing/42"));
    let n = notifiers(&rec, |_| {});
    for (kind, action) in [
        (EventKind::Triggered, "trigger"),
        (EventKind::Renotified, "trigger"),
        (EventKind::Acknowledged, "acknowledge"),
        (EventKind::Resolved, "resolve"),
    ] {
        rec.clear();
        let ev = event(kind);
        let outcome = n.deliver(&pagerduty(), &ev).await;
        assert!(matches!(outcome, Outcome::Delivered { status: 202, .. }));
        let body = rec.only_request().json();
        assert_eq!(body["event_action"], action, "{kind:?}");
        // Every event of one alert carries the same key, so PagerDuty keeps one incident.
        assert_eq!(body["dedup_key"], ev.alert.dedup_key.as_str());
        assert_eq!(
            body["dedup_key"],
            event(EventKind::Triggered).alert.dedup_key.as_str()
        );
    }
}

#[tokio::test]
async fn pagerduty_answers_map_to_outcomes() {
    let rec = Recorder::start().await;
    let n = notifiers(&rec, |_| {});
    let ev = event(EventKind::Triggered);

    rec.push(Answer::json(
        400,
        json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"]}),
    ));
    let error = assert_failed(&n.deliver(&pagerduty(), &ev).await, Some(400));
    assert!(error.contains("routing_key"), "{error}");
    assert!(!error.contains("R0UTING0KEY"), "the key leaked: {error}");

    rec.push(Answer::json(
        429,
        json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly."}),
    ));
    assert_retry(&n.deliver(&pagerduty(), &ev).await, Some(429));

    rec.push(Answer::text(500, "<html>"));
    assert_retry(&n.deliver(&pagerduty(), &ev).await, Some(500));

    rec.push(Answer::text(503, ""));
    assert_retry(&n.deliver(&pagerduty(), &ev).await, Some(503));

    rec.push(Answer::status(403));
    assert_failed(&n.deliver(&pagerduty(), &ev).await, Some(403));

    rec.push(pd_accepted("k").after(SHORT * 3));
    assert_retry(&n.deliver(&pagerduty(), &ev).await, None);

    let down = closed_port_url("/v2/enqueue").await;
    let n = notifiers(&rec, |s| s.pagerduty_events_url = down);
    assert_retry(&n.deliver(&pagerduty(), &ev).await, None);

    let error = assert_failed(
        &n.deliver(
            &Destination::Pagerduty {
                routing_key: " ".into(),
            },
            &ev,
        )
        .await,
        None,
    );
    assert!(error.contains("not configured"), "{error}");
    assert_eq!(rec.requests().len(), 6);
}

#[tokio::test]
async fn slack_and_pagerduty_link_to_the_public_url_when_the_event_has_no_link() {
    let rec = Recorder::start().await;
    let n = notifiers(&rec, |s| {
        s.public_url = Some("https://medic.example.net".into());
    });
    let mut ev = event(EventKind::Triggered);
    ev.url = None;
    rec.push(Answer::json(200, json!({"ok": true, "ts": "1.2"})));
    n.deliver(&slack(), &ev).await;
    rec.push(pd_accepted("k"));
    n.deliver(&pagerduty(), &ev).await;
    let seen = rec.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[0].body_text().contains(&format!(
            "<https://medic.example.net/ui/alerts/{}|View in Medic>",
            ev.alert.id
        )),
        "{}",
        seen[0].body_text()
    );
    // The link lands on the alert's page.
    assert_eq!(
        seen[1].json()["client_url"],
        format!("https://medic.example.net/ui/alerts/{}", ev.alert.id)
    );
    // The event's own link wins.
    rec.clear();
    let ev = event(EventKind::Triggered);
    rec.push(pd_accepted("k"));
    n.deliver(&pagerduty(), &ev).await;
    assert_eq!(
        rec.only_request().json()["client_url"],
        "https://medic.example.com/ui/alerts/42"
    );
}

// ---------------------------------------------------------------------------------------------
// Webhooks

/// HMAC-SHA256 written out from RFC 2104, independent of the `hmac` crate the server uses.
fn reference_hmac_sha256(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = Sha256::new();
    inner.update(&ipad);
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(&opad);
    outer.update(inner);
    hex::encode(outer.finalize())
}

fn webhook(url: String) -> Destination {
    Destination::Webhook {
        url,
        secret: "whsec-test-0123456789".into(),
    }
}

fn private_ok(s: &mut NotifySettings) {
    s.allow_private_webhook_targets = true;
}

#[tokio::test]
async fn webhook_posts_the_event_signed() {
    let rec = Recorder::start().await;
    rec.answer(Answer::status(204));
    let n = notifiers(&rec, private_ok);
    for (kind, name) in [
        (EventKind::Triggered, "triggered"),
        (EventKind::Renotified, "renotified"),
        (EventKind::Acknowledged, "acknowledged"),
        (EventKind::Resolved, "resolved"),
    ] {
        rec.clear();
        let ev = event(kind);
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let outcome = n
            .deliver(&webhook(rec.url("/hooks/medic?team=payments")), &ev)
            .await;
        assert_eq!(
            outcome,
            Outcome::Delivered {
                status: 204,
                external_ref: None
            }
        );
        let req = rec.only_request();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/hooks/medic?team=payments");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.header("user-agent"),
            Some(concat!("medic/", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(req.header("x-medic-event"), Some(name));
        assert_eq!(req.header("x-medic-delivery"), Some(ev.event_id.as_str()));
        let ts: u64 = req
            .header("x-medic-timestamp")
            .and_then(|t| t.parse().ok())
            .expect("a numeric timestamp");
        assert!(ts >= before && ts <= before + 5, "{ts} vs {before}");
        // The signature verifies with an independent computation over "<timestamp>.<body>".
        let mut signed = format!("{ts}.").into_bytes();
        signed.extend_from_slice(&req.body);
        let want = format!(
            "sha256={}",
            reference_hmac_sha256(b"whsec-test-0123456789", &signed)
        );
        assert_eq!(req.header("x-medic-signature"), Some(want.as_str()));
        // The body is the event itself, as documented.
        let back: AlertEvent = serde_json::from_slice(&req.body).expect("body is an AlertEvent");
        assert_eq!(back, ev);
        assert_eq!(req.json()["event"], name);
    }
    // A different secret gives a different signature.
    rec.clear();
    let other = Destination::Webhook {
        url: rec.url("/hooks/medic"),
        secret: "another-secret".into(),
    };
    n.deliver(&other, &event(EventKind::Triggered)).await;
    let req = rec.only_request();
    let mut signed =
        format!("{}.", req.header("x-medic-timestamp").unwrap_or_default()).into_bytes();
    signed.extend_from_slice(&req.body);
    assert_eq!(
        req.header("x-medic-signature").map(str::to_owned),
        Some(format!(
            "sha256={}",
            reference_hmac_sha256(b"another-secret", &signed)
        ))
    );
}

#[tokio::test]
async fn webhook_to_loopback_is_refused_without_the_private_setting() {
    let rec = Recorder::start().await;
    let n = notifiers(&rec, |_| {});
    let port = rec.addr().port();
    for url in [
        rec.url("/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let error = assert_failed(
            &n.deliver(&webhook(url.clone()), &event(EventKind::Triggered))
                .await,
            None,
        );
        assert_eq!(error, "Invalid webhook URL", "{url}");
    }
    assert!(rec.requests().is_empty(), "the guard let a request out");

    // With the setting, the same loopback receiver is reached — by IP and by name, the name
    // being resolved once and pinned.
    let n = notifiers(&rec, private_ok);
    for url in [rec.url("/hook"), format!("http://localhost:{port}/hook")] {
        let outcome = n
            .deliver(&webhook(url.clone()), &event(EventKind::Triggered))
            .await;
        assert!(
            matches!(outcome, Outcome::Delivered { status: 200, .. }),
            "{url}: {outcome:?}"
        );
    }
    let seen = rec.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].header("host"),
        Some(format!("localhost:{port}").as_str())
    );

    // The setting never lifts the scheme check, nor the allowlist.
    let error = assert_failed(
        &n.deliver(
            &webhook("ftp://127.0.0.1/x".into()),
            &event(EventKind::Triggered),
        )
        .await,
        None,
    );
    assert_eq!(error, "Invalid webhook URL");
    let n = notifiers(&rec, |s| {
        s.allow_private_webhook_targets = true;
        s.allowed_webhook_hosts = vec!["hooks.example.com".into()];
    });
    let error = assert_failed(
        &n.deliver(&webhook(rec.url("/hook")), &event(EventKind::Triggered))
            .await,
        None,
    );
    assert_eq!(error, "Invalid webhook URL");
    assert_eq!(rec.requests().len(), 2);
}

#[tokio::test]
async fn webhook_statuses_map_to_outcomes() {
    let rec = Recorder::start().await;
    let n = notifiers(&rec, private_ok);
    let ev = event(EventKind::Resolved);
    let dest = webhook(rec.url("/hook"));
    for status in [200, 201, 202, 204] {
        rec.push(Answer::status(status));
        assert!(
            matches!(n.deliver(&dest, &ev).await, Outcome::Delivered { status: s, .. } if s == status),
            "{status}"
        );
    }
    for status in [408, 429, 500, 502, 503, 504] {
        rec.push(Answer::status(status));
        assert_retry(&n.deliver(&dest, &ev).await, Some(status));
    }
    for status in [400, 401, 403, 404, 410, 413, 422] {
        rec.push(Answer::status(status));
        assert_failed(&n.deliver(&dest, &ev).await, Some(status));
    }
    rec.push(Answer::status(200).after(SHORT * 3));
    let outcome = n.deliver(&dest, &ev).await;
    assert_retry(&outcome, None);
    assert!(format!("{outcome:?}").contains("timed out"), "{outcome:?}");

    let down = closed_port_url("/hook").await;
    assert_retry(&n.deliver(&webhook(down), &ev).await, None);
}

#[tokio::test]
async fn webhook_redirects_are_not_followed() {
    let rec = Recorder::start().await;
    let n = notifiers(&rec, private_ok);
    for status in [301, 302, 303, 307, 308] {
        rec.clear();
        rec.push(Answer::status(status).header("location", &rec.url("/elsewhere")));
        let error = assert_failed(
            &n.deliver(&webhook(rec.url("/hook")), &event(EventKind::Triggered))
                .await,
            Some(status),
        );
        assert!(error.contains("redirect"), "{error}");
        let seen = rec.wait_for(2, Duration::from_millis(200)).await;
        assert_eq!(seen.len(), 1, "{status}: the redirect was followed");
        assert_eq!(seen[0].path, "/hook");
    }
}

#[tokio::test]
async fn the_alert_state_in_the_body_matches_the_event() {
    // Guards the fixtures the other tests build on.
    assert_eq!(event(EventKind::Triggered).alert.state, AlertState::Open);
    assert_eq!(
        event(EventKind::Acknowledged).alert.state,
        AlertState::Acknowledged
    );
    assert_eq!(event(EventKind::Resolved).alert.state, AlertState::Resolved);
}

/// The Python verifier printed in `docs/alerts.md`, run against a real delivery: it must
/// accept it, and refuse it with a changed body or an old timestamp.
#[tokio::test]
async fn the_documented_python_verifier_accepts_real_deliveries() {
    let Ok(probe) = std::process::Command::new("python3")
        .arg("--version")
        .output()
    else {
        eprintln!("python3 is not installed; skipping the documented-verifier check");
        return;
    };
    assert!(probe.status.success());
    let doc = include_str!("../../../docs/alerts.md");
    let snippet = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/alerts.md has a Python snippet");

    let rec = Recorder::start().await;
    let n = notifiers(&rec, private_ok);
    let outcome = n
        .deliver(&webhook(rec.url("/hook")), &event(EventKind::Triggered))
        .await;
    assert!(matches!(outcome, Outcome::Delivered { .. }), "{outcome:?}");
    let req = rec.only_request();
    let dir = tempfile::tempdir().expect("temporary directory");
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, &req.body).expect("write the body");
    let script = format!(
        "{snippet}\n\
import sys\n\
body = open(sys.argv[1], 'rb').read()\n\
headers = {{'X-Medic-Timestamp': sys.argv[2], 'X-Medic-Signature': sys.argv[3]}}\n\
old = {{'X-Medic-Timestamp': str(int(sys.argv[2]) - 600), 'X-Medic-Signature': sys.argv[3]}}\n\
print(verify_medic_signature('whsec-test-0123456789', headers, body),\n\
      verify_medic_signature('whsec-test-0123456789', headers, body + b' '),\n\
      verify_medic_signature('wrong-secret', headers, body),\n\
      verify_medic_signature('whsec-test-0123456789', old, body))\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&body_path)
        .arg(req.header("x-medic-timestamp").unwrap_or_default())
        .arg(req.header("x-medic-signature").unwrap_or_default())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "True False False False"
    );
}

#[tokio::test]
async fn every_attempt_is_counted_by_channel_and_outcome() {
    let handle = medic_server::telemetry::metrics_handle();
    let rec = Recorder::start().await;
    let n = notifiers(&rec, private_ok);
    rec.push(Answer::status(200));
    n.deliver(&webhook(rec.url("/hook")), &event(EventKind::Triggered))
        .await;
    rec.push(Answer::json(
        200,
        json!({"ok": false, "error": "ratelimited"}),
    ));
    n.deliver(&slack(), &event(EventKind::Triggered)).await;
    rec.push(Answer::status(400));
    n.deliver(&pagerduty(), &event(EventKind::Triggered)).await;
    let text = handle.render();
    let counted = |channel: &str, outcome: &str| {
        text.lines().any(|l| {
            l.starts_with("medic_notification_attempts_total{")
                && l.contains(&format!("channel=\"{channel}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
        })
    };
    assert!(counted("webhook", "delivered"), "{text}");
    assert!(counted("slack", "retry"), "{text}");
    assert!(counted("pagerduty", "failed"), "{text}");
    assert!(
        text.contains("medic_notification_duration_seconds_bucket{channel=\"webhook\""),
        "{text}"
    );
}
