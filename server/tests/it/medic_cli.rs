//! The `medic` operator CLI, run as a process against a real server (SQLite): what it prints,
//! what it changes on the server, and its exit codes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medic_server::config::RateLimits;
use serde_json::{Value, json};

use crate::support::{GENEROUS, TestApp, assert_ok};

const BIN: &str = env!("CARGO_BIN_EXE_medic");

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// One `medic` invocation with a clean environment: only the server, the key, a private
/// configuration directory and what the test adds.
struct Medic {
    cmd: Command,
    stdin: Option<String>,
}

impl Medic {
    fn new(home: &Path) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"));
        Self { cmd, stdin: None }
    }

    fn on(home: &Path, app: &TestApp, key: &str) -> Self {
        let mut m = Self::new(home);
        m.cmd
            .env("MEDIC_URL", app.url(""))
            .env("MEDIC_API_KEY", key);
        m
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    async fn run(mut self, args: &[&str]) -> Out {
        self.cmd.args(args);
        let stdin = self.stdin.take();
        tokio::task::spawn_blocking(move || {
            let mut cmd = self.cmd;
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("medic runs");
            let mut pipe = child.stdin.take().expect("stdin");
            if let Some(text) = stdin {
                pipe.write_all(text.as_bytes()).expect("write stdin");
            }
            drop(pipe);
            let o = child.wait_with_output().expect("medic ends");
            Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            }
        })
        .await
        .expect("join")
    }
}

#[track_caller]
fn ok(o: &Out) {
    assert_eq!(o.code, 0, "{o:#?}");
}

async fn wait_alert(app: &TestApp, sid: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = app
            .admin()
            .get(&format!("/v2/alerts?service_id={sid}&state=open"))
            .await;
        if let Some(a) = assert_ok(&r, 200)["entries"]
            .as_array()
            .and_then(|e| e.first())
        {
            return a.clone();
        }
        assert!(Instant::now() < deadline, "no alert for service {sid}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_mute_unmute_runs_alerts_and_audit_through_the_binary() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let key = app.admin_key();
    let m = || Medic::on(home.path(), &app, key);

    // Create from flags; the JSON output is the API's object.
    let o = m()
        .run(&[
            "-o",
            "json",
            "services",
            "create",
            "--name",
            "nightly-backup",
            "--interval",
            "1h",
            "--grace",
            "5m",
        ])
        .await;
    ok(&o);
    let svc = o.json();
    assert_eq!(svc["heartbeat_name"], "nightly-backup");
    assert_eq!(svc["interval_seconds"], 3600);
    assert_eq!(svc["grace_seconds"], 300);
    let sid = svc["service_id"].as_i64().unwrap();

    // Mute by name for two hours, with a reason; unmute.
    let o = m()
        .run(&[
            "services",
            "mute",
            "nightly-backup",
            "--for",
            "2h",
            "--reason",
            "disk swap",
        ])
        .await;
    ok(&o);
    assert!(o.stdout.contains("Muted nightly-backup"), "{o:?}");
    let s = assert_ok(&app.admin().get(&format!("/v2/services/{sid}")).await, 200);
    assert_eq!(s["muted"], true);
    assert_eq!(s["mute"]["reason"], "disk swap");
    let until = s["mute"]["until"].as_str().unwrap();
    let until = chrono::DateTime::parse_from_rfc3339(until).unwrap();
    let left = until
        .signed_duration_since(chrono::Utc::now())
        .num_minutes();
    assert!((100..=120).contains(&left), "{left} minutes left");
    ok(&m().run(&["services", "unmute", &sid.to_string()]).await);
    let s = assert_ok(&app.admin().get(&format!("/v2/services/{sid}")).await, 200);
    assert_eq!(s["muted"], false);

    // The table lists it; YAML carries the same object.
    let o = m().run(&["services", "list", "--name", "backup"]).await;
    ok(&o);
    assert!(
        o.stdout.contains("nightly-backup") && o.stdout.contains("HEARTBEAT_NAME"),
        "{o:?}"
    );
    let o = m()
        .run(&["-o", "yaml", "services", "get", "nightly-backup"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("heartbeat_name: nightly-backup"), "{o:?}");

    // A wrapped job that passes, and one that fails: exit codes pass through, both are runs.
    let o = m()
        .run(&[
            "run",
            "--name",
            "nightly-backup",
            "--",
            "sh",
            "-c",
            "echo copied 42 files",
        ])
        .await;
    ok(&o);
    assert_eq!(o.stdout, "copied 42 files\n");
    let o = m()
        .run(&[
            "run",
            "--name",
            "nightly-backup",
            "--",
            "sh",
            "-c",
            "echo disk full >&2; exit 3",
        ])
        .await;
    assert_eq!(o.code, 3, "{o:?}");
    assert_eq!(o.stderr, "disk full\n");
    let runs = assert_ok(
        &app.admin().get(&format!("/v2/services/{sid}/runs")).await,
        200,
    );
    let runs = runs["entries"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let failed = runs
        .iter()
        .find(|r| r["status"] == "failed")
        .expect("a failed run");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["body"], "disk full\n");
    assert!(failed["duration_ms"].as_i64().is_some(), "{failed}");
    let passed = runs
        .iter()
        .find(|r| r["status"] == "completed")
        .expect("a completed run");
    assert_eq!(passed["body"], "copied 42 files\n");

    // The failed run opened an alert: acknowledge it; a second ack is refused (5).
    let alert = wait_alert(&app, sid).await;
    let aid = alert["alert_id"].as_i64().unwrap().to_string();
    let o = m()
        .run(&["alerts", "list", "--service", "nightly-backup"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("job_failed"), "{o:?}");
    ok(&m().run(&["alerts", "ack", &aid]).await);
    let a = assert_ok(&app.admin().get(&format!("/v2/alerts/{aid}")).await, 200);
    assert_eq!(a["state"], "acknowledged");
    let o = m().run(&["alerts", "ack", &aid]).await;
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("[HTTP 409, request id "), "{o:?}");

    // The audit log as CSV.
    let o = m()
        .run(&["audit", "query", "--csv", "--service", &sid.to_string()])
        .await;
    ok(&o);
    let mut lines = o.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("id,timestamp,action_type,actor,service_id,execution_id,details,on_behalf_of")
    );
    let rows: Vec<&str> = lines.collect();
    assert!(
        rows.iter()
            .any(|r| r.contains(",alert_acknowledged,bootstrap-admin,")),
        "{o:?}"
    );

    // Delete, then restore from the snapshot the deletion names.
    let o = m()
        .run(&["-o", "json", "services", "delete", "nightly-backup"])
        .await;
    ok(&o);
    let snap = o.json()["snapshot_id"].as_i64().unwrap().to_string();
    assert_eq!(
        m().run(&["services", "get", &sid.to_string()]).await.code,
        3
    );
    ok(&m().run(&["services", "restore", &snap]).await);
    ok(&m().run(&["services", "get", &sid.to_string()]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_for_not_found_auth_and_usage() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let m = |key: &str| Medic::on(home.path(), &app, key);

    let o = m(app.admin_key()).run(&["services", "get", "424242"]).await;
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr.contains("Service 424242 was not found"), "{o:?}");
    assert!(o.stderr.contains("request id"), "{o:?}");
    let o = m(app.admin_key())
        .run(&["services", "get", "no-such-name"])
        .await;
    assert_eq!(o.code, 3, "{o:?}");

    let o = m("mdk_not_a_real_key").run(&["services", "list"]).await;
    assert_eq!(o.code, 4, "{o:?}");
    let read = app.create_key(&["read"]).await;
    let o = m(&read)
        .run(&["services", "create", "--name", "x", "--interval", "1m"])
        .await;
    assert_eq!(o.code, 4, "{o:?}");

    for args in [
        &["services", "list", "--nope"][..],
        &["services", "mute", "x", "--for", "2q"],
        &["maintenance", "create", "--global"],
        &["bogus"],
    ] {
        let o = m(app.admin_key()).run(args).await;
        assert_eq!(o.code, 2, "{args:?}: {o:?}");
        assert!(!o.stderr.contains("panicked"), "{o:?}");
    }
    // No server anywhere: a usage error, one line.
    let o = Medic::new(home.path()).run(&["services", "list"]).await;
    assert_eq!(o.code, 2, "{o:?}");
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    // A refused body: 5 with the server's words.
    let o = m(app.admin_key())
        .run(&[
            "services",
            "create",
            "--name",
            "bad",
            "--interval",
            "1m",
            "--priority",
            "p9",
        ])
        .await;
    assert_eq!(o.code, 5, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_the_key_and_stores_it_readable_by_the_owner_only() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config/medic/config.toml");

    // A wrong key is refused and nothing is written.
    let o = Medic::new(home.path())
        .stdin("mdk_wrong\n")
        .run(&["--server", &app.url(""), "--profile", "prod", "login"])
        .await;
    assert_eq!(o.code, 4, "{o:?}");
    assert!(!file.exists());

    let o = Medic::new(home.path())
        .stdin(&format!("{}\n", app.admin_key()))
        .run(&["--server", &app.url(""), "--profile", "prod", "login"])
        .await;
    ok(&o);
    assert!(
        !o.stdout.contains(app.admin_key()),
        "the key is echoed: {o:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("[profiles.prod]") && text.contains(app.admin_key()),
        "{text}"
    );

    // The profile is enough to talk to the server.
    let o = Medic::new(home.path())
        .run(&["--profile", "prod", "services", "list"])
        .await;
    ok(&o);
    let o = Medic::new(home.path())
        .env("MEDIC_PROFILE", "staging")
        .run(&["services", "list"])
        .await;
    assert_eq!(o.code, 2, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_registered_diffed_and_approved_by_another_person() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let alice = app.create_key_for("alice", &["admin"]).await;
    let bob = app.create_key_for("bob", &["admin"]).await;
    let script = home.path().join("rotate-logs.sh");

    std::fs::write(&script, "#!/bin/sh\nlogrotate -f /etc/logrotate.conf\n").unwrap();
    let path = script.to_str().unwrap();
    let o = Medic::on(home.path(), &app, &alice)
        .run(&["-o", "json", "scripts", "register", "-f", path])
        .await;
    ok(&o);
    let id = o.json()["script_id"].as_i64().unwrap().to_string();
    std::fs::write(
        &script,
        "#!/bin/sh\nset -e\nlogrotate /etc/logrotate.conf\n",
    )
    .unwrap();
    ok(&Medic::on(home.path(), &app, &alice)
        .run(&["scripts", "register", "-f", path])
        .await);

    let o = Medic::on(home.path(), &app, &bob)
        .run(&["scripts", "pending"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("rotate-logs.sh"), "{o:?}");
    let o = Medic::on(home.path(), &app, &bob)
        .run(&["scripts", "diff", &id])
        .await;
    ok(&o);
    assert!(o.stdout.contains("--- version 1 (pending)"), "{o:?}");
    assert!(o.stdout.contains("+++ version 2 (pending)"), "{o:?}");
    assert!(
        o.stdout.contains("-logrotate -f /etc/logrotate.conf\n"),
        "{o:?}"
    );
    assert!(
        o.stdout
            .contains("+set -e\n+logrotate /etc/logrotate.conf\n"),
        "{o:?}"
    );

    // The author's owner may not approve their own version (4); another person may.
    let o = Medic::on(home.path(), &app, &alice)
        .run(&["scripts", "approve", &id])
        .await;
    assert_eq!(o.code, 4, "{o:?}");
    assert!(o.stderr.contains("same owner"), "{o:?}");
    ok(&Medic::on(home.path(), &app, &bob)
        .run(&["scripts", "approve", &id, "--reason", "reviewed"])
        .await);
    let s = assert_ok(&app.admin().get(&format!("/v2/scripts/{id}")).await, 200);
    let v2 = s["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 2)
        .unwrap();
    assert_eq!(v2["status"], "approved");
    assert_eq!(v2["decision_reason"], "reviewed");
    let o = Medic::on(home.path(), &app, &bob)
        .run(&["-o", "json", "scripts", "pending"])
        .await;
    ok(&o);
    assert_eq!(o.json()["entries"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_job_runs_and_keeps_its_exit_code_when_medic_is_down() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = Medic::new(home.path())
        .env("MEDIC_URL", &format!("http://127.0.0.1:{port}"))
        .env("MEDIC_API_KEY", "mdk_any")
        .run(&[
            "run",
            "--name",
            "7",
            "--",
            "sh",
            "-c",
            "echo still ran; exit 7",
        ])
        .await;
    assert_eq!(o.code, 7, "{o:?}");
    assert_eq!(o.stdout, "still ran\n");
    assert!(
        o.stderr
            .contains("medic: warning: could not report the start"),
        "{o:?}"
    );
    assert!(
        o.stderr
            .contains("medic: warning: could not report the end (fail)"),
        "{o:?}"
    );

    // Without any configuration at all, the job still runs.
    let o = Medic::new(home.path())
        .run(&["run", "--name", "x", "--", "sh", "-c", "exit 0"])
        .await;
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.contains("warning"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_retry_after_is_waited_out_and_a_long_one_fails_with_the_time() {
    let app = TestApp::builder()
        .limits(RateLimits {
            management: 60,
            ..GENEROUS
        })
        .spawn()
        .await;
    let home = tempfile::tempdir().unwrap();
    // Spend the key's budget until the server refuses.
    let mut limited = false;
    for _ in 0..200 {
        if app.admin().get("/v2/services").await.status.as_u16() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the management limit never applied");
    let o = Medic::on(home.path(), &app, app.admin_key())
        .run(&["services", "list"])
        .await;
    ok(&o);
    assert!(
        o.stderr.contains("rate limited by the server; retrying in"),
        "{o:?}"
    );

    let app = TestApp::builder()
        .limits(RateLimits {
            management: 1,
            ..GENEROUS
        })
        .spawn()
        .await;
    ok(&Medic::on(home.path(), &app, app.admin_key())
        .run(&["services", "list"])
        .await);
    let o = Medic::on(home.path(), &app, app.admin_key())
        .run(&["services", "list"])
        .await;
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("rate limited; retry in"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_and_the_man_page_come_from_the_command_tree() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let o = Medic::new(home.path()).run(&["completions", shell]).await;
        ok(&o);
        assert!(o.stdout.contains("medic"), "{shell}");
        assert!(o.stdout.contains("services"), "{shell}");
    }
    let o = Medic::new(home.path()).run(&["man"]).await;
    ok(&o);
    assert!(
        o.stdout.contains(".TH medic"),
        "{}",
        &o.stdout[..200.min(o.stdout.len())]
    );
    // One page per command, so that the pages medic(1) names exist.
    let dir = home.path().join("man");
    ok(&Medic::new(home.path())
        .run(&["man", "--dir", dir.to_str().unwrap()])
        .await);
    let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(
        page("medic.1").contains(".TH medic 1"),
        "{}",
        page("medic.1")
    );
    assert!(
        page("medic.1").contains("medic\\-agents(1)"),
        "{}",
        page("medic.1")
    );
    assert!(page("medic-agents.1").contains(".TH medic-agents 1"));
    assert!(page("medic-agents-label.1").contains("\\-\\-remove"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_a_real_agent_is_waited_for_and_its_output_shown() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let admin = |home: &Path| Medic::on(home, &app, app.admin_key());

    // An agent key that grants a label; the agent connects with it.
    let o = admin(home.path())
        .run(&[
            "-o", "json", "api-keys", "create", "--name", "web-1", "--scope", "agent", "--label",
            "tier=web",
        ])
        .await;
    ok(&o);
    let agent_key = o.json()["key"].as_str().unwrap().to_owned();
    let (_agent, _) = crate::agents::connected_agent(
        &app,
        &agent_key,
        "web-1",
        "tier = \"web\"\n[[allow]]\nscript = \"greet\"\n",
    )
    .await;
    let o = admin(home.path())
        .run(&["agents", "list", "--label", "tier=web"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("web-1"), "{o:?}");
    let o = admin(home.path())
        .run(&["-o", "json", "agents", "list", "--label", "tier=db"])
        .await;
    ok(&o);
    assert_eq!(o.json()["entries"], json!([]));

    // Registered by one person, approved by another, run by label and waited for.
    let writer = app.create_key_for("wendy", &["write", "run", "read"]).await;
    let script = home.path().join("greet");
    std::fs::write(&script, "echo \"hello $MEDIC_PARAM_WHO\"\n").unwrap();
    ok(&Medic::on(home.path(), &app, &writer)
        .run(&["scripts", "register", "-f", script.to_str().unwrap()])
        .await);
    ok(&admin(home.path()).run(&["scripts", "approve", "1"]).await);
    let o = Medic::on(home.path(), &app, &writer)
        .run(&[
            "runs", "create", "--label", "tier=web", "--script", "greet", "--param", "WHO=ops",
            "--wait",
        ])
        .await;
    ok(&o);
    assert!(o.stdout.contains("hello ops"), "{o:?}");
    assert!(o.stderr.contains("on web-1: succeeded"), "{o:?}");

    let runs = assert_ok(&app.admin().get("/v2/runs").await, 200);
    let run_id = runs["entries"][0]["run_id"].as_str().unwrap().to_owned();
    let o = admin(home.path()).run(&["runs", "output", &run_id]).await;
    ok(&o);
    assert_eq!(o.stdout, "hello ops\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbooks_are_validated_applied_from_a_directory_and_executed() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let m = || Medic::on(home.path(), &app, app.admin_key());
    let dir = home.path().join("playbooks");
    std::fs::create_dir(&dir).unwrap();
    let doc = "name: pause\ndescription: Waits.\nsteps:\n  - name: nap\n    type: wait\n    duration: 1s\n";
    std::fs::write(dir.join("pause.yaml"), doc).unwrap();
    let d = dir.to_str().unwrap();

    // An invalid document: every problem with file and line, exit 5, nothing stored.
    let bad = home.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: broken\nsteps:\n  - name: x\n    type: teleport\n",
    )
    .unwrap();
    let o = m()
        .run(&["playbooks", "validate", "-f", bad.to_str().unwrap()])
        .await;
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains(&format!("{}:4", bad.display())), "{o:?}");
    ok(&m().run(&["playbooks", "validate", "-f", d]).await);

    // Apply prints the plan first: create, then unchanged, then an update.
    let o = m().run(&["playbooks", "apply", "-f", d, "--dry-run"]).await;
    ok(&o);
    assert!(
        o.stderr.contains("pause (") && o.stderr.contains("): create"),
        "{o:?}"
    );
    let listed = assert_ok(&app.admin().get("/v2/playbooks").await, 200);
    assert_eq!(listed["total_count"], 0);
    let o = m().run(&["playbooks", "apply", "-f", d]).await;
    ok(&o);
    assert!(o.stdout.contains("Applied 1 change(s)."), "{o:?}");
    let o = m().run(&["playbooks", "apply", "-f", d]).await;
    ok(&o);
    assert!(o.stderr.contains("unchanged (playbook 1 v1)"), "{o:?}");
    std::fs::write(dir.join("pause.yaml"), doc.replace("1s", "2s")).unwrap();
    let o = m().run(&["playbooks", "apply", "-f", d]).await;
    ok(&o);
    assert!(o.stderr.contains("update playbook 1: v1 -> v2"), "{o:?}");
    let o = m().run(&["playbooks", "show", "pause"]).await;
    ok(&o);
    assert!(o.stdout.contains("duration: 2s"), "{o:?}");

    // Execute by name and watch it to the end.
    let o = m()
        .run(&["-o", "json", "playbooks", "execute", "pause"])
        .await;
    ok(&o);
    let exec = o.json()["execution_id"].as_i64().unwrap().to_string();
    let o = m()
        .run(&["executions", "watch", &exec, "--interval", "1"])
        .await;
    ok(&o);
    assert!(o.stderr.contains("step 1 nap [wait]: completed"), "{o:?}");
    let o = m()
        .run(&["executions", "list", "--playbook", "pause"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("completed"), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_teams_targets_keys_heartbeats_snapshots_and_health() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let m = || Medic::on(home.path(), &app, app.admin_key());
    let sid = app.register("billing", 5).await.to_string();

    // A one-time window for two hours and a recurring one; list the active ones; end one.
    let o = m()
        .run(&[
            "-o",
            "json",
            "maintenance",
            "create",
            "--service",
            "billing",
            "--for",
            "2h",
            "--reason",
            "upgrade",
        ])
        .await;
    ok(&o);
    let w = o.json();
    assert_eq!(w["window"]["kind"], "one_time");
    assert_eq!(w["active"], true);
    let wid = w["window_id"].as_i64().unwrap().to_string();
    // A daily hour twelve hours from now: never active while the test runs.
    let hour = (chrono::Timelike::hour(&chrono::Utc::now()) + 12) % 24;
    let cron = format!("0 {hour} * * *");
    let o = m()
        .run(&[
            "-o",
            "json",
            "maintenance",
            "create",
            "--global",
            "--cron",
            &cron,
            "--duration",
            "1h",
        ])
        .await;
    ok(&o);
    assert_eq!(o.json()["window"]["duration_minutes"], 60);
    let o = m()
        .run(&["-o", "json", "maintenance", "list", "--active"])
        .await;
    ok(&o);
    assert_eq!(o.json().as_array().map(Vec::len), Some(1), "{o:?}");
    ok(&m().run(&["maintenance", "end", &wid]).await);
    assert_eq!(m().run(&["maintenance", "show", &wid]).await.code, 3);

    // A snooze is a window too.
    let o = m()
        .run(&["services", "snooze", "billing", "--for", "30m"])
        .await;
    ok(&o);
    assert_eq!(
        m().run(&["services", "snooze", "billing", "--for", "90s"])
            .await
            .code,
        2
    );

    // Teams and targets.
    let o = m()
        .run(&["-o", "json", "teams", "create", "--name", "payments"])
        .await;
    ok(&o);
    let team = o.json()["team_id"].as_i64().unwrap().to_string();
    let o = m()
        .run(&[
            "-o",
            "json",
            "targets",
            "create",
            "--team-id",
            &team,
            "--kind",
            "slack",
            "--config",
            r##"{"channel": "#pay"}"##,
        ])
        .await;
    ok(&o);
    let o = m().run(&["targets", "list", "--team-id", &team]).await;
    ok(&o);
    assert!(o.stdout.contains("slack"), "{o:?}");
    let o = m().run(&["teams", "list"]).await;
    ok(&o);
    assert!(o.stdout.contains("payments"), "{o:?}");

    // Heartbeats: send one by name, see it listed.
    ok(&m().run(&["heartbeats", "send", "billing"]).await);
    let o = m().run(&["-o", "json", "heartbeats", "list", &sid]).await;
    ok(&o);
    assert_eq!(o.json()["entries"][0]["status"], "UP");

    // Snapshots of the service's changes.
    ok(&m()
        .run(&["services", "update", "billing", "--team", "payments"])
        .await);
    let o = m()
        .run(&["-o", "json", "snapshots", "list", "--service", "billing"])
        .await;
    ok(&o);
    assert!(o.json()["total_count"].as_i64().unwrap() >= 1, "{o:?}");

    // Keys: the new key is shown once, listed without it, and revoked.
    let o = m()
        .run(&["api-keys", "create", "--name", "ci", "--scope", "read"])
        .await;
    ok(&o);
    let key = o.stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("mdk_"), "{o:?}");
    ok(&Medic::on(home.path(), &app, &key)
        .run(&["services", "list"])
        .await);
    let o = m().run(&["-o", "json", "api-keys", "list"]).await;
    ok(&o);
    assert!(!o.stdout.contains(&key));
    let listed = o.json();
    let id = listed
        .get("entries")
        .unwrap_or(&listed)
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ci")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&m().run(&["api-keys", "revoke", &id]).await);

    let o = Medic::new(home.path())
        .run(&["--server", &app.url(""), "health"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("healthy"), "{o:?}");
}

// ---- on a terminal --------------------------------------------------------------------------

/// `medic` on a real terminal: run under script(1), which makes a pseudo-terminal its
/// controlling terminal and its standard input, output and error. What the test writes is
/// typed on that terminal; what script prints is everything the terminal showed (echo included).
struct Tty {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    shown: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tty {
    fn spawn(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let line = std::iter::once(BIN)
            .chain(args.iter().copied())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SHELL", "/bin/sh")
            .env("TERM", "dumb")
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("script(1) runs (util-linux)");
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout");
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = shown.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            stdin,
            shown,
            reader: Some(reader),
        }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal has shown `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.shown().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {text:?}: {:?}",
                self.shown()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The terminal device of the program script runs (a child of script).
    fn device(&self) -> std::path::PathBuf {
        let parent = self.child.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                    continue;
                };
                // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1));
                if ppid != Some(parent.as_str()) {
                    continue;
                }
                if let Ok(tty) = std::fs::read_link(entry.path().join("fd/0"))
                    && tty.starts_with("/dev/pts")
                {
                    return tty;
                }
            }
            assert!(Instant::now() < deadline, "no terminal under script(1)");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the program has switched its terminal's echo off (`stty -a` says `-echo`).
    fn wait_echo_off(&self) {
        let device = self.device();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = Command::new("stty")
                .arg("-F")
                .arg(&device)
                .arg("-a")
                .output()
                .expect("stty runs");
            let settings = String::from_utf8_lossy(&o.stdout);
            if settings.split_whitespace().any(|w| w == "-echo") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "echo never switched off on {}: {settings}",
                device.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_line(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .expect("type on the terminal");
        stdin.flush().unwrap();
    }

    /// Waits for the program to end: its exit code and all the terminal showed.
    fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().expect("script ends");
        drop(self.stdin.take());
        self.reader.take().unwrap().join().unwrap();
        (status.code().unwrap_or(-1), self.shown())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_on_a_terminal_reads_the_key_without_echoing_it() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config/medic/config.toml");
    let url = app.url("");
    let key = app.admin_key().to_owned();
    let dir = home.path().to_owned();
    let (code, shown) = tokio::task::spawn_blocking(move || {
        let mut tty = Tty::spawn(&dir, &[], &["--server", &url, "--profile", "tty", "login"]);
        tty.wait_for("API key: ");
        // Typed only once echo is off, as a person would after the prompt: what the terminal
        // shows afterwards is what medic lets it show.
        tty.wait_echo_off();
        tty.type_line(&key);
        tty.finish()
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{shown:?}");
    assert!(shown.contains("Logged in to"), "{shown:?}");
    assert!(
        !shown.contains(app.admin_key()),
        "the key was echoed on the terminal: {shown:?}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("[profiles.tty]") && text.contains(app.admin_key()),
        "{text}"
    );
    ok(&Medic::new(home.path())
        .run(&["--profile", "tty", "services", "list"])
        .await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_granted_a_label_is_reached_by_runs_on_it_with_a_live_status_on_a_terminal() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let admin = |home: &Path| Medic::on(home, &app, app.admin_key());

    // A key without labels: the agent declares tier=db but carries nothing.
    let o = admin(home.path())
        .run(&[
            "-o", "json", "api-keys", "create", "--name", "db-1", "--scope", "agent",
        ])
        .await;
    ok(&o);
    let agent_key = o.json()["key"].as_str().unwrap().to_owned();
    let (_agent, _) = crate::agents::connected_agent(
        &app,
        &agent_key,
        "db-1",
        "tier = \"db\"\n[[allow]]\nscript = \"where\"\n",
    )
    .await;
    let writer = app.create_key_for("wendy", &["write", "run", "read"]).await;
    let script = home.path().join("where");
    std::fs::write(&script, "echo here\n").unwrap();
    ok(&Medic::on(home.path(), &app, &writer)
        .run(&["scripts", "register", "-f", script.to_str().unwrap()])
        .await);
    ok(&admin(home.path()).run(&["scripts", "approve", "1"]).await);
    let run_on_db = [
        "runs", "create", "--label", "tier=db", "--script", "where", "--wait",
    ];
    let o = Medic::on(home.path(), &app, &writer).run(&run_on_db).await;
    assert_eq!(o.code, 3, "no agent carries tier=db yet: {o:?}");

    // Bad input and a reader's key change nothing.
    let o = admin(home.path())
        .run(&["agents", "label", "db-1", "bad key!=x"])
        .await;
    assert_eq!(o.code, 5, "{o:?}");
    assert!(o.stderr.contains("labels"), "{o:?}");
    let o = Medic::on(home.path(), &app, &writer)
        .run(&["agents", "label", "db-1", "tier=db"])
        .await;
    assert_eq!(o.code, 4, "{o:?}");
    let o = admin(home.path()).run(&["agents", "label", "db-1"]).await;
    assert_eq!(o.code, 2, "{o:?}");
    let o = admin(home.path())
        .run(&["agents", "label", "nobody", "tier=db"])
        .await;
    assert_eq!(o.code, 3, "{o:?}");
    let o = admin(home.path())
        .run(&["-o", "json", "agents", "show", "db-1"])
        .await;
    ok(&o);
    assert_eq!(o.json()["label_grants"], json!({}), "{o:?}");

    // Granted: the connected agent carries it at once.
    let o = admin(home.path())
        .run(&["agents", "label", "db-1", "tier=db", "dc=eu-1"])
        .await;
    ok(&o);
    assert!(o.stdout.contains("Agent labels set."), "{o:?}");
    assert!(o.stdout.contains("does not declare dc=eu-1"), "{o:?}");
    let o = admin(home.path())
        .run(&["-o", "json", "agents", "list", "--label", "tier=db"])
        .await;
    ok(&o);
    assert_eq!(o.json()["entries"][0]["agent_id"], "db-1", "{o:?}");

    // Not on a terminal: one plain line per status, no control characters.
    let o = Medic::on(home.path(), &app, &writer).run(&run_on_db).await;
    ok(&o);
    assert!(o.stderr.contains("on db-1: succeeded\n"), "{o:?}");
    assert!(
        !o.stderr.contains('\r') && !o.stderr.contains('\x1b'),
        "{o:?}"
    );
    assert!(o.stdout.contains("here"), "{o:?}");

    // On a terminal: the status line is rewritten in place (carriage return, erase line).
    let url = app.url("");
    let dir = home.path().to_owned();
    let writer_key = writer.clone();
    let (code, shown) = tokio::task::spawn_blocking(move || {
        Tty::spawn(
            &dir,
            &[("MEDIC_URL", &url), ("MEDIC_API_KEY", &writer_key)],
            &run_on_db,
        )
        .finish()
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{shown:?}");
    assert!(shown.contains("on db-1: succeeded"), "{shown:?}");
    let statuses: Vec<&str> = shown.split("run ").skip(1).collect();
    let lines = shown.matches(" on db-1: ").count();
    assert!(lines >= 1, "{shown:?}");
    assert_eq!(
        shown.matches("\r\x1b[2Krun ").count(),
        lines,
        "every status line is drawn over the last one: {statuses:?}"
    );

    // Revoked: runs on that label find nobody again.
    let o = admin(home.path())
        .run(&["-o", "json", "agents", "label", "db-1", "--remove", "tier"])
        .await;
    ok(&o);
    assert_eq!(o.json()["label_grants"], json!({ "dc": "eu-1" }), "{o:?}");
    assert_eq!(o.json()["labels"], json!({}), "{o:?}");
    let o = Medic::on(home.path(), &app, &writer).run(&run_on_db).await;
    assert_eq!(o.code, 3, "{o:?}");
}

// ---- TLS --------------------------------------------------------------------------------------

/// The agent's test CA and the certificate it signed for `localhost` and 127.0.0.1.
fn tls_fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/fixtures/tls")
        .join(name)
}

/// A TLS front for `app` on 127.0.0.1 with the fixture certificate: its `https://` URL.
async fn tls_front(app: &TestApp) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(tls_fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = app.base.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                // A refused handshake (an untrusting client) just ends this connection.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = tokio::net::TcpStream::connect(&backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_are_one_line_with_exit_1_and_ca_cert_trusts_a_private_ca() {
    let app = TestApp::spawn().await;
    let home = tempfile::tempdir().unwrap();
    let https = tls_front(&app).await;
    let ca = tls_fixture("ca.pem");
    let ca = ca.to_str().unwrap();
    let on = |url: &str| {
        Medic::new(home.path())
            .env("MEDIC_URL", url)
            .env("MEDIC_API_KEY", app.admin_key())
    };
    #[track_caller]
    fn one_line_failure(o: &Out, code: i32, says: &str) {
        assert_eq!(o.code, code, "{o:?}");
        assert_eq!(o.stderr.lines().count(), 1, "one line: {o:?}");
        assert!(o.stderr.starts_with("medic: "), "{o:?}");
        assert!(o.stderr.contains(says), "{o:?}");
        assert!(!o.stderr.contains("panicked"), "{o:?}");
        assert!(o.stdout.is_empty(), "{o:?}");
    }

    // A certificate from a CA the CLI does not know: refused, and the way out is named.
    for args in [&["health"][..], &["services", "list"][..]] {
        let o = on(&https).run(args).await;
        one_line_failure(&o, 1, "certificate");
        assert!(o.stderr.contains("--ca-cert"), "{o:?}");
    }
    // A server that does not speak TLS at all.
    let plain_as_tls = app.url("").replace("http://", "https://");
    let o = on(&plain_as_tls).run(&["health"]).await;
    one_line_failure(&o, 1, "cannot reach");

    // Trusting the CA: the same server works, by flag or environment.
    let o = on(&https).run(&["--ca-cert", ca, "health"]).await;
    ok(&o);
    let o = on(&https)
        .env("MEDIC_CA_CERT", ca)
        .run(&["-o", "json", "services", "list"])
        .await;
    ok(&o);
    assert!(o.json()["entries"].is_array(), "{o:?}");
    // The server's own certificate is not a CA: pinning it that way is still refused.
    let o = on(&https)
        .run(&[
            "--ca-cert",
            tls_fixture("server.pem").to_str().unwrap(),
            "health",
        ])
        .await;
    assert_eq!(o.code, 1, "{o:?}");

    // A CA file that cannot be used is a usage error, before anything is sent.
    let o = on(&https)
        .run(&["--ca-cert", "/nonexistent/ca.pem", "health"])
        .await;
    one_line_failure(&o, 2, "/nonexistent/ca.pem");
    let junk = home.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let o = on(&https)
        .run(&["--ca-cert", junk.to_str().unwrap(), "health"])
        .await;
    one_line_failure(&o, 2, "no PEM certificate");
    // … except for a wrapped job, which runs anyway.
    let o = on(&https)
        .run(&[
            "--ca-cert",
            junk.to_str().unwrap(),
            "run",
            "--name",
            "nightly",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .await;
    assert_eq!(o.code, 7, "{o:?}");
    assert!(o.stderr.contains("warning"), "{o:?}");
}
