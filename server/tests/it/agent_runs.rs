//! Runs on a real agent: an approved script queued through `POST /v2/runs` runs on a real
//! `medic-agent` and its output comes back; the agent's refusals are stored as skipped runs;
//! a run queued while the agent is away runs when it returns; it expires if the agent stays
//! away; a run whose agent is killed ends `lost`; a run cut off by a server restart is
//! reported after the agent reconnects and runs once; parameters reach the script verbatim and
//! the agent's own secrets never do; with two replicas on PostgreSQL a run queued on one
//! reaches the agent connected to the other.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::agents::{AgentProcess, admin_get, wait_for_agent};
use crate::support::{TestApp, assert_error, assert_error_contains, assert_ok, metric};
use crate::support_recorder::{Answer, Recorder};

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

const ENDED: [&str; 6] = [
    "succeeded",
    "failed",
    "timed_out",
    "refused",
    "expired",
    "lost",
];

/// Waits (on the server, `wait_seconds`, as often as needed) until the run has ended.
async fn finished(app: &TestApp, run_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = admin_get(
            &app.client,
            &app.base,
            &format!("/v2/runs/{run_id}?wait_seconds=30"),
        )
        .await
        .expect("the run exists");
        if ENDED.contains(&run["status"].as_str().unwrap()) {
            return run;
        }
        assert!(Instant::now() < deadline, "run never ended: {run:#}");
    }
}

async fn queue(app: &TestApp, key: &str, body: Value) -> String {
    let r = app.with_key(key).post_json("/v2/runs", &body).await;
    let run = assert_ok(&r, 201);
    assert_eq!(run["status"], "queued");
    run["run_id"].as_str().unwrap().to_owned()
}

/// `GET /v2/runs/{id}?wait_seconds=N` answers once the run has ended (one request, no polling),
/// or after N seconds with the run as it is; a bad N is a 400 that names the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_can_wait_for_a_run_to_end() {
    // A short request timeout: a wait longer than it is cut short with a 200, not a 503.
    let app = TestApp::builder()
        .configure(|c| c.request_timeout = Duration::from_secs(3))
        .spawn()
        .await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let nap = approved_script(
        &app,
        &writer,
        "nap",
        "sleep \"$MEDIC_PARAM_FOR\"\necho rested\n",
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _agent = AgentProcess::start_with(
        &addr,
        &agent_key,
        "waited-1",
        "[[allow]]\nscript = \"nap\"\n",
    );
    connected(&app, "waited-1").await;

    for bad in ["61", "-1", "soon"] {
        let r = app
            .admin()
            .get(&format!("/v2/runs/nope?wait_seconds={bad}"))
            .await;
        assert_error_contains(&r, 400, "wait_seconds");
    }
    let r = app.admin().get("/v2/runs/nope?wait_seconds=1").await;
    assert_error_contains(&r, 404, "nope");

    // Ends while the caller waits: the one answer carries the result.
    let quick = queue(
        &app,
        &writer,
        json!({ "agent_id": "waited-1", "script_id": nap, "parameters": {"FOR": "0"} }),
    )
    .await;
    let r = app
        .admin()
        .get(&format!("/v2/runs/{quick}?wait_seconds=30"))
        .await;
    let run = assert_ok(&r, 200);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["stdout"], "rested\n");

    // Outlasts the wait: the answer shows the run still going, and the run goes on.
    let slow = queue(
        &app,
        &writer,
        json!({ "agent_id": "waited-1", "script_id": nap, "parameters": {"FOR": "4"} }),
    )
    .await;
    let r = app
        .admin()
        .get(&format!("/v2/runs/{slow}?wait_seconds=30"))
        .await;
    // Past the request timeout (3 s) the answer would be a 503: the wait ends a second before.
    let run = assert_ok(&r, 200);
    assert!(
        ["queued", "dispatched", "running"].contains(&run["status"].as_str().unwrap()),
        "{run:#}"
    );
    let run = finished(&app, &slow).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
}

/// One request reaches several agents: by a list of ids or by labels (one run each, queued in
/// one transaction), with the script named instead of numbered; the list of runs filters by
/// agent, status and script; a bad target changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_fan_out_to_agents_by_ids_and_by_labels() {
    let app = TestApp::spawn().await;
    // Each key grants its hosts' tier.
    let tier_key = |tier: &str| {
        let body = json!({ "name": format!("tier-{tier}"), "scopes": ["agent"], "labels": { "tier": tier } });
        let app = &app;
        async move {
            app.create_key_with(&body).await["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let (web_key, db_key) = (tier_key("web").await, tier_key("db").await);
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let script = approved_script(&app, &writer, "where", "echo \"on $MEDIC_AGENT_ID\"\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"where\"\n";
    let _agents: Vec<AgentProcess> = [("fan-1", "web"), ("fan-2", "web"), ("fan-3", "db")]
        .iter()
        .map(|(id, tier)| {
            AgentProcess::start_with(
                &addr,
                if *tier == "web" { &web_key } else { &db_key },
                id,
                &format!("tier = \"{tier}\"\n{allow}"),
            )
        })
        .collect();
    for id in ["fan-1", "fan-2", "fan-3"] {
        connected(&app, id).await;
    }
    let post = |body: Value| {
        let app = &app;
        let writer = writer.clone();
        async move { app.with_key(&writer).post_json("/v2/runs", &body).await }
    };
    let app_ref = &app;
    let ended_on = |runs: Vec<Value>| async move {
        let app = app_ref;
        let mut on = Vec::new();
        for run in runs {
            let run_id = run["run_id"].as_str().unwrap().to_owned();
            let done = finished(app, &run_id).await;
            assert_eq!(done["status"], "succeeded", "{done:#}");
            assert_eq!(
                done["stdout"],
                format!("on {}\n", done["agent_id"].as_str().unwrap())
            );
            on.push(done["agent_id"].as_str().unwrap().to_owned());
        }
        on.sort();
        on
    };

    // By labels, the script by name.
    let r = post(json!({ "labels": { "tier": "web" }, "script": "where" })).await;
    let out = assert_ok(&r, 201);
    assert_eq!(out["run_ids"].as_array().unwrap().len(), 2, "{out:#}");
    assert_eq!(
        ended_on(out["runs"].as_array().unwrap().clone()).await,
        ["fan-1", "fan-2"]
    );
    // By a list of ids.
    let r = post(json!({ "agent_ids": ["fan-3", "fan-1"], "script_id": script })).await;
    let out = assert_ok(&r, 201);
    assert_eq!(
        ended_on(out["runs"].as_array().unwrap().clone()).await,
        ["fan-1", "fan-3"]
    );
    // One agent: the answer is the run itself.
    let r = post(json!({ "agent_id": "fan-3", "script": "where" })).await;
    let run = assert_ok(&r, 201);
    assert_eq!(ended_on(vec![run.clone()]).await, ["fan-3"]);

    // Filters.
    let count = |query: &str| {
        let app = &app;
        let query = query.to_owned();
        async move {
            let r = app.admin().get(&format!("/v2/runs?{query}")).await;
            assert_ok(&r, 200)["total_count"].as_i64().unwrap()
        }
    };
    assert_eq!(count("").await, 5);
    assert_eq!(count("agent_id=fan-1").await, 2);
    assert_eq!(
        count(&format!(
            "status=succeeded&script_id={script}&agent_id=fan-3"
        ))
        .await,
        2
    );
    assert_eq!(count("status=running").await, 0);
    assert_eq!(count(&format!("script_id={}", script + 1)).await, 0);
    assert_error_contains(
        &app.admin().get("/v2/runs?status=done").await,
        400,
        "status",
    );
    assert_error_contains(
        &app.admin().get("/v2/runs?script_id=x").await,
        400,
        "script_id",
    );

    // Bad targets and scripts: a clear error, and nothing queued.
    let cases = [
        (
            json!({ "agent_id": "fan-1", "labels": { "tier": "web" }, "script": "where" }),
            400,
            "exactly one target",
        ),
        (json!({ "script": "where" }), 400, "exactly one target"),
        (
            json!({ "labels": {}, "script": "where" }),
            400,
            "at least one label",
        ),
        (
            json!({ "labels": { "tier": "none" }, "script": "where" }),
            404,
            "tier",
        ),
        (
            json!({ "labels": { "bad key!": "x" }, "script": "where" }),
            400,
            "labels",
        ),
        (
            json!({ "agent_ids": [], "script": "where" }),
            400,
            "agent_ids",
        ),
        (
            json!({ "agent_ids": ["fan-1", "fan-1"], "script": "where" }),
            400,
            "more than once",
        ),
        (
            json!({ "agent_ids": ["fan-1", "ghost"], "script": "where" }),
            404,
            "ghost",
        ),
        (
            json!({ "agent_id": "fan-1", "script": "where", "script_id": script }),
            400,
            "exactly one of script_id",
        ),
        (
            json!({ "agent_id": "fan-1" }),
            400,
            "exactly one of script_id",
        ),
        (
            json!({ "agent_id": "fan-1", "script": "nowhere" }),
            404,
            "nowhere",
        ),
    ];
    for (body, status, says) in cases {
        let r = post(body.clone()).await;
        assert_error_contains(&r, status, says);
    }
    assert_eq!(count("").await, 5);
}

/// An agent at its concurrency limit declines a run with `busy`: the run goes back to the queue
/// and runs once the slot is free, instead of ending `refused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_agent_is_too_busy_for_waits_and_runs_later() {
    let app = TestApp::spawn().await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let slow = approved_script(&app, &writer, "slow", "sleep 2\necho slow\n").await;
    let quick = approved_script(&app, &writer, "quick", "echo quick\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _agent = AgentProcess::start_with_env(
        &addr,
        &agent_key,
        "single-1",
        "[[allow]]\nscript = \"slow\"\n[[allow]]\nscript = \"quick\"\n",
        &[("MEDIC_AGENT_MAX_CONCURRENT_RUNS", "1")],
    );
    connected(&app, "single-1").await;
    let first = queue(
        &app,
        &writer,
        json!({ "agent_id": "single-1", "script_id": slow }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let run = admin_get(&app.client, &app.base, &format!("/v2/runs/{first}"))
            .await
            .unwrap();
        if run["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {run:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = queue(
        &app,
        &writer,
        json!({ "agent_id": "single-1", "script_id": quick }),
    )
    .await;
    let slow_run = finished(&app, &first).await;
    let quick_run = finished(&app, &second).await;
    assert_eq!(slow_run["status"], "succeeded", "{slow_run:#}");
    assert_eq!(quick_run["status"], "succeeded", "{quick_run:#}");
    assert_eq!(quick_run["stdout"], "quick\n");
    assert!(quick_run["refusal_reason"].is_null(), "{quick_run:#}");
    assert!(
        quick_run["started_at"].as_str() >= slow_run["finished_at"].as_str(),
        "the second run waited for the slot: {slow_run:#} {quick_run:#}"
    );
    // It really was declined on the way (the path this test is about; the counter is shared by
    // every test in this process, so only its presence is checked).
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "medic_agent_runs_refused_total",
            &[("reason", "busy")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
}

/// A refusal the operator must look at opens a `run_refused` alert on the agent's service,
/// paged like any alert (here through the deployment's PagerDuty key), once per run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_run_opens_an_alert_and_pages() {
    let pd = Recorder::start().await;
    pd.answer(Answer::json(
        202,
        json!({"status": "success", "dedup_key": "x"}),
    ));
    let pd_url = pd.url("/v2/enqueue");
    let app = TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            c.notify.pagerduty_events_url = pd_url;
            c.pagerduty_routing_key = Some("refusal-key".parse().expect("key"));
        })
        .spawn()
        .await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let other = approved_script(&app, &writer, "not-here", "echo no\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let agent_process = AgentProcess::start_with(
        &addr,
        &agent_key,
        "guarded-1",
        "[[allow]]\nscript = \"greet\"\n",
    );
    connected(&app, "guarded-1").await;
    let run_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "guarded-1", "script_id": other }),
    )
    .await;
    let run = finished(&app, &run_id).await;
    assert_eq!(run["status"], "refused", "{run:#}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let alert = loop {
        let page = admin_get(&app.client, &app.base, "/v2/alerts?kind=run_refused")
            .await
            .unwrap();
        if let Some(a) = page["entries"].as_array().and_then(|e| e.first()) {
            assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page:#}");
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no run_refused alert: {page:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["state"], "open");
    assert_eq!(alert["run_id"], run_id.as_str(), "{alert:#}");
    let summary = alert["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("guarded-1") && summary.contains("not_in_allowlist"),
        "{alert:#}"
    );
    let agent = admin_get(&app.client, &app.base, "/v2/agents/guarded-1")
        .await
        .unwrap();
    assert_eq!(alert["service_id"], agent["service_id"], "{agent:#}");
    assert_eq!(alert["name"], "agent:guarded-1 run refused", "{alert:#}");

    let seen = pd.wait_for(1, Duration::from_secs(10)).await;
    let triggers: Vec<Value> = seen
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event_action"] == "trigger")
        .collect();
    assert_eq!(triggers.len(), 1, "{triggers:#?}");
    assert_eq!(triggers[0]["routing_key"], "refusal-key");
    assert_eq!(triggers[0]["dedup_key"], alert["dedup_key"]);

    // A later pass over the agent's service sees the refusal again (it looks a day back) and
    // adds nothing. To make one happen, the agent goes away and its service's interval passes:
    // that pass opens the agent's `heartbeat_missing` alert.
    drop(agent_process);
    wait_for_agent(
        &app.client,
        &app.base,
        "guarded-1",
        Duration::from_secs(30),
        "disconnect",
        |a| a["status"] == "disconnected",
    )
    .await;
    let interval = medic_server::gateway::AGENT_SERVICE_INTERVAL_SECONDS.unsigned_abs();
    app.advance(Duration::from_secs(interval + 1));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = admin_get(
            &app.client,
            &app.base,
            &format!(
                "/v2/alerts?kind=heartbeat_missing&service_id={}",
                alert["service_id"]
            ),
        )
        .await
        .unwrap();
        if page["total_count"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no later pass: {page:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = admin_get(&app.client, &app.base, "/v2/alerts?kind=run_refused")
        .await
        .unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page:#}");
    // Paged twice in all: the refusal once, the silence once.
    let seen = pd.wait_for(2, Duration::from_secs(10)).await;
    let refusal_pages = seen
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event_action"] == "trigger" && b["dedup_key"] == alert["dedup_key"])
        .count();
    assert_eq!(refusal_pages, 1, "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_scripts_run_on_a_real_agent_and_refusals_are_stored() {
    let app = TestApp::spawn().await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let greet = approved_script(&app, &writer, "greet", GREET).await;
    let other = approved_script(&app, &writer, "not-here", "echo no\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"greet\"\n";
    let agent = AgentProcess::start_with(&addr, &agent_key, "runner-1", allow);
    connected(&app, "runner-1").await;

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
    assert_eq!(skipped["status"], "refused", "{skipped:#}");
    assert_eq!(skipped["refusal_reason"], "not_in_allowlist");

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
    let waiting = admin_get(&app.client, &app.base, &format!("/v2/runs/{later}"))
        .await
        .unwrap();
    assert_eq!(waiting["status"], "queued");
    let _agent = AgentProcess::start_with(&addr, &agent_key, "runner-1", allow);
    let run = finished(&app, &later).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["stdout"], "hello again\n");
    // It waited for the agent: sent by the session the agent opened when it came back.
    let back = admin_get(&app.client, &app.base, "/v2/agents/runner-1")
        .await
        .unwrap();
    assert!(
        run["dispatched_at"].as_str() >= back["connected_at"].as_str(),
        "sent before the agent was back: {run:#} {back:#}"
    );

    let text = app.metrics().await;
    let n = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(0.0);
    assert!(
        n(
            "medic_agent_runs_refused_total",
            &[("reason", "not_in_allowlist")]
        ) >= 1.0
    );
    assert!(n("medic_agent_runs_total", &[("status", "succeeded")]) >= 2.0);
    assert!(
        n("medic_agent_run_result_seconds_count", &[]) >= 3.0,
        "{text}"
    );

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
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
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
    connected(&app, "known-1").await;

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

/// Polls the run until `pred` holds.
async fn run_until(
    app_base: &str,
    client: &reqwest::Client,
    run_id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = admin_get(client, app_base, &format!("/v2/runs/{run_id}"))
            .await
            .expect("the run exists");
        if pred(&run) {
            return run;
        }
        assert!(Instant::now() < deadline, "run never {what}: {run:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Moves the server's manual clock a second at a time until the run satisfies `pred`,
/// looking after each step (the run sweep wakes on every move). Returns how much of the
/// server's time had to pass; fails past `at_most`.
async fn advance_until_run(
    app: &TestApp,
    run_id: &str,
    what: &str,
    at_most: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Duration {
    let step = Duration::from_secs(1);
    let mut passed = Duration::ZERO;
    loop {
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            let run = admin_get(&app.client, &app.base, &format!("/v2/runs/{run_id}"))
                .await
                .expect("the run exists");
            if pred(&run) {
                return passed;
            }
            assert!(
                passed < at_most,
                "run never {what} within {at_most:?}: {run:#}"
            );
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        app.advance(step);
        passed += step;
    }
}

/// Waits (up to 30 s) until the agent `agent_id` is connected.
async fn connected(app: &TestApp, agent_id: &str) {
    wait_for_agent(
        &app.client,
        &app.base,
        agent_id,
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;
}

/// A directory any user can write to (the agent drops to `nobody` when the tests run as root).
fn shared_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_agent_is_killed_ends_lost_and_a_run_left_waiting_expires() {
    let app = TestApp::builder()
        .manual_clock()
        .configure(|c| c.agent_run_grace = Duration::from_secs(1))
        .spawn()
        .await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let sleepy = approved_script(&app, &writer, "sleepy", "sleep 20\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"sleepy\"\n";
    let running = |r: &Value| r["status"] == "running";
    let lost = |r: &Value| r["status"] == "lost";

    // Killed mid-run and never back: lost once its timeout and the grace have passed.
    let agent = AgentProcess::start_with(&addr, &agent_key, "doomed-1", allow);
    connected(&app, "doomed-1").await;
    let run_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "doomed-1", "script_id": sleepy, "timeout_seconds": 2 }),
    )
    .await;
    run_until(&app.base, &app.client, &run_id, "started", running).await;
    drop(agent); // SIGKILL
    let took = advance_until_run(&app, &run_id, "lost", Duration::from_secs(30), lost).await;
    assert!(
        took >= Duration::from_secs(3),
        "lost after {took:?}, before its timeout and the grace had passed"
    );
    let run = admin_get(&app.client, &app.base, &format!("/v2/runs/{run_id}"))
        .await
        .unwrap();
    assert!(
        run["exit_code"].is_null() && run["finished_at"].is_string(),
        "{run:#}"
    );

    // Killed mid-run with a long timeout, and a new agent process comes back without the run:
    // lost a grace after the reconnection, not after the timeout.
    let agent = AgentProcess::start_with(&addr, &agent_key, "doomed-1", allow);
    connected(&app, "doomed-1").await;
    let run_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "doomed-1", "script_id": sleepy, "timeout_seconds": 3600 }),
    )
    .await;
    run_until(&app.base, &app.client, &run_id, "started", running).await;
    let before = admin_get(&app.client, &app.base, "/v2/agents/doomed-1")
        .await
        .unwrap();
    drop(agent);
    let _agent = AgentProcess::start_with(&addr, &agent_key, "doomed-1", allow);
    wait_for_agent(
        &app.client,
        &app.base,
        "doomed-1",
        Duration::from_secs(30),
        "reconnect",
        |a| a["status"] == "connected" && a["session_id"] != before["session_id"],
    )
    .await;
    let took = advance_until_run(&app, &run_id, "lost", Duration::from_secs(10), lost).await;
    assert!(took >= Duration::from_secs(1), "lost before the grace");

    // Queued for an agent that stays away past the expiry: expired, and never sent when the
    // agent comes back.
    let away = AgentProcess::start_with(&addr, &agent_key, "away-1", allow);
    connected(&app, "away-1").await;
    drop(away);
    wait_for_agent(
        &app.client,
        &app.base,
        "away-1",
        Duration::from_secs(90),
        "disconnect",
        |a| a["status"] == "disconnected",
    )
    .await;
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/runs",
            &json!({ "agent_id": "away-1", "script_id": sleepy, "expires_in_seconds": 1 }),
        )
        .await;
    let queued = assert_ok(&r, 201);
    assert!(queued["expires_at"].is_string(), "{queued:#}");
    let expiring = queued["run_id"].as_str().unwrap().to_owned();
    let expired = |r: &Value| r["status"] == "expired";
    let took =
        advance_until_run(&app, &expiring, "expired", Duration::from_secs(10), expired).await;
    assert!(took >= Duration::from_secs(1), "expired early");
    let _back = AgentProcess::start_with(&addr, &agent_key, "away-1", allow);
    connected(&app, "away-1").await;
    // A run queued now is claimed and sent by the returning agent's session; a claim would
    // have taken the expired run too, so once this one has left the queue the other had every
    // chance to be sent.
    let fresh = queue(
        &app,
        &writer,
        json!({ "agent_id": "away-1", "script_id": sleepy }),
    )
    .await;
    let sent = |r: &Value| r["status"] != "queued";
    run_until(&app.base, &app.client, &fresh, "sent", sent).await;
    let run = admin_get(&app.client, &app.base, &format!("/v2/runs/{expiring}"))
        .await
        .unwrap();
    assert_eq!(run["status"], "expired");
    assert!(
        run["dispatched_at"].is_null(),
        "an expired run was sent: {run:#}"
    );

    // Counted by status.
    let text = app.metrics().await;
    for (status, at_least) in [("lost", 2.0), ("expired", 1.0), ("queued", 3.0)] {
        let n = metric(&text, "medic_agent_runs_total", &[("status", status)]).unwrap_or(0.0);
        assert!(
            n >= at_least,
            "{status}: {n}
{text}"
        );
    }

    // The expiry is bounded.
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/runs",
            &json!({ "agent_id": "doomed-1", "script_id": sleepy, "expires_in_seconds": 0 }),
        )
        .await;
    assert_error_contains(&r, 400, "expires_in_seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_off_by_a_server_restart_is_reported_after_reconnect_and_runs_once() {
    let app = TestApp::spawn().await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let once = approved_script(
        &app,
        &writer,
        "once",
        "echo ran >> \"$MEDIC_PARAM_LOG\"\nsleep 3\necho done\n",
    )
    .await;
    let mark = approved_script(&app, &writer, "mark", "echo marked\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"once\"\n[[allow]]\nscript = \"mark\"\n";
    let _agent = AgentProcess::start_with(&addr, &agent_key, "cut-1", allow);
    connected(&app, "cut-1").await;
    let dir = shared_dir();
    let log = dir.path().join("ran.log");
    let run_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "cut-1", "script_id": once,
                "parameters": { "LOG": log.display().to_string() } }),
    )
    .await;
    let running = |r: &Value| r["status"] == "running";
    run_until(&app.base, &app.client, &run_id, "started", running).await;

    // The server goes away mid-run (its sessions are dropped) and comes back on the same
    // address and database.
    let client = app.client.clone();
    let stopped = app.shutdown().await;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("rebind the same port");
    let restarted = medic_server::server::start_with_clock(
        stopped.config.clone(),
        listener,
        stopped.clock.clone(),
    )
    .await
    .expect("server restarts");
    let base = format!("http://{}", restarted.addr);
    let ended = |r: &Value| r["status"] != "running" && r["status"] != "dispatched";
    let run = run_until(&base, &client, &run_id, "reported", ended).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["stdout"], "done\n");
    // A run queued after the report is sent after any redelivery of the first one would
    // have been (runs reach the agent in order on one session): once it has ended, the
    // first run had every chance to run again.
    let r = client
        .post(format!("{base}/v2/runs"))
        .bearer_auth(&writer)
        .json(&json!({ "agent_id": "cut-1", "script_id": mark }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let marker: Value = r.json().await.unwrap();
    let marker = marker["results"]["run_id"].as_str().unwrap().to_owned();
    let over = |r: &Value| ENDED.contains(&r["status"].as_str().unwrap_or_default());
    let marked = run_until(&base, &client, &marker, "ended", over).await;
    assert_eq!(marked["status"], "succeeded", "{marked:#}");
    let ran = std::fs::read_to_string(&log).expect("the script wrote its log");
    assert_eq!(ran, "ran\n", "the run was executed more than once");
    let run = admin_get(&client, &base, &format!("/v2/runs/{run_id}"))
        .await
        .unwrap();
    assert_eq!(run["status"], "succeeded");
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_the_script_verbatim_and_the_agents_secrets_never_do() {
    let app = TestApp::spawn().await;
    let agent_key = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let show = approved_script(
        &app,
        &writer,
        "show",
        "printf '%s' \"$MEDIC_PARAM_WHO\" > \"$MEDIC_PARAM_OUT\"\nenv\n",
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"show\"\n";
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-value-1"),
        ("DATABASE_URL", "postgres://u:db-secret-value-2@db/x"),
        ("SECRET_API_TOKEN", "token-secret-value-3"),
        ("GITHUB_TOKEN", "gh-secret-value-4"),
    ];
    let _agent = AgentProcess::start_with_env(&addr, &agent_key, "env-1", allow, &secrets);
    connected(&app, "env-1").await;
    let dir = shared_dir();
    let out = dir.path().join("who");
    let nasty = "a; rm -rf / && $(id) `id` | cat > /tmp/x 'q' \"dq\" * ~ $HOME \\ %s {} !";
    let run_id = queue(
        &app,
        &writer,
        json!({ "agent_id": "env-1", "script_id": show,
                "parameters": { "WHO": nasty, "OUT": out.display().to_string() } }),
    )
    .await;
    let run = finished(&app, &run_id).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), nasty);
    let env = run["stdout"].as_str().unwrap();
    assert!(env.contains("MEDIC_PARAM_WHO="), "{env}");
    for (name, value) in secrets {
        assert!(!env.contains(name), "{name} reached the script:\n{env}");
        assert!(
            !env.contains(value),
            "the value of {name} reached the script:\n{env}"
        );
    }
}

/// A `medic-server` process on `database_url`, killed when dropped.
struct Replica(std::process::Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const REPLICA_ADMIN: &str = crate::support::ADMIN_KEY;

fn replica(database_url: &str, port: u16, dir: &std::path::Path) -> Replica {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_medic-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("PORT", port.to_string())
        .env("MEDIC_ADMIN_API_KEY", REPLICA_ADMIN)
        .env("MEDIC_LOG_FORMAT", "text")
        .env("MEDIC_LOG_LEVEL", "warn")
        .env("RATE_LIMIT_MANAGEMENT_REQUESTS", "1000000")
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("medic-server starts");
    Replica(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A JSON request to a replica; the response's `results`.
async fn call(
    client: &reqwest::Client,
    port: u16,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut rb = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{path}: {status} {body:#}");
    body["results"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_on_one_replica_reaches_an_agent_connected_to_another() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let client = reqwest::Client::new();
    let (pa, pb) = (free_port(), free_port());
    let _a = replica(&db.url, pa, dir.path());
    let _b = replica(&db.url, pb, dir.path());
    for port in [pa, pb] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("http://127.0.0.1:{port}/health/live"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "replica on {port} did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let post = reqwest::Method::POST;
    let key = |scope: &str| {
        let client = &client;
        let scope = scope.to_owned();
        async move {
            let body = json!({ "name": format!("replica-{scope}"), "scopes": [scope] });
            let r = call(
                client,
                pa,
                REPLICA_ADMIN,
                reqwest::Method::POST,
                "/v2/api-keys",
                Some(body),
            )
            .await;
            r["key"].as_str().unwrap().to_owned()
        }
    };
    let agent_key = key("agent").await;
    // Another person's key (keys made through the API are the bootstrap admin's).
    let writer =
        crate::support::key_for_owner(&*db.store, "replica-writer", &["write", "run"]).await;
    let script = call(
        &client,
        pa,
        &writer,
        post.clone(),
        "/v2/scripts",
        Some(json!({ "name": "greet", "interpreter": "sh", "content": GREET })),
    )
    .await;
    let script_id = script["script_id"].as_i64().unwrap();
    call(
        &client,
        pa,
        REPLICA_ADMIN,
        post.clone(),
        &format!("/v2/scripts/{script_id}/approve"),
        Some(json!({})),
    )
    .await;

    // The agent talks to B only, heartbeating every 20 s (the server's interval caps its 30),
    // so only B's queue poll can bring it a run queued on A within seconds.
    let _agent = AgentProcess::start_with_env(
        &format!("127.0.0.1:{pb}"),
        &agent_key,
        "far-1",
        "[[allow]]\nscript = \"greet\"\n",
        &[("MEDIC_AGENT_HEARTBEAT_INTERVAL_SECONDS", "30")],
    );
    wait_for_agent(
        &client,
        &format!("http://127.0.0.1:{pa}"),
        "far-1",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;
    // Let the session get past its start: its first heartbeat is recorded (the session's own
    // dispatch came before it), and a run queued on B itself, delivered by the same session
    // loop after that heartbeat's dispatch, has ended. From then on only B's queue poll (or a
    // heartbeat 20 s away) sends the agent anything.
    let a_base = format!("http://127.0.0.1:{pa}");
    let agent = admin_get(&client, &a_base, "/v2/agents/far-1")
        .await
        .unwrap();
    let service = agent["service_id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = admin_get(
            &client,
            &a_base,
            &format!("/v2/services/{service}/heartbeats?limit=1"),
        )
        .await
        .unwrap();
        if page["entries"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat from the agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let local = call(
        &client,
        pb,
        &writer,
        post.clone(),
        "/v2/runs",
        Some(json!({ "agent_id": "far-1", "script_id": script_id, "parameters": { "WHO": "A" } })),
    )
    .await;
    let done = |r: &Value| r["status"] == "succeeded";
    run_until(
        &a_base,
        &client,
        local["run_id"].as_str().unwrap(),
        "succeeded",
        done,
    )
    .await;
    let queued_at = Instant::now();
    let run = call(
        &client,
        pa,
        &writer,
        post.clone(),
        "/v2/runs",
        Some(json!({ "agent_id": "far-1", "script_id": script_id, "parameters": { "WHO": "B" } })),
    )
    .await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let run = run_until(
        &format!("http://127.0.0.1:{pa}"),
        &client,
        &run_id,
        "succeeded",
        done,
    )
    .await;
    assert_eq!(run["stdout"], "hello B\n");
    assert!(
        queued_at.elapsed() < Duration::from_secs(10),
        "took {:?}: not the queue poll",
        queued_at.elapsed()
    );
}

/// Labels select the hosts a run reaches, so an agent carries only the labels its key grants:
/// a rogue key connecting as a new id with `tier = "web"` gets no label-targeted run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_give_itself_labels_its_key_does_not_grant() {
    let app = TestApp::spawn().await;
    let granted = app
        .create_key_with(
            &json!({ "name": "web-1", "scopes": ["agent"], "labels": { "tier": "web" } }),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let rogue = app.create_key(&["agent"]).await;
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    approved_script(&app, &writer, "where", "echo \"on $MEDIC_AGENT_ID\"\n").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let extra = "tier = \"web\"\n[[allow]]\nscript = \"where\"\n";
    let _honest = AgentProcess::start_with(&addr, &granted, "web-1", extra);
    let _rogue = AgentProcess::start_with(&addr, &rogue, "rogue-1", extra);
    connected(&app, "web-1").await;
    connected(&app, "rogue-1").await;

    let labels_of = |id: &'static str| {
        let app = &app;
        async move {
            let r = app.admin().get(&format!("/v2/agents/{id}")).await;
            assert_ok(&r, 200)["labels"].clone()
        }
    };
    assert_eq!(labels_of("web-1").await, json!({ "tier": "web" }));
    assert_eq!(labels_of("rogue-1").await, json!({}));
    let r = app.admin().get("/v2/agents?label.tier=web").await;
    let ids: Vec<Value> = assert_ok(&r, 200)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].clone())
        .collect();
    assert_eq!(ids, [json!("web-1")]);

    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/runs",
            &json!({ "labels": { "tier": "web" }, "script": "where" }),
        )
        .await;
    let out = assert_ok(&r, 201);
    let runs = out["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{out:#}");
    assert_eq!(runs[0]["agent_id"], "web-1");
    let run = finished(&app, runs[0]["run_id"].as_str().unwrap()).await;
    assert_eq!(run["stdout"], "on web-1\n");

    // Labels are granted to agent keys only.
    let r = app
        .admin()
        .post_json(
            "/v2/api-keys",
            &json!({ "name": "x", "scopes": ["write"], "labels": { "tier": "web" } }),
        )
        .await;
    assert_error(
        &r,
        400,
        "labels are granted only to keys with the agent scope.",
    );
}
