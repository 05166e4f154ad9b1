//! Crashes at every step boundary, through real processes: a `medic-server` process is killed
//! with SIGKILL and started again on the same database and address — with the execution
//! committed but its first step not yet started, while a webhook step's request is held by the
//! receiver, during a `wait`, and while a real `medic-agent` runs the script step. The execution
//! completes; the receiver saw each webhook once (by its `Idempotency-Key`), the webhook that
//! was in flight ended `interrupted` and was not sent again, the wait kept its deadline, and
//! the agent ran the script once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use medic_server::engine::{Engine, EngineSettings};
use medic_server::playbook::machine::{Event, OwnerId};
use medic_server::store::{PoolOptions, Store};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::db::TestDb;
use crate::support::{ADMIN_KEY, Reply, assert_ok, key_for_owner, send};
use crate::support_recorder::{Answer, Recorder};

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_execution_killed_at_every_step_boundary_completes_each_step_once() {
        super::killed_at_every_step_boundary(crate::db::sqlite().await).await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_execution_killed_at_every_step_boundary_completes_each_step_once() {
        let Some(db) = crate::db::postgres().await else {
            return;
        };
        super::killed_at_every_step_boundary(db).await;
    }
}

/// A `medic-server` process on a fixed port, killed (SIGKILL) when dropped.
struct ServerProcess {
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    fn start(db_url: &str, port: u16, dir: &Path, generation: u32) -> Self {
        let log = dir.join(format!("server-{generation}.log"));
        let out = std::fs::File::create(&log).expect("server log");
        let child = Command::new(env!("CARGO_BIN_EXE_medic-server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("PORT", port.to_string())
            .env("MEDIC_ADMIN_API_KEY", ADMIN_KEY)
            .env("MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
            // A dead worker's executions are taken over after 5 s (PostgreSQL; SQLite resumes
            // them at start).
            .env("MEDIC_PLAYBOOK_LEASE_SECONDS", "5")
            .env("MEDIC_PLAYBOOK_RECHECK_SECONDS", "1")
            .env("MEDIC_LOG_LEVEL", "info")
            .current_dir(dir)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("medic-server starts");
        Self { child, log }
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
        self.log = PathBuf::new();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() && !self.log.as_os_str().is_empty() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- medic-server log (tail) ---");
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: Method, path: &str, key: &str, body: Option<&Value>) -> Reply {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        send(rb).await
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .http
                .get(format!("{}/health/ready", self.base))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls execution `id` until `done` holds (120 s at most).
    async fn until(&self, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .call(
                    Method::GET,
                    &format!("/v2/executions/{id}"),
                    ADMIN_KEY,
                    None,
                )
                .await;
            let e = assert_ok(&r, 200);
            if done(&e) {
                return e;
            }
            assert!(Instant::now() < deadline, "never {what}: {e:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn step<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn reopen(url: &str) -> std::sync::Arc<dyn Store> {
    medic_server::store::connect(
        url,
        &PoolOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_secs(30),
        },
    )
    .await
    .expect("open the database")
}

#[allow(clippy::too_many_lines)]
async fn killed_at_every_step_boundary(db: TestDb) {
    let author = key_for_owner(&*db.store, "script-author", &["write"]).await;
    db.store.close().await;
    let url = db.url.clone();

    let rec = Recorder::start().await;
    // The first request (the `notify` step) is held until well after the kill.
    rec.push(Answer::json(200, json!({})).after(Duration::from_secs(120)));

    // Where the script leaves its marks (writable by the agent's unprivileged user).
    let marks = tempfile::tempdir().expect("marks");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(marks.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
    }
    let ran = marks.path().join("ran");
    let go = marks.path().join("go");

    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut generation = 0;
    let mut server = ServerProcess::start(&url, port, dir.path(), generation);
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    c.wait_ready().await;

    // A script that marks each run, then waits for the test's go-ahead.
    let script = format!(
        "echo run >> '{ran}'\nwhile [ ! -e '{go}' ]; do sleep 0.05; done\necho fixed\n",
        ran = ran.display(),
        go = go.display()
    );
    let r = c
        .call(
            Method::POST,
            "/v2/scripts",
            &author,
            Some(&json!({"name": "crash-fix", "interpreter": "sh", "content": script})),
        )
        .await;
    let script_id = assert_ok(&r, 201)["script_id"].as_i64().expect("id");
    let r = c
        .call(
            Method::POST,
            &format!("/v2/scripts/{script_id}/approve"),
            ADMIN_KEY,
            Some(&json!({})),
        )
        .await;
    assert_ok(&r, 200);
    let r = c
        .call(
            Method::POST,
            "/v2/api-keys",
            ADMIN_KEY,
            Some(&json!({"name": "crash-agent", "scopes": ["agent"]})),
        )
        .await;
    let agent_key = assert_ok(&r, 201)["key"].as_str().expect("key").to_owned();
    let agent = crate::agents::AgentProcess::start_with(
        &format!("127.0.0.1:{port}"),
        &agent_key,
        "crash-agent",
        "[[allow]]\nscript = \"crash-fix\"\n",
    );
    crate::agents::wait_for_agent(
        &c.http,
        &c.base,
        "crash-agent",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;

    let yaml = format!(
        "name: crash-boundaries\napproval: required\nsteps:\n\
         - name: notify\n  type: webhook\n  url: {notify}\n  timeout: 3s\n  on_failure: continue\n\
         - name: pause\n  type: wait\n  duration: 5s\n\
         - name: fix\n  type: script\n  script: crash-fix\n  on: {{agent_ids: [crash-agent]}}\n  \
           timeout: 2m\n\
         - name: fixed\n  type: condition\n  check: {{step_status: {{step: fix, status: completed}}}}\n\
         - name: report\n  type: webhook\n  url: {report}\n",
        notify = rec.url("/notify"),
        report = rec.url("/report"),
    );
    let r = send(
        c.http
            .post(format!("{}/v2/playbooks", c.base))
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/yaml")
            .body(yaml),
    )
    .await;
    let playbook = assert_ok(&r, 201)["playbook_id"].as_i64().expect("id");
    let r = c
        .call(
            Method::POST,
            &format!("/v2/playbooks/{playbook}/execute"),
            ADMIN_KEY,
            Some(&json!({})),
        )
        .await;
    let id = assert_ok(&r, 201)["execution_id"].as_i64().expect("id");
    c.until(id, "awaiting approval", |e| {
        e["status"] == "pending_approval"
    })
    .await;

    // 1. Before a step: the process dies; the approval commits while no server runs (as if
    //    the process had committed it and died before starting the first step).
    server.kill();
    {
        let store = reopen(&url).await;
        let engine = Engine::new(
            store.clone(),
            medic_server::clock::Clock::system(),
            EngineSettings::default(),
        );
        engine
            .decide(
                id,
                Event::Approve {
                    by: OwnerId("owner:approver".into()),
                },
                "approver",
            )
            .await
            .expect("approved");
        let r = store.get_execution(id).await.expect("read").expect("row");
        assert_eq!(r.status, "running");
        // The first step is due, and nothing of it has happened yet.
        let state: Value = r.state;
        let steps = state["steps"].as_array().cloned().unwrap_or_default();
        assert!(
            steps.iter().all(|s| s["phase"] == "ready"),
            "a step was under way: {state:#}"
        );
        store.close().await;
    }
    assert!(rec.requests().is_empty());

    // 2. During a webhook step: the restarted server sends `notify`; the receiver holds it
    //    and the process dies while it is in flight.
    generation += 1;
    server = ServerProcess::start(&url, port, dir.path(), generation);
    let held = rec.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(held.len(), 1, "the first step was never sent");
    assert_eq!(held[0].path, "/notify");
    server.kill();

    // 3. During the wait.
    generation += 1;
    server = ServerProcess::start(&url, port, dir.path(), generation);
    c.wait_ready().await;
    let e = c
        .until(id, "waiting", |e| step(e, "pause")["status"] == "waiting")
        .await;
    assert_eq!(step(&e, "notify")["status"], "interrupted", "{e:#}");
    server.kill();

    // 4. During the agent's run of the script.
    generation += 1;
    server = ServerProcess::start(&url, port, dir.path(), generation);
    c.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ran.exists() {
        assert!(Instant::now() < deadline, "the script never started");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    server.kill();

    // The last server finishes it: the agent reconnects and reports the run it held.
    generation += 1;
    server = ServerProcess::start(&url, port, dir.path(), generation);
    c.wait_ready().await;
    crate::agents::wait_for_agent(
        &c.http,
        &c.base,
        "crash-agent",
        Duration::from_secs(90),
        "reconnect",
        |a| a["status"] == "connected",
    )
    .await;
    std::fs::write(&go, "go").expect("go-ahead");
    let done = c.until(id, "ended", |e| e["finished_at"].is_string()).await;
    assert_eq!(done["status"], "completed", "{done:#}");
    assert_eq!(step(&done, "notify")["status"], "interrupted", "{done:#}");
    for name in ["pause", "fix", "fixed", "report"] {
        assert_eq!(step(&done, name)["status"], "completed", "{name}: {done:#}");
    }
    // The wait kept its deadline across the kill.
    let pause = step(&done, "pause");
    let started = chrono_ms(&pause["started_at"]);
    let finished = chrono_ms(&pause["finished_at"]);
    assert!(finished - started >= 5_000, "{pause:#}");
    assert!(
        step(&done, "fix")["output"]
            .as_str()
            .is_some_and(|o| o.contains("fixed")),
        "{done:#}"
    );

    // Each webhook once, by its idempotency key; the script ran once.
    let mut keys: Vec<(String, String)> = rec
        .requests()
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.header("idempotency-key").unwrap_or("-").to_owned(),
            )
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("/notify".to_owned(), format!("{id}:0")),
            ("/report".to_owned(), format!("{id}:4")),
        ]
    );
    let runs = std::fs::read_to_string(&ran).expect("marks");
    assert_eq!(runs.lines().count(), 1, "the script ran more than once");
    let r = c
        .call(Method::GET, "/v2/runs?limit=100", ADMIN_KEY, None)
        .await;
    let listed = assert_ok(&r, 200);
    let entries = listed["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{listed:#}");

    drop(agent);
    drop(server);
    drop(db);
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
fn chrono_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    medic_server::domain::Timestamp::parse(s)
        .unwrap_or_else(|| panic!("not a timestamp: {s}"))
        .millis()
}
