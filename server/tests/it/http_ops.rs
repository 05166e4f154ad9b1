//! Operations: health, liveness, readiness, metrics, request ids, the OpenAPI document and docs
//! page, and graceful shutdown.
//!
//! Readiness turning 503 when the database goes away is not covered here: a SQLite file cannot
//! be made unreachable under a running pool. It needs a database behind a connection that can
//! be cut (PostgreSQL through a proxy).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use medic_server::domain::service::name_key;
use medic_server::store::HeartbeatQuery;
use reqwest::Method;
use serde_json::json;

use crate::support::{TestApp, assert_ok, metric, send};

#[tokio::test]
async fn health_reports_the_database_and_only_configured_components() {
    let app = TestApp::spawn().await;
    let r = app.get("/health").await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let h = r.json();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_seconds"].is_u64());
    // The old service's CLI reads the server's time from `/health`.
    let at = h["timestamp"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with("+00:00"),
        "timestamp is RFC 3339 UTC: {h}"
    );
    let db = &h["components"]["database"];
    assert_eq!(db["status"], "healthy");
    assert_eq!(db["backend"], "sqlite");
    assert!(db["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{h}");
    assert!(
        h["components"].get("redis").is_none(),
        "no Redis configured: {h}"
    );
    assert_eq!(h["components"]["rate_limiter"]["backend"], "memory");
}

#[tokio::test]
async fn an_unreachable_configured_redis_degrades_health_and_falls_back_to_memory() {
    let app = TestApp::builder()
        .configure(|c| {
            c.redis_url = Some("redis://127.0.0.1:1".parse().expect("secret"));
            c.rate_limiter_type = medic_server::config::RateLimiterType::Auto;
        })
        .spawn()
        .await;
    let before = metric(
        &app.metrics().await,
        "medic_rate_limiter_fallback_total",
        &[],
    )
    .unwrap_or(0.0);
    let r = app.get("/health").await;
    assert_eq!(r.status.as_u16(), 200, "degraded is still 200: {}", r.body);
    let h = r.json();
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["components"]["redis"]["status"], "unhealthy");
    assert_eq!(h["components"]["database"]["status"], "healthy");
    assert_eq!(h["components"]["rate_limiter"]["backend"], "memory");
    // Limits still apply, from memory.
    assert!(r.header("x-ratelimit-limit").is_some());
    let after = metric(
        &app.metrics().await,
        "medic_rate_limiter_fallback_total",
        &[],
    )
    .unwrap_or(0.0);
    assert!(after >= before + 2.0, "{before} -> {after}");
}

#[tokio::test]
async fn live_and_ready_answer_200() {
    let app = TestApp::spawn().await;
    let r = app.get("/health/live").await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json(), json!({ "status": "alive" }));
    let r = app.get("/health/ready").await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.json(), json!({ "status": "ready" }));
}

/// Metric names described in `telemetry.rs`, read from the source so a new metric cannot be
/// added without this test noticing.
fn described_metrics() -> Vec<String> {
    let src = include_str!("../../src/telemetry.rs");
    let mut names = Vec::new();
    for macro_name in [
        "describe_counter!(",
        "describe_gauge!(",
        "describe_histogram!(",
    ] {
        for (i, _) in src.match_indices(macro_name) {
            let rest = src[i + macro_name.len()..].trim_start();
            if let Some(rest) = rest.strip_prefix('"') {
                let name = rest.split('"').next().unwrap_or_default();
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    names
}

#[tokio::test]
async fn every_described_metric_is_recorded_after_traffic() {
    let names = described_metrics();
    assert!(names.len() >= 9, "parsed {names:?}");

    // Redis configured but unreachable, so the fallback counter has something to count.
    let app = TestApp::builder()
        .anonymous(true)
        .limits(medic_server::config::RateLimits {
            docs: 1,
            ..crate::support::GENEROUS
        })
        .configure(|c| {
            c.redis_url = Some("redis://127.0.0.1:1".parse().expect("secret"));
            c.rate_limiter_type = medic_server::config::RateLimiterType::Auto;
        })
        .spawn()
        .await;
    app.register("metered", 5).await;
    assert_ok(
        &app.post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "metered", "status": "UP" }),
        )
        .await,
        201,
    );
    let r = app.with_key("not-a-key").get("/v2/services").await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(app.get("/docs").await.status.as_u16(), 200);
    assert_eq!(app.get("/docs").await.status.as_u16(), 429);

    let text = app.metrics().await;
    for name in &names {
        let found = [name.clone(), format!("{name}_count")]
            .iter()
            .any(|n| metric(&text, n, &[]).is_some());
        assert!(found, "{name} is described but never recorded:\n{text}");
    }
    let at_least_one = |name: &str, labels: &[(&str, &str)]| {
        let v = metric(&text, name, labels).unwrap_or(0.0);
        assert!(v >= 1.0, "{name}{labels:?} = {v}");
    };
    at_least_one(
        "medic_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/heartbeat"),
            ("status", "201"),
        ],
    );
    at_least_one(
        "medic_http_request_duration_seconds_count",
        &[("route", "/heartbeat")],
    );
    at_least_one(
        "medic_heartbeats_received_total",
        &[("outcome", "accepted")],
    );
    at_least_one("medic_heartbeat_batch_size_count", &[]);
    at_least_one("medic_auth_failures_total", &[("reason", "malformed")]);
    at_least_one("medic_rate_limit_rejections_total", &[("class", "docs")]);
    at_least_one(
        "medic_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
    );
    at_least_one("medic_db_pool_max_connections", &[]);
    at_least_one("medic_rate_limiter_fallback_total", &[]);
    assert!(metric(&text, "medic_db_pool_connections", &[("state", "idle")]).is_some());
    assert!(metric(&text, "medic_db_pool_connections", &[("state", "in_use")]).is_some());
    assert!(
        metric(
            &text,
            "medic_rate_limiter_backend",
            &[("backend", "memory")]
        )
        .is_some()
    );
    // Unmatched paths are one label value, not one per URL.
    let r = app.get("/nope/12345").await;
    assert_eq!(r.status.as_u16(), 404);
    let text = app.metrics().await;
    assert!(!text.contains("/nope/12345"));
    assert!(
        metric(
            &text,
            "medic_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        )
        .is_some()
    );
}

#[tokio::test]
async fn request_ids_are_kept_when_well_formed_and_generated_otherwise() {
    let app = TestApp::spawn().await;
    let with_id = |path: &str, id: &str| {
        send(
            app.anon()
                .request(Method::GET, path)
                .header("X-Request-Id", id),
        )
    };
    for path in ["/health/live", "/v2/services", "/missing"] {
        let r = with_id(path, "req-42.a:b_C").await;
        assert_eq!(r.header("x-request-id"), Some("req-42.a:b_C"), "{path}");
    }
    let long = "a".repeat(129);
    for bad in ["has spaces", "semi;colon", long.as_str(), ""] {
        let r = with_id("/health/live", bad).await;
        let id = r.header("x-request-id").expect("generated id");
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    let a = app.get("/health/live").await;
    let b = app.get("/health/live").await;
    let (a, b) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert!(uuid::Uuid::parse_str(a).is_ok());
    assert_ne!(a, b);
}

/// Every route this server serves, with its methods. Adding a route without adding it here
/// (and testing it) fails `openapi_lists_every_served_route`.
const ROUTES: &[(&str, &[&str])] = &[
    ("/heartbeat", &["get", "post"]),
    ("/service", &["get", "post"]),
    ("/service/{heartbeat_name}", &["get", "post"]),
    ("/alerts", &["get"]),
    ("/v1/healthcheck/network", &["get"]),
    ("/v2/heartbeat/{service_id}/start", &["post"]),
    ("/v2/heartbeat/{service_id}/complete", &["post"]),
    ("/v2/heartbeat/{service_id}/fail", &["post"]),
    ("/v2/secrets", &["get"]),
    ("/v2/secrets/{name}", &["delete", "put"]),
    ("/v2/services", &["get", "post"]),
    ("/v2/services/{service_id}", &["delete", "get", "patch"]),
    ("/v2/services/{service_id}/mute", &["post"]),
    ("/v2/services/{service_id}/unmute", &["post"]),
    ("/v2/services/{service_id}/heartbeats", &["get"]),
    ("/v2/services/{service_id}/runs", &["get"]),
    ("/v2/services/{service_id}/stats", &["get"]),
    ("/v2/services/{service_id}/targets", &["get", "post"]),
    ("/v2/services/{service_id}/snooze", &["post"]),
    ("/v2/teams", &["get", "post"]),
    ("/v2/teams/{team_id}", &["delete", "get", "patch"]),
    ("/v2/teams/{team_id}/targets", &["get", "post"]),
    ("/v2/targets/{target_id}", &["delete", "patch"]),
    ("/v2/maintenance-windows", &["get", "post"]),
    ("/v2/maintenance-windows/{window_id}", &["delete", "get"]),
    ("/v2/playbooks", &["get", "post"]),
    ("/v2/playbooks/validate", &["post"]),
    ("/v2/playbooks/{playbook_id}", &["delete", "get", "put"]),
    ("/v2/playbooks/{playbook_id}/restore", &["post"]),
    ("/v2/playbooks/{playbook_id}/versions/{version}", &["get"]),
    ("/v2/playbooks/{playbook_id}/execute", &["post"]),
    ("/v2/playbooks/breaker/reset", &["post"]),
    ("/v2/webhooks/playbooks/{playbook_id}/trigger", &["post"]),
    ("/v2/snapshots", &["get"]),
    ("/v2/snapshots/{snapshot_id}", &["get"]),
    ("/v2/snapshots/{snapshot_id}/restore", &["post"]),
    ("/v2/audit-logs", &["get"]),
    ("/v2/api-keys", &["get", "post"]),
    ("/v2/api-keys/{key_id}", &["delete"]),
    ("/health", &["get"]),
    ("/health/live", &["get"]),
    ("/health/ready", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
    ("/docs", &["get"]),
    ("/v2/scripts", &["get", "post"]),
    ("/v2/scripts/{script_id}", &["get"]),
    ("/v2/scripts/{script_id}/approve", &["post"]),
    ("/v2/scripts/{script_id}/reject", &["post"]),
    (
        "/v2/scripts/{script_id}/versions/{version}/approve",
        &["post"],
    ),
    (
        "/v2/scripts/{script_id}/versions/{version}/reject",
        &["post"],
    ),
    ("/v2/alerts", &["get"]),
    ("/v2/alerts/{alert_id}", &["get"]),
    ("/v2/alerts/{alert_id}/ack", &["post"]),
    ("/v2/alerts/{alert_id}/resolve", &["post"]),
    ("/v2/services/{service_id}/alerts", &["get"]),
    ("/v2/webhooks/{target_id}/deliveries", &["get"]),
    ("/v2/slack/interactions", &["post"]),
    ("/v2/agents", &["get"]),
    ("/v2/agents/connect", &["get"]),
    ("/v2/agents/{agent_id}", &["get", "delete"]),
    ("/v2/agents/{agent_id}/labels", &["put"]),
    ("/v2/runs", &["get", "post"]),
    ("/v2/runs/{run_id}", &["get"]),
    ("/v2/executions", &["get"]),
    ("/v2/executions/{execution_id}", &["get"]),
    ("/v2/executions/{execution_id}/approve", &["post"]),
    ("/v2/executions/{execution_id}/reject", &["post"]),
    ("/v2/executions/{execution_id}/cancel", &["post"]),
];

#[tokio::test]
async fn openapi_lists_every_served_route() {
    let app = TestApp::spawn().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let doc = r.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeMap<&str, BTreeSet<&str>> = paths
        .iter()
        .map(|(p, ops)| {
            let methods = ops
                .as_object()
                .expect("operations")
                .keys()
                .map(String::as_str)
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(m))
                .collect();
            (p.as_str(), methods)
        })
        .collect();
    let expected: BTreeMap<&str, BTreeSet<&str>> = ROUTES
        .iter()
        .map(|(p, ms)| (*p, ms.iter().copied().collect()))
        .collect();
    assert_eq!(documented, expected);

    // And every documented operation is really served (not the 404/405 fallbacks).
    for (path, methods) in ROUTES {
        let concrete = path
            .replace("{heartbeat_name}", "x")
            .replace("{service_id}", "1")
            .replace("{snapshot_id}", "1")
            .replace("{key_id}", "000000000000")
            .replace("{agent_id}", "x")
            .replace("{run_id}", "x");
        for m in *methods {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let r = send(app.admin().request(method, &concrete).json(&json!({}))).await;
            assert!(
                !(r.status.as_u16() == 404 && r.body.contains("No such route."))
                    && r.status.as_u16() != 405,
                "{m} {concrete}: {} {}",
                r.status,
                r.body
            );
        }
    }
}

#[tokio::test]
async fn docs_page_is_self_contained_html() {
    let app = TestApp::spawn().await;
    let r = app.get("/docs").await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(
        r.header("content-type")
            .unwrap_or_default()
            .starts_with("text/html")
    );
    assert!(r.body.to_lowercase().contains("<html"));
    assert!(
        r.body.contains("openapi.json"),
        "the page renders the served document"
    );
    let lower = r.body.to_lowercase();
    assert!(
        !lower.contains("http://") && !lower.contains("https://"),
        "external URL in /docs"
    );
    assert!(
        !lower.contains("src=\"//") && !lower.contains("href=\"//"),
        "protocol-relative URL in /docs"
    );
}

#[tokio::test]
async fn shutdown_drains_and_keeps_every_acknowledged_heartbeat() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    app.register("durable", 5).await;
    let mut tasks = Vec::new();
    for i in 0..25 {
        let client = app.client.clone();
        let url = app.url("/heartbeat");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "heartbeat_name": "durable", "status": format!("s{i}") }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let mut acknowledged = 0;
    for t in tasks {
        if t.await.expect("task").is_ok_and(|s| s == 201) {
            acknowledged += 1;
        }
    }
    assert_eq!(acknowledged, 25);
    let base = app.base.clone();
    let client = app.client.clone();
    let stopped = tokio::time::timeout(Duration::from_secs(15), app.shutdown())
        .await
        .expect("shutdown completes");
    assert!(
        client
            .get(format!("{base}/health/live"))
            .send()
            .await
            .is_err(),
        "the listener is closed"
    );
    let store = stopped.store().await;
    let rows = store
        .list_heartbeats(&HeartbeatQuery {
            name_key: Some(name_key("durable")),
            limit: 1000,
            ..HeartbeatQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(rows.len(), 25);
    store.close().await;
}

#[tokio::test]
async fn shutdown_waits_for_a_request_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::builder().anonymous(true).spawn().await;
    app.register("draining", 5).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let body = r#"{"heartbeat_name": "draining", "status": "LAST"}"#;
    let (head, tail) = body.split_at(10);
    let mut sock = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let request = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    );
    sock.write_all(request.as_bytes())
        .await
        .expect("write head");
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The request is half-sent; shutdown must wait for it.
    let shutdown = tokio::spawn(app.shutdown());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the request in flight"
    );
    sock.write_all(tail.as_bytes()).await.expect("write tail");
    let mut response = String::new();
    sock.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let stopped = tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown completes")
        .expect("task");
    let store = stopped.store().await;
    let rows = store
        .list_heartbeats(&HeartbeatQuery {
            name_key: Some(name_key("draining")),
            limit: 10,
            ..HeartbeatQuery::default()
        })
        .await
        .expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, "LAST");
    store.close().await;
}

/// The document describes every answer: unique operation ids, the security of every route,
/// a schema for every 2xx body, the error envelope for every error, and the answers the gate
/// and the extractors give on any route (401/403 with a key, 413 with a body, 429 always).
#[tokio::test]
async fn openapi_describes_every_answer() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json").await.json();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in ["ErrorEnvelope", "RateLimitedEnvelope", "Time", "Priority"] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    let mut ids = BTreeSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("operations") {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let at = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no id"));
            assert!(ids.insert(id.to_owned()), "{at}: operation id {id} repeats");
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: no security"));
            let bearer = security.iter().any(|s| s.get("bearer").is_some());
            let responses = op["responses"].as_object().expect("responses");
            for (status, answer) in responses {
                let content = answer["content"].as_object();
                if status.starts_with('2') && status != "204" {
                    let schema = content
                        .and_then(|c| c.values().next())
                        .map(|c| &c["schema"])
                        .unwrap_or_else(|| panic!("{at} {status}: no content"));
                    assert!(schema.is_object(), "{at} {status}: no schema");
                }
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        content.is_some_and(|c| c.contains_key("application/json")),
                        "{at} {status}: no JSON body"
                    );
                }
            }
            for (needed, why) in [
                ("429", true),
                ("401", bearer),
                ("403", bearer),
                ("413", op.get("requestBody").is_some()),
            ] {
                assert!(
                    !why || responses.contains_key(needed),
                    "{at}: {needed} missing"
                );
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["name"] == "limit" {
                    assert_eq!(p["schema"]["minimum"], 1, "{at}: limit ≥ 1");
                }
            }
        }
    }
    assert!(operations >= 70, "{operations} operations");
    // Ingestion and the v1 routes: a key, or none when anonymous heartbeats are on.
    let heartbeat = &doc["paths"]["/heartbeat"]["post"]["security"];
    assert_eq!(heartbeat, &json!([{ "bearer": [] }, {}]));
    assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([{}]));
    assert_eq!(
        doc["paths"]["/v2/services"]["get"]["security"],
        json!([{ "bearer": [] }])
    );
}

/// The error and rate-limit bodies are what the document says they are.
#[tokio::test]
async fn error_bodies_match_the_documented_envelopes() {
    let app = TestApp::builder()
        .limits(medic_server::config::RateLimits {
            docs: 1,
            ..crate::support::GENEROUS
        })
        .spawn()
        .await;
    let r = app.get("/v2/services").await;
    assert_eq!(r.status.as_u16(), 401);
    assert_eq!(
        r.body,
        r#"{"message":"Authentication required: send Authorization: Bearer <api key>.","results":"","success":false}"#
    );
    let first = app.get("/docs").await;
    assert_eq!(first.status.as_u16(), 200);
    let r = app.get("/docs").await;
    assert_eq!(r.status.as_u16(), 429);
    let body = r.json();
    assert_eq!(r.body, body.to_string());
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["message", "results", "retry_after", "success"]);
    assert_eq!(body["results"], "");
    assert_eq!(body["success"], false);
    assert_eq!(
        body["retry_after"].as_u64(),
        r.header("retry-after").and_then(|v| v.parse().ok())
    );
}
