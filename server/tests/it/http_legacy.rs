//! The legacy v1 contract of COMPAT.md, route by route, as old clients speak it: no
//! `Authorization` header (anonymous heartbeats on), bodies with or without a `Content-Type`,
//! exact messages and status codes, and nothing changed after a rejected request.

use medic_server::domain::service::name_key;
use medic_server::domain::{ServiceId, Timestamp};
use medic_server::store::{AlertKind, NewAlert, NewHeartbeat};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::support::{
    Reply, TestApp, assert_envelope, assert_error, assert_error_contains, assert_ok, encode, send,
};

/// The old service's openness: anonymous heartbeats and anonymous changes to services.
async fn legacy_app() -> TestApp {
    TestApp::builder()
        .anonymous(true)
        .configure(|c| c.allow_anonymous_service_changes = true)
        .spawn()
        .await
}

fn beat(name: &str, status: &str) -> Value {
    json!({ "heartbeat_name": name, "status": status })
}

/// `GET /heartbeat` results (asserting the envelope).
async fn heartbeats(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/heartbeat{query}")).await;
    assert_ok(&r, 200).as_array().expect("list").clone()
}

async fn services(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/service{query}")).await;
    assert_ok(&r, 200).as_array().expect("list").clone()
}

async fn service(app: &TestApp, name: &str) -> Value {
    let r = app.get(&format!("/service/{}", encode(name))).await;
    let list = assert_ok(&r, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    list[0].clone()
}

async fn snapshot_count(app: &TestApp) -> i64 {
    let r = app.admin().get("/v2/snapshots").await;
    assert_ok(&r, 200)["total_count"]
        .as_i64()
        .expect("total_count")
}

/// `2026-11-23T18:27:47.123+00:00`: UTC, milliseconds, explicit offset.
#[track_caller]
pub fn assert_utc_millis(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert_eq!(s.len(), 29, "{s}");
    assert!(s.ends_with("+00:00"), "{s}");
    assert_eq!(&s[10..11], "T", "{s}");
    assert_eq!(&s[19..20], ".", "{s}");
    assert!(Timestamp::parse(s).is_some(), "{s}");
}

async fn raw_post(app: &TestApp, path: &str, content_type: Option<&str>, body: &str) -> Reply {
    let mut rb = app.anon().request(Method::POST, path).body(body.to_owned());
    if let Some(ct) = content_type {
        rb = rb.header(CONTENT_TYPE, ct);
    }
    send(rb).await
}

// ---- POST /heartbeat -------------------------------------------------------------------------

#[tokio::test]
async fn post_heartbeat_records_it_and_answers_201() {
    let app = legacy_app().await;
    let id = app.register("Backup-Job", 5).await;
    let r = app
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "backup-job", "status": "UP", "service_name": "" }),
        )
        .await;
    let v = assert_envelope(&r, 201, true);
    assert_eq!(v["message"], "Heartbeat Posted Successfully.");
    assert_eq!(v["results"], "");

    // v2 extension: run_id, as a string or a number.
    let mut with_run = beat("BACKUP-JOB", "DEGRADED");
    with_run["run_id"] = json!(42);
    assert_ok(&app.post_json("/heartbeat", &with_run).await, 201);

    let rows = heartbeats(&app, "").await;
    assert_eq!(rows.len(), 2);
    let newest = &rows[0];
    assert_eq!(newest["heartbeat_name"], "Backup-Job");
    assert_eq!(newest["status"], "DEGRADED");
    assert_eq!(newest["run_id"], "42");
    assert_eq!(newest["service_name"], "it");
    assert_eq!(newest["team"], "site-reliability");
    assert_eq!(newest["priority"], "p3");
    assert!(newest["heartbeat_id"].is_i64());
    assert_utc_millis(&newest["time"]);
    assert_eq!(rows[1]["status"], "UP");
    assert_eq!(rows[1]["run_id"], Value::Null);

    let r = app
        .admin()
        .get(&format!("/v2/services/{id}/heartbeats"))
        .await;
    assert_eq!(
        assert_ok(&r, 200)["entries"].as_array().map(Vec::len),
        Some(2)
    );
}

#[tokio::test]
async fn post_heartbeat_for_unknown_service_is_404_and_records_nothing() {
    let app = legacy_app().await;
    app.register("known", 5).await;
    let r = app.post_json("/heartbeat", &beat("Ghost-Job", "UP")).await;
    assert_error(&r, 404, "Ghost-Job is not listed as a registered service.");
    assert!(heartbeats(&app, "").await.is_empty());
}

#[tokio::test]
async fn post_heartbeat_for_inactive_service_is_400_and_records_nothing() {
    let app = legacy_app().await;
    app.register("Sleepy-Job", 5).await;
    let r = app
        .post_json("/service/sleepy-job", &json!({ "active": 0 }))
        .await;
    assert_ok(&r, 200);
    let r = app.post_json("/heartbeat", &beat("SLEEPY-JOB", "UP")).await;
    assert_error(
        &r,
        400,
        "Sleepy-Job was located, but is marked inactive. Does this need to be re-enabled?",
    );
    assert!(heartbeats(&app, "").await.is_empty());
}

#[tokio::test]
async fn post_heartbeat_rejects_missing_and_invalid_fields() {
    let app = legacy_app().await;
    app.register("job", 5).await;
    let cases = [
        json!({ "status": "UP" }),
        json!({ "heartbeat_name": "job" }),
        json!({ "heartbeat_name": "job", "status": 1 }),
        json!({ "heartbeat_name": 7, "status": "UP" }),
        json!({ "heartbeat_name": "job", "status": "UP", "colour": "red" }),
        json!({ "heartbeat_name": "job", "status": "UP", "run_id": ["x"] }),
        json!("job"),
        json!(["job", "UP"]),
    ];
    for body in &cases {
        let r = app.post_json("/heartbeat", body).await;
        assert_error_contains(&r, 400, "Invalid request body");
    }
    assert_error(
        &app.post_json("/heartbeat", &beat("job", "  ")).await,
        400,
        "status must be 1 to 255 printable characters.",
    );
    assert_error(
        &app.post_json("/heartbeat", &beat("job", &"x".repeat(256)))
            .await,
        400,
        "status must be 1 to 255 printable characters.",
    );
    assert_error_contains(
        &app.post_json("/heartbeat", &beat("", "UP")).await,
        400,
        "heartbeat_name",
    );
    assert!(heartbeats(&app, "").await.is_empty());
}

#[tokio::test]
async fn bodies_without_content_type_or_as_text_plain_are_accepted() {
    let app = legacy_app().await;
    app.register("cron-job", 5).await;
    let body = r#"{"heartbeat_name": "cron-job", "status": "UP"}"#;
    let r = raw_post(&app, "/heartbeat", None, body).await;
    assert_ok(&r, 201);
    let r = raw_post(&app, "/heartbeat", Some("text/plain"), body).await;
    assert_ok(&r, 201);
    let r = raw_post(
        &app,
        "/service",
        Some("text/plain; charset=utf-8"),
        r#"{"heartbeat_name": "other", "service_name": "s", "alert_interval": 1}"#,
    )
    .await;
    assert_ok(&r, 201);
    let r = raw_post(&app, "/service/other", None, r#"{"team": "ops"}"#).await;
    assert_ok(&r, 200);
    assert_eq!(heartbeats(&app, "").await.len(), 2);
    assert_eq!(service(&app, "other").await["team"], "ops");
}

#[tokio::test]
async fn malformed_form_encoded_and_empty_bodies_get_400_envelopes() {
    let app = legacy_app().await;
    app.register("job", 5).await;
    for path in ["/heartbeat", "/service", "/service/job"] {
        let r = raw_post(&app, path, Some("application/json"), "{oops").await;
        assert_error_contains(&r, 400, "Request body is not valid JSON");
        let r = raw_post(
            &app,
            path,
            Some("application/x-www-form-urlencoded"),
            "heartbeat_name=job&status=UP",
        )
        .await;
        assert_error_contains(&r, 400, "Request body is not valid JSON");
        let r = raw_post(&app, path, None, "").await;
        assert_error(&r, 400, "Request body is empty; a JSON object is required.");
    }
    assert!(heartbeats(&app, "").await.is_empty());
    assert_eq!(services(&app, "").await.len(), 1);
    assert_eq!(snapshot_count(&app).await, 0);
}

#[tokio::test]
async fn oversized_body_is_a_413_envelope() {
    let app = TestApp::builder()
        .anonymous(true)
        .max_body_bytes(2048)
        .spawn()
        .await;
    app.register("job", 5).await;
    let r = app
        .post_json("/heartbeat", &beat("job", &"x".repeat(4096)))
        .await;
    assert_error(&r, 413, "Request body is too large.");
    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "big", "service_name": "s".repeat(4096), "alert_interval": 1 }),
        )
        .await;
    assert_error(&r, 413, "Request body is too large.");
    assert!(heartbeats(&app, "").await.is_empty());
    assert_eq!(services(&app, "").await.len(), 1);
}

// ---- GET /heartbeat --------------------------------------------------------------------------

#[tokio::test]
async fn get_heartbeat_filters_newest_first() {
    let app = legacy_app().await;
    let a = app
        .create_service(&json!({ "heartbeat_name": "Alpha", "service_name": "Billing", "interval_seconds": 60 }))
        .await;
    app.create_service(
        &json!({ "heartbeat_name": "beta", "service_name": "search", "interval_seconds": 60 }),
    )
    .await;
    for status in ["a1", "a2", "a3"] {
        assert_ok(
            &app.post_json("/heartbeat", &beat("alpha", status)).await,
            201,
        );
    }
    for status in ["b1", "b2"] {
        assert_ok(
            &app.post_json("/heartbeat", &beat("BETA", status)).await,
            201,
        );
    }
    let all = heartbeats(&app, "").await;
    let statuses: Vec<&str> = all.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["b2", "b1", "a3", "a2", "a1"]);
    let ids: Vec<i64> = all
        .iter()
        .map(|r| r["heartbeat_id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    let alpha = heartbeats(&app, "?heartbeat_name=ALPHA").await;
    assert_eq!(alpha.len(), 3);
    assert!(alpha.iter().all(|r| r["heartbeat_name"] == "Alpha"));
    assert_eq!(heartbeats(&app, "?service_name=search").await.len(), 2);
    assert_eq!(
        heartbeats(&app, "?service_name=BILLING&maxCount=2")
            .await
            .len(),
        2
    );
    assert_eq!(heartbeats(&app, "?heartbeat_name=nobody").await.len(), 0);
    assert_eq!(heartbeats(&app, "?maxCount=250").await.len(), 5);
    assert_eq!(a["heartbeat_name"], "Alpha");
}

#[tokio::test]
async fn get_heartbeat_max_count_is_capped_as_the_old_service_did() {
    let app = legacy_app().await;
    app.register("one", 1).await;
    let r = app
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "one", "status": "UP"}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    // Above 250 is capped at 250 (the TypeScript client asks for 500); not an integer means
    // the default, 250.
    for lenient in [
        "251",
        "300",
        "500",
        "99999999999999999999",
        "ten",
        "2.5",
        "",
    ] {
        let r = app.get(&format!("/heartbeat?maxCount={lenient}")).await;
        assert_eq!(
            assert_ok(&r, 200).as_array().map(Vec::len),
            Some(1),
            "maxCount={lenient}"
        );
    }
    for bad in ["0", "-1", "-300"] {
        let r = app.get(&format!("/heartbeat?maxCount={bad}")).await;
        assert_error(
            &r,
            400,
            "Query parameter maxCount must be a positive integer (at most 250 rows are returned).",
        );
    }
}

#[tokio::test]
async fn get_heartbeat_returns_at_most_250_by_default() {
    let app = legacy_app().await;
    app.register("busy", 1).await;
    let store = app.store().await;
    let base = Timestamp::now().millis() - 1_000_000;
    let batch: Vec<NewHeartbeat> = (0..260)
        .map(|i| NewHeartbeat {
            name_key: name_key("busy"),
            status: format!("s{i}"),
            run_id: None,
            received_at: Timestamp::from_millis(base + i),
        })
        .collect();
    store.record_heartbeats(&batch).await.expect("seed");
    store.close().await;
    let rows = heartbeats(&app, "").await;
    assert_eq!(rows.len(), 250);
    assert_eq!(rows[0]["status"], "s259");
    assert_eq!(rows[249]["status"], "s10");
}

// ---- POST /service ---------------------------------------------------------------------------

#[tokio::test]
async fn post_service_registers_with_defaults_then_reports_already_registered() {
    let app = legacy_app().await;
    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "Nightly-ETL", "service_name": "warehouse", "alert_interval": 30 }),
        )
        .await;
    let v = assert_envelope(&r, 201, true);
    assert_eq!(v["message"], "Heartbeat successfully registered.");
    assert_eq!(v["results"], "");

    let s = service(&app, "nightly-etl").await;
    for field in [
        "service_id",
        "heartbeat_name",
        "service_name",
        "active",
        "alert_interval",
        "threshold",
        "team",
        "priority",
        "muted",
        "down",
        "runbook",
        "date_added",
        "date_modified",
        "date_muted",
        "grace_period_seconds",
        "max_duration_ms",
    ] {
        assert!(s.get(field).is_some(), "{field} missing from {s}");
    }
    assert_eq!(s["heartbeat_name"], "Nightly-ETL");
    assert_eq!(s["service_name"], "warehouse");
    assert_eq!(s["alert_interval"], 30);
    assert_eq!(s["threshold"], 1);
    assert_eq!(s["team"], "site-reliability");
    assert_eq!(s["priority"], "p3");
    assert_eq!(s["active"], 1);
    assert_eq!(s["muted"], 0);
    assert_eq!(s["down"], 0);
    assert_eq!(s["runbook"], Value::Null);
    assert_eq!(s["date_muted"], Value::Null);
    assert_eq!(s["grace_period_seconds"], 0);
    assert_utc_millis(&s["date_added"]);
    assert_utc_millis(&s["date_modified"]);

    // Same name in another case, other settings: 200 and no change.
    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "NIGHTLY-etl", "service_name": "other", "alert_interval": 5,
                     "team": "payments", "priority": "p1" }),
        )
        .await;
    let v = assert_envelope(&r, 200, true);
    assert_eq!(v["message"], "Heartbeat is already registered.");
    assert_eq!(services(&app, "").await, vec![s]);
}

#[tokio::test]
async fn post_service_takes_every_optional_field() {
    let app = legacy_app().await;
    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "full", "service_name": "svc", "alert_interval": 15,
                     "threshold": 3, "team": "payments", "priority": "P1",
                     "runbook": "https://runbooks.example/full", "environment": "" }),
        )
        .await;
    assert_ok(&r, 201);
    let s = service(&app, "full").await;
    assert_eq!(s["heartbeat_name"], "full");
    assert_eq!(s["threshold"], 3);
    assert_eq!(s["team"], "payments");
    assert_eq!(s["priority"], "p1");
    assert_eq!(s["runbook"], "https://runbooks.example/full");
}

#[tokio::test]
async fn post_service_environment_prefixes_the_name() {
    let app = legacy_app().await;
    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "db-backup", "service_name": "db", "alert_interval": 60,
                     "environment": "prod" }),
        )
        .await;
    assert_ok(&r, 201);
    let s = service(&app, "PROD-DB-BACKUP").await;
    assert_eq!(s["heartbeat_name"], "prod-db-backup");
    let r = app.get("/service/db-backup").await;
    assert_eq!(assert_ok(&r, 200), json!([]));
    // Heartbeats use the prefixed name.
    assert_ok(
        &app.post_json("/heartbeat", &beat("prod-db-backup", "UP"))
            .await,
        201,
    );
    assert_error(
        &app.post_json("/heartbeat", &beat("db-backup", "UP")).await,
        404,
        "db-backup is not listed as a registered service.",
    );
}

#[tokio::test]
async fn post_service_rejects_invalid_bodies_and_registers_nothing() {
    let app = legacy_app().await;
    let ok_body = json!({ "heartbeat_name": "x", "service_name": "s", "alert_interval": 5 });
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for field in ["heartbeat_name", "service_name", "alert_interval"] {
        let mut b = ok_body.clone();
        b.as_object_mut().unwrap().remove(field);
        cases.push((b, "Invalid request body"));
    }
    let with = |k: &str, v: Value| {
        let mut b = ok_body.clone();
        b[k] = v;
        b
    };
    cases.push((with("alert_interval", json!("5")), "Invalid request body"));
    cases.push((
        with("alert_interval", json!(0)),
        "alert_interval must be between 1 and 525600 minutes.",
    ));
    cases.push((
        with("threshold", json!(0)),
        "threshold must be between 1 and 10000.",
    ));
    cases.push((
        with("priority", json!("p9")),
        "priority must be one of p1..p5.",
    ));
    cases.push((with("heartbeat_name", json!("  ")), "heartbeat_name"));
    cases.push((with("unexpected", json!(true)), "unknown field"));
    cases.push((
        json!(["x", "s", 5]),
        "expected a JSON object, not an array.",
    ));
    for (body, message) in &cases {
        let r = app.post_json("/service", body).await;
        assert_error_contains(&r, 400, message);
    }
    assert!(services(&app, "").await.is_empty());
}

// ---- GET /service, GET /service/<name> -------------------------------------------------------

#[tokio::test]
async fn get_service_filters_by_service_name_and_active() {
    let app = legacy_app().await;
    for (name, svc) in [("one", "Billing"), ("two", "billing"), ("three", "search")] {
        let r = app
            .post_json(
                "/service",
                &json!({ "heartbeat_name": name, "service_name": svc, "alert_interval": 5 }),
            )
            .await;
        assert_ok(&r, 201);
    }
    assert_ok(
        &app.post_json("/service/three", &json!({ "active": 0 }))
            .await,
        200,
    );
    assert_eq!(services(&app, "").await.len(), 3);
    let inactive = services(&app, "?active=0").await;
    assert_eq!(inactive.len(), 1);
    assert_eq!(inactive[0]["heartbeat_name"], "three");
    assert_eq!(inactive[0]["active"], 0);
    assert_eq!(services(&app, "?active=1").await.len(), 2);
    assert_eq!(services(&app, "?service_name=BILLING").await.len(), 2);
    assert_eq!(
        services(&app, "?service_name=search&active=1").await.len(),
        0
    );
    for bad in ["yes", "2", "1.0"] {
        let r = app.get(&format!("/service?active={bad}")).await;
        assert_error(&r, 400, "Query parameter active must be 0 or 1.");
    }
}

#[tokio::test]
async fn get_service_by_name_is_case_insensitive_and_lists_zero_or_one() {
    let app = legacy_app().await;
    app.register("Café-Sync", 5).await;
    let s = service(&app, "CAFÉ-SYNC").await;
    assert_eq!(s["heartbeat_name"], "Café-Sync");
    assert_ok(
        &app.post_json("/heartbeat", &beat("café-sync", "UP")).await,
        201,
    );
    let r = app.get("/service/nothing-here").await;
    assert_eq!(assert_ok(&r, 200), json!([]));
}

// ---- POST /service/<name> --------------------------------------------------------------------

#[tokio::test]
async fn post_service_update_changes_fields_and_snapshots_the_old_state() {
    let app = legacy_app().await;
    let id = app.register("Report-Job", 5).await;
    let r = send(
        app.anon()
            .request(Method::POST, "/service/REPORT-JOB")
            .header("X-Actor", "alice")
            .json(
                &json!({ "service_name": "reports", "alert_interval": 2.5, "threshold": 3,
                           "team": "finance", "priority": "p1",
                           "runbook": "https://runbooks.example/report" }),
            ),
    )
    .await;
    let v = assert_envelope(&r, 200, true);
    assert_eq!(v["message"], "Successfully posted update");
    let s = service(&app, "report-job").await;
    assert_eq!(s["service_name"], "reports");
    assert_eq!(s["alert_interval"], 2.5);
    assert_eq!(s["threshold"], 3);
    assert_eq!(s["team"], "finance");
    assert_eq!(s["priority"], "p1");
    assert_eq!(s["runbook"], "https://runbooks.example/report");

    let r = app
        .admin()
        .get(&format!("/v2/snapshots?service_id={id}"))
        .await;
    let page = assert_ok(&r, 200);
    assert_eq!(page["total_count"], 1);
    let snap = &page["entries"][0];
    assert_eq!(snap["action_type"], "edit");
    assert_eq!(snap["actor"], "anonymous");
    assert_eq!(snap["on_behalf_of"], "alice");
    assert_eq!(snap["snapshot_data"]["team"], "site-reliability");
    assert_eq!(snap["snapshot_data"]["interval_seconds"], 300);
}

#[tokio::test]
async fn post_service_update_labels_single_changes() {
    let app = legacy_app().await;
    let id = app.register("label-job", 5).await;
    let steps = [
        (json!({ "muted": 1 }), "mute"),
        (json!({ "muted": 0 }), "unmute"),
        (json!({ "active": 0 }), "deactivate"),
        (json!({ "active": true }), "activate"),
        (json!({ "priority": "p2" }), "priority_change"),
        (json!({ "team": "dba" }), "team_change"),
        (json!({ "down": 1 }), "edit"),
    ];
    for (body, _) in &steps {
        assert_ok(&app.post_json("/service/label-job", body).await, 200);
    }
    let r = app
        .admin()
        .get(&format!("/v2/snapshots?service_id={id}&limit=250"))
        .await;
    let page = assert_ok(&r, 200);
    let mut actions: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action_type"].as_str().unwrap())
        .collect();
    actions.reverse();
    let expected: Vec<&str> = steps.iter().map(|(_, a)| *a).collect();
    assert_eq!(actions, expected);
    assert_eq!(page["entries"][0]["actor"], "anonymous");
    let s = service(&app, "label-job").await;
    assert_eq!(s["down"], 1);
    assert_eq!(s["priority"], "p2");
    assert_eq!(s["team"], "dba");
    assert_eq!(s["muted"], 0);
    assert_eq!(s["active"], 1);
}

#[tokio::test]
async fn post_service_update_mute_sets_date_muted() {
    let app = legacy_app().await;
    app.register("mute-me", 5).await;
    assert_ok(
        &app.post_json("/service/mute-me", &json!({ "muted": 1 }))
            .await,
        200,
    );
    let s = service(&app, "mute-me").await;
    assert_eq!(s["muted"], 1);
    assert_utc_millis(&s["date_muted"]);
}

#[tokio::test]
async fn post_service_update_of_unknown_service_is_404_with_the_legacy_body() {
    let app = legacy_app().await;
    let r = app
        .post_json("/service/No-Such-Job", &json!({ "muted": 1 }))
        .await;
    assert_error(
        &r,
        404,
        "The heartbeat registration specified: No-Such-Job was not located. Does it exist?",
    );
    assert_eq!(snapshot_count(&app).await, 0);
    assert!(services(&app, "").await.is_empty());
}

#[tokio::test]
async fn post_service_update_rejects_invalid_bodies_and_changes_nothing() {
    let app = legacy_app().await;
    app.register("steady", 5).await;
    let before = service(&app, "steady").await;
    let cases = [
        (json!({}), "No updatable fields were supplied."),
        (json!({ "active": 2 }), "active must be 0 or 1."),
        (json!({ "muted": -1 }), "muted must be 0 or 1."),
        (json!({ "down": 5 }), "down must be 0 or 1."),
        (json!({ "active": "yes" }), "Invalid request body"),
        (
            json!({ "alert_interval": 0 }),
            "alert_interval must be a positive number of minutes.",
        ),
        (
            json!({ "threshold": 0 }),
            "threshold must be between 1 and 10000.",
        ),
        (
            json!({ "priority": "urgent" }),
            "priority must be one of p1..p5.",
        ),
        (json!({ "team": " " }), "team must not be empty."),
        (json!({ "heartbeat_name": "renamed" }), "unknown field"),
    ];
    for (body, message) in &cases {
        let r = app.post_json("/service/steady", body).await;
        assert_error_contains(&r, 400, message);
    }
    assert_eq!(service(&app, "steady").await, before);
    assert_eq!(snapshot_count(&app).await, 0);
}

// ---- GET /alerts -----------------------------------------------------------------------------

#[tokio::test]
async fn get_alerts_lists_newest_first_and_filters_by_active() {
    let app = legacy_app().await;
    let id = app.register("alerting", 5).await;
    let store = app.store().await;
    let base = Timestamp::now().millis() - 600_000;
    for i in 0..105 {
        store
            .open_alert(&NewAlert {
                service_id: ServiceId(id),
                kind: AlertKind::HeartbeatMissing,
                name: format!("alerting missed {i}"),
                dedup_key: format!("alerting-{i}"),
                at: Timestamp::from_millis(base + i),
            })
            .await
            .expect("open alert");
    }
    store.close().await;

    let r = app.get("/alerts").await;
    let list = assert_ok(&r, 200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 100, "the latest 100 without a filter");
    let a = &list[0];
    assert_eq!(a["alert_name"], "alerting missed 104");
    assert_eq!(list[99]["alert_name"], "alerting missed 5");
    assert_eq!(a["service_id"], id);
    assert_eq!(a["active"], 1);
    assert_eq!(a["external_reference_id"], Value::Null);
    assert!(a["alert_cycle"].is_i64());
    assert!(a["alert_id"].is_i64());
    assert_utc_millis(&a["created_date"]);
    assert_eq!(a["closed_date"], Value::Null);

    let r = app.get("/alerts?active=1").await;
    assert_eq!(assert_ok(&r, 200).as_array().map(Vec::len), Some(105));
    let r = app.get("/alerts?active=0").await;
    assert_eq!(assert_ok(&r, 200), json!([]));
    let r = app.get("/alerts?active=open").await;
    assert_error(&r, 400, "Query parameter active must be 0 or 1.");
}

// ---- GET /v1/healthcheck/network, unknown routes and methods ----------------------------------

#[tokio::test]
async fn network_healthcheck_is_204_without_a_body() {
    let app = TestApp::spawn().await;
    let r = app.get("/v1/healthcheck/network").await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(r.body, "");
}

#[tokio::test]
async fn unknown_route_is_a_404_envelope() {
    let app = legacy_app().await;
    for path in ["/nope", "/v2/nothing", "/service/a/b"] {
        assert_error(&app.get(path).await, 404, "No such route.");
    }
    assert_error(
        &app.post_json("/heartbeats", &beat("x", "UP")).await,
        404,
        "No such route.",
    );
}

#[tokio::test]
async fn wrong_method_is_a_405_envelope() {
    let app = legacy_app().await;
    for (method, path) in [
        (Method::DELETE, "/heartbeat"),
        (Method::PUT, "/service"),
        (Method::DELETE, "/service/x"),
        (Method::POST, "/alerts"),
        (Method::GET, "/v2/heartbeat/1/start"),
        (Method::POST, "/health"),
    ] {
        let r = send(app.anon().request(method, path)).await;
        assert_error(&r, 405, "Method not allowed for this route.");
    }
}

/// The v1 wire format byte for byte: compact JSON, object keys in sorted order at every level,
/// `results` the empty string on bodiless answers and errors, 0/1 flags, whole minutes as
/// integers and fractional ones as numbers.
#[tokio::test]
async fn v1_bodies_are_compact_with_sorted_keys() {
    let app = legacy_app().await;
    #[track_caller]
    fn canonical(r: &Reply) -> Value {
        let v = r.json();
        assert_eq!(r.body, v.to_string(), "not compact with sorted keys");
        v
    }

    let r = app
        .post_json(
            "/service",
            &json!({ "heartbeat_name": "bytes", "service_name": "s", "alert_interval": 5 }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201);
    assert_eq!(
        r.body,
        r#"{"message":"Heartbeat successfully registered.","results":"","success":true}"#
    );
    let r = app.post_json("/heartbeat", &beat("nobody", "UP")).await;
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(
        r.body,
        r#"{"message":"nobody is not listed as a registered service.","results":"","success":false}"#
    );
    let r = app.post_json("/heartbeat", &beat("bytes", "UP")).await;
    assert_eq!(
        r.body,
        r#"{"message":"Heartbeat Posted Successfully.","results":"","success":true}"#
    );

    let beats = canonical(&app.get("/heartbeat?heartbeat_name=bytes").await);
    let keys: Vec<&str> = beats["results"][0]
        .as_object()
        .expect("heartbeat")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "heartbeat_id",
            "heartbeat_name",
            "priority",
            "run_id",
            "service_name",
            "status",
            "team",
            "time"
        ]
    );

    let whole = canonical(&app.get("/service/bytes").await);
    let s = &whole["results"][0];
    assert!(s["alert_interval"].is_i64(), "{s}");
    assert_eq!(s["alert_interval"], 5);
    assert_eq!(
        (s["active"].clone(), s["muted"].clone(), s["down"].clone()),
        (json!(1), json!(0), json!(0))
    );
    let r = app
        .post_json(
            "/service/bytes",
            &json!({ "alert_interval": 0.5, "muted": 1 }),
        )
        .await;
    assert_eq!(
        r.body,
        r#"{"message":"Successfully posted update","results":"","success":true}"#
    );
    let half = canonical(&app.get("/service/bytes").await);
    let s = &half["results"][0];
    assert!(s["alert_interval"].is_f64(), "{s}");
    assert_eq!(s["alert_interval"], 0.5);
    assert_eq!(s["muted"], 1);
    assert_utc_millis(&s["date_muted"]);
    assert!(s["muted_until"].is_null(), "{s}");
    let keys: Vec<&str> = s
        .as_object()
        .expect("service")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "active",
            "alert_interval",
            "date_added",
            "date_modified",
            "date_muted",
            "down",
            "environment",
            "grace_period_seconds",
            "heartbeat_name",
            "last_heartbeat",
            "max_duration_ms",
            "muted",
            "muted_until",
            "priority",
            "runbook",
            "service_id",
            "service_name",
            "state",
            "team",
            "threshold"
        ]
    );
    canonical(&app.get("/alerts").await);
}
