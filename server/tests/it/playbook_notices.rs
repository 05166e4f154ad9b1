//! Playbook notices, escalation, the circuit breaker's notice and reset, and the engine's
//! metrics, end to end: a real server (SQLite, and PostgreSQL when configured) whose Slack,
//! PagerDuty and webhook endpoints are local recorders; executions started through the engine,
//! decided through the HTTP API, and timers driven by the server's manual clock.

use std::time::Duration;

use medic_server::domain::ServiceId;
use medic_server::engine::StartRequest;
use medic_server::playbook::plan::content_sha256;
use medic_server::store::{AuditFilter, ExecutionTrigger, PageRequest, PinnedVersion};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::db::TestDb;
use crate::support::{TestApp, assert_error_contains, assert_ok};
use crate::support_recorder::{Answer, Recorded, Recorder};

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
    approval_notices_reach_the_team_and_a_decision_updates_the_slack_message,
    alert_triggered_starts_tell_the_team_like_manual_ones,
    an_escalating_condition_pages_through_the_service_routing,
    an_open_breaker_tells_the_team_once_per_opening_and_an_admin_reset_closes_it,
}

const WEBHOOK_SECRET: &str = "0123456789abcdef";

/// The receivers: Slack's Web API, PagerDuty's Events API and the team's webhook.
struct Receivers {
    slack: Recorder,
    pagerduty: Recorder,
    hook: Recorder,
}

impl Receivers {
    async fn start() -> Self {
        let slack = Recorder::start().await;
        slack.answer(Answer::json(
            200,
            json!({"ok": true, "channel": "C0OPSID", "ts": "1700000000.000100"}),
        ));
        let pagerduty = Recorder::start().await;
        pagerduty.answer(Answer::json(
            202,
            json!({"status": "success", "message": "Event processed", "dedup_key": "x"}),
        ));
        let hook = Recorder::start().await;
        Self {
            slack,
            pagerduty,
            hook,
        }
    }
}

struct Env {
    app: TestApp,
    service: i64,
    _db: Option<TestDb>,
}

/// `MEDIC_PUBLIC_URL` of these tests: notices link to the execution's page under it.
const PUBLIC_URL: &str = "https://medic.example.net";

/// A server whose notifications go to `rx`, with a team `ops` that has a Slack, a PagerDuty
/// and a webhook target, and a service of that team.
async fn env(db: Option<TestDb>, rx: &Receivers, per_service: u32) -> Env {
    let url = db.as_ref().map(|d| d.url.clone());
    let slack = rx.slack.url("/api");
    let pd = rx.pagerduty.url("/v2/enqueue");
    let app = TestApp::builder()
        .manual_clock()
        .configure(move |c| {
            if let Some(url) = url {
                c.database_url = url.parse().expect("database url");
            }
            c.notify.allow_private_webhook_targets = true;
            c.notify.slack_api_url = slack;
            c.notify.slack_token = Some("xoxb-test-token".into());
            c.notify.pagerduty_events_url = pd;
            c.notify.timeout = Duration::from_secs(5);
            c.notify.public_url = Some(PUBLIC_URL.into());
            c.playbook.allow_private_targets = true;
            c.playbook.limits.per_service = per_service;
        })
        .spawn()
        .await;
    let team = assert_ok(
        &app.admin()
            .post_json("/v2/teams", &json!({"name": "ops"}))
            .await,
        201,
    );
    let team_id = team["team_id"].as_i64().expect("team id");
    for target in [
        json!({"kind": "slack", "config": {"channel": "#ops"}}),
        json!({"kind": "pagerduty", "config": {"routing_key": "ops-routing-key"}}),
        json!({"kind": "webhook", "config": {"url": rx.hook.url("/hook"), "secret": WEBHOOK_SECRET}}),
    ] {
        assert_ok(
            &app.admin()
                .post_json(&format!("/v2/teams/{team_id}/targets"), &target)
                .await,
            201,
        );
    }
    let svc = app
        .create_service(&json!({"heartbeat_name": "api-hb", "service_name": "API",
                                 "interval_seconds": 3600, "team": "ops"}))
        .await;
    let service = svc["service_id"].as_i64().expect("service id");
    Env {
        app,
        service,
        _db: db,
    }
}

fn request(yaml: &str, service: i64, requested_by: Option<&str>) -> StartRequest {
    StartRequest {
        pinned: PinnedVersion {
            playbook_id: 1,
            name: "restart-api".into(),
            version: 1,
            sha256: content_sha256(yaml),
            source: yaml.to_owned(),
        },
        service_id: Some(ServiceId(service)),
        alert_id: None,
        trigger: ExecutionTrigger::Manual,
        requested_by: requested_by.map(str::to_owned),
        requester_key: None,
        actor: None,
        variables: serde_json::Map::new(),
    }
}

async fn get(app: &TestApp, id: i64) -> Value {
    assert_ok(&app.admin().get(&format!("/v2/executions/{id}")).await, 200)
}

/// Waits (10 s at most) until `rec` holds requests that satisfy `done`.
async fn wait_requests(
    rec: &Recorder,
    what: &str,
    done: impl Fn(&[Recorded]) -> bool,
) -> Vec<Recorded> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = rec.requests();
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {what}: {:#?}",
            seen.iter()
                .map(|r| (r.path.clone(), r.body_text()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn events_of(hook: &[Recorded]) -> Vec<String> {
    hook.iter()
        .map(|r| r.header("x-medic-event").unwrap_or("-").to_owned())
        .collect()
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

/// The Slack requests to `method` (`chat.postMessage`, `chat.update`).
fn slack_calls(slack: &[Recorded], method: &str) -> Vec<Value> {
    slack
        .iter()
        .filter(|r| r.path == format!("/api/{method}"))
        .map(Recorded::json)
        .collect()
}

fn action_ids(message: &Value) -> Vec<(String, String)> {
    message["blocks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["action_id"].as_str().unwrap_or("").to_owned(),
                e["value"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The value of a metric line (`name{labels} value`) whose name and labels contain `parts`.
fn metric(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
                && parts.iter().all(|p| l.contains(p))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Executions an alert starts announce themselves to the service's team as a manual start
/// does: the awaiting-approval message (Slack with its buttons, and the webhook event) for a
/// playbook that needs approval, `execution.started` for one that does not.
async fn alert_triggered_starts_tell_the_team_like_manual_ones(db: Option<TestDb>) {
    let rx = Receivers::start().await;
    let e = env(db, &rx, 50).await;
    let store = |yaml: String| {
        let app = &e.app;
        async move {
            let r = app
                .admin()
                .post_json("/v2/playbooks", &json!({ "document": yaml }))
                .await;
            assert_ok(&r, 201)["playbook_id"]
                .as_i64()
                .expect("playbook id")
        }
    };
    let trigger = "triggers:\n  - heartbeat: \"api-*\"\n    kinds: [heartbeat_missing]\n";
    let gated = store(format!(
        "name: gated-fix\napproval: required\n{trigger}steps:\n  - name: pause\n    \
         type: wait\n    duration: 1s\n"
    ))
    .await;
    let direct = store(format!(
        "name: direct-fix\n{trigger}steps:\n  - name: pause\n    type: wait\n    \
         duration: 1h\n"
    ))
    .await;
    // The service misses its heartbeat: the alert opens and both playbooks fire.
    e.app.advance(Duration::from_secs(3 * 3600));
    let hook = wait_requests(&rx.hook, "the execution notices", |h| {
        let events = events_of(h);
        events.contains(&"execution.awaiting_approval".to_owned())
            && events.contains(&"execution.started".to_owned())
    })
    .await;
    let executions: Vec<Value> = hook
        .iter()
        .filter(|r| {
            r.header("x-medic-event")
                .is_some_and(|e| e.starts_with("execution."))
        })
        .map(Recorded::json)
        .collect();
    assert_eq!(executions.len(), 2, "{executions:#?}");
    for body in &executions {
        assert_eq!(body["execution"]["trigger"], "alert");
        assert!(body["execution"]["alert_id"].is_i64(), "{body:#}");
        assert_eq!(body["service"]["id"], e.service);
        assert_eq!(body["service"]["team"], "ops");
    }
    let awaiting = executions
        .iter()
        .find(|b| b["event"] == "execution.awaiting_approval")
        .expect("awaiting approval");
    assert_eq!(awaiting["execution"]["playbook_id"], gated);
    let started = executions
        .iter()
        .find(|b| b["event"] == "execution.started")
        .expect("started");
    assert_eq!(started["execution"]["playbook_id"], direct);
    // Slack: the approval request with both buttons for the gated execution.
    let id = awaiting["execution"]["id"].as_i64().expect("id");
    // (The alert's own message, with its acknowledge button, goes there too.)
    let asks_approval = |m: &Value| action_ids(m).iter().any(|(a, _)| a == "approve_playbook");
    let slack = wait_requests(&rx.slack, "the approval request", |s| {
        slack_calls(s, "chat.postMessage").iter().any(asks_approval)
    })
    .await;
    let asks: Vec<Value> = slack_calls(&slack, "chat.postMessage")
        .into_iter()
        .filter(asks_approval)
        .collect();
    assert_eq!(asks.len(), 1, "{asks:#?}");
    assert_eq!(asks[0]["channel"], "#ops");
    assert_eq!(
        action_ids(&asks[0]),
        [
            ("approve_playbook".to_owned(), id.to_string()),
            ("reject_playbook".to_owned(), id.to_string())
        ]
    );
}

const APPROVAL: &str = "name: restart-api\napproval: required\nsteps:\n  - name: call\n    \
                        type: webhook\n    url: URL\n";

async fn approval_notices_reach_the_team_and_a_decision_updates_the_slack_message(
    db: Option<TestDb>,
) {
    let rx = Receivers::start().await;
    let e = env(db, &rx, 50).await;
    let step = Recorder::start().await;
    let yaml = APPROVAL.replace("URL", &step.url("/step"));
    let engine = e.app.engine();
    let id = engine
        .start(request(&yaml, e.service, Some("key:requester")))
        .await
        .expect("start")
        .id;

    // The approval request: Slack with both buttons carrying the execution id, and a signed
    // webhook event; PagerDuty does not page for it.
    let slack = wait_requests(&rx.slack, "the approval request", |s| !s.is_empty()).await;
    let posted = slack_calls(&slack, "chat.postMessage");
    assert_eq!(posted.len(), 1, "{posted:#?}");
    assert_eq!(posted[0]["channel"], "#ops");
    assert_eq!(
        action_ids(&posted[0]),
        [
            ("approve_playbook".to_owned(), id.to_string()),
            ("reject_playbook".to_owned(), id.to_string())
        ]
    );
    // A person deciding follows the message's link to the execution's page (the API's
    // address would answer them with a 401).
    let page = format!("{PUBLIC_URL}/ui/executions/{id}");
    assert!(
        slack[0]
            .body_text()
            .contains(&format!("<{page}|View in Medic>")),
        "{}",
        slack[0].body_text()
    );
    let hook = wait_requests(&rx.hook, "the approval webhook", |h| !h.is_empty()).await;
    assert_eq!(events_of(&hook), ["execution.awaiting_approval"]);
    let body = hook[0].json();
    assert_eq!(body["url"], page);
    assert_eq!(body["execution"]["id"], id);
    assert_eq!(body["execution"]["status"], "pending_approval");
    assert_eq!(body["service"]["team"], "ops");
    assert!(
        hook[0]
            .header("x-medic-signature")
            .is_some_and(|s| s.starts_with("sha256=")),
        "signed"
    );
    let metrics = e.app.metrics().await;
    assert!(
        metric(&metrics, "medic_playbook_executions_pending_approval", &[])
            .is_some_and(|v| v >= 1.0),
        "pending gauge counts the execution"
    );

    // Approved through the API: the Slack message is updated in place (no buttons any more),
    // then the execution runs and completes; webhooks hear each step of the way.
    let r = e
        .app
        .admin()
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_ok(&r, 200);
    let hook = wait_requests(&rx.hook, "the completion webhook", |h| {
        events_of(h).contains(&"execution.completed".to_owned())
    })
    .await;
    let events = events_of(&hook);
    for name in [
        "execution.awaiting_approval",
        "execution.approved",
        "execution.started",
        "execution.completed",
    ] {
        assert_eq!(count(&events, name), 1, "{name} once: {events:?}");
    }
    let approved = hook
        .iter()
        .find(|r| r.header("x-medic-event") == Some("execution.approved"))
        .map(Recorded::json)
        .expect("approved event");
    assert_eq!(approved["execution"]["decided_by"], "owner:bootstrap");
    let slack = wait_requests(&rx.slack, "the update and the completion", |s| {
        slack_calls(s, "chat.update").len() == 1 && slack_calls(s, "chat.postMessage").len() == 3
    })
    .await;
    let update = &slack_calls(&slack, "chat.update")[0];
    assert_eq!(update["channel"], "C0OPSID");
    assert_eq!(update["ts"], "1700000000.000100");
    assert!(action_ids(update).is_empty(), "{update:#}");
    assert!(
        update["text"]
            .as_str()
            .is_some_and(|t| t.contains("approved")),
        "{update:#}"
    );
    assert!(rx.pagerduty.requests().is_empty(), "nothing paged");
    assert_eq!(get(&e.app, id).await["status"], "completed");
    let store = e.app.store().await;
    let notices = store.list_notices(id).await.expect("notices");
    assert!(
        notices
            .iter()
            .all(|n| n.state == medic_server::store::DeliveryState::Delivered),
        "{notices:#?}"
    );

    // Rejected: the approval message says so; nothing runs.
    let rejected = engine
        .start(request(&yaml, e.service, Some("key:requester")))
        .await
        .expect("start")
        .id;
    wait_requests(&rx.slack, "the second approval request", |s| {
        slack_calls(s, "chat.postMessage").len() == 4
    })
    .await;
    let r = e
        .app
        .admin()
        .post_json(
            &format!("/v2/executions/{rejected}/reject"),
            &json!({"reason": "not during the sale"}),
        )
        .await;
    assert_ok(&r, 200);
    let slack = wait_requests(&rx.slack, "the rejection update", |s| {
        slack_calls(s, "chat.update").len() == 2
    })
    .await;
    let update = &slack_calls(&slack, "chat.update")[1];
    assert!(
        update["text"]
            .as_str()
            .is_some_and(|t| t.contains("rejected") && t.contains("not during the sale")),
        "{update:#}"
    );
    let hook = wait_requests(&rx.hook, "the rejection webhook", |h| {
        events_of(h).contains(&"execution.rejected".to_owned())
    })
    .await;
    assert_eq!(count(&events_of(&hook), "execution.cancelled"), 0);
    assert_eq!(step.requests().len(), 1, "only the approved execution ran");

    let metrics = e.app.metrics().await;
    assert!(
        metric(
            &metrics,
            "medic_playbook_executions_total",
            &["playbook=\"restart-api\"", "status=\"completed\""]
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "medic_playbook_execution_duration_seconds_count",
            &["status=\"completed\""]
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "medic_playbook_step_duration_seconds_count",
            &["kind=\"webhook\"", "status=\"completed\""]
        )
        .is_some_and(|v| v >= 1.0),
        "{metrics}"
    );
}

const ESCALATE: &str = "name: verify-api\nsteps:\n  - name: back\n    type: condition\n    \
                        check: {heartbeat_received: {min_count: 1}}\n    within: 1m\n    \
                        every: 30s\n    on_failure: escalate\n";

async fn an_escalating_condition_pages_through_the_service_routing(db: Option<TestDb>) {
    let rx = Receivers::start().await;
    let e = env(db, &rx, 50).await;
    let engine = e.app.engine();
    let id = engine
        .start(request(ESCALATE, e.service, None))
        .await
        .expect("start")
        .id;
    // The heartbeat never comes back: move the clock until the condition gives up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&e.app, id).await["status"] != "failed" {
        assert!(Instant::now() < deadline, "{:#}", get(&e.app, id).await);
        e.app.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pd = wait_requests(&rx.pagerduty, "the page", |p| !p.is_empty()).await;
    assert_eq!(pd.len(), 1, "one page");
    let page = pd[0].json();
    assert_eq!(page["routing_key"], "ops-routing-key");
    assert_eq!(page["event_action"], "trigger");
    assert_eq!(page["dedup_key"], format!("medic-execution-{id}-back"));
    assert_eq!(page["payload"]["custom_details"]["execution_id"], id);
    assert_eq!(page["payload"]["custom_details"]["playbook"], "restart-api");
    assert_eq!(page["payload"]["custom_details"]["service_id"], e.service);
    assert!(
        page["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("escalated at step back")),
        "{page:#}"
    );
    let hook = wait_requests(&rx.hook, "the escalation webhook", |h| {
        events_of(h).contains(&"execution.escalated".to_owned())
    })
    .await;
    let escalated = hook
        .iter()
        .find(|r| r.header("x-medic-event") == Some("execution.escalated"))
        .map(Recorded::json)
        .expect("escalated");
    assert_eq!(escalated["execution"]["step"], "back");
    assert!(
        escalated["execution"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("condition not met")),
        "{escalated:#}"
    );
    wait_requests(&rx.slack, "the escalation in Slack", |s| {
        slack_calls(s, "chat.postMessage")
            .iter()
            .any(|m| m["text"].as_str().is_some_and(|t| t.contains("escalated")))
    })
    .await;
}

const QUICK: &str = "name: quick\nsteps:\n  - name: pause\n    type: wait\n    duration: 1h\n";

async fn an_open_breaker_tells_the_team_once_per_opening_and_an_admin_reset_closes_it(
    db: Option<TestDb>,
) {
    let rx = Receivers::start().await;
    let e = env(db, &rx, 2).await;
    let engine = e.app.engine();
    let trips_before = metric(
        &e.app.metrics().await,
        "medic_circuit_breaker_trips_total",
        &[],
    )
    .unwrap_or(0.0);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            engine
                .start(request(QUICK, e.service, None))
                .await
                .expect("start")
                .status,
        );
    }
    assert_eq!(
        statuses,
        ["waiting", "waiting", "skipped", "skipped", "skipped"]
    );
    let hook = wait_requests(&rx.hook, "the breaker notice", |h| {
        count(&events_of(h), "execution.started") == 2
            && count(&events_of(h), "circuit_breaker.opened") >= 1
    })
    .await;
    let opened: Vec<Value> = hook
        .iter()
        .filter(|r| r.header("x-medic-event") == Some("circuit_breaker.opened"))
        .map(Recorded::json)
        .collect();
    assert_eq!(opened.len(), 1, "one notice for three skips");
    assert_eq!(opened[0]["breaker"]["scope"], "service");
    assert_eq!(opened[0]["breaker"]["limit"], 2);
    let metrics = e.app.metrics().await;
    assert!(
        metric(&metrics, "medic_circuit_breaker_trips_total", &[])
            .is_some_and(|v| v >= trips_before + 1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "medic_playbook_executions_total",
            &["playbook=\"restart-api\"", "status=\"skipped\""]
        )
        .is_some_and(|v| v >= 3.0),
        "{metrics}"
    );

    // Bad resets change nothing.
    let reset = |body: Value| {
        let app = &e.app;
        async move {
            app.admin()
                .post_json("/v2/playbooks/breaker/reset", &body)
                .await
        }
    };
    assert_error_contains(
        &reset(json!({"scope": "galaxy"})).await,
        400,
        "scope must be",
    );
    assert_error_contains(&reset(json!({"scope": "service"})).await, 400, "service_id");
    assert_error_contains(
        &reset(json!({"scope": "service", "service_id": 999_999})).await,
        404,
        "not found",
    );
    assert_error_contains(
        &reset(json!({"scope": "global", "service_id": e.service})).await,
        400,
        "not allowed",
    );
    let reader = e.app.create_key(&["read", "write"]).await;
    let r = e
        .app
        .with_key(&reader)
        .post_json(
            "/v2/playbooks/breaker/reset",
            &json!({"scope": "service", "service_id": e.service}),
        )
        .await;
    assert_eq!(r.status.as_u16(), 403, "{}", r.body);
    assert_eq!(
        engine
            .start(request(QUICK, e.service, None))
            .await
            .expect("start")
            .status,
        "skipped",
        "still open"
    );

    // An admin's reset closes it at once, audited; the next opening is announced again.
    let r = reset(json!({"scope": "service", "service_id": e.service})).await;
    let body = assert_ok(&r, 200);
    assert_eq!(body["scope"], "service");
    assert_eq!(body["reset_by"], "bootstrap-admin");
    let store = e.app.store().await;
    let audit = store
        .list_audit(
            &AuditFilter {
                action_type: Some("circuit_breaker_reset".into()),
                ..AuditFilter::default()
            },
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .expect("audit");
    assert_eq!(audit.total_count, 1);
    assert_eq!(audit.entries[0].service_id, Some(ServiceId(e.service)));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            engine
                .start(request(QUICK, e.service, None))
                .await
                .expect("start")
                .status,
        );
    }
    assert_eq!(statuses, ["waiting", "waiting", "skipped"]);
    wait_requests(&rx.hook, "the second opening's notice", |h| {
        count(&events_of(h), "circuit_breaker.opened") == 2
    })
    .await;
    // Slack heard of both openings; PagerDuty of none.
    let slack = wait_requests(&rx.slack, "both openings in Slack", |s| {
        slack_calls(s, "chat.postMessage")
            .iter()
            .filter(|m| {
                m["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("circuit breaker"))
            })
            .count()
            == 2
    })
    .await;
    assert!(!slack.is_empty());
    assert!(rx.pagerduty.requests().is_empty());
}
