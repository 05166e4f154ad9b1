//! Golden fixtures: one JSON file per message variant.
//!
//! Each sample below must encode to exactly its fixture's JSON, and the fixture must decode to
//! exactly the sample. A renamed field, a changed type or a new required field fails here; see
//! `docs/protocol.md` before changing a fixture. `MEDIC_BLESS_FIXTURES=1` rewrites the files
//! from the samples.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use medic_protocol::*;
use serde_json::Value;

use crate::{hello, run_request, ts};

fn agent_samples() -> Vec<AgentMessage> {
    vec![
        hello().into(),
        Heartbeat {
            seq: 42,
            sent_at: ts("2026-03-01T12:00:30.125Z"),
            uptime_seconds: 86_400,
            running_runs: 1,
            load_average: Some([0.5, 0.25, 0.125]),
            host: None,
        }
        .into(),
        RunAccepted {
            run_id: RunId::new("run-0192f1a4"),
            started_at: ts("2026-03-01T12:00:01.002Z"),
        }
        .into(),
        RunOutput {
            run_id: RunId::new("run-0192f1a4"),
            stream: OutputStream::Stderr,
            seq: 0,
            chunk: "Job for nginx.service restarted\n".into(),
        }
        .into(),
        RunResult {
            run_id: RunId::new("run-0192f1a4"),
            status: RunStatus::TimedOut,
            exit_code: None,
            signal: Some(9),
            stdout: "stopping nginx\n".into(),
            stderr: "waiting…".into(),
            stdout_truncated: false,
            stderr_truncated: true,
            started_at: ts("2026-03-01T12:00:01.002Z"),
            finished_at: ts("2026-03-01T12:02:01.010Z"),
            duration_ms: 120_008,
        }
        .into(),
        RunSkipped {
            run_id: RunId::new("run-0192f1a5"),
            script: "restart-nginx".into(),
            reason: SkipReason::HashMismatch,
            detail: "content hashes to 76c1a1b1…, allowlist pins 0b5e2f9c…".into(),
        }
        .into(),
        AgentMessage::Error(ErrorMessage {
            code: ErrorCode::Malformed,
            message: "malformed frame: unknown variant `cancel_run`".into(),
        }),
    ]
}

fn server_samples() -> Vec<ServerMessage> {
    vec![
        Welcome {
            protocol_version: 1,
            session_id: SessionId::new("sess-7c1d"),
            heartbeat_interval_ms: 30_000,
            server_time: ts("2026-03-01T12:00:00.500Z"),
            server_version: "0.1.0".into(),
        }
        .into(),
        run_request().into(),
        Ack {
            run_id: RunId::new("run-0192f1a4"),
        }
        .into(),
        Drain {
            reason: "shutdown".into(),
            reconnect_after_ms: Some(5_000),
        }
        .into(),
        Reconnect {
            after_ms: 30_000,
            reason: "too many agents connecting".into(),
        }
        .into(),
        ServerMessage::Error(ErrorMessage {
            code: ErrorCode::UnsupportedVersion,
            message: "agent speaks 2..=3, server speaks 1..=1".into(),
        }),
    ]
}

/// Index of each agent variant. No wildcard arm: a new variant does not compile until it is
/// listed here, and `every_variant_has_a_sample` then demands a sample and a fixture for it.
fn agent_variant(message: &AgentMessage) -> usize {
    match message {
        AgentMessage::Hello(_) => 0,
        AgentMessage::Heartbeat(_) => 1,
        AgentMessage::RunAccepted(_) => 2,
        AgentMessage::RunOutput(_) => 3,
        AgentMessage::RunResult(_) => 4,
        AgentMessage::RunSkipped(_) => 5,
        AgentMessage::Error(_) => 6,
    }
}
const AGENT_VARIANTS: usize = 7;

/// Index of each server variant; see [`agent_variant`].
fn server_variant(message: &ServerMessage) -> usize {
    match message {
        ServerMessage::Welcome(_) => 0,
        ServerMessage::RunRequest(_) => 1,
        ServerMessage::Ack(_) => 2,
        ServerMessage::Drain(_) => 3,
        ServerMessage::Reconnect(_) => 4,
        ServerMessage::Error(_) => 5,
    }
}
const SERVER_VARIANTS: usize = 6;

fn fixture_dir(direction: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(direction)
}

/// Compares one sample with its fixture, both ways.
#[track_caller]
fn check<M: Message + PartialEq + std::fmt::Debug>(direction: &str, kind: &str, sample: &M) {
    let path = fixture_dir(direction).join(format!("{kind}.json"));
    let encoded = serde_json::to_value(sample).expect("sample encodes");
    if std::env::var_os("MEDIC_BLESS_FIXTURES").is_some() {
        // From the sample rather than the `Value`, to keep field order (`"type"` first).
        let pretty = serde_json::to_string_pretty(sample).expect("pretty JSON");
        std::fs::write(&path, pretty + "\n").expect("write fixture");
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every variant needs a fixture)", path.display()));
    let fixture: Value = serde_json::from_str(&text).expect("fixture is JSON");

    assert_eq!(
        fixture.get("type").and_then(Value::as_str),
        Some(kind),
        "{}: \"type\" must match the file name",
        path.display()
    );
    assert_eq!(
        encoded,
        fixture,
        "{}: the sample no longer encodes to the fixture — this breaks peers",
        path.display()
    );
    let decoded: M = decode(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&decoded, sample, "{}: decodes differently", path.display());
    let again: Value = serde_json::from_str(&encode(&decoded).expect("encodes")).expect("JSON");
    assert_eq!(again, fixture, "{}: does not round-trip", path.display());
}

#[test]
fn agent_messages_match_their_fixtures() {
    for sample in agent_samples() {
        check("agent", sample.kind(), &sample);
    }
}

#[test]
fn server_messages_match_their_fixtures() {
    for sample in server_samples() {
        check("server", sample.kind(), &sample);
    }
}

#[test]
fn every_variant_has_a_sample() {
    let agent: BTreeSet<usize> = agent_samples().iter().map(agent_variant).collect();
    assert_eq!(agent, (0..AGENT_VARIANTS).collect());
    let server: BTreeSet<usize> = server_samples().iter().map(server_variant).collect();
    assert_eq!(server, (0..SERVER_VARIANTS).collect());
}

/// A fixture without a sample would be checked by nothing; a leftover file is a mistake.
#[test]
fn every_fixture_has_a_sample() {
    let kinds = |direction: &str| -> BTreeSet<String> {
        std::fs::read_dir(fixture_dir(direction))
            .expect("fixture directory")
            .map(|entry| {
                let name = entry.expect("entry").file_name();
                let name = name.to_str().expect("UTF-8 name");
                name.strip_suffix(".json")
                    .unwrap_or_else(|| panic!("stray file {name}"))
                    .to_owned()
            })
            .collect()
    };
    let agent: BTreeSet<String> = agent_samples()
        .iter()
        .map(|m| m.kind().to_owned())
        .collect();
    assert_eq!(kinds("agent"), agent);
    let server: BTreeSet<String> = server_samples()
        .iter()
        .map(|m| m.kind().to_owned())
        .collect();
    assert_eq!(kinds("server"), server);
}
