//! The one integration-test binary of `medic-protocol`.
//!
//! - `golden` — every message variant against its JSON fixture in `tests/fixtures/`.
//! - `compat` — what older and newer peers send: extra fields, missing optional fields,
//!   unknown types and codes.
//! - `validate` — the rules on names, parameters, labels and whole messages.
//! - `time` — timestamp formatting and parsing.
//! - `frame` — encode/decode and the frame size limit.

mod compat;
mod frame;
mod golden;
mod time;
mod validate;

use std::collections::BTreeMap;

use medic_protocol::*;

/// A timestamp from its RFC 3339 text; panics on bad text.
#[track_caller]
pub fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).unwrap_or_else(|| panic!("bad timestamp in test: {text}"))
}

/// A map from string pairs.
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A run request that passes validation.
pub fn run_request() -> RunRequest {
    RunRequest {
        run_id: RunId::new("run-0192f1a4"),
        script: "restart-nginx".into(),
        version: 3,
        interpreter: Interpreter::Bash,
        content: "#!/bin/bash\nset -eu\nsystemctl restart \"$SERVICE\"\n".into(),
        // SHA-256 of `content` above.
        sha256: "76c1a1b1649f0695964711cfbfd28fa73549b6b25702dc23f904041fc0c2e1f7".into(),
        approved: true,
        parameters: map(&[
            ("SERVICE", "nginx"),
            ("REASON", "it's \"down\"; $(id) `x` | y"),
        ]),
        timeout_seconds: 120,
        output_cap_bytes: Some(65_536),
        stream_output: true,
        expires_at: Some(ts("2026-03-01T12:05:00.000Z")),
    }
}

/// A hello that passes validation.
pub fn hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: MIN_PROTOCOL_VERSION,
        agent_id: AgentId::new("web-01.prod.example.com"),
        hostname: "web-01".into(),
        agent_version: "0.1.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        labels: map(&[("env", "prod"), ("role", "web")]),
        running: vec![RunId::new("run-0192f1a0")],
        host: None,
    }
}

/// Asserts that `result` is a validation error about `subject` with `problem`.
#[track_caller]
pub fn assert_invalid(
    result: Result<(), ValidationError>,
    subject: ValidationSubject,
    problem: ValidationProblem,
) {
    match result {
        Ok(()) => panic!("expected {subject:?} / {problem:?}, got Ok"),
        Err(e) => {
            assert_eq!((e.subject, &e.problem), (subject, &problem), "error: {e}");
        }
    }
}
