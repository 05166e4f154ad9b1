//! The playbook engine end to end: executions started through the engine of a real server
//! (SQLite, and PostgreSQL when configured), webhook steps against a local recorder, durable
//! timers driven by the server's manual clock, decisions through the HTTP API, restarts.

use std::sync::Arc;
use std::time::Duration;

use medic_server::domain::ServiceId;
use medic_server::engine::{Engine, StartRequest};
use medic_server::playbook::plan::content_sha256;
use medic_server::store::{AuditFilter, ExecutionTrigger, PageRequest, PinnedVersion, Store};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::db::TestDb;
use crate::support::{Builder, TestApp, assert_error_contains, assert_ok};
use crate::support_recorder::{Answer, Recorder};

/// Each check once per backend: `playbook_engine::sqlite::<check>` and `…::postgres::<check>`.
macro_rules! both {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(None).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = crate::db::postgres().await else { return };
                    super::$check(Some(db)).await;
                }
            )*
        }
    };
}

both! {
    webhook_steps_reach_the_receiver_once_each_with_their_idempotency_key,
    a_wait_and_a_condition_are_durable_timers_on_the_clock,
    a_condition_that_is_never_met_fails_the_step_and_follows_on_failure,
    required_approval_is_four_eyes_and_expires,
    a_timed_approval_proceeds_unless_rejected,
    fifty_concurrent_decisions_on_one_execution_have_one_winner,
    a_blocked_address_is_refused_by_the_guard_with_a_clear_step_error,
    a_restart_mid_execution_resumes_and_runs_no_step_twice,
    the_circuit_breaker_records_executions_over_the_limit_as_skipped,
    execution_routes_refuse_bad_input,
    script_steps_run_on_real_agents_through_the_runs_machinery,
    a_run_ending_on_a_real_agent_moves_its_execution_on_at_once,
    slack_buttons_approve_and_reject_executions,
    cancelling_an_execution_cancels_its_queued_agent_runs,
    a_script_step_runs_the_version_approved_when_the_execution_started,
    the_audit_log_filters_by_execution_and_housekeeping_drops_entries_after_90_days,
    the_engine_runs_at_most_its_concurrency_of_steps_at_once,
}

/// A server on `db` (SQLite in a temporary directory when `None`) with a manual clock,
/// webhook steps allowed to reach loopback receivers, and `tweak` applied.
struct Env {
    app: TestApp,
    _db: Option<TestDb>,
}

fn builder(db: Option<&TestDb>) -> Builder {
    let url = db.map(|d| d.url.clone());
    TestApp::builder().manual_clock().configure(move |c| {
        if let Some(url) = url {
            c.database_url = url.parse().expect("database url");
        }
        c.notify.allow_private_webhook_targets = true;
        c.playbook.allow_private_targets = true;
    })
}

async fn env(db: Option<TestDb>) -> Env {
    let app = builder(db.as_ref()).spawn().await;
    Env { app, _db: db }
}

fn pinned(playbook_id: i64, yaml: &str) -> PinnedVersion {
    PinnedVersion {
        playbook_id,
        name: format!("pb-{playbook_id}"),
        version: 1,
        sha256: content_sha256(yaml),
        source: yaml.to_owned(),
    }
}

fn request(yaml: &str, service: Option<i64>, requested_by: Option<&str>) -> StartRequest {
    StartRequest {
        pinned: pinned(1, yaml),
        service_id: service.map(ServiceId),
        alert_id: None,
        trigger: ExecutionTrigger::Manual,
        requested_by: requested_by.map(str::to_owned),
        requester_key: None,
        actor: None,
        variables: serde_json::Map::new(),
    }
}

async fn start_on(engine: &Engine, yaml: &str, service: Option<i64>, by: Option<&str>) -> i64 {
    engine
        .start(request(yaml, service, by))
        .await
        .unwrap_or_else(|e| panic!("start: {e}"))
        .id
}

async fn get(app: &TestApp, id: i64) -> Value {
    let r = app.admin().get(&format!("/v2/executions/{id}")).await;
    assert_ok(&r, 200)
}

/// Polls the execution until `done` holds (10 s at most) and returns it.
async fn wait_until(app: &TestApp, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = get(app, id).await;
        if done(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "execution never {what}: {e:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_status(app: &TestApp, id: i64, status: &str) -> Value {
    wait_until(app, id, status, |e| e["status"] == status).await
}

async fn audit_actions(store: &Arc<dyn Store>, id: i64) -> Vec<String> {
    let f = AuditFilter {
        execution_id: Some(id),
        ..AuditFilter::default()
    };
    let page = PageRequest {
        limit: 100,
        offset: 0,
    };
    let mut e = store.list_audit(&f, page).await.expect("audit").entries;
    e.reverse();
    e.into_iter().map(|e| e.action_type).collect()
}

fn keys_seen(rec: &Recorder) -> Vec<String> {
    rec.requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("-").to_owned())
        .collect()
}

async fn webhook_steps_reach_the_receiver_once_each_with_their_idempotency_key(db: Option<TestDb>) {
    let e = env(db).await;
    let rec = Recorder::start().await;
    rec.push(Answer::json(202, json!({ "accepted": true })));
    let yaml = format!(
        "name: notify-twice\nsteps:\n  - name: first\n    type: webhook\n    url: {}\n    \
         headers:\n      X-Service: ${{SERVICE_NAME}}\n    body: {{execution: '${{EXECUTION_ID}}'}}\n  \
         - name: second\n    type: webhook\n    url: {}\n    body: \"first answered ${{steps.first.http_status}}\"\n",
        rec.url("/hooks/one"),
        rec.url("/hooks/two")
    );
    let service = e.app.register("billing-nightly", 60).await;
    let id = start_on(&e.app.engine(), &yaml, Some(service), Some("key:a")).await;
    let done = wait_status(&e.app, id, "completed").await;

    let seen = rec.requests();
    assert_eq!(keys_seen(&rec), [format!("{id}:0"), format!("{id}:1")]);
    assert_eq!(seen[0].path, "/hooks/one");
    assert_eq!(seen[0].header("x-service"), Some("it"));
    assert_eq!(seen[0].json(), json!({ "execution": id.to_string() }));
    assert_eq!(seen[1].body_text(), "first answered 202");
    let steps = done["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["status"], "completed");
    assert_eq!(steps[0]["http_status"], 202);
    assert_eq!(steps[0]["output"], r#"{"accepted":true}"#);
    assert_eq!(steps[1]["status"], "completed");
    assert_eq!(done["service_id"], service);
    assert_eq!(done["trigger"], "manual");
    assert!(done["finished_at"].is_string());
    let store = e.app.store().await;
    assert_eq!(
        audit_actions(&store, id).await,
        [
            "execution_started",
            "step_completed",
            "step_completed",
            "execution_completed"
        ]
    );
    // Nothing is sent again later.
    e.app.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec.requests().len(), 2);
}

async fn a_wait_and_a_condition_are_durable_timers_on_the_clock(db: Option<TestDb>) {
    let e = env(db).await;
    let rec = Recorder::start().await;
    let service = e.app.register("cache-warm", 60).await;
    let yaml = format!(
        "name: wait-verify\nsteps:\n  - name: grace\n    type: wait\n    duration: 10m\n  \
         - name: back\n    type: condition\n    check: {{heartbeat_received: {{min_count: 1, status: UP}}}}\n    \
         within: 5m\n    every: 30s\n  - name: tell\n    type: webhook\n    url: {}\n",
        rec.url("/done")
    );
    let id = start_on(&e.app.engine(), &yaml, Some(service), None).await;
    let waiting = wait_status(&e.app, id, "waiting").await;
    assert_eq!(waiting["steps"][0]["name"], "grace");
    // Short of the wait: nothing moves.
    e.app.advance(Duration::from_secs(599));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let still = get(&e.app, id).await;
    assert_eq!(
        still["steps"].as_array().map(Vec::len),
        Some(1),
        "{still:#}"
    );
    e.app.advance(Duration::from_secs(1));
    // The condition is checked at once and found unmet: it waits for its next check.
    let checking = wait_until(&e.app, id, "checking", |x| {
        x["steps"][1]["status"] == "waiting"
    })
    .await;
    assert!(
        checking["steps"][1]["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("0 of 1")),
        "{checking:#}"
    );
    let r = e
        .app
        .admin()
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "cache-warm", "status": "UP" }),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    assert!(rec.requests().is_empty());
    e.app.advance(Duration::from_secs(30));
    let done = wait_status(&e.app, id, "completed").await;
    assert_eq!(done["steps"][1]["status"], "completed");
    assert_eq!(rec.requests().len(), 1);
}

async fn a_condition_that_is_never_met_fails_the_step_and_follows_on_failure(db: Option<TestDb>) {
    let e = env(db).await;
    let service = e.app.register("never-back", 60).await;
    let yaml = "name: verify\nsteps:\n  - name: up\n    type: condition\n    \
                check: {service_up: {}}\n    within: 1m\n    every: 30s\n    on_failure: continue\n  \
                - name: back\n    type: condition\n    check: {heartbeat_received: {min_count: 1}}\n    \
                within: 1m\n    every: 30s\n";
    let id = start_on(&e.app.engine(), yaml, Some(service), None).await;
    wait_until(&e.app, id, "checked", |x| x["status"] == "waiting").await;
    for _ in 0..2 {
        e.app.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = wait_until(&e.app, id, "at step 2", |x| {
        x["steps"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert_eq!(second["steps"][0]["status"], "failed");
    assert!(
        second["steps"][0]["error"]
            .as_str()
            .is_some_and(|m| m.starts_with("condition not met within 1m")),
        "{second:#}"
    );
    for _ in 0..2 {
        e.app.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = wait_status(&e.app, id, "failed").await;
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|m| m.contains("step `back` failed")),
        "{failed:#}"
    );
}

const APPROVED_WEBHOOK: &str = "name: guarded\napproval: required\nsteps:\n  - name: call\n    \
                                type: webhook\n    url: URL\n";

async fn required_approval_is_four_eyes_and_expires(db: Option<TestDb>) {
    let e = env(db).await;
    let rec = Recorder::start().await;
    let yaml = APPROVED_WEBHOOK.replace("URL", &rec.url("/x"));
    // Alice requests it; her second key is no second pair of eyes.
    let requester = e.app.create_key_for("alice", &["read", "write"]).await;
    let second_key = e.app.create_key_for("alice", &["read", "write"]).await;
    let alice = e
        .app
        .store()
        .await
        .find_key_owner("alice")
        .await
        .expect("owner")
        .expect("alice");
    let owner = format!("owner:{}", alice.id.0);
    let engine = e.app.engine();
    let id = start_on(&engine, &yaml, None, Some(&owner)).await;
    let pending = get(&e.app, id).await;
    assert_eq!(pending["status"], "pending_approval");
    assert!(pending["wake_at"].is_string());

    // The requester cannot approve their own execution.
    let r = e
        .app
        .with_key(&requester)
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_error_contains(&r, 403, "cannot approve");
    let r = e
        .app
        .with_key(&second_key)
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_error_contains(&r, 403, "cannot approve");
    assert!(rec.requests().is_empty());
    // Someone else can; it then runs.
    let r = e
        .app
        .admin()
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    let body = assert_ok(&r, 200);
    assert_eq!(body["approval"]["outcome"], "approved");
    assert_eq!(body["approval"]["by"], "owner:bootstrap");
    wait_status(&e.app, id, "completed").await;
    assert_eq!(keys_seen(&rec), [format!("{id}:0")]);
    // Deciding again is refused.
    let r = e
        .app
        .admin()
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_error_contains(&r, 409, "completed");

    // Rejected: cancelled, with the reason, and nothing runs.
    let rejected = start_on(&engine, &yaml, None, Some(&owner)).await;
    let r = e
        .app
        .admin()
        .post_json(
            &format!("/v2/executions/{rejected}/reject"),
            &json!({ "reason": "not during the sale" }),
        )
        .await;
    let body = assert_ok(&r, 200);
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["approval"]["outcome"], "rejected");
    assert_eq!(body["approval"]["reason"], "not during the sale");

    // Not decided within the maximum (24 h): expired, nothing runs.
    let expiring = start_on(&engine, &yaml, None, Some(&owner)).await;
    e.app.advance(Duration::from_secs(24 * 3600));
    let expired = wait_status(&e.app, expiring, "expired").await;
    assert_eq!(expired["approval"]["outcome"], "expired");
    assert_eq!(rec.requests().len(), 1);
    let store = e.app.store().await;
    assert_eq!(
        audit_actions(&store, id).await,
        [
            "approval_requested",
            "approved",
            "execution_started",
            "step_completed",
            "execution_completed"
        ]
    );
    assert_eq!(
        audit_actions(&store, rejected).await,
        ["approval_requested", "rejected"]
    );
    assert_eq!(
        audit_actions(&store, expiring).await,
        ["approval_requested", "execution_expired"]
    );
}

async fn a_timed_approval_proceeds_unless_rejected(db: Option<TestDb>) {
    let e = env(db).await;
    let rec = Recorder::start().await;
    let yaml = APPROVED_WEBHOOK
        .replace("URL", &rec.url("/x"))
        .replace("approval: required", "approval: timeout:5m");
    let engine = e.app.engine();
    let id = start_on(&engine, &yaml, None, Some("key:a")).await;
    let cancelled = start_on(&engine, &yaml, None, Some("key:a")).await;
    let r = e
        .app
        .admin()
        .post_json(
            &format!("/v2/executions/{cancelled}/cancel"),
            &json!({ "reason": "handled by hand" }),
        )
        .await;
    assert_eq!(assert_ok(&r, 200)["status"], "cancelled");
    e.app.advance(Duration::from_secs(299));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&e.app, id).await["status"], "pending_approval");
    e.app.advance(Duration::from_secs(1));
    let done = wait_status(&e.app, id, "completed").await;
    assert_eq!(done["approval"]["outcome"], "timed_out");
    assert_eq!(keys_seen(&rec), [format!("{id}:0")]);
    assert_eq!(get(&e.app, cancelled).await["status"], "cancelled");
}

async fn fifty_concurrent_decisions_on_one_execution_have_one_winner(db: Option<TestDb>) {
    let e = env(db).await;
    let rec = Recorder::start().await;
    let yaml = APPROVED_WEBHOOK.replace("URL", &rec.url("/x"));
    let id = start_on(&e.app.engine(), &yaml, None, Some("key:someone-else")).await;
    let app = Arc::new(e.app);
    let mut calls = Vec::new();
    for i in 0..50 {
        let app = Arc::clone(&app);
        calls.push(tokio::spawn(async move {
            let path = match i % 3 {
                0 => format!("/v2/executions/{id}/approve"),
                1 => format!("/v2/executions/{id}/reject"),
                _ => format!("/v2/executions/{id}/cancel"),
            };
            let r = app
                .admin()
                .post_json(&path, &json!({ "reason": format!("call {i}") }))
                .await;
            r.status.as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.expect("call"));
    }
    let wins = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    // The approval is decided exactly once. A cancel may legitimately win afterwards against
    // the running execution (cancel works in every state that has not ended), but never a
    // second approval decision; and every accepted call is exactly one committed transition.
    let store = app.store().await;
    let audit = audit_actions(&store, id).await;
    let count = |a: &str| audit.iter().filter(|x| *x == a).count();
    let approval_decisions = count("approved") + count("rejected");
    let cancels = count("execution_cancelled");
    assert!(approval_decisions <= 1, "{audit:?}");
    assert!(cancels <= 1, "{audit:?}");
    assert_eq!(wins, approval_decisions + cancels, "{statuses:?} {audit:?}");
    if approval_decisions == 0 {
        assert_eq!(cancels, 1, "nobody decided: {audit:?}");
    }
    if count("rejected") == 1 {
        assert_eq!(
            cancels, 0,
            "a rejected execution was cancelled again: {audit:?}"
        );
    }
}

/// PostgreSQL only: two replicas need a database they can share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_reject_racing_across_two_replicas_have_one_winner() {
    // Two servers on one database, each taking half of 50 approve/reject calls.
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let first = builder(Some(&db)).spawn().await;
    let second = builder(Some(&db)).spawn().await;
    let rec = Recorder::start().await;
    let yaml = APPROVED_WEBHOOK.replace("URL", &rec.url("/x"));
    let id = start_on(&first.engine(), &yaml, None, Some("key:someone-else")).await;
    let apps = Arc::new([first, second]);
    let mut calls = Vec::new();
    for i in 0..50 {
        let apps = Arc::clone(&apps);
        calls.push(tokio::spawn(async move {
            let verb = if i % 2 == 0 { "approve" } else { "reject" };
            let r = apps[(i / 2) % 2]
                .admin()
                .post_json(
                    &format!("/v2/executions/{id}/{verb}"),
                    &json!({ "reason": format!("call {i}") }),
                )
                .await;
            r.status.as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.expect("call"));
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let store = apps[0].store().await;
    let audit = audit_actions(&store, id).await;
    let decisions = audit
        .iter()
        .filter(|a| *a == "approved" || *a == "rejected")
        .count();
    assert_eq!(decisions, 1, "{audit:?}");
}

async fn a_blocked_address_is_refused_by_the_guard_with_a_clear_step_error(db: Option<TestDb>) {
    // The guard in force: loopback receivers are not allowed.
    let url = db.as_ref().map(|d| d.url.clone());
    let app = TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            if let Some(url) = url {
                c.database_url = url.parse().expect("database url");
            }
        })
        .spawn()
        .await;
    let rec = Recorder::start().await;
    let yaml = format!(
        "name: blocked\nsteps:\n  - name: internal\n    type: webhook\n    url: {}\n",
        rec.url("/metadata")
    );
    let id = start_on(&app.engine(), &yaml, None, None).await;
    let failed = wait_status(&app, id, "failed").await;
    let error = failed["steps"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Invalid webhook URL") && error.contains("guard"),
        "{failed:#}"
    );
    assert_eq!(failed["steps"][0]["status"], "failed");
    assert!(rec.requests().is_empty(), "the guard let a request through");
    drop(app);
    drop(db);
}

async fn a_restart_mid_execution_resumes_and_runs_no_step_twice(db: Option<TestDb>) {
    let e = env(db).await;
    let rec = Recorder::start().await;
    let yaml = format!(
        "name: before-and-after\nsteps:\n  - name: before\n    type: webhook\n    url: {0}\n  \
         - name: pause\n    type: wait\n    duration: 10m\n  - name: after\n    type: webhook\n    url: {0}\n",
        rec.url("/step")
    );
    let id = start_on(&e.app.engine(), &yaml, None, None).await;
    wait_status(&e.app, id, "waiting").await;
    assert_eq!(keys_seen(&rec), [format!("{id}:0")]);

    let Env { app, _db: db } = e;
    let client = app.client.clone();
    let stopped = app.shutdown().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let restarted = medic_server::server::start_with_clock(
        stopped.config.clone(),
        listener,
        stopped.clock.clone(),
    )
    .await
    .expect("server restarts");
    let base = format!("http://{}", restarted.addr);
    stopped.clock.advance(Duration::from_secs(600));
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = loop {
        let r = client
            .get(format!("{base}/v2/executions/{id}"))
            .bearer_auth(crate::support::ADMIN_KEY)
            .send()
            .await
            .expect("get");
        let v: Value = r.json().await.expect("json");
        if v["results"]["status"] == "completed" {
            break v["results"].clone();
        }
        assert!(Instant::now() < deadline, "not resumed: {v:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(done["steps"].as_array().map(Vec::len), Some(3));
    assert_eq!(keys_seen(&rec), [format!("{id}:0"), format!("{id}:2")]);
    restarted.shutdown().await;
    drop(stopped);
    drop(db);
}

async fn the_circuit_breaker_records_executions_over_the_limit_as_skipped(db: Option<TestDb>) {
    let app = builder(db.as_ref())
        .configure(|c| c.playbook.limits.per_service = 2)
        .spawn()
        .await;
    let service = app.register("flappy", 60).await;
    let other = app.register("steady", 60).await;
    let yaml = "name: quick\nsteps:\n  - name: pause\n    type: wait\n    duration: 1s\n";
    let engine = app.engine();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = engine
            .start(request(yaml, Some(service), None))
            .await
            .expect("start");
        statuses.push(r.status);
    }
    assert_eq!(statuses, ["waiting", "waiting", "skipped"]);
    // Another service has its own count.
    let r = engine
        .start(request(yaml, Some(other), None))
        .await
        .expect("start");
    assert_eq!(r.status, "waiting");
    let skipped = app
        .admin()
        .get(&format!(
            "/v2/executions?service_id={service}&status=skipped"
        ))
        .await;
    let page = assert_ok(&skipped, 200);
    assert_eq!(page["total_count"], 1);
    let entry = &page["entries"][0];
    assert!(
        entry["error"]
            .as_str()
            .is_some_and(|m| m.contains("circuit breaker open (service scope")),
        "{entry:#}"
    );
    let store = app.store().await;
    let id = entry["execution_id"].as_i64().expect("id");
    assert_eq!(audit_actions(&store, id).await, ["execution_skipped"]);
    // An hour later the window has room again.
    app.advance(Duration::from_secs(3600));
    let r = engine
        .start(request(yaml, Some(service), None))
        .await
        .expect("start");
    assert_eq!(r.status, "waiting");
    drop(app);
    drop(db);
}

async fn execution_routes_refuse_bad_input(db: Option<TestDb>) {
    let e = env(db).await;
    let app = &e.app;
    for (query, fragment) in [
        ("status=bogus", "status must be one of"),
        ("trigger=cron", "trigger must be one of"),
        ("playbook_id=0", "playbook_id"),
        ("start_date=yesterday", "start_date"),
    ] {
        let r = app.admin().get(&format!("/v2/executions?{query}")).await;
        assert_error_contains(&r, 400, fragment);
    }
    let r = app.admin().get("/v2/executions/abc").await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.body);
    let r = app.admin().get("/v2/executions/999").await;
    assert_error_contains(&r, 404, "No execution 999");
    let r = app.admin().post("/v2/executions/999/approve").await;
    assert_error_contains(&r, 404, "No execution 999");
    let yaml = "name: slow\napproval: required\nsteps:\n  - name: pause\n    type: wait\n    duration: 1m\n";
    let id = start_on(&app.engine(), yaml, None, Some("key:x")).await;
    let r = app
        .admin()
        .post_json(&format!("/v2/executions/{id}/reject"), &json!({}))
        .await;
    assert_error_contains(&r, 400, "reason is required");
    let r = app
        .admin()
        .post_json(
            &format!("/v2/executions/{id}/reject"),
            &json!({ "reason": "x", "extra": 1 }),
        )
        .await;
    assert_error_contains(&r, 400, "unknown field");
    let reader = app.create_key(&["read"]).await;
    let r = app
        .with_key(&reader)
        .post(&format!("/v2/executions/{id}/cancel"))
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    // Nothing above changed it.
    let still = get(app, id).await;
    assert_eq!(still["status"], "pending_approval");
    let r = app
        .admin()
        .post(&format!("/v2/executions/{id}/cancel"))
        .await;
    assert_eq!(assert_ok(&r, 200)["status"], "cancelled");
    let r = app
        .admin()
        .post(&format!("/v2/executions/{id}/cancel"))
        .await;
    assert_error_contains(&r, 409, "already cancelled");
    let list = assert_ok(
        &app.admin().get("/v2/executions?status=cancelled").await,
        200,
    );
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["entries"][0]["execution_id"], id);
}

/// A `medic-server` process, killed (SIGKILL) when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PostgreSQL only: the worker process is killed with SIGKILL while two webhooks are in flight;
/// another server takes the executions over once their leases have run out. The step that is
/// not `idempotent` ends `interrupted` and is never sent again; the idempotent one is sent again
/// with the same `Idempotency-Key`; both executions go on to their next step, which runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_webhook_is_taken_over_without_sending_a_step_twice() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let rec = Recorder::start().await;
    // The first two requests are never answered in time: the worker dies holding them.
    rec.answer(Answer::json(200, json!({})).after(Duration::from_secs(60)));
    let yaml = |idempotent: bool| {
        format!(
            "name: kill-{idempotent}\nsteps:\n  - name: first\n    type: webhook\n    url: {0}\n    \
             timeout: 30s\n    idempotent: {idempotent}\n    on_failure: continue\n  \
             - name: second\n    type: webhook\n    url: {0}\n",
            rec.url("/step")
        )
    };
    let engine = Engine::new(
        db.store.clone(),
        medic_server::clock::Clock::system(),
        medic_server::engine::EngineSettings::default(),
    );
    let plain = start_on(&engine, &yaml(false), None, None).await;
    let repeatable = start_on(&engine, &yaml(true), None, None).await;

    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let worker = Process(
        std::process::Command::new(env!("CARGO_BIN_EXE_medic-server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("PORT", port.to_string())
            .env("MEDIC_ADMIN_API_KEY", crate::support::ADMIN_KEY)
            .env("MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
            .env("MEDIC_PLAYBOOK_LEASE_SECONDS", "5")
            .env("MEDIC_PLAYBOOK_RECHECK_SECONDS", "1")
            .env("MEDIC_LOG_LEVEL", "warn")
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("medic-server starts"),
    );
    let seen = rec.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 2, "the worker never sent the first steps");
    drop(worker);
    rec.answer(Answer::json(200, json!({})));
    let first_keys = keys_seen(&rec);

    // Another server, whose clock is past the dead worker's leases, takes over.
    let url = db.url.clone();
    let app = TestApp::builder()
        .manual_clock_at(medic_server::domain::Timestamp::now().plus_millis(120_000))
        .configure(move |c| {
            c.database_url = url.parse().expect("database url");
            c.notify.allow_private_webhook_targets = true;
            c.playbook.allow_private_targets = true;
        })
        .spawn()
        .await;
    let done = wait_status(&app, plain, "completed").await;
    assert_eq!(done["steps"][0]["status"], "interrupted");
    assert!(
        done["steps"][0]["error"]
            .as_str()
            .is_some_and(|m| m.contains("not re-sent")),
        "{done:#}"
    );
    assert_eq!(done["steps"][1]["status"], "completed");
    let again = wait_status(&app, repeatable, "completed").await;
    assert_eq!(again["steps"][0]["status"], "completed");
    assert_eq!(again["steps"][0]["attempt"], 2);

    let mut keys = keys_seen(&rec);
    keys.sort();
    let mut want = vec![
        format!("{plain}:0"),
        format!("{plain}:1"),
        format!("{repeatable}:0"),
        format!("{repeatable}:0"),
        format!("{repeatable}:1"),
    ];
    want.sort();
    assert_eq!(keys, want, "first sent: {first_keys:?}");
    let attempts: Vec<_> = rec
        .requests()
        .iter()
        .filter(|r| r.header("idempotency-key") == Some(&format!("{repeatable}:0")))
        .map(|r| r.header("x-medic-attempt").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2"]);
    drop(app);
    drop(db);
}

/// PostgreSQL only: two servers drive 200 executions from one database (half started on each);
/// every webhook step is sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_database_send_each_step_exactly_once() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let rec = Recorder::start().await;
    let server = |db: &TestDb| {
        let url = db.url.clone();
        TestApp::builder().configure(move |c| {
            c.database_url = url.parse().expect("database url");
            c.notify.allow_private_webhook_targets = true;
            c.playbook.allow_private_targets = true;
            c.playbook.recheck = Duration::from_millis(200);
            c.playbook.limits.per_service = 1000;
            c.playbook.limits.global = 1000;
        })
    };
    let first = server(&db).spawn().await;
    let second = server(&db).spawn().await;
    let yaml = format!(
        "name: many\nsteps:\n  - name: one\n    type: webhook\n    url: {0}\n  \
         - name: two\n    type: webhook\n    url: {0}\n",
        rec.url("/many")
    );
    let mut ids = Vec::new();
    for i in 0..200 {
        let engine = if i % 2 == 0 {
            first.engine()
        } else {
            second.engine()
        };
        ids.push(start_on(&engine, &yaml, None, None).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = first
            .admin()
            .get("/v2/executions?status=completed&limit=1")
            .await;
        if assert_ok(&r, 200)["total_count"] == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not all executions completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keys = keys_seen(&rec);
    keys.sort();
    let mut want: Vec<String> = ids
        .iter()
        .flat_map(|id| [format!("{id}:0"), format!("{id}:1")])
        .collect();
    want.sort();
    assert_eq!(keys.len(), 400);
    assert_eq!(keys, want);
    drop(first);
    drop(second);
    drop(db);
}

async fn script_steps_run_on_real_agents_through_the_runs_machinery(db: Option<TestDb>) {
    // The system clock: the engine reads the runs of a step in flight every second.
    let url = db.as_ref().map(|d| d.url.clone());
    let app = TestApp::builder()
        .configure(move |c| {
            if let Some(url) = url {
                c.database_url = url.parse().expect("database url");
            }
        })
        .spawn()
        .await;
    // The key grants the label the step selects by.
    let agent_key = app
        .create_key_with(
            &json!({ "name": "runner-pb", "scopes": ["agent"], "labels": { "role": "it" } }),
        )
        .await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let writer = app.create_key_for("script-author", &["write"]).await;
    for (name, content) in [
        ("greet", "echo \"hello $MEDIC_PARAM_WHO\"\n"),
        ("fail", "echo broken >&2\nexit 3\n"),
    ] {
        let r = app
            .with_key(&writer)
            .post_json(
                "/v2/scripts",
                &json!({ "name": name, "interpreter": "sh", "content": content }),
            )
            .await;
        let id = assert_ok(&r, 201)["script_id"].as_i64().expect("id");
        let r = app
            .admin()
            .post_json(&format!("/v2/scripts/{id}/approve"), &json!({}))
            .await;
        assert_ok(&r, 200);
    }
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"greet\"\n[[allow]]\nscript = \"fail\"\n";
    let _agent = crate::agents::AgentProcess::start_with(&addr, &agent_key, "runner-pb", allow);
    crate::agents::wait_for_agent(
        &app.client,
        &app.base,
        "runner-pb",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;
    let yaml = "name: greet-hosts\nsteps:\n  - name: hello\n    type: script\n    script: greet\n    \
                on: {labels: {role: it}}\n    params: {WHO: \"${PLAYBOOK_NAME}\"}\n  \
                - name: broken\n    type: script\n    script: fail\n    on: {agent_ids: [runner-pb]}\n    \
                on_failure: continue\n";
    let id = start_on(&app.engine(), yaml, None, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let e = get(&app, id).await;
        if e["status"] == "completed" {
            break e;
        }
        assert!(Instant::now() < deadline, "never completed: {e:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hello = &done["steps"][0];
    assert_eq!(hello["status"], "completed", "{done:#}");
    assert_eq!(hello["exit_code"], 0);
    assert_eq!(hello["output"], "[runner-pb] hello pb-1\n");
    assert_eq!(hello["runs"][0]["run_id"], format!("{id}.0.0"));
    assert_eq!(hello["runs"][0]["agent_id"], "runner-pb");
    let broken = &done["steps"][1];
    assert_eq!(broken["status"], "failed", "{done:#}");
    assert_eq!(broken["exit_code"], 3);
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("code 3")),
        "{done:#}"
    );
    // The runs are ordinary agent runs, with the machine's ids.
    let r = app.admin().get(&format!("/v2/runs/{id}.0.0")).await;
    let run = assert_ok(&r, 200);
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["parameters"]["WHO"], "pb-1");
    assert_eq!(run["requested_by"], format!("playbook execution {id}"));
    let r = app.admin().get("/v2/runs?agent_id=runner-pb").await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 2);
    drop(app);
    drop(db);
}

async fn a_run_ending_on_a_real_agent_moves_its_execution_on_at_once(db: Option<TestDb>) {
    // The engine's own look at the runs is an hour away: only the ending the agent's session
    // stores can move the execution on before the test gives up.
    let url = db.as_ref().map(|d| d.url.clone());
    let app = TestApp::builder()
        .configure(move |c| {
            if let Some(url) = url {
                c.database_url = url.parse().expect("database url");
            }
            c.playbook.run_poll = Duration::from_secs(3600);
        })
        .spawn()
        .await;
    let agent_key = app
        .create_key_with(&json!({ "name": "runner-wake", "scopes": ["agent"] }))
        .await["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let writer = app.create_key_for("script-author", &["write"]).await;
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "greet", "interpreter": "sh", "content": "echo \"hello $MEDIC_PARAM_WHO\"\n" }),
        )
        .await;
    let script = assert_ok(&r, 201)["script_id"].as_i64().expect("id");
    let r = app
        .admin()
        .post_json(&format!("/v2/scripts/{script}/approve"), &json!({}))
        .await;
    assert_ok(&r, 200);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let allow = "[[allow]]\nscript = \"greet\"\n";
    let _agent = crate::agents::AgentProcess::start_with(&addr, &agent_key, "runner-wake", allow);
    crate::agents::wait_for_agent(
        &app.client,
        &app.base,
        "runner-wake",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;
    // Two steps, so the second run is queued by a claim the first one's ending caused.
    let yaml = "name: greet-twice\nsteps:\n  - name: first\n    type: script\n    script: greet\n    \
                on: {agent_ids: [runner-wake]}\n    params: {WHO: one}\n  \
                - name: second\n    type: script\n    script: greet\n    \
                on: {agent_ids: [runner-wake]}\n    params: {WHO: two}\n";
    let id = start_on(&app.engine(), yaml, None, None).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        let e = get(&app, id).await;
        if e["finished_at"].is_string() {
            break e;
        }
        assert!(Instant::now() < deadline, "never moved on: {e:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(done["steps"][0]["output"], "[runner-wake] hello one\n");
    assert_eq!(done["steps"][1]["output"], "[runner-wake] hello two\n");
    drop(app);
    drop(db);
}

async fn slack_buttons_approve_and_reject_executions(db: Option<TestDb>) {
    use hmac::{KeyInit, Mac};
    let app = builder(db.as_ref())
        .configure(|c| {
            c.slack_signing_secret = Some("slack-signing-secret".parse().expect("secret"));
        })
        .spawn()
        .await;
    let rec = Recorder::start().await;
    let yaml = APPROVED_WEBHOOK.replace("URL", &rec.url("/x"));
    let engine = app.engine();
    let press = |action: &str, id: i64, user: &str, secret: &str| {
        let payload = json!({"type": "block_actions", "user": {"id": user, "username": user},
            "actions": [{"action_id": action, "value": id.to_string()}]});
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("v0:{ts}:{body}").as_bytes());
        app.client
            .post(app.url("/v2/slack/interactions"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                format!("v0={}", hex::encode(mac.finalize().into_bytes())),
            )
            .body(body)
    };
    // Requested by the Slack user `dana`: she cannot approve it herself; a bad signature
    // changes nothing; `lee` can.
    let id = start_on(&engine, &yaml, None, Some("slack:dana")).await;
    let r = crate::support::send(press("approve_playbook", id, "lee", "wrong")).await;
    assert_eq!(r.status.as_u16(), 401);
    let r = crate::support::send(press(
        "approve_playbook",
        id,
        "dana",
        "slack-signing-secret",
    ))
    .await;
    assert_error_contains(&r, 403, "cannot approve");
    assert_eq!(get(&app, id).await["status"], "pending_approval");
    let r =
        crate::support::send(press("approve_playbook", id, "lee", "slack-signing-secret")).await;
    let approved = assert_ok(&r, 200);
    assert_eq!(approved["approval"]["by"], "slack:lee");
    wait_status(&app, id, "completed").await;

    let other = start_on(&engine, &yaml, None, Some("key:a")).await;
    let r = crate::support::send(press(
        "reject_playbook",
        other,
        "lee",
        "slack-signing-secret",
    ))
    .await;
    let rejected = assert_ok(&r, 200);
    assert_eq!(rejected["status"], "cancelled");
    assert_eq!(rejected["approval"]["outcome"], "rejected");
    let r = crate::support::send(press(
        "reject_playbook",
        other,
        "lee",
        "slack-signing-secret",
    ))
    .await;
    assert_error_contains(&r, 409, "already cancelled");
    let r = crate::support::send(press(
        "approve_playbook",
        9999,
        "lee",
        "slack-signing-secret",
    ))
    .await;
    assert_error_contains(&r, 404, "No execution 9999");
    assert_eq!(keys_seen(&rec), [format!("{id}:0")]);
    drop(app);
    drop(db);
}

async fn cancelling_an_execution_cancels_its_queued_agent_runs(db: Option<TestDb>) {
    let url = db.as_ref().map(|d| d.url.clone());
    let app = TestApp::builder()
        .configure(move |c| {
            if let Some(url) = url {
                c.database_url = url.parse().expect("database url");
            }
        })
        .spawn()
        .await;
    let writer = app.create_key_for("script-author", &["write"]).await;
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "fix", "interpreter": "sh", "content": "echo fixed\n" }),
        )
        .await;
    let script = assert_ok(&r, 201)["script_id"].as_i64().expect("id");
    assert_ok(
        &app.admin()
            .post_json(&format!("/v2/scripts/{script}/approve"), &json!({}))
            .await,
        200,
    );
    // A registered agent that is away: its run waits in the queue.
    let store = app.store().await;
    store
        .agent_connected(&medic_server::store::AgentConnection {
            id: "away-1".into(),
            hostname: "away-1.example.com".into(),
            agent_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            declared_labels: std::collections::BTreeMap::new(),
            key_labels: std::collections::BTreeMap::new(),
            session_id: "s1".into(),
            remote_addr: None,
            key_id: None,
            service_id: None,
            at: app.now(),
        })
        .await
        .expect("agent registered");
    let yaml = "name: fix-away\nsteps:\n  - name: fix\n    type: script\n    script: fix\n    \
                on: {agent_ids: [away-1]}\n";
    let id = start_on(&app.engine(), yaml, None, None).await;
    let run_id = format!("{id}.0.0");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.admin().get(&format!("/v2/runs/{run_id}")).await;
        if r.status.as_u16() == 200 {
            assert_eq!(assert_ok(&r, 200)["status"], "queued");
            break;
        }
        assert!(Instant::now() < deadline, "the run was never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&app, id).await["status"], "running");
    let r = app
        .admin()
        .post(&format!("/v2/executions/{id}/cancel"))
        .await;
    let cancelled = assert_ok(&r, 200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["steps"][0]["status"], "cancelled");
    // The sweep (every second) ends the run `expired`; it is never sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.admin().get(&format!("/v2/runs/{run_id}")).await;
        let run = assert_ok(&r, 200);
        if run["status"] == "expired" {
            break;
        }
        assert_eq!(run["status"], "queued", "{run:#}");
        assert!(Instant::now() < deadline, "the run stayed queued: {run:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(app);
    drop(db);
}

async fn a_script_step_runs_the_version_approved_when_the_execution_started(db: Option<TestDb>) {
    let e = env(db).await;
    let app = &e.app;
    let writer = app.create_key_for("script-author", &["write"]).await;
    let register = |content: &'static str| {
        let writer = writer.clone();
        async move {
            let r = app
                .with_key(&writer)
                .post_json(
                    "/v2/scripts",
                    &json!({ "name": "fix", "interpreter": "sh", "content": content }),
                )
                .await;
            assert_ok(&r, 201)["script_id"].as_i64().expect("id")
        }
    };
    let script = register("echo one\n").await;
    let yaml = "name: later-fix\nsteps:\n  - name: pause\n    type: wait\n    duration: 1m\n  \
                - name: fix\n    type: script\n    script: fix\n    on: {agent_ids: [away-1]}\n";
    // Not approved yet: the execution cannot start.
    let refused = app.engine().start(request(yaml, None, None)).await;
    assert!(
        matches!(&refused, Err(medic_server::engine::StartError::Script(m)) if m.contains("no approved version")),
        "{refused:?}"
    );
    assert_ok(
        &app.admin()
            .post_json(&format!("/v2/scripts/{script}/approve"), &json!({}))
            .await,
        200,
    );
    let store = app.store().await;
    store
        .agent_connected(&medic_server::store::AgentConnection {
            id: "away-1".into(),
            hostname: "away-1.example.com".into(),
            agent_version: "0.1.0".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            declared_labels: std::collections::BTreeMap::new(),
            key_labels: std::collections::BTreeMap::new(),
            session_id: "s1".into(),
            remote_addr: None,
            key_id: None,
            service_id: None,
            at: app.now(),
        })
        .await
        .expect("agent registered");
    let id = start_on(&app.engine(), yaml, None, None).await;
    wait_status(app, id, "waiting").await;
    // A newer version is registered and approved while the execution waits.
    register("echo two\n").await;
    let r = app
        .admin()
        .post_json(
            &format!("/v2/scripts/{script}/versions/2/approve"),
            &json!({}),
        )
        .await;
    assert_ok(&r, 200);
    app.advance(Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    let run = loop {
        let r = app.admin().get(&format!("/v2/runs/{id}.1.0")).await;
        if r.status.as_u16() == 200 {
            break assert_ok(&r, 200);
        }
        assert!(Instant::now() < deadline, "the run was never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(run["script_version"], 1, "{run:#}");
}

/// The audit entries of execution `id` through `GET /v2/audit-logs?execution_id=…`, as JSON
/// (the entries and `total_count`) and as CSV (the data rows and `X-Total-Count`).
async fn audit_of(app: &TestApp, id: i64) -> (Vec<Value>, i64, Vec<String>, u64) {
    let path = format!("/v2/audit-logs?execution_id={id}&limit=250");
    let page = assert_ok(&app.admin().get(&path).await, 200);
    let csv = crate::support::send(
        app.admin()
            .request(reqwest::Method::GET, &path)
            .header("accept", "text/csv"),
    )
    .await;
    assert_eq!(csv.status.as_u16(), 200, "{}", csv.body);
    assert!(
        csv.header("content-type")
            .is_some_and(|c| c.starts_with("text/csv")),
        "{:?}",
        csv.headers
    );
    let rows: Vec<String> = csv.body.lines().skip(1).map(str::to_owned).collect();
    (
        page["entries"].as_array().cloned().unwrap_or_default(),
        page["total_count"].as_i64().expect("total_count"),
        rows,
        csv.header_u64("x-total-count"),
    )
}

async fn the_audit_log_filters_by_execution_and_housekeeping_drops_entries_after_90_days(
    db: Option<TestDb>,
) {
    // The default retention (MEDIC_RETENTION_AUDIT_DAYS = 90).
    let e = env(db).await;
    let rec = Recorder::start().await;
    let yaml = format!(
        "name: audited\nsteps:\n  - name: call\n    type: webhook\n    url: {}\n",
        rec.url("/audited")
    );
    let old = start_on(&e.app.engine(), &yaml, None, Some("key:a")).await;
    wait_status(&e.app, old, "completed").await;
    // 60 days later (a housekeeping round runs and keeps everything), another execution.
    e.app.advance(Duration::from_secs(60 * 86_400));
    let recent = start_on(&e.app.engine(), &yaml, None, Some("key:a")).await;
    wait_status(&e.app, recent, "completed").await;

    // Each execution's entries, and only them, in JSON and in CSV.
    let want = ["execution_started", "step_completed", "execution_completed"];
    for id in [old, recent] {
        let (entries, total, rows, csv_total) = audit_of(&e.app, id).await;
        let mut actions: Vec<&str> = entries
            .iter()
            .map(|x| x["action_type"].as_str().unwrap_or(""))
            .collect();
        actions.sort_unstable();
        let mut expected = want.to_vec();
        expected.sort_unstable();
        assert_eq!(actions, expected, "{entries:#?}");
        assert!(
            entries.iter().all(|x| x["execution_id"] == id),
            "{entries:#?}"
        );
        assert_eq!(total, 3);
        assert_eq!(csv_total, 3);
        assert_eq!(rows.len(), 3, "{rows:?}");
        for row in &rows {
            let cols: Vec<&str> = row.split(',').collect();
            assert_eq!(cols[5], id.to_string(), "{row}");
        }
    }

    // 31 days more: the first execution's entries are 91 days old and go, the others stay.
    e.app.advance(Duration::from_secs(31 * 86_400));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (entries, total, rows, csv_total) = audit_of(&e.app, old).await;
        if total == 0 {
            assert!(entries.is_empty() && rows.is_empty());
            assert_eq!(csv_total, 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old audit entries never removed: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (entries, total, rows, _) = audit_of(&e.app, recent).await;
    assert_eq!(total, 3, "{entries:#?}");
    assert_eq!(rows.len(), 3);
}

/// A receiver that holds every request until the test lets one go, counting how many it holds
/// at once.
struct Gate {
    addr: std::net::SocketAddr,
    held: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    release: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start() -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (h, m, a, r) = (
            Arc::clone(&held),
            Arc::clone(&most),
            Arc::clone(&arrived),
            Arc::clone(&release),
        );
        let app = axum::Router::new().fallback(move || {
            let (h, m, a, r) = (h.clone(), m.clone(), a.clone(), r.clone());
            async move {
                a.fetch_add(1, SeqCst);
                let now = h.fetch_add(1, SeqCst) + 1;
                m.fetch_max(now, SeqCst);
                if let Ok(p) = r.acquire().await {
                    p.forget();
                }
                h.fetch_sub(1, SeqCst);
                a.fetch_add(1 << 16, SeqCst);
                "ok"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            held,
            most,
            arrived,
            release,
            task,
        }
    }

    /// Requests that arrived, and requests let go.
    fn counts(&self) -> (usize, usize) {
        let a = self.arrived.load(std::sync::atomic::Ordering::SeqCst);
        (a & 0xffff, a >> 16)
    }

    /// Waits until `passed` requests were let go and exactly `n` are held (10 s at most).
    async fn holding(&self, n: usize, passed: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.held.load(std::sync::atomic::Ordering::SeqCst) != n || self.counts().1 != passed
        {
            assert!(
                Instant::now() < deadline,
                "never {n} requests held at once (now {})",
                self.held.load(std::sync::atomic::Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `MEDIC_PLAYBOOK_CONCURRENCY` bounds the steps the engine runs at once: with 2, six
/// executions whose webhook steps are held by the receiver reach it two at a time, and each
/// request the receiver lets go makes room for exactly one more.
async fn the_engine_runs_at_most_its_concurrency_of_steps_at_once(db: Option<TestDb>) {
    use std::sync::atomic::Ordering::SeqCst;
    let app = builder(db.as_ref())
        .configure(|c| c.playbook.concurrency = 2)
        .spawn()
        .await;
    let gate = Gate::start().await;
    let yaml = format!(
        "name: bounded\nsteps:\n  - name: call\n    type: webhook\n    url: http://{}/hold\n",
        gate.addr
    );
    let engine = app.engine();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(start_on(&engine, &yaml, None, None).await);
    }
    for passed in 0..6_usize {
        gate.holding((6 - passed).min(2), passed).await;
        gate.release.add_permits(1);
    }
    for id in ids {
        wait_status(&app, id, "completed").await;
    }
    assert_eq!(gate.counts(), (6, 6));
    assert_eq!(
        gate.most.load(SeqCst),
        2,
        "more steps ran at once than allowed"
    );
    drop(app);
    drop(db);
}
