//! Store conformance for playbooks, their versions and sealed secrets (SQLite always,
//! PostgreSQL when configured). Every check runs once per backend.

use medic_server::domain::{ApiKeyId, PlaybookId, Timestamp};
use medic_server::playbook::secrets::{Keyring, Sealed, SecretValue, SecretsKey};
use medic_server::server::{StartError, check_secrets, rotate_secrets};
use medic_server::store::*;

conformance! {
    playbooks_versions_and_same_hash_no_op,
    playbooks_names_are_unique_case_insensitively,
    playbooks_list_filters_and_paging,
    playbooks_disable_and_restore,
    playbook_versions_are_immutable(db),
    playbooks_concurrent_writers_number_versions_once,
    secrets_put_list_delete,
    secrets_rotation_is_all_or_nothing,
    secrets_rotation_and_start_up_check_with_real_keys,
}

const T0: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

fn t(offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(T0 + offset_ms)
}

fn doc(name: &str, n: u8) -> NewPlaybookVersion {
    let source =
        format!("name: {name}\nsteps:\n  - name: pause\n    type: wait\n    duration: {n}s\n");
    NewPlaybookVersion {
        name: name.into(),
        description: Some(format!("revision {n}")),
        sha256: medic_server::playbook::plan::content_sha256(&source),
        source,
        author: "alice".into(),
        author_key: Some(ApiKeyId("0123456789ab".into())),
        at: t(i64::from(n) * 1000),
    }
}

fn audit_version(action: &'static str) -> impl Fn(&PlaybookVersion) -> NewAuditEntry + Sync {
    move |v: &PlaybookVersion| NewAuditEntry {
        action_type: action.into(),
        on_behalf_of: None,
        actor: v.author.clone(),
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "playbook_id": v.playbook_id.0, "version": v.version }),
        at: v.created_at,
    }
}

fn audit_record(action: &'static str) -> impl Fn(&PlaybookRecord) -> NewAuditEntry + Sync {
    move |r: &PlaybookRecord| NewAuditEntry {
        action_type: action.into(),
        on_behalf_of: None,
        actor: "bob".into(),
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "playbook_id": r.id.0, "enabled": r.enabled }),
        at: r.updated_at,
    }
}

async fn audited(store: &dyn Store, action: &str) -> Vec<serde_json::Value> {
    crate::db::audit_log(store, Some(action))
        .await
        .into_iter()
        .map(|e| e.details)
        .collect()
}

async fn create(store: &dyn Store, new: &NewPlaybookVersion) -> PlaybookVersion {
    match store
        .create_playbook(new, &audit_version("playbook_created"))
        .await
        .unwrap()
    {
        CreatePlaybookOutcome::Created(v) => v,
        other => panic!("expected a new playbook, got {other:?}"),
    }
}

async fn add(store: &dyn Store, id: PlaybookId, new: &NewPlaybookVersion) -> AddVersionOutcome {
    store
        .add_playbook_version(id, new, &audit_version("playbook_version_added"))
        .await
        .unwrap()
}

async fn playbooks_versions_and_same_hash_no_op(store: &dyn Store) {
    let first = doc("restart-api", 1);
    let v1 = create(store, &first).await;
    assert_eq!(v1.version, 1);
    assert_eq!(v1.name, "restart-api");
    assert_eq!(v1.source, first.source);
    assert_eq!(v1.sha256, first.sha256);
    assert_eq!(v1.author, "alice");
    assert_eq!(v1.author_key, Some(ApiKeyId("0123456789ab".into())));
    assert_eq!(v1.created_at, first.at);
    assert!(v1.enabled);
    let id = v1.playbook_id;
    assert_eq!(
        audited(store, "playbook_created").await,
        vec![serde_json::json!({ "playbook_id": id.0, "version": 1 })]
    );

    // Same text as the current version: nothing written.
    match add(store, id, &first).await {
        AddVersionOutcome::Unchanged(v) => assert_eq!(v, v1),
        other => panic!("{other:?}"),
    }
    assert!(audited(store, "playbook_version_added").await.is_empty());

    // New text (also a rename): the next version, now current.
    let mut second = doc("restart-api-v2", 2);
    second.author = "carol".into();
    second.author_key = None;
    let v2 = match add(store, id, &second).await {
        AddVersionOutcome::Created(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!((v2.version, v2.name.as_str()), (2, "restart-api-v2"));
    assert_eq!(v2.author_key, None);
    assert_eq!(
        audited(store, "playbook_version_added").await,
        vec![serde_json::json!({ "playbook_id": id.0, "version": 2 })]
    );

    let p = store.get_playbook(id).await.unwrap().expect("playbook");
    assert_eq!(p.record.name, "restart-api-v2");
    assert_eq!(p.record.description.as_deref(), Some("revision 2"));
    assert_eq!(p.record.current_version, 2);
    assert_eq!(p.record.sha256, second.sha256);
    assert_eq!(p.record.created_at, first.at);
    assert_eq!(p.record.updated_at, second.at);
    assert_eq!(p.current, v2);
    let history: Vec<(i32, &str, &str)> = p
        .versions
        .iter()
        .map(|v| (v.version, v.sha256.as_str(), v.author.as_str()))
        .collect();
    assert_eq!(
        history,
        vec![
            (1, first.sha256.as_str(), "alice"),
            (2, second.sha256.as_str(), "carol")
        ]
    );

    // Old versions stay readable, byte for byte: what a pinned execution reloads.
    assert_eq!(store.get_playbook_version(id, 1).await.unwrap(), Some(v1));
    assert_eq!(
        store.current_playbook_version(id).await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(store.get_playbook_version(id, 3).await.unwrap(), None);

    // Going back to the first text is a new version, not a rewind.
    match add(store, id, &first).await {
        AddVersionOutcome::Created(v) => {
            assert_eq!(v.version, 3);
            assert_eq!(v.sha256, first.sha256);
        }
        other => panic!("{other:?}"),
    }

    let missing = PlaybookId(id.0 + 1000);
    assert_eq!(
        add(store, missing, &second).await,
        AddVersionOutcome::NotFound
    );
    assert_eq!(store.get_playbook(missing).await.unwrap(), None);
    assert_eq!(store.current_playbook_version(missing).await.unwrap(), None);
}

async fn playbooks_names_are_unique_case_insensitively(store: &dyn Store) {
    let a = create(store, &doc("Restart-API", 1)).await;
    match store
        .create_playbook(&doc("restart-api", 2), &audit_version("playbook_created"))
        .await
        .unwrap()
    {
        CreatePlaybookOutcome::NameTaken { id, enabled } => {
            assert_eq!((id, enabled), (a.playbook_id, true));
        }
        other => panic!("{other:?}"),
    }
    let b = create(store, &doc("other", 1)).await;
    // Renaming b onto a's name is refused and writes nothing.
    assert_eq!(
        add(store, b.playbook_id, &doc("RESTART-api", 5)).await,
        AddVersionOutcome::NameTaken { id: a.playbook_id }
    );
    assert_eq!(
        store
            .current_playbook_version(b.playbook_id)
            .await
            .unwrap()
            .map(|v| v.version),
        Some(1)
    );
    // A disabled playbook keeps its name.
    store
        .disable_playbook(
            a.playbook_id,
            "bob",
            t(9000),
            &audit_record("playbook_disabled"),
        )
        .await
        .unwrap();
    match store
        .create_playbook(&doc("restart-API", 3), &audit_version("playbook_created"))
        .await
        .unwrap()
    {
        CreatePlaybookOutcome::NameTaken { id, enabled } => {
            assert_eq!((id, enabled), (a.playbook_id, false));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(audited(store, "playbook_created").await.len(), 2);
}

async fn playbooks_list_filters_and_paging(store: &dyn Store) {
    let mut ids = Vec::new();
    for name in ["db-failover", "api_restart", "api-restart", "cache-flush"] {
        ids.push(create(store, &doc(name, 1)).await.playbook_id);
    }
    store
        .disable_playbook(ids[3], "bob", t(5000), &audit_record("playbook_disabled"))
        .await
        .unwrap();
    let page = PageRequest {
        limit: 2,
        offset: 0,
    };
    let all = store
        .list_playbooks(&PlaybookFilter::default(), page)
        .await
        .unwrap();
    assert_eq!(all.total_count, 4);
    assert_eq!(
        all.entries.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    let rest = store
        .list_playbooks(
            &PlaybookFilter::default(),
            PageRequest {
                limit: 10,
                offset: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        rest.entries.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    let big = PageRequest {
        limit: 50,
        offset: 0,
    };
    let names = |p: Page<PlaybookRecord>| -> Vec<String> {
        p.entries.into_iter().map(|r| r.name).collect()
    };
    // Case-insensitive substring; `_` is a character, not a wildcard.
    let found = store
        .list_playbooks(
            &PlaybookFilter {
                name_contains: Some("API_".into()),
                ..PlaybookFilter::default()
            },
            big,
        )
        .await
        .unwrap();
    assert_eq!(names(found), vec!["api_restart"]);
    let found = store
        .list_playbooks(
            &PlaybookFilter {
                name_contains: Some("RESTART".into()),
                ..PlaybookFilter::default()
            },
            big,
        )
        .await
        .unwrap();
    assert_eq!(found.total_count, 2);
    let enabled = store
        .list_playbooks(
            &PlaybookFilter {
                enabled: Some(true),
                ..PlaybookFilter::default()
            },
            big,
        )
        .await
        .unwrap();
    assert_eq!(enabled.total_count, 3);
    assert!(enabled.entries.iter().all(|r| r.enabled));
    let disabled = store
        .list_playbooks(
            &PlaybookFilter {
                enabled: Some(false),
                name_contains: Some("flush".into()),
            },
            big,
        )
        .await
        .unwrap();
    assert_eq!(names(disabled.clone()), vec!["cache-flush"]);
    let r = &disabled.entries[0];
    assert_eq!(r.disabled_at, Some(t(5000)));
    assert_eq!(r.disabled_by.as_deref(), Some("bob"));
    assert_eq!(r.current_version, 1);
}

async fn playbooks_disable_and_restore(store: &dyn Store) {
    let v1 = create(store, &doc("restart", 1)).await;
    let id = v1.playbook_id;
    let disabled = match store
        .disable_playbook(id, "bob", t(7000), &audit_record("playbook_disabled"))
        .await
        .unwrap()
    {
        ToggleOutcome::Done(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_at, Some(t(7000)));
    // Twice: unchanged, and no second audit entry.
    assert!(matches!(
        store
            .disable_playbook(id, "bob", t(8000), &audit_record("playbook_disabled"))
            .await
            .unwrap(),
        ToggleOutcome::Unchanged(r) if r.disabled_at == Some(t(7000))
    ));
    assert_eq!(
        audited(store, "playbook_disabled").await,
        vec![serde_json::json!({ "playbook_id": id.0, "enabled": false })]
    );
    // The versions stay; a pinned version still loads, and says the playbook is disabled.
    let pinned = store.get_playbook_version(id, 1).await.unwrap().unwrap();
    assert!(!pinned.enabled);
    assert_eq!(pinned.source, v1.source);
    assert_eq!(
        add(store, id, &doc("restart", 2)).await,
        AddVersionOutcome::Disabled
    );

    let restored = match store
        .restore_playbook(id, t(9000), &audit_record("playbook_restored"))
        .await
        .unwrap()
    {
        ToggleOutcome::Done(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(restored.enabled);
    assert_eq!((restored.disabled_at, restored.disabled_by), (None, None));
    assert_eq!(restored.updated_at, t(9000));
    assert!(matches!(
        store
            .restore_playbook(id, t(9500), &audit_record("playbook_restored"))
            .await
            .unwrap(),
        ToggleOutcome::Unchanged(_)
    ));
    assert_eq!(audited(store, "playbook_restored").await.len(), 1);
    assert!(matches!(
        add(store, id, &doc("restart", 2)).await,
        AddVersionOutcome::Created(v) if v.version == 2 && v.enabled
    ));
    let missing = PlaybookId(id.0 + 99);
    assert_eq!(
        store
            .disable_playbook(missing, "bob", t(1), &audit_record("playbook_disabled"))
            .await
            .unwrap(),
        ToggleOutcome::NotFound
    );
    assert_eq!(
        store
            .restore_playbook(missing, t(1), &audit_record("playbook_restored"))
            .await
            .unwrap(),
        ToggleOutcome::NotFound
    );
}

async fn playbook_versions_are_immutable(db: &crate::db::TestDb) {
    let v1 = create(&*db.store, &doc("immutable", 1)).await;
    let sql = "UPDATE playbook_versions SET source = 'name: changed' WHERE version = 1";
    let refused = if db.url.starts_with("sqlite") {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.err()
    } else {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.err()
    };
    let err = refused.expect("an update of a version must fail");
    assert!(err.to_string().contains("immutable"), "{err}");
    assert_eq!(
        db.store
            .get_playbook_version(v1.playbook_id, 1)
            .await
            .unwrap()
            .unwrap()
            .source,
        v1.source
    );
}

async fn playbooks_concurrent_writers_number_versions_once(store: &dyn Store) {
    // Eight creations of one name: one playbook.
    let creations = (0..8u8).map(|n| async move {
        store
            .create_playbook(&doc("contended", n + 1), &audit_version("playbook_created"))
            .await
            .unwrap()
    });
    let results = futures::future::join_all(creations).await;
    let created: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            CreatePlaybookOutcome::Created(v) => Some(v.playbook_id),
            CreatePlaybookOutcome::NameTaken { .. } => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    let id = created[0];
    // Eight new versions at once: numbered 2..=9 without a gap or a repeat.
    let adds = (0..8u8).map(|n| async move { add(store, id, &doc("contended", 100 + n)).await });
    let mut numbers: Vec<i32> = futures::future::join_all(adds)
        .await
        .into_iter()
        .map(|o| match o {
            AddVersionOutcome::Created(v) => v.version,
            other => panic!("{other:?}"),
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (2..=9).collect::<Vec<_>>());
    let p = store.get_playbook(id).await.unwrap().unwrap();
    assert_eq!(p.record.current_version, 9);
    assert_eq!(p.versions.len(), 9);
    assert_eq!(audited(store, "playbook_version_added").await.len(), 8);
}

fn secret(name: &str, sealed: &str, key_id: &str, at: i64) -> NewSecret {
    NewSecret {
        name: name.into(),
        sealed: sealed.into(),
        key_id: key_id.into(),
        actor: "admin".into(),
        at: t(at),
    }
}

fn audit_secret(action: &'static str) -> impl Fn(&SecretInfo) -> NewAuditEntry + Sync {
    move |s: &SecretInfo| NewAuditEntry {
        action_type: action.into(),
        on_behalf_of: None,
        actor: s.updated_by.clone(),
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "name": s.name }),
        at: s.updated_at,
    }
}

async fn secrets_put_list_delete(store: &dyn Store) {
    let put = |n: NewSecret| async move {
        store
            .put_secret(&n, &audit_secret("secret_set"))
            .await
            .unwrap()
    };
    let created = match put(secret("DEPLOY_TOKEN", "v1:k1:AAAA:BBBB", "k1", 1)).await {
        PutSecretOutcome::Created(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(created.created_at, t(1));
    assert_eq!(created.updated_at, t(1));
    put(secret("API_KEY", "v1:k1:CCCC:DDDD", "k1", 2)).await;
    let mut again = secret("DEPLOY_TOKEN", "v1:k2:EEEE:FFFF", "k2", 3);
    again.actor = "other-admin".into();
    let updated = match put(again).await {
        PutSecretOutcome::Updated(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (updated.created_at, updated.created_by.as_str()),
        (t(1), "admin")
    );
    assert_eq!(
        (
            updated.updated_at,
            updated.updated_by.as_str(),
            updated.key_id.as_str()
        ),
        (t(3), "other-admin", "k2")
    );
    // Names are exact: a different case is another secret.
    put(secret("deploy_token", "v1:k1:GGGG:HHHH", "k1", 4)).await;
    let names: Vec<String> = store
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["API_KEY", "DEPLOY_TOKEN", "deploy_token"]);
    let sealed = store
        .sealed_secrets(&["DEPLOY_TOKEN".into(), "MISSING".into(), "API_KEY".into()])
        .await
        .unwrap();
    assert_eq!(
        sealed
            .iter()
            .map(|s| (s.name.as_str(), s.sealed.as_str(), s.key_id.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("API_KEY", "v1:k1:CCCC:DDDD", "k1"),
            ("DEPLOY_TOKEN", "v1:k2:EEEE:FFFF", "k2")
        ]
    );
    assert!(store.sealed_secrets(&[]).await.unwrap().is_empty());
    assert_eq!(store.all_sealed_secrets().await.unwrap().len(), 3);
    assert_eq!(audited(store, "secret_set").await.len(), 4);

    let gone = store
        .delete_secret("API_KEY", &audit_secret("secret_deleted"))
        .await
        .unwrap();
    assert_eq!(gone.map(|s| s.name), Some("API_KEY".to_owned()));
    assert_eq!(
        store
            .delete_secret("API_KEY", &audit_secret("secret_deleted"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        audited(store, "secret_deleted").await,
        vec![serde_json::json!({ "name": "API_KEY" })]
    );
    assert_eq!(store.list_secrets().await.unwrap().len(), 2);
}

async fn secrets_rotation_is_all_or_nothing(store: &dyn Store) {
    for (i, (name, key)) in [("A", "old"), ("B", "new"), ("C", "old")]
        .into_iter()
        .enumerate()
    {
        store
            .put_secret(
                &secret(name, &format!("sealed-{name}-{key}"), key, i as i64),
                &audit_secret("secret_set"),
            )
            .await
            .unwrap();
    }
    let audit = |s: &RotateSummary| NewAuditEntry {
        action_type: "secrets_rotated".into(),
        on_behalf_of: None,
        actor: "rotation".into(),
        service_id: None,
        execution_id: None,
        details: serde_json::json!({ "total": s.total, "resealed": s.resealed }),
        at: t(100),
    };
    // One value cannot be opened: nothing changes.
    let failing = |s: &SealedSecret| -> Result<Option<Resealed>, String> {
        if s.name == "C" {
            return Err("does not open".into());
        }
        Ok((s.key_id == "old").then(|| Resealed {
            sealed: format!("sealed-{}-new", s.name),
            key_id: "new".into(),
        }))
    };
    assert_eq!(
        store.rotate_secrets(&failing, &audit).await.unwrap(),
        RotateOutcome::Failed {
            name: "C".into(),
            reason: "does not open".into()
        }
    );
    let keys = |all: Vec<SealedSecret>| -> Vec<(String, String, String)> {
        all.into_iter()
            .map(|s| (s.name, s.sealed, s.key_id))
            .collect()
    };
    assert_eq!(
        keys(store.all_sealed_secrets().await.unwrap()),
        vec![
            ("A".into(), "sealed-A-old".into(), "old".into()),
            ("B".into(), "sealed-B-new".into(), "new".into()),
            ("C".into(), "sealed-C-old".into(), "old".into()),
        ]
    );
    assert!(audited(store, "secrets_rotated").await.is_empty());

    let working = |s: &SealedSecret| -> Result<Option<Resealed>, String> {
        Ok((s.key_id == "old").then(|| Resealed {
            sealed: format!("sealed-{}-new", s.name),
            key_id: "new".into(),
        }))
    };
    assert_eq!(
        store.rotate_secrets(&working, &audit).await.unwrap(),
        RotateOutcome::Done(RotateSummary {
            total: 3,
            resealed: 2
        })
    );
    assert!(
        keys(store.all_sealed_secrets().await.unwrap())
            .iter()
            .all(|(n, s, k)| k == "new" && *s == format!("sealed-{n}-new"))
    );
    assert_eq!(
        audited(store, "secrets_rotated").await,
        vec![serde_json::json!({ "total": 3, "resealed": 2 })]
    );
}

fn ring(current: u8, old: &[u8]) -> Keyring {
    Keyring::new(
        SecretsKey::from_bytes(&[current; 32]),
        old.iter()
            .map(|b| SecretsKey::from_bytes(&[*b; 32]))
            .collect(),
    )
}

async fn secrets_rotation_and_start_up_check_with_real_keys(store: &dyn Store) {
    // No secrets: no key needed.
    check_secrets(store, None).await.unwrap();
    let old = ring(1, &[]);
    for (name, value) in [
        ("DEPLOY_TOKEN", "hunter2-deploy"),
        ("PAGER", "hunter2-pager"),
    ] {
        let sealed = old.seal(name, &SecretValue::new(value));
        store
            .put_secret(
                &secret(name, &sealed.to_text(), &sealed.key_id, 1),
                &audit_secret("secret_set"),
            )
            .await
            .unwrap();
    }
    let missing = check_secrets(store, None).await.unwrap_err();
    assert!(
        matches!(missing, StartError::Secrets(_))
            && missing.to_string().contains("MEDIC_SECRETS_KEY"),
        "{missing}"
    );
    let wrong = check_secrets(store, Some(&ring(2, &[]))).await.unwrap_err();
    assert!(
        wrong.to_string().contains("the server has the wrong key"),
        "{wrong}"
    );
    check_secrets(store, Some(&old)).await.unwrap();

    let rotating = ring(2, &[1]);
    let summary = rotate_secrets(store, &rotating, "test").await.unwrap();
    assert_eq!(
        summary,
        RotateSummary {
            total: 2,
            resealed: 2
        }
    );
    // After the rotation the new key alone opens everything, and the old one no longer does.
    let new_only = ring(2, &[]);
    check_secrets(store, Some(&new_only)).await.unwrap();
    assert!(check_secrets(store, Some(&old)).await.is_err());
    for s in store.all_sealed_secrets().await.unwrap() {
        assert!(!s.sealed.contains("hunter2"));
        let sealed = Sealed::from_text(&s.sealed).unwrap();
        assert!(
            new_only
                .open(&s.name, &sealed)
                .unwrap()
                .expose()
                .starts_with("hunter2-")
        );
    }
    // Again: nothing left to reseal.
    let again = rotate_secrets(store, &rotating, "test").await.unwrap();
    assert_eq!(
        again,
        RotateSummary {
            total: 2,
            resealed: 0
        }
    );
    // A rotation whose keys cannot open a value changes nothing.
    let err = rotate_secrets(store, &ring(3, &[]), "test")
        .await
        .unwrap_err();
    assert!(err.contains("nothing was changed"), "{err}");
    check_secrets(store, Some(&new_only)).await.unwrap();
}
