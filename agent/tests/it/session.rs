//! The agent's network session, against a scripted server: the real `medic-agent` process
//! dials a local WebSocket listener that plays the server's side of `docs/protocol.md`.
//!
//! Shown here: the hello and the bearer credential, heartbeats, a run request executed through
//! the executor, a redelivered request answered from memory (never run twice), a refusal, the
//! re-report of unacknowledged results after a reconnection, `duplicate` after an ack, and the
//! server's `reconnect` delay being honoured.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use medic_agent::exec::sha256_hex;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::{Agent, TempDir};

const KEY: &str =
    "mdk_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000";
const SCRIPT: &str = "echo hello from the agent\n";

fn start_agent(port: u16) -> Agent {
    start_agent_with(
        &format!("ws://127.0.0.1:{port}"),
        "allow_insecure_ws = true\n",
    )
}

/// An agent dialling `server_url`, with `settings` (top-level keys) added to its file.
fn start_agent_with(server_url: &str, settings: &str) -> Agent {
    Agent::start(KEY, |files| {
        format!(
            "server_url = \"{server_url}\"\n\
             {settings}\
             agent_id = \"session-test\"\n\
             heartbeat_interval_seconds = 1\n\
             {}\
             [labels]\n\
             env = \"test\"\n\
             [[allow]]\n\
             script = \"greet\"\n\
             sha256 = \"{}\"\n\
             interpreter = \"sh\"\n\
             [[allow]]\n\
             script = \"slow\"\n",
            files.lines,
            sha256_hex(SCRIPT.as_bytes()),
        )
    })
}

type Ws = WebSocketStream<TcpStream>;

/// Accepts the agent's next connection; returns it with the `Authorization` header it sent.
// The callback's error type is tungstenite's (an HTTP response), not ours to shrink.
#[allow(clippy::result_large_err)]
async fn accept(listener: &TcpListener) -> (Ws, String) {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the agent dials in time")
        .unwrap();
    let mut auth = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |req: &Request, resp: Response| {
        assert_eq!(req.uri().path(), "/v2/agents/connect");
        auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(resp)
    })
    .await
    .unwrap();
    (ws, auth)
}

/// The next message of a type other than heartbeat.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
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

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

fn welcome(session: &str) -> Value {
    json!({
        "type": "welcome", "protocol_version": 1, "session_id": session,
        "heartbeat_interval_ms": 1000, "server_time": "2026-01-01T00:00:00.000Z",
        "server_version": "test",
    })
}

fn request(run_id: &str, script: &str) -> Value {
    request_with(run_id, script, SCRIPT)
}

fn request_with(run_id: &str, script: &str, content: &str) -> Value {
    json!({
        "type": "run_request", "run_id": run_id, "script": script, "version": 1,
        "interpreter": "sh", "content": content, "sha256": sha256_hex(content.as_bytes()),
        "approved": true, "timeout_seconds": 30,
    })
}

/// Handshake: reads and checks the hello, answers welcome.
async fn handshake(ws: &mut Ws, session: &str) -> Value {
    let hello = next(ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    send(ws, welcome(session)).await;
    hello
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_reports_reconnects_and_never_runs_twice() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _agent = start_agent(listener.local_addr().unwrap().port());

    // First session: hello with the credential, the id, labels and the version range.
    let (mut ws, auth) = accept(&listener).await;
    assert_eq!(auth, format!("Bearer {KEY}"));
    let hello = handshake(&mut ws, "s1").await;
    assert_eq!(hello["agent_id"], "session-test");
    assert_eq!(hello["labels"], json!({"env": "test"}));
    assert_eq!(hello["protocol_version"], 1);
    assert_eq!(hello["min_protocol_version"], 1);
    assert_eq!(hello["agent_version"], env!("CARGO_PKG_VERSION"));

    // Heartbeats at the configured second, counting from 0.
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a heartbeat in time")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            assert_eq!(v["type"], "heartbeat", "{v}");
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seqs, [0, 1]);

    // A run: accepted, then its result.
    send(&mut ws, request("run-1", "greet")).await;
    let accepted = next(&mut ws).await;
    assert_eq!(accepted["type"], "run_accepted", "{accepted}");
    assert_eq!(accepted["run_id"], "run-1");
    let result = next(&mut ws).await;
    assert_eq!(result["type"], "run_result", "{result}");
    assert_eq!(result["status"], "succeeded", "{result}");
    assert_eq!(result["stdout"], "hello from the agent\n");

    // Redelivered before the ack: the stored result again, not a second run.
    send(&mut ws, request("run-1", "greet")).await;
    let again = next(&mut ws).await;
    assert_eq!(again, result);

    // A script the allowlist does not name is refused.
    send(&mut ws, request("run-2", "rm-everything")).await;
    let skipped = next(&mut ws).await;
    assert_eq!(skipped["type"], "run_skipped", "{skipped}");
    assert_eq!(skipped["reason"], "not_in_allowlist");

    // The connection drops; the agent comes back and reports both again.
    drop(ws);
    let (mut ws, _) = accept(&listener).await;
    handshake(&mut ws, "s2").await;
    let mut resent = [next(&mut ws).await, next(&mut ws).await];
    resent.sort_by_key(|v| v["run_id"].as_str().unwrap().to_owned());
    assert_eq!(resent[0], result);
    assert_eq!(resent[1], skipped);
    send(&mut ws, json!({"type": "ack", "run_id": "run-1"})).await;
    send(&mut ws, json!({"type": "ack", "run_id": "run-2"})).await;

    // Acknowledged, then delivered again: the agent remembers the id and refuses it.
    send(&mut ws, request("run-1", "greet")).await;
    let dup = next(&mut ws).await;
    assert_eq!(dup["type"], "run_skipped", "{dup}");
    assert_eq!(dup["reason"], "duplicate");
    send(&mut ws, json!({"type": "ack", "run_id": "run-1"})).await;

    // "Come back later" is honoured: no dial before the delay.
    let asked = Instant::now();
    send(
        &mut ws,
        json!({"type": "reconnect", "after_ms": 1500, "reason": "rebalancing"}),
    )
    .await;
    let (mut ws, _) = accept(&listener).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "redialled after {:?}",
        asked.elapsed()
    );
    let hello = handshake(&mut ws, "s3").await;
    assert_eq!(hello["running"], json!([]));
    // Nothing is left to report: the next message is a heartbeat, checked by skipping none.
    let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame")
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "heartbeat", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_waits_after_a_drain_and_backs_off_when_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _agent = start_agent(listener.local_addr().unwrap().port());
    let (mut ws, _) = accept(&listener).await;
    handshake(&mut ws, "s1").await;
    let asked = Instant::now();
    send(
        &mut ws,
        json!({"type": "drain", "reason": "deploy", "reconnect_after_ms": 2000}),
    )
    .await;
    // Idle, so it closes on its own and dials again no sooner than asked.
    let (mut ws, _) = accept(&listener).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(2000),
        "redialled after {:?}",
        asked.elapsed()
    );
    // Refused after the hello: the agent dials again by itself, with backoff.
    let _ = next(&mut ws).await;
    send(
        &mut ws,
        json!({"type": "error", "code": "unauthorized", "message": "no"}),
    )
    .await;
    drop(ws);
    let (mut ws, _) = accept(&listener).await;
    assert_eq!(next(&mut ws).await["type"], "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_run_in_flight_reports_it_then_exits() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut agent = start_agent(listener.local_addr().unwrap().port());
    let (mut ws, _) = accept(&listener).await;
    handshake(&mut ws, "s1").await;
    send(
        &mut ws,
        request_with("slow-1", "slow", "sleep 2; echo done\n"),
    )
    .await;
    assert_eq!(next(&mut ws).await["type"], "run_accepted");

    let status = Command::new("kill")
        .args(["-TERM", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stopping: new work is refused, the run in flight finishes and is reported.
    send(&mut ws, request("late-1", "greet")).await;
    let mut reports = [next(&mut ws).await, next(&mut ws).await];
    reports.sort_by_key(|v| v["run_id"].as_str().unwrap().to_owned());
    assert_eq!(reports[0]["type"], "run_skipped", "{reports:?}");
    assert_eq!(reports[0]["reason"], "draining");
    assert_eq!(reports[1]["type"], "run_result", "{reports:?}");
    assert_eq!(reports[1]["stdout"], "done\n");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent left before its reports were acknowledged"
    );
    send(&mut ws, json!({"type": "ack", "run_id": "late-1"})).await;
    send(&mut ws, json!({"type": "ack", "run_id": "slow-1"})).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

/// The test CA and the `localhost` / 127.0.0.1 certificate it signed (`tests/fixtures/tls/`,
/// test-only keys).
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// A TLS server with the fixture certificate; with `client_auth`, it demands a client
/// certificate signed by the test CA.
fn tls_acceptor(client_auth: bool) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Arc;
    let certs = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The handshake callback's error type is tungstenite's (an HTTP response), not ours to shrink.
#[allow(clippy::result_large_err)]
async fn wss_trusts_the_configured_ca_and_only_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls_acceptor(false);

    // With the CA bundle configured: TLS, the upgrade with the credential, then the hello.
    let ca = format!("ca_file = \"{}\"\n", fixture("ca.pem").display());
    let agent = start_agent_with(&format!("wss://localhost:{port}"), &ca);
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let tls = acceptor.accept(tcp).await.expect("TLS handshake");
    let mut auth = String::new();
    let mut ws = tokio_tungstenite::accept_hdr_async(tls, |req: &Request, resp: Response| {
        auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(resp)
    })
    .await
    .unwrap();
    assert_eq!(auth, format!("Bearer {KEY}"));
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    drop(agent);

    // With the public roots only, the test CA is not trusted: the agent aborts the handshake.
    let _agent = start_agent_with(&format!("wss://localhost:{port}"), "");
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(
        acceptor.accept(tcp).await.is_err(),
        "an untrusted server was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_presents_the_configured_client_certificate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls_acceptor(true);
    let ca = format!("ca_file = \"{}\"\n", fixture("ca.pem").display());
    let mtls = format!(
        "{ca}client_cert = \"{}\"\nclient_key = \"{}\"\n",
        fixture("client.pem").display(),
        fixture("client.key").display()
    );

    let agent = start_agent_with(&format!("wss://127.0.0.1:{port}"), &mtls);
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let tls = acceptor.accept(tcp).await.expect("mutual TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().map_or(0, <[_]>::len);
    assert_eq!(presented, 1, "the agent sent its client certificate");
    drop(tls);
    drop(agent);

    // Without a client certificate the server refuses the handshake.
    let _agent = start_agent_with(&format!("wss://127.0.0.1:{port}"), &ca);
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(
        acceptor.accept(tcp).await.is_err(),
        "a client without a certificate got in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_process_refuses_and_reports_what_it_must_not_run() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _agent = start_agent(listener.local_addr().unwrap().port());
    let (mut ws, _) = accept(&listener).await;
    handshake(&mut ws, "s1").await;
    let marks = TempDir::create();
    let marker = marks.path().join("ran");
    let touch = format!("touch '{}'\n", marker.display());

    let mut unapproved = request_with("r-unapproved", "slow", &touch);
    unapproved["approved"] = json!(false);
    let mut tampered = request_with("r-tampered", "slow", &touch);
    tampered["sha256"] = json!(sha256_hex(b"what was approved"));
    let cases = [
        (unapproved, "not_approved"),
        (tampered, "hash_mismatch"),
        // Approved centrally, but not what the local allowlist pins for this name.
        (request_with("r-unpinned", "greet", &touch), "hash_mismatch"),
        (
            request_with("r-unlisted", "rm-everything", &touch),
            "not_in_allowlist",
        ),
        (request_with("r-path", "../greet", &touch), "invalid_name"),
        (request_with("r-abs", "/bin/greet", &touch), "invalid_name"),
    ];
    for (request, reason) in cases {
        let run_id = request["run_id"].clone();
        send(&mut ws, request).await;
        let reply = next(&mut ws).await;
        assert_eq!(reply["type"], "run_skipped", "{reply}");
        assert_eq!(reply["run_id"], run_id);
        assert_eq!(reply["reason"], reason, "{reply}");
        assert!(
            !reply["detail"].as_str().unwrap_or("").is_empty(),
            "{reply}"
        );
    }
    assert!(!marker.exists(), "a refused script ran");
}

/// The lines in `text` as JSON objects; panics on a line that is not one.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

/// Waits until the file at `path` (read again each time) holds `needle`.
fn wait_for_text(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Without `log_file`, the log is JSON lines on standard error (journald keeps them); the hello
/// carries the host's facts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_lines_on_stderr_and_the_hello_carries_host_facts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = start_agent(listener.local_addr().unwrap().port());
    let (mut ws, _) = accept(&listener).await;
    let hello = handshake(&mut ws, "s-log").await;
    let host = &hello["host"];
    assert!(host["cpus"].as_u64().is_some_and(|n| n >= 1), "{hello}");
    assert!(
        host["memory_total_bytes"].as_u64().is_some_and(|n| n > 0),
        "{hello}"
    );
    assert!(host["kernel_version"].is_string(), "{hello}");
    assert!(host["uptime_seconds"].is_u64(), "{hello}");
    let text = wait_for_text(&agent.dir.path().join("agent.log"), "\"connected\"");
    let lines = json_lines(&text);
    let connected = lines
        .iter()
        .find(|l| l["message"] == "connected")
        .expect("a connected line");
    assert_eq!(connected["level"], "INFO", "{connected}");
    assert_eq!(connected["session_id"], "s-log", "{connected}");
    assert!(connected["timestamp"].is_string(), "{connected}");
    let starting = lines.iter().find(|l| l["message"] == "starting").unwrap();
    assert_eq!(starting["agent_id"], "session-test", "{starting}");
}

/// With `log_file`, the log goes to a file named for the day (UTC), and only the newest
/// `log_keep_files` such files are kept; standard error stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_is_rotated_daily_and_old_files_are_pruned() {
    let logs = TempDir::create();
    for day in 1..=4 {
        std::fs::write(
            logs.path().join(format!("agent.2026-01-0{day}.log")),
            "old\n",
        )
        .unwrap();
    }
    std::fs::write(logs.path().join("unrelated.txt"), "keep me\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = start_agent_with(
        &format!("ws://127.0.0.1:{}", listener.local_addr().unwrap().port()),
        &format!(
            "allow_insecure_ws = true\nlog_file = \"{}\"\nlog_keep_files = 2\n",
            logs.path().join("agent.log").display()
        ),
    );
    let (mut ws, _) = accept(&listener).await;
    handshake(&mut ws, "s-file").await;
    let dated = |name: &str| {
        name.strip_prefix("agent.")
            .and_then(|rest| rest.strip_suffix(".log"))
            .is_some_and(|day| day.len() == 10 && day.as_bytes()[4] == b'-')
    };
    // Today's file: the one that is not among the old ones.
    let today = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = std::fs::read_dir(logs.path())
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .find(|n| dated(n) && !n.starts_with("agent.2026-01-0"));
            if let Some(name) = found {
                break logs.path().join(name);
            }
            assert!(Instant::now() < deadline, "no log file for today");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let text = wait_for_text(&today, "\"connected\"");
    let lines = json_lines(&text);
    assert!(lines.iter().any(|l| l["message"] == "starting"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "connected" && l["session_id"] == "s-file"),
        "{text}"
    );
    let mut names: Vec<String> = std::fs::read_dir(logs.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert_eq!(
        names.iter().filter(|n| dated(n)).count(),
        2,
        "log_keep_files = 2 keeps today's file and one older: {names:?}"
    );
    assert!(names.contains(&"unrelated.txt".to_owned()), "{names:?}");
    let stderr = std::fs::read_to_string(agent.dir.path().join("agent.log")).unwrap();
    assert!(!stderr.contains("\"connected\""), "stderr: {stderr}");
}
