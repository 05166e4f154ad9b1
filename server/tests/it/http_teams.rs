//! The v2 routing and maintenance API: teams, notification targets (secrets masked, webhook URLs
//! through the SSRF guard), maintenance windows and the service snooze.

use medic_server::domain::Timestamp;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, assert_error_contains, assert_ok};

const ROUTING_KEY: &str = "0123456789abcdef0123456789abcdef";
const WEBHOOK_SECRET: &str = "whsec-0123456789-wxyz";

async fn service(app: &TestApp, name: &str) -> i64 {
    app.create_service(&json!({ "heartbeat_name": name, "interval_seconds": 60 }))
        .await["service_id"]
        .as_i64()
        .expect("service_id")
}

async fn team(app: &TestApp, body: Value) -> i64 {
    let r = app.admin().post_json("/v2/teams", &body).await;
    assert_ok(&r, 201)["team_id"].as_i64().expect("team_id")
}

fn len(v: &Value) -> usize {
    v.as_array().map(Vec::len).expect("array")
}

fn iso(t: Timestamp) -> String {
    serde_json::to_value(t)
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn teams_crud_with_working_hours() {
    let app = TestApp::spawn().await;
    let hours = json!({ "timezone": "Europe/Berlin",
        "ranges": [{ "days": ["mon", "tue"], "start": "22:00", "end": "06:00" }] });
    let r = app
        .admin()
        .post_json(
            "/v2/teams",
            &json!({ "name": "Payments", "working_hours": hours, "slack_channel": "#pay" }),
        )
        .await;
    let created = assert_ok(&r, 201);
    let id = created["team_id"].as_i64().unwrap();
    assert_eq!(created["name"], "Payments");
    assert_eq!(created["working_hours"], hours);
    assert_eq!(created["slack_channel"], "#pay");

    // Unique case-insensitively.
    let r = app
        .admin()
        .post_json("/v2/teams", &json!({ "name": "PAYMENTS" }))
        .await;
    assert_error(&r, 409, "A team with that name already exists.");

    // Bad input names the field and saves nothing.
    for (body, fragment) in [
        (json!({ "name": "" }), "name must not be empty"),
        (
            json!({ "name": "x", "working_hours": { "timezone": "Mars/Olympus", "ranges": [] } }),
            "working_hours: unknown time zone",
        ),
        (
            json!({ "name": "x", "working_hours": { "timezone": "UTC",
                "ranges": [{ "days": ["mon"], "start": "09:00", "end": "09:00" }] } }),
            "working_hours:",
        ),
        (json!({ "name": "x", "slack_channel": "" }), "slack_channel"),
        (json!({ "name": "x", "colour": "red" }), "unknown field"),
    ] {
        let r = app.admin().post_json("/v2/teams", &body).await;
        assert_error_contains(&r, 400, fragment);
    }
    let list = assert_ok(&app.admin().get("/v2/teams").await, 200);
    assert_eq!(len(&list), 1, "{list}");

    // Read with a read key; writing needs write.
    let read = app.create_key(&["read"]).await;
    let got = assert_ok(
        &app.with_key(&read).get(&format!("/v2/teams/{id}")).await,
        200,
    );
    assert_eq!(got, created);
    let r = app
        .with_key(&read)
        .post_json("/v2/teams", &json!({ "name": "search" }))
        .await;
    assert_eq!(r.status.as_u16(), 403);

    // Patch: rename, clear hours; null clears, absent keeps.
    let r = app
        .admin()
        .patch_json(
            &format!("/v2/teams/{id}"),
            &json!({ "name": "Payments EU", "working_hours": null }),
        )
        .await;
    let patched = assert_ok(&r, 200);
    assert_eq!(patched["name"], "Payments EU");
    assert_eq!(patched["working_hours"], Value::Null);
    assert_eq!(patched["slack_channel"], "#pay");
    let r = app
        .admin()
        .patch_json(&format!("/v2/teams/{id}"), &json!({}))
        .await;
    assert_error(&r, 400, "No updatable fields were supplied.");
    let r = app
        .admin()
        .patch_json("/v2/teams/9999", &json!({ "name": "n" }))
        .await;
    assert_error(&r, 404, "Team 9999 was not found.");

    assert_ok(&app.admin().delete(&format!("/v2/teams/{id}")).await, 200);
    let r = app.admin().get(&format!("/v2/teams/{id}")).await;
    assert_error(&r, 404, &format!("Team {id} was not found."));
    let r = app.admin().delete(&format!("/v2/teams/{id}")).await;
    assert_eq!(r.status.as_u16(), 404);
}

#[tokio::test]
async fn targets_validate_and_never_return_secrets() {
    let app = TestApp::spawn().await;
    let tm = team(&app, json!({ "name": "payments" })).await;
    let svc = service(&app, "billing-job").await;
    let team_path = format!("/v2/teams/{tm}/targets");

    let slack = assert_ok(
        &app.admin()
            .post_json(
                &team_path,
                &json!({ "kind": "slack", "config": { "channel": "#pay" }, "priority": 2 }),
            )
            .await,
        201,
    );
    assert_eq!(slack["team_id"], tm);
    assert_eq!(slack["service_id"], Value::Null);
    assert_eq!(slack["period"], "always");
    assert_eq!(slack["enabled"], true);
    assert_eq!(slack["config"], json!({ "channel": "#pay" }));

    let r = app
        .admin()
        .post_json(
            &team_path,
            &json!({ "kind": "pagerduty", "config": { "routing_key": ROUTING_KEY },
                     "priority": 1, "period": "after_hours" }),
        )
        .await;
    assert!(!r.body.contains(ROUTING_KEY), "{}", r.body);
    let pd = assert_ok(&r, 201);
    assert_eq!(pd["config"], json!({ "routing_key": "****cdef" }));
    assert_eq!(pd["period"], "after_hours");

    let r = app
        .admin()
        .post_json(
            &format!("/v2/services/{svc}/targets"),
            &json!({ "kind": "webhook",
                     "config": { "url": "https://hooks.example.com/medic", "secret": WEBHOOK_SECRET } }),
        )
        .await;
    assert!(!r.body.contains(WEBHOOK_SECRET), "{}", r.body);
    let wh = assert_ok(&r, 201);
    assert_eq!(wh["service_id"], svc);
    assert_eq!(
        wh["config"],
        json!({ "url": "https://hooks.example.com/medic", "secret": "****wxyz" })
    );

    // Lists are in notification order and masked too.
    let r = app.admin().get(&team_path).await;
    assert!(!r.body.contains(ROUTING_KEY));
    let list = assert_ok(&r, 200);
    assert_eq!(list[0]["target_id"], pd["target_id"]);
    assert_eq!(list[1]["target_id"], slack["target_id"]);
    let r = app
        .admin()
        .get(&format!("/v2/services/{svc}/targets"))
        .await;
    assert!(!r.body.contains(WEBHOOK_SECRET));
    assert_eq!(len(&assert_ok(&r, 200)), 1);

    // Bad input: a 400 naming the field, nothing saved.
    for (body, message) in [
        (
            json!({ "kind": "webhook", "config": { "url": "http://127.0.0.1:8080/x", "secret": WEBHOOK_SECRET } }),
            "config.url: Invalid webhook URL.",
        ),
        (
            json!({ "kind": "webhook", "config": { "url": "http://169.254.169.254/latest", "secret": WEBHOOK_SECRET } }),
            "config.url: Invalid webhook URL.",
        ),
        (
            json!({ "kind": "webhook", "config": { "url": "ftp://hooks.example.com/", "secret": WEBHOOK_SECRET } }),
            "config.url: Invalid webhook URL.",
        ),
        (
            json!({ "kind": "slack", "config": {} }),
            "config.channel is required.",
        ),
        (
            json!({ "kind": "pagerduty", "config": { "routing_key": "" } }),
            "config.routing_key must be 1 to 64 printable characters.",
        ),
        (
            json!({ "kind": "pagerduty", "config": { "routing_key": "k".repeat(65) } }),
            "config.routing_key must be 1 to 64 printable characters.",
        ),
        (
            json!({ "kind": "sms", "config": {} }),
            "kind must be one of slack, pagerduty, webhook.",
        ),
        (
            json!({ "kind": "slack", "config": { "channel": "#a" }, "period": "weekends" }),
            "period must be one of always, during_hours, after_hours.",
        ),
        (
            json!({ "kind": "slack", "config": { "channel": "#a", "url": "x" } }),
            "config.url is not a setting of a slack target.",
        ),
    ] {
        let r = app.admin().post_json(&team_path, &body).await;
        assert_error(&r, 400, message);
    }
    assert_eq!(len(&assert_ok(&app.admin().get(&team_path).await, 200)), 2);

    // Unknown owners are 404s.
    let r = app
        .admin()
        .post_json(
            "/v2/teams/9999/targets",
            &json!({ "kind": "slack", "config": { "channel": "#a" } }),
        )
        .await;
    assert_error(&r, 404, "Team 9999 was not found.");
    let r = app.admin().get("/v2/services/9999/targets").await;
    assert_eq!(r.status.as_u16(), 404);

    // Patch keeps kind and owner; a new config is validated for that kind.
    let pd_path = format!("/v2/targets/{}", pd["target_id"]);
    let r = app
        .admin()
        .patch_json(
            &pd_path,
            &json!({ "enabled": false, "priority": 7, "period": "during_hours",
                     "config": { "routing_key": "fedcba9876543210fedcba9876543210" } }),
        )
        .await;
    let patched = assert_ok(&r, 200);
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["priority"], 7);
    assert_eq!(patched["period"], "during_hours");
    assert_eq!(patched["config"]["routing_key"], "****3210");
    let r = app
        .admin()
        .patch_json(&pd_path, &json!({ "config": { "channel": "#a" } }))
        .await;
    assert_error(
        &r,
        400,
        "config.channel is not a setting of a pagerduty target.",
    );
    let r = app
        .admin()
        .patch_json(&pd_path, &json!({ "kind": "slack" }))
        .await;
    assert_error_contains(&r, 400, "unknown field");

    assert_ok(&app.admin().delete(&pd_path).await, 200);
    assert_eq!(app.admin().delete(&pd_path).await.status.as_u16(), 404);

    // Changes are audited, never with a secret in the details.
    let r = app
        .admin()
        .get("/v2/audit-logs?action_type=target_created")
        .await;
    assert!(
        !r.body.contains(ROUTING_KEY) && !r.body.contains(WEBHOOK_SECRET),
        "{}",
        r.body
    );
    let audit = assert_ok(&r, 200);
    assert_eq!(audit["total_count"], 3, "{audit}");
    let r = app
        .admin()
        .get(&format!(
            "/v2/audit-logs?action_type=target_updated&service_id={svc}"
        ))
        .await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 0);

    // Deleting the team takes its targets with it.
    assert_ok(&app.admin().delete(&format!("/v2/teams/{tm}")).await, 200);
    let r = app
        .admin()
        .patch_json(
            &format!("/v2/targets/{}", slack["target_id"]),
            &json!({ "enabled": false }),
        )
        .await;
    assert_eq!(r.status.as_u16(), 404);
}

#[tokio::test]
async fn webhook_allowlist_restricts_hosts() {
    let app = TestApp::builder()
        .configure(|c| c.allowed_webhook_hosts = vec!["*.partner.example".into()])
        .spawn()
        .await;
    let svc = service(&app, "billing-job").await;
    let path = format!("/v2/services/{svc}/targets");
    let body = |url: &str| json!({ "kind": "webhook", "config": { "url": url, "secret": WEBHOOK_SECRET } });
    let r = app
        .admin()
        .post_json(&path, &body("https://hooks.partner.example/x"))
        .await;
    assert_ok(&r, 201);
    let r = app
        .admin()
        .post_json(&path, &body("https://hooks.example.com/x"))
        .await;
    assert_error(&r, 400, "config.url: Invalid webhook URL.");
}

#[tokio::test]
async fn maintenance_windows_validate_scope_and_filter() {
    let app = TestApp::spawn().await;
    let svc = service(&app, "billing-job").await;
    let tm = team(&app, json!({ "name": "payments" })).await;
    let now = Timestamp::now();
    let one_time = json!({ "kind": "one_time",
        "starts_at": iso(now.plus_millis(-60_000)), "ends_at": iso(now.plus_millis(3_600_000)) });
    let later = json!({ "kind": "one_time",
        "starts_at": iso(now.plus_millis(7_200_000)), "ends_at": iso(now.plus_millis(9_000_000)) });
    let nightly = json!({ "kind": "recurring", "cron": "0 3 * * *",
        "timezone": "Europe/Berlin", "duration_minutes": 60 });

    let r = app
        .admin()
        .post_json(
            "/v2/maintenance-windows",
            &json!({ "scope": "service", "service_id": svc, "window": one_time, "reason": "db upgrade" }),
        )
        .await;
    let w_svc = assert_ok(&r, 201);
    assert_eq!(w_svc["scope"], "service");
    assert_eq!(w_svc["service_id"], svc);
    assert_eq!(w_svc["team_id"], Value::Null);
    assert_eq!(w_svc["active"], true);
    assert_eq!(w_svc["reason"], "db upgrade");
    assert_eq!(w_svc["window"]["kind"], "one_time");
    let w_team = assert_ok(
        &app.admin()
            .post_json(
                "/v2/maintenance-windows",
                &json!({ "scope": "team", "team_id": tm, "window": nightly }),
            )
            .await,
        201,
    );
    assert_eq!(w_team["window"], nightly);
    let w_global = assert_ok(
        &app.admin()
            .post_json(
                "/v2/maintenance-windows",
                &json!({ "scope": "global", "window": later }),
            )
            .await,
        201,
    );
    assert_eq!(w_global["active"], false);

    // Bad input: a 400 naming the field (or 404 for unknown ids), nothing saved.
    let past = json!({ "kind": "one_time",
        "starts_at": iso(now.plus_millis(-7_200_000)), "ends_at": iso(now.plus_millis(-3_600_000)) });
    let inverted = json!({ "kind": "one_time",
        "starts_at": iso(now.plus_millis(3_600_000)), "ends_at": iso(now.plus_millis(60_000)) });
    for (body, status, fragment) in [
        (
            json!({ "scope": "global", "window": { "kind": "recurring", "cron": "61 * * * *", "timezone": "UTC", "duration_minutes": 5 } }),
            400,
            "window: invalid cron expression",
        ),
        (
            json!({ "scope": "global", "window": { "kind": "recurring", "cron": "0 3 * * *", "timezone": "Mars/Base", "duration_minutes": 5 } }),
            400,
            "window: unknown time zone",
        ),
        (
            json!({ "scope": "global", "window": { "kind": "recurring", "cron": "0 3 * * *", "timezone": "UTC", "duration_minutes": 0 } }),
            400,
            "window: a maintenance window must last between 1 and",
        ),
        (
            json!({ "scope": "global", "window": inverted }),
            400,
            "window: a maintenance window must end after it starts",
        ),
        (
            json!({ "scope": "global", "window": past }),
            400,
            "window: ends_at must be in the future.",
        ),
        (
            json!({ "scope": "global", "window": { "kind": "weekly" } }),
            400,
            "window:",
        ),
        (
            json!({ "scope": "service", "window": one_time }),
            400,
            "service_id is required",
        ),
        (
            json!({ "scope": "global", "team_id": tm, "window": one_time }),
            400,
            "not allowed for scope global",
        ),
        (
            json!({ "scope": "planet", "window": one_time }),
            400,
            "scope must be one of service, team, global.",
        ),
        (
            json!({ "scope": "service", "service_id": 9999, "window": one_time }),
            404,
            "Service 9999 was not found.",
        ),
        (
            json!({ "scope": "team", "team_id": 9999, "window": one_time }),
            404,
            "Team 9999 was not found.",
        ),
    ] {
        let r = app
            .admin()
            .post_json("/v2/maintenance-windows", &body)
            .await;
        assert_error_contains(&r, status, fragment);
    }

    let ids = |v: Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|w| w["window_id"].clone())
            .collect()
    };
    let get = |q: &'static str| {
        let app = &app;
        async move {
            ids(assert_ok(
                &app.admin()
                    .get(&format!("/v2/maintenance-windows{q}"))
                    .await,
                200,
            ))
        }
    };
    assert_eq!(
        get("").await,
        vec![
            w_svc["window_id"].clone(),
            w_team["window_id"].clone(),
            w_global["window_id"].clone()
        ]
    );
    assert_eq!(get("?scope=team").await, vec![w_team["window_id"].clone()]);
    assert_eq!(
        app.admin()
            .get(&format!("/v2/maintenance-windows?service_id={svc}"))
            .await
            .json()["results"][0]["window_id"],
        w_svc["window_id"]
    );
    let active_later = format!(
        "/v2/maintenance-windows?active_at={}",
        iso(now.plus_millis(7_300_000)).replace('+', "%2B")
    );
    let r = app.admin().get(&active_later).await;
    let active_ids = ids(assert_ok(&r, 200));
    assert!(
        active_ids.contains(&w_global["window_id"]),
        "{active_ids:?}"
    );
    assert!(!active_ids.contains(&w_svc["window_id"]), "{active_ids:?}");
    let r = app.admin().get("/v2/maintenance-windows?scope=moon").await;
    assert_error(&r, 400, "scope must be one of service, team, global.");

    let path = format!("/v2/maintenance-windows/{}", w_svc["window_id"]);
    assert_eq!(assert_ok(&app.admin().get(&path).await, 200), w_svc);
    assert_ok(&app.admin().delete(&path).await, 200);
    assert_eq!(app.admin().get(&path).await.status.as_u16(), 404);
    assert_eq!(get("").await.len(), 2);
}

#[tokio::test]
async fn snooze_creates_a_service_window_from_now() {
    let app = TestApp::spawn().await;
    let svc = service(&app, "nightly-backup").await;
    let write = app.create_key(&["write"]).await;
    let path = format!("/v2/services/{svc}/snooze");
    let before = Timestamp::now();
    let r = app
        .with_key(&write)
        .post_json(&path, &json!({ "minutes": 30, "reason": "reboot" }))
        .await;
    let w = assert_ok(&r, 201);
    assert_eq!(w["scope"], "service");
    assert_eq!(w["service_id"], svc);
    assert_eq!(w["active"], true);
    assert_eq!(w["reason"], "reboot");
    let starts = Timestamp::parse(w["window"]["starts_at"].as_str().unwrap()).unwrap();
    let ends = Timestamp::parse(w["window"]["ends_at"].as_str().unwrap()).unwrap();
    assert!(starts >= before, "{w}");
    assert_eq!(ends.millis() - starts.millis(), 30 * 60_000);
    let listed = assert_ok(
        &app.admin()
            .get(&format!(
                "/v2/maintenance-windows?service_id={svc}&active=1"
            ))
            .await,
        200,
    );
    assert_eq!(len(&listed), 1);

    for body in [json!({ "minutes": 0 }), json!({ "minutes": 10_081 })] {
        let r = app.with_key(&write).post_json(&path, &body).await;
        assert_error(&r, 400, "minutes must be between 1 and 10080.");
    }
    let r = app.with_key(&write).post(&path).await;
    assert_error(&r, 400, "minutes must be between 1 and 10080.");
    let read = app.create_key(&["read"]).await;
    let r = app
        .with_key(&read)
        .post_json(&path, &json!({ "minutes": 5 }))
        .await;
    assert_eq!(r.status.as_u16(), 403);
    let r = app
        .with_key(&write)
        .post_json("/v2/services/9999/snooze", &json!({ "minutes": 5 }))
        .await;
    assert_error(&r, 404, "Service 9999 was not found.");
    let all = assert_ok(&app.admin().get("/v2/maintenance-windows").await, 200);
    assert_eq!(len(&all), 1, "{all}");
    let audit = assert_ok(
        &app.admin()
            .get(&format!(
                "/v2/audit-logs?action_type=service_snoozed&service_id={svc}"
            ))
            .await,
        200,
    );
    assert_eq!(audit["total_count"], 1, "{audit}");
    assert_eq!(audit["entries"][0]["details"]["reason"], "reboot");
}

#[tokio::test]
async fn webhook_urls_are_stored_normalised_and_ambiguous_ones_refused() {
    let app = TestApp::spawn().await;
    let svc = service(&app, "billing-job").await;
    let path = format!("/v2/services/{svc}/targets");
    let body = |url: &str| json!({ "kind": "webhook", "config": { "url": url, "secret": WEBHOOK_SECRET } });
    // A backslash reads as a path separator to Medic but as the end of a user name to curl
    // and Python, which would connect to 127.0.0.1.
    for url in [
        "http://example.com\\@127.0.0.1:18099/",
        "https://hooks.example.com\\x/medic",
        "https://hooks.example.com/a\\b",
    ] {
        let r = app.admin().post_json(&path, &body(url)).await;
        assert_error(&r, 400, "config.url: Invalid webhook URL.");
    }
    // What is stored and shown is the URL as it will be requested.
    let r = app
        .admin()
        .post_json(
            &path,
            &body(" HTTPS://Hooks.Example.COM.:443/a/../medic?x=1 "),
        )
        .await;
    let wh = assert_ok(&r, 201);
    assert_eq!(wh["config"]["url"], "https://hooks.example.com/medic?x=1");
    let r = app.admin().get(&path).await;
    assert_eq!(
        assert_ok(&r, 200)[0]["config"]["url"],
        "https://hooks.example.com/medic?x=1"
    );
}

#[tokio::test]
async fn the_allowlist_judges_the_host_every_client_would_connect_to() {
    let app = TestApp::builder()
        .configure(|c| c.allowed_webhook_hosts = vec!["*.example.com".into()])
        .spawn()
        .await;
    let svc = service(&app, "billing-job").await;
    let path = format!("/v2/services/{svc}/targets");
    let body = |url: &str| json!({ "kind": "webhook", "config": { "url": url, "secret": WEBHOOK_SECRET } });
    for url in [
        "http://a.example.com\\@evil.test/",
        "http://a.example.com@evil.test/",
        "http://evil.test#@a.example.com/",
    ] {
        let r = app.admin().post_json(&path, &body(url)).await;
        assert_error(&r, 400, "config.url: Invalid webhook URL.");
    }
    let r = app.admin().get(&path).await;
    assert_eq!(assert_ok(&r, 200).as_array().map(Vec::len), Some(0));
}
