//! SIGHUP (`systemctl reload medic-agent`): the real agent re-reads its configuration without
//! stopping. A new allowlist applies to the next request; a file with problems is refused and
//! the running configuration kept; a change to what the session announces (labels) makes the
//! agent reconnect with it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::hardening::{Host, Running, Ws, accept_hello, next, own_user, probe, run, send};

/// Waits until the agent's log holds `needle` `count` times (the agent writes it when done).
fn wait_for_log(host: &Host, needle: &str, count: usize) {
    let log = host.dir.path().join("agent.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hangup(agent: &Running) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn added(run_id: &str) -> Value {
    let mut request = probe(run_id, "echo added\n", json!({}));
    request["script"] = json!("added");
    request
}

async fn skipped_reason(ws: &mut Ws, request: Value) -> Value {
    send(ws, request).await;
    let reply = next(ws).await;
    assert_eq!(reply["type"], "run_skipped", "{reply}");
    send(ws, json!({"type": "ack", "run_id": reply["run_id"]})).await;
    reply["reason"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_allowlist_and_keeps_a_good_configuration() {
    let Some(start) = own_user() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host::new(start, listener.local_addr().unwrap().port());
    let (mut agent, mut ws) = host.connect(&listener).await;
    assert_eq!(
        skipped_reason(&mut ws, added("r1")).await,
        "not_in_allowlist"
    );

    // The administrator allows the script and reloads: the next request runs, on the same
    // connection.
    host.write_config("[[allow]]\nscript = \"added\"\n");
    hangup(&agent);
    wait_for_log(&host, "configuration reloaded", 1);
    let result = run(&mut ws, added("r2")).await;
    assert_eq!(result["stdout"], "added\n", "{result}");

    // A file with a problem is refused: the agent keeps running with what it had.
    host.write_config("[[allow]]\nscript = \"added\"\nbogus_key = 1\n");
    hangup(&agent);
    wait_for_log(&host, "reload refused", 1);
    let result = run(&mut ws, added("r3")).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );

    // New labels are announced: the agent reconnects and says hello with them.
    host.write_config("[[allow]]\nscript = \"added\"\n[labels]\nrole = \"web\"\n");
    hangup(&agent);
    let (mut ws2, hello) = accept_hello(&listener, &agent).await;
    drop(ws);
    assert_eq!(hello["labels"], json!({"role": "web"}), "{hello}");
    let result = run(&mut ws2, added("r4")).await;
    assert_eq!(result["status"], "succeeded", "{result}");
    wait_for_log(&host, "configuration reloaded", 2);
}
