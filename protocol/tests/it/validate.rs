//! The rules on names, parameters, labels and whole messages.

use medic_protocol::validate::*;
use medic_protocol::*;

use crate::{assert_invalid, hello, map, run_request};

use ValidationProblem::*;
use ValidationSubject as S;

#[test]
fn script_names() {
    for good in [
        "restart-nginx",
        "a",
        "disk_cleanup.v2",
        "9lives",
        &"x".repeat(128),
    ] {
        assert_eq!(validate_script_name(good), Ok(()), "{good:?}");
    }
    assert_invalid(validate_script_name(""), S::ScriptName, Empty);
    assert_invalid(
        validate_script_name(&"x".repeat(129)),
        S::ScriptName,
        TooLong { max: 128 },
    );
    for (bad, c) in [
        ("..", '.'),
        (".", '.'),
        (".hidden", '.'),
        ("../etc/passwd", '.'),
        ("/bin/sh", '/'),
        ("scripts/run", '/'),
        ("scripts\\run", '\\'),
        ("nul\0byte", '\0'),
        ("-rf", '-'),
        ("has space", ' '),
        ("semi;colon", ';'),
        ("dollar$", '$'),
        ("ünïcode", 'ü'),
    ] {
        assert_invalid(
            validate_script_name(bad),
            S::ScriptName,
            InvalidCharacter(c),
        );
    }
}

#[test]
fn parameter_names() {
    for good in ["SERVICE", "_PRIVATE", "RETRY_COUNT_2", "A", &"N".repeat(64)] {
        assert_eq!(validate_parameter_name(good), Ok(()), "{good:?}");
    }
    assert_invalid(validate_parameter_name(""), S::ParameterName, Empty);
    assert_invalid(
        validate_parameter_name(&"N".repeat(65)),
        S::ParameterName,
        TooLong { max: 64 },
    );
    for (bad, c) in [
        ("service", 's'),
        ("2FAST", '2'),
        ("WITH-DASH", '-'),
        ("WITH SPACE", ' '),
        ("A=B", '='),
        ("NUL\0", '\0'),
    ] {
        assert_invalid(
            validate_parameter_name(bad),
            S::ParameterName,
            InvalidCharacter(c),
        );
    }
    for reserved in [
        "PATH",
        "IFS",
        "BASH_ENV",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "DYLD_INSERT_LIBRARIES",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "BASH_FUNC_X%%",
        "MEDIC_RUN_ID",
    ] {
        let result = validate_parameter_name(reserved);
        assert!(result.is_err(), "{reserved:?} must be refused");
    }
    assert_invalid(
        validate_parameter_name("LD_PRELOAD"),
        S::ParameterName,
        Reserved,
    );
    assert_eq!(
        validate_parameter_name("PATHNAME"),
        Ok(()),
        "only exact names are reserved"
    );
}

#[test]
fn parameter_values_pass_through_verbatim() {
    for value in [
        "",
        "plain",
        "it's \"quoted\"",
        "$(rm -rf /); `reboot` && echo $HOME | tee >(cat) < /dev/null",
        "multi\nline\r\nvalue\twith tabs",
        "${secrets.TOKEN}",
        "ünïcødé ✓",
        &"v".repeat(MAX_PARAMETER_VALUE_BYTES),
    ] {
        assert_eq!(validate_parameter_value("P", value), Ok(()), "{value:?}");
    }
    assert_invalid(
        validate_parameter_value("P", "a\0b"),
        S::ParameterValue,
        InvalidCharacter('\0'),
    );
    assert_invalid(
        validate_parameter_value("P", &"v".repeat(MAX_PARAMETER_VALUE_BYTES + 1)),
        S::ParameterValue,
        TooLong {
            max: MAX_PARAMETER_VALUE_BYTES,
        },
    );
}

#[test]
fn errors_name_the_parameter_but_never_show_its_value() {
    let secret = "hunter2\0";
    let error = validate_parameters(&map(&[("TOKEN", secret)])).expect_err("NUL");
    assert_eq!(error.item.as_deref(), Some("TOKEN"));
    let text = error.to_string();
    assert!(text.contains("TOKEN"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn parameter_maps() {
    let many = (0..=MAX_PARAMETERS)
        .map(|i| (format!("P{i}"), String::new()))
        .collect();
    assert_invalid(
        validate_parameters(&many),
        S::Parameters,
        TooMany {
            max: MAX_PARAMETERS,
        },
    );
    assert_invalid(
        validate_parameters(&map(&[("OK", "1"), ("bad", "2")])),
        S::ParameterName,
        InvalidCharacter('b'),
    );
}

#[test]
fn labels() {
    assert_eq!(
        validate_labels(&map(&[
            ("env", "prod"),
            ("team/owner", "Platform Team"),
            ("empty", "")
        ])),
        Ok(())
    );
    assert_invalid(validate_label_key(""), S::LabelKey, Empty);
    assert_invalid(validate_label_key("-x"), S::LabelKey, InvalidCharacter('-'));
    assert_invalid(
        validate_label_key("a b"),
        S::LabelKey,
        InvalidCharacter(' '),
    );
    assert_invalid(
        validate_label_key(&"k".repeat(MAX_LABEL_KEY_LEN + 1)),
        S::LabelKey,
        TooLong {
            max: MAX_LABEL_KEY_LEN,
        },
    );
    assert_invalid(
        validate_label_value("k", "two\nlines"),
        S::LabelValue,
        InvalidCharacter('\n'),
    );
    let many = (0..=MAX_LABELS)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    assert_invalid(
        validate_labels(&many),
        S::Labels,
        TooMany { max: MAX_LABELS },
    );
}

#[test]
fn sha256_digests() {
    assert_eq!(validate_sha256_hex(&"ab12".repeat(16)), Ok(()));
    for bad in [
        String::new(),
        "ab".repeat(31),
        "ab".repeat(33),
        "AB12".repeat(16),
        "g".repeat(64),
    ] {
        assert_invalid(validate_sha256_hex(&bad), S::Sha256, NotSha256Hex);
    }
}

#[test]
fn agent_ids() {
    for good in [
        "web-01",
        "web-01.prod.example.com",
        "host_1",
        &"h".repeat(253),
    ] {
        assert_eq!(validate_agent_id(good), Ok(()), "{good:?}");
    }
    assert_invalid(validate_agent_id(""), S::AgentId, Empty);
    assert_invalid(validate_agent_id("a/b"), S::AgentId, InvalidCharacter('/'));
    assert_invalid(validate_agent_id(".."), S::AgentId, InvalidCharacter('.'));
}

#[test]
fn a_valid_run_request_passes() {
    assert_eq!(run_request().validate(), Ok(()));
}

#[test]
fn run_request_failures_map_to_skip_reasons() {
    type Case = (fn(&mut RunRequest), ValidationSubject, SkipReason);
    let cases: Vec<Case> = vec![
        (
            |r| r.script = "../x".into(),
            S::ScriptName,
            SkipReason::InvalidName,
        ),
        (
            |r| r.script = String::new(),
            S::ScriptName,
            SkipReason::InvalidName,
        ),
        (
            |r| r.parameters = map(&[("LD_PRELOAD", "/tmp/x.so")]),
            S::ParameterName,
            SkipReason::InvalidParameters,
        ),
        (
            |r| r.parameters = map(&[("X", "\0")]),
            S::ParameterValue,
            SkipReason::InvalidParameters,
        ),
        (
            |r| r.run_id = RunId::new(""),
            S::RunId,
            SkipReason::InvalidRequest,
        ),
        (
            |r| r.sha256 = "nope".into(),
            S::Sha256,
            SkipReason::InvalidRequest,
        ),
        (
            |r| r.content = "x".repeat(MAX_SCRIPT_BYTES + 1),
            S::ScriptContent,
            SkipReason::InvalidRequest,
        ),
        (
            |r| r.timeout_seconds = 0,
            S::Timeout,
            SkipReason::InvalidRequest,
        ),
        (
            |r| r.timeout_seconds = MAX_RUN_TIMEOUT_SECONDS + 1,
            S::Timeout,
            SkipReason::InvalidRequest,
        ),
        (
            |r| r.output_cap_bytes = Some(0),
            S::OutputCap,
            SkipReason::InvalidRequest,
        ),
        (
            |r| r.output_cap_bytes = Some(MAX_OUTPUT_BYTES + 1),
            S::OutputCap,
            SkipReason::InvalidRequest,
        ),
    ];
    for (break_it, subject, reason) in cases {
        let mut request = run_request();
        break_it(&mut request);
        let error = request.validate().expect_err("must fail");
        assert_eq!(error.subject, subject, "{error}");
        assert_eq!(error.skip_reason(), reason, "{error}");
    }
}

#[test]
fn validation_does_not_judge_policy() {
    // Approval, hashing and the allowlist are the agent's checks, made after validation.
    let mut request = run_request();
    request.approved = false;
    request.sha256 = "0".repeat(64);
    assert_eq!(request.validate(), Ok(()));
}

#[test]
fn a_valid_hello_passes() {
    assert_eq!(hello().validate(), Ok(()));
    let mut with_host = hello();
    with_host.host = Some(HostFacts {
        os_name: Some("Debian GNU/Linux".into()),
        os_version: Some(String::new()),
        cpus: Some(2),
        load_average: Some([0.0, 1.5, 64.0]),
        ..HostFacts::default()
    });
    assert_eq!(with_host.validate(), Ok(()));
}

#[test]
fn hello_failures() {
    type Case = (fn(&mut Hello), ValidationSubject);
    let cases: Vec<Case> = vec![
        (|h| h.min_protocol_version = 0, S::ProtocolVersion),
        (
            |h| {
                h.protocol_version = 1;
                h.min_protocol_version = 2;
            },
            S::ProtocolVersion,
        ),
        (|h| h.agent_id = AgentId::new("has space"), S::AgentId),
        (|h| h.hostname = String::new(), S::Hostname),
        (|h| h.agent_version = "1.0\n".into(), S::AgentVersion),
        (|h| h.os = "x".repeat(MAX_HELLO_TEXT_LEN + 1), S::Os),
        (|h| h.arch = String::new(), S::Arch),
        (|h| h.labels = map(&[("", "x")]), S::LabelKey),
        (
            |h| {
                h.running = (0..=MAX_CONCURRENT_RUNS)
                    .map(|i| RunId::new(i.to_string()))
                    .collect()
            },
            S::Running,
        ),
        (|h| h.running = vec![RunId::new("")], S::RunId),
        (
            |h| {
                h.host = Some(HostFacts {
                    kernel_version: Some("6.1\u{0}".into()),
                    ..HostFacts::default()
                })
            },
            S::HostFacts,
        ),
        (
            |h| {
                h.host = Some(HostFacts {
                    os_name: Some("x".repeat(MAX_HELLO_TEXT_LEN + 1)),
                    ..HostFacts::default()
                })
            },
            S::HostFacts,
        ),
        (
            |h| {
                h.host = Some(HostFacts {
                    load_average: Some([0.1, f64::NAN, 0.2]),
                    ..HostFacts::default()
                })
            },
            S::HostFacts,
        ),
    ];
    for (break_it, subject) in cases {
        let mut hello = hello();
        break_it(&mut hello);
        let error = hello.validate().expect_err("must fail");
        assert_eq!(error.subject, subject, "{error}");
    }
}

#[test]
fn error_messages_read_well() {
    let error = validate_script_name("../etc").expect_err("bad");
    assert_eq!(
        error.to_string(),
        r#"script name "../etc" contains '.', not allowed"#
    );
    let error = validate_sha256_hex("x").expect_err("bad");
    assert_eq!(error.to_string(), "sha256 is not 64 lowercase hex digits");
    let mut request = run_request();
    request.timeout_seconds = 0;
    let error = request.validate().expect_err("bad");
    assert_eq!(error.to_string(), "timeout_seconds is outside 1..=3600");
    let long = "y".repeat(1000) + "/";
    let error = validate_script_name(&long).expect_err("bad");
    assert_eq!(
        error.item.map(|s| s.len()),
        Some(64),
        "names are shortened in errors"
    );
}
