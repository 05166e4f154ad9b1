//! The v2 playbooks and secrets API against a real server, on SQLite and on PostgreSQL:
//! documents and versions, the dry run, scopes, every kind of bad input (refused with the step,
//! field and line, and nothing saved), write-only secrets that are never stored in plaintext,
//! and the start-up refusal without the right key.

use std::time::Duration;

use medic_server::config::Secret;
use medic_server::playbook::secrets::{Keyring, SecretsKey};
use medic_server::server;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::support::{TestApp, assert_error_contains, assert_ok, send};

/// Runs each check once per backend (`sqlite::<check>`, `postgres::<check>`); PostgreSQL when
/// configured, as the store conformance suite does.
macro_rules! both_backends {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

both_backends! {
    documents_versions_and_identical_put,
    list_filters_disable_and_restore,
    scopes_read_write_and_admin_for_secrets,
    bad_input_is_refused_with_step_field_and_line_and_nothing_is_saved,
    validate_is_a_dry_run_that_checks_scripts_secrets_and_inputs,
    secret_values_are_write_only_and_never_stored_in_plaintext,
    secrets_routes_need_the_key,
    a_server_holding_secrets_refuses_to_start_without_the_right_key,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A server on a fresh database of `backend` (keeping the PostgreSQL database alive).
struct Server {
    app: TestApp,
    _db: Option<crate::db::EmptyDb>,
}

impl std::ops::Deref for Server {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

fn key(byte: u8) -> SecretsKey {
    SecretsKey::from_bytes(&[byte; 32])
}

fn keyring(byte: u8) -> Keyring {
    Keyring::new(key(byte), vec![])
}

async fn spawn(backend: Backend, secrets: Option<Keyring>) -> Option<Server> {
    let mut builder = TestApp::builder().configure(move |c| c.secrets = secrets);
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            let db = crate::db::postgres_empty().await?;
            let url: Secret = db.url.parse().expect("url");
            builder = builder.configure(move |c| c.database_url = url);
            Some(db)
        }
    };
    Some(Server {
        app: builder.spawn().await,
        _db: db,
    })
}

const WAIT_DOC: &str = r#"name: pause-then-check
description: Waits.
steps:
  - name: pause
    type: wait
    duration: 30s
"#;

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// POSTs or PUTs `text` as `application/yaml`.
async fn send_yaml(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    text: &str,
) -> crate::support::Reply {
    send(
        app.with_key(key)
            .request(method, path)
            .header("content-type", "application/yaml")
            .body(text.to_owned()),
    )
    .await
}

async fn audit(app: &TestApp, action: &str) -> Vec<Value> {
    let r = app
        .admin()
        .get(&format!("/v2/audit-logs?action_type={action}"))
        .await;
    assert_ok(&r, 200)["entries"].as_array().unwrap().clone()
}

async fn documents_versions_and_identical_put(backend: Backend) {
    let Some(app) = spawn(backend, None).await else {
        return;
    };
    let writer = app.create_key(&["write"]).await;
    let reader = app.create_key(&["read"]).await;

    let r = send_yaml(&app, &writer, Method::POST, "/v2/playbooks", WAIT_DOC).await;
    let v1 = assert_ok(&r, 201);
    let id = v1["playbook_id"].as_i64().unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["name"], "pause-then-check");
    assert_eq!(v1["sha256"], sha(WAIT_DOC));
    assert_eq!(v1["enabled"], true);
    assert!(v1["author"].is_string());

    // The same text again, as JSON this time: no new version, and the answer says so.
    let r = app
        .with_key(&writer)
        .request(Method::PUT, &format!("/v2/playbooks/{id}"))
        .json(&json!({ "document": WAIT_DOC }));
    let r = send(r).await;
    let same = assert_ok(&r, 200);
    assert_eq!(same["version"], 1);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("no version was added"),
        "{}",
        r.body
    );

    // A JSON document is a YAML document too, stored as written.
    let json_doc = r#"{"name": "json-written", "steps": [{"name": "pause", "type": "wait", "duration": "5s"}]}"#;
    let r = send_yaml(&app, &writer, Method::POST, "/v2/playbooks", json_doc).await;
    let from_json = assert_ok(&r, 201);
    assert_eq!(from_json["name"], "json-written");
    assert_eq!(from_json["sha256"], sha(json_doc));

    let second = WAIT_DOC.replace("30s", "1m");
    let r = send_yaml(
        &app,
        &writer,
        Method::PUT,
        &format!("/v2/playbooks/{id}"),
        &second,
    )
    .await;
    let v2 = assert_ok(&r, 201);
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["sha256"], sha(&second));

    let r = app
        .with_key(&reader)
        .get(&format!("/v2/playbooks/{id}"))
        .await;
    let p = assert_ok(&r, 200);
    assert_eq!(p["playbook_id"], id);
    assert_eq!(p["current_version"], 2);
    assert_eq!(p["description"], "Waits.");
    assert_eq!(p["current"]["source"], second);
    assert_eq!(p["current"]["version"], 2);
    let versions: Vec<(i64, String)> = p["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(versions, vec![(1, sha(WAIT_DOC)), (2, sha(&second))]);

    // Version 1 is kept byte for byte.
    let r = app
        .with_key(&reader)
        .get(&format!("/v2/playbooks/{id}/versions/1"))
        .await;
    let old = assert_ok(&r, 200);
    assert_eq!(old["source"], WAIT_DOC);
    assert_eq!(old["sha256"], sha(WAIT_DOC));
    for (path, status) in [
        (format!("/v2/playbooks/{id}/versions/3"), 404),
        (format!("/v2/playbooks/{}", id + 100), 404),
        ("/v2/playbooks/abc".to_owned(), 400),
        (format!("/v2/playbooks/{id}/versions/0"), 400),
    ] {
        let r = app.with_key(&reader).get(&path).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.body);
    }
    let r = send_yaml(&app, &writer, Method::PUT, "/v2/playbooks/999", &second).await;
    assert_error_contains(&r, 404, "Playbook 999 was not found.");

    // Newest first: the JSON-written playbook, then the first one.
    let created = audit(&app, "playbook_created").await;
    assert_eq!(created.len(), 2);
    assert_eq!(created[1]["details"]["playbook_id"], id);
    assert_eq!(created[1]["details"]["sha256"], sha(WAIT_DOC));
    assert_eq!(created[1]["details"]["version"], 1);
    let added = audit(&app, "playbook_version_added").await;
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["details"]["version"], 2);
}

async fn list_filters_disable_and_restore(backend: Backend) {
    let Some(app) = spawn(backend, None).await else {
        return;
    };
    let writer = app.create_key(&["write"]).await;
    let mut ids = Vec::new();
    for name in ["api-restart", "db-failover", "API-flush"] {
        let r = send_yaml(
            &app,
            &writer,
            Method::POST,
            "/v2/playbooks",
            &WAIT_DOC.replace("pause-then-check", name),
        )
        .await;
        ids.push(assert_ok(&r, 201)["playbook_id"].as_i64().unwrap());
    }
    // The name is taken case-insensitively.
    let r = send_yaml(
        &app,
        &writer,
        Method::POST,
        "/v2/playbooks",
        &WAIT_DOC.replace("pause-then-check", "Api-Restart"),
    )
    .await;
    assert_error_contains(&r, 409, &format!("Playbook {} is already called", ids[0]));

    let r = app
        .with_key(&writer)
        .delete(&format!("/v2/playbooks/{}", ids[1]))
        .await;
    let disabled = assert_ok(&r, 200);
    assert_eq!(disabled["enabled"], false);
    assert!(disabled["disabled_at"].is_string());
    let r = app
        .with_key(&writer)
        .delete(&format!("/v2/playbooks/{}", ids[1]))
        .await;
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("already disabled")
    );
    assert_eq!(audit(&app, "playbook_disabled").await.len(), 1);

    let list = |q: &'static str| {
        let app = &app;
        async move {
            let r = app.admin().get(&format!("/v2/playbooks{q}")).await;
            let page = assert_ok(&r, 200);
            let names: Vec<String> = page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            (
                page["total_count"].as_i64().unwrap(),
                page["has_more"].as_bool().unwrap(),
                names,
            )
        }
    };
    assert_eq!(list("?name=api").await.2, vec!["api-restart", "API-flush"]);
    assert_eq!(list("?enabled=0").await.2, vec!["db-failover"]);
    assert_eq!(list("?enabled=1&name=FLUSH").await.2, vec!["API-flush"]);
    assert_eq!(
        list("?limit=2").await,
        (3, true, vec!["api-restart".into(), "db-failover".into()])
    );
    assert_eq!(
        list("?limit=2&offset=2").await,
        (3, false, vec!["API-flush".into()])
    );
    let r = app.admin().get("/v2/playbooks?enabled=maybe").await;
    assert_error_contains(&r, 400, "enabled");

    // A disabled playbook takes no version until restored.
    let r = send_yaml(
        &app,
        &writer,
        Method::PUT,
        &format!("/v2/playbooks/{}", ids[1]),
        &WAIT_DOC
            .replace("pause-then-check", "db-failover")
            .replace("30s", "2m"),
    )
    .await;
    assert_error_contains(&r, 409, "is disabled; restore it");
    let r = app
        .with_key(&writer)
        .post(&format!("/v2/playbooks/{}/restore", ids[1]))
        .await;
    assert_eq!(assert_ok(&r, 200)["enabled"], true);
    assert_eq!(audit(&app, "playbook_restored").await.len(), 1);
    assert_eq!(list("?enabled=0").await.0, 0);
    let r = app
        .with_key(&writer)
        .post("/v2/playbooks/4242/restore")
        .await;
    assert_error_contains(&r, 404, "was not found");
}

const SECRET_DOC: &str = r#"name: call-deploy
steps:
  - name: deploy
    type: webhook
    url: https://deploy.example.com/hooks/restart
    headers:
      Authorization: "Bearer ${secrets.DEPLOY_TOKEN}"
"#;

async fn scopes_read_write_and_admin_for_secrets(backend: Backend) {
    let Some(app) = spawn(backend, Some(keyring(1))).await else {
        return;
    };
    let reader = app.create_key(&["read"]).await;
    let writer = app.create_key(&["write"]).await;
    let r = send_yaml(&app, &reader, Method::POST, "/v2/playbooks", WAIT_DOC).await;
    assert_error_contains(&r, 403, "lacks the write scope");
    let r = send_yaml(
        &app,
        &reader,
        Method::POST,
        "/v2/playbooks/validate",
        WAIT_DOC,
    )
    .await;
    assert_error_contains(&r, 403, "lacks the write scope");
    let r = app.get("/v2/playbooks").await;
    assert_eq!(r.status.as_u16(), 401);

    // Secrets are an admin's: neither a read nor a write key may touch them.
    for k in [&reader, &writer] {
        let r = app.with_key(k).get("/v2/secrets").await;
        assert_error_contains(&r, 403, "lacks the admin scope");
        let r = send(
            app.with_key(k)
                .request(Method::PUT, "/v2/secrets/DEPLOY_TOKEN")
                .json(&json!({ "value": "x" })),
        )
        .await;
        assert_error_contains(&r, 403, "lacks the admin scope");
    }
    let r = send(
        app.admin()
            .request(Method::PUT, "/v2/secrets/DEPLOY_TOKEN")
            .json(&json!({ "value": "tok-123" })),
    )
    .await;
    assert_ok(&r, 201);
    // A document that uses a secret needs an admin key to be stored.
    let r = send_yaml(&app, &writer, Method::POST, "/v2/playbooks", SECRET_DOC).await;
    assert_error_contains(&r, 403, "uses secrets");
    let r = send_yaml(
        &app,
        app.admin_key(),
        Method::POST,
        "/v2/playbooks",
        SECRET_DOC,
    )
    .await;
    let id = assert_ok(&r, 201)["playbook_id"].as_i64().unwrap();
    // ... and so does each new version of it; a version without secrets needs only write.
    let r = send_yaml(
        &app,
        &writer,
        Method::PUT,
        &format!("/v2/playbooks/{id}"),
        &SECRET_DOC.replace("restart", "reload"),
    )
    .await;
    assert_error_contains(&r, 403, "uses secrets");
    let r = send_yaml(
        &app,
        &writer,
        Method::PUT,
        &format!("/v2/playbooks/{id}"),
        &WAIT_DOC.replace("pause-then-check", "call-deploy"),
    )
    .await;
    assert_ok(&r, 201);
    let r = app
        .with_key(&reader)
        .get(&format!("/v2/playbooks/{id}"))
        .await;
    assert_ok(&r, 200);
}

/// `(what, document, status, [(json pointer into problems[0], expected)], message fragment)`.
type Case = (
    &'static str,
    String,
    u16,
    Vec<(&'static str, Value)>,
    &'static str,
);

fn bad_documents() -> Vec<Case> {
    let step = |body: &str| {
        format!("name: bad\nsteps:\n  - name: first\n    type: wait\n    duration: 1m\n{body}")
    };
    let mut bomb = String::from(
        "name: lol\ninputs:\n  bomb:\n    default:\n      - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "      - &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str("steps:\n  - {name: w, type: wait, duration: 1m}\n");
    let big = format!(
        "name: big\ndescription: \"{}\"\nsteps:\n  - {{name: w, type: wait, duration: 1m}}\n",
        "x".repeat(300 * 1024)
    );
    vec![
        (
            "invalid YAML",
            "name: broken\nsteps: [\n  {name: a, type: wait\n".to_owned(),
            400,
            vec![],
            "not valid",
        ),
        (
            "unknown key in a step",
            step("  - name: restart\n    type: wait\n    timout: 5m\n    duration: 1m\n"),
            400,
            vec![
                ("/step", json!("restart")),
                ("/field", json!("timout")),
                ("/line", json!(8)),
            ],
            "timout",
        ),
        (
            "unknown top-level key",
            format!("{}approvl: required\n", step("")),
            400,
            vec![("/field", json!("approvl")), ("/line", json!(6))],
            "approvl",
        ),
        (
            "unknown step type",
            step("  - name: reboot\n    type: reboot\n"),
            400,
            vec![
                ("/step", json!("reboot")),
                ("/field", json!("type")),
                ("/line", json!(7)),
            ],
            "reboot",
        ),
        (
            "duplicate step names",
            step("  - name: first\n    type: wait\n    duration: 2m\n"),
            400,
            vec![
                ("/step", json!("first")),
                ("/field", json!("name")),
                ("/line", json!(6)),
            ],
            "already called `first`",
        ),
        (
            "unknown script",
            step(
                "  - name: restart\n    type: script\n    script: no-such-script\n    on: {agent_ids: [web-1]}\n",
            ),
            400,
            vec![
                ("/step", json!("restart")),
                ("/field", json!("script")),
                ("/line", json!(8)),
            ],
            "no script called `no-such-script`",
        ),
        (
            "unknown secret",
            step(
                "  - name: call\n    type: webhook\n    url: https://example.com/x\n    headers: {X-Token: \"${secrets.NOPE}\"}\n",
            ),
            400,
            vec![
                ("/step", json!("call")),
                ("/field", json!("headers.X-Token")),
                ("/line", json!(9)),
            ],
            "no secret called `NOPE`",
        ),
        (
            "unknown input",
            step("  - name: call\n    type: webhook\n    url: \"https://example.com/${unit}\"\n"),
            400,
            vec![
                ("/step", json!("call")),
                ("/field", json!("url")),
                ("/line", json!(8)),
            ],
            "unknown variable ${unit}",
        ),
        (
            "bare number as a duration",
            "name: bad\nsteps:\n  - name: first\n    type: wait\n    duration: 30\n".to_owned(),
            400,
            vec![
                ("/step", json!("first")),
                ("/field", json!("duration")),
                ("/line", json!(5)),
            ],
            "duration",
        ),
        (
            "bad duration unit",
            "name: bad\nsteps:\n  - name: first\n    type: wait\n    duration: 5x\n".to_owned(),
            400,
            vec![
                ("/step", json!("first")),
                ("/field", json!("duration")),
                ("/line", json!(5)),
            ],
            "`5x` is not a duration",
        ),
        (
            "bad approval",
            format!("approval: sometimes\n{}", step("")),
            400,
            vec![("/field", json!("approval")), ("/line", json!(1))],
            "`sometimes` is not an approval",
        ),
        (
            "bad glob",
            format!("{}triggers:\n  - service: \"api-[\"\n", step("")),
            400,
            vec![
                ("/field", json!("triggers[0].service")),
                ("/line", json!(7)),
            ],
            "is not a valid glob",
        ),
        (
            "script on the server",
            step("  - name: local\n    type: script\n    on: server\n    script: cleanup\n"),
            400,
            vec![
                ("/step", json!("local")),
                ("/field", json!("on")),
                ("/line", json!(8)),
            ],
            "MEDIC_SERVER_SCRIPTS",
        ),
        ("alias bomb", bomb, 400, vec![], "alias"),
        (
            "deep nesting",
            format!(
                "name: deep\ninputs:\n  x:\n    default: {}{}\nsteps:\n  - {{name: w, type: wait, duration: 1m}}\n",
                "[".repeat(40),
                "]".repeat(40)
            ),
            400,
            vec![],
            "nesting depth",
        ),
        (
            "oversized document",
            big,
            413,
            vec![],
            "more than the 262144 accepted",
        ),
    ]
}

async fn bad_input_is_refused_with_step_field_and_line_and_nothing_is_saved(backend: Backend) {
    let Some(app) = spawn(backend, Some(keyring(1))).await else {
        return;
    };
    let admin = app.admin_key();
    // A playbook to send new versions to.
    let r = send_yaml(&app, admin, Method::POST, "/v2/playbooks", WAIT_DOC).await;
    let id = assert_ok(&r, 201)["playbook_id"].as_i64().unwrap();
    for (what, text, status, expected, fragment) in bad_documents() {
        let started = std::time::Instant::now();
        for (method, path, as_json) in [
            (Method::POST, "/v2/playbooks".to_owned(), false),
            (Method::POST, "/v2/playbooks".to_owned(), true),
            (Method::PUT, format!("/v2/playbooks/{id}"), false),
        ] {
            let r = if as_json {
                send(
                    app.admin()
                        .request(method.clone(), &path)
                        .json(&json!({ "document": text })),
                )
                .await
            } else {
                send_yaml(&app, admin, method.clone(), &path, &text).await
            };
            assert_error_contains(&r, status, fragment);
            let body = r.json();
            let message = body["message"].as_str().unwrap();
            if status == 400 {
                let problems = body["problems"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{what}: {body}"));
                assert!(!problems.is_empty(), "{what}: {body}");
                let first = &problems[0];
                for (pointer, value) in &expected {
                    assert_eq!(
                        first.pointer(pointer),
                        Some(value),
                        "{what} {pointer}: {body}"
                    );
                }
                if let Some(step) = first["step"].as_str() {
                    assert!(
                        message.contains(&format!("step `{step}`")),
                        "{what}: {message}"
                    );
                }
                if let Some(line) = first["line"].as_u64() {
                    assert!(
                        message.contains(&format!("line {line}")),
                        "{what}: {message}"
                    );
                }
            }
        }
        // Refused quickly, bombs and oversized documents included.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what} took {:?}",
            started.elapsed()
        );
    }
    // Bodies that carry no document.
    for (content_type, body, fragment) in [
        (
            "application/json",
            "{\"doc\": \"name: x\"}",
            "unknown field `doc`",
        ),
        ("application/json", "not json", "not valid JSON"),
        (
            "application/json",
            "{\"name\": \"x\", \"steps\": []}",
            "or as JSON {\"document\": \"<text>\"}",
        ),
        ("application/json", "", "Request body is empty"),
        ("application/yaml", "   ", "Request body is empty"),
    ] {
        let r = send(
            app.admin()
                .request(Method::POST, "/v2/playbooks")
                .header("content-type", content_type)
                .body(body),
        )
        .await;
        assert_error_contains(&r, 400, fragment);
    }
    let r = send(
        app.admin()
            .request(Method::POST, "/v2/playbooks")
            .header("content-type", "application/yaml")
            .body(vec![b'n', b'a', 0xff, 0xfe]),
    )
    .await;
    assert_error_contains(&r, 400, "not valid UTF-8");

    // Nothing was saved: one playbook, one version, one audit entry.
    let r = app.admin().get("/v2/playbooks").await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 1);
    let r = app.admin().get(&format!("/v2/playbooks/{id}")).await;
    assert_eq!(assert_ok(&r, 200)["versions"].as_array().unwrap().len(), 1);
    assert_eq!(audit(&app, "playbook_created").await.len(), 1);
    assert!(audit(&app, "playbook_version_added").await.is_empty());
}

async fn validate_is_a_dry_run_that_checks_scripts_secrets_and_inputs(backend: Backend) {
    let Some(app) = spawn(backend, Some(keyring(1))).await else {
        return;
    };
    let doc = r#"name: restart-api
approval: timeout:15m
inputs:
  unit: {type: string, default: api.service}
triggers:
  - {service: "api-*", kinds: [heartbeat_missing], consecutive_failures: 3, cooldown: 30m}
steps:
  - name: restart
    type: script
    script: restart-unit
    on: {labels: {role: api}}
    max_parallel: 1
    params: {UNIT: "${unit}"}
  - name: notify
    type: webhook
    url: https://deploy.example.com/done
    headers: {Authorization: "Bearer ${secrets.DEPLOY_TOKEN}"}
    body: {unit: "${unit}", status: "${steps.restart.status}"}
  - name: verify
    type: condition
    check: {heartbeat_received: {min_count: 1}}
    within: 5m
    on_failure: escalate
"#;
    let validate = |text: String| {
        let app = &app;
        async move {
            let r = send_yaml(
                app,
                app.admin_key(),
                Method::POST,
                "/v2/playbooks/validate",
                &text,
            )
            .await;
            assert_ok(&r, 200)
        }
    };
    // Neither the script nor the secret exists yet: every problem at once, in line order.
    let out = validate(doc.to_owned()).await;
    assert_eq!(out["valid"], false);
    assert_eq!(out["plan"], Value::Null);
    let problems: Vec<(String, String, u64)> = out["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["step"].as_str().unwrap_or_default().to_owned(),
                p["field"].as_str().unwrap().to_owned(),
                p["line"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            ("restart".into(), "script".into(), 10),
            ("notify".into(), "headers.Authorization".into(), 17),
        ]
    );
    assert_eq!(out["secrets"], json!(["DEPLOY_TOKEN"]));

    // Register the script and store the secret: now it is valid, and the plan comes back.
    let r = app
        .admin()
        .post_json(
            "/v2/scripts",
            &json!({"name": "restart-unit", "interpreter": "sh", "content": "systemctl restart \"$MEDIC_PARAM_UNIT\"\n"}),
        )
        .await;
    assert_ok(&r, 201);
    let r = send(
        app.admin()
            .request(Method::PUT, "/v2/secrets/DEPLOY_TOKEN")
            .json(&json!({ "value": "tok" })),
    )
    .await;
    assert_ok(&r, 201);
    let out = validate(doc.to_owned()).await;
    assert_eq!(out["valid"], true, "{out}");
    assert_eq!(out["sha256"], sha(doc));
    let plan = &out["plan"];
    assert_eq!(plan["name"], "restart-api");
    assert_eq!(plan["approval"], "timeout:15m");
    assert_eq!(plan["sha256"], sha(doc));
    assert_eq!(plan["inputs"][0]["name"], "unit");
    assert_eq!(plan["inputs"][0]["default"], "api.service");
    assert_eq!(plan["triggers"][0]["service"], "api-*");
    assert_eq!(plan["triggers"][0]["kinds"], json!(["heartbeat_missing"]));
    assert_eq!(plan["triggers"][0]["cooldown"], "30m");
    assert_eq!(plan["steps"][0]["type"], "script");
    assert_eq!(plan["steps"][0]["on"], "labels:role=api");
    assert_eq!(plan["steps"][0]["require"], "all");
    assert_eq!(plan["steps"][0]["params"], json!(["UNIT"]));
    assert_eq!(plan["steps"][1]["type"], "webhook");
    assert_eq!(plan["steps"][1]["method"], "POST");
    assert_eq!(plan["steps"][1]["body"], "json");
    assert_eq!(plan["steps"][2]["check"], "heartbeat_received");
    assert_eq!(plan["steps"][2]["within"], "5m");
    assert_eq!(plan["steps"][2]["on_failure"], "escalate");

    // A step output that is not earlier, and an input of the wrong type, are problems too.
    let out = validate(
        doc.replace("${steps.restart.status}", "${steps.verify.status}")
            .replace("default: api.service", "default: 3"),
    )
    .await;
    let fields: Vec<&str> = out["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["inputs.unit.default", "body"], "{out}");

    // The dry run stored nothing.
    let r = app.admin().get("/v2/playbooks").await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 0);
    assert!(audit(&app, "playbook_created").await.is_empty());
    // Oversized: 413 here too.
    let r = send_yaml(
        &app,
        app.admin_key(),
        Method::POST,
        "/v2/playbooks/validate",
        &format!("{WAIT_DOC}# {}\n", "x".repeat(300 * 1024)),
    )
    .await;
    assert_error_contains(&r, 413, "bytes");
}

/// Every byte the database holds, as text: the SQLite files, or every PostgreSQL row.
async fn database_text(app: &TestApp) -> String {
    let url = app.config.database_url.expose().to_owned();
    if let Some(path) = url.strip_prefix("sqlite://") {
        let dir = std::path::Path::new(path).parent().unwrap();
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with("medic.db") {
                all.extend(std::fs::read(entry.path()).unwrap());
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    } else {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut all = String::new();
        for t in tables {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{t}\" t"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for r in rows {
                all.push_str(&r.get::<String, _>(0));
                all.push('\n');
            }
        }
        all
    }
}

async fn secret_values_are_write_only_and_never_stored_in_plaintext(backend: Backend) {
    let Some(app) = spawn(backend, Some(keyring(7))).await else {
        return;
    };
    let value = "s3cr3t-Value-that-must-never-leak-7f3a";
    let put = |name: &'static str, v: &'static str| {
        let app = &app;
        async move {
            send(
                app.admin()
                    .request(Method::PUT, &format!("/v2/secrets/{name}"))
                    .json(&json!({ "value": v })),
            )
            .await
        }
    };
    let r = put("DEPLOY_TOKEN", value).await;
    let created = assert_ok(&r, 201);
    assert_eq!(created["name"], "DEPLOY_TOKEN");
    assert_eq!(created["key_id"], keyring(7).current_id().as_str());
    assert!(!r.body.contains(value));
    let r = put("DEPLOY_TOKEN", value).await;
    assert_ok(&r, 200);
    assert!(r.json()["message"].as_str().unwrap().contains("replaced"));
    let r = put("OTHER", "another-value").await;
    assert_ok(&r, 201);

    let r = app.admin().get("/v2/secrets").await;
    let list = assert_ok(&r, 200);
    assert!(!r.body.contains(value));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["DEPLOY_TOKEN", "OTHER"]);
    let first = list[0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "created_at",
            "created_by",
            "key_id",
            "name",
            "updated_at",
            "updated_by"
        ]
    );

    // Bad names and values change nothing.
    for (path, body, fragment) in [
        ("/v2/secrets/9LIVES", json!({"value": "x"}), "name must be"),
        (
            "/v2/secrets/has-dash",
            json!({"value": "x"}),
            "name must be",
        ),
        (
            "/v2/secrets/EMPTY",
            json!({"value": ""}),
            "must not be empty",
        ),
        (
            "/v2/secrets/NUL",
            json!({"value": "a\u{0}b"}),
            "control characters",
        ),
        (
            "/v2/secrets/BIG",
            json!({"value": "x".repeat(16 * 1024 + 1)}),
            "longer than",
        ),
        (
            "/v2/secrets/EXTRA",
            json!({"value": "x", "note": "y"}),
            "unknown field",
        ),
    ] {
        let r = send(app.admin().request(Method::PUT, path).json(&body)).await;
        assert_error_contains(&r, 400, fragment);
    }
    let r = app.admin().get("/v2/secrets").await;
    assert_eq!(assert_ok(&r, 200).as_array().unwrap().len(), 2);

    // The audit log names the secret and never holds the value.
    let set = audit(&app, "secret_set").await;
    assert_eq!(set.len(), 3);
    assert_eq!(set.last().unwrap()["details"]["name"], "DEPLOY_TOKEN");
    let r = app.admin().get("/v2/audit-logs?limit=250").await;
    assert!(!r.body.contains(value));

    // Nowhere in the database in plaintext (nor its base64), but sealed under the key.
    let stored = database_text(&app).await;
    assert!(
        stored.contains("DEPLOY_TOKEN"),
        "the dump must see the secrets table"
    );
    assert!(!stored.contains(value), "plaintext secret in the database");
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(value)
    };
    assert!(
        !stored.contains(&b64[..20]),
        "base64 of the secret in the database"
    );
    let sealed = app
        .store()
        .await
        .sealed_secrets(&["DEPLOY_TOKEN".into()])
        .await
        .unwrap();
    let opened = keyring(7)
        .open(
            "DEPLOY_TOKEN",
            &medic_server::playbook::secrets::Sealed::from_text(&sealed[0].sealed).unwrap(),
        )
        .unwrap();
    assert_eq!(opened.expose(), value);

    let r = app.admin().delete("/v2/secrets/OTHER").await;
    assert_eq!(assert_ok(&r, 200)["name"], "OTHER");
    let r = app.admin().delete("/v2/secrets/OTHER").await;
    assert_error_contains(&r, 404, "No secret is called");
    assert_eq!(audit(&app, "secret_deleted").await.len(), 1);
}

async fn secrets_routes_need_the_key(backend: Backend) {
    let Some(app) = spawn(backend, None).await else {
        return;
    };
    for (method, path) in [
        (Method::GET, "/v2/secrets"),
        (Method::PUT, "/v2/secrets/DEPLOY_TOKEN"),
        (Method::DELETE, "/v2/secrets/DEPLOY_TOKEN"),
    ] {
        let r = send(
            app.admin()
                .request(method.clone(), path)
                .json(&json!({ "value": "x" })),
        )
        .await;
        assert_error_contains(&r, 503, "set MEDIC_SECRETS_KEY");
    }
    // A document can still be validated; its secret is simply not stored.
    let r = send_yaml(
        &app,
        app.admin_key(),
        Method::POST,
        "/v2/playbooks/validate",
        SECRET_DOC,
    )
    .await;
    let out = assert_ok(&r, 200);
    assert_eq!(out["valid"], false);
    assert!(
        out["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no secret called `DEPLOY_TOKEN` is stored")
    );
}

async fn a_server_holding_secrets_refuses_to_start_without_the_right_key(backend: Backend) {
    let Some(server) = spawn(backend, Some(keyring(1))).await else {
        return;
    };
    let r = send(
        server
            .admin()
            .request(Method::PUT, "/v2/secrets/DEPLOY_TOKEN")
            .json(&json!({ "value": "tok" })),
    )
    .await;
    assert_ok(&r, 201);
    let Server { app, _db } = server;
    let stopped = app.shutdown().await;
    let start = |secrets: Option<Keyring>| {
        let mut config = stopped.config.clone();
        config.secrets = secrets;
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            server::start(config, listener).await
        }
    };
    let err = start(None).await.err().expect("no key: refused");
    let msg = err.to_string();
    assert!(
        msg.contains("1 secrets are stored but MEDIC_SECRETS_KEY is not set"),
        "{msg}"
    );
    let err = start(Some(keyring(2)))
        .await
        .err()
        .expect("wrong key: refused");
    let msg = err.to_string();
    assert!(msg.contains("the server has the wrong key"), "{msg}");
    assert!(msg.contains(keyring(1).current_id().as_str()), "{msg}");
    // The old key among MEDIC_SECRETS_OLD_KEYS is enough to start (mid-rotation).
    let running = start(Some(Keyring::new(key(2), vec![key(1)])))
        .await
        .expect("starts with the old key among the old keys");
    running.shutdown().await;
}
