//! Playbook script steps on the server itself (`on: server`), allowed by the operator with
//! `MEDIC_SERVER_SCRIPTS`: a real `medic-server` process runs them through the agent's executor.
//! Only allowlisted scripts run, at the approved version, with the parameters as data, in a
//! cleared environment, as an unprivileged account when the server can switch users (root in
//! CI), unable to read the server's environment; a document naming a script outside the
//! allowlist is refused when it is saved.

use std::os::unix::fs::PermissionsExt;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;

use crate::db::TestDb;
use crate::playbook_secrets::{Client, ServerProcess};
use crate::support::{ADMIN_KEY, assert_error_contains, assert_ok, key_for_owner, send};

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_on_the_server_run_allowlisted_pinned_and_unprivileged() {
        super::scripts_on_the_server_run_allowlisted_pinned_and_unprivileged(
            crate::db::sqlite().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_killed_while_its_script_runs_does_not_run_it_again() {
        super::a_server_killed_while_its_script_runs_does_not_run_it_again(
            crate::db::sqlite().await,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_an_execution_kills_the_script_it_runs_on_the_server() {
        super::cancelling_an_execution_kills_the_script_it_runs_on_the_server(
            crate::db::sqlite().await,
        )
        .await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scripts_on_the_server_run_allowlisted_pinned_and_unprivileged() {
        let Some(db) = crate::db::postgres().await else {
            return;
        };
        super::scripts_on_the_server_run_allowlisted_pinned_and_unprivileged(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_killed_while_its_script_runs_does_not_run_it_again() {
        let Some(db) = crate::db::postgres().await else {
            return;
        };
        super::a_server_killed_while_its_script_runs_does_not_run_it_again(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_an_execution_kills_the_script_it_runs_on_the_server() {
        let Some(db) = crate::db::postgres().await else {
            return;
        };
        super::cancelling_an_execution_kills_the_script_it_runs_on_the_server(db).await;
    }
}

/// What a script run on the server prints: its parameter, who it runs as, the names of its
/// environment, and whether it could read its parent's (the server's) environment.
const PROBE: &str = "printf 'who=%s\\n' \"$MEDIC_PARAM_WHO\"\n\
                     printf 'token=%s\\n' \"$MEDIC_PARAM_TOKEN\"\n\
                     printf '%s' \"$MEDIC_PARAM_TOKEN\" | sha256sum\n\
                     printf 'user=%s\\n' \"$(id -un)\"\n\
                     printf 'agent=%s\\n' \"$MEDIC_AGENT_ID\"\n\
                     printf 'env=%s\\n' \"$(env | cut -d= -f1 | sort | tr '\\n' ' ')\"\n\
                     if cat /proc/$PPID/environ >/dev/null 2>&1; then echo parent=readable; \
                     else echo parent=closed; fi\n";

async fn register(c: &Client, author: &str, name: &str, content: &str) {
    let r = send(
        c.request(Method::POST, "/v2/scripts", author)
            .json(&json!({"name": name, "interpreter": "sh", "content": content})),
    )
    .await;
    let id = assert_ok(&r, 201)["script_id"].as_i64().expect("id");
    let r = c
        .admin(
            Method::POST,
            &format!("/v2/scripts/{id}/approve"),
            Some(&json!({})),
        )
        .await;
    assert_ok(&r, 200);
}

async fn save(c: &Client, yaml: &str) -> crate::support::Reply {
    send(
        c.request(Method::POST, "/v2/playbooks", ADMIN_KEY)
            .header("content-type", "application/yaml")
            .body(yaml.to_owned()),
    )
    .await
}

/// Starts `playbook`; returns the execution's id.
async fn start_playbook(c: &Client, playbook: i64) -> i64 {
    let r = c
        .admin(
            Method::POST,
            &format!("/v2/playbooks/{playbook}/execute"),
            Some(&json!({})),
        )
        .await;
    assert_ok(&r, 201)["execution_id"]
        .as_i64()
        .expect("execution id")
}

/// Saves `yaml` as a playbook and starts it; returns the execution's id.
async fn start(c: &Client, yaml: &str) -> i64 {
    let playbook = assert_ok(&save(c, yaml).await, 201)["playbook_id"]
        .as_i64()
        .expect("id");
    start_playbook(c, playbook).await
}

/// Starts `playbook` and waits for its execution to end.
async fn execute(c: &Client, playbook: i64) -> Value {
    let id = start_playbook(c, playbook).await;
    c.ended(id).await
}

/// A directory the scripts' account can reach, and the settings that allow `scripts` on the
/// server (as `nobody` when the tests run as root).
fn allowing(scripts: &str) -> (tempfile::TempDir, Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut env = vec![
        ("MEDIC_SERVER_SCRIPTS", scripts.to_owned()),
        (
            "MEDIC_SERVER_SCRIPTS_DIR",
            dir.path().join("scripts").display().to_string(),
        ),
    ];
    if rustix::process::geteuid().is_root() {
        env.push(("MEDIC_SERVER_SCRIPTS_USER", "nobody".to_owned()));
    }
    (dir, env)
}

async fn started(
    db: &TestDb,
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (ServerProcess, Client) {
    let server = ServerProcess::start(db, dir, env);
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    c.wait_ready().await;
    (server, c)
}

async fn scripts_on_the_server_run_allowlisted_pinned_and_unprivileged(db: TestDb) {
    let author = key_for_owner(&*db.store, "script-author", &["write"]).await;
    db.store.close().await;
    let root = rustix::process::geteuid().is_root();
    let (dir, mut env) = allowing("probe, fail");
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    env.push(("MEDIC_SECRETS_KEY", key));
    let (server, c) = started(&db, dir.path(), &env).await;
    let secret = format!("tok{}", hex::encode(rand::random::<[u8; 12]>()));
    let r = c
        .admin(
            Method::PUT,
            "/v2/secrets/DEPLOY_TOKEN",
            Some(&json!({"value": secret})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    register(&c, &author, "probe", PROBE).await;
    register(&c, &author, "fail", "echo broken >&2\nexit 3\n").await;
    register(&c, &author, "elsewhere", "echo never\n").await;

    // A script outside the server's allowlist is refused when the document is saved.
    let outside = "name: outside\nsteps:\n  - name: local\n    type: script\n    on: server\n    \
                   script: elsewhere\n";
    let r = save(&c, outside).await;
    assert_error_contains(&r, 400, "not in MEDIC_SERVER_SCRIPTS");

    let yaml = "name: on-the-server\nsteps:\n  - name: probe\n    type: script\n    on: server\n    \
                script: probe\n    params: {WHO: \"${PLAYBOOK_NAME}\", TOKEN: \"${secrets.DEPLOY_TOKEN}\"}\n  \
                - name: broken\n    type: script\n    on: server\n    script: fail\n    \
                on_failure: continue\n";
    let playbook = assert_ok(&save(&c, yaml).await, 201)["playbook_id"]
        .as_i64()
        .expect("id");
    let done = execute(&c, playbook).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    let probe = &done["steps"][0];
    assert_eq!(probe["status"], "completed", "{done:#}");
    assert_eq!(probe["exit_code"], 0);
    let output = probe["output"].as_str().expect("output");
    // The parameter arrived as data, and the script knows it runs on the server.
    assert!(output.contains("who=on-the-server\n"), "{output}");
    assert!(output.contains("agent=medic-server\n"), "{output}");
    // The secret reached the script (its hash is the real value's) and not the output.
    let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    assert!(output.contains(&digest), "{output}");
    assert!(!output.contains(&secret), "{output}");
    assert!(!server.log().contains(&secret));
    if root {
        assert!(output.contains("user=nobody\n"), "{output}");
    }
    // A cleared environment: nothing of the server's (its admin key, its database URL).
    let names: Vec<&str> = output
        .lines()
        .find_map(|l| l.strip_prefix("env="))
        .expect("env line")
        .split_whitespace()
        .collect();
    for name in &names {
        let allowed = [
            "PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "PWD", "SHLVL", "OLDPWD", "_",
        ]
        .contains(name)
            || name.starts_with("MEDIC_PARAM_")
            || ["MEDIC_RUN_ID", "MEDIC_SCRIPT", "MEDIC_AGENT_ID"].contains(name);
        assert!(allowed, "the script inherited {name}: {output}");
    }
    assert!(output.contains("parent=closed\n"), "{output}");

    let broken = &done["steps"][1];
    assert_eq!(broken["status"], "failed", "{done:#}");
    assert_eq!(broken["exit_code"], 3);
    assert!(
        broken["output"]
            .as_str()
            .is_some_and(|o| o.contains("broken")),
        "{done:#}"
    );
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("code 3")),
        "{done:#}"
    );
    // Nothing of the server's environment reached the outputs or its log.
    assert!(!done.to_string().contains(ADMIN_KEY));
    assert!(
        server
            .log()
            .contains("playbook steps may run these scripts on the server")
    );
    drop(server);
    drop(db);
}

async fn a_server_killed_while_its_script_runs_does_not_run_it_again(db: TestDb) {
    let author = key_for_owner(&*db.store, "script-author", &["write"]).await;
    db.store.close().await;
    let (dir, mut env) = allowing("slow");
    // A short hold, so the restarted server takes the execution over quickly.
    env.push(("MEDIC_PLAYBOOK_LEASE_SECONDS", "5".to_owned()));
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "").expect("marker");
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (server, c) = started(&db, dir.path(), &env).await;
    let script = format!("echo ran >> {}\nsleep 3\n", marker.display());
    register(&c, &author, "slow", &script).await;
    let yaml = "name: slow-on-the-server\nsteps:\n  - name: slow\n    type: script\n    on: server\n    \
                script: slow\n    timeout: 2s\n";
    let id = start(&c, yaml).await;
    // Killed (SIGKILL) once the script has started.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&marker)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the script never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(server);

    let (server, c) = started(&db, dir.path(), &env).await;
    let done = c.ended(id).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let step = &done["steps"][0];
    assert_eq!(step["status"], "interrupted", "{done:#}");
    assert!(
        step["error"]
            .as_str()
            .is_some_and(|e| e.contains("while the script was running")),
        "{done:#}"
    );
    assert_eq!(
        std::fs::read_to_string(&marker).expect("marker"),
        "ran\n",
        "the script ran again after the restart"
    );
    drop(server);
    drop(db);
}

/// Whether process `pid` is still running (a zombie has ended).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest.trim_start());
        !state.starts_with('Z') && !state.starts_with('X')
    })
}

async fn cancelling_an_execution_kills_the_script_it_runs_on_the_server(db: TestDb) {
    let author = key_for_owner(&*db.store, "script-author", &["write"]).await;
    db.store.close().await;
    let (dir, env) = allowing("long");
    let marker = dir.path().join("marker");
    std::fs::write(&marker, "").expect("marker");
    std::fs::set_permissions(&marker, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (server, c) = started(&db, dir.path(), &env).await;
    // The script and a process it started, both for far longer than the test waits, unless
    // the cancel kills them.
    let script = format!(
        "sleep 900 &\necho \"$$ $!\" >> {m}\nwait\necho finished >> {m}\n",
        m = marker.display()
    );
    register(&c, &author, "long", &script).await;
    let yaml = "name: long-on-the-server\nsteps:\n  - name: long\n    type: script\n    on: server\n    \
                script: long\n    timeout: 20m\n";
    let id = start(&c, yaml).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let pids: Vec<String> = loop {
        let text = std::fs::read_to_string(&marker).unwrap_or_default();
        if text.ends_with('\n') {
            break text.split_whitespace().map(str::to_owned).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the script never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.iter().all(|p| alive(p)), "{pids:?}");

    let r = c
        .admin(
            Method::POST,
            &format!("/v2/executions/{id}/cancel"),
            Some(&json!({"reason": "stop it"})),
        )
        .await;
    assert_eq!(assert_ok(&r, 200)["status"], "cancelled");
    // Only the kill ends them before the test gives up: the script's timeout is 20 minutes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while pids.iter().any(|p| alive(p)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cancelled execution's script still runs: {pids:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let done = c.ended(id).await;
    assert_eq!(done["status"], "cancelled", "{done:#}");
    let step = &done["steps"][0];
    assert_eq!(step["status"], "cancelled", "{done:#}");
    assert!(
        step["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled")),
        "{done:#}"
    );
    assert!(
        !std::fs::read_to_string(&marker)
            .expect("marker")
            .contains("finished"),
        "the script went on after the cancel"
    );
    drop(server);
    drop(db);
}
