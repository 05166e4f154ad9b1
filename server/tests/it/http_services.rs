//! The v2 management API: services (list, create, read, patch, delete, mute), their heartbeats
//! and runs, snapshots and restore, and the audit log as JSON and CSV.

use medic_server::domain::Timestamp;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, assert_error_contains, assert_ok, send};

async fn create(app: &TestApp, body: Value) -> i64 {
    app.create_service(&body).await["service_id"]
        .as_i64()
        .expect("service_id")
}

async fn list(app: &TestApp, query: &str) -> Value {
    assert_ok(&app.admin().get(&format!("/v2/services{query}")).await, 200)
}

fn names(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["heartbeat_name"].as_str().unwrap().to_owned())
        .collect()
}

async fn snapshots(app: &TestApp, query: &str) -> Value {
    assert_ok(
        &app.admin().get(&format!("/v2/snapshots{query}")).await,
        200,
    )
}

#[track_caller]
fn assert_page(page: &Value, total: i64, limit: i64, offset: i64, len: usize, has_more: bool) {
    assert_eq!(page["total_count"], total, "{page}");
    assert_eq!(page["limit"], limit, "{page}");
    assert_eq!(page["offset"], offset, "{page}");
    assert_eq!(
        page["entries"].as_array().map(Vec::len),
        Some(len),
        "{page}"
    );
    assert_eq!(page["has_more"], has_more, "{page}");
}

#[tokio::test]
async fn services_list_filters_and_paginates() {
    let app = TestApp::spawn().await;
    let alpha = create(&app, json!({ "heartbeat_name": "Alpha-Sync", "interval_seconds": 60, "team": "Payments", "priority": "p1" })).await;
    create(
        &app,
        json!({ "heartbeat_name": "beta-sync", "interval_seconds": 60, "team": "payments" }),
    )
    .await;
    let gamma = create(
        &app,
        json!({ "heartbeat_name": "gamma", "interval_seconds": 60, "service_name": "Search" }),
    )
    .await;
    create(
        &app,
        json!({ "heartbeat_name": "delta", "interval_seconds": 60 }),
    )
    .await;
    create(
        &app,
        json!({ "heartbeat_name": "epsilon", "interval_seconds": 60, "priority": "p1" }),
    )
    .await;
    let r = app
        .admin()
        .patch_json(
            &format!("/v2/services/{gamma}"),
            &json!({ "active": false }),
        )
        .await;
    assert_ok(&r, 200);
    assert_ok(
        &app.admin()
            .post(&format!("/v2/services/{alpha}/mute"))
            .await,
        200,
    );

    let all = list(&app, "").await;
    assert_page(&all, 5, 50, 0, 5, false);
    assert_eq!(
        names(&all),
        ["Alpha-Sync", "beta-sync", "gamma", "delta", "epsilon"]
    );
    assert_page(&list(&app, "?limit=2").await, 5, 2, 0, 2, true);
    let last = list(&app, "?limit=2&offset=4").await;
    assert_page(&last, 5, 2, 4, 1, false);
    assert_eq!(names(&last), ["epsilon"]);
    assert_page(&list(&app, "?offset=10").await, 5, 50, 10, 0, false);

    assert_eq!(
        names(&list(&app, "?name=SYNC").await),
        ["Alpha-Sync", "beta-sync"]
    );
    assert_eq!(
        names(&list(&app, "?team=PAYMENTS").await),
        ["Alpha-Sync", "beta-sync"]
    );
    assert_eq!(
        names(&list(&app, "?priority=P1").await),
        ["Alpha-Sync", "epsilon"]
    );
    assert_eq!(names(&list(&app, "?service_name=search").await), ["gamma"]);
    assert_eq!(names(&list(&app, "?active=false").await), ["gamma"]);
    assert_eq!(list(&app, "?active=1").await["total_count"], 4);
    assert_eq!(names(&list(&app, "?muted=true").await), ["Alpha-Sync"]);
    assert_eq!(list(&app, "?muted=0").await["total_count"], 4);
    assert_eq!(list(&app, "?state=new").await["total_count"], 5);
    assert_eq!(list(&app, "?state=down").await["total_count"], 0);
    let filtered = list(&app, "?team=payments&limit=1").await;
    assert_page(&filtered, 2, 1, 0, 1, true);

    for (query, message) in [
        (
            "?limit=0",
            "Query parameter limit must be an integer between 1 and 250.",
        ),
        (
            "?limit=251",
            "Query parameter limit must be an integer between 1 and 250.",
        ),
        (
            "?offset=-1",
            "Query parameter offset must be an integer between 0 and 2147483647.",
        ),
        (
            "?state=sleeping",
            "state must be one of new, up, late, down.",
        ),
        ("?priority=p9", "priority must be one of p1..p5."),
        ("?active=maybe", "Query parameter active must be 0 or 1."),
        ("?muted=2", "Query parameter muted must be 0 or 1."),
    ] {
        let r = app.admin().get(&format!("/v2/services{query}")).await;
        assert_error(&r, 400, message);
    }
}

#[tokio::test]
async fn create_is_201_and_a_duplicate_name_is_409_in_any_case() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let r = app
        .admin()
        .post_json(
            "/v2/services",
            &json!({ "heartbeat_name": "Orders", "interval_seconds": 90, "grace_seconds": 30,
                     "threshold": 2, "runbook": "https://runbooks.example/orders",
                     "max_duration_ms": 5000, "environment": "prod" }),
        )
        .await;
    let s = assert_ok(&r, 201);
    let id = s["service_id"].as_i64().expect("id");
    assert_eq!(s["heartbeat_name"], "Orders");
    assert_eq!(s["interval_seconds"], 90);
    assert_eq!(s["grace_seconds"], 30);
    assert_eq!(s["threshold"], 2);
    assert_eq!(s["team"], "site-reliability");
    assert_eq!(s["priority"], "p3");
    assert_eq!(s["active"], true);
    assert_eq!(s["muted"], false);
    assert_eq!(s["mute"], Value::Null);
    assert_eq!(s["state"], "new");
    assert_eq!(s["max_duration_ms"], 5000);
    assert_eq!(s["environment"], "prod");
    assert_eq!(s["last_heartbeat_at"], Value::Null);

    let r = app
        .admin()
        .post_json(
            "/v2/services",
            &json!({ "heartbeat_name": "ORDERS", "interval_seconds": 60 }),
        )
        .await;
    assert_error(
        &r,
        409,
        &format!("A service named Orders is already registered (service_id {id})."),
    );
    // The legacy route sees the same name.
    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "orders", "service_name": "x", "alert_interval": 1 }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);

    for (body, message) in [
        (json!({ "heartbeat_name": "x" }), "Invalid request body"),
        (
            json!({ "heartbeat_name": "x", "interval_seconds": 0 }),
            "interval_seconds must be between 1 and",
        ),
        (
            json!({ "heartbeat_name": "x", "interval_seconds": 60, "grace_seconds": -1 }),
            "grace_seconds must be between 0 and",
        ),
        (
            json!({ "heartbeat_name": "x", "interval_seconds": 60, "threshold": 0 }),
            "threshold must be between 1 and 10000.",
        ),
        (
            json!({ "heartbeat_name": "x", "interval_seconds": 60, "priority": "high" }),
            "priority must be one of p1..p5.",
        ),
        (
            json!({ "heartbeat_name": "x", "interval_seconds": 60, "max_duration_ms": 0 }),
            "max_duration_ms must be positive.",
        ),
        (
            json!({ "heartbeat_name": "", "interval_seconds": 60 }),
            "heartbeat_name",
        ),
        (
            json!({ "heartbeat_name": "x", "interval_seconds": 60, "alert_interval": 1 }),
            "unknown field",
        ),
        (json!(["x", 60]), "expected a JSON object, not an array."),
    ] {
        let r = app.admin().post_json("/v2/services", &body).await;
        assert_error_contains(&r, 400, message);
    }
    assert_eq!(list(&app, "").await["total_count"], 1);
}

#[tokio::test]
async fn unknown_services_are_404_and_bad_ids_400() {
    let app = TestApp::spawn().await;
    let admin = app.admin();
    let missing = "Service 999 was not found.";
    assert_error(&admin.get("/v2/services/999").await, 404, missing);
    assert_error(
        &admin
            .patch_json("/v2/services/999", &json!({ "team": "x" }))
            .await,
        404,
        missing,
    );
    assert_error(&admin.delete("/v2/services/999").await, 404, missing);
    assert_error(&admin.post("/v2/services/999/mute").await, 404, missing);
    assert_error(&admin.post("/v2/services/999/unmute").await, 404, missing);
    assert_error(
        &admin.get("/v2/services/999/heartbeats").await,
        404,
        missing,
    );
    assert_error(&admin.get("/v2/services/999/runs").await, 404, missing);
    for path in [
        "/v2/services/abc",
        "/v2/services/0",
        "/v2/services/1.5/runs",
    ] {
        assert_error(
            &admin.get(path).await,
            400,
            "service_id must be a positive integer.",
        );
    }
}

#[tokio::test]
async fn patch_updates_and_snapshots_with_the_action_and_actor() {
    let app = TestApp::spawn().await;
    let id = create(
        &app,
        json!({ "heartbeat_name": "patchy", "interval_seconds": 60, "runbook": "old" }),
    )
    .await;
    let other = create(
        &app,
        json!({ "heartbeat_name": "Taken", "interval_seconds": 60 }),
    )
    .await;
    let path = format!("/v2/services/{id}");

    let r = send(
        app.admin()
            .request(Method::PATCH, &path)
            .header("X-Actor", "bob@example.com")
            .json(&json!({ "priority": "p1" })),
    )
    .await;
    let s = assert_ok(&r, 200);
    assert_eq!(s["priority"], "p1");
    let r = app
        .admin()
        .patch_json(&path, &json!({ "team": "dba" }))
        .await;
    assert_eq!(assert_ok(&r, 200)["team"], "dba");
    let r = app
        .admin()
        .patch_json(
            &path,
            &json!({ "interval_seconds": 120, "runbook": null, "max_duration_ms": 900 }),
        )
        .await;
    let s = assert_ok(&r, 200);
    assert_eq!(s["interval_seconds"], 120);
    assert_eq!(s["runbook"], Value::Null);
    assert_eq!(s["max_duration_ms"], 900);
    let r = app
        .admin()
        .patch_json(&path, &json!({ "active": false }))
        .await;
    assert_eq!(assert_ok(&r, 200)["active"], false);
    let r = app
        .admin()
        .patch_json(&path, &json!({ "heartbeat_name": "Patchy-Renamed" }))
        .await;
    assert_eq!(assert_ok(&r, 200)["heartbeat_name"], "Patchy-Renamed");

    let page = snapshots(&app, &format!("?service_id={id}")).await;
    assert_eq!(page["total_count"], 5);
    let entries = page["entries"].as_array().unwrap();
    let got: Vec<(&str, &str)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["action_type"].as_str().unwrap(),
                // Whom the key acted for, where it said (the key is always the actor).
                e["on_behalf_of"]
                    .as_str()
                    .unwrap_or_else(|| e["actor"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("priority_change", "bob@example.com"),
            ("team_change", "bootstrap-admin"),
            ("edit", "bootstrap-admin"),
            ("deactivate", "bootstrap-admin"),
            ("edit", "bootstrap-admin"),
        ]
    );
    // Each snapshot holds the state before its change.
    let oldest = entries.last().unwrap();
    assert_eq!(oldest["snapshot_data"]["priority"], "p3");
    assert_eq!(oldest["snapshot_data"]["runbook"], "old");
    assert_eq!(entries[0]["snapshot_data"]["heartbeat_name"], "patchy");

    // Refusals change nothing.
    let before = assert_ok(&app.admin().get(&path).await, 200);
    assert_error(
        &app.admin().patch_json(&path, &json!({})).await,
        400,
        "No updatable fields were supplied.",
    );
    assert_error(
        &app.admin()
            .patch_json(&path, &json!({ "heartbeat_name": "TAKEN" }))
            .await,
        409,
        "Another service already has that heartbeat_name.",
    );
    assert_error_contains(
        &app.admin()
            .patch_json(&path, &json!({ "interval_seconds": 0 }))
            .await,
        400,
        "interval_seconds must be between 1 and",
    );
    assert_error_contains(
        &app.admin()
            .patch_json(&path, &json!({ "alert_interval": 5 }))
            .await,
        400,
        "unknown field",
    );
    let r = send(
        app.admin()
            .request(Method::PATCH, &path)
            .header("X-Actor", "x".repeat(256))
            .json(&json!({ "team": "other" })),
    )
    .await;
    assert_error(&r, 400, "X-Actor must be 1 to 255 printable characters.");
    assert_eq!(assert_ok(&app.admin().get(&path).await, 200), before);
    assert_eq!(
        snapshots(&app, &format!("?service_id={id}")).await["total_count"],
        5
    );
    assert_eq!(
        snapshots(&app, &format!("?service_id={other}")).await["total_count"],
        0
    );
}

#[tokio::test]
async fn delete_then_restore_brings_back_the_same_service() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let id = create(
        &app,
        json!({ "heartbeat_name": "Phoenix", "interval_seconds": 60, "team": "ops" }),
    )
    .await;
    let path = format!("/v2/services/{id}");
    let r = app.admin().delete(&path).await;
    let v = assert_ok(&r, 200);
    assert_eq!(v["service_id"], id);
    let snap = v["snapshot_id"].as_i64().expect("snapshot_id");

    assert_error(
        &app.admin().get(&path).await,
        404,
        &format!("Service {id} was not found."),
    );
    assert_error(
        &app.admin().delete(&path).await,
        404,
        &format!("Service {id} was not found."),
    );
    assert_eq!(
        assert_ok(&app.get("/service/phoenix").await, 200),
        json!([])
    );
    assert_error(
        &app.post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "phoenix", "status": "UP" }),
        )
        .await,
        404,
        "phoenix is not listed as a registered service.",
    );
    let s = assert_ok(
        &app.admin().get(&format!("/v2/snapshots/{snap}")).await,
        200,
    );
    assert_eq!(s["action_type"], "delete");
    assert_eq!(s["service_id"], id);
    assert_eq!(s["restored_at"], Value::Null);

    let r = app
        .admin()
        .post_json(
            &format!("/v2/snapshots/{snap}/restore"),
            &json!({ "actor": "carol" }),
        )
        .await;
    let restored = assert_ok(&r, 200);
    assert_eq!(restored["service_id"], id);
    assert_eq!(restored["heartbeat_name"], "Phoenix");
    assert_eq!(restored["team"], "ops");
    assert_eq!(
        assert_ok(&app.admin().get(&path).await, 200)["service_id"],
        id
    );
    assert_ok(
        &app.post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "PHOENIX", "status": "UP" }),
        )
        .await,
        201,
    );

    let s = assert_ok(
        &app.admin().get(&format!("/v2/snapshots/{snap}")).await,
        200,
    );
    assert_eq!(s["restored_by"], "bootstrap-admin");
    assert_eq!(s["restored_on_behalf_of"], "carol");
    assert!(s["restored_at"].is_string());
    assert_error(
        &app.admin()
            .post(&format!("/v2/snapshots/{snap}/restore"))
            .await,
        400,
        &format!("Snapshot {snap} has already been restored."),
    );
    assert_error(
        &app.admin().post("/v2/snapshots/999/restore").await,
        404,
        "Snapshot 999 was not found.",
    );

    let audit = assert_ok(
        &app.admin()
            .get("/v2/audit-logs?action_type=snapshot_restored")
            .await,
        200,
    );
    assert_eq!(audit["total_count"], 1);
    assert_eq!(audit["entries"][0]["actor"], "bootstrap-admin");
    assert_eq!(audit["entries"][0]["on_behalf_of"], "carol");
    assert_eq!(audit["entries"][0]["service_id"], id);
}

#[tokio::test]
async fn restore_uses_the_actor_header_and_refuses_a_name_taken_since() {
    let app = TestApp::spawn().await;
    let id = create(
        &app,
        json!({ "heartbeat_name": "dup", "interval_seconds": 60 }),
    )
    .await;
    let snap = assert_ok(
        &app.admin().delete(&format!("/v2/services/{id}")).await,
        200,
    )["snapshot_id"]
        .as_i64()
        .unwrap();
    let newer = create(
        &app,
        json!({ "heartbeat_name": "DUP", "interval_seconds": 60 }),
    )
    .await;
    assert_ne!(newer, id);
    let restore = format!("/v2/snapshots/{snap}/restore");
    assert_error(
        &app.admin().post(&restore).await,
        409,
        "Another service now uses this snapshot's heartbeat_name; rename it first.",
    );
    assert_ok(
        &app.admin().delete(&format!("/v2/services/{newer}")).await,
        200,
    );
    let r = send(
        app.admin()
            .request(Method::POST, &restore)
            .header("X-Actor", "dave"),
    )
    .await;
    assert_eq!(assert_ok(&r, 200)["service_id"], id);
    let s = assert_ok(
        &app.admin().get(&format!("/v2/snapshots/{snap}")).await,
        200,
    );
    assert_eq!(s["restored_by"], "bootstrap-admin");
    assert_eq!(s["restored_on_behalf_of"], "dave");
}

#[tokio::test]
async fn mute_with_until_and_reason_then_unmute() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let id = create(
        &app,
        json!({ "heartbeat_name": "quiet", "interval_seconds": 60 }),
    )
    .await;
    let until = Timestamp::now().plus_millis(3_600_000).rfc3339();
    let r = send(
        app.admin()
            .request(Method::POST, &format!("/v2/services/{id}/mute"))
            .header("X-Actor", "erin")
            .json(&json!({ "until": until, "reason": "database maintenance" })),
    )
    .await;
    let s = assert_ok(&r, 200);
    assert_eq!(s["muted"], true);
    assert_eq!(s["mute"]["until"], until.as_str());
    assert_eq!(s["mute"]["reason"], "database maintenance");
    assert!(s["mute"]["at"].is_string());
    let v1 = &assert_ok(&app.get("/service/quiet").await, 200)[0];
    assert_eq!(v1["muted"], 1);
    assert_eq!(v1["muted_until"], until.as_str());
    assert_eq!(names(&list(&app, "?muted=1").await), ["quiet"]);

    let r = app.admin().post(&format!("/v2/services/{id}/unmute")).await;
    let s = assert_ok(&r, 200);
    assert_eq!(s["muted"], false);
    assert_eq!(s["mute"], Value::Null);

    let page = snapshots(&app, &format!("?service_id={id}")).await;
    let actions: Vec<(&str, &str)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action_type"].as_str().unwrap(),
                // Whom the key acted for, where it said (the key is always the actor).
                e["on_behalf_of"]
                    .as_str()
                    .unwrap_or_else(|| e["actor"].as_str().unwrap()),
            )
        })
        .collect();
    assert_eq!(actions, [("unmute", "bootstrap-admin"), ("mute", "erin")]);

    // Bad input changes nothing.
    let past = Timestamp::now().plus_millis(-60_000).rfc3339();
    let mute = format!("/v2/services/{id}/mute");
    assert_error(
        &app.admin()
            .post_json(&mute, &json!({ "until": past }))
            .await,
        400,
        "until must be in the future.",
    );
    assert_error_contains(
        &app.admin()
            .post_json(&mute, &json!({ "until": "tomorrow" }))
            .await,
        400,
        "Invalid request body",
    );
    assert_error_contains(
        &app.admin().post_json(&mute, &json!({ "for": "1h" })).await,
        400,
        "unknown field",
    );
    assert_eq!(
        snapshots(&app, &format!("?service_id={id}")).await["total_count"],
        2
    );

    // Without a body: muted until unmuted.
    let s = assert_ok(&app.admin().post(&mute).await, 200);
    assert_eq!(s["muted"], true);
    assert_eq!(s["mute"]["until"], Value::Null);
}

#[tokio::test]
async fn heartbeats_and_runs_of_a_service_are_paged() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let id = create(
        &app,
        json!({ "heartbeat_name": "paged", "interval_seconds": 60 }),
    )
    .await;
    for i in 0..5 {
        let r = app
            .post_json(
                "/heartbeat",
                &json!({ "heartbeat_name": "paged", "status": format!("s{i}") }),
            )
            .await;
        assert_ok(&r, 201);
    }
    let hb = |q: &str| format!("/v2/services/{id}/heartbeats{q}");
    let page = assert_ok(&app.admin().get(&hb("?limit=2")).await, 200);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 0);
    assert_eq!(page["has_more"], true);
    let statuses: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["s4", "s3"]);
    let page = assert_ok(&app.admin().get(&hb("?limit=2&offset=4")).await, 200);
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["entries"][0]["status"], "s0");
    assert_eq!(page["has_more"], false);
    let page = assert_ok(&app.admin().get(&hb("")).await, 200);
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(5));
    assert_eq!(page["limit"], 50);
    assert_eq!(page["has_more"], false);
    assert_error(
        &app.admin().get(&hb("?limit=500")).await,
        400,
        "Query parameter limit must be an integer between 1 and 250.",
    );

    for run in ["a", "b", "c"] {
        let r = app
            .post_json(
                &format!("/v2/heartbeat/{id}/complete"),
                &json!({ "run_id": run }),
            )
            .await;
        assert_ok(&r, 201);
    }
    let runs = assert_ok(
        &app.admin()
            .get(&format!("/v2/services/{id}/runs?limit=2"))
            .await,
        200,
    );
    assert_eq!(runs["total_count"], 3);
    assert_eq!(runs["has_more"], true);
    assert_eq!(runs["entries"].as_array().map(Vec::len), Some(2));
    assert_eq!(runs["entries"][0]["run_id"], "c");
}

#[tokio::test]
async fn snapshots_list_filters_and_fetches_one() {
    let app = TestApp::spawn().await;
    let a = create(
        &app,
        json!({ "heartbeat_name": "snap-a", "interval_seconds": 60 }),
    )
    .await;
    let b = create(
        &app,
        json!({ "heartbeat_name": "snap-b", "interval_seconds": 60 }),
    )
    .await;
    assert_ok(
        &app.admin().post(&format!("/v2/services/{a}/mute")).await,
        200,
    );
    let r = app
        .admin()
        .patch_json(&format!("/v2/services/{a}"), &json!({ "priority": "p2" }))
        .await;
    assert_ok(&r, 200);
    assert_ok(&app.admin().delete(&format!("/v2/services/{b}")).await, 200);

    let all = snapshots(&app, "").await;
    assert_page(&all, 3, 50, 0, 3, false);
    assert_eq!(all["entries"][0]["action_type"], "delete");
    assert_page(
        &snapshots(&app, "?limit=1&offset=1").await,
        3,
        1,
        1,
        1,
        true,
    );
    assert_eq!(snapshots(&app, "?action_type=mute").await["total_count"], 1);
    assert_eq!(
        snapshots(&app, &format!("?service_id={a}")).await["total_count"],
        2
    );
    assert_eq!(
        snapshots(&app, &format!("?service_id={b}&action_type=delete")).await["total_count"],
        1
    );
    assert_eq!(
        snapshots(&app, "?start_date=2999-01-01").await["total_count"],
        0
    );
    assert_eq!(
        snapshots(&app, "?end_date=2000-01-01T00:00:00Z").await["total_count"],
        0
    );
    assert_eq!(
        snapshots(&app, "?start_date=2000-01-01&end_date=2999-12-31").await["total_count"],
        3
    );
    for (query, message) in [
        ("?action_type=explode", "action_type must be one of"),
        (
            "?start_date=yesterday",
            "Query parameter start_date must be an RFC 3339 timestamp.",
        ),
        (
            "?end_date=2020-13-45",
            "Query parameter end_date must be an RFC 3339 timestamp.",
        ),
        (
            "?service_id=abc",
            "Query parameter service_id must be an integer",
        ),
        (
            "?limit=0",
            "Query parameter limit must be an integer between 1 and 250.",
        ),
    ] {
        let r = app.admin().get(&format!("/v2/snapshots{query}")).await;
        assert_error_contains(&r, 400, message);
    }

    let id = all["entries"][2]["snapshot_id"].as_i64().unwrap();
    let one = assert_ok(&app.admin().get(&format!("/v2/snapshots/{id}")).await, 200);
    assert_eq!(one, all["entries"][2]);
    assert_eq!(one["action_type"], "mute");
    assert_eq!(one["snapshot_data"]["heartbeat_name"], "snap-a");
    assert_eq!(one["snapshot_data"]["mute"], Value::Null);
    assert_error(
        &app.admin().get("/v2/snapshots/999").await,
        404,
        "Snapshot 999 was not found.",
    );
    assert_error(
        &app.admin().get("/v2/snapshots/first").await,
        400,
        "snapshot_id must be a positive integer.",
    );
}

#[tokio::test]
async fn audit_logs_filter_page_and_export_csv() {
    let app = TestApp::spawn().await;
    for scopes in [["read"], ["write"], ["admin"]] {
        app.create_key(&scopes).await;
    }
    let id = create(
        &app,
        json!({ "heartbeat_name": "audited", "interval_seconds": 60 }),
    )
    .await;
    let snap = assert_ok(
        &app.admin().delete(&format!("/v2/services/{id}")).await,
        200,
    )["snapshot_id"]
        .as_i64()
        .unwrap();
    let r = app
        .admin()
        .post_json(
            &format!("/v2/snapshots/{snap}/restore"),
            &json!({ "actor": "=HYPERLINK(\"x\")" }),
        )
        .await;
    assert_ok(&r, 200);

    let audit = |q: &'static str| {
        let caller = app.admin();
        async move { assert_ok(&caller.get(&format!("/v2/audit-logs{q}")).await, 200) }
    };
    let all = audit("").await;
    assert_page(&all, 4, 50, 0, 4, false);
    let newest = &all["entries"][0];
    assert_eq!(newest["action_type"], "snapshot_restored");
    assert_eq!(newest["service_id"], id);
    assert_eq!(newest["details"]["snapshot_id"], snap);
    assert!(newest["id"].is_i64() && newest["timestamp"].is_string());
    assert_eq!(all["entries"][3]["action_type"], "api_key_created");
    assert_eq!(all["entries"][3]["actor"], "bootstrap-admin");

    assert_eq!(
        audit("?action_type=api_key_created").await["total_count"],
        3
    );
    // The restore's "actor" is whom the key acted for; the bootstrap key made all four.
    assert_eq!(audit("?actor=bootstrap-admin").await["total_count"], 4);
    assert_eq!(newest["actor"], "bootstrap-admin");
    assert_eq!(newest["on_behalf_of"], "=HYPERLINK(\"x\")");
    assert_page(&audit("?limit=3").await, 4, 3, 0, 3, true);
    assert_page(&audit("?limit=3&offset=3").await, 4, 3, 3, 1, false);
    assert_eq!(audit("?start_date=2999-01-01").await["total_count"], 0);
    assert_eq!(audit("?end_date=2000-01-01").await["total_count"], 0);
    assert_eq!(audit("?execution_id=5").await["total_count"], 0);
    let by_service = app
        .admin()
        .get(&format!("/v2/audit-logs?service_id={id}"))
        .await;
    assert_eq!(assert_ok(&by_service, 200)["total_count"], 1);

    for (query, message) in [
        (
            "?limit=0",
            "Query parameter limit must be an integer between 1 and 250.",
        ),
        (
            "?limit=251",
            "Query parameter limit must be an integer between 1 and 250.",
        ),
        ("?offset=x", "Query parameter offset must be an integer"),
        (
            "?service_id=abc",
            "Query parameter service_id must be an integer",
        ),
        (
            "?execution_id=-1",
            "Query parameter execution_id must be an integer",
        ),
        (
            "?start_date=soon",
            "Query parameter start_date must be an RFC 3339 timestamp.",
        ),
    ] {
        let r = app.admin().get(&format!("/v2/audit-logs{query}")).await;
        assert_error_contains(&r, 400, message);
    }

    let r = send(
        app.admin()
            .request(Method::GET, "/v2/audit-logs?limit=2")
            .header("Accept", "text/csv"),
    )
    .await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    assert_eq!(r.header_u64("x-total-count"), 4);
    assert_eq!(r.header_u64("x-limit"), 2);
    assert_eq!(r.header_u64("x-offset"), 0);
    assert_eq!(r.header("x-has-more"), Some("true"));
    let lines: Vec<&str> = r.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        "id,timestamp,action_type,actor,service_id,execution_id,details,on_behalf_of"
    );
    assert_eq!(lines.len(), 3, "{}", r.body);
    assert!(lines[1].contains(",snapshot_restored,"), "{}", lines[1]);
    // A formula-looking on-behalf-of name is defused and quoted.
    assert!(
        lines[1].contains("\"'=HYPERLINK(\"\"x\"\")\""),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains(&format!(",{id},")), "{}", lines[1]);

    let r = send(
        app.admin()
            .request(Method::GET, "/v2/audit-logs?limit=2&offset=2")
            .header("Accept", "application/json, text/csv;q=0.5"),
    )
    .await;
    assert_eq!(r.header_u64("x-offset"), 2);
    assert_eq!(r.header("x-has-more"), Some("false"));
    assert_eq!(r.body.split("\r\n").filter(|l| !l.is_empty()).count(), 3);
}
