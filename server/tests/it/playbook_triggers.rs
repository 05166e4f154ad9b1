//! Starting playbooks end to end through HTTP, on SQLite and PostgreSQL: `POST
//! /v2/playbooks/{id}/execute` (scope, inputs, requester, audit, four-eyes by owner), the
//! webhook trigger (legacy secret and signed form with its replay window), and alert triggers
//! fired by the monitor when a real service goes down or a job fails.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::db::TestDb;
use crate::support::{Builder, TestApp, assert_error_contains, assert_ok, send};
use crate::support_recorder::Recorder;

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
    execute_validates_inputs_records_the_requester_and_answers_at_once,
    four_eyes_compares_owners_not_keys,
    the_webhook_trigger_checks_its_secret_and_signature,
    a_down_service_fires_its_playbooks_once_per_incident_with_cooldowns,
    consecutive_job_failures_are_counted_from_real_runs,
    breaker_trips_from_alert_starts_are_counted_in_the_metrics,
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

/// Stores `yaml` as a playbook; its id.
async fn store_playbook(app: &TestApp, yaml: &str) -> i64 {
    let r = app
        .admin()
        .post_json("/v2/playbooks", &json!({ "document": yaml }))
        .await;
    assert_ok(&r, 201)["playbook_id"]
        .as_i64()
        .expect("playbook id")
}

async fn executions(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.admin().get(&format!("/v2/executions?{query}")).await;
    assert_ok(&r, 200)["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

async fn wait_until(app: &TestApp, id: i64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.admin().get(&format!("/v2/executions/{id}")).await;
        let e = assert_ok(&r, 200);
        if done(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "execution never got there: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const WITH_INPUTS: &str = "name: restart-unit\ninputs:\n  unit:\n    type: string\n    \
    required: true\n  count:\n    type: integer\n    default: 1\nsteps:\n  - name: call\n    \
    type: webhook\n    url: URL/${unit}/${count}\n";

async fn execute_validates_inputs_records_the_requester_and_answers_at_once(db: Option<TestDb>) {
    let app = builder(db.as_ref()).spawn().await;
    let rec = Recorder::start().await;
    let id = store_playbook(&app, &WITH_INPUTS.replace("URL", &rec.url(""))).await;
    let path = format!("/v2/playbooks/{id}/execute");
    let runner = app.create_key_for("alice", &["run", "read"]).await;
    let writer = app.create_key_for("alice", &["write"]).await;

    // `write` does not run things; `run` (or admin) does.
    let r = app
        .with_key(&writer)
        .post_json(&path, &json!({"variables": {"unit": "api"}}))
        .await;
    assert_error_contains(&r, 403, "run");

    // Bad inputs: 400 naming the input; nothing starts.
    let bad: [(Value, &str); 5] = [
        (json!({}), "unit"),
        (json!({"variables": {"count": 2}}), "unit"),
        (
            json!({"variables": {"unit": "api", "count": "two"}}),
            "count",
        ),
        (json!({"variables": {"unit": "api", "bogus": 1}}), "bogus"),
        (json!({"variables": {"unit": 5}}), "unit"),
    ];
    for (body, name) in bad {
        let r = app.with_key(&runner).post_json(&path, &body).await;
        assert_error_contains(&r, 400, name);
        assert!(r.json()["problems"].is_array(), "{body}");
    }
    let r = app
        .with_key(&runner)
        .post_json(&path, &json!({"variables": [1]}))
        .await;
    assert_eq!(r.status.as_u16(), 400);
    let r = app
        .with_key(&runner)
        .post_json(&path, &json!({"variables": {"unit": "api"}, "extra": 1}))
        .await;
    assert_error_contains(&r, 400, "extra");
    let r = app
        .with_key(&runner)
        .post_json(
            &path,
            &json!({"variables": {"unit": "api"}, "service_id": 999}),
        )
        .await;
    assert_error_contains(&r, 404, "999");
    let r = app
        .with_key(&runner)
        .post_json(
            "/v2/playbooks/4242/execute",
            &json!({"variables": {"unit": "api"}}),
        )
        .await;
    assert_error_contains(&r, 404, "4242");
    assert!(executions(&app, "").await.is_empty());
    assert!(rec.requests().is_empty());

    // A good start: 201 at once, as COMPAT has it, then the run happens.
    let service = app.register("restart-target", 5).await;
    let r = app
        .with_key(&runner)
        .request(reqwest::Method::POST, &path)
        .header("x-actor", "alice at the laptop")
        .json(&json!({"service_id": service, "variables": {"unit": "api", "count": 3}}));
    let r = send(r).await;
    let started = assert_ok(&r, 201);
    let eid = started["execution_id"].as_i64().expect("execution id");
    assert_eq!(started["playbook_id"], id);
    assert_eq!(started["playbook_name"], "restart-unit");
    assert_eq!(started["service_id"], service);
    assert_eq!(started["status"], "running");
    let done = wait_until(&app, eid, |e| e["status"] == "completed").await;
    assert_eq!(rec.requests().len(), 1);
    assert_eq!(rec.requests()[0].path, "/api/3");
    assert_eq!(done["trigger"], "manual");
    let store = app.store().await;
    let alice = store
        .find_key_owner("alice")
        .await
        .expect("owner")
        .expect("alice");
    assert_eq!(done["requested_by"], format!("owner:{}", alice.id.0));
    let key_id = runner.split('_').nth(1).expect("key id");
    assert_eq!(done["requested_by_key"], key_id);

    // Audited, with the key, the owner and who said they acted.
    let r = app
        .admin()
        .get(&format!(
            "/v2/audit-logs?execution_id={eid}&action_type=execution_started"
        ))
        .await;
    let audit = assert_ok(&r, 200);
    let entry = &audit["entries"][0];
    assert!(
        entry["actor"].as_str().expect("actor").contains(key_id),
        "{entry}"
    );
    assert_eq!(entry["on_behalf_of"], "alice at the laptop");
    let details = entry["details"].to_string();
    assert!(details.contains(&alice.id.0), "{details}");
    assert!(details.contains("manual"), "{details}");

    // A disabled playbook starts nothing.
    assert_ok(
        &app.admin().delete(&format!("/v2/playbooks/{id}")).await,
        200,
    );
    let r = app
        .with_key(&runner)
        .post_json(&path, &json!({"variables": {"unit": "api"}}))
        .await;
    assert_error_contains(&r, 409, "disabled");
    assert_eq!(executions(&app, "").await.len(), 1);
    drop(app);
    drop(db);
}

const NEEDS_APPROVAL: &str = "name: guarded\napproval: required\nsteps:\n  - name: call\n    \
    type: webhook\n    url: URL\n";

async fn four_eyes_compares_owners_not_keys(db: Option<TestDb>) {
    let app = builder(db.as_ref()).spawn().await;
    let rec = Recorder::start().await;
    let id = store_playbook(&app, &NEEDS_APPROVAL.replace("URL", &rec.url("/x"))).await;
    let alice_runs = app.create_key_for("alice", &["run", "read"]).await;
    let alice_writes = app.create_key_for("alice", &["write"]).await;
    let bob = app.create_key_for("bob", &["write"]).await;
    let r = app
        .with_key(&alice_runs)
        .post_json(&format!("/v2/playbooks/{id}/execute"), &json!({}))
        .await;
    let started = assert_ok(&r, 201);
    assert_eq!(started["status"], "pending_approval");
    let eid = started["execution_id"].as_i64().expect("id");
    // Alice's other key is still Alice.
    let r = app
        .with_key(&alice_writes)
        .post(&format!("/v2/executions/{eid}/approve"))
        .await;
    assert_error_contains(&r, 403, "cannot approve");
    assert!(rec.requests().is_empty());
    // Bob is a second pair of eyes.
    let r = app
        .with_key(&bob)
        .post(&format!("/v2/executions/{eid}/approve"))
        .await;
    let approved = assert_ok(&r, 200);
    assert!(
        approved["approval"]["by"]
            .as_str()
            .expect("by")
            .starts_with("owner:")
    );
    wait_until(&app, eid, |e| e["status"] == "completed").await;
    assert_eq!(rec.requests().len(), 1);
    drop(app);
    drop(db);
}

async fn the_webhook_trigger_checks_its_secret_and_signature(db: Option<TestDb>) {
    // Signatures are remembered per process: each backend's run has its own secret.
    let secret: &'static str = if db.is_some() {
        "webhook-secret-postgres-0123456789"
    } else {
        "webhook-secret-sqlite-0123456789"
    };
    let rec = Recorder::start().await;
    let body = json!({"variables": {"unit": "api"}}).to_string();
    // Without a secret configured: 503, nothing started.
    let unconfigured = builder(db.as_ref()).spawn().await;
    let r = send(
        unconfigured
            .anon()
            .request(reqwest::Method::POST, "/v2/webhooks/playbooks/1/trigger")
            .header("x-webhook-secret", secret)
            .body(body.clone()),
    )
    .await;
    assert_error_contains(&r, 503, "MEDIC_WEBHOOK_SECRET");
    unconfigured.shutdown().await;

    let app = builder(db.as_ref())
        .configure(move |c| {
            c.webhook_secret = Some(secret.parse().expect("secret"));
        })
        .spawn()
        .await;
    let id = store_playbook(&app, &WITH_INPUTS.replace("URL", &rec.url(""))).await;
    let path = format!("/v2/webhooks/playbooks/{id}/trigger");
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let mut rb = app.anon().request(reqwest::Method::POST, &path);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        send(rb.body(body))
    };
    // Missing and wrong secrets: 401.
    let r = post(vec![], body.clone()).await;
    assert_error_contains(&r, 401, "X-Webhook-Secret");
    let r = post(
        vec![("x-webhook-secret", format!("{secret}x"))],
        body.clone(),
    )
    .await;
    assert_error_contains(&r, 401, "Invalid webhook secret");
    assert!(executions(&app, "").await.is_empty());

    // The legacy header: 201, trigger `webhook`.
    let r = post(vec![("x-webhook-secret", secret.to_owned())], body.clone()).await;
    let started = assert_ok(&r, 201);
    assert_eq!(started["status"], "running");
    let eid = started["execution_id"].as_i64().expect("id");
    let e = wait_until(&app, eid, |e| e["status"] == "completed").await;
    assert_eq!(e["trigger"], "webhook");
    // Inputs are validated the same way.
    let r = post(
        vec![("x-webhook-secret", secret.to_owned())],
        json!({"variables": {"count": 1}}).to_string(),
    )
    .await;
    assert_error_contains(&r, 400, "unit");

    // The signed form.
    let signed = |ts: u64, body: &str| {
        let ts = ts.to_string();
        vec![
            (
                "x-medic-signature",
                medic_server::http::webhook_trigger::signature(secret, &ts, body.as_bytes()),
            ),
            ("x-medic-timestamp", ts),
        ]
    };
    let now = u64::try_from(app.now().millis() / 1000).expect("time");
    let headers = signed(now, &body);
    let r = post(headers.clone(), body.clone()).await;
    assert_ok(&r, 201);
    // The same request again is a replay.
    let r = post(headers, body.clone()).await;
    assert_error_contains(&r, 401, "already used");
    // A stale timestamp, or one from the future, is refused even when correctly signed.
    let r = post(signed(now - 301, &body), body.clone()).await;
    assert_error_contains(&r, 401, "replay window");
    let r = post(signed(now + 301, &body), body.clone()).await;
    assert_error_contains(&r, 401, "replay window");
    // A signature over another body, or under another secret.
    let r = post(signed(now + 1, "{}"), body.clone()).await;
    assert_error_contains(&r, 401, "Invalid webhook signature");
    let r = post(
        vec![
            ("x-medic-timestamp", (now + 2).to_string()),
            (
                "x-medic-signature",
                medic_server::http::webhook_trigger::signature(
                    "other",
                    &(now + 2).to_string(),
                    body.as_bytes(),
                ),
            ),
        ],
        body.clone(),
    )
    .await;
    assert_error_contains(&r, 401, "Invalid webhook signature");
    // An unknown playbook, correctly authenticated: 404.
    let r = send(
        app.anon()
            .request(reqwest::Method::POST, "/v2/webhooks/playbooks/4242/trigger")
            .header("x-webhook-secret", secret)
            .body(body.clone()),
    )
    .await;
    assert_error_contains(&r, 404, "4242");
    let list = executions(&app, "trigger=webhook").await;
    assert_eq!(list.len(), 2);
    drop(app);
    drop(db);
}

/// Polls the service's alerts (`?<query>`) until exactly `n` are listed (10 s at most).
async fn wait_alerts(app: &TestApp, sid: i64, query: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .admin()
            .get(&format!("/v2/services/{sid}/alerts?{query}"))
            .await;
        let entries = assert_ok(&r, 200)["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if entries.len() == n {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "never {n} alerts for {query}: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The alert executions of playbook `id`, newest first.
async fn fired(app: &TestApp, playbook: i64) -> Vec<Value> {
    executions(app, &format!("trigger=alert&playbook_id={playbook}")).await
}

async fn a_down_service_fires_its_playbooks_once_per_incident_with_cooldowns(db: Option<TestDb>) {
    let app = builder(db.as_ref()).spawn().await;
    let rec = Recorder::start().await;
    let url = rec.url("/fix/${HEARTBEAT_NAME}/${ALERT_ID}");
    let each = store_playbook(
        &app,
        &format!(
            "name: every-incident\ntriggers:\n  - heartbeat: \"pay-*\"\n    kinds: \
             [heartbeat_missing]\nsteps:\n  - name: call\n    type: webhook\n    url: {url}\n"
        ),
    )
    .await;
    let cooled = store_playbook(
        &app,
        "name: cooled\ntriggers:\n  - team: payments\n    cooldown: 1h\nsteps:\n  - name: \
         pause\n    type: wait\n    duration: 1s\n",
    )
    .await;
    // Matches nothing here: another team and another kind.
    let other = store_playbook(
        &app,
        "name: other\ntriggers:\n  - team: data\n  - heartbeat: \"pay-*\"\n    kinds: \
         [job_failed]\nsteps:\n  - name: pause\n    type: wait\n    duration: 1s\n",
    )
    .await;
    let service = app
        .create_service(&json!({"heartbeat_name": "pay-api", "interval_seconds": 1,
                                "team": "payments", "renotify_seconds": 60}))
        .await;
    let sid = service["service_id"].as_i64().expect("service id");
    let unrelated = app
        .create_service(&json!({"heartbeat_name": "web-api", "interval_seconds": 1}))
        .await;
    assert!(unrelated["service_id"].is_i64());

    // The service goes down: the alert and its executions commit together.
    app.advance(Duration::from_millis(1_500));
    let alerts = wait_alerts(&app, sid, "state=open", 1).await;
    let alert_id = alerts[0]["alert_id"].as_i64().expect("alert id");
    let first = fired(&app, each).await;
    assert_eq!(first.len(), 1, "{first:#?}");
    assert_eq!(first[0]["alert_id"], alert_id);
    assert_eq!(first[0]["service_id"], sid);
    assert!(first[0]["requested_by"].is_null());
    assert_eq!(fired(&app, cooled).await.len(), 1);
    assert!(fired(&app, other).await.is_empty());
    // The execution runs, with the alert's context.
    let eid = first[0]["execution_id"].as_i64().expect("id");
    wait_until(&app, eid, |e| e["status"] == "completed").await;
    let paths: Vec<String> = rec.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, [format!("/fix/pay-api/{alert_id}")]);

    // Later passes (a re-notification, an escalation) fire nothing new for this incident.
    let store = app.store().await;
    let notified = store
        .get_alert(alert_id)
        .await
        .expect("alert")
        .expect("alert")
        .details
        .last_notified_at;
    app.advance(Duration::from_secs(61));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = store
            .get_alert(alert_id)
            .await
            .expect("alert")
            .expect("alert");
        if a.details.last_notified_at != notified {
            break;
        }
        assert!(Instant::now() < deadline, "never re-notified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fired(&app, each).await.len(), 1);
    assert_eq!(fired(&app, cooled).await.len(), 1);

    // Recovery resolves the incident; a new one fires again — except inside the cooldown.
    beat(&app).await;
    wait_alerts(&app, sid, "state=resolved", 1).await;
    app.advance(Duration::from_millis(1_500));
    let open = wait_alerts(&app, sid, "state=open", 1).await;
    let second_alert = open[0]["alert_id"].as_i64().expect("alert id");
    assert_ne!(second_alert, alert_id);
    let again = fired(&app, each).await;
    assert_eq!(again.len(), 2);
    assert_eq!(again[0]["alert_id"], second_alert);
    assert_eq!(fired(&app, cooled).await.len(), 1, "inside the cooldown");

    // After the cooldown, the next incident fires the cooled playbook too.
    beat(&app).await;
    wait_alerts(&app, sid, "state=resolved", 2).await;
    app.advance(Duration::from_secs(3_600));
    let open = wait_alerts(&app, sid, "state=open", 1).await;
    let third_alert = open[0]["alert_id"].as_i64().expect("alert id");
    let cooled_runs = fired(&app, cooled).await;
    assert_eq!(cooled_runs.len(), 2);
    assert_eq!(cooled_runs[0]["alert_id"], third_alert);
    assert_eq!(fired(&app, each).await.len(), 3);
    assert!(fired(&app, other).await.is_empty());
    // The unrelated service's alerts fired nothing of `each` (its name does not match).
    assert!(
        fired(&app, each)
            .await
            .iter()
            .all(|e| e["service_id"] == sid)
    );
    drop(app);
    drop(db);
}

async fn consecutive_job_failures_are_counted_from_real_runs(db: Option<TestDb>) {
    let app = builder(db.as_ref()).spawn().await;
    let pb = store_playbook(
        &app,
        "name: third-failure\ntriggers:\n  - heartbeat: \"batch-*\"\n    kinds: [job_failed]\n    \
         consecutive_failures: 3\nsteps:\n  - name: pause\n    type: wait\n    duration: 1s\n",
    )
    .await;
    let service = app
        .create_service(&json!({"heartbeat_name": "batch-export", "interval_seconds": 3600}))
        .await;
    let sid = service["service_id"].as_i64().expect("service id");
    let signal = |what: &'static str, run: &'static str| {
        // Each signal a little later than the one before (the clock is manual).
        app.advance(Duration::from_millis(10));
        let app = app.admin();
        async move {
            let r = app
                .post_json(
                    &format!("/v2/heartbeat/{sid}/{what}"),
                    &json!({ "run_id": run }),
                )
                .await;
            assert_ok(&r, 201);
        }
    };
    // Two failed runs: two alerts, nothing fired (each alert is visible with whatever it
    // started, in one commit).
    for (n, run) in [(1, "r1"), (2, "r2")] {
        signal("fail", run).await;
        wait_alerts(&app, sid, "kind=job_failed", n).await;
        assert!(fired(&app, pb).await.is_empty(), "after {n} failures");
    }
    // The third in a row fires.
    signal("fail", "r3").await;
    let alerts = wait_alerts(&app, sid, "kind=job_failed", 3).await;
    let third = alerts
        .iter()
        .find(|a| a["run_id"] == "r3")
        .expect("alert of r3");
    let runs = fired(&app, pb).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["alert_id"], third["alert_id"]);
    // A success resets the count: the next failure is the first again.
    signal("start", "r4").await;
    signal("complete", "r4").await;
    signal("fail", "r5").await;
    wait_alerts(&app, sid, "kind=job_failed", 4).await;
    assert_eq!(fired(&app, pb).await.len(), 1);
    drop(app);
    drop(db);
}

/// A heartbeat for `pay-api`: it is up again.
async fn beat(app: &TestApp) {
    let r = app
        .admin()
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "pay-api", "status": "UP"}),
        )
        .await;
    assert_ok(&r, 201);
}

/// An alert that starts more executions than the service's circuit breaker allows: the
/// skipped start and the breaker's opening are counted in the metrics like an API start's
/// (`medic_circuit_breaker_trips_total`, `medic_playbook_executions_started_total{status}`).
async fn breaker_trips_from_alert_starts_are_counted_in_the_metrics(db: Option<TestDb>) {
    use crate::support::metric;
    let app = builder(db.as_ref())
        .configure(|c| c.playbook.limits.per_service = 1)
        .spawn()
        .await;
    for name in ["trip-a", "trip-b"] {
        store_playbook(
            &app,
            &format!(
                "name: {name}\ntriggers:\n  - heartbeat: \"trip-*\"\nsteps:\n  - name: pause\n    \
                 type: wait\n    duration: 1h\n"
            ),
        )
        .await;
    }
    let before = app.metrics().await;
    let trips = |m: &str| metric(m, "medic_circuit_breaker_trips_total", &[]).unwrap_or(0.0);
    let skipped = |m: &str| {
        metric(
            m,
            "medic_playbook_executions_started_total",
            &[("status", "skipped")],
        )
        .unwrap_or(0.0)
    };
    let service = app
        .create_service(&json!({"heartbeat_name": "trip-api", "interval_seconds": 1}))
        .await;
    let sid = service["service_id"].as_i64().expect("service id");
    app.advance(Duration::from_millis(1_500));
    wait_alerts(&app, sid, "state=open", 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let statuses = loop {
        let mut statuses: Vec<String> = executions(&app, "trigger=alert")
            .await
            .iter()
            .filter(|e| e["service_id"] == sid)
            .map(|e| e["status"].as_str().unwrap_or("-").to_owned())
            .collect();
        statuses.sort();
        if statuses.len() == 2 {
            break statuses;
        }
        assert!(Instant::now() < deadline, "the alert fired {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(statuses, ["skipped", "waiting"]);
    let after = app.metrics().await;
    assert!(
        trips(&after) >= trips(&before) + 1.0,
        "the opening was not counted: {after}"
    );
    assert!(
        skipped(&after) >= skipped(&before) + 1.0,
        "the skipped start was not counted: {after}"
    );
    drop(app);
    drop(db);
}
