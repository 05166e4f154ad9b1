//! The `medic-server` binary as an operator runs it: subcommands, exit codes, signals.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_medic-server");

/// A command with a clean environment (only what the test sets reaches the binary).
fn medic(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MEDIC_LOG_FORMAT", "text")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/medic.db", dir.display()),
        )
        .current_dir(dir);
    c
}

fn run(c: &mut Command) -> Output {
    c.output().expect("medic-server runs")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn check_config_accepts_defaults_and_rejects_bad_settings_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let ok = run(medic(dir.path()).arg("check-config"));
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));

    let bad = run(medic(dir.path())
        .arg("check-config")
        .env("DATABASE_URL", "mysql://nope")
        .env("MEDIC_TRUSTED_PROXIES", "10.0.0.0/8,not-a-cidr")
        .env("MEDIC_ADMIN_API_KEY", "too-short"));
    assert_eq!(bad.status.code(), Some(64));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(err.contains("not-a-cidr"), "{err}");
    assert!(err.contains("MEDIC_ADMIN_API_KEY"), "{err}");
    assert!(
        !err.contains("too-short"),
        "secrets must not be echoed: {err}"
    );

    // serve refuses the same configuration instead of starting half-working.
    let bad_serve = run(medic(dir.path()).env("MEDIC_RATE_LIMITER_TYPE", "redis"));
    assert_eq!(bad_serve.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad_serve.stderr).contains("REDIS_URL"));

    let unknown_key = dir.path().join("medic.toml");
    std::fs::write(&unknown_key, "prot = 8080\n").unwrap();
    let bad_file = run(medic(dir.path())
        .arg("--config")
        .arg(&unknown_key)
        .arg("check-config"));
    assert_eq!(bad_file.status.code(), Some(64));
}

#[test]
fn config_file_values_apply_and_environment_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medic.toml");
    std::fs::write(&file, "port = 9123\nrole = \"worker\"\n").unwrap();
    let out = run(medic(dir.path())
        .arg("--config")
        .arg(&file)
        .arg("check-config"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0.0.0.0:9123"), "{text}");
    assert!(text.contains("Worker"), "{text}");
    let out = run(medic(dir.path())
        .env("PORT", "9124")
        .arg("--config")
        .arg(&file)
        .arg("check-config"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0.0.0.0:9124"));
}

#[tokio::test]
async fn migrate_then_api_key_create_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let m = run(medic(dir.path()).arg("migrate"));
    assert_eq!(m.status.code(), Some(0), "{m:?}");
    assert!(dir.path().join("medic.db").exists());

    let created = run(medic(dir.path()).args([
        "api-key",
        "create",
        "--name",
        "ops",
        "--scopes",
        "read,write",
    ]));
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let key = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(key.starts_with("mdk_") && key.len() == 81, "{key}");

    let bad =
        run(medic(dir.path()).args(["api-key", "create", "--name", "x", "--scopes", "read,root"]));
    assert_ne!(bad.status.code(), Some(0));

    // The key works against a server on the same database.
    let port = free_port();
    let mut server = medic(dir.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_healthy(dir.path(), port);
    let client = reqwest::Client::new();
    let status = client
        .get(format!("http://127.0.0.1:{port}/v2/services"))
        .bearer_auth(&key)
        .send()
        .await
        .map(|r| r.status().as_u16());
    // Its creation is in the audit log, by the command.
    let audit = match client
        .get(format!(
            "http://127.0.0.1:{port}/v2/audit-logs?action_type=api_key_created"
        ))
        .bearer_auth(&key)
        .send()
        .await
    {
        Ok(r) => r.json::<serde_json::Value>().await.ok(),
        Err(_) => None,
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "server did not become healthy");
    assert_eq!(status.ok(), Some(200));
    let audit = audit.expect("the audit log answers");
    let entries = audit["results"]["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{audit:#}");
    assert_eq!(entries[0]["actor"], "medic-server api-key create");
    assert_eq!(entries[0]["details"]["name"], "ops");
}

fn wait_healthy(dir: &std::path::Path, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let probe = run(medic(dir).args(["healthcheck", "--url", &format!("127.0.0.1:{port}")]));
        if probe.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn healthcheck_fails_without_a_server_and_sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let nothing =
        run(medic(dir.path()).args(["healthcheck", "--url", &format!("127.0.0.1:{port}")]));
    assert_eq!(nothing.status.code(), Some(1));

    let server = medic(dir.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_healthy(dir.path(), port),
        "server did not become healthy"
    );
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = server.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "exit after SIGTERM");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_second_server_on_the_same_sqlite_file_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = medic(dir.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_healthy(dir.path(), port);
    let second = run(medic(dir.path()).env("PORT", free_port().to_string()));
    let _ = first.kill();
    let _ = first.wait();
    assert!(up, "first server did not become healthy");
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("PostgreSQL"), "{err}");
}

#[test]
fn start_up_messages_say_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    // A database whose directory cannot be made (a file stands where it should be) is named,
    // with what the server tried to do there.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let db = file.join("medic.db");
    let out = run(medic(dir.path())
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("PORT", free_port().to_string()));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&db.display().to_string()), "{err}");
    assert!(err.contains("lock file"), "{err}");
    assert!(!err.contains("listener"), "{err}");

    // api-key create says which database it wrote to.
    let elsewhere = tempfile::tempdir().unwrap();
    let created = run(medic(elsewhere.path())
        .env("DATABASE_URL", "sqlite://medic.db")
        .args(["api-key", "create", "--name", "ops", "--scopes", "read"]));
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let err = String::from_utf8_lossy(&created.stderr);
    let expected = std::fs::canonicalize(elsewhere.path())
        .unwrap()
        .join("medic.db");
    assert!(
        err.contains(&expected.display().to_string()),
        "{err} does not name {}",
        expected.display()
    );

    // MEDIC_ROLE=api on SQLite would never alert: refused, by check-config too.
    let api = run(medic(dir.path())
        .arg("check-config")
        .env("MEDIC_ROLE", "api"));
    assert_eq!(api.status.code(), Some(64), "{api:?}");
    assert!(
        String::from_utf8_lossy(&api.stderr).contains("MEDIC_ROLE=api"),
        "{api:?}"
    );
}

#[test]
fn healthcheck_accepts_host_names_and_urls() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = medic(dir.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_healthy(dir.path(), port);
    let mut answers = Vec::new();
    for url in [
        format!("localhost:{port}"),
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let probe = run(medic(dir.path()).args(["healthcheck", "--url", &url]));
        answers.push((
            url,
            probe.status.code(),
            String::from_utf8_lossy(&probe.stderr).into_owned(),
        ));
    }
    // Without a port, the configured one.
    let probe = run(medic(dir.path()).env("PORT", port.to_string()).args([
        "healthcheck",
        "--url",
        "localhost",
    ]));
    answers.push((
        "localhost".into(),
        probe.status.code(),
        String::from_utf8_lossy(&probe.stderr).into_owned(),
    ));
    let _ = server.kill();
    let _ = server.wait();
    assert!(up, "server did not become healthy");
    for (url, code, err) in answers {
        assert_eq!(code, Some(0), "--url {url}: {err}");
    }
}

#[test]
fn each_subcommands_help_lists_only_the_settings_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = run(medic(dir.path()).args(args).arg("--help"));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serve = help(&["serve"]);
    assert!(serve.contains("--redis-url") && serve.contains("--database-url"));
    let health = help(&["healthcheck"]);
    assert!(
        health.contains("--url") && health.contains("--port"),
        "{health}"
    );
    let create = help(&["api-key", "create"]);
    assert!(
        create.contains("--database-url") && create.contains("--scopes"),
        "{create}"
    );
    for (what, text) in [("healthcheck", &health), ("api-key create", &create)] {
        for other in ["--redis-url", "--rate-limit-docs-requests", "--slack-token"] {
            assert!(
                !text.contains(other),
                "{what} --help lists {other}:\n{text}"
            );
        }
    }
    assert!(!health.contains("--database-url"), "{health}");
    // A setting left out of the help is still accepted (a shared environment or file).
    let probe = run(medic(dir.path()).args([
        "healthcheck",
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--url",
        &format!("127.0.0.1:{}", free_port()),
    ]));
    assert_eq!(probe.status.code(), Some(1), "{probe:?}");
}

/// The command line is the one place a key owner is made: `--owner` names a person (created on
/// first use, audited) or an existing one (any case), and the key belongs to it.
#[tokio::test]
async fn api_key_create_makes_an_owner_once_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let create = |name: &str, owner: &str, kind: &str| {
        run(medic(dir.path()).args([
            "api-key",
            "create",
            "--name",
            name,
            "--scopes",
            "admin",
            "--owner",
            owner,
            "--owner-kind",
            kind,
        ]))
    };
    let first = create("alice-laptop", "alice", "person");
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("the new owner \"alice\""));
    let second = create("alice-desktop", "ALICE", "person");
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert!(String::from_utf8_lossy(&second.stderr).contains("the existing owner"));
    let bot = create("backup-bot", "backups", "service");
    assert_eq!(bot.status.code(), Some(0), "{bot:?}");
    let bad = create("x", "y", "robot");
    assert_ne!(bad.status.code(), Some(0), "{bad:?}");

    let key_id = |out: &Output| {
        let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        medic_server::domain::apikey::parse_id(&key).expect("a key")
    };
    let url = format!("sqlite://{}/medic.db", dir.path().display());
    let store = medic_server::store::connect(&url, &medic_server::store::PoolOptions::default())
        .await
        .expect("store");
    let a1 = store.get_api_key(&key_id(&first)).await.unwrap().unwrap();
    let a2 = store.get_api_key(&key_id(&second)).await.unwrap().unwrap();
    let b = store.get_api_key(&key_id(&bot)).await.unwrap().unwrap();
    assert_eq!(a1.owner_id, a2.owner_id, "one person, two keys");
    assert_ne!(a1.owner_id, b.owner_id);
    assert_ne!(a1.owner_id.0, "bootstrap");
    let backups = store.find_key_owner("backups").await.unwrap().unwrap();
    assert_eq!(backups.id, b.owner_id);
    assert_eq!(backups.kind, medic_server::domain::OwnerKind::Service);
    let filter = medic_server::store::AuditFilter {
        action_type: Some("key_owner_created".into()),
        ..Default::default()
    };
    let page = medic_server::store::PageRequest {
        limit: 10,
        offset: 0,
    };
    let made = store.list_audit(&filter, page).await.unwrap().entries;
    assert_eq!(made.len(), 2, "{made:#?}");
    assert!(
        made.iter()
            .all(|e| e.actor == "medic-server api-key create")
    );
    store.close().await;
}

#[tokio::test]
async fn secrets_rotate_reencrypts_every_secret_under_the_new_key() {
    use base64::Engine;
    use medic_server::playbook::secrets::{Keyring, SecretValue, SecretsKey};
    use medic_server::store::{self, NewAuditEntry, NewSecret, PoolOptions};

    let b64 = |byte: u8| base64::engine::general_purpose::STANDARD.encode([byte; 32]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/medic.db", dir.path().display());

    let no_key = run(medic(dir.path()).args(["secrets", "rotate"]));
    assert_ne!(no_key.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&no_key.stderr).contains("MEDIC_SECRETS_KEY is not set"),
        "{no_key:?}"
    );

    // Two secrets sealed under the old key.
    let old = Keyring::new(SecretsKey::from_bytes(&[1; 32]), vec![]);
    let db = store::connect(&url, &PoolOptions::default()).await.unwrap();
    db.migrate().await.unwrap();
    for name in ["DEPLOY_TOKEN", "PAGER_KEY"] {
        let sealed = old.seal(name, &SecretValue::new(format!("value-of-{name}")));
        let audit = |_: &store::SecretInfo| NewAuditEntry {
            action_type: "secret_set".into(),
            on_behalf_of: None,
            actor: "test".into(),
            service_id: None,
            execution_id: None,
            details: serde_json::json!({}),
            at: medic_server::domain::Timestamp::now(),
        };
        db.put_secret(
            &NewSecret {
                name: name.into(),
                sealed: sealed.to_text(),
                key_id: sealed.key_id.clone(),
                actor: "test".into(),
                at: medic_server::domain::Timestamp::now(),
            },
            &audit,
        )
        .await
        .unwrap();
    }
    db.close().await;

    // Without the old key the values do not open: refused, nothing changed.
    let wrong = run(medic(dir.path())
        .args(["secrets", "rotate"])
        .env("MEDIC_SECRETS_KEY", b64(2)));
    assert_ne!(wrong.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("nothing was changed"),
        "{wrong:?}"
    );

    let rotated = run(medic(dir.path())
        .args(["secrets", "rotate"])
        .env("MEDIC_SECRETS_KEY", b64(2))
        .env("MEDIC_SECRETS_OLD_KEYS", b64(1)));
    assert_eq!(rotated.status.code(), Some(0), "{rotated:?}");
    let said = String::from_utf8_lossy(&rotated.stdout);
    assert!(said.contains("re-encrypted 2 of 2 secrets"), "{said}");

    // The new key alone now opens everything, and the rotation is in the audit log.
    let db = store::connect(&url, &PoolOptions::default()).await.unwrap();
    let new_only = Keyring::new(SecretsKey::from_bytes(&[2; 32]), vec![]);
    medic_server::server::check_secrets(&*db, Some(&new_only))
        .await
        .unwrap();
    assert!(
        medic_server::server::check_secrets(&*db, Some(&old))
            .await
            .is_err()
    );
    let entries = db
        .list_audit(
            &store::AuditFilter {
                action_type: Some("secrets_rotated".into()),
                ..store::AuditFilter::default()
            },
            store::PageRequest {
                limit: 10,
                offset: 0,
            },
        )
        .await
        .unwrap()
        .entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "medic-server secrets rotate");
    assert_eq!(entries[0].details["resealed"], 2);
    db.close().await;

    // check-config shows the key's id, never the key.
    let shown = run(medic(dir.path())
        .arg("check-config")
        .env("MEDIC_SECRETS_KEY", b64(2)));
    let out = String::from_utf8_lossy(&shown.stdout);
    assert!(
        out.contains(&format!("key id {}", new_only.current_id())) && !out.contains(&b64(2)),
        "{out}"
    );
    let bad = run(medic(dir.path())
        .arg("check-config")
        .env("MEDIC_SECRETS_KEY", "too-short"));
    assert_eq!(bad.status.code(), Some(64));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("MEDIC_SECRETS_KEY") && !err.contains("too-short"),
        "{err}"
    );

    // A server on this database refuses to start without the key.
    let refused = run(medic(dir.path()).env("PORT", free_port().to_string()));
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("MEDIC_SECRETS_KEY is not set"),
        "{refused:?}"
    );
}
