//! Sample alert events for tests, and the checks that keep the published webhook schema
//! (`server/tests/fixtures/webhook/*.json` and `docs/alerts.md`) equal to what the serializer
//! really produces. Run with `MEDIC_UPDATE_FIXTURES=1` to rewrite the fixtures after an
//! intended, additive change to [`AlertEvent`]; then paste them into the document.

use super::event::{AlertEvent, AlertRef, EventKind, ServiceRef, WEBHOOK_SCHEMA_VERSION};
use crate::domain::{AlertKind, AlertState, Priority, Timestamp};

pub const ALL_KINDS: [EventKind; 4] = [
    EventKind::Triggered,
    EventKind::Renotified,
    EventKind::Acknowledged,
    EventKind::Resolved,
];

/// One event of alert 42 on `payments-nightly`, as the monitor would write it.
pub fn sample_event(kind: EventKind) -> AlertEvent {
    let opened = Timestamp::parse("2026-11-23T18:27:47.123+00:00")
        .unwrap_or_else(|| unreachable!("valid timestamp"));
    let (at, state, actor, event_id) = match kind {
        EventKind::Triggered => (
            opened,
            AlertState::Open,
            None,
            "0b6f3f4e-6a59-4f7e-9a43-1f6f1a0f2c01",
        ),
        EventKind::Renotified => (
            opened.plus_millis(30 * 60_000),
            AlertState::Open,
            None,
            "5d0c9a77-2f1b-4a0e-8c55-3b1e2d7f9a02",
        ),
        EventKind::Acknowledged => (
            opened.plus_millis(34 * 60_000 + 5_250),
            AlertState::Acknowledged,
            Some("slack:U024BE7LH".to_owned()),
            "9e4a1c3b-7d62-4f0a-b1e8-6c2d5f8a1b03",
        ),
        EventKind::Resolved => (
            opened.plus_millis(52 * 60_000 + 11_900),
            AlertState::Resolved,
            None,
            "c3f8e2d1-4b5a-4e69-a7d0-9f1b2c3d4e04",
        ),
    };
    // As the monitor words them (`monitor::event_for`).
    let silent = "payments-nightly: no heartbeat since 2026-11-23T18:17:47.123+00:00 \
                  (expected every 5m)";
    let summary = match kind {
        EventKind::Triggered | EventKind::Renotified => silent.to_owned(),
        EventKind::Acknowledged => format!("Acknowledged by slack:U024BE7LH: {silent}"),
        EventKind::Resolved => "Resolved: payments-nightly is beating again".to_owned(),
    };
    AlertEvent {
        schema_version: WEBHOOK_SCHEMA_VERSION,
        event_id: event_id.to_owned(),
        event: kind,
        at,
        alert: AlertRef {
            id: 42,
            kind: AlertKind::HeartbeatMissing,
            state,
            // `medic-<service id>-heartbeat_missing-<down since, ms>`, as the monitor makes it.
            dedup_key: format!("medic-17-heartbeat_missing-{}", opened.millis()),
            opened_at: opened,
            actor,
        },
        service: ServiceRef {
            id: 17,
            name: "payments-nightly".to_owned(),
            service_name: "Payments nightly export".to_owned(),
            environment: Some("prod".to_owned()),
            team: "payments".to_owned(),
            priority: Priority::P1,
            runbook: Some("https://wiki.example.com/runbooks/payments-nightly".to_owned()),
        },
        summary,
        url: Some("https://medic.example.com/ui/alerts/42".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::Value;

    use super::*;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn fixture_path(kind: EventKind) -> PathBuf {
        root()
            .join("tests/fixtures/webhook")
            .join(format!("{}.json", kind.as_str()))
    }

    fn rendered(kind: EventKind) -> String {
        let mut text = serde_json::to_string_pretty(&sample_event(kind))
            .unwrap_or_else(|e| panic!("serialize: {e}"));
        text.push('\n');
        text
    }

    #[test]
    fn fixtures_are_what_the_serializer_produces() {
        let update = std::env::var_os("MEDIC_UPDATE_FIXTURES").is_some();
        for kind in ALL_KINDS {
            let path = fixture_path(kind);
            let want = rendered(kind);
            if update {
                std::fs::write(&path, &want).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                have, want,
                "{path:?} is stale; rerun with MEDIC_UPDATE_FIXTURES=1 and update docs/alerts.md"
            );
            // And the fixture reads back into the same event (what old outbox rows need).
            let back: AlertEvent =
                serde_json::from_str(&have).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            assert_eq!(back, sample_event(kind));
        }
    }

    fn leaf_paths(prefix: &str, v: &Value, out: &mut Vec<String>) {
        if let Value::Object(map) = v {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if child.is_object() {
                    leaf_paths(&path, child, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    #[test]
    fn the_document_shows_every_fixture_and_describes_every_field() {
        let doc = std::fs::read_to_string(root().join("../docs/alerts.md"))
            .unwrap_or_else(|e| panic!("docs/alerts.md: {e}"));
        let mut fields = Vec::new();
        for kind in ALL_KINDS {
            let json = rendered(kind);
            assert!(
                doc.contains(&format!("```json\n{json}```")),
                "docs/alerts.md lacks the current {} example:\n{json}",
                kind.as_str()
            );
            let value: Value = serde_json::from_str(&json).unwrap_or(Value::Null);
            leaf_paths("", &value, &mut fields);
        }
        fields.sort();
        fields.dedup();
        for field in fields {
            assert!(
                doc.contains(&format!("| `{field}` |")),
                "docs/alerts.md has no table row for `{field}`"
            );
        }
    }
}
