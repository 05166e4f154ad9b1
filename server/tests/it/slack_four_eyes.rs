//! Four-eyes across keys and Slack: a key owner linked to their Slack user id (`medic-server
//! api-key link-slack`, a real process on the server's database) cannot approve through the
//! signed Slack buttons what one of their keys requested, nor through another of their keys
//! what they requested; an unlinked Slack user and another owner can. Unlinking is audited.

use std::process::Command;

use hmac::{KeyInit, Mac};
use medic_server::engine::StartRequest;
use medic_server::playbook::plan::content_sha256;
use medic_server::store::{AuditFilter, ExecutionTrigger, PageRequest, PinnedVersion};
use serde_json::{Value, json};

use crate::support::{TestApp, assert_error_contains, assert_ok, key_for_owner};
use crate::support_recorder::Recorder;

const SECRET: &str = "slack-signing-secret";

/// A playbook that waits for approval, then calls `url`.
fn guarded(url: &str) -> String {
    format!(
        "name: guarded\napproval: required\nsteps:\n  - name: call\n    type: webhook\n    url: {url}\n"
    )
}

async fn start(app: &TestApp, yaml: &str, requested_by: &str) -> i64 {
    let request = StartRequest {
        pinned: PinnedVersion {
            playbook_id: 1,
            name: "guarded".to_owned(),
            version: 1,
            sha256: content_sha256(yaml),
            source: yaml.to_owned(),
        },
        service_id: None,
        alert_id: None,
        trigger: ExecutionTrigger::Manual,
        requested_by: Some(requested_by.to_owned()),
        requester_key: None,
        actor: None,
        variables: serde_json::Map::new(),
    };
    let started = app.engine().start(request).await.expect("started");
    started.id
}

/// A button press by the Slack user `user`, signed as Slack signs it.
async fn press(app: &TestApp, action: &str, id: i64, user: &str) -> crate::support::Reply {
    let payload = json!({"type": "block_actions", "user": {"id": user, "username": user},
        "actions": [{"action_id": action, "value": id.to_string()}]});
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let rb = app
        .client
        .post(app.url("/v2/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            format!("v0={}", hex::encode(mac.finalize().into_bytes())),
        )
        .body(body);
    crate::support::send(rb).await
}

/// `medic-server api-key <args>` on the test server's database: (success, stderr).
fn api_key_command(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medic-server"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MEDIC_LOG_FORMAT", "text")
        .env("DATABASE_URL", app.config.database_url.expose())
        .arg("api-key")
        .args(args)
        .output()
        .expect("medic-server runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn status(app: &TestApp, id: i64) -> Value {
    let r = app.admin().get(&format!("/v2/executions/{id}")).await;
    assert_ok(&r, 200)["status"].clone()
}

fn key_id(key: &str) -> &str {
    key.split('_').nth(1).expect("key id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_user_linked_to_an_owner_is_that_owner_for_four_eyes() {
    let app = TestApp::builder()
        .configure(|c| {
            c.slack_signing_secret = Some(SECRET.parse().expect("secret"));
            c.notify.allow_private_webhook_targets = true;
            c.playbook.allow_private_targets = true;
        })
        .spawn()
        .await;
    let rec = Recorder::start().await;
    let yaml = guarded(&rec.url("/x"));
    let store = app.store().await;
    let alice = key_for_owner(&*store, "alice", &["write"]).await;
    let alice_again = key_for_owner(&*store, "alice", &["admin"]).await;
    let bob = key_for_owner(&*store, "bob", &["write"]).await;

    // Linking: a bad id and an unknown owner are refused; alice is linked to UALICE.
    let (ok, err) = api_key_command(
        &app,
        &["link-slack", "--owner", "alice", "--slack-user-id", "U 1"],
    );
    assert!(!ok && err.contains("--slack-user-id"), "{err}");
    let (ok, err) = api_key_command(
        &app,
        &["link-slack", "--owner", "nobody", "--slack-user-id", "U1"],
    );
    assert!(!ok && err.contains("nobody"), "{err}");
    let (ok, err) = api_key_command(
        &app,
        &[
            "link-slack",
            "--owner",
            "alice",
            "--slack-user-id",
            "UALICE",
        ],
    );
    assert!(ok, "{err}");
    // One Slack user is one person: bob cannot be linked to alice's Slack user.
    let (ok, err) = api_key_command(
        &app,
        &["link-slack", "--owner", "bob", "--slack-user-id", "UALICE"],
    );
    assert!(!ok && err.contains("already linked"), "{err}");

    // Requested with alice's key: alice cannot approve in Slack, nor with her other key.
    let id = start(&app, &yaml, &format!("key:{}", key_id(&alice))).await;
    assert_eq!(status(&app, id).await, "pending_approval");
    let r = press(&app, "approve_playbook", id, "UALICE").await;
    assert_error_contains(&r, 403, "cannot approve");
    let r = app
        .with_key(&alice_again)
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_error_contains(&r, 403, "cannot approve");
    assert_eq!(status(&app, id).await, "pending_approval");
    assert!(rec.requests().is_empty());
    // Another person can, in Slack.
    let r = press(&app, "approve_playbook", id, "UBOB").await;
    let approved = assert_ok(&r, 200);
    assert_eq!(approved["approval"]["by"], "slack:UBOB");

    // Requested by alice in Slack: her keys cannot approve it; bob's key can.
    let id = start(&app, &yaml, "slack:UALICE").await;
    let r = app
        .with_key(&alice)
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_error_contains(&r, 403, "cannot approve");
    let r = app
        .with_key(&bob)
        .post(&format!("/v2/executions/{id}/approve"))
        .await;
    assert_eq!(assert_ok(&r, 200)["approval"]["outcome"], "approved");

    // Rejecting is not approving: alice may withdraw her own request from Slack.
    let id = start(&app, &yaml, &format!("key:{}", key_id(&alice))).await;
    let r = press(&app, "reject_playbook", id, "UALICE").await;
    assert_eq!(assert_ok(&r, 200)["status"], "cancelled");

    // Unlinked, alice's Slack user is nobody's: the link is what four-eyes goes by.
    let (ok, err) = api_key_command(&app, &["link-slack", "--owner", "alice", "--unlink"]);
    assert!(ok, "{err}");
    let id = start(&app, &yaml, &format!("key:{}", key_id(&alice))).await;
    let r = press(&app, "approve_playbook", id, "UALICE").await;
    assert_ok(&r, 200);

    // Both changes are in the audit log, with the Slack user ids.
    let page = PageRequest {
        limit: 100,
        offset: 0,
    };
    let entries = store
        .list_audit(&AuditFilter::default(), page)
        .await
        .expect("audit")
        .entries;
    let links: Vec<_> = entries
        .iter()
        .filter(|e| e.action_type == "key_owner_slack_user_linked")
        .map(|e| (e.details["slack_user_id"].clone(), e.actor.clone()))
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.contains(&(
        json!("UALICE"),
        "medic-server api-key link-slack".to_owned()
    )));
    assert!(links.contains(&(Value::Null, "medic-server api-key link-slack".to_owned())));
}
