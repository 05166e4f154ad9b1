//! Round-trip timer for runs on a real agent (`agent/bench/roundtrip.sh` drives it).
//!
//! Against a running medic-server with a real `medic-agent` connected as `--agent`, it
//! registers a script whose whole content is `true`, has it approved by a second admin key
//! (the key that registers a version may not approve it), then `--runs` times, one after the
//! other: sends `POST /v2/runs`, then one `GET /v2/runs/{id}?wait_seconds=30`, which the
//! server answers as soon as the run has ended (so the timer does not load the machine with
//! polls while the run is under way). It prints p50/p99/max of:
//!
//! - **created → result stored**, client clock: from sending the `POST /v2/runs` to the
//!   answer of the waiting `GET` (both requests' HTTP included);
//! - **created → result stored, server clock**: `reported_at - created_at` of the stored run
//!   (both stamped by the server, in milliseconds): the round trip itself, without the timer's
//!   own HTTP;
//! - **server clock**: `finished_at - created_at` of the stored run (the agent's end of the
//!   script minus the server's creation time, both in milliseconds), split into created →
//!   dispatched (the server), dispatched → started and started → finished (the agent's clock;
//!   on one host the clocks agree).
//!
//! By hand: `agent_roundtrip --base http://127.0.0.1:18191 --admin-key KEY --agent ID --runs 300`.

use std::time::Instant;

use serde_json::{Value, json};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    // The mean too: for differences of millisecond timestamps it is the figure that is not
    // rounded (the rounding of the two ends averages out).
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "  {name:<40} n={:<5} p50={:.2}ms p99={:.2}ms max={:.2}ms mean={mean:.2}ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// An RFC 3339 timestamp → Unix milliseconds.
fn millis(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, &url).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {v}");
    v
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut base = "http://127.0.0.1:18191".to_owned();
    let mut key = String::new();
    let mut agent = String::new();
    let mut runs: usize = 300;
    let raw: Vec<String> = std::env::args().skip(1).collect();
    for pair in raw.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--base" => base = v,
            "--admin-key" => key = v,
            "--agent" => agent = v,
            "--runs" => runs = v.parse().expect("--runs"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !key.is_empty() && !agent.is_empty(),
        "--admin-key and --agent are required"
    );
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    let approver = call(
        &http,
        post.clone(),
        format!("{base}/v2/api-keys"),
        &key,
        Some(json!({"name": "roundtrip-approver", "scopes": "admin"})),
    )
    .await["results"]["key"]
        .as_str()
        .expect("key")
        .to_owned();
    let script = call(
        &http,
        post.clone(),
        format!("{base}/v2/scripts"),
        &key,
        Some(json!({"name": "bench-true", "interpreter": "sh", "content": "true\n"})),
    )
    .await;
    let script_id = script["results"]["script_id"].clone();
    if script["results"]["status"] == "pending" {
        call(
            &http,
            post.clone(),
            format!("{base}/v2/scripts/{script_id}/approve"),
            &approver,
            Some(json!({})),
        )
        .await;
    }

    let (mut client_ms, mut server_ms) = (Vec::new(), Vec::new());
    let mut stored_ms = Vec::new();
    // Where the time goes (millisecond timestamps, so each phase is ±1 ms).
    let (mut to_dispatch, mut to_start, mut in_script) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0;
    // A few unmeasured runs first: connections, caches, the agent's first fork.
    for i in 0..runs + 10 {
        let t0 = Instant::now();
        let created = call(
            &http,
            post.clone(),
            format!("{base}/v2/runs"),
            &key,
            Some(json!({"agent_id": agent, "script_id": script_id, "timeout_seconds": 30})),
        )
        .await;
        let run_id = created["results"]["run_id"]
            .as_str()
            .expect("run id")
            .to_owned();
        // One request that the server answers when the run has ended: the timer adds no load
        // of its own while the run is under way.
        let run = call(
            &http,
            get.clone(),
            format!("{base}/v2/runs/{run_id}?wait_seconds=30"),
            &key,
            None,
        )
        .await["results"]
            .clone();
        let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
        if run["status"] != "succeeded" {
            failures += 1;
            eprintln!("run {run_id}: {run}");
            continue;
        }
        if i < 10 {
            continue;
        }
        client_ms.push(elapsed);
        if let (Some(c), Some(r)) = (millis(&run["created_at"]), millis(&run["reported_at"])) {
            stored_ms.push((r - c) as f64);
        }
        if let (Some(c), Some(f)) = (millis(&run["created_at"]), millis(&run["finished_at"])) {
            server_ms.push((f - c) as f64);
            if let (Some(d), Some(s)) = (millis(&run["dispatched_at"]), millis(&run["started_at"]))
            {
                to_dispatch.push((d - c) as f64);
                to_start.push((s - d) as f64);
                in_script.push((f - s) as f64);
            }
        }
    }
    println!("runs of `true` on agent {agent}: {runs} measured, {failures} not succeeded");
    summary("created -> result stored (client)", client_ms);
    summary("created -> result stored (server clock)", stored_ms);
    summary("created -> finished (server clock)", server_ms);
    summary("  created -> dispatched (server)", to_dispatch);
    summary("  dispatched -> started (agent clock)", to_start);
    summary("  started -> finished (agent clock)", in_script);
}
