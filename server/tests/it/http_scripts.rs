//! The v2 scripts API: registration and versions, validation with the protocol's rules, and
//! approval by an admin key other than the registering one.

use medic_protocol::MAX_SCRIPT_BYTES;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestApp, assert_error, assert_error_contains, assert_ok};

const SAME_KEY: &str = "This script version was registered with a key of the same owner; \
    another person's admin key must approve or reject it (keys created through the API belong to \
    their creator's owner).";

fn body(name: &str, content: &str) -> Value {
    json!({ "name": name, "interpreter": "bash", "content": content, "description": "restart" })
}

fn sha(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

async fn audit(app: &TestApp, action: &str) -> Vec<Value> {
    let r = app
        .admin()
        .get(&format!("/v2/audit-logs?action_type={action}"))
        .await;
    assert_ok(&r, 200)["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn register_versions_and_fetch() {
    let app = TestApp::spawn().await;
    let writer = app.create_key(&["write"]).await;
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &body("restart-nginx", "systemctl restart nginx\n"),
        )
        .await;
    let created = assert_ok(&r, 201);
    let id = created["script_id"].as_i64().unwrap();
    assert_eq!(created["name"], "restart-nginx");
    assert_eq!(created["version"], 1);
    assert_eq!(created["status"], "pending");
    assert_eq!(created["sha256"], sha("systemctl restart nginx\n"));

    // Same content again (any case of the name): 200 with the existing version.
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &body("Restart-NGINX", "systemctl restart nginx\n"),
        )
        .await;
    assert_eq!(assert_ok(&r, 200), created);

    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &json!({ "name": "restart-nginx", "interpreter": "sh", "content": "echo 2" }),
        )
        .await;
    let v2 = assert_ok(&r, 201);
    assert_eq!(
        (v2["script_id"].as_i64(), v2["version"].as_i64()),
        (Some(id), Some(2))
    );

    let r = app
        .with_key(&writer)
        .get(&format!("/v2/scripts/{id}"))
        .await;
    let s = assert_ok(&r, 200);
    assert_eq!(s["name"], "restart-nginx");
    let versions = s["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["content"], "systemctl restart nginx\n");
    assert_eq!(versions[0]["description"], "restart");
    assert_eq!(versions[1]["interpreter"], "sh");
    assert_eq!(versions[1]["content"], "echo 2");
    assert!(versions[1]["created_by_key"].is_string());

    let r = app.with_key(&writer).get("/v2/scripts?name=NGINX").await;
    let page = assert_ok(&r, 200);
    assert_eq!(page["total_count"], 1);
    assert_eq!(page["entries"][0]["latest_version"]["version"], 2);
    assert!(
        page["entries"][0]["latest_version"]
            .get("content")
            .is_none()
    );
    let r = app
        .with_key(&writer)
        .get("/v2/scripts?status=approved")
        .await;
    assert_eq!(assert_ok(&r, 200)["total_count"], 0);
    let r = app.with_key(&writer).get("/v2/scripts?status=bogus").await;
    assert_error_contains(&r, 400, "status");

    let r = app.admin().get("/v2/scripts/999").await;
    assert_error(&r, 404, "Script 999 was not found.");

    let entries = audit(&app, "script_registered").await;
    assert_eq!(entries.len(), 2, "no entry for the unchanged registration");
    assert!(
        entries[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("it-write")
    );
}

#[tokio::test]
async fn registration_is_validated() {
    let app = TestApp::spawn().await;
    let post = |b: Value| {
        let app = &app;
        async move { app.admin().post_json("/v2/scripts", &b).await }
    };
    for bad in [
        "../etc/passwd",
        "a/b",
        "..",
        ".hidden",
        "-rf",
        "",
        "with space",
    ] {
        let r = post(body(bad, "echo")).await;
        assert_error_contains(&r, 400, "name");
    }
    let r = post(json!({ "name": "x", "interpreter": "perl", "content": "1" })).await;
    assert_error(&r, 400, "interpreter must be bash, sh or python3.");
    let r = post(body("x", "echo \u{0} hi")).await;
    assert_error(
        &r,
        400,
        "Invalid request body: content must not contain control characters.",
    );
    let r = post(body("x", "  ")).await;
    assert_error(&r, 400, "content must not be empty.");
    let r = post(body("x", &"#".repeat(MAX_SCRIPT_BYTES + 1))).await;
    assert_error_contains(&r, 413, "content is longer than");
    let r = post(body("x", &"#".repeat(MAX_SCRIPT_BYTES))).await;
    assert_ok(&r, 201);
    let r = post(json!({ "name": "y", "interpreter": "sh", "content": "1", "extra": 1 })).await;
    assert_eq!(r.status, 400);

    // Scopes: reading needs read, registering write.
    let reader = app.create_key(&["read"]).await;
    let r = app
        .with_key(&reader)
        .post_json("/v2/scripts", &body("z", "echo"))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(app.anon().get("/v2/scripts").await.status, 401);
    assert_ok(&app.with_key(&reader).get("/v2/scripts").await, 200);
}

#[tokio::test]
async fn approval_needs_admin_and_another_key() {
    let app = TestApp::spawn().await;
    let admin_a = app.create_key_for("alice", &["admin"]).await;
    let admin_b = app.create_key_for("bob", &["admin"]).await;
    let writer = app.create_key_for("carol", &["write"]).await;

    let r = app
        .with_key(&admin_a)
        .post_json("/v2/scripts", &body("fix", "echo 1"))
        .await;
    let id = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    let approve = format!("/v2/scripts/{id}/versions/1/approve");

    // Write scope is not enough.
    let r = app.with_key(&writer).post_json(&approve, &json!({})).await;
    assert_eq!(r.status, 403);
    // The registering key may not decide its own version.
    let r = app.with_key(&admin_a).post_json(&approve, &json!({})).await;
    assert_error(&r, 403, SAME_KEY);
    let r = app
        .with_key(&admin_a)
        .post(&format!("/v2/scripts/{id}/reject"))
        .await;
    assert_error(&r, 403, SAME_KEY);

    let r = app
        .with_key(&admin_b)
        .post_json(&approve, &json!({ "reason": "reviewed" }))
        .await;
    let v = assert_ok(&r, 200);
    assert_eq!(v["status"], "approved");
    assert_eq!(v["decision_reason"], "reviewed");
    assert_eq!(v["name"], "fix");
    let r = app.with_key(&admin_b).post(&approve).await;
    assert_error(&r, 409, "Version 1 of script fix is already approved.");

    let r = app
        .with_key(&admin_b)
        .post(&format!("/v2/scripts/{id}/versions/7/approve"))
        .await;
    assert_error(&r, 404, &format!("Script {id} has no version 7."));
    let r = app
        .with_key(&admin_b)
        .post(&format!("/v2/scripts/{id}/versions/x/approve"))
        .await;
    assert_error(&r, 400, "version must be a positive integer.");

    // The bootstrap key is a key of its own: it may not decide what it registered, but may
    // decide what another key registered.
    let r = app
        .admin()
        .post_json("/v2/scripts", &body("fix", "echo 2"))
        .await;
    assert_eq!(assert_ok(&r, 201)["version"], 2);
    let r = app.admin().post(&format!("/v2/scripts/{id}/reject")).await;
    assert_error(&r, 403, SAME_KEY);
    let r = app
        .with_key(&admin_a)
        .post_json(
            &format!("/v2/scripts/{id}/reject"),
            &json!({ "reason": "no" }),
        )
        .await;
    assert_eq!(assert_ok(&r, 200)["status"], "rejected");

    let r = app
        .with_key(&writer)
        .post_json("/v2/scripts", &body("other", "echo"))
        .await;
    let other = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    let r = app
        .admin()
        .post(&format!("/v2/scripts/{other}/approve"))
        .await;
    assert_eq!(assert_ok(&r, 200)["version"], 1);

    let approved = audit(&app, "script_approved").await;
    assert_eq!(approved.len(), 2);
    let rejected = audit(&app, "script_rejected").await;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["details"]["reason"], "no");
    assert_eq!(rejected[0]["details"]["version"], 2);
    assert!(rejected[0]["timestamp"].is_string());
}
