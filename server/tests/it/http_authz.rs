//! Who may do what: the audit actor is the authenticated key (with `X-Actor` kept apart as
//! `on_behalf_of`), keys belong to owners and four-eyes compares owners, the `ingest` and `run`
//! scopes, and what anonymous mode opens.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, assert_error_contains, assert_ok, send};

fn key_id(key: &str) -> &str {
    key.split('_').nth(1).expect("key id")
}

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.admin().get(&format!("/v2/audit-logs?{query}")).await;
    assert_ok(&r, 200)["entries"].as_array().unwrap().clone()
}

fn one_time_window() -> Value {
    let now = medic_server::domain::Timestamp::now();
    json!({ "kind": "one_time", "starts_at": now.plus_millis(-60_000).rfc3339(),
            "ends_at": now.plus_millis(3_600_000).rfc3339() })
}

// ---- the actor -----------------------------------------------------------------------------

#[tokio::test]
async fn x_actor_cannot_replace_the_key_as_the_actor() {
    let app = TestApp::spawn().await;
    let write = app.create_key(&["write"]).await;
    let r = send(
        app.with_key(&write)
            .request(Method::POST, "/v2/teams")
            .header("X-Actor", "bootstrap-admin")
            .json(&json!({ "name": "payments" })),
    )
    .await;
    assert_ok(&r, 201);
    let entries = audit(&app, "action_type=team_created").await;
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let expected = format!("it-write ({})", key_id(&write));
    assert_eq!(entries[0]["actor"], expected.as_str());
    assert_eq!(entries[0]["on_behalf_of"], "bootstrap-admin");
    // Filtering by actor finds the key, not the name it gave.
    assert!(
        audit(&app, "actor=bootstrap-admin&action_type=team_created")
            .await
            .is_empty()
    );

    // The CSV carries both, in their own columns.
    let r = send(
        app.admin()
            .request(Method::GET, "/v2/audit-logs?action_type=team_created")
            .header("Accept", "text/csv"),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = r.body.clone();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,timestamp,action_type,actor,service_id,execution_id,details,on_behalf_of")
    );
    let row = lines.next().unwrap();
    assert!(row.contains(&expected), "{row}");
    assert!(row.ends_with(",bootstrap-admin"), "{row}");

    // Without X-Actor there is nobody on whose behalf.
    let r = app
        .with_key(&write)
        .post_json("/v2/teams", &json!({ "name": "billing" }))
        .await;
    assert_ok(&r, 201);
    let entries = audit(&app, "action_type=team_created").await;
    assert_eq!(entries[0]["actor"], expected.as_str());
    assert_eq!(entries[0]["on_behalf_of"], Value::Null);
}

#[tokio::test]
async fn snapshots_record_the_key_and_whom_it_acted_for() {
    let app = TestApp::spawn().await;
    let write = app.create_key(&["write"]).await;
    let id = app.register("told", 5).await;
    let r = send(
        app.with_key(&write)
            .request(Method::POST, &format!("/v2/services/{id}/mute"))
            .header("X-Actor", "alice")
            .json(&json!({})),
    )
    .await;
    assert_ok(&r, 200);
    let r = app
        .admin()
        .get(&format!("/v2/snapshots?service_id={id}"))
        .await;
    let snap = assert_ok(&r, 200)["entries"][0].clone();
    assert_eq!(snap["action_type"], "mute");
    assert_eq!(
        snap["actor"],
        format!("it-write ({})", key_id(&write)).as_str()
    );
    assert_eq!(snap["on_behalf_of"], "alice");
}

// ---- owners and four-eyes ------------------------------------------------------------------

#[tokio::test]
async fn a_key_minted_by_an_admin_cannot_approve_that_admins_script() {
    let app = TestApp::spawn().await;
    // The bootstrap admin registers a script, mints an admin key and tries to approve with it.
    let r = app
        .admin()
        .post_json(
            "/v2/scripts",
            &json!({ "name": "wipe", "interpreter": "sh", "content": "echo wipe\n" }),
        )
        .await;
    let id = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    let created = app
        .create_key_with(&json!({ "name": "sock-puppet", "scopes": ["admin"] }))
        .await;
    assert_eq!(created["owner_id"], "bootstrap");
    let puppet = created["key"].as_str().unwrap();
    let r = app
        .with_key(puppet)
        .post(&format!("/v2/scripts/{id}/approve"))
        .await;
    assert_error_contains(&r, 403, "same owner");
    // Nor can its own keys hand a key to another owner.
    let r = app
        .with_key(puppet)
        .post_json(
            "/v2/api-keys",
            &json!({ "name": "x", "scopes": ["admin"], "owner_id": "someone" }),
        )
        .await;
    assert_eq!(r.status, 400, "{:?}", r.json());
    let r = app.get_script_status(id).await;
    assert_eq!(r, "pending");

    // Another person's admin key may decide; the version names both owners.
    let bob = app.create_key_for("bob", &["admin"]).await;
    let r = app
        .with_key(&bob)
        .post(&format!("/v2/scripts/{id}/approve"))
        .await;
    let v = assert_ok(&r, 200);
    assert_eq!(v["created_by_owner"], "bootstrap");
    assert_ne!(v["decided_by_owner"], "bootstrap");
    assert_eq!(app.get_script_status(id).await, "approved");

    // Keys bob mints through the API are bob's, and listed so.
    let r = app
        .with_key(&bob)
        .post_json(
            "/v2/api-keys",
            &json!({ "name": "bob-2", "scopes": ["admin"] }),
        )
        .await;
    let bob2 = assert_ok(&r, 201);
    assert_eq!(bob2["owner_id"], v["decided_by_owner"]);
    let r = app
        .with_key(&bob)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "bobs", "interpreter": "sh", "content": "echo bob\n" }),
        )
        .await;
    let bobs = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    let r = app
        .with_key(bob2["key"].as_str().unwrap())
        .post(&format!("/v2/scripts/{bobs}/approve"))
        .await;
    assert_error_contains(&r, 403, "same owner");
}

impl TestApp {
    async fn get_script_status(&self, id: i64) -> String {
        let r = self.admin().get(&format!("/v2/scripts/{id}")).await;
        assert_ok(&r, 200)["versions"][0]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

// ---- scopes --------------------------------------------------------------------------------

#[tokio::test]
async fn an_ingest_key_sends_heartbeats_and_job_signals_and_nothing_else() {
    let app = TestApp::spawn().await;
    let id = app.register("nightly", 60).await;
    let ingest = app.create_key(&["ingest"]).await;
    let k = app.with_key(&ingest);
    let r = k
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "nightly", "status": "UP" }),
        )
        .await;
    assert_ok(&r, 201);
    for signal in ["start", "complete"] {
        let r = k
            .post_json(
                &format!("/v2/heartbeat/{id}/{signal}"),
                &json!({ "run_id": "r1" }),
            )
            .await;
        assert!(r.status.is_success(), "{signal}: {:?}", r.json());
    }
    // Nothing else: reads, registration, changes, deletes, windows, runs, keys.
    let forbidden = [
        (Method::GET, "/v2/services".to_owned(), None),
        (Method::GET, "/heartbeat".to_owned(), None),
        (
            Method::POST,
            "/service".to_owned(),
            Some(json!({ "heartbeat_name": "new", "service_name": "n", "alert_interval": 5 })),
        ),
        (
            Method::POST,
            "/service/nightly".to_owned(),
            Some(json!({ "active": 0, "muted": 1 })),
        ),
        (Method::DELETE, format!("/v2/services/{id}"), None),
        (
            Method::POST,
            "/v2/maintenance-windows".to_owned(),
            Some(json!({ "scope": "global", "window": one_time_window() })),
        ),
        (
            Method::POST,
            "/v2/runs".to_owned(),
            Some(json!({ "agent_id": "a", "script": "x" })),
        ),
        (Method::GET, "/v2/api-keys".to_owned(), None),
    ];
    for (method, path, body) in forbidden {
        let mut rb = k.request(method.clone(), &path);
        if let Some(b) = &body {
            rb = rb.json(b);
        }
        let r = send(rb).await;
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.json());
    }
    let s = assert_ok(&app.admin().get(&format!("/v2/services/{id}")).await, 200);
    assert_eq!(s["active"], true);
    assert_eq!(s["muted"], false);
}

#[tokio::test]
async fn a_write_key_cannot_run_scripts_or_silence_everything() {
    let app = TestApp::spawn().await;
    let id = app.register("svc", 5).await;
    let write = app.create_key(&["write"]).await;
    let w = app.with_key(&write);
    // Runs on agents need the run scope.
    let r = w
        .post_json(
            "/v2/runs",
            &json!({ "agent_id": "web-1", "script": "restart" }),
        )
        .await;
    assert_error(&r, 403, "This API key lacks the run scope.");
    let run = app.create_key(&["run"]).await;
    let r = app
        .with_key(&run)
        .post_json(
            "/v2/runs",
            &json!({ "agent_id": "web-1", "script": "restart" }),
        )
        .await;
    assert_eq!(r.status, 404, "past the scope check: {:?}", r.json());
    // A global maintenance window needs admin; a service's own does not.
    let r = w
        .post_json(
            "/v2/maintenance-windows",
            &json!({ "scope": "global", "window": one_time_window() }),
        )
        .await;
    assert_error(&r, 403, "This API key lacks the admin scope.");
    let r = w
        .post_json(
            "/v2/maintenance-windows",
            &json!({ "scope": "service", "service_id": id, "window": one_time_window() }),
        )
        .await;
    assert_ok(&r, 201);
    let r = app
        .admin()
        .post_json(
            "/v2/maintenance-windows",
            &json!({ "scope": "global", "window": one_time_window() }),
        )
        .await;
    let global = assert_ok(&r, 201)["window_id"].as_i64().unwrap();
    let r = w.delete(&format!("/v2/maintenance-windows/{global}")).await;
    assert_error(&r, 403, "This API key lacks the admin scope.");
    let r = app
        .admin()
        .get(&format!("/v2/maintenance-windows/{global}"))
        .await;
    assert_ok(&r, 200);
    // Script decisions need admin.
    let r = app.create_key_for("carol", &["write"]).await;
    let r2 = app
        .with_key(&r)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "fix", "interpreter": "sh", "content": "true\n" }),
        )
        .await;
    let script = assert_ok(&r2, 201)["script_id"].as_i64().unwrap();
    let r = w.post(&format!("/v2/scripts/{script}/approve")).await;
    assert_error(&r, 403, "This API key lacks the admin scope.");
}

// ---- anonymous mode ------------------------------------------------------------------------

#[tokio::test]
async fn anonymous_callers_register_and_beat_but_cannot_change_a_service() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let id = app.register("payroll", 5).await;
    let anon = app.anon();
    let r = anon
        .post_json("/service/payroll", &json!({ "active": 0, "muted": 1 }))
        .await;
    assert_eq!(r.status, 401, "{:?}", r.json());
    let s = assert_ok(&app.admin().get(&format!("/v2/services/{id}")).await, 200);
    assert_eq!(s["active"], true);
    assert_eq!(s["muted"], false);

    // What old clients do still works without a key.
    let r = anon
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "fresh", "service_name": "f", "alert_interval": 5 }),
        )
        .await;
    assert_ok(&r, 201);
    let r = anon
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "fresh", "status": "UP" }),
        )
        .await;
    assert_ok(&r, 201);
    let r = anon
        .post_json(&format!("/v2/heartbeat/{id}/start"), &json!({}))
        .await;
    assert!(r.status.is_success(), "{:?}", r.json());
    // Registering a name that exists changes nothing.
    let r = anon
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "payroll", "service_name": "x", "alert_interval": 1 }),
        )
        .await;
    assert_ok(&r, 200);
    let s = assert_ok(&app.admin().get(&format!("/v2/services/{id}")).await, 200);
    assert_eq!(s["interval_seconds"], 300);

    // A key may change it.
    let write = app.create_key(&["write"]).await;
    let r = app
        .with_key(&write)
        .post_json("/service/payroll", &json!({ "muted": 1 }))
        .await;
    assert_ok(&r, 200);
}

#[tokio::test]
async fn the_second_switch_lets_anonymous_callers_change_services() {
    let app = TestApp::builder()
        .anonymous(true)
        .configure(|c| c.allow_anonymous_service_changes = true)
        .spawn()
        .await;
    let id = app.register("payroll", 5).await;
    let r = app
        .anon()
        .post_json("/service/payroll", &json!({ "muted": 1 }))
        .await;
    assert_ok(&r, 200);
    let s = assert_ok(&app.admin().get(&format!("/v2/services/{id}")).await, 200);
    assert_eq!(s["muted"], true);
}
