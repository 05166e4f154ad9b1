//! The agent's metrics listener, on a real `medic-agent` process: a scripted server plays the
//! session, and `GET /metrics` is read over a real socket after each step.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use medic_agent::exec::sha256_hex;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::Agent;

const KEY: &str =
    "mdk_0123456789ab_0000000000000000000000000000000000000000000000000000000000000000";
const OK: &str = "exit 0\n";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_agent(server_port: u16, metrics_port: u16) -> Agent {
    Agent::start(KEY, |files| {
        format!(
            "server_url = \"ws://127.0.0.1:{server_port}\"\n\
             allow_insecure_ws = true\n\
             metrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             agent_id = \"metrics-test\"\n\
             {}\
             [[allow]]\n\
             script = \"ok\"\n\
             sha256 = \"{}\"\n\
             interpreter = \"sh\"\n",
            files.lines,
            sha256_hex(OK.as_bytes()),
        )
    })
}

/// One HTTP request to the metrics listener: the status line and the body.
fn get(port: u16, request: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("metrics listener: {e}"),
        }
    };
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

fn scrape(port: u16) -> String {
    let (status, body) = get(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

type Ws = WebSocketStream<TcpStream>;

async fn accept(listener: &TcpListener) -> Ws {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the agent dials in time")
        .unwrap();
    tokio_tungstenite::accept_async(tcp).await.unwrap()
}

/// The next message other than a heartbeat.
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

async fn handshake(ws: &mut Ws, session: &str) {
    let hello = next(ws).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    send(
        ws,
        json!({
            "type": "welcome", "protocol_version": 1, "session_id": session,
            "heartbeat_interval_ms": 20000, "server_time": "2026-01-01T00:00:00.000Z",
            "server_version": "test",
        }),
    )
    .await;
}

fn run_request(run_id: &str, script: &str) -> Value {
    json!({
        "type": "run_request", "run_id": run_id, "script": script, "version": 1,
        "interpreter": "sh", "content": OK, "sha256": sha256_hex(OK.as_bytes()),
        "approved": true, "timeout_seconds": 30,
    })
}

/// Scrapes until `line` shows up (the agent records asynchronously to the socket).
async fn eventually(port: u16, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = tokio::task::spawn_blocking(move || scrape(port))
            .await
            .unwrap();
        if has(&text, line) {
            return text;
        }
        assert!(Instant::now() < deadline, "never saw {line:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_serves_its_metrics_on_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_port = free_port();
    let _agent = start_agent(listener.local_addr().unwrap().port(), metrics_port);

    let mut ws = accept(&listener).await;
    handshake(&mut ws, "s1").await;
    let text = eventually(metrics_port, "medic_agent_connected 1").await;
    assert!(has(&text, "medic_agent_reconnects_total 0"), "{text}");
    assert!(
        text.contains("# TYPE medic_agent_script_duration_seconds histogram"),
        "{text}"
    );

    // One run to an end, one refusal.
    send(&mut ws, run_request("run-1", "ok")).await;
    assert_eq!(next(&mut ws).await["type"], "run_accepted");
    let result = next(&mut ws).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    send(&mut ws, run_request("run-2", "not-allowed")).await;
    let skipped = next(&mut ws).await;
    assert_eq!(skipped["reason"], "not_in_allowlist", "{skipped}");
    let text = eventually(
        metrics_port,
        "medic_agent_script_skipped_total{script=\"not-allowed\",reason=\"not_in_allowlist\"} 1",
    )
    .await;
    for line in [
        "medic_agent_script_executions_total{script=\"ok\",status=\"succeeded\"} 1",
        "medic_agent_script_duration_seconds_count{script=\"ok\"} 1",
        "medic_agent_script_duration_seconds_bucket{script=\"ok\",le=\"+Inf\"} 1",
    ] {
        assert!(has(&text, line), "missing {line:?} in\n{text}");
    }

    // The connection drops: disconnected until the next welcome, which counts as a reconnect.
    drop(ws);
    eventually(metrics_port, "medic_agent_connected 0").await;
    let mut ws = accept(&listener).await;
    handshake(&mut ws, "s2").await;
    let text = eventually(metrics_port, "medic_agent_connected 1").await;
    assert!(has(&text, "medic_agent_reconnects_total 1"), "{text}");

    // Anything but GET /metrics is refused.
    let (status, _) = tokio::task::spawn_blocking(move || {
        get(metrics_port, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = tokio::task::spawn_blocking(move || {
        get(
            metrics_port,
            "POST /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    drop(ws);
}
