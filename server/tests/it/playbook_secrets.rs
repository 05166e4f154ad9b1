//! `${secrets.NAME}` at run time, end to end: a real `medic-server` process (its log captured
//! to a file) with a real `medic-agent`, local recorders for the webhook step, the team's
//! webhook target and Slack. The secret reaches the webhook step's receiver (URL, header and
//! body) and the agent's script (as a parameter), and appears nowhere else: not in the database
//! (the SQLite files' bytes, or every PostgreSQL table's text), the server's log, the execution
//! and run routes, the audit log (JSON and CSV), the agent's directory (its run-id journal and
//! log) nor the notifications. A secret deleted before a run fails the step with an error that
//! names it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::time::Instant;

use crate::db::TestDb;
use crate::support::{ADMIN_KEY, Reply, assert_ok, key_for_owner, send};
use crate::support_recorder::{Answer, Recorder};

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_secret_reaches_its_receivers_and_appears_nowhere_else() {
        super::a_secret_reaches_its_receivers_and_appears_nowhere_else(crate::db::sqlite().await)
            .await;
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_secret_reaches_its_receivers_and_appears_nowhere_else() {
        let Some(db) = crate::db::postgres().await else {
            return;
        };
        super::a_secret_reaches_its_receivers_and_appears_nowhere_else(db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reject_and_cancel_reasons_are_masked() {
        let Some(db) = crate::db::postgres().await else {
            return;
        };
        super::reject_and_cancel_reasons_are_masked(Some(db)).await;
    }
}

mod sqlite_reasons {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reject_and_cancel_reasons_are_masked() {
        super::reject_and_cancel_reasons_are_masked(None).await;
    }
}

/// A reason given to reject or cancel an execution that quotes a secret's value is stored,
/// shown, audited and announced masked, like every other text of the execution.
async fn reject_and_cancel_reasons_are_masked(db: Option<TestDb>) {
    use medic_server::playbook::secrets::{Keyring, SecretsKey};
    let secret = format!("rsn{}", hex::encode(rand::random::<[u8; 12]>()));
    let url = db.as_ref().map(|d| d.url.clone());
    let app = crate::support::TestApp::builder()
        .configure(move |c| {
            if let Some(url) = url {
                c.database_url = url.parse().expect("database url");
            }
            c.secrets = Some(Keyring::new(SecretsKey::from_bytes(&[7; 32]), vec![]));
            c.playbook.allow_private_targets = true;
        })
        .spawn()
        .await;
    let r = send(
        app.admin()
            .request(Method::PUT, "/v2/secrets/DEPLOY_TOKEN")
            .json(&json!({"value": secret})),
    )
    .await;
    assert!(r.status.is_success(), "{}", r.body);
    let yaml = "name: reasons\napproval: required\nsteps:\n  - name: call\n    type: webhook\n    \
                url: http://127.0.0.1:9/x\n    headers:\n      Authorization: Bearer \
                ${secrets.DEPLOY_TOKEN}\n";
    let r = send(
        app.admin()
            .request(Method::POST, "/v2/playbooks")
            .header("content-type", "application/yaml")
            .body(yaml),
    )
    .await;
    let playbook = assert_ok(&r, 201)["playbook_id"].as_i64().expect("id");
    let mut ids = Vec::new();
    for decision in ["reject", "cancel"] {
        let r = app
            .admin()
            .post_json(&format!("/v2/playbooks/{playbook}/execute"), &json!({}))
            .await;
        let id = assert_ok(&r, 201)["execution_id"].as_i64().expect("id");
        let r = app
            .admin()
            .post_json(
                &format!("/v2/executions/{id}/{decision}"),
                &json!({"reason": format!("the token {secret} leaked")}),
            )
            .await;
        let body = assert_ok(&r, 200);
        assert_eq!(body["status"], "cancelled", "{body:#}");
        assert!(
            body.to_string().contains("the token ******** leaked"),
            "{body:#}"
        );
        ids.push(id);
    }
    let mut texts = Vec::new();
    for id in &ids {
        texts.push(app.admin().get(&format!("/v2/executions/{id}")).await.body);
        texts.push(
            app.admin()
                .get(&format!("/v2/audit-logs?execution_id={id}&limit=250"))
                .await
                .body,
        );
    }
    for text in &texts {
        assert!(text.contains("leaked"), "{text}");
        assert!(!text.contains(&secret), "the secret appears in {text}");
    }
    let store = app.store().await;
    for id in &ids {
        let row = store.get_execution(*id).await.expect("read").expect("row");
        assert!(!row.state.to_string().contains(&secret), "{:#}", row.state);
    }
    drop(app);
    drop(db);
}

/// A `medic-server` process, killed (SIGKILL) when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    pub(crate) base: String,
    log: PathBuf,
}

impl ServerProcess {
    pub(crate) fn start(db: &TestDb, dir: &Path, env: &[(&str, String)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).expect("server log");
        let child = Command::new(env!("CARGO_BIN_EXE_medic-server"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("PORT", port.to_string())
            .env("MEDIC_ADMIN_API_KEY", ADMIN_KEY)
            .env("MEDIC_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
            .env("MEDIC_LOG_LEVEL", "debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(dir)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("medic-server starts");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Asks the server to stop (SIGTERM) and waits until it has.
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- medic-server log (tail) ---");
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Client {
    pub(crate) fn request(&self, method: Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key)
    }

    pub(crate) async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let mut rb = self.request(method, path, ADMIN_KEY);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        send(rb).await
    }

    async fn get_text(&self, path: &str, accept: &str) -> String {
        let r = send(
            self.request(Method::GET, path, ADMIN_KEY)
                .header("accept", accept),
        )
        .await;
        assert_eq!(r.status.as_u16(), 200, "GET {path}: {}", r.body);
        r.body
    }

    pub(crate) async fn wait_ready(&self) {
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

    pub(crate) async fn execution(&self, id: i64) -> Value {
        let r = self
            .admin(Method::GET, &format!("/v2/executions/{id}"), None)
            .await;
        assert_ok(&r, 200)
    }

    /// Polls the execution until it has ended (60 s at most).
    pub(crate) async fn ended(&self, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let e = self.execution(id).await;
            if e["finished_at"].is_string() {
                return e;
            }
            assert!(Instant::now() < deadline, "execution never ended: {e:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every file under `dir` (recursively), with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every row of every table of the PostgreSQL database at `url`, as text.
async fn postgres_dump(url: &str) -> String {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let tables: Vec<String> = sqlx::query(
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM \
         information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN \
         ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables")
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    assert!(tables.len() > 10, "too few tables: {tables:?}");
    let mut dump = String::new();
    for t in tables {
        let sql = format!("SELECT t::text FROM {t} t");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .expect("rows");
        for r in rows {
            dump.push_str(&t);
            dump.push(' ');
            dump.push_str(&r.get::<String, _>(0));
            dump.push('\n');
        }
    }
    let _ = conn.close().await;
    dump
}

async fn a_secret_reaches_its_receivers_and_appears_nowhere_else(db: TestDb) {
    let secret = format!(
        "tok{}{}",
        hex::encode(rand::random::<[u8; 8]>()),
        hex::encode(rand::random::<[u8; 8]>())
    );
    let sqlite_file = db
        .url
        .strip_prefix("sqlite://")
        .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p)));
    // A person who writes the script (the admin approves it: four eyes).
    let author = key_for_owner(&*db.store, "script-author", &["write"]).await;
    db.store.close().await;

    let deploy = Recorder::start().await;
    // The receiver echoes the secret back: the step's output must not keep it.
    deploy.answer(Answer::json(
        200,
        json!({"accepted": true, "echo": secret.clone()}),
    ));
    let hook = Recorder::start().await;
    let slack = Recorder::start().await;
    slack.answer(Answer::json(
        200,
        json!({"ok": true, "channel": "C0OPS", "ts": "1700000000.000100"}),
    ));
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");

    let dir = tempfile::tempdir().expect("dir");
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let mut server = ServerProcess::start(
        &db,
        dir.path(),
        &[
            ("MEDIC_SECRETS_KEY", key),
            ("SLACK_API_URL", slack.url("/api")),
            ("SLACK_API_TOKEN", "xoxb-test-token".to_owned()),
        ],
    );
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    c.wait_ready().await;

    // The secret, a team with a webhook target and a Slack channel, a service of that team.
    let r = c
        .admin(
            Method::PUT,
            "/v2/secrets/DEPLOY_TOKEN",
            Some(&json!({"value": secret})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let team = assert_ok(
        &c.admin(Method::POST, "/v2/teams", Some(&json!({"name": "ops"})))
            .await,
        201,
    );
    let team_id = team["team_id"].as_i64().expect("team id");
    for target in [
        json!({"kind": "webhook", "config": {"url": hook.url("/hook"), "secret": "hook-signing-secret"}}),
        json!({"kind": "slack", "config": {"channel": "#ops"}}),
    ] {
        assert_ok(
            &c.admin(
                Method::POST,
                &format!("/v2/teams/{team_id}/targets"),
                Some(&target),
            )
            .await,
            201,
        );
    }
    let svc = assert_ok(
        &c.admin(
            Method::POST,
            "/v2/services",
            Some(&json!({"heartbeat_name": "api-hb", "service_name": "API",
                         "interval_seconds": 3600, "team": "ops"})),
        )
        .await,
        201,
    );
    let service = svc["service_id"].as_i64().expect("service id");

    // A script that prints its parameter (to stdout and stderr) and the parameter's SHA-256,
    // which proves the agent received the real value.
    let script = "printf 'token=%s\\n' \"$MEDIC_PARAM_TOKEN\"\n\
                  printf 'err=%s\\n' \"$MEDIC_PARAM_TOKEN\" >&2\n\
                  printf 'note=%s\\n' \"$MEDIC_PARAM_NOTE\"\n\
                  printf '%s' \"$MEDIC_PARAM_TOKEN\" | sha256sum\n";
    let r = send(
        c.request(Method::POST, "/v2/scripts", &author)
            .json(&json!({"name": "echo-secret", "interpreter": "sh", "content": script})),
    )
    .await;
    let script_id = assert_ok(&r, 201)["script_id"].as_i64().expect("id");
    assert_ok(
        &c.admin(
            Method::POST,
            &format!("/v2/scripts/{script_id}/approve"),
            Some(&json!({})),
        )
        .await,
        200,
    );
    let agent_key = assert_ok(
        &c.admin(
            Method::POST,
            "/v2/api-keys",
            Some(&json!({"name": "runner-sec", "scopes": ["agent"], "labels": {"role": "it"}})),
        )
        .await,
        201,
    )["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let addr = c.base.trim_start_matches("http://").to_owned();
    let agent = crate::agents::AgentProcess::start_with(
        &addr,
        &agent_key,
        "runner-sec",
        "[[allow]]\nscript = \"echo-secret\"\n",
    );
    crate::agents::wait_for_agent(
        &c.http,
        &c.base,
        "runner-sec",
        Duration::from_secs(30),
        "connect",
        |a| a["status"] == "connected",
    )
    .await;

    // The webhook step sends the secret in its URL, a header and the body; the script step
    // gets it as a parameter; the last step fails on a closed port with the secret in its URL,
    // and escalates.
    let yaml = format!(
        "name: secret-e2e\nsteps:\n\
         - name: deploy\n  type: webhook\n  url: {deploy_url}?token=${{secrets.DEPLOY_TOKEN}}\n  \
           headers:\n    Authorization: Bearer ${{secrets.DEPLOY_TOKEN}}\n  \
           body:\n    token: ${{secrets.DEPLOY_TOKEN}}\n    service: ${{SERVICE_NAME}}\n\
         - name: echo\n  type: script\n  script: echo-secret\n  on: {{agent_ids: [runner-sec]}}\n  \
           params:\n    TOKEN: ${{secrets.DEPLOY_TOKEN}}\n    NOTE: \"deploy said ${{steps.deploy.output}}\"\n\
         - name: unreachable\n  type: webhook\n  \
           url: http://127.0.0.1:{closed_port}/down?token=${{secrets.DEPLOY_TOKEN}}\n  \
           timeout: 2s\n  on_failure: escalate\n",
        deploy_url = deploy.url("/deploy"),
    );
    let r = send(
        c.request(Method::POST, "/v2/playbooks", ADMIN_KEY)
            .header("content-type", "application/yaml")
            .body(yaml),
    )
    .await;
    let playbook = assert_ok(&r, 201)["playbook_id"].as_i64().expect("id");
    let execute_path = format!("/v2/playbooks/{playbook}/execute");
    let execute_body = json!({"service_id": service});
    let id = assert_ok(
        &c.admin(Method::POST, &execute_path, Some(&execute_body))
            .await,
        201,
    )["execution_id"]
        .as_i64()
        .expect("execution id");
    let done = c.ended(id).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let steps = &done["steps"];

    // The receiver got the real value, in the URL, the header and the body.
    let sent = deploy.only_request();
    assert_eq!(sent.path, format!("/deploy?token={secret}"));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {secret}").as_str())
    );
    assert_eq!(sent.json(), json!({"token": secret, "service": "API"}));
    // Its echo is masked in the step's output.
    assert_eq!(steps[0]["status"], "completed", "{done:#}");
    assert_eq!(
        steps[0]["output"],
        json!({"accepted": true, "echo": "********"}).to_string()
    );

    // The agent ran the script with the real value (its hash), and its output is masked.
    assert_eq!(steps[1]["status"], "completed", "{done:#}");
    let output = steps[1]["output"].as_str().expect("output");
    let digest = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    assert!(output.contains("token=********\n"), "{output}");
    assert!(output.contains("err=********"), "{output}");
    assert!(output.contains(&digest), "{output}");
    let run_id = steps[1]["runs"][0]["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();

    // The failing step's error is masked too.
    assert_eq!(steps[2]["status"], "failed", "{done:#}");
    let error = steps[2]["error"].as_str().expect("error");
    assert!(!error.is_empty());

    // Notices: started, escalated and failed reached the webhook target and Slack.
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events: Vec<String> = hook
            .requests()
            .iter()
            .map(|r| r.header("x-medic-event").unwrap_or("-").to_owned())
            .collect();
        if [
            "execution.started",
            "execution.escalated",
            "execution.failed",
        ]
        .iter()
        .all(|e| events.iter().any(|x| x == e))
        {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "notices never arrived: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!slack.requests().is_empty(), "no Slack message");

    // A secret deleted before a run: the step fails with an error that names it, and nothing
    // is sent.
    let r = c
        .admin(Method::DELETE, "/v2/secrets/DEPLOY_TOKEN", None)
        .await;
    assert!(r.status.is_success(), "{}", r.body);
    let id2 = assert_ok(
        &c.admin(Method::POST, &execute_path, Some(&execute_body))
            .await,
        201,
    )["execution_id"]
        .as_i64()
        .expect("execution id");
    let failed = c.ended(id2).await;
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let why = failed["steps"][0]["error"].as_str().expect("error");
    assert!(why.contains("DEPLOY_TOKEN"), "{why}");
    assert_eq!(
        deploy.requests().len(),
        1,
        "a request went out without its secret"
    );

    // Everything that can be read back, and everything that was received, holds no trace.
    let mut texts: Vec<(String, String)> = Vec::new();
    for path in [
        format!("/v2/executions/{id}"),
        format!("/v2/executions/{id2}"),
        "/v2/executions?limit=100".to_owned(),
        format!("/v2/runs/{run_id}"),
        "/v2/runs?limit=100".to_owned(),
        "/v2/audit-logs?limit=250".to_owned(),
        format!("/v2/audit-logs?execution_id={id}&limit=250"),
        format!("/v2/playbooks/{playbook}"),
        "/v2/secrets".to_owned(),
    ] {
        texts.push((path.clone(), c.get_text(&path, "application/json").await));
    }
    for path in [
        "/v2/audit-logs?limit=250".to_owned(),
        format!("/v2/audit-logs?execution_id={id}&limit=250"),
    ] {
        let csv = c.get_text(&path, "text/csv").await;
        assert!(csv.contains("step_completed"), "{csv}");
        texts.push((format!("{path} (CSV)"), csv));
    }
    for (name, rec) in [("webhook target", &hook), ("Slack", &slack)] {
        for r in rec.requests() {
            texts.push((
                format!(
                    "{name} {} {}",
                    r.path,
                    r.header("x-medic-event").unwrap_or("")
                ),
                format!("{:?} {}", r.headers, r.body_text()),
            ));
        }
    }
    assert!(events.len() >= 3);
    assert_agent_files_clean(&agent, &secret);
    drop(agent);
    server.stop();
    let log = server.log();
    assert!(
        log.contains("playbook execution"),
        "the log was not captured: {log}"
    );
    texts.push(("server log".to_owned(), log));
    for (what, text) in &texts {
        assert!(
            !text.contains(&secret),
            "the secret appears in {what}: {text}"
        );
    }

    // The database: the SQLite files' bytes, or every PostgreSQL table's text.
    match &sqlite_file {
        Some(file) => {
            let db_dir = file.parent().expect("database directory");
            let files = files_under(db_dir);
            assert!(
                files.iter().any(|(p, b)| p == file && !b.is_empty()),
                "no database file in {}",
                db_dir.display()
            );
            for (path, bytes) in files {
                assert!(
                    !contains(&bytes, &secret),
                    "the secret appears in {}",
                    path.display()
                );
            }
        }
        None => {
            let dump = postgres_dump(&db.url).await;
            assert!(
                dump.contains("step_completed"),
                "the dump misses the audit log"
            );
            assert!(
                !dump.contains(&secret),
                "the secret appears in the database: {}",
                dump.lines()
                    .filter(|l| l.contains(&secret))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    drop(db);
}

/// Checks every file of the agent's directory (its run-id journal, its log, its work
/// directory) for the secret; the journal must hold the run.
fn assert_agent_files_clean(agent: &crate::agents::AgentProcess, secret: &str) {
    let files = files_under(agent.dir());
    let journal = files
        .iter()
        .find(|(p, _)| p.ends_with("recent-run-ids"))
        .expect("the agent's journal");
    assert!(
        contains(&journal.1, ".1.0"),
        "the journal does not hold the script step's run: {}",
        String::from_utf8_lossy(&journal.1)
    );
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, secret),
            "the secret appears in the agent's {}",
            path.display()
        );
    }
}
