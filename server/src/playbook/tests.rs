//! Documents and plans: parsing, limits, strict keys, every problem at once, inputs, and the
//! worked examples of `docs/playbooks.md`.

use std::time::Duration;

use super::document::{self, AlertKind, Method, OnFailure};
use super::plan::{Approval, Body, Check, Require, StepKind, Target};
use super::vars::{ContextVar, Scope};
use super::*;

/// A catalog that knows a fixed set of scripts and secrets.
pub(super) struct Known {
    pub scripts: &'static [&'static str],
    pub secrets: &'static [&'static str],
    pub server_scripts: bool,
}

impl Catalog for Known {
    fn script_exists(&self, name: &str) -> bool {
        self.scripts.contains(&name)
    }
    fn secret_exists(&self, name: &str) -> bool {
        self.secrets.contains(&name)
    }
    fn server_scripts_enabled(&self) -> bool {
        self.server_scripts
    }
}

pub(super) const CATALOG: Known = Known {
    scripts: &["restart-systemd-unit", "flush-cache"],
    secrets: &["DEPLOY_TOKEN"],
    server_scripts: false,
};

#[track_caller]
pub(super) fn plan(text: &str) -> Plan {
    match validate(text, &CATALOG) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid playbook, got: {e}"),
    }
}

#[track_caller]
fn problems(text: &str) -> Vec<Problem> {
    match validate(text, &CATALOG) {
        Ok(_) => panic!("expected problems, the playbook validated"),
        Err(DocumentError::Invalid(p)) => p,
        Err(e) => panic!("expected problems, got {e}"),
    }
}

/// The one problem of `text`, which must name `step`, `field` and `line` and mention `needle`.
#[track_caller]
fn check_one(text: &str, step: Option<&str>, field: &str, line: Option<u32>, needle: &str) {
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    let p = &p[0];
    assert_eq!(p.step.as_deref(), step, "{p:#?}");
    assert_eq!(p.field, field, "{p:#?}");
    assert_eq!(p.line, line, "{p:#?}");
    assert!(p.message.contains(needle), "{needle:?} not in {p:#?}");
}

const FULL: &str = r#"name: everything
description: one of each
approval: timeout:20m
inputs:
  unit: {type: string, default: api.service}
  count: {type: integer, required: true}
  dry_run: {type: boolean, default: false}
triggers:
  - service: "api-*"
    team: platform
    kinds: [heartbeat_missing, agent_down]
    consecutive_failures: 3
    cooldown: 30m
circuit_breaker:
  max_per_hour: 2
steps:
  - name: notify
    type: webhook
    method: PUT
    url: https://hooks.example.com/${SERVICE_NAME}
    headers: {Authorization: "Bearer ${secrets.DEPLOY_TOKEN}"}
    body: {count: "${count}", nested: [x, "${unit}"]}
    success_codes: [200, 204]
    timeout: 10s
    idempotent: true
  - name: restart
    type: script
    script: restart-systemd-unit
    on: {labels: {role: api}}
    require: 2
    max_parallel: 1
    params: {UNIT: "${unit}", DRY_RUN: "${dry_run}", STATUS: "${steps.notify.http_status}"}
    timeout: 90s
    on_failure: continue
  - name: by-id
    type: script
    script: flush-cache
    on: {agent_ids: [web-1, web-2]}
    require: any
  - name: pause
    type: wait
    duration: 1h30m
  - name: back
    type: condition
    check: {heartbeat_received: {service: "${SERVICE_NAME}", min_count: 2, status: UP}}
    within: 10m
    every: 15s
    on_failure: escalate
  - name: up
    type: condition
    check: {service_up: {}}
  - name: resolved
    type: condition
    check: alert_resolved
  - name: http
    type: condition
    check: {http_ok: {url: "https://status.example.com/", headers: {X-Token: "${secrets.DEPLOY_TOKEN}"}, success_codes: [200]}}
  - name: restarted
    type: condition
    check: {step_status: {step: restart, status: completed}}
"#;

#[test]
fn a_full_document_becomes_a_typed_plan() {
    let p = plan(FULL);
    assert_eq!(p.name, "everything");
    assert_eq!(p.approval, Approval::Timeout(Duration::from_secs(1200)));
    assert_eq!(p.max_per_hour, Some(2));
    assert_eq!(p.sha256, plan::content_sha256(FULL));
    assert_eq!(p.sha256.len(), 64);
    assert_eq!(p.inputs.len(), 3);
    let t = &p.triggers[0];
    assert!(t.service.as_ref().unwrap().matches("API-eu"));
    assert_eq!(
        t.kinds,
        vec![AlertKind::HeartbeatMissing, AlertKind::AgentDown]
    );
    assert_eq!(
        (t.consecutive_failures, t.cooldown),
        (3, Some(Duration::from_secs(1800)))
    );
    let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "notify",
            "restart",
            "by-id",
            "pause",
            "back",
            "up",
            "resolved",
            "http",
            "restarted"
        ]
    );
    let StepKind::Webhook(w) = &p.steps[0].kind else {
        panic!()
    };
    assert_eq!(w.method, Method::Put);
    assert!(w.idempotent && w.is_success(204) && !w.is_success(201));
    assert_eq!(w.timeout, Duration::from_secs(10));
    let scope = Scope::new().context(ContextVar::ServiceName, "api").inputs(
        [
            ("count".to_owned(), "3".to_owned()),
            ("unit".to_owned(), "u".to_owned()),
        ]
        .into(),
    );
    assert_eq!(
        w.url.render(&scope).unwrap(),
        "https://hooks.example.com/api"
    );
    let Some(Body::Json(_)) = &w.body else {
        panic!()
    };
    assert_eq!(
        w.body.as_ref().unwrap().render(&scope).unwrap(),
        r#"{"count":"3","nested":["x","u"]}"#
    );
    let StepKind::Script(s) = &p.steps[1].kind else {
        panic!()
    };
    assert_eq!(
        s.target,
        Target::Labels([("role".into(), "api".into())].into())
    );
    assert_eq!((s.require, s.max_parallel), (Require::AtLeast(2), Some(1)));
    assert_eq!(s.timeout, Duration::from_secs(90));
    assert_eq!(p.steps[1].on_failure, OnFailure::Continue);
    let StepKind::Script(s) = &p.steps[2].kind else {
        panic!()
    };
    assert_eq!(
        s.target,
        Target::Agents(vec!["web-1".into(), "web-2".into()])
    );
    assert_eq!(s.require, Require::Any);
    let StepKind::Wait { duration } = p.steps[3].kind else {
        panic!()
    };
    assert_eq!(duration, Duration::from_secs(5400));
    let StepKind::Condition(c) = &p.steps[4].kind else {
        panic!()
    };
    assert_eq!(
        (c.within, c.every),
        (Duration::from_secs(600), Duration::from_secs(15))
    );
    assert!(matches!(
        c.check,
        Check::HeartbeatReceived { min_count: 2, .. }
    ));
    assert_eq!(p.steps[4].on_failure, OnFailure::Escalate);
    let StepKind::Condition(c) = &p.steps[6].kind else {
        panic!()
    };
    assert!(matches!(c.check, Check::AlertResolved));
    let StepKind::Condition(c) = &p.steps[8].kind else {
        panic!()
    };
    assert!(matches!(c.check, Check::StepStatus { index: 1, .. }));
}

#[test]
fn json_is_read_like_yaml() {
    let json = r#"{
	"name": "from-json",
	"approval": "required",
	"steps": [
		{"name": "w", "type": "wait", "duration": "5m"},
		{"name": "s", "type": "script", "script": "flush-cache", "on": {"agent_ids": ["a1"]}}
	]
}"#;
    let p = plan(json);
    assert_eq!(p.approval, Approval::Required);
    assert_eq!(p.steps.len(), 2);
    let bad = json.replace("\"duration\"", "\"durration\"");
    let p = problems(&bad);
    assert_eq!(p[0].step.as_deref(), Some("w"));
    assert!(p[0].message.contains("unknown field `durration`"), "{p:?}");
    assert_eq!(p[0].line, Some(5));
}

#[test]
fn a_typo_in_a_step_names_the_step_the_field_and_the_line() {
    let text = "name: x\nsteps:\n  - name: first\n    type: wait\n    duration: 1m\n  - name: call\n    type: webhook\n    url: https://example.com\n    timout: 5s\n";
    check_one(
        text,
        Some("call"),
        "timout",
        Some(9),
        "unknown field `timout`",
    );
}

#[test]
fn unknown_keys_are_refused_at_every_level() {
    let step = "steps:\n  - name: w\n    type: wait\n    duration: 1m\n";
    check_one(
        &format!("name: x\ndescripton: d\n{step}"),
        None,
        "descripton",
        Some(2),
        "unknown field",
    );
    check_one(
        &format!("name: x\ninputs:\n  a: {{requird: true}}\n{step}"),
        None,
        "requird",
        Some(3),
        "unknown field",
    );
    check_one(
        &format!("name: x\ntriggers:\n  - servce: a\n{step}"),
        None,
        "servce",
        Some(3),
        "unknown field",
    );
    check_one(
        &format!("name: x\ncircuit_breaker: {{max_per_hour: 1, per: 2}}\n{step}"),
        None,
        "per",
        Some(2),
        "unknown field",
    );
    let script = "name: x\nsteps:\n  - name: s\n    type: script\n    script: flush-cache\n    on: {agent_id: [a]}\n";
    check_one(script, Some("s"), "agent_id", Some(6), "unknown field");
    let check =
        "name: x\nsteps:\n  - name: c\n    type: condition\n    check: {service_up: {servce: a}}\n";
    check_one(check, Some("c"), "servce", Some(5), "unknown field");
    let kind =
        "name: x\nsteps:\n  - name: c\n    type: condition\n    check: {heartbeat_gone: {}}\n";
    check_one(
        kind,
        Some("c"),
        "check",
        Some(5),
        "unknown variant `heartbeat_gone`",
    );
    let typ = "name: x\nsteps:\n  - name: t\n    type: wiat\n    duration: 1m\n";
    check_one(typ, Some("t"), "type", Some(4), "unknown variant `wiat`");
    // A wait has no on_failure: it cannot fail.
    let wait = "name: x\nsteps:\n  - name: w\n    type: wait\n    duration: 1m\n    on_failure: continue\n";
    check_one(
        wait,
        Some("w"),
        "on_failure",
        Some(6),
        "does not apply to a wait step",
    );
}

#[test]
fn shape_errors_are_clear() {
    let missing = "name: x\nsteps:\n  - name: w\n    type: wait\n";
    check_one(
        missing,
        Some("w"),
        "duration",
        Some(3),
        "a wait step needs `duration`",
    );
    let dup = "name: x\nname: y\nsteps: []\n";
    let p = problems(dup);
    assert!(p[0].message.contains("duplicate"), "{p:?}");
    // YAML 1.1 booleans are not booleans here.
    let yes = "name: x\nsteps:\n  - name: h\n    type: webhook\n    url: https://e.com\n    idempotent: yes\n";
    let p = problems(yes);
    assert_eq!(
        (p[0].step.as_deref(), p[0].line),
        (Some("h"), Some(6)),
        "{p:?}"
    );
    let not_yaml = "name: [unclosed\nsteps: []\n";
    assert!(!problems(not_yaml)[0].message.is_empty());
    let p = problems("");
    assert_eq!(p.len(), 1);
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"name: many
approval: sometimes
inputs:
  SERVICE_ID: {}
  n: {type: integer, default: "three"}
  r: {required: true, default: x}
triggers:
  - kinds: [job_failed]
  - service: "api-[x"
    cooldown: soon
steps:
  - name: a
    type: wait
    duration: 5
  - name: a
    type: script
    script: no-such-script
    on: server
    require: all
  - name: hook
    type: webhook
    url: ftp://example.com/${nope}
    headers: {"Bad Header": "${secrets.MISSING}"}
    success_codes: [42]
    timeout: 1h
  - name: cond
    type: condition
    check: {step_status: {step: later, status: completed}}
    every: 10m
    within: 1m
  - name: later
    type: webhook
    url: "https://e.com/${steps.hook.exit_code}/${steps.later.status}/${steps.a.status}"
  - name: bad name!
    type: script
    script: flush-cache
    on: {agent_ids: [a1], labels: {r: x}}
    params: {lower: "x", PATH: "y"}
    require: 5
"#;
    let p = problems(text);
    let has = |step: Option<&str>, field: &str, needle: &str| {
        assert!(
            p.iter().any(|x| x.step.as_deref() == step
                && x.field == field
                && x.message.contains(needle)),
            "no problem {step:?}/{field}/{needle:?} in {p:#?}"
        );
    };
    has(None, "approval", "none, required or timeout:<N>m");
    has(None, "inputs.SERVICE_ID", "reserved");
    has(None, "inputs.n.default", "expected a integer");
    has(None, "inputs.r", "required input cannot have a default");
    has(
        None,
        "triggers[0]",
        "at least one of service, heartbeat or team",
    );
    has(None, "triggers[1].service", "not a valid glob");
    has(None, "triggers[1].cooldown", "not a duration");
    has(Some("a"), "duration", "not a duration");
    has(Some("a"), "name", "already called `a`");
    has(Some("a"), "script", "no script called `no-such-script`");
    has(Some("a"), "on", "disabled");
    has(Some("a"), "on", "require and max_parallel apply to agents");
    has(Some("hook"), "url", "http:// or https://");
    has(Some("hook"), "url", "unknown variable ${nope}");
    has(
        Some("hook"),
        "headers.Bad Header",
        "not a valid header name",
    );
    has(
        Some("hook"),
        "headers.Bad Header",
        "no secret called `MISSING`",
    );
    has(
        Some("hook"),
        "success_codes",
        "42 is not an HTTP status code",
    );
    has(Some("hook"), "timeout", "out of range");
    has(
        Some("cond"),
        "check.step_status.step",
        "not an earlier step",
    );
    has(Some("cond"), "every", "not be longer than within");
    has(Some("later"), "url", "has no field `exit_code`");
    has(
        Some("later"),
        "url",
        "`later`, which is not an earlier step",
    );
    has(Some("bad name!"), "name", "not a step name");
    has(
        Some("bad name!"),
        "on",
        "exactly one of agent_ids or labels",
    );
    has(Some("bad name!"), "params.lower", "");
    has(Some("bad name!"), "params.PATH", "");
    has(
        Some("bad name!"),
        "require",
        "at most the number of targeted agents",
    );
    // Every problem inside a step has the line of its field.
    let hook_url = p
        .iter()
        .find(|x| x.field == "url" && x.step.as_deref() == Some("hook"))
        .unwrap();
    assert_eq!(hook_url.line, Some(22));
    let approval = p.iter().find(|x| x.field == "approval").unwrap();
    assert_eq!(approval.line, Some(2));
    // Sorted by line, so the list reads top to bottom.
    let lines: Vec<u32> = p.iter().filter_map(|x| x.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn secrets_only_where_they_can_travel_safely() {
    let text = "name: x\nsteps:\n  - name: c\n    type: condition\n    check: {service_up: {service: \"${secrets.DEPLOY_TOKEN}\"}}\n";
    check_one(
        text,
        Some("c"),
        "check.service_up.service",
        Some(5),
        "secrets cannot be used here",
    );
}

#[test]
fn server_scripts_need_the_operator_switch() {
    let text =
        "name: x\nsteps:\n  - name: s\n    type: script\n    script: flush-cache\n    on: server\n";
    check_one(text, Some("s"), "on", Some(6), "MEDIC_SERVER_SCRIPTS");
    let allowed = Known {
        server_scripts: true,
        ..CATALOG
    };
    let p = validate(text, &allowed).unwrap();
    let StepKind::Script(s) = &p.steps[0].kind else {
        panic!()
    };
    assert_eq!(s.target, Target::Server);
    let wrong = text.replace("on: server", "on: servers");
    let p = problems(&wrong);
    assert_eq!(
        (p[0].step.as_deref(), p[0].line),
        (Some("s"), Some(6)),
        "{p:?}"
    );
}

#[test]
fn approval_values() {
    assert_eq!(Approval::parse("none"), Ok(Approval::None));
    assert_eq!(Approval::parse("required"), Ok(Approval::Required));
    assert_eq!(
        Approval::parse("timeout:5m"),
        Ok(Approval::Timeout(Duration::from_secs(300)))
    );
    for bad in [
        "timeout:0m",
        "timeout:5",
        "timeout:5h",
        "timeout:m",
        "Required",
        "timeout:-1m",
        "timeout:99999999m",
    ] {
        assert!(Approval::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn oversized_documents_are_refused_before_parsing() {
    let text = "#".repeat(document::MAX_DOCUMENT_BYTES + 1);
    assert_eq!(
        validate(&text, &CATALOG).unwrap_err(),
        DocumentError::TooLarge {
            bytes: document::MAX_DOCUMENT_BYTES + 1,
            max: document::MAX_DOCUMENT_BYTES
        }
    );
}

#[test]
fn a_billion_laughs_document_is_refused() {
    // Nine levels of nine aliases: 9^9 (387 million) strings if expanded.
    let mut text = String::from(
        "name: lol\ninputs:\n  bomb:\n    default:\n      - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "      - &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    text.push_str("steps:\n  - {name: w, type: wait, duration: 1m}\n");
    let p = problems(&text);
    assert!(
        p[0].message.contains("alias") || p[0].message.contains("budget"),
        "{p:#?}"
    );
    // Said in words, not in the parser's counter names.
    assert!(
        p[0].message.contains("exceeds the parser's limits") && !p[0].message.contains('{'),
        "{p:#?}"
    );
    // Many small aliases are refused by count as well; the same document under the limit is
    // accepted.
    let aliases = |n: usize| {
        format!(
            "name: x\ninputs:\n  a:\n    default: &x [1]\n  b:\n    default: [{}]\nsteps:\n  - {{name: w, type: wait, duration: 1m}}\n",
            vec!["*x"; n].join(", ")
        )
    };
    let p = problems(&aliases(document::MAX_ALIASES + 1));
    assert!(
        p[0].message.contains("alias") || p[0].message.contains("budget"),
        "{p:#?}"
    );
    assert!(document::parse(&aliases(document::MAX_ALIASES)).is_ok());
}

#[test]
fn deep_nesting_is_refused() {
    let depth = document::MAX_DEPTH + 8;
    let text = format!(
        "name: deep\ninputs:\n  x:\n    default: {}1{}\nsteps: []\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let p = problems(&text);
    assert!(
        p[0].message.contains("depth") || p[0].message.contains("nest"),
        "{p:#?}"
    );
}

#[test]
fn inputs_are_checked_against_their_declared_types() {
    let p = plan(FULL);
    let given = serde_json::json!({"count": 3, "unit": "db.service"});
    let inputs = p.resolve_inputs(given.as_object().unwrap()).unwrap();
    assert_eq!(inputs["count"], "3");
    assert_eq!(inputs["unit"], "db.service");
    assert_eq!(inputs["dry_run"], "false");
    let bad = serde_json::json!({"count": "three", "unit": 5, "extra": true});
    let problems = p.resolve_inputs(bad.as_object().unwrap()).unwrap_err().0;
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["variables.extra", "variables.count", "variables.unit"]
    );
    let missing = p.resolve_inputs(&serde_json::Map::new()).unwrap_err().0;
    assert_eq!(missing.len(), 1);
    assert!(missing[0].message.contains("required"));
}

#[test]
fn the_content_hash_is_the_version_identity() {
    let a = plan(FULL);
    let b = plan(&FULL.replace("one of each", "one of every kind"));
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(a.sha256, plan(FULL).sha256);
}

#[test]
fn the_documented_examples_validate() {
    let examples = [
        include_str!("../../../docs/examples/playbooks/restart-api-unit.yaml"),
        include_str!("../../../docs/examples/playbooks/rollback-deploy.yaml"),
        include_str!("../../../docs/examples/playbooks/wait-then-verify.yaml"),
    ];
    let plans: Vec<Plan> = examples.iter().map(|e| plan(e)).collect();

    let restart = &plans[0];
    assert_eq!(restart.approval, Approval::Required);
    assert_eq!(restart.triggers[0].consecutive_failures, 3);
    let StepKind::Script(s) = &restart.steps[0].kind else {
        panic!()
    };
    assert_eq!(
        s.target,
        Target::Labels([("role".into(), "api".into())].into())
    );
    assert_eq!(restart.steps[1].on_failure, OnFailure::Escalate);

    let rollback = &plans[1];
    assert_eq!(
        rollback.approval,
        Approval::Timeout(Duration::from_secs(900))
    );
    let StepKind::Webhook(w) = &rollback.steps[0].kind else {
        panic!()
    };
    assert!(w.headers[0].1.source().contains("${secrets.DEPLOY_TOKEN}"));
    assert!(w.idempotent);

    let verify = &plans[2];
    assert!(
        matches!(verify.steps[0].kind, StepKind::Wait { duration } if duration == Duration::from_secs(600))
    );
    assert_eq!(verify.steps[1].on_failure, OnFailure::Escalate);

    // The page shows each file as it is (less its leading comment).
    let page = include_str!("../../../docs/playbooks.md");
    for example in examples {
        let body: String = example
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            page.contains(&body),
            "docs/playbooks.md is out of date for:\n{body}"
        );
    }

    // Without the secret they reference, an example is refused.
    let without = Known {
        secrets: &[],
        ..CATALOG
    };
    assert!(validate(examples[1], &without).is_err());
}

mod machine;
