//! Agents through real boundaries: a real `medic-agent` process against a real server (connect,
//! registry, heartbeats on its service, reconnect after a server restart, revocation), and the
//! gateway's refusals seen by a raw WebSocket client.
//!
//! The agent binary belongs to another package, so `CARGO_BIN_EXE_medic-agent` does not exist
//! here; [`agent_binary`] builds it once per test process with the same cargo, target directory
//! and profile as this test binary (a no-op when it is up to date).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use medic_server::server;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{ADMIN_KEY, TestApp, assert_ok};

/// Builds `medic-agent` next to this test binary and returns its path.
fn agent_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // <target>/<profile>/deps/it-<hash>
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("profile directory");
        let target_dir = profile_dir.parent().expect("target directory");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile name");
        let profile = if profile == "debug" { "dev" } else { profile };
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "medic-agent",
                "--bin",
                "medic-agent",
            ])
            .args(["--profile", profile])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for medic-agent");
        assert!(status.success(), "building medic-agent failed");
        let binary = profile_dir.join("medic-agent");
        assert!(binary.is_file(), "{} missing", binary.display());
        binary
    })
}

/// A running `medic-agent`, killed when dropped.
pub struct AgentProcess {
    child: Child,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    pub fn start(server: &str, key: &str, agent_id: &str) -> Self {
        Self::start_with(server, key, agent_id, "")
    }

    /// Starts an agent whose configuration file ends with `extra` (e.g. `[[allow]]` entries).
    pub fn start_with(server: &str, key: &str, agent_id: &str, extra: &str) -> Self {
        Self::start_with_env(server, key, agent_id, extra, &[])
    }

    /// Like [`Self::start_with`], with these variables in the agent's own environment.
    pub fn start_with_env(
        server: &str,
        key: &str,
        agent_id: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().expect("agent directory");
        let credential = dir.path().join("credential");
        std::fs::write(&credential, key).unwrap();
        let run_as = if is_root() {
            "run_as = \"nobody\"\n"
        } else {
            ""
        };
        let config = format!(
            "server_url = \"ws://{server}\"\n\
             allow_insecure_ws = true\n\
             credential_file = \"{}\"\n\
             agent_id = \"{agent_id}\"\n\
             heartbeat_interval_seconds = 1\n\
             work_dir = \"{}\"\n\
             {run_as}\
             [labels]\n\
             role = \"it\"\n\
             {extra}",
            credential.display(),
            dir.path().join("work").display(),
        );
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config).unwrap();
        // The agent's log goes to a file, shown only when the test fails.
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let child = Command::new(agent_binary())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start medic-agent");
        Self { child, _dir: dir }
    }
}

impl AgentProcess {
    /// What the agent has logged so far (JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The agent's directory: its configuration, credential, log and work directory (where
    /// the run-id journal `recent-run-ids` lives).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self._dir.path().join("agent.log"));
            eprintln!("--- medic-agent log ---\n{}", log.unwrap_or_default());
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// GET with the admin key; the `results` of a 200 envelope, or `None` for a 404.
pub async fn admin_get(client: &reqwest::Client, base: &str, path: &str) -> Option<Value> {
    let r = client
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let body: Value = r.json().await.ok()?;
    Some(body["results"].clone())
}

/// Starts a real agent against `app` with `key` and `extra` configuration, and waits until the
/// server shows it connected; returns the process and the agent as the server sees it.
pub async fn connected_agent(
    app: &TestApp,
    key: &str,
    id: &str,
    extra: &str,
) -> (AgentProcess, Value) {
    let addr = app.base.trim_start_matches("http://");
    let agent = AgentProcess::start_with(addr, key, id, extra);
    let seen = wait_for_agent(
        &app.client,
        &app.base,
        id,
        Duration::from_secs(30),
        "the agent to connect",
        |a| a["connected"] == true,
    )
    .await;
    (agent, seen)
}

/// Polls `GET /v2/agents/{id}` until `check` holds, or fails after `timeout`.
pub async fn wait_for_agent(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(agent) = admin_get(client, base, &format!("/v2/agents/{id}")).await {
            if check(&agent) {
                return agent;
            }
            last = agent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}; last seen: {last:#}");
}

async fn heartbeat_count(client: &reqwest::Client, base: &str, service_id: i64) -> usize {
    admin_get(
        client,
        base,
        &format!("/v2/services/{service_id}/heartbeats?limit=250"),
    )
    .await
    .and_then(|page| page["entries"].as_array().map(Vec::len))
    .unwrap_or(0)
}

/// One line of /proc or /etc/os-release, for comparing with what the agent reported.
fn proc_value(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once([':', '='])?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Host facts (sysinfo) arrive in the hello, are shown by `GET /v2/agents/{id}` and are
/// reported again every `host_facts_interval_seconds` through heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_reports_its_host_facts_at_connect_and_again_later() {
    let app = TestApp::spawn().await;
    let key = app.create_key(&["agent"]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _agent = AgentProcess::start_with_env(
        &addr,
        &key,
        "facts-1",
        "",
        &[("MEDIC_AGENT_HOST_FACTS_INTERVAL_SECONDS", "2")],
    );
    let agent = wait_for_agent(
        &app.client,
        &app.base,
        "facts-1",
        Duration::from_secs(30),
        "host facts",
        |a| a["host"].is_object(),
    )
    .await;
    let host = &agent["host"];
    // What this very host says, read independently of the agent.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(host["kernel_version"], kernel.trim(), "{host:#}");
    let mem_kib: u64 = proc_value("/proc/meminfo", "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert_eq!(host["memory_total_bytes"], mem_kib * 1024, "{host:#}");
    let available = host["memory_available_bytes"].as_u64().unwrap();
    assert!(available > 0 && available <= mem_kib * 1024, "{host:#}");
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    assert_eq!(host["cpus"], cpus, "{host:#}");
    if let Some(name) = proc_value("/etc/os-release", "NAME") {
        assert_eq!(host["os_name"], name, "{host:#}");
    }
    assert_eq!(host["arch"], std::env::consts::ARCH, "{host:#}");
    assert_eq!(
        host["load_average"].as_array().map(Vec::len),
        Some(3),
        "{host:#}"
    );
    let disk = host["root_disk_total_bytes"].as_u64().unwrap();
    assert!(
        disk > 0 && host["root_disk_available_bytes"].as_u64().unwrap() <= disk,
        "{host:#}"
    );
    let boot_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let uptime = host["uptime_seconds"].as_u64().unwrap() as f64;
    assert!(uptime > 0.0 && uptime <= boot_uptime + 1.0, "{host:#}");
    let first = host["reported_at"].as_str().unwrap().to_owned();

    // Reported again by a heartbeat, on the same session.
    let later = wait_for_agent(
        &app.client,
        &app.base,
        "facts-1",
        Duration::from_secs(30),
        "a second host-facts report",
        |a| {
            a["host"]["reported_at"]
                .as_str()
                .is_some_and(|t| t > first.as_str())
        },
    )
    .await;
    assert_eq!(later["session_id"], agent["session_id"]);
    assert_eq!(later["host"]["kernel_version"], kernel.trim());
}

/// A label selector's preview (`GET /v2/agents?label.<key>=<value>`, the agents `labels` in
/// `POST /v2/runs` would reach) shows each matched agent's host facts as its hello reported
/// them, so an operator sees the systems a run would land on before running anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_selector_preview_shows_each_matched_agents_host_facts() {
    let app = TestApp::spawn().await;
    let key = app
        .create_key_with(
            &json!({ "name": "preview-1", "scopes": ["agent"], "labels": { "role": "it" } }),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let _agent = AgentProcess::start(&addr, &key, "preview-1");
    let agent = wait_for_agent(
        &app.client,
        &app.base,
        "preview-1",
        Duration::from_secs(30),
        "host facts",
        |a| a["host"].is_object(),
    )
    .await;

    let preview = admin_get(&app.client, &app.base, "/v2/agents?label.role=it")
        .await
        .unwrap();
    assert_eq!(preview["total_count"], 1, "{preview:#}");
    let matched = &preview["entries"][0];
    assert_eq!(matched["agent_id"], "preview-1");
    let host = &matched["host"];
    assert!(
        host.is_object(),
        "the preview shows no host facts: {matched:#}"
    );
    // The facts are this very host's, read independently of the agent and the server.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(host["kernel_version"], kernel.trim(), "{host:#}");
    assert_eq!(host["arch"], std::env::consts::ARCH, "{host:#}");
    if let Some(name) = proc_value("/etc/os-release", "NAME") {
        assert_eq!(host["os_name"], name, "{host:#}");
    }
    for fact in [
        "os_version",
        "cpus",
        "memory_total_bytes",
        "load_average",
        "root_disk_total_bytes",
        "uptime_seconds",
        "reported_at",
    ] {
        assert!(host.get(fact).is_some(), "{fact} missing: {host:#}");
    }
    // The same report as the agent's own page.
    assert_eq!(
        host["reported_at"], agent["host"]["reported_at"],
        "{host:#}"
    );
    assert_eq!(
        host["memory_total_bytes"],
        agent["host"]["memory_total_bytes"]
    );
    // A selector that reaches no agent previews nothing.
    let none = admin_get(&app.client, &app.base, "/v2/agents?label.role=db")
        .await
        .unwrap();
    assert_eq!(none["total_count"], 0, "{none:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_connects_heartbeats_survives_a_restart_and_is_revoked() {
    let app = TestApp::spawn().await;
    // The key grants the label the agent declares (`role = "it"`).
    let key = app
        .create_key_with(
            &json!({ "name": "it-host-1", "scopes": ["agent"], "labels": { "role": "it" } }),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let addr = app.base.trim_start_matches("http://").to_owned();
    let client = app.client.clone();
    let agent_process = AgentProcess::start(&addr, &key, "it-host-1");

    // Connected, with what the hello said.
    let agent = wait_for_agent(
        &client,
        &app.base,
        "it-host-1",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;
    assert_eq!(agent["connected"], true);
    assert_eq!(agent["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(agent["os"], std::env::consts::OS);
    assert_eq!(agent["arch"], std::env::consts::ARCH);
    assert_eq!(agent["labels"], json!({"role": "it"}));
    assert!(
        agent["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let first_session = agent["session_id"].as_str().unwrap().to_owned();
    let list = admin_get(&client, &app.base, "/v2/agents?connected=1")
        .await
        .unwrap();
    assert_eq!(list["total_count"], 1);
    assert_eq!(list["entries"][0]["agent_id"], "it-host-1");
    // By label: `label.<key>=<value>`, every one must match.
    for (query, n) in [
        ("label.role=it", 1),
        ("label.role=it&connected=1", 1),
        ("label.role=db", 0),
        ("label.role=it&label.env=prod", 0),
    ] {
        let list = admin_get(&client, &app.base, &format!("/v2/agents?{query}"))
            .await
            .unwrap();
        assert_eq!(list["total_count"], n, "{query}: {list:#}");
    }
    let r = app.admin().get("/v2/agents?label.bad%20key=x").await;
    crate::support::assert_error_contains(&r, 400, "label");

    // Its heartbeats land on its own service, `agent:<id>`.
    let service_id = agent["service_id"].as_i64().expect("service_id");
    let service = admin_get(&client, &app.base, &format!("/v2/services/{service_id}"))
        .await
        .unwrap();
    assert_eq!(service["heartbeat_name"], "agent:it-host-1", "{service:#}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat_count(&client, &app.base, service_id).await < 2 {
        assert!(Instant::now() < deadline, "no agent heartbeats recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = app.metrics().await;
    assert!(metrics.contains("medic_agents_connected"), "{metrics}");

    // The server restarts on the same address and database; the agent comes back by itself.
    let stopped = app.shutdown().await;
    let listener = TcpListener::bind(&addr)
        .await
        .expect("rebind the same port");
    let restarted =
        server::start_with_clock(stopped.config.clone(), listener, stopped.clock.clone())
            .await
            .expect("server restarts");
    let base = format!("http://{}", restarted.addr);
    let agent = wait_for_agent(
        &client,
        &base,
        "it-host-1",
        Duration::from_secs(30),
        "reconnect",
        |a| a["status"] == "connected" && a["session_id"] != first_session.as_str(),
    )
    .await;
    let second_session = agent["session_id"].as_str().unwrap().to_owned();
    let before = heartbeat_count(&client, &base, service_id).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat_count(&client, &base, service_id).await <= before {
        assert!(Instant::now() < deadline, "no heartbeats after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Revocation closes the session and refuses every reconnection.
    let r = client
        .delete(format!("{base}/v2/agents/it-host-1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"]["status"], "revoked", "{body:#}");
    // The session is closed, and the agent, dialling again, is refused at its next hello: its
    // log shows the refusal twice (the close, then a reconnection).
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent_process
        .log()
        .matches("this agent was revoked")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the agent was not refused again: {}",
            agent_process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agent = admin_get(&client, &base, "/v2/agents/it-host-1")
        .await
        .unwrap();
    assert_eq!(agent["status"], "revoked");
    assert_eq!(agent["connected"], false);
    let audit = admin_get(&client, &base, "/v2/audit-logs?action_type=agent_revoked")
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit:#}");
    assert_eq!(entries[0]["details"]["agent_id"], "it-host-1");
    assert_eq!(entries[0]["service_id"], agent["service_id"], "{audit:#}");
    assert_eq!(
        agent["session_id"],
        second_session.as_str(),
        "a revoked agent reconnected"
    );
    let list = admin_get(&client, &base, "/v2/agents?connected=1")
        .await
        .unwrap();
    assert_eq!(list["total_count"], 0);
    restarted.shutdown().await;
}

// ---- the gateway's refusals, seen by a raw WebSocket client ---------------------------------

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn dial(app: &TestApp, key: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let url = format!("{}/v2/agents/connect", app.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

#[track_caller]
fn http_status(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got a WebSocket"),
    }
}

fn hello(agent_id: &str, min: u32, max: u32) -> String {
    json!({
        "type": "hello", "protocol_version": max, "min_protocol_version": min,
        "agent_id": agent_id, "hostname": "raw.example.com", "agent_version": "0.0.1",
        "os": "linux", "arch": "x86_64",
    })
    .to_string()
}

/// The next text frame as JSON (skipping pings and pongs).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Expects `error` with `code`, then a close frame with `close` and the code as its reason.
async fn expect_refusal(ws: &mut Ws, code: &str, close: u16) {
    let error = next_json(ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert!(!error["message"].as_str().unwrap().is_empty());
    let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .expect("a close in time");
    match frame {
        Some(Ok(Message::Close(Some(c)))) => {
            assert_eq!(c.code, CloseCode::from(close), "{c:?}");
            assert_eq!(c.reason.as_str(), code);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_bad_credentials_before_the_upgrade() {
    let app = TestApp::spawn().await;
    assert_eq!(http_status(dial(&app, None).await), 401);
    assert_eq!(http_status(dial(&app, Some("mdk_nonsense")).await), 401);
    let read = app.create_key(&["read"]).await;
    assert_eq!(http_status(dial(&app, Some(&read)).await), 403);
    let admin = app.create_key(&["admin"]).await;
    assert_eq!(http_status(dial(&app, Some(&admin)).await), 403);
    // A plain GET (no upgrade) with a good key is a JSON 400, not a hang.
    let agent = app.create_key(&["agent"]).await;
    let r = app.with_key(&agent).get("/v2/agents/connect").await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_closes_bad_sessions_with_clear_reasons_and_spares_the_others() {
    let app = TestApp::spawn().await;
    let key = app.create_key(&["agent"]).await;

    // A good session, open throughout.
    let mut good = dial(&app, Some(&key)).await.unwrap();
    good.send(Message::Text(hello("good-1", 1, 1).into()))
        .await
        .unwrap();
    let welcome = next_json(&mut good).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["protocol_version"], 1);
    assert!(welcome["heartbeat_interval_ms"].as_u64().unwrap() > 0);

    let cases: Vec<(Message, &str, u16)> = vec![
        (Message::Text("not json".into()), "malformed", 1002),
        (Message::Text(r#"{"type":"launch_missiles"}"#.into()), "malformed", 1002),
        (
            Message::Text(r#"{"type":"heartbeat","seq":0,"sent_at":"2026-01-01T00:00:00.000Z","uptime_seconds":1,"running_runs":0}"#.into()),
            "unexpected_message",
            1002,
        ),
        (Message::Text(hello("old-1", 7, 9).into()), "unsupported_version", 1008),
        (Message::Text(hello("../etc", 1, 1).into()), "malformed", 1002),
        (Message::Binary(vec![1, 2, 3].into()), "malformed", 1003),
        (
            Message::Text("x".repeat(medic_protocol::MAX_FRAME_BYTES + 1).into()),
            "frame_too_large",
            1009,
        ),
    ];
    for (frame, code, close) in cases {
        let mut ws = dial(&app, Some(&key)).await.unwrap();
        ws.send(frame).await.unwrap();
        expect_refusal(&mut ws, code, close).await;
    }

    // After the handshake, a frame of the wrong direction closes only that session.
    let mut other = dial(&app, Some(&key)).await.unwrap();
    other
        .send(Message::Text(hello("other-1", 1, 1).into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut other).await["type"], "welcome");
    other
        .send(Message::Text(r#"{"type":"ack","run_id":"r1"}"#.into()))
        .await
        .unwrap();
    expect_refusal(&mut other, "malformed", 1002).await;

    // The good session is untouched: it still answers pings and takes heartbeats.
    good.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), good.next())
        .await
        .expect("a pong in time")
        .expect("open")
        .expect("frame");
    assert!(matches!(pong, Message::Pong(_)), "{pong:?}");
    good.send(Message::Text(
        r#"{"type":"heartbeat","seq":0,"sent_at":"2026-01-01T00:00:00.000Z","uptime_seconds":1,"running_runs":0}"#.into(),
    ))
    .await
    .unwrap();
    let agent = app.admin().get("/v2/agents/good-1").await;
    let agent = assert_ok(&agent, 200);
    assert_eq!(agent["status"], "connected", "{agent:#}");

    // A second connection with the same id replaces the first.
    let mut newer = dial(&app, Some(&key)).await.unwrap();
    newer
        .send(Message::Text(hello("good-1", 1, 1).into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut newer).await["type"], "welcome");
    expect_refusal(&mut good, "session_replaced", 1008).await;
    let agent = assert_ok(&app.admin().get("/v2/agents/good-1").await, 200);
    assert_eq!(agent["status"], "connected", "{agent:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_agents_are_refused_after_the_hello() {
    let app = TestApp::spawn().await;
    let key = app.create_key(&["agent"]).await;
    let mut ws = dial(&app, Some(&key)).await.unwrap();
    ws.send(Message::Text(hello("gone-1", 1, 1).into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");

    let r = app.admin().delete("/v2/agents/gone-1").await;
    assert_eq!(assert_ok(&r, 200)["status"], "revoked");
    expect_refusal(&mut ws, "unauthorized", 1008).await;

    let mut again = dial(&app, Some(&key)).await.unwrap();
    again
        .send(Message::Text(hello("gone-1", 1, 1).into()))
        .await
        .unwrap();
    expect_refusal(&mut again, "unauthorized", 1008).await;

    // The routes: unknown agents are 404, revoking needs admin, revoking twice is fine.
    assert_eq!(app.admin().get("/v2/agents/nobody").await.status, 404);
    assert_eq!(app.admin().delete("/v2/agents/nobody").await.status, 404);
    let reader = app.create_key(&["read"]).await;
    assert_eq!(
        app.with_key(&reader)
            .delete("/v2/agents/gone-1")
            .await
            .status,
        403
    );
    assert_eq!(
        app.with_key(&reader).get("/v2/agents/gone-1").await.status,
        200
    );
    let r = app.admin().delete("/v2/agents/gone-1").await;
    assert_eq!(assert_ok(&r, 200)["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_id_stays_with_its_key_until_that_key_is_revoked() {
    let app = TestApp::spawn().await;
    let first = app
        .create_key_with(&json!({ "name": "host-a", "scopes": ["agent"] }))
        .await;
    let second = app
        .create_key_with(&json!({ "name": "host-b", "scopes": ["agent"] }))
        .await;
    let (first_key, first_id) = (
        first["key"].as_str().unwrap(),
        first["id"].as_str().unwrap(),
    );
    let (second_key, second_id) = (
        second["key"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );

    let mut ws = dial(&app, Some(first_key)).await.unwrap();
    ws.send(Message::Text(hello("bound-1", 1, 1).into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    ws.close(None).await.unwrap();
    let agent = assert_ok(&app.admin().get("/v2/agents/bound-1").await, 200);
    assert_eq!(agent["key_id"], first_id);

    // Another agent key cannot take the id while the first key is usable.
    let mut thief = dial(&app, Some(second_key)).await.unwrap();
    thief
        .send(Message::Text(hello("bound-1", 1, 1).into()))
        .await
        .unwrap();
    expect_refusal(&mut thief, "unauthorized", 1008).await;

    // Rotation: once the first key is revoked, the new key takes the id over.
    let r = app
        .admin()
        .delete(&format!("/v2/api-keys/{first_id}"))
        .await;
    assert_ok(&r, 200);
    let mut moved = dial(&app, Some(second_key)).await.unwrap();
    moved
        .send(Message::Text(hello("bound-1", 1, 1).into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut moved).await["type"], "welcome");
    let agent = assert_ok(&app.admin().get("/v2/agents/bound-1").await, 200);
    assert_eq!(agent["key_id"], second_id);
}
