//! Job signals (`POST /v2/heartbeat/<id>/start|complete|fail`) and run statistics
//! (`GET /v2/services/<id>/stats`).

use std::sync::Arc;

use medic_server::domain::{ServiceId, Timestamp};
use medic_server::store::{JobSignal, SignalKind, Store};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    TestApp, assert_envelope, assert_error, assert_error_contains, assert_ok, send,
};

async fn job_app() -> (TestApp, i64) {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let s = app
        .create_service(
            &json!({ "heartbeat_name": "Nightly-Job", "interval_seconds": 86400,
                                 "max_duration_ms": 1000 }),
        )
        .await;
    let id = s["service_id"].as_i64().expect("id");
    (app, id)
}

async fn signal(app: &TestApp, id: i64, kind: &str, body: &Value) -> Value {
    let r = app
        .post_json(&format!("/v2/heartbeat/{id}/{kind}"), body)
        .await;
    let v = assert_envelope(&r, 201, true);
    assert_eq!(v["message"], "Job signal recorded.");
    v["results"].clone()
}

async fn runs(app: &TestApp, id: i64) -> Vec<Value> {
    let r = app
        .admin()
        .get(&format!("/v2/services/{id}/runs?limit=250"))
        .await;
    assert_ok(&r, 200)["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

async fn stats(app: &TestApp, id: i64) -> Value {
    let r = app.admin().get(&format!("/v2/services/{id}/stats")).await;
    assert_ok(&r, 200)
}

/// Records a finished run of exactly `duration_ms`, finishing at `end_ms`.
async fn seed_run(store: &Arc<dyn Store>, id: i64, run: &str, end_ms: i64, duration_ms: i64) {
    for (kind, at) in [
        (SignalKind::Start, end_ms - duration_ms),
        (SignalKind::Complete, end_ms),
    ] {
        store
            .record_job_signal(&JobSignal {
                service_id: ServiceId(id),
                kind,
                run_id: Some(run.to_owned()),
                exit_code: None,
                body: None,
                body_truncated: false,
                at: Timestamp::from_millis(at),
            })
            .await
            .expect("seed run");
    }
}

#[tokio::test]
async fn start_complete_and_fail_answer_201_with_the_run() {
    let (app, id) = job_app().await;
    let started = signal(&app, id, "start", &json!({ "run_id": "run-1" })).await;
    assert_eq!(started["service_id"], id);
    assert_eq!(started["heartbeat_name"], "Nightly-Job");
    assert_eq!(started["status"], "STARTED");
    assert_eq!(started["run_id"], "run-1");
    assert_eq!(started["body_truncated"], false);
    assert!(started.get("duration_ms").is_none(), "{started}");
    assert!(started.get("duration_alert").is_none(), "{started}");

    let done = signal(&app, id, "complete", &json!({ "run_id": "run-1" })).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["run_id"], "run-1");
    assert!(
        done["duration_ms"].as_i64().is_some_and(|d| d >= 0),
        "{done}"
    );
    assert_eq!(done["duration_alert"], false);

    // A numeric run id; a failure without a start.
    let failed = signal(&app, id, "fail", &json!({ "run_id": 77 })).await;
    assert_eq!(failed["status"], "FAILED");
    assert_eq!(failed["run_id"], "77");
    assert!(failed.get("duration_ms").is_none(), "{failed}");

    // No body at all: start gets a generated id, complete finishes the newest running run.
    let r = send(
        app.anon()
            .request(Method::POST, &format!("/v2/heartbeat/{id}/start")),
    )
    .await;
    let anon_start = assert_ok(&r, 201);
    let generated = anon_start["run_id"].as_str().expect("generated run id");
    assert!(!generated.is_empty());
    let r = send(
        app.anon()
            .request(Method::POST, &format!("/v2/heartbeat/{id}/complete")),
    )
    .await;
    assert_eq!(assert_ok(&r, 201)["run_id"], generated);

    // Signals count as heartbeats.
    let r = app.get("/heartbeat?heartbeat_name=nightly-job").await;
    let statuses: Vec<Value> = assert_ok(&r, 200)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        [
            json!("COMPLETED"),
            json!("STARTED"),
            json!("FAILED"),
            json!("COMPLETED"),
            json!("STARTED")
        ]
    );

    let list = runs(&app, id).await;
    assert_eq!(list.len(), 3);
    let statuses: Vec<&str> = list.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["completed", "failed", "completed"]);
}

#[tokio::test]
async fn signals_for_unknown_or_inactive_services_and_bad_input_are_refused() {
    let (app, id) = job_app().await;
    let r = app.post_json("/v2/heartbeat/999/start", &json!({})).await;
    assert_error(&r, 404, "Service 999 is not a registered service.");
    for bad in ["abc", "0", "-4"] {
        let r = app
            .post_json(&format!("/v2/heartbeat/{bad}/complete"), &json!({}))
            .await;
        assert_error(&r, 400, "service_id must be a positive integer.");
    }
    let r = app
        .post_json(&format!("/v2/heartbeat/{id}/start"), &json!({ "exit": 1 }))
        .await;
    assert_error_contains(&r, 400, "unknown field");
    let r = send(
        app.anon()
            .request(Method::POST, &format!("/v2/heartbeat/{id}/fail"))
            .body("{not json"),
    )
    .await;
    assert_error_contains(&r, 400, "Request body is not valid JSON");

    let r = app
        .admin()
        .patch_json(&format!("/v2/services/{id}"), &json!({ "active": false }))
        .await;
    assert_ok(&r, 200);
    for kind in ["start", "complete", "fail"] {
        let r = app
            .post_json(&format!("/v2/heartbeat/{id}/{kind}"), &json!({}))
            .await;
        assert_error(
            &r,
            400,
            "Nightly-Job was located, but is marked inactive. Does this need to be re-enabled?",
        );
    }
    assert!(runs(&app, id).await.is_empty());
    let r = app.get("/heartbeat").await;
    assert_eq!(assert_ok(&r, 200), json!([]));
}

#[tokio::test]
async fn a_non_zero_exit_code_records_a_failed_run() {
    let (app, id) = job_app().await;
    signal(&app, id, "start", &json!({ "run_id": "x" })).await;
    let done = signal(
        &app,
        id,
        "complete",
        &json!({ "run_id": "x", "exit_code": 3 }),
    )
    .await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["exit_code"], 3);
    let ok = signal(
        &app,
        id,
        "complete",
        &json!({ "run_id": "y", "exit_code": 0 }),
    )
    .await;
    assert_eq!(ok["status"], "COMPLETED");
    assert_eq!(ok["exit_code"], 0);
    let list = runs(&app, id).await;
    let x = list.iter().find(|r| r["run_id"] == "x").expect("run x");
    assert_eq!(x["status"], "failed");
    assert_eq!(x["exit_code"], 3);
}

#[tokio::test]
async fn long_bodies_keep_their_tail_and_are_flagged_truncated() {
    let (app, id) = job_app().await;
    let long = format!("HEAD{}TAIL-END", "x".repeat(12 * 1024));
    let r = signal(&app, id, "fail", &json!({ "run_id": "long", "body": long })).await;
    assert_eq!(r["body_truncated"], true);
    let exact = "y".repeat(10 * 1024);
    let r = signal(
        &app,
        id,
        "complete",
        &json!({ "run_id": "exact", "body": exact }),
    )
    .await;
    assert_eq!(r["body_truncated"], false);
    let r = signal(
        &app,
        id,
        "complete",
        &json!({ "run_id": "short", "body": "all good\n" }),
    )
    .await;
    assert_eq!(r["body_truncated"], false);

    let list = runs(&app, id).await;
    let by = |run: &str| list.iter().find(|r| r["run_id"] == run).expect(run).clone();
    let long_run = by("long");
    let body = long_run["body"].as_str().unwrap();
    assert_eq!(body.len(), 10 * 1024);
    assert!(body.ends_with("xTAIL-END"));
    assert!(!body.contains("HEAD"));
    assert_eq!(long_run["body_truncated"], true);
    assert_eq!(by("exact")["body"].as_str().map(str::len), Some(10 * 1024));
    assert_eq!(by("exact")["body_truncated"], false);
    assert_eq!(by("short")["body"], "all good\n");
}

#[tokio::test]
async fn duration_alert_compares_the_run_with_max_duration_ms() {
    let (app, id) = job_app().await;
    let store = app.store().await;
    // A run that started five seconds ago (max_duration_ms is 1000).
    store
        .record_job_signal(&JobSignal {
            service_id: ServiceId(id),
            kind: SignalKind::Start,
            run_id: Some("slow".into()),
            exit_code: None,
            body: None,
            body_truncated: false,
            at: Timestamp::now().plus_millis(-5_000),
        })
        .await
        .expect("seed start");
    store.close().await;
    let slow = signal(&app, id, "complete", &json!({ "run_id": "slow" })).await;
    let d = slow["duration_ms"].as_i64().expect("duration");
    assert!((5_000..60_000).contains(&d), "{d}");
    assert_eq!(slow["duration_alert"], true);

    signal(&app, id, "start", &json!({ "run_id": "fast" })).await;
    let fast = signal(&app, id, "complete", &json!({ "run_id": "fast" })).await;
    assert!(
        fast["duration_ms"].as_i64().is_some_and(|d| d < 1000),
        "{fast}"
    );
    assert_eq!(fast["duration_alert"], false);

    // Without a limit there is no duration_alert at all.
    let other = app
        .create_service(&json!({ "heartbeat_name": "unbounded", "interval_seconds": 60 }))
        .await;
    let oid = other["service_id"].as_i64().unwrap();
    signal(&app, oid, "start", &json!({ "run_id": "a" })).await;
    let done = signal(&app, oid, "complete", &json!({ "run_id": "a" })).await;
    assert!(done.get("duration_ms").is_some());
    assert!(done.get("duration_alert").is_none(), "{done}");
}

#[tokio::test]
async fn stats_are_null_below_five_runs_then_nearest_rank_percentiles() {
    let (app, id) = job_app().await;
    let s = stats(&app, id).await;
    assert_eq!(s["service_id"], id);
    assert_eq!(s["run_count"], 0);

    let store = app.store().await;
    let now = Timestamp::now().millis();
    for (i, d) in [100, 200, 300, 400].into_iter().enumerate() {
        seed_run(&store, id, &format!("r{i}"), now - 100_000 + i as i64, d).await;
    }
    let s = stats(&app, id).await;
    assert_eq!(s["run_count"], 4);
    for f in [
        "avg_duration_ms",
        "p50_duration_ms",
        "p95_duration_ms",
        "p99_duration_ms",
        "min_duration_ms",
        "max_duration_ms",
    ] {
        assert_eq!(s[f], Value::Null, "{f} below five runs: {s}");
    }

    seed_run(&store, id, "r4", now - 90_000, 500).await;
    let s = stats(&app, id).await;
    assert_eq!(s["run_count"], 5);
    assert_eq!(s["avg_duration_ms"], 300.0);
    assert_eq!(s["p50_duration_ms"], 300);
    assert_eq!(s["p95_duration_ms"], 500);
    assert_eq!(s["p99_duration_ms"], 500);
    assert_eq!(s["min_duration_ms"], 100);
    assert_eq!(s["max_duration_ms"], 500);

    for i in 5..10 {
        seed_run(
            &store,
            id,
            &format!("r{i}"),
            now - 80_000 + i,
            (i + 1) * 100,
        )
        .await;
    }
    let s = stats(&app, id).await;
    assert_eq!(s["run_count"], 10);
    assert_eq!(s["avg_duration_ms"], 550.0);
    assert_eq!(s["p50_duration_ms"], 500);
    assert_eq!(s["p95_duration_ms"], 1000);
    assert_eq!(s["p99_duration_ms"], 1000);

    // Only the last 100 finished runs count: 100 newer 7 ms runs push the others out.
    for i in 0..100 {
        seed_run(&store, id, &format!("n{i}"), now - 50_000 + i, 7).await;
    }
    store.close().await;
    let s = stats(&app, id).await;
    assert_eq!(s["run_count"], 100);
    assert_eq!(s["max_duration_ms"], 7);
    assert_eq!(s["p99_duration_ms"], 7);
    assert_eq!(s["avg_duration_ms"], 7.0);
}

#[tokio::test]
async fn stats_of_an_unknown_service_is_404_and_needs_a_key() {
    let (app, id) = job_app().await;
    let r = app.admin().get("/v2/services/999/stats").await;
    assert_error(&r, 404, "Service 999 was not found.");
    let r = app.admin().get("/v2/services/x/stats").await;
    assert_error(&r, 400, "service_id must be a positive integer.");
    // The anonymous switch covers ingestion, not v2 reads.
    let r = app.get(&format!("/v2/services/{id}/stats")).await;
    assert_eq!(r.status.as_u16(), 401);
}
