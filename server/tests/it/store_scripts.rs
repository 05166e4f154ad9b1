//! Store conformance for registered scripts and their versions (SQLite always, PostgreSQL when
//! configured). Every check runs once per backend.

use medic_server::domain::{ApiKeyId, OwnerId, Timestamp};
use medic_server::store::*;

conformance! {
    scripts_versions_and_same_hash_no_op,
    scripts_list_filters_and_paging,
    scripts_decide_transitions,
    scripts_same_key_may_not_decide,
}

const T0: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// In these checks each key is its own owner; the bootstrap key's owner is `bootstrap`.
fn owner(key: Option<&str>) -> OwnerId {
    key.map_or_else(OwnerId::bootstrap, |k| OwnerId(k.into()))
}

fn new_version(name: &str, content: &str, n: u8, key: Option<&str>) -> NewScriptVersion {
    NewScriptVersion {
        name: name.into(),
        interpreter: Interpreter::Bash,
        content: content.into(),
        sha256: hash(n),
        description: Some("restart it".into()),
        created_by: "alice".into(),
        created_by_key: key.map(|k| ApiKeyId(k.into())),
        created_by_owner: owner(key),
        at: t(i64::from(n)),
        audit: Some(NewAuditEntry {
            on_behalf_of: None,
            action_type: "script_registered".into(),
            actor: "alice".into(),
            service_id: None,
            execution_id: None,
            details: serde_json::json!({ "name": name }),
            at: t(i64::from(n)),
        }),
    }
}

/// The audit entries of one action, oldest first.
async fn audited(store: &dyn Store, action: &str) -> Vec<serde_json::Value> {
    crate::db::audit_log(store, Some(action))
        .await
        .into_iter()
        .map(|e| e.details)
        .collect()
}

async fn register(store: &dyn Store, new: &NewScriptVersion) -> ScriptVersion {
    match store.register_script_version(new).await.unwrap() {
        RegisterOutcome::Created { version, .. } => version,
        other => panic!("expected a new version, got {other:?}"),
    }
}

fn decision(decision: Decision, key: Option<&str>, at: i64) -> ScriptDecision {
    ScriptDecision {
        decision,
        actor: "bob".into(),
        key_id: key.map(|k| ApiKeyId(k.into())),
        owner_id: owner(key),
        reason: Some("looks fine".into()),
        at: t(at),
        audit: Some(NewAuditEntry {
            on_behalf_of: None,
            action_type: "script_decided".into(),
            actor: "bob".into(),
            service_id: None,
            execution_id: None,
            details: serde_json::json!({ "decision": format!("{decision:?}") }),
            at: t(at),
        }),
    }
}

async fn scripts_versions_and_same_hash_no_op(store: &dyn Store) {
    let v1 = register(
        store,
        &new_version("restart-nginx", "echo 1", 1, Some("k1")),
    )
    .await;
    assert_eq!(v1.version, 1);
    assert_eq!(v1.status, ScriptStatus::Pending);
    assert_eq!(v1.interpreter, Interpreter::Bash);
    assert_eq!(v1.sha256, hash(1));
    assert_eq!(v1.created_by_key, Some(ApiKeyId("k1".into())));
    assert_eq!(v1.created_at, t(1));
    assert_eq!(v1.decided_at, None);

    // Same content hash as the latest: the existing version, nothing written.
    let again = new_version("Restart-Nginx", "echo 1", 1, Some("k2"));
    match store.register_script_version(&again).await.unwrap() {
        RegisterOutcome::Unchanged { name, version } => {
            assert_eq!(name, "restart-nginx");
            assert_eq!(version, v1);
        }
        other => panic!("expected unchanged, got {other:?}"),
    }

    // New content (name matched case-insensitively): the next version.
    let v2 = register(store, &new_version("RESTART-NGINX", "echo 2", 2, None)).await;
    assert_eq!((v2.script_id, v2.version), (v1.script_id, 2));
    // Each new version was audited in its own transaction, with its id and number; the
    // unchanged registration was not.
    let registered = audited(store, "script_registered").await;
    assert_eq!(registered.len(), 2, "{registered:#?}");
    assert_eq!(registered[0]["script_id"], serde_json::json!(v1.script_id));
    assert_eq!(registered[0]["version"], 1);
    assert_eq!(registered[1]["version"], 2);
    assert_eq!(registered[1]["name"], "RESTART-NGINX");
    assert_eq!(v2.created_by_key, None);
    // Back to the first content: still a new version, since only the latest is compared.
    let v3 = register(
        store,
        &new_version("restart-nginx", "echo 1", 1, Some("k1")),
    )
    .await;
    assert_eq!(v3.version, 3);

    let s = store.get_script(v1.script_id).await.unwrap().unwrap();
    assert_eq!(s.name, "restart-nginx");
    assert_eq!(s.created_at, t(1));
    assert_eq!(
        s.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(s.versions[1].content, "echo 2");
    assert_eq!(
        store.get_script_version(v1.script_id, 2).await.unwrap(),
        Some(v2)
    );
    assert_eq!(
        store.get_script_version(v1.script_id, 9).await.unwrap(),
        None
    );
    assert_eq!(store.get_script(ScriptId(9_999)).await.unwrap(), None);

    let other = register(store, &new_version("clear-cache", "echo 1", 1, None)).await;
    assert_ne!(other.script_id, v1.script_id);
    assert_eq!(other.version, 1);
}

async fn scripts_list_filters_and_paging(store: &dyn Store) {
    let a = register(store, &new_version("alpha.sh", "a", 1, Some("k1"))).await;
    let b = register(store, &new_version("beta_50%", "b", 2, Some("k1"))).await;
    let c = register(store, &new_version("gamma", "c", 3, Some("k1"))).await;
    let b2 = register(store, &new_version("beta_50%", "b2", 4, Some("k1"))).await;
    store
        .decide_script_version(a.id, &decision(Decision::Approve, Some("k2"), 10))
        .await
        .unwrap();
    store
        .decide_script_version(b.id, &decision(Decision::Approve, Some("k2"), 10))
        .await
        .unwrap();

    let all = store
        .list_scripts(
            &ScriptFilter::default(),
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(all.total_count, 3);
    let names: Vec<_> = all.entries.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["alpha.sh", "beta_50%", "gamma"]);
    // Only the latest version of each.
    assert!(all.entries.iter().all(|s| s.versions.len() == 1));
    assert_eq!(all.entries[1].versions[0], b2);

    // Status of the latest version: beta's latest (v2) is pending although v1 is approved.
    let approved = store
        .list_scripts(
            &ScriptFilter {
                status: Some(ScriptStatus::Approved),
                ..Default::default()
            },
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(approved.total_count, 1);
    assert_eq!(approved.entries[0].id, a.script_id);
    let pending = store
        .list_scripts(
            &ScriptFilter {
                status: Some(ScriptStatus::Pending),
                ..Default::default()
            },
            PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap();
    let ids: Vec<_> = pending.entries.iter().map(|s| s.id).collect();
    assert_eq!(ids, [b.script_id, c.script_id]);

    // Name contains, case-insensitively, with LIKE wildcards taken literally.
    for (needle, expect) in [("ALPHA", 1), ("_50%", 1), ("%", 1), ("a", 3), ("zzz", 0)] {
        let found = store
            .list_scripts(
                &ScriptFilter {
                    name_contains: Some(needle.into()),
                    ..Default::default()
                },
                PageRequest {
                    limit: 10,
                    offset: 0,
                },
            )
            .await
            .unwrap();
        assert_eq!(found.total_count, expect, "name contains {needle:?}");
    }

    let page = store
        .list_scripts(
            &ScriptFilter::default(),
            PageRequest {
                limit: 1,
                offset: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total_count, 3);
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].id, b.script_id);
}

async fn scripts_decide_transitions(store: &dyn Store) {
    let v1 = register(store, &new_version("fix", "one", 1, Some("k1"))).await;
    let v2 = register(store, &new_version("fix", "two", 2, Some("k1"))).await;

    let approved = match store
        .decide_script_version(v1.id, &decision(Decision::Approve, Some("k2"), 100))
        .await
        .unwrap()
    {
        DecideOutcome::Decided(v) => v,
        other => panic!("expected decided, got {other:?}"),
    };
    assert_eq!(approved.status, ScriptStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("bob"));
    assert_eq!(approved.decided_by_key, Some(ApiKeyId("k2".into())));
    assert_eq!(approved.decided_at, Some(t(100)));
    assert_eq!(approved.decision_reason.as_deref(), Some("looks fine"));

    // Decided once: neither a second approval nor a rejection changes it.
    for d in [Decision::Approve, Decision::Reject] {
        match store
            .decide_script_version(v1.id, &decision(d, Some("k3"), 200))
            .await
            .unwrap()
        {
            DecideOutcome::AlreadyDecided(v) => assert_eq!(v, approved),
            other => panic!("expected already decided, got {other:?}"),
        }
    }

    // The bootstrap key (no key id) may decide a version registered by a stored key.
    let rejected = match store
        .decide_script_version(v2.id, &decision(Decision::Reject, None, 300))
        .await
        .unwrap()
    {
        DecideOutcome::Decided(v) => v,
        other => panic!("expected decided, got {other:?}"),
    };
    assert_eq!(rejected.status, ScriptStatus::Rejected);
    assert_eq!(rejected.decided_by_key, None);
    assert_eq!(rejected.decided_at, Some(t(300)));

    assert_eq!(
        store
            .decide_script_version(999_999, &decision(Decision::Approve, Some("k2"), 1))
            .await
            .unwrap(),
        DecideOutcome::NotFound
    );
    let s = store.get_script(v1.script_id).await.unwrap().unwrap();
    assert_eq!(s.versions, vec![approved, rejected]);
    // Only the two decisions made were audited, each with its decision.
    let decided = audited(store, "script_decided").await;
    assert_eq!(
        decided,
        [
            serde_json::json!({ "decision": "Approve" }),
            serde_json::json!({ "decision": "Reject" })
        ]
    );
}

async fn scripts_same_key_may_not_decide(store: &dyn Store) {
    let by_key = register(store, &new_version("a", "one", 1, Some("k1"))).await;
    let by_bootstrap = register(store, &new_version("b", "one", 1, None)).await;
    for d in [Decision::Approve, Decision::Reject] {
        assert_eq!(
            store
                .decide_script_version(by_key.id, &decision(d, Some("k1"), 5))
                .await
                .unwrap(),
            DecideOutcome::SameOwner
        );
        // The bootstrap key counts as one key of its own.
        assert_eq!(
            store
                .decide_script_version(by_bootstrap.id, &decision(d, None, 5))
                .await
                .unwrap(),
            DecideOutcome::SameOwner
        );
    }
    assert_eq!(
        store.get_script_version(by_key.script_id, 1).await.unwrap(),
        Some(by_key.clone())
    );
    assert!(audited(store, "script_decided").await.is_empty());
    assert!(matches!(
        store
            .decide_script_version(by_bootstrap.id, &decision(Decision::Approve, Some("k1"), 6))
            .await
            .unwrap(),
        DecideOutcome::Decided(_)
    ));
}
