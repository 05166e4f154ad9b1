//! Runs on a real agent: an approved script queued through `POST /v2/runs` runs on a real
//! `medic-agent` and its output comes back; the agent's refusals are stored as skipped runs;
//! a run queued while the agent is away runs when it returns.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agents::{AgentProcess, admin_get, wait_for_agent};
use crate::support::{TestApp, assert_error_contains, assert_ok};

const GREET: &str = "echo \"hello $MEDIC_PARAM_WHO\"\n";

/// Registers a script with `writer` and approves it with the bootstrap admin key.
async fn approved_script(app: &TestApp, writer: &str, name: &str, content: &str) -> i64 {
    let r = app
        .with_key(writer)
        .post_json(
            "/v2/scripts",
            &json!({ "name": name, "interpreter": "sh", "content": content }),
        )
        .await;
    let id = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    let r = app
        .admin()
        .post_json(&format!("/v2/scripts/{id}/approve"), &json!({}))
        .await;
    assert_ok(&r, 200);
    id
}

/// Polls the run until it has ended.
async fn finished(app: &TestApp, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = admin_get(&app.client, &app.base, &format!("/v2/runs/{run_id}"))
            .await
            .expect("the run exists");
        if ["succeeded", "failed", "timed_out", "skipped"]
            .contains(&run["status"].as_str().unwrap())
        {
            return run;
        }
        assert!(Instant::now() < deadline, "run never ended: {run:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn queue(app: &TestApp, key: &str, body: Value) -> String {
    let r = app.with_key(key).post_json("/v2/runs", &body).await;
    let run = assert_ok(&r, 201);
    assert_eq!(run["status"], "queued");
    run["run_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_scripts_run_on_a_real_agent_and_refusals_are_stored() {
    let app = TestApp::spawn().await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key(&["write"]).await;
    let greet = approved_script(&app, &writer, "greet", GREET).await;
    let other = approved_script(&app, &writer, "not-here", "echo no\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"greet\"\n";
    let agent = AgentProcess::start_with(&addr, &agent_key, "runner-1", allow);
    wait_for_agent(
        &app.client,
        &app.base,
        "runner-1",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;

    // An approved, allowlisted script runs, with its parameter as data.
    let run_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "runner-1", "script_id": greet, "parameters": { "WHO": "world; rm -rf /" } }),
    )
    .await;
    let run = finished(&app, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["exit_code"], 0);
    assert_eq!(run["stdout"], "hello world; rm -rf /\n");
    assert_eq!(run["script_version"], 1);
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());

    // The agent's allowlist does not name this one: stored as skipped, with the reason.
    let skipped_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "runner-1", "script_id": other }),
    )
    .await;
    let skipped = finished(&app, &skipped_id).await;
    assert_eq!(skipped["status"], "skipped", "{skipped:#}");
    assert_eq!(skipped["skip_reason"], "not_in_allowlist");

    // Queued while the agent is away, it runs when the agent is back.
    drop(agent);
    wait_for_agent(
        &app.client,
        &app.base,
        "runner-1",
        Duration::from_secs(90),
        "disconnect",
        |a| a["status"] == "disconnected",
    )
    .await;
    let later = queue(
        &app,
        &writer,
        json!({ "agent_id": "runner-1", "script_id": greet, "parameters": { "WHO": "again" } }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = admin_get(&app.client, &app.base, &format!("/v2/runs/{later}"))
        .await
        .unwrap();
    assert_eq!(waiting["status"], "queued");
    let _agent = AgentProcess::start_with(&addr, &agent_key, "runner-1", allow);
    let run = finished(&app, &later).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["stdout"], "hello again\n");

    let list = admin_get(&app.client, &app.base, "/v2/runs?agent_id=runner-1")
        .await
        .unwrap();
    assert_eq!(list["total_count"], 3);
    assert_eq!(list["entries"][0]["run_id"], later.as_str(), "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_refused_when_they_could_not_run() {
    let app = TestApp::spawn().await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key(&["write"]).await;
    let reader = app.create_key(&["read"]).await;
    let greet = approved_script(&app, &writer, "greet", GREET).await;
    // A second, pending version: not runnable by number, the approved one is the default.
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "greet", "interpreter": "sh", "content": "echo v2\n" }),
        )
        .await;
    assert_ok(&r, 201);

    // The agent must have connected once to be known.
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/runs",
            &json!({ "agent_id": "ghost", "script_id": greet }),
        )
        .await;
    assert_error_contains(&r, 404, "ghost");

    // Register an agent through a raw session.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let agent = AgentProcess::start(&addr, &agent_key, "known-1");
    wait_for_agent(
        &app.client,
        &app.base,
        "known-1",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;

    let post = |body: Value| {
        let app = &app;
        let writer = writer.clone();
        async move { app.with_key(&writer).post_json("/v2/runs", &body).await }
    };
    let r = post(json!({ "agent_id": "known-1", "script_id": greet, "version": 2 })).await;
    assert_error_contains(&r, 409, "not approved");
    let r = post(json!({ "agent_id": "known-1", "script_id": greet, "version": 9 })).await;
    assert_error_contains(&r, 404, "version 9");
    let r = post(json!({ "agent_id": "known-1", "script_id": 999 })).await;
    assert_error_contains(&r, 404, "999");
    let r = post(
        json!({ "agent_id": "known-1", "script_id": greet, "parameters": { "PATH": "/tmp" } }),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(json!({ "agent_id": "known-1", "script_id": greet, "timeout_seconds": 0 })).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(json!({ "agent_id": "known-1", "script_id": greet, "surprise": 1 })).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = app
        .with_key(&reader)
        .post_json(
            "/v2/runs",
            &json!({ "agent_id": "known-1", "script_id": greet }),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(app.with_key(&reader).get("/v2/runs/nope").await.status, 404);

    // The default is the latest approved version; a revoked agent takes no runs.
    let r = post(json!({ "agent_id": "known-1", "script_id": greet })).await;
    assert_eq!(assert_ok(&r, 201)["script_version"], 1);
    assert_ok(&app.admin().delete("/v2/agents/known-1").await, 200);
    let r = post(json!({ "agent_id": "known-1", "script_id": greet })).await;
    assert_error_contains(&r, 409, "revoked");
    drop(agent);
}
