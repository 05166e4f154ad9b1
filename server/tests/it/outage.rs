//! A real PostgreSQL going away, two ways: stopped (connections refused) and frozen (`SIGSTOP`:
//! it accepts connections and answers nothing). Every route that needs the database answers a
//! 503 envelope with `Retry-After` — never a 500 — `/health/ready` answers 503 within its own
//! deadline (well inside a Kubernetes probe's 3 s), and everything recovers without a restart.
//!
//! The database is a private cluster each test starts for itself ([`Cluster`]: `initdb` and
//! `pg_ctl` in a temporary directory, on a free port, as the `postgres` OS user when the tests
//! run as root); the machine's own PostgreSQL is never touched. Without PostgreSQL's server
//! binaries the tests are skipped with a note, unless `MEDIC_TEST_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::db::REQUIRE_VAR;
use crate::support::{TestApp, assert_envelope, assert_ok, send};

/// Where to look for `initdb`/`pg_ctl` besides `/usr/lib/postgresql/*/bin` and `pg_config`.
const BINDIR_VAR: &str = "MEDIC_TEST_PG_BINDIR";

/// A PostgreSQL cluster of this test's own, stopped and removed on drop.
struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server binaries as the `postgres` OS user (PostgreSQL refuses to run as root).
    as_postgres: bool,
    /// Processes stopped by [`Cluster::freeze`], continued by [`Cluster::thaw`].
    frozen: Mutex<Vec<u32>>,
}

fn server_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var(BINDIR_VAR) {
        return Some(PathBuf::from(dir)).filter(|d| has_tools(d));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_tools(d))
        .collect();
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
    });
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())).filter(|d| has_tools(d))
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uid = s.lines().find(|l| l.starts_with("Uid:"))?;
            // Real, effective, saved, file-system: the effective one decides.
            uid.split_whitespace().nth(2).map(|e| e == "0")
        })
        .unwrap_or(false)
}

#[track_caller]
fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Initialises and starts a cluster, or `None` (with a note) when PostgreSQL's server
    /// binaries are not installed and the services are not required.
    fn start() -> Option<Self> {
        let Some(bin) = server_bindir() else {
            if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
                panic!(
                    "{REQUIRE_VAR}=1 but PostgreSQL's initdb/pg_ctl were not found (looked in \
                     ${BINDIR_VAR}, /usr/lib/postgresql/*/bin and `pg_config --bindir`)"
                );
            }
            eprintln!("note: PostgreSQL server binaries not found; skipping the outage tests");
            return None;
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let as_postgres = running_as_root();
        if as_postgres {
            let mut chown = Command::new("chown");
            chown.args(["postgres:", &dir.path().display().to_string()]);
            run(chown, "chown the cluster directory to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Self {
            dir,
            bin,
            port,
            as_postgres,
            frozen: Mutex::new(Vec::new()),
        };
        let mut initdb = cluster.tool("initdb");
        initdb.arg("-D").arg(cluster.data()).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        cluster.resume();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (or starts again) the server and waits until it accepts connections.
    fn resume(&self) {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=40",
                self.port,
                self.dir.path().display()
            ))
            .arg("start");
        run(pg_ctl, "pg_ctl start");
    }

    /// Stops the server (fast shutdown: sessions are ended, new connections refused).
    fn stop(&self, mode: &str) {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "-t", "60", "stop"]);
        run(pg_ctl, "pg_ctl stop");
    }

    /// `SIGSTOP`s the postmaster and every backend: connections are still accepted by the
    /// kernel, and nothing answers.
    fn freeze(&self) {
        let pid_file =
            std::fs::read_to_string(self.data().join("postmaster.pid")).expect("postmaster.pid");
        let postmaster: u32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("postmaster pid");
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if parent == Some(postmaster) {
                pids.push(pid);
            }
        }
        self.signal("-STOP", &pids);
        *self.frozen.lock().expect("frozen list") = pids;
    }

    fn thaw(&self) {
        let pids = std::mem::take(&mut *self.frozen.lock().unwrap_or_else(|e| e.into_inner()));
        if !pids.is_empty() {
            self.signal("-CONT", &pids);
        }
    }

    fn signal(&self, sig: &str, pids: &[u32]) {
        let mut kill = Command::new("kill");
        kill.arg(sig).args(pids.iter().map(u32::to_string));
        run(kill, "signal the cluster");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.thaw();
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = pg_ctl.output();
    }
}

/// A server on the cluster, anonymous ingestion on, with a registered service; returns the
/// service id.
async fn app_on(
    cluster: &Cluster,
    tweak: impl FnOnce(&mut medic_server::config::Config) + Send + 'static,
) -> (TestApp, i64) {
    let url = cluster.url();
    let app = TestApp::builder()
        .anonymous(true)
        .configure(move |c| {
            c.database_url = url.parse().expect("database url");
            tweak(c);
        })
        .spawn()
        .await;
    let id = app.register("outage-svc", 1).await;
    let r = app
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "outage-svc", "status": "UP"}),
        )
        .await;
    assert_ok(&r, 201);
    (app, id)
}

/// Every route that reads or writes the database, as `(who, method, path, body)`.
fn database_routes(id: i64, key: &str) -> Vec<(Option<String>, Method, String, Option<Value>)> {
    let admin = Some(crate::support::ADMIN_KEY.to_owned());
    let beat = json!({"heartbeat_name": "outage-svc", "status": "UP"});
    vec![
        // Legacy clients: anonymous.
        (None, Method::POST, "/heartbeat".into(), Some(beat.clone())),
        (None, Method::GET, "/heartbeat".into(), None),
        (
            None,
            Method::POST,
            "/service".into(),
            Some(json!({"heartbeat_name": "outage-new", "service_name": "x", "alert_interval": 1})),
        ),
        (None, Method::GET, "/service".into(), None),
        (None, Method::GET, "/service/outage-svc".into(), None),
        // Changing a service needs a key (anonymous mode only registers new ones).
        (
            admin.clone(),
            Method::POST,
            "/service/outage-svc".into(),
            Some(json!({"muted": 1})),
        ),
        (None, Method::GET, "/alerts".into(), None),
        // Job signals.
        (
            None,
            Method::POST,
            format!("/v2/heartbeat/{id}/start"),
            None,
        ),
        (
            None,
            Method::POST,
            format!("/v2/heartbeat/{id}/complete"),
            None,
        ),
        (None, Method::POST, format!("/v2/heartbeat/{id}/fail"), None),
        // A stored API key that has to be looked up.
        (
            Some(key.to_owned()),
            Method::POST,
            "/heartbeat".into(),
            Some(beat),
        ),
        // The v2 API.
        (
            admin.clone(),
            Method::GET,
            format!("/v2/services/{id}/stats"),
            None,
        ),
        (admin.clone(), Method::GET, "/v2/services".into(), None),
        (
            admin.clone(),
            Method::GET,
            format!("/v2/services/{id}"),
            None,
        ),
        (
            admin.clone(),
            Method::POST,
            "/v2/services".into(),
            Some(json!({"heartbeat_name": "outage-v2", "interval_seconds": 60})),
        ),
        (admin.clone(), Method::GET, "/v2/audit-logs".into(), None),
        (admin.clone(), Method::GET, "/v2/snapshots".into(), None),
        (admin, Method::GET, "/v2/api-keys".into(), None),
    ]
}

/// Sends every route at once (each may wait for the pool's acquire timeout) and checks each
/// answers a 503 envelope with a numeric `Retry-After`.
async fn assert_all_unavailable(
    app: &TestApp,
    routes: Vec<(Option<String>, Method, String, Option<Value>)>,
) {
    let replies = join_all(
        routes
            .into_iter()
            .map(|(who, method, path, body)| async move {
                let caller = match &who {
                    Some(k) => app.with_key(k),
                    None => app.anon(),
                };
                let mut rb = caller.request(method.clone(), &path);
                if let Some(b) = &body {
                    rb = rb.json(b);
                }
                (format!("{method} {path}"), send(rb).await)
            }),
    )
    .await;
    for (route, r) in &replies {
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{route}: expected 503, got {} {}",
            r.status,
            r.body
        );
        assert_envelope(r, 503, false);
        let retry = r.header_u64("retry-after");
        assert!(retry >= 1, "{route}: Retry-After {retry}");
    }
}

/// A GET as a Kubernetes probe (or a Prometheus scrape) sees it: the answer must arrive within
/// 2.5 s (the probe's timeout is 3 s).
async fn probe(app: &TestApp, path: &str) -> (StatusCode, String) {
    let r = app
        .anon()
        .request(Method::GET, path)
        .timeout(Duration::from_millis(2_500))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} did not answer within the probe's timeout: {e}"));
    let status = r.status();
    (status, r.text().await.expect("body"))
}

/// Readiness and health say 503 within the probe's timeout; liveness, metrics and the
/// network check, which need no answer from the database, still answer.
async fn assert_not_ready(app: &TestApp) {
    let (status, body) = probe(app, "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["status"], json!("not_ready"), "{body}");
    let (status, body) = probe(app, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(probe(app, "/health/live").await.0, StatusCode::OK);
    assert_eq!(probe(app, "/metrics").await.0, StatusCode::OK);
    assert_eq!(
        probe(app, "/v1/healthcheck/network").await.0,
        StatusCode::NO_CONTENT
    );
}

/// Waits for `/health/ready` to answer 200 again (the pool reconnecting on its own).
async fn wait_ready(app: &TestApp) {
    for _ in 0..300 {
        if app.get("/health/ready").await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("readiness did not recover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_503_with_retry_after_everywhere_then_recovers() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (app, id) = app_on(&cluster, |c| {
        c.ready_timeout = Duration::from_millis(500);
        c.api_key_cache = Duration::ZERO;
    })
    .await;
    let key = app.create_key(&["write"]).await;

    cluster.stop("fast");
    assert_all_unavailable(&app, database_routes(id, &key)).await;
    assert_not_ready(&app).await;

    cluster.resume();
    wait_ready(&app).await;
    let r = app
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "outage-svc", "status": "UP"}),
        )
        .await;
    assert_ok(&r, 201);
    let r = app
        .with_key(&key)
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "outage-svc", "status": "UP"}),
        )
        .await;
    assert_ok(&r, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_database_is_503_with_retry_after_and_ready_answers_within_its_deadline() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let (app, id) = app_on(&cluster, |c| {
        c.ready_timeout = Duration::from_millis(500);
        c.api_key_cache = Duration::ZERO;
        // A frozen database answers nothing, so requests end at the request deadline.
        c.request_timeout = Duration::from_secs(3);
    })
    .await;
    let key = app.create_key(&["write"]).await;

    cluster.freeze();
    assert_not_ready(&app).await;
    assert_all_unavailable(&app, database_routes(id, &key)).await;
    // Readiness keeps its deadline while requests are stuck on the frozen database.
    assert_not_ready(&app).await;

    cluster.thaw();
    wait_ready(&app).await;
    let r = app
        .post_json(
            "/heartbeat",
            &json!({"heartbeat_name": "outage-svc", "status": "UP"}),
        )
        .await;
    assert_ok(&r, 201);
}
