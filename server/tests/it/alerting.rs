//! Alerting end to end: a real server (in process, or the binary for crash and replica tests)
//! detects silence, opens alerts, routes them, and delivers to local recording servers standing
//! in for PagerDuty, Slack and webhook receivers.
//!
//! The in-process servers run on a manual clock: a test lets a service's interval pass with
//! [`TestApp::advance`] instead of waiting for it. The binaries run on the wall clock, so those
//! tests wait for the events they expect (an alert listed, the outbox empty), never a fixed time.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use medic_server::config::Secret;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error_contains, assert_ok, metric};
use crate::support_recorder::{Answer, Recorder};

const BIN: &str = env!("CARGO_BIN_EXE_medic-server");
const ADMIN: &str = "test-admin-key-0123456789abcdef0123456789";

fn pd_ok() -> Answer {
    Answer::json(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": "from-pd"}),
    )
}

async fn app_with(pd: &Recorder, database: Option<String>) -> TestApp {
    let pd_url = pd.url("/v2/enqueue");
    TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            c.notify.pagerduty_events_url = pd_url;
            c.notify.allow_private_webhook_targets = true;
            c.pagerduty_routing_key = Some("legacy-routing-key".parse::<Secret>().expect("key"));
            if let Some(url) = database {
                c.database_url = url.parse::<Secret>().expect("url");
            }
        })
        .spawn()
        .await
}

/// Lets services with a one-second interval go down: more than their interval passes.
fn silence(app: &TestApp) {
    app.advance(Duration::from_millis(1_500));
}

/// Polls `GET /v2/alerts?<query>` until `n` alerts are listed.
async fn wait_alerts(app: &TestApp, query: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let r = app.admin().get(&format!("/v2/alerts?{query}")).await;
        let page = assert_ok(&r, 200);
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        if entries.len() >= n || Instant::now() > deadline {
            assert_eq!(entries.len(), n, "alerts for {query}: {entries:?}");
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the one pending delivery's failed attempt is recorded; returns in how many
/// milliseconds (of the server's clock) its retry is due. While an attempt is in flight the row
/// is leased for the dispatch lease (30 s), longer than any first retry delay.
async fn retry_due_in(app: &TestApp) -> i64 {
    let store = app.store().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let next = store.next_delivery_at().await.expect("read the outbox");
        if let Some(due) = next {
            let due_in = due.millis() - app.now().millis();
            if due_in <= 5_000 {
                return due_in;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the failed attempt was never recorded: {next:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events<'a>(
    requests: &'a [crate::support_recorder::Recorded],
    action: &str,
) -> Vec<&'a crate::support_recorder::Recorded> {
    requests
        .iter()
        .filter(|r| r.json()["event_action"] == action)
        .collect()
}

async fn full_cycle(database: Option<String>) {
    let pd = Recorder::start().await;
    pd.answer(pd_ok());
    let hook = Recorder::start().await;
    let app = app_with(&pd, database).await;

    // A team with a webhook target, and a service of that team; another service whose team has
    // nothing configured goes to the legacy PagerDuty routing key.
    let team = assert_ok(
        &app.admin()
            .post_json("/v2/teams", &json!({"name": "payments"}))
            .await,
        201,
    );
    let team_id = team["team_id"].as_i64().expect("team id");
    let target = assert_ok(
        &app.admin()
            .post_json(
                &format!("/v2/teams/{team_id}/targets"),
                &json!({"kind": "webhook", "config": {"url": hook.url("/hook"), "secret": "0123456789abcdef"}}),
            )
            .await,
        201,
    );
    let target_id = target["target_id"].as_i64().expect("target id");
    let a = app
        .create_service(&json!({"heartbeat_name": "ledger", "interval_seconds": 1, "team": "Payments", "priority": "p2"}))
        .await;
    let b = app
        .create_service(&json!({"heartbeat_name": "nightly-export", "interval_seconds": 1, "team": "data", "priority": "p1", "runbook": "https://runbooks.example/export"}))
        .await;
    silence(&app);

    let alerts = wait_alerts(&app, "state=open", 2, Duration::from_secs(10)).await;
    let by_service: HashMap<i64, &Value> = alerts
        .iter()
        .map(|x| (x["service_id"].as_i64().expect("sid"), x))
        .collect();
    let alert_a = by_service[&a["service_id"].as_i64().expect("a")];
    let alert_b = by_service[&b["service_id"].as_i64().expect("b")];
    assert_eq!(alert_a["kind"], "heartbeat_missing");

    // PagerDuty got exactly one trigger, for b, with COMPAT's fields.
    let seen = pd.wait_for(1, Duration::from_secs(10)).await;
    let triggers = events(&seen, "trigger");
    assert_eq!(triggers.len(), 1, "{seen:?}");
    let t = triggers[0].json();
    assert_eq!(t["routing_key"], "legacy-routing-key");
    assert_eq!(t["dedup_key"], alert_b["dedup_key"]);
    assert_eq!(t["payload"]["source"], "medic");
    assert_eq!(t["payload"]["severity"], "critical");
    assert_eq!(t["links"][0]["href"], "https://runbooks.example/export");

    // The webhook got a signed `triggered` event for a.
    let got = hook.wait_for(1, Duration::from_secs(10)).await;
    let h = &got[0];
    assert_eq!(h.header("x-medic-event"), Some("triggered"));
    let body = h.body_text();
    let stamp = h.header("x-medic-timestamp").expect("timestamp");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef").expect("key");
    mac.update(format!("{stamp}.{body}").as_bytes());
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(h.header("x-medic-signature"), Some(want.as_str()));
    let event: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(event["alert"]["id"], alert_a["alert_id"]);
    assert_eq!(event["service"]["name"], "ledger");

    // Acknowledge b: PagerDuty hears it. Resolve a by hand: the webhook hears it.
    let id_b = alert_b["alert_id"].as_i64().expect("id");
    let r = app.admin().post(&format!("/v2/alerts/{id_b}/ack")).await;
    assert_eq!(assert_ok(&r, 200)["state"], "acknowledged");
    let r = app.admin().post(&format!("/v2/alerts/{id_b}/ack")).await;
    assert_error_contains(&r, 409, "acknowledged");
    let id_a = alert_a["alert_id"].as_i64().expect("id");
    let r = app
        .admin()
        .post(&format!("/v2/alerts/{id_a}/resolve"))
        .await;
    assert_eq!(assert_ok(&r, 200)["state"], "resolved");
    // Each change that applied is audited once (the refused second ack is not).
    for (action, alert_id) in [("alert_acknowledged", id_b), ("alert_resolved", id_a)] {
        let r = app
            .admin()
            .get(&format!("/v2/audit-logs?action_type={action}"))
            .await;
        let entries = assert_ok(&r, 200)["entries"].as_array().unwrap().clone();
        assert_eq!(entries.len(), 1, "{action}: {entries:#?}");
        assert_eq!(entries[0]["details"]["alert_id"], alert_id, "{action}");
    }
    let seen = pd.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(events(&seen, "acknowledge").len(), 1);
    let got = hook.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].header("x-medic-event"), Some("resolved"));

    // b recovers: the pass resolves it and PagerDuty gets the resolve.
    app.admin()
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "nightly-export", "status": "up"}),
        )
        .await;
    let seen = pd.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(events(&seen, "resolve").len(), 1);
    let r = app.admin().get(&format!("/v2/alerts/{id_b}")).await;
    let b_now = assert_ok(&r, 200);
    assert_eq!(b_now["state"], "resolved");
    assert_eq!(b_now["resolve_reason"], "recovered");

    // The delivery log of the webhook target, and the history of a.
    let r = app
        .admin()
        .get(&format!("/v2/webhooks/{target_id}/deliveries"))
        .await;
    let log = assert_ok(&r, 200);
    assert_eq!(log["total_count"], 2);
    assert!(
        log["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .all(|d| d["state"] == "delivered")
    );
    let r = app
        .admin()
        .get(&format!("/v2/services/{}/alerts", a["service_id"]))
        .await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 1);

    // The open-alert gauge comes from the database, and the counters moved.
    let text = app.metrics().await;
    assert!(metric(&text, "medic_alerts_open", &[("priority", "p1")]).is_some());
    assert!(
        metric(
            &text,
            "medic_notifications_total",
            &[("channel", "pagerduty"), ("outcome", "delivered")]
        )
        .is_some_and(|v| v >= 3.0),
        "{text}"
    );
    assert!(
        metric(&text, "medic_monitor_detection_lag_seconds_count", &[]).is_some_and(|v| v >= 2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_alerts_routes_acks_and_resolves_on_sqlite() {
    full_cycle(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_alerts_routes_acks_and_resolves_on_postgres() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    full_cycle(Some(db.url.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_with_backoff_and_the_monitor_keeps_going() {
    let pd = Recorder::start().await;
    pd.push(Answer::status(500));
    pd.answer(pd_ok());
    let app = app_with(&pd, None).await;
    app.create_service(&json!({"heartbeat_name": "flaky", "interval_seconds": 1}))
        .await;
    silence(&app);
    let first = wait_alerts(&app, "state=open", 1, Duration::from_secs(10)).await;
    // The first attempt fails (500) and is put off by 1–5 s; once that has passed, the retry
    // succeeds.
    pd.wait_for(1, Duration::from_secs(10)).await;
    let retry_in = retry_due_in(&app).await;
    assert!(
        (1_000..=5_000).contains(&retry_in),
        "retry due in {retry_in} ms"
    );
    assert_eq!(pd.requests().len(), 1, "retried before it was due");
    app.advance(Duration::from_millis(retry_in.unsigned_abs()));
    let seen = pd.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(events(&seen, "trigger").len(), 2);
    assert_eq!(seen[0].json()["dedup_key"], seen[1].json()["dedup_key"]);
    // Meanwhile another service going silent is still detected.
    app.create_service(&json!({"heartbeat_name": "other", "interval_seconds": 1}))
        .await;
    silence(&app);
    wait_alerts(&app, "state=open", 2, Duration::from_secs(10)).await;
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "medic_notification_attempts_total",
            &[("channel", "pagerduty"), ("outcome", "retry")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(first.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_times_out_shows_in_the_delivery_log_and_is_retried() {
    let pd = Recorder::start().await;
    let hook = Recorder::start().await;
    // Slower than the notification timeout, every time.
    hook.answer(Answer::status(200).after(Duration::from_secs(5)));
    let pd_url = pd.url("/v2/enqueue");
    let app = TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            c.notify.pagerduty_events_url = pd_url;
            c.notify.allow_private_webhook_targets = true;
            c.notify.timeout = Duration::from_secs(1);
        })
        .spawn()
        .await;
    let svc = app
        .create_service(&json!({"heartbeat_name": "slowhook", "interval_seconds": 1}))
        .await;
    let target = assert_ok(
        &app.admin()
            .post_json(
                &format!("/v2/services/{}/targets", svc["service_id"]),
                &json!({"kind": "webhook", "config": {"url": hook.url("/slow"), "secret": "0123456789abcdef"}}),
            )
            .await,
        201,
    );
    let target_id = target["target_id"].as_i64().expect("target id");
    silence(&app);
    wait_alerts(&app, "state=open", 1, Duration::from_secs(10)).await;
    // The notification timeout is real time (the receiver really is slow): poll for its end.
    let deadline = Instant::now() + Duration::from_secs(20);
    let entry = loop {
        let r = app
            .admin()
            .get(&format!("/v2/webhooks/{target_id}/deliveries"))
            .await;
        let log = assert_ok(&r, 200);
        let entries = log["entries"].as_array().cloned().unwrap_or_default();
        // The trigger, and at most one re-notification waiting behind it.
        assert!(entries.len() <= 2, "{entries:?}");
        let first = entries
            .iter()
            .find(|d| d["event"] == "triggered")
            .cloned()
            .unwrap_or_default();
        if first["attempts"].as_i64().unwrap_or(0) >= 1 || Instant::now() > deadline {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(entry["state"], "pending", "{entry}");
    assert!(entry["attempts"].as_i64().unwrap_or(0) >= 1, "{entry}");
    assert!(entry["next_attempt_at"].is_string());
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("time")),
        "{entry}"
    );
    assert_eq!(entry["destination"]["url"], hook.url("/slow"));
    assert!(entry["destination"].get("secret").is_none(), "never shown");
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "medic_notification_attempts_total",
            &[("channel", "webhook"), ("outcome", "retry")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // The monitor is not held up by the slow receiver.
    app.create_service(&json!({"heartbeat_name": "another", "interval_seconds": 1}))
        .await;
    silence(&app);
    wait_alerts(&app, "state=open", 2, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_settings_are_validated_and_kept() {
    let pd = Recorder::start().await;
    let app = app_with(&pd, None).await;
    for (body, field) in [
        (
            json!({"heartbeat_name": "c1", "interval_seconds": 60, "schedule": {"cron": "not cron", "timezone": "UTC"}}),
            "schedule.cron",
        ),
        (
            json!({"heartbeat_name": "c2", "interval_seconds": 60, "schedule": {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}}),
            "schedule.timezone",
        ),
        (
            json!({"heartbeat_name": "c3", "interval_seconds": 60, "parent_id": 9999}),
            "parent_id",
        ),
        (
            json!({"heartbeat_name": "c4", "interval_seconds": 60, "renotify_seconds": -1}),
            "renotify_seconds",
        ),
    ] {
        let r = app.admin().post_json("/v2/services", &body).await;
        assert_error_contains(&r, 400, field);
    }
    let r = app.admin().get("/v2/services").await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 0, "nothing saved");
    let parent = app
        .create_service(&json!({"heartbeat_name": "db", "interval_seconds": 60}))
        .await;
    let child = app
        .create_service(&json!({"heartbeat_name": "api", "interval_seconds": 60,
            "parent_id": parent["service_id"], "renotify_seconds": 0, "alert_on_failure": false,
            "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Berlin"}}))
        .await;
    assert_eq!(child["parent_id"], parent["service_id"]);
    assert_eq!(child["schedule"]["timezone"], "Europe/Berlin");
    assert_eq!(child["alert_on_failure"], false);
    // A cycle is refused.
    let r = app
        .admin()
        .patch_json(
            &format!("/v2/services/{}", parent["service_id"]),
            &json!({"parent_id": child["service_id"]}),
        )
        .await;
    assert_error_contains(&r, 400, "ancestor");
    let r = app.admin().get("/v2/alerts?state=bogus").await;
    assert_error_contains(&r, 400, "state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_of_a_down_parent_does_not_page_separately() {
    let pd = Recorder::start().await;
    pd.answer(pd_ok());
    let app = app_with(&pd, None).await;
    let parent = app
        .create_service(&json!({"heartbeat_name": "rack-7", "interval_seconds": 1}))
        .await;
    silence(&app);
    wait_alerts(&app, "state=open", 1, Duration::from_secs(10)).await;
    pd.wait_for(1, Duration::from_secs(10)).await;
    // The child goes silent while the parent is down.
    let child = app
        .create_service(&json!({"heartbeat_name": "host-7a", "interval_seconds": 1,
            "parent_id": parent["service_id"]}))
        .await;
    silence(&app);
    // Judged down (its state and any alert commit in the same pass)...
    let path = format!("/v2/services/{}", child["service_id"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = assert_ok(&app.admin().get(&path).await, 200)["state"].clone();
        if state == "down" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child was never judged: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... and folded into the parent's alert: no alert, so no outbox row and no page.
    wait_alerts(&app, "state=open", 1, Duration::ZERO).await;
    let seen = pd.requests();
    assert_eq!(events(&seen, "trigger").len(), 1, "only the parent pages");
    let text = app.metrics().await;
    assert!(
        metric(
            &text,
            "medic_alerts_suppressed_total",
            &[("reason", "parent")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_acknowledge_button_acknowledges_with_a_valid_signature_only() {
    let pd = Recorder::start().await;
    pd.answer(pd_ok());
    let pd_url = pd.url("/v2/enqueue");
    let app = TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            c.notify.pagerduty_events_url = pd_url;
            c.pagerduty_routing_key = Some("legacy-routing-key".parse::<Secret>().expect("key"));
            c.slack_signing_secret = Some("slack-signing-secret".parse::<Secret>().expect("s"));
        })
        .spawn()
        .await;
    app.create_service(&json!({"heartbeat_name": "slacky", "interval_seconds": 1}))
        .await;
    silence(&app);
    let alert = wait_alerts(&app, "state=open", 1, Duration::from_secs(10)).await;
    let id = alert[0]["alert_id"].as_i64().expect("id");
    let payload = json!({"type": "block_actions", "user": {"id": "U1", "username": "dana"},
        "actions": [{"action_id": "ack_alert", "value": id.to_string()}]});
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let post = |secret: &'static str, body: String| {
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
    let r = crate::support::send(post("wrong-secret", body.clone())).await;
    assert_eq!(r.status.as_u16(), 401);
    let r = app.admin().get(&format!("/v2/alerts/{id}")).await;
    assert_eq!(assert_ok(&r, 200)["state"], "open", "nothing changed");
    let r = crate::support::send(post("slack-signing-secret", body)).await;
    let acked = assert_ok(&r, 200);
    assert_eq!(acked["state"], "acknowledged");
    // The Slack user id, which the user cannot change, not the display name.
    assert_eq!(acked["acknowledged_by"], "slack:U1");
    let r = app
        .admin()
        .get("/v2/audit-logs?action_type=alert_acknowledged")
        .await;
    let entries = assert_ok(&r, 200)["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:#?}");
    assert_eq!(entries[0]["actor"], "slack:U1");
    assert_eq!(entries[0]["details"]["via"], "slack");
    assert_eq!(entries[0]["details"]["slack_user_name"], "dana");
    let seen = pd.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(events(&seen, "acknowledge").len(), 1);
}

// ---- the binary: crashes and replicas ---------------------------------------------------------

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn server(database_url: &str, pd_url: &str, port: u16, dir: &std::path::Path) -> Child {
    Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("PORT", port.to_string())
        .env("MEDIC_ADMIN_API_KEY", ADMIN)
        .env("MEDIC_LOG_FORMAT", "text")
        .env("MEDIC_LOG_LEVEL", "warn")
        .env("PAGERDUTY_EVENTS_URL", pd_url)
        .env("PAGERDUTY_ROUTING_KEY", "replica-test-key")
        .env("MEDIC_DISPATCH_LEASE_SECONDS", "2")
        .env("MEDIC_NOTIFY_TIMEOUT_SECONDS", "30")
        .env("RATE_LIMIT_MANAGEMENT_REQUESTS", "1000000")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("medic-server starts")
}

async fn wait_up(client: &reqwest::Client, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client
            .get(format!("http://127.0.0.1:{port}/health/live"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server on {port} did not come up");
}

async fn api(
    client: &reqwest::Client,
    port: u16,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut rb = client
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("request");
    r.json().await.expect("json")
}

/// Waits until no delivery is pending in the database at `url`: nothing is left to send.
async fn wait_outbox_empty(url: &str, within: Duration) {
    let config = medic_server::config::Config::for_database(url);
    let store = medic_server::server::open_store(&config)
        .await
        .expect("open the store");
    let deadline = Instant::now() + within;
    while let Some(due) = store.next_delivery_at().await.expect("read the outbox") {
        assert!(
            Instant::now() < deadline,
            "a delivery is still pending (due {due})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await;
}

fn kill9(child: &mut Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_before_its_page_is_confirmed_pages_once_after_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let db = format!("sqlite://{}/medic.db", dir.path().display());
    let pd = Recorder::start().await;
    // The first trigger is received but never answered before the server dies.
    pd.push(pd_ok().after(Duration::from_secs(60)));
    pd.answer(pd_ok());
    let client = reqwest::Client::new();
    let port = free_port();
    let mut first = server(&db, &pd.url("/v2/enqueue"), port, dir.path());
    wait_up(&client, port).await;
    api(
        &client,
        port,
        reqwest::Method::POST,
        "/v2/services",
        Some(json!({"heartbeat_name": "crashy", "interval_seconds": 1})),
    )
    .await;
    let seen = pd.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(seen.len(), 1);
    kill9(&mut first);

    let port = free_port();
    let mut second = server(&db, &pd.url("/v2/enqueue"), port, dir.path());
    wait_up(&client, port).await;
    // The outbox row survived; after the dead process's lease it is delivered again, and once
    // that is recorded nothing is left to send.
    let seen = pd.wait_for(2, Duration::from_secs(20)).await;
    wait_outbox_empty(&db, Duration::from_secs(20)).await;
    let all = pd.requests();
    kill9(&mut second);
    assert_eq!(
        all.len(),
        2,
        "one cut short by the crash, one confirmed: {seen:?}"
    );
    assert_eq!(events(&all, "trigger").len(), 2);
    assert_eq!(
        all[0].json()["dedup_key"],
        all[1].json()["dedup_key"],
        "same incident"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_page_each_incident_once_even_when_one_dies() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let pd = Recorder::start().await;
    pd.answer(pd_ok());
    let client = reqwest::Client::new();
    let (pa, pb) = (free_port(), free_port());
    let mut a = server(&db.url, &pd.url("/v2/enqueue"), pa, dir.path());
    let mut b = server(&db.url, &pd.url("/v2/enqueue"), pb, dir.path());
    wait_up(&client, pa).await;
    wait_up(&client, pb).await;
    // 200 services whose deadlines spread over ~8 s.
    for i in 0..200 {
        let port = if i % 2 == 0 { pa } else { pb };
        api(
            &client,
            port,
            reqwest::Method::POST,
            "/v2/services",
            Some(json!({"heartbeat_name": format!("svc-{i}"), "interval_seconds": 2 + (i % 8)})),
        )
        .await;
    }
    // Kill one replica midway: once some incidents have been paged, while most are still to
    // come.
    let deadline = Instant::now() + Duration::from_secs(30);
    while events(&pd.requests(), "trigger").len() < 20 {
        assert!(Instant::now() < deadline, "no incident paged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kill9(&mut a);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut alerts = 0;
    while Instant::now() < deadline {
        let page = api(
            &client,
            pb,
            reqwest::Method::GET,
            "/v2/alerts?limit=1",
            None,
        )
        .await;
        alerts = page["results"]["total_count"].as_i64().unwrap_or(0);
        let triggers: HashSet<String> = events(&pd.requests(), "trigger")
            .iter()
            .map(|r| r.json()["dedup_key"].as_str().unwrap_or("").to_owned())
            .collect();
        if alerts >= 200 && triggers.len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Deliveries the dead replica held are resent once their lease runs out: wait until none
    // is left before counting.
    wait_outbox_empty(&db.url, Duration::from_secs(30)).await;
    let page = api(
        &client,
        pb,
        reqwest::Method::GET,
        "/v2/alerts?limit=1",
        None,
    )
    .await;
    let total = page["results"]["total_count"].as_i64().unwrap_or(0);
    let requests = pd.requests();
    let triggers = events(&requests, "trigger");
    let keys: HashSet<String> = triggers
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap_or("").to_owned())
        .collect();
    kill9(&mut b);
    assert!(alerts >= 200, "alerts seen while waiting: {alerts}");
    assert_eq!(total, 200, "exactly one alert per incident");
    assert_eq!(keys.len(), 200, "every incident paged");
    // A delivery in flight when a replica dies is resent after its lease: a duplicate trigger
    // with the same dedup key (harmless to PagerDuty), at most one per in-flight delivery.
    assert!(
        triggers.len() - keys.len() <= 8,
        "{} triggers for {} incidents",
        triggers.len(),
        keys.len()
    );
}

/// One service going silent on a fresh server with a webhook target; returns the first two
/// deliveries the receiver saw (the first answered 500, so the second is its retry).
async fn first_delivery_and_its_retry() -> Vec<Value> {
    let pd = Recorder::start().await;
    pd.answer(pd_ok());
    let hook = Recorder::start().await;
    hook.push(Answer::status(500));
    hook.answer(Answer::status(200));
    let app = app_with(&pd, None).await;
    let svc = app
        .create_service(&json!({"heartbeat_name": "ledger", "interval_seconds": 1}))
        .await;
    assert_ok(
        &app.admin()
            .post_json(
                &format!("/v2/services/{}/targets", svc["service_id"]),
                &json!({"kind": "webhook", "config": {"url": hook.url("/hook"), "secret": "0123456789abcdef"}}),
            )
            .await,
        201,
    );
    silence(&app);
    hook.wait_for(1, Duration::from_secs(10)).await;
    let retry_in = retry_due_in(&app).await;
    app.advance(Duration::from_millis(retry_in.unsigned_abs()));
    let seen = hook.wait_for(2, Duration::from_secs(10)).await;
    seen.iter().take(2).map(|r| r.json()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_event_ids_repeat_on_retry_and_never_across_databases() {
    let first = first_delivery_and_its_retry().await;
    let second = first_delivery_and_its_retry().await;
    // A retry carries the same id, so a receiver may drop it.
    assert_eq!(first[0]["event_id"], first[1]["event_id"]);
    assert_eq!(second[0]["event_id"], second[1]["event_id"]);
    // A fresh database (row ids start again at 1) never reuses an id a receiver has seen.
    assert_ne!(first[0]["event_id"], second[0]["event_id"]);
    // The documented example has the shape of a real delivery.
    let documented: Value =
        serde_json::from_str(include_str!("../fixtures/webhook/triggered.json")).expect("fixture");
    let shape = |v: &Value| {
        let key = v["alert"]["dedup_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let rest = key
            .strip_prefix(&format!("medic-{}-heartbeat_missing-", v["service"]["id"]))
            .unwrap_or_default()
            .to_owned();
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit())
    };
    assert!(shape(&first[0]), "{}", first[0]);
    assert!(shape(&documented), "{documented}");
    for body in [&first[0], &second[0], &documented] {
        let id = body["event_id"].as_str().expect("event_id");
        assert!(
            uuid::Uuid::parse_str(id).is_ok(),
            "event_id {id:?} is not a UUID"
        );
    }
}
