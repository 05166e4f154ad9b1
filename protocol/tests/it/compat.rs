//! What peers of other versions send: the decoder must be lenient where the rules promise it
//! and strict everywhere else.

use medic_protocol::*;
use serde_json::json;

#[track_caller]
fn agent(value: serde_json::Value) -> Result<AgentMessage, FrameError> {
    decode(&value.to_string())
}

#[track_caller]
fn server(value: serde_json::Value) -> Result<ServerMessage, FrameError> {
    decode(&value.to_string())
}

#[track_caller]
fn malformed<T: std::fmt::Debug>(result: Result<T, FrameError>) -> String {
    let error = result.expect_err("must not decode");
    assert_eq!(error.code(), ErrorCode::Malformed, "{error}");
    error.to_string()
}

#[test]
fn unknown_fields_are_ignored() {
    let message = agent(json!({
        "type": "heartbeat",
        "seq": 1,
        "sent_at": "2026-03-01T12:00:00.000Z",
        "uptime_seconds": 5,
        "running_runs": 0,
        "memory_rss_bytes": 4_000_000,
        "nested": {"from": "a newer agent"},
    }))
    .expect("decodes");
    assert_eq!(message.kind(), "heartbeat");

    let message = server(json!({
        "type": "ack",
        "run_id": "r1",
        "stored_at": "2026-03-01T12:00:00.000Z",
    }))
    .expect("decodes");
    assert_eq!(
        message,
        ServerMessage::Ack(Ack {
            run_id: RunId::new("r1")
        })
    );
}

#[test]
fn a_minimal_hello_gets_defaults() {
    let message = agent(json!({
        "type": "hello",
        "protocol_version": 1,
        "min_protocol_version": 1,
        "agent_id": "db-02",
        "hostname": "db-02",
        "agent_version": "0.1.0",
        "os": "linux",
        "arch": "aarch64",
    }))
    .expect("decodes");
    let AgentMessage::Hello(hello) = message else {
        panic!("not a hello: {message:?}");
    };
    assert!(hello.labels.is_empty());
    assert!(hello.running.is_empty());
    assert_eq!(hello.validate(), Ok(()));
}

#[test]
fn a_minimal_run_request_gets_defaults() {
    let message = server(json!({
        "type": "run_request",
        "run_id": "r1",
        "script": "rotate-logs",
        "version": 1,
        "interpreter": "sh",
        "content": "logrotate -f /etc/logrotate.conf\n",
        "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
        "approved": true,
        "timeout_seconds": 60,
    }))
    .expect("decodes");
    let ServerMessage::RunRequest(request) = message else {
        panic!("not a run request: {message:?}");
    };
    assert!(request.parameters.is_empty());
    assert_eq!(request.output_cap_bytes, None);
    assert_eq!(request.effective_output_cap(), DEFAULT_OUTPUT_CAP_BYTES);
    assert!(!request.stream_output);
    assert_eq!(request.expires_at, None);
}

#[test]
fn other_optional_fields_default() {
    let AgentMessage::Heartbeat(beat) = agent(json!({
        "type": "heartbeat", "seq": 0, "sent_at": "2026-03-01T12:00:00Z",
        "uptime_seconds": 0, "running_runs": 0,
    }))
    .expect("decodes") else {
        panic!("not a heartbeat")
    };
    assert_eq!(beat.load_average, None);

    let AgentMessage::RunResult(result) = agent(json!({
        "type": "run_result", "run_id": "r1", "status": "succeeded", "exit_code": 0,
        "stdout": "", "stderr": "", "stdout_truncated": false, "stderr_truncated": false,
        "started_at": "2026-03-01T12:00:00.000Z", "finished_at": "2026-03-01T12:00:00.040Z",
        "duration_ms": 40,
    }))
    .expect("decodes") else {
        panic!("not a result")
    };
    assert_eq!(result.signal, None);
    assert_eq!(result.exit_code, Some(0));

    let drain = server(json!({"type": "drain", "reason": "deploy"})).expect("decodes");
    assert_eq!(
        drain,
        ServerMessage::Drain(Drain {
            reason: "deploy".into(),
            reconnect_after_ms: None
        })
    );
    let reconnect = server(json!({"type": "reconnect", "after_ms": 1000})).expect("decodes");
    assert_eq!(
        reconnect,
        ServerMessage::Reconnect(Reconnect {
            after_ms: 1000,
            reason: String::new()
        })
    );
}

#[test]
fn absent_optionals_are_not_written() {
    let text = encode(&ServerMessage::Drain(Drain {
        reason: "shutdown".into(),
        reconnect_after_ms: None,
    }))
    .expect("encodes");
    assert_eq!(text, r#"{"type":"drain","reason":"shutdown"}"#);
}

#[test]
fn an_unknown_type_is_a_clear_error() {
    let text = malformed(agent(json!({"type": "launch_missiles", "run_id": "r1"})));
    assert!(text.contains("unknown variant `launch_missiles`"), "{text}");
    assert!(text.contains("`hello`"), "lists the known types: {text}");

    let text = malformed(server(json!({"type": "cancel_run", "run_id": "r1"})));
    assert!(text.contains("unknown variant `cancel_run`"), "{text}");
}

#[test]
fn a_missing_type_is_a_clear_error() {
    let text = malformed(agent(json!({"seq": 1})));
    assert!(text.contains("missing field `type`"), "{text}");
}

#[test]
fn messages_of_the_other_direction_do_not_decode() {
    let welcome = encode(&ServerMessage::Ack(Ack {
        run_id: RunId::new("r1"),
    }))
    .expect("encodes");
    malformed(decode::<AgentMessage>(&welcome));
    malformed(agent(json!({"type": "welcome"})));
    malformed(server(json!({"type": "hello"})));
}

#[test]
fn missing_required_fields_and_wrong_types_fail() {
    let text = malformed(server(json!({"type": "ack"})));
    assert!(text.contains("missing field `run_id`"), "{text}");
    let text = malformed(server(json!({"type": "reconnect", "after_ms": "soon"})));
    assert!(text.contains("invalid type"), "{text}");
    malformed(agent(json!({
        "type": "heartbeat", "seq": -1, "sent_at": "2026-03-01T12:00:00Z",
        "uptime_seconds": 0, "running_runs": 0,
    })));
}

#[test]
fn a_bad_timestamp_fails_to_decode() {
    let text = malformed(agent(json!({
        "type": "run_accepted", "run_id": "r1", "started_at": "yesterday",
    })));
    assert!(text.contains("invalid RFC 3339 timestamp"), "{text}");
}

#[test]
fn unknown_reasons_and_codes_decode_as_unknown() {
    let AgentMessage::RunSkipped(skipped) = agent(json!({
        "type": "run_skipped", "run_id": "r1", "script": "x",
        "reason": "cosmic_rays", "detail": "bit flip",
    }))
    .expect("decodes") else {
        panic!("not a skip")
    };
    assert_eq!(skipped.reason, SkipReason::Unknown);

    let message = server(json!({"type": "error", "code": "quota_exceeded", "message": "m"}))
        .expect("decodes");
    assert_eq!(
        message,
        ServerMessage::Error(ErrorMessage {
            code: ErrorCode::Unknown,
            message: "m".into()
        })
    );
}

#[test]
fn closed_enums_reject_unknown_values() {
    let text = malformed(server(json!({
        "type": "run_request", "run_id": "r1", "script": "s", "version": 1,
        "interpreter": "ruby", "content": "", "approved": true, "timeout_seconds": 1,
        "sha256": "0000000000000000000000000000000000000000000000000000000000000000",
    })));
    assert!(text.contains("unknown variant `ruby`"), "{text}");
    malformed(agent(json!({
        "type": "run_output", "run_id": "r1", "stream": "stdin", "seq": 0, "chunk": "",
    })));
}

#[test]
fn version_negotiation_picks_the_newest_common_version() {
    let range = |min, max| VersionRange { min, max };
    assert_eq!(
        VersionRange::SUPPORTED.negotiate(VersionRange::SUPPORTED),
        Some(PROTOCOL_VERSION)
    );
    assert_eq!(range(1, 3).negotiate(range(2, 5)), Some(3));
    assert_eq!(range(2, 5).negotiate(range(1, 3)), Some(3));
    assert_eq!(range(1, 1).negotiate(range(1, 4)), Some(1));
    assert_eq!(range(1, 2).negotiate(range(3, 4)), None);
    assert_eq!(range(3, 4).negotiate(range(1, 2)), None);
    assert!(range(1, 3).contains(2));
    assert!(!range(1, 3).contains(4));

    let hello = crate::hello();
    assert_eq!(hello.version_range(), VersionRange::SUPPORTED);
}

/// `as_str` is each enum's name on the wire, and `ALL` lists no variant twice.
#[test]
fn reason_and_code_names_are_their_wire_names() {
    let wire = |v: serde_json::Value| v.as_str().expect("a string").to_owned();
    for reason in SkipReason::ALL {
        assert_eq!(wire(serde_json::to_value(reason).unwrap()), reason.as_str());
    }
    for code in ErrorCode::ALL {
        assert_eq!(wire(serde_json::to_value(code).unwrap()), code.as_str());
    }
    let distinct = |names: Vec<&str>| names.iter().collect::<std::collections::HashSet<_>>().len();
    assert_eq!(
        distinct(SkipReason::ALL.map(SkipReason::as_str).to_vec()),
        SkipReason::ALL.len()
    );
    assert_eq!(
        distinct(ErrorCode::ALL.map(ErrorCode::as_str).to_vec()),
        ErrorCode::ALL.len()
    );
}

/// Host facts came after version 1: an older agent's hello and heartbeat (none) still decode,
/// a newer one's carry them, and a hello that leaves them out encodes exactly as before.
#[test]
fn host_facts_are_optional_both_ways() {
    let old = agent(json!({
        "type": "hello",
        "protocol_version": 1,
        "min_protocol_version": 1,
        "agent_id": "db-02",
        "hostname": "db-02",
        "agent_version": "0.1.0",
        "os": "linux",
        "arch": "x86_64",
    }))
    .expect("decodes");
    let AgentMessage::Hello(old) = old else {
        panic!("not a hello: {old:?}")
    };
    assert_eq!(old.host, None);
    assert!(
        !encode(&AgentMessage::Hello(old))
            .unwrap()
            .contains("host\"")
    );

    let new = agent(json!({
        "type": "heartbeat",
        "seq": 3,
        "sent_at": "2026-03-01T12:00:00.000Z",
        "uptime_seconds": 300,
        "running_runs": 0,
        "host": {
            "os_name": "Debian GNU/Linux",
            "os_version": "12",
            "kernel_version": "6.1.0-18-amd64",
            "arch": "x86_64",
            "cpus": 4,
            "memory_total_bytes": 8_589_934_592u64,
            "memory_available_bytes": 4_294_967_296u64,
            "load_average": [0.5, 0.25, 0.125],
            "root_disk_total_bytes": 107_374_182_400u64,
            "root_disk_available_bytes": 53_687_091_200u64,
            "uptime_seconds": 86_400,
            "gpu": "from an even newer agent",
        },
    }))
    .expect("decodes");
    let AgentMessage::Heartbeat(beat) = new else {
        panic!("not a heartbeat: {new:?}")
    };
    let host = beat.host.expect("host facts");
    assert_eq!(host.os_name.as_deref(), Some("Debian GNU/Linux"));
    assert_eq!(host.cpus, Some(4));
    assert_eq!(host.root_disk_available_bytes, Some(53_687_091_200));
    assert_eq!(host.load_average, Some([0.5, 0.25, 0.125]));

    // A partial set (a platform that cannot tell the disk) is fine.
    let partial: HostFacts = serde_json::from_value(json!({"cpus": 2})).unwrap();
    assert_eq!(partial.cpus, Some(2));
    assert_eq!(partial.os_name, None);
}
