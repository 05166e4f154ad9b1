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
