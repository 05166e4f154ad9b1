//! Authentication and authorisation: Bearer keys and scopes on v2, the anonymous-heartbeat
//! switch on v1, expiry and revocation, API key management, and the auth-failure metric.
//!
//! Metrics are process-wide and tests run in parallel, so metric checks compare "at least the
//! increase this test caused".

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error, assert_error_contains, assert_ok, metric, send};

const NEED_KEY: &str = "Authentication required: send Authorization: Bearer <api key>.";

async fn auth_failures(app: &TestApp, reason: &str) -> f64 {
    metric(
        &app.metrics().await,
        "medic_auth_failures_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[track_caller]
fn assert_unauthorized(r: &crate::support::Reply, message: &str) {
    assert_error(r, 401, message);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer"),
        "{:?}",
        r.headers
    );
}

#[tokio::test]
async fn v2_routes_without_a_key_are_401_with_www_authenticate() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    let before = auth_failures(&app, "missing").await;
    let anon = app.anon();
    for path in [
        "/v2/services",
        "/v2/services/1",
        "/v2/services/1/stats",
        "/v2/services/1/heartbeats",
        "/v2/snapshots",
        "/v2/snapshots/1",
        "/v2/audit-logs",
        "/v2/api-keys",
    ] {
        assert_unauthorized(&anon.get(path).await, NEED_KEY);
    }
    assert_unauthorized(
        &anon
            .post_json(
                "/v2/services",
                &json!({ "heartbeat_name": "x", "interval_seconds": 60 }),
            )
            .await,
        NEED_KEY,
    );
    assert_unauthorized(&anon.post("/v2/snapshots/1/restore").await, NEED_KEY);
    assert_unauthorized(&anon.delete("/v2/api-keys/abc").await, NEED_KEY);
    assert_eq!(
        assert_ok(&app.admin().get("/v2/services").await, 200)["total_count"],
        0,
        "nothing was created"
    );
    assert!(auth_failures(&app, "missing").await >= before + 11.0);
}

#[tokio::test]
async fn malformed_unknown_and_wrong_secret_keys_get_the_same_401() {
    let app = TestApp::builder().anonymous(true).spawn().await;
    app.register("svc", 5).await;
    let real = app.create_key(&["admin"]).await;
    let id = real.split('_').nth(1).unwrap().to_owned();
    let wrong_secret = format!("mdk_{id}_{}", "0".repeat(64));
    let unknown = format!("mdk_{}_{}", "a".repeat(12), "b".repeat(64));
    let reasons = ["malformed", "unknown_key", "bad_secret"];
    let mut before = Vec::new();
    for reason in reasons {
        before.push(auth_failures(&app, reason).await);
    }

    let unknown = format!("Bearer {unknown}");
    let wrong_secret = format!("Bearer {wrong_secret}");
    let cases = [
        ("Bearer not-a-medic-key", "malformed"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        (unknown.as_str(), "unknown_key"),
        (wrong_secret.as_str(), "bad_secret"),
    ];
    for (header, _) in &cases {
        for (method, path) in [(Method::GET, "/v2/services"), (Method::GET, "/service")] {
            let r = send(
                app.anon()
                    .request(method, path)
                    .header("Authorization", *header),
            )
            .await;
            assert_unauthorized(&r, "Invalid API key.");
        }
        // A refused credential is not downgraded to anonymous, even where anonymous is allowed.
        let r = send(
            app.anon()
                .request(Method::POST, "/heartbeat")
                .header("Authorization", *header)
                .json(&json!({ "heartbeat_name": "svc", "status": "UP" })),
        )
        .await;
        assert_unauthorized(&r, "Invalid API key.");
    }
    let r = app.get("/heartbeat").await;
    assert_eq!(assert_ok(&r, 200), json!([]));
    assert_ok(&app.with_key(&real).get("/v2/services").await, 200);

    for (reason, before) in reasons.iter().zip(before) {
        let expected = cases.iter().filter(|(_, r)| r == reason).count() as f64 * 3.0;
        let after = auth_failures(&app, reason).await;
        assert!(after >= before + expected, "{reason}: {before} -> {after}");
    }
}

#[tokio::test]
async fn scopes_are_enforced_with_403() {
    let app = TestApp::spawn().await;
    let read = app.create_key(&["read"]).await;
    let write = app.create_key(&["write"]).await;
    let agent = app.create_key(&["agent"]).await;
    let before = auth_failures(&app, "insufficient_scope").await;
    let body = json!({ "heartbeat_name": "scoped", "interval_seconds": 60 });

    let r = app.with_key(&read).post_json("/v2/services", &body).await;
    assert_error(&r, 403, "This API key lacks the write scope.");
    assert_eq!(r.header("www-authenticate"), None);
    let r = app
        .with_key(&read)
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "scoped", "status": "UP" }),
        )
        .await;
    assert_error(&r, 403, "This API key lacks the ingest scope.");
    assert_ok(&app.with_key(&read).get("/v2/services").await, 200);
    assert_ok(&app.with_key(&read).get("/heartbeat").await, 200);
    let r = app.with_key(&agent).get("/v2/services").await;
    assert_error(&r, 403, "This API key lacks the read scope.");

    // write implies read; admin is still needed for keys.
    let created = assert_ok(
        &app.with_key(&write).post_json("/v2/services", &body).await,
        201,
    );
    let id = created["service_id"].as_i64().unwrap();
    assert_ok(&app.with_key(&write).get("/v2/services").await, 200);
    let r = app
        .with_key(&write)
        .post_json(
            "/heartbeat",
            &json!({ "heartbeat_name": "scoped", "status": "UP" }),
        )
        .await;
    assert_ok(&r, 201);
    for r in [
        app.with_key(&write).get("/v2/api-keys").await,
        app.with_key(&write)
            .post_json("/v2/api-keys", &json!({ "name": "x", "scopes": ["read"] }))
            .await,
        app.with_key(&write).delete("/v2/api-keys/abc").await,
    ] {
        assert_error(&r, 403, "This API key lacks the admin scope.");
    }

    // The key's name and id are the actor of its changes.
    let r = app
        .with_key(&write)
        .patch_json(&format!("/v2/services/{id}"), &json!({ "team": "dba" }))
        .await;
    assert_ok(&r, 200);
    let snaps = assert_ok(&app.admin().get("/v2/snapshots").await, 200);
    let write_id = write.split('_').nth(1).unwrap();
    assert_eq!(
        snaps["entries"][0]["actor"],
        format!("it-write ({write_id})")
    );

    assert!(auth_failures(&app, "insufficient_scope").await >= before + 6.0);

    // The bootstrap admin key, with the scheme in lower case as some clients send it.
    let r = send(
        app.anon()
            .request(Method::GET, "/v2/api-keys")
            .header("Authorization", format!("bearer {}", app.admin_key())),
    )
    .await;
    assert_eq!(assert_ok(&r, 200).as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn an_expired_key_is_refused_even_while_cached() {
    let app = TestApp::builder()
        .manual_clock()
        .api_key_cache(Duration::from_secs(300))
        .spawn()
        .await;
    let before = auth_failures(&app, "expired").await;
    let expires = app.now().plus_millis(1_500);
    let created = app
        .create_key_with(&json!({ "name": "short-lived", "scopes": "read",
                                  "expires_at": expires.rfc3339() }))
        .await;
    assert_eq!(created["expires_at"], expires.rfc3339());
    assert_eq!(created["status"], "active");
    let key = created["key"].as_str().unwrap().to_owned();
    assert_ok(&app.with_key(&key).get("/v2/services").await, 200);

    // Valid up to its expiry, refused from then on, though the verified key is still cached.
    app.advance(Duration::from_millis(1_499));
    assert_ok(&app.with_key(&key).get("/v2/services").await, 200);
    app.advance(Duration::from_millis(1));
    let r = app.with_key(&key).get("/v2/services").await;
    assert_unauthorized(&r, "API key has expired.");
    assert!(auth_failures(&app, "expired").await >= before + 1.0);

    let keys = assert_ok(&app.admin().get("/v2/api-keys").await, 200);
    assert_eq!(keys[0]["status"], "expired");

    let past = app.now().plus_millis(-1_000).rfc3339();
    let r = app
        .admin()
        .post_json(
            "/v2/api-keys",
            &json!({ "name": "stale", "scopes": ["read"], "expires_at": past }),
        )
        .await;
    assert_error(&r, 400, "expires_at must be in the future.");
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_despite_a_long_cache() {
    let app = TestApp::builder()
        .api_key_cache(Duration::from_secs(300))
        .spawn()
        .await;
    let before = auth_failures(&app, "revoked").await;
    let created = app
        .create_key_with(&json!({ "name": "leaked", "scopes": ["write"] }))
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_ok(&app.with_key(&key).get("/v2/services").await, 200);

    let r = app.admin().delete(&format!("/v2/api-keys/{id}")).await;
    let v = assert_ok(&r, 200);
    assert_eq!(v["id"], id.as_str());
    let r = app.with_key(&key).get("/v2/services").await;
    assert_unauthorized(&r, "API key has been revoked.");
    assert!(auth_failures(&app, "revoked").await >= before + 1.0);

    assert_error(
        &app.admin().delete(&format!("/v2/api-keys/{id}")).await,
        404,
        &format!("No active API key with id {id}."),
    );
    assert_error(
        &app.admin().delete("/v2/api-keys/000000000000").await,
        404,
        "No active API key with id 000000000000.",
    );
    let keys = assert_ok(&app.admin().get("/v2/api-keys").await, 200);
    assert_eq!(keys[0]["status"], "revoked");
    assert!(keys[0]["revoked_at"].is_string());
    let audit = assert_ok(
        &app.admin()
            .get("/v2/audit-logs?action_type=api_key_revoked")
            .await,
        200,
    );
    assert_eq!(audit["total_count"], 1);
    assert_eq!(audit["entries"][0]["details"]["key_id"], id.as_str());
}

#[tokio::test]
async fn anonymous_heartbeats_are_off_by_default_and_v1_follows_the_switch() {
    let closed = TestApp::spawn().await;
    let open = TestApp::builder().anonymous(true).spawn().await;
    for app in [&closed, &open] {
        app.register("legacy", 5).await;
    }
    let beat = json!({ "heartbeat_name": "legacy", "status": "UP" });
    let v1: [(Method, &str, Option<Value>, u16); 8] = [
        (Method::POST, "/heartbeat", Some(beat.clone()), 201),
        (Method::GET, "/heartbeat", None, 200),
        (
            Method::POST,
            "/service",
            Some(json!({ "heartbeat_name": "new", "service_name": "s", "alert_interval": 1 })),
            201,
        ),
        (Method::GET, "/service", None, 200),
        (Method::GET, "/service/legacy", None, 200),
        (Method::GET, "/alerts", None, 200),
        (Method::POST, "/v2/heartbeat/1/start", None, 201),
        (Method::POST, "/v2/heartbeat/1/complete", None, 201),
    ];
    for (method, path, body, _) in &v1 {
        let mut rb = closed.anon().request(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        assert_unauthorized(&send(rb).await, NEED_KEY);
    }
    for (method, path, body, status) in &v1 {
        let mut rb = open.anon().request(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        assert_ok(&send(rb).await, *status);
    }
    // Changing an existing service needs a key even when anonymous heartbeats are on.
    for app in [&closed, &open] {
        let r = app
            .anon()
            .post_json("/service/legacy", &json!({ "team": "ops" }))
            .await;
        assert_unauthorized(&r, NEED_KEY);
    }
    // Nothing reached the closed server's database; a key still works there.
    let r = closed.admin().get("/heartbeat").await;
    assert_eq!(assert_ok(&r, 200), json!([]));
    assert_eq!(
        assert_ok(&closed.admin().get("/service/legacy").await, 200)[0]["team"],
        "site-reliability"
    );
    let key = closed.create_key(&["write"]).await;
    assert_ok(
        &closed.with_key(&key).post_json("/heartbeat", &beat).await,
        201,
    );
    // Open routes stay open either way; v2 management stays closed either way.
    assert_eq!(
        closed.get("/v1/healthcheck/network").await.status.as_u16(),
        204
    );
    assert_eq!(closed.get("/health/live").await.status.as_u16(), 200);
    assert_unauthorized(&open.get("/v2/services").await, NEED_KEY);
}

#[tokio::test]
async fn api_keys_show_the_secret_once_and_never_in_the_list() {
    let app = TestApp::spawn().await;
    let r = app
        .admin()
        .post_json(
            "/v2/api-keys",
            &json!({ "name": "ci-deployer", "scopes": "read,write", "tier": "standard" }),
        )
        .await;
    let v = crate::support::assert_envelope(&r, 201, true);
    assert_eq!(
        v["message"],
        "API key created. Store it now: it is not shown again."
    );
    let k = &v["results"];
    let id = k["id"].as_str().unwrap();
    let secret = k["key"].as_str().unwrap();
    assert!(secret.starts_with(&format!("mdk_{id}_")), "{secret}");
    assert_eq!(k["name"], "ci-deployer");
    assert_eq!(k["scopes"], json!(["read", "write"]));
    assert_eq!(k["status"], "active");
    assert_eq!(k["created_by"], "bootstrap-admin");
    assert_eq!(k["rate_limit_per_minute"], 1000);
    assert_eq!(k["expires_at"], Value::Null);

    let r = app.admin().get("/v2/api-keys").await;
    let list = assert_ok(&r, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["id"], id);
    assert!(list[0].get("key").is_none());
    assert!(
        !r.body.contains(secret.split('_').nth(2).unwrap()),
        "the secret leaked into the list"
    );
    assert_ok(&app.with_key(secret).get("/v2/services").await, 200);

    for (body, message) in [
        (
            json!({ "name": "", "scopes": ["read"] }),
            "name must be 1 to 255 printable characters.",
        ),
        (
            json!({ "name": "x", "scopes": ["root"] }),
            "scopes: unknown scope",
        ),
        (json!({ "name": "x", "scopes": [] }), "scopes"),
        (
            json!({ "name": "x", "scopes": ["read"], "tier": "gold" }),
            "tier must be one of basic, standard, premium.",
        ),
        (
            json!({ "name": "x", "scopes": ["read"], "rate_limit_per_minute": 0 }),
            "rate_limit_per_minute must be positive.",
        ),
        (json!({ "name": "x" }), "Invalid request body"),
        (
            json!({ "name": "x", "scopes": ["read"], "owner": "me" }),
            "unknown field",
        ),
    ] {
        let r = app.admin().post_json("/v2/api-keys", &body).await;
        assert_error_contains(&r, 400, message);
    }
    assert_eq!(
        assert_ok(&app.admin().get("/v2/api-keys").await, 200)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let audit = assert_ok(
        &app.admin()
            .get("/v2/audit-logs?action_type=api_key_created")
            .await,
        200,
    );
    assert_eq!(audit["total_count"], 1);
}
