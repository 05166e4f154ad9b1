//! Input at the edge: control characters in any string (path, query, JSON body) are refused with
//! a 400 that names the field, on both backends, before a handler or the database sees them;
//! parse errors speak the API's words, not Rust's; numbers that cannot be kept exactly are
//! refused.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Reply, TestApp, assert_envelope, assert_ok, send};

async fn app_on(database: Option<String>) -> TestApp {
    TestApp::builder()
        .anonymous(true)
        .configure(move |c| {
            if let Some(url) = database {
                c.database_url = url.parse().expect("url");
            }
        })
        .spawn()
        .await
}

#[track_caller]
fn assert_refused(r: &Reply, what: &str, field: &str) {
    let v = assert_envelope(r, 400, false);
    let message = v["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(field),
        "{what}: message {message:?} does not name {field:?}"
    );
}

async fn services(app: &TestApp) -> Value {
    assert_ok(&app.admin().get("/v2/services").await, 200)
}

async fn control_characters_are_refused(app: &TestApp) {
    app.register("known", 5).await;
    let before = services(app).await;

    // Query parameters, with a key and (where anonymous mode opens the route) without.
    for (path, field) in [
        ("/v2/services?name=a%00b", "name"),
        ("/v2/runs?agent_id=a%00b", "agent_id"),
        ("/v2/audit-logs?actor=a%00b", "actor"),
        ("/v2/alerts?state=open&team=a%01b", "team"),
        ("/heartbeat?heartbeat_name=a%00b", "heartbeat_name"),
        ("/heartbeat?service_name=a%1Fb", "service_name"),
    ] {
        let r = app.admin().get(path).await;
        assert_refused(&r, path, field);
    }
    let r = app.anon().get("/heartbeat?heartbeat_name=a%00b").await;
    assert_refused(&r, "anonymous GET /heartbeat", "heartbeat_name");

    // Path parameters.
    for (method, path, field) in [
        (Method::GET, "/service/a%00b", "heartbeat_name"),
        (Method::GET, "/v2/agents/a%00b", "agent_id"),
        (Method::GET, "/v2/services/a%00b", "service_id"),
        (Method::DELETE, "/v2/services/a%7Fb", "service_id"),
    ] {
        let r = send(app.admin().request(method.clone(), path)).await;
        assert_refused(&r, &format!("{method} {path}"), field);
    }
    let r = app
        .anon()
        .post_json("/service/a%00b", &json!({"active": 0}))
        .await;
    assert_refused(&r, "anonymous POST /service/a%00b", "heartbeat_name");

    // JSON bodies, nested fields named by their path.
    for (path, body, field) in [
        (
            "/heartbeat",
            json!({"heartbeat_name": "known", "status": "U\u{0}P"}),
            "status",
        ),
        (
            "/heartbeat",
            json!({"heartbeat_name": "kn\u{0}own", "status": "UP"}),
            "heartbeat_name",
        ),
        (
            "/v2/services",
            json!({"heartbeat_name": "new", "interval_seconds": 60, "runbook": "see\u{1b}[31m"}),
            "runbook",
        ),
        (
            "/v2/teams",
            json!({"name": "ops", "working_hours": {"timezone": "x\u{0}"}}),
            "working_hours.timezone",
        ),
        (
            "/v2/api-keys",
            json!({"name": "k", "scopes": ["read", "wr\u{0}ite"]}),
            "scopes[1]",
        ),
    ] {
        let r = app.admin().post_json(path, &body).await;
        assert_refused(&r, path, field);
    }
    // Lines and tabs are text, not control: a multi-line script is accepted as sent.
    let content = "#!/bin/sh\r\n\techo one\necho two\n";
    let r = app
        .admin()
        .post_json(
            "/v2/scripts",
            &json!({"name": "lines", "interpreter": "sh", "content": content}),
        )
        .await;
    assert_ok(&r, 201);
    let r = app
        .admin()
        .post_json(
            "/v2/scripts",
            &json!({"name": "nul", "interpreter": "sh", "content": "echo \u{0}"}),
        )
        .await;
    assert_refused(&r, "script content", "content");

    // Nothing changed, and nothing failed on the server's side.
    let after = services(app).await;
    assert_eq!(before["total_count"], after["total_count"]);
    let text = app.metrics().await;
    for status in ["500", "503"] {
        assert_eq!(
            crate::support::metric(&text, "medic_http_requests_total", &[("status", status)]),
            None,
            "some request answered {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_on_sqlite() {
    let app = app_on(None).await;
    control_characters_are_refused(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_are_refused_on_postgres() {
    let Some(db) = crate::db::postgres().await else {
        return;
    };
    let app = app_on(Some(db.url.clone())).await;
    control_characters_are_refused(&app).await;
}

#[tokio::test]
async fn malformed_bodies_are_described_in_the_apis_words() {
    let app = app_on(None).await;
    app.register("known", 5).await;
    for (path, body, expect) in [
        ("/v2/services", json!("a string"), "expected a JSON object"),
        (
            "/heartbeat",
            json!({"heartbeat_name": "known", "status": "UP", "run_id": {"a": 1}}),
            "run_id: expected a string or a number",
        ),
        (
            "/v2/services",
            json!({"heartbeat_name": "x", "interval_seconds": "60"}),
            "interval_seconds: invalid type: string \"60\", expected a whole number",
        ),
        (
            "/v2/services",
            json!({"heartbeat_name": {}, "interval_seconds": 60}),
            "heartbeat_name: invalid type: JSON object, expected a string",
        ),
        (
            "/v2/api-keys",
            json!({"name": "k", "scopes": 5}),
            "scopes: expected a list of scopes or a comma-separated string",
        ),
    ] {
        let r = app.admin().post_json(path, &body).await;
        let v = assert_envelope(&r, 400, false);
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(expect),
            "{path} {body}: {message:?} lacks {expect:?}"
        );
        for rust in [
            "struct", "enum", "In`", "Value", "i64", "u32", "map", "sequence",
        ] {
            assert!(
                !message.contains(rust),
                "{path} {body}: {message:?} speaks Rust ({rust:?})"
            );
        }
    }
}

#[tokio::test]
async fn a_run_id_number_beyond_64_bits_is_refused_not_rounded() {
    let app = app_on(None).await;
    let id = app.register("job", 5).await;
    let r = send(
        app.admin()
            .request(Method::POST, &format!("/v2/heartbeat/{id}/start"))
            .header("content-type", "application/json")
            .body(r#"{"run_id": 123456789012345678901234567890}"#),
    )
    .await;
    let v = assert_envelope(&r, 400, false);
    assert!(
        v["message"].as_str().unwrap_or_default().contains("run_id"),
        "{v}"
    );
    let r = send(
        app.anon()
            .request(Method::POST, "/heartbeat")
            .header("content-type", "application/json")
            .body(r#"{"heartbeat_name": "job", "status": "UP", "run_id": 18446744073709551616}"#),
    )
    .await;
    assert_envelope(&r, 400, false);
    // Numbers that fit are kept digit for digit, and so are strings of any size.
    let r = send(
        app.admin()
            .request(Method::POST, &format!("/v2/heartbeat/{id}/start"))
            .header("content-type", "application/json")
            .body(r#"{"run_id": 18446744073709551615}"#),
    )
    .await;
    assert_eq!(assert_ok(&r, 201)["run_id"], json!("18446744073709551615"));
    let r = app
        .admin()
        .post_json(
            &format!("/v2/heartbeat/{id}/start"),
            &json!({"run_id": "123456789012345678901234567890"}),
        )
        .await;
    assert_eq!(
        assert_ok(&r, 201)["run_id"],
        json!("123456789012345678901234567890")
    );
}

/// Requests hyper refuses before any handler runs still get the JSON envelope.
#[tokio::test]
async fn unparseable_requests_get_the_json_envelope() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app_on(None).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (request, status) in [
        (
            "GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n".to_owned(),
            400,
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)),
            414,
        ),
        (
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n"),
            431,
        ),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut raw))
            .await
            .expect("answered in time")
            .expect("read");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(v["success"], json!(false), "{v}");
        assert_eq!(v["results"], json!(""), "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // Ordinary answers are untouched.
    assert_ok(&app.admin().get("/v2/services").await, 200);
}
