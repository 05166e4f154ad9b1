//! Strings from agents, seen through a real WebSocket: a hello whose host name, version or
//! labels carry control characters is refused; a run report's identifiers must follow the
//! protocol's rules (a run id with NUL ends the session `malformed`), and its text for people is
//! stored without NUL or terminal control characters, so it stores on every backend.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{TestApp, assert_ok};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn dial(app: &TestApp, key: &str) -> Ws {
    let url = format!("{}/v2/agents/connect", app.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
        .0
}

fn hello(agent_id: &str, change: impl FnOnce(&mut Value)) -> Message {
    let mut h = json!({
        "type": "hello", "protocol_version": 1, "min_protocol_version": 1,
        "agent_id": agent_id, "hostname": "raw.example.com", "agent_version": "0.0.1",
        "os": "linux", "arch": "x86_64", "labels": {"role": "web"},
    });
    change(&mut h);
    Message::Text(h.to_string().into())
}

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

/// Expects `error` `malformed` naming `field`, then a close frame 1002.
async fn expect_malformed(ws: &mut Ws, field: &str) {
    let error = next_json(ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "malformed", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains(field),
        "{error}"
    );
    let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
        .await
        .expect("a close in time");
    match frame {
        Some(Ok(Message::Close(Some(c)))) => assert_eq!(c.code, CloseCode::from(1002), "{c:?}"),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Queues a run of `script` on `agent` and returns the run request the agent receives.
async fn queue_and_receive(
    app: &TestApp,
    writer: &str,
    ws: &mut Ws,
    agent: &str,
    script: i64,
) -> String {
    let r = app
        .with_key(writer)
        .post_json("/v2/runs", &json!({"agent_id": agent, "script_id": script}))
        .await;
    let run_id = assert_ok(&r, 201)["run_id"].as_str().unwrap().to_owned();
    let request = next_json(ws).await;
    assert_eq!(request["type"], "run_request", "{request}");
    assert_eq!(request["run_id"], run_id.as_str());
    run_id
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_agents_are_refused_or_made_harmless() {
    let app = TestApp::spawn().await;
    let key = app.create_key(&["agent"]).await;

    // The hello: every string the server keeps is checked.
    let bad_hellos: Vec<(Message, &str)> = vec![
        (hello("ctl\u{7}host", |_| {}), "agent id"),
        (
            hello("ctl-1", |h| h["hostname"] = json!("raw\u{0}.example.com")),
            "hostname",
        ),
        (
            hello("ctl-2", |h| h["agent_version"] = json!("0.0.1\n")),
            "agent version",
        ),
        (hello("ctl-3", |h| h["os"] = json!("linux\u{1b}[2J")), "os"),
        (hello("ctl-4", |h| h["arch"] = json!("x86\u{7f}64")), "arch"),
        (
            hello("ctl-5", |h| h["labels"] = json!({"role": "web\u{1b}[31m"})),
            "value of label",
        ),
        (
            hello("ctl-6", |h| h["running"] = json!(["r\u{0}1"])),
            "run id",
        ),
    ];
    for (frame, field) in bad_hellos {
        let mut ws = dial(&app, &key).await;
        ws.send(frame).await.unwrap();
        expect_malformed(&mut ws, field).await;
    }
    let r = app.admin().get("/v2/agents").await;
    assert_eq!(
        assert_ok(&r, 200)["total_count"],
        0,
        "a refused hello registered an agent"
    );

    // A good session and an approved script to run on it.
    let writer = app.create_key_for("it-writer", &["write", "run"]).await;
    let r = app
        .with_key(&writer)
        .post_json(
            "/v2/scripts",
            &json!({"name": "greet", "interpreter": "sh", "content": "echo hi\n"}),
        )
        .await;
    let script = assert_ok(&r, 201)["script_id"].as_i64().unwrap();
    let r = app
        .admin()
        .post_json(&format!("/v2/scripts/{script}/approve"), &json!({}))
        .await;
    assert_ok(&r, 200);
    let mut ws = dial(&app, &key).await;
    ws.send(hello("strings-1", |_| {})).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");

    // Output keeps colours and line breaks and loses only NUL; it is stored and acknowledged.
    let run = queue_and_receive(&app, &writer, &mut ws, "strings-1", script).await;
    let at = "2026-01-01T00:00:00.000Z";
    send(
        &mut ws,
        json!({"type": "run_accepted", "run_id": run, "started_at": at}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "run_result", "run_id": run, "status": "succeeded", "exit_code": 0,
               "stdout": "ok\u{0}\u{1b}[1mbold\n", "stderr": "\u{0}",
               "stdout_truncated": false, "stderr_truncated": false,
               "started_at": at, "finished_at": at, "duration_ms": 5}),
    )
    .await;
    let ack = next_json(&mut ws).await;
    assert_eq!(ack, json!({"type": "ack", "run_id": run}));
    let stored = assert_ok(&app.admin().get(&format!("/v2/runs/{run}")).await, 200);
    assert_eq!(stored["status"], "succeeded", "{stored:#}");
    assert_eq!(stored["stdout"], "ok\u{FFFD}\u{1b}[1mbold\n");
    assert_eq!(stored["stderr"], "\u{FFFD}");

    // A refusal's detail loses every control character but tabs and line breaks.
    let run = queue_and_receive(&app, &writer, &mut ws, "strings-1", script).await;
    send(
        &mut ws,
        json!({"type": "run_skipped", "run_id": run, "script": "greet",
               "reason": "not_in_allowlist", "detail": "no\u{7}pe\u{1b}[2J\tnot listed\n"}),
    )
    .await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "ack", "run_id": run})
    );
    let stored = assert_ok(&app.admin().get(&format!("/v2/runs/{run}")).await, 200);
    assert_eq!(stored["status"], "refused", "{stored:#}");
    assert_eq!(
        stored["refusal_detail"],
        "no\u{FFFD}pe\u{FFFD}[2J\tnot listed\n"
    );

    // A refusal naming a script that is no script name is refused, and nothing is stored.
    let run = queue_and_receive(&app, &writer, &mut ws, "strings-1", script).await;
    send(
        &mut ws,
        json!({"type": "run_skipped", "run_id": run, "script": "greet\u{0}",
               "reason": "not_in_allowlist", "detail": "x"}),
    )
    .await;
    expect_malformed(&mut ws, "script name").await;
    let stored = assert_ok(&app.admin().get(&format!("/v2/runs/{run}")).await, 200);
    assert_eq!(stored["status"], "dispatched", "{stored:#}");

    // A run id with a control character ends the session.
    let mut ws = dial(&app, &key).await;
    ws.send(hello("strings-1", |h| h["running"] = json!([run])))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    send(
        &mut ws,
        json!({"type": "run_accepted", "run_id": "r\u{0}1", "started_at": at}),
    )
    .await;
    expect_malformed(&mut ws, "run id").await;
}
