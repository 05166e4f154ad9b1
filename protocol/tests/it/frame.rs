//! One message per frame, and the frame size limit.

use medic_protocol::*;

use crate::{run_request, ts};

#[test]
fn decode_refuses_an_oversized_frame_before_parsing() {
    let frame = " ".repeat(MAX_FRAME_BYTES + 1);
    let error = decode::<AgentMessage>(&frame).expect_err("too large");
    assert!(matches!(error, FrameError::TooLarge { len } if len == MAX_FRAME_BYTES + 1));
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    assert_eq!(error.to_error_message().code, ErrorCode::FrameTooLarge);
}

#[test]
fn encode_refuses_to_produce_an_oversized_frame() {
    let mut request = run_request();
    request.content = "x".repeat(MAX_FRAME_BYTES);
    let error = encode(&ServerMessage::from(request)).expect_err("too large");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
}

#[test]
fn malformed_json_is_reported_as_malformed() {
    let error = decode::<ServerMessage>("{\"type\": \"ack\", ").expect_err("truncated");
    assert_eq!(error.code(), ErrorCode::Malformed);
    assert!(std::error::Error::source(&error).is_some());
    let reply = error.to_error_message();
    assert!(
        reply.message.starts_with("malformed frame: "),
        "{}",
        reply.message
    );
}

/// Control characters are the worst case of JSON escaping: one byte becomes six.
const WORST: char = '\u{1}';

#[test]
fn the_largest_valid_run_request_fits_in_a_frame() {
    let mut request = run_request();
    request.run_id = RunId::new("r".repeat(MAX_RUN_ID_LEN));
    request.content = WORST.to_string().repeat(MAX_SCRIPT_BYTES);
    request.parameters = (0..MAX_PARAMETERS)
        .map(|i| {
            let name = format!("P{i:0width$}", width = MAX_PARAMETER_NAME_LEN - 1);
            (name, WORST.to_string().repeat(MAX_PARAMETER_VALUE_BYTES))
        })
        .collect();
    request.output_cap_bytes = Some(MAX_OUTPUT_BYTES);
    assert_eq!(request.validate(), Ok(()));
    let text = encode(&ServerMessage::from(request)).expect("fits");
    assert!(text.len() <= MAX_FRAME_BYTES);
}

#[test]
fn the_largest_valid_run_result_fits_in_a_frame() {
    let full = WORST
        .to_string()
        .repeat(usize::try_from(MAX_OUTPUT_BYTES).expect("small"));
    let result = RunResult {
        run_id: RunId::new("r".repeat(MAX_RUN_ID_LEN)),
        status: RunStatus::Failed,
        exit_code: Some(1),
        signal: None,
        stdout: full.clone(),
        stderr: full,
        stdout_truncated: true,
        stderr_truncated: true,
        started_at: ts("2026-03-01T12:00:00.000Z"),
        finished_at: ts("2026-03-01T13:00:00.000Z"),
        duration_ms: 3_600_000,
    };
    let text = encode(&AgentMessage::from(result)).expect("fits");
    assert!(text.len() <= MAX_FRAME_BYTES);
}

#[test]
fn one_line_per_frame() {
    let text = encode(&ServerMessage::from(run_request())).expect("encodes");
    assert!(!text.contains('\n'), "compact JSON: {text}");
    let back: ServerMessage = decode(&text).expect("decodes");
    assert_eq!(back, ServerMessage::from(run_request()));
}
