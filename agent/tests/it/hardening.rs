//! What an approved script must not be able to do to the agent that runs it, tried for real: a
//! real `medic-agent` process against a scripted server (as in `session.rs`), started the way
//! the packaged unit starts it when the tests run as root — as an unprivileged user holding
//! only `CAP_SETUID` and `CAP_SETGID` (ambient), scripts running as another user.
//!
//! Each attack is one a script found on an agent that ran scripts as its own user: reading the
//! agent's environment through `/proc/$PPID/environ`, truncating the run-id journal so that a
//! replayed run id runs twice, and rewriting the script between the hash check and `exec`
//! (covered in `exec.rs`, where it needs no server).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use medic_agent::exec::{RunAs, sha256_hex};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{TempDir, is_root};

const KEY: &str =
    "mdk_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000";
/// A value in the agent's environment that no script may see.
const SECRET: &str = "agent-environment-secret-7f3a";

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// How the agent process is started.
#[derive(Clone)]
pub(crate) enum Start {
    /// As the caller (the tests' own user), scripts as that user too.
    Caller,
    /// As `agent` (a user name), with nothing else: scripts run as that user too.
    Unprivileged { agent: RunAs },
    /// As `agent` with ambient `CAP_SETUID` and `CAP_SETGID`, as the packaged unit does;
    /// `run_as` names the scripts' user.
    WithSetuidCapabilities { agent: RunAs, scripts: RunAs },
}

pub(crate) fn account(name: &str) -> Option<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    RunAs::from_passwd(name, &passwd)
}

/// An unprivileged agent running scripts as its own user: the caller, or `daemon` as root.
pub(crate) fn own_user() -> Option<Start> {
    if !is_root() {
        return Some(Start::Caller);
    }
    let agent = account("daemon");
    if agent.is_none() {
        eprintln!("skipped: no user daemon");
    }
    agent.map(|agent| Start::Unprivileged { agent })
}

/// An agent directory (binary, configuration, credential, work directory) that outlives the
/// agent processes started on it, so a restart finds the same journal.
pub(crate) struct Host {
    pub(crate) dir: TempDir,
    start: Start,
    port: u16,
}

impl Host {
    pub(crate) fn new(start: Start, port: u16) -> Self {
        let dir = TempDir::create();
        // The tests' target directory may be closed to other users: the agent runs from here.
        let bin = dir.path().join("medic-agent");
        std::fs::copy(env!("CARGO_BIN_EXE_medic-agent"), &bin).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("credential"), format!("{KEY}\n")).unwrap();
        if let Start::Unprivileged { agent } | Start::WithSetuidCapabilities { agent, .. } = &start
        {
            for path in [dir.path().to_owned(), dir.path().join("credential")] {
                std::os::unix::fs::chown(&path, Some(agent.uid), Some(agent.gid)).unwrap();
            }
        }
        let host = Self { dir, start, port };
        host.write_config("");
        host
    }

    /// Writes the agent's configuration: the `probe` script allowed, then `extra`.
    pub(crate) fn write_config(&self, extra: &str) {
        let run_as = match &self.start {
            Start::WithSetuidCapabilities { scripts, .. } => {
                format!("run_as = \"{}\"\n", scripts.name)
            }
            _ => String::new(),
        };
        let config = format!(
            "server_url = \"ws://127.0.0.1:{}\"\n\
             allow_insecure_ws = true\n\
             agent_id = \"hardening-test\"\n\
             credential_file = \"{}\"\n\
             work_dir = \"{}\"\n\
             {run_as}\
             [[allow]]\n\
             script = \"probe\"\n\
             {extra}",
            self.port,
            self.dir.path().join("credential").display(),
            self.dir.path().join("work").display(),
        );
        std::fs::write(self.dir.path().join("agent.toml"), config).unwrap();
    }

    pub(crate) fn journal(&self) -> PathBuf {
        self.dir.path().join("work").join("recent-run-ids")
    }

    /// Starts `medic-agent run` on this directory, with [`SECRET`] in its environment.
    pub(crate) fn spawn(&self) -> Running {
        self.spawn_through("exec \"$@\"")
    }

    /// [`Self::spawn`], through `sh -c shell` (which ends with `exec "$@"`).
    pub(crate) fn spawn_through(&self, shell: &str) -> Running {
        let bin = self.dir.path().join("medic-agent");
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(shell).arg("sh");
        match &self.start {
            Start::Caller => {}
            Start::Unprivileged { agent } => {
                command
                    .arg("setpriv")
                    .arg(format!("--reuid={}", agent.uid))
                    .arg(format!("--regid={}", agent.gid))
                    .arg("--init-groups")
                    .arg("--");
            }
            Start::WithSetuidCapabilities { agent, .. } => {
                command
                    .arg("setpriv")
                    .arg(format!("--reuid={}", agent.uid))
                    .arg(format!("--regid={}", agent.gid))
                    .arg("--init-groups")
                    .arg("--inh-caps=+setuid,+setgid")
                    .arg("--ambient-caps=+setuid,+setgid")
                    .arg("--");
            }
        }
        let log = std::fs::File::create(self.dir.path().join("agent.log")).unwrap();
        let child = command
            .arg(&bin)
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .arg("run")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AGENT_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Running {
            child,
            log: self.dir.path().join("agent.log"),
        }
    }

    pub(crate) async fn connect(&self, listener: &TcpListener) -> (Running, Ws) {
        let agent = self.spawn();
        let ws = accept(listener, &agent).await;
        assert_eq!(self.port, listener.local_addr().unwrap().port());
        (agent, ws)
    }
}

/// A running agent: killed when dropped; its log is printed if the test failed.
pub(crate) struct Running {
    pub(crate) child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- medic-agent log ---\n{log}");
        }
    }
}

/// Accepts the agent's connection and completes the handshake.
pub(crate) async fn accept(listener: &TcpListener, agent: &Running) -> Ws {
    accept_hello(listener, agent).await.0
}

/// [`accept`], also returning the agent's hello.
pub(crate) async fn accept_hello(listener: &TcpListener, agent: &Running) -> (Ws, Value) {
    let accepted = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await;
    let Ok(Ok((tcp, _))) = accepted else {
        let log = std::fs::read_to_string(&agent.log).unwrap_or_default();
        panic!("the agent did not dial; its log:\n{log}");
    };
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    send(
        &mut ws,
        json!({
            "type": "welcome", "protocol_version": 1, "session_id": "s",
            "heartbeat_interval_ms": 1000, "server_time": "2026-01-01T00:00:00.000Z",
            "server_version": "test",
        }),
    )
    .await;
    (ws, hello)
}

/// The next message other than a heartbeat.
pub(crate) async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(text) = frame {
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["type"] != "heartbeat" {
                return v;
            }
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

pub(crate) fn probe(run_id: &str, content: &str, parameters: Value) -> Value {
    json!({
        "type": "run_request", "run_id": run_id, "script": "probe", "version": 1,
        "interpreter": "sh", "content": content, "sha256": sha256_hex(content.as_bytes()),
        "approved": true, "timeout_seconds": 30, "parameters": parameters,
    })
}

/// Sends `request` and returns the run's `run_result` (after its `run_accepted`).
pub(crate) async fn run(ws: &mut Ws, request: Value) -> Value {
    let run_id = request["run_id"].clone();
    send(ws, request).await;
    loop {
        let reply = next(ws).await;
        assert_eq!(reply["run_id"], run_id, "{reply}");
        match reply["type"].as_str() {
            Some("run_accepted") => continue,
            Some("run_result") => {
                send(ws, json!({"type": "ack", "run_id": run_id})).await;
                return reply;
            }
            _ => panic!("expected a result: {reply}"),
        }
    }
}

const READ_ENVIRON: &str =
    "(tr '\\000' '\\n' </proc/$PPID/environ) 2>/dev/null | grep -c AGENT_SECRET= || true\n";

/// An unprivileged agent that runs scripts as its own user (no `run_as`, as a developer runs
/// it) still keeps its environment from them: the agent is not dumpable, so `/proc/<agent>/`
/// is closed to its own user's other processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_cannot_read_the_agents_environment() {
    let Some(start) = own_user() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host::new(start, listener.local_addr().unwrap().port());
    let (_agent, mut ws) = host.connect(&listener).await;
    let result = run(&mut ws, probe("r-environ", READ_ENVIRON, json!({}))).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let out = result["stdout"].as_str().unwrap();
    assert_eq!(
        out, "0\n",
        "the script read the agent's environment: {result}"
    );
    assert!(!out.contains(SECRET));
}

/// The packaged way: the agent runs as an unprivileged user with only `CAP_SETUID` and
/// `CAP_SETGID`, scripts as the separate `run_as` user, with no capabilities and none of the
/// agent's groups. Such a script can neither read the agent's environment nor truncate the
/// run-id journal, so after a restart a replayed run id is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_run_as_a_separate_user_that_cannot_touch_the_agent() {
    if !is_root() {
        eprintln!("skipped: needs root to start the agent as another user");
        return;
    }
    let (Some(agent), Some(scripts)) = (account("daemon"), account("nobody")) else {
        eprintln!("skipped: no users daemon and nobody");
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let start = Start::WithSetuidCapabilities {
        agent: agent.clone(),
        scripts: scripts.clone(),
    };
    let host = Host::new(start, listener.local_addr().unwrap().port());
    let journal = host.journal();

    let (first, mut ws) = host.connect(&listener).await;
    let attack = format!(
        "id -u\n\
         id -G\n\
         grep '^CapEff:' /proc/self/status | tr -d '\\t'\n\
         {READ_ENVIRON}\
         (: >\"$MEDIC_PARAM_JOURNAL\") 2>/dev/null && echo truncated\n\
         true\n"
    );
    let replayed = probe(
        "r-replay",
        &attack,
        json!({"JOURNAL": journal.display().to_string()}),
    );
    let result = run(&mut ws, replayed.clone()).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{result}");
    assert_eq!(lines[0], scripts.uid.to_string(), "script user: {result}");
    assert_eq!(
        lines[1],
        scripts.gid.to_string(),
        "the script kept other groups: {result}"
    );
    assert_eq!(lines[2], "CapEff:0000000000000000", "{result}");
    assert_eq!(lines[3], "0", "the script read the agent's environment");
    assert!(
        std::fs::read_to_string(&journal)
            .unwrap()
            .contains("r-replay"),
        "the journal was truncated"
    );
    assert!(!stdout.contains("truncated"));

    // The agent restarts; the same run id is delivered again and refused from the journal.
    drop(ws);
    drop(first);
    let (_second, mut ws) = host.connect(&listener).await;
    send(&mut ws, replayed).await;
    let reply = next(&mut ws).await;
    assert_eq!(reply["type"], "run_skipped", "{reply}");
    assert_eq!(reply["reason"], "duplicate", "{reply}");
    assert_owned_by(&journal, agent.uid);
}

#[track_caller]
fn assert_owned_by(path: &Path, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(path).unwrap().uid(), uid, "{path:?}");
}

/// A descriptor the agent inherited from whoever started it (a shell redirection, a service
/// manager's socket) never reaches a script: scripts hold only standard input, output, error
/// and the script itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_inherit_no_descriptor_of_the_agents_parent() {
    let Some(start) = own_user() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host::new(start, listener.local_addr().unwrap().port());
    let leaked = host.dir.path().join("inherited");
    std::fs::write(&leaked, "a file the agent's parent left open\n").unwrap();
    let agent = host.spawn_through(&format!("exec 7<'{}'; exec \"$@\"", leaked.display()));
    let mut ws = accept(&listener, &agent).await;
    let list = "for fd in /proc/$$/fd/*; do readlink \"$fd\"; done\n";
    let result = run(&mut ws, probe("r-fds", list, json!({}))).await;
    let stdout = result["stdout"].as_str().unwrap();
    assert!(!stdout.contains("inherited"), "{stdout}");
}
