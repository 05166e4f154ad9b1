//! Labels an operator grants to an agent that already exists (`PUT /v2/agents/{id}/labels`),
//! through HTTP against a real server (SQLite) and a real `medic-agent`: a grant reaches the
//! connected agent at once (a run by label selects it), bad input changes nothing, and only
//! admins may do it.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::agents::{AgentProcess, admin_get, connected_agent, wait_for_agent};
use crate::support::{Reply, TestApp, assert_ok, send};

async fn put_labels(app: &TestApp, key: &str, agent: &str, body: &Value) -> Reply {
    send(
        app.with_key(key)
            .request(Method::PUT, &format!("/v2/agents/{agent}/labels"))
            .json(body),
    )
    .await
}

async fn agent(app: &TestApp, id: &str) -> Value {
    admin_get(&app.client, &app.base, &format!("/v2/agents/{id}"))
        .await
        .expect("the agent exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_granted_to_a_connected_agent_is_selected_by_runs_at_once() {
    let app = TestApp::spawn().await;
    let admin = app.admin_key();
    // A key that grants no label: the agent declares role=it (the test configuration) and
    // tier=db, and carries neither.
    let created = app
        .create_key_with(&json!({ "name": "db-1", "scopes": ["agent"] }))
        .await;
    let agent_key = created["key"].as_str().unwrap().to_owned();
    let (_agent, connected) = connected_agent(
        &app,
        &agent_key,
        "db-1",
        "tier = \"db\"\n[[allow]]\nscript = \"where\"\n",
    )
    .await;
    assert_eq!(connected["labels"], json!({}));
    assert_eq!(
        connected["declared_labels"],
        json!({ "role": "it", "tier": "db" })
    );
    let session = connected["session_id"].clone();

    let writer = app.create_key_for("wendy", &["write", "run", "read"]).await;
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "where", "interpreter": "sh", "content": "echo here\n" }),
        )
        .await;
    let script = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    assert_ok(
        &app.admin()
            .post_json(&format!("/v2/scripts/{script}/approve"), &json!({}))
            .await,
        200,
    );
    let by_tier = json!({ "labels": { "tier": "db" }, "script": "where" });
    let r = app.with_key(&writer).post_json("/v2/runs", &by_tier).await;
    assert_eq!(
        r.status.as_u16(),
        404,
        "no agent carries tier=db yet: {}",
        r.body
    );

    // The grant: the connected agent carries it at once, in the same session.
    let r = put_labels(
        &app,
        admin,
        "db-1",
        &json!({ "labels": { "tier": "db", "dc": "eu-1" } }),
    )
    .await;
    let body = r.json();
    let granted = assert_ok(&r, 200);
    assert_eq!(granted["labels"], json!({ "tier": "db" }));
    assert_eq!(
        granted["label_grants"],
        json!({ "tier": "db", "dc": "eu-1" })
    );
    assert_eq!(granted["session_id"], session, "the session was left alone");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("does not declare dc=eu-1"),
        "an undeclared grant is named: {message}"
    );
    let listed = assert_ok(&app.admin().get("/v2/agents?label.tier=db").await, 200);
    assert_eq!(listed["entries"][0]["agent_id"], "db-1");

    let r = app.with_key(&writer).post_json("/v2/runs", &by_tier).await;
    let queued = assert_ok(&r, 201);
    assert_eq!(
        queued["runs"].as_array().map(Vec::len),
        Some(1),
        "{queued:#}"
    );
    assert_eq!(queued["runs"][0]["agent_id"], "db-1", "{queued:#}");
    let run_id = queued["run_ids"][0].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run = admin_get(
            &app.client,
            &app.base,
            &format!("/v2/runs/{run_id}?wait_seconds=30"),
        )
        .await
        .expect("the run exists");
        if run["status"] != "queued" && run["status"] != "sent" && run["status"] != "running" {
            break run;
        }
        assert!(Instant::now() < deadline, "the run never ended: {run:#}");
    };
    assert_eq!(run["status"], "succeeded", "{run:#}");

    // Audited, with what it replaced.
    let audit = assert_ok(
        &app.admin()
            .get("/v2/audit-logs?action_type=agent_labels_changed")
            .await,
        200,
    );
    let entry = &audit["entries"][0];
    assert_eq!(entry["details"]["agent_id"], "db-1", "{audit:#}");
    assert_eq!(
        entry["details"]["label_grants"],
        json!({ "tier": "db", "dc": "eu-1" })
    );
    assert_eq!(entry["details"]["previous_label_grants"], json!({}));

    // Revoked: the agent no longer carries it, and runs by that label find nobody.
    let r = put_labels(&app, admin, "db-1", &json!({ "labels": {} })).await;
    assert_eq!(assert_ok(&r, 200)["labels"], json!({}));
    let r = app.with_key(&writer).post_json("/v2/runs", &by_tier).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_grants_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin_key();
    let created = app
        .create_key_with(
            &json!({ "name": "web-1", "scopes": ["agent"], "labels": { "role": "it" } }),
        )
        .await;
    let agent_key = created["key"].as_str().unwrap().to_owned();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _agent = AgentProcess::start(&addr, &agent_key, "web-1");
    wait_for_agent(
        &app.client,
        &app.base,
        "web-1",
        Duration::from_secs(30),
        "the agent to connect",
        |a| a["connected"] == true,
    )
    .await;
    assert_ok(
        &put_labels(
            &app,
            admin,
            "web-1",
            &json!({ "labels": { "tier": "web" } }),
        )
        .await,
        200,
    );
    let before = agent(&app, "web-1").await;
    assert_eq!(before["labels"], json!({ "role": "it" }));

    let long = "x".repeat(300);
    for (body, field) in [
        (json!({ "labels": { "bad key!": "x" } }), "labels"),
        (json!({ "labels": { "tier": long } }), "labels"),
        (json!({ "labels": { "tier": 3 } }), "labels"),
        (json!({ "labels": ["tier=web"] }), "labels"),
        (json!({}), "labels"),
        (json!({ "labels": {}, "extra": 1 }), "extra"),
    ] {
        let r = put_labels(&app, admin, "web-1", &body).await;
        assert_eq!(r.status.as_u16(), 400, "{body}: {}", r.body);
        let err = r.json();
        assert!(
            err["message"].as_str().unwrap_or_default().contains(field),
            "{body}: the error names {field}: {err}"
        );
    }
    // Not an admin: refused; unknown agent: 404.
    let writer = app.create_key(&["write", "read", "run"]).await;
    let r = put_labels(&app, &writer, "web-1", &json!({ "labels": {} })).await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    let r = put_labels(&app, admin, "nobody", &json!({ "labels": {} })).await;
    assert_eq!(r.status.as_u16(), 404, "{}", r.body);
    let after = agent(&app, "web-1").await;
    assert_eq!(after["label_grants"], json!({ "tier": "web" }));
    assert_eq!(after["labels"], before["labels"]);
    let audit = assert_ok(
        &app.admin()
            .get("/v2/audit-logs?action_type=agent_labels_changed")
            .await,
        200,
    );
    assert_eq!(audit["entries"].as_array().unwrap().len(), 1, "{audit:#}");

    // A revoked agent's labels cannot change.
    assert_ok(&app.admin().delete("/v2/agents/web-1").await, 200);
    let r = put_labels(&app, admin, "web-1", &json!({ "labels": {} })).await;
    assert_eq!(r.status.as_u16(), 409, "{}", r.body);
    assert_eq!(
        agent(&app, "web-1").await["label_grants"],
        json!({ "tier": "web" })
    );
}
