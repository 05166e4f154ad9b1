//! Fleet load tool for the agent gateway (`server/bench/fleet.sh` drives it).
//!
//! Opens `--agents` simulated agent sessions (default 10,000) against one running medic-server
//! at protocol level: each is a tokio-tungstenite client that sends `hello`, waits for
//! `welcome`, heartbeats every `--heartbeat` seconds (default 20, at a random phase), and answers
//! every `run_request` at once with `run_accepted` and a succeeded `run_result`. With every
//! session open, it registers a script, has it approved by a second admin key, and creates runs
//! through `POST /v2/runs` on random agents at `--rate` runs/s for `--duration` seconds. It
//! prints:
//!
//! - how many sessions opened, and how long opening them took;
//! - the server's RSS (from `/proc/<pid>/status`, `--pid`) idle with every session open and at
//!   the end of the run phase, and its peak (`VmHWM`);
//! - the server's CPU (utime + stime from `/proc/<pid>/stat`) as % of one core while idle with
//!   every session heartbeating, and during the run phase;
//! - latency per run, p50/p99/max: created → dispatched (the `POST /v2/runs` request sent → the
//!   simulated agent reads the `run_request`), dispatched → result stored (the `run_request`
//!   read → the server's `ack` of the result read, which the server sends only once the result
//!   is durable), and created → result stored.
//!
//! By hand: `agent_fleet --base http://127.0.0.1:18190 --admin-key KEY --agents 10000 --pid 1234`
//! (`--heartbeat 20 --rate 20 --duration 60 --idle 40 --connect-concurrency 200` are the
//! defaults). It creates a second admin key to approve the script (the key that registers a
//! version may not approve it). The process needs a file-descriptor limit above `--agents`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::{SinkExt, StreamExt};
use medic_protocol::{
    AgentId, AgentMessage, Heartbeat, Hello, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RunAccepted,
    RunId, RunResult, RunStatus, ServerMessage, Timestamp,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

struct Args {
    base: String,
    admin_key: String,
    agents: usize,
    heartbeat: u64,
    rate: f64,
    duration: u64,
    idle: u64,
    connect_concurrency: usize,
    pid: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        base: "http://127.0.0.1:18190".into(),
        admin_key: String::new(),
        agents: 10_000,
        heartbeat: 20,
        rate: 20.0,
        duration: 60,
        idle: 40,
        connect_concurrency: 200,
        pid: None,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| panic!("{flag} {v:?}")) };
        match flag.as_str() {
            "--base" => a.base = v,
            "--admin-key" => a.admin_key = v,
            "--agents" => a.agents = num(&v) as usize,
            "--heartbeat" => a.heartbeat = num(&v),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--duration" => a.duration = num(&v),
            "--idle" => a.idle = num(&v),
            "--connect-concurrency" => a.connect_concurrency = num(&v) as usize,
            "--pid" => a.pid = Some(num(&v) as u32),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.admin_key.is_empty(), "--admin-key is required");
    a
}

/// (utime + stime) in seconds, RSS and peak RSS in MiB of a process.
fn proc_sample(pid: u32) -> Option<(f64, f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    };
    Some((
        ticks / 100.0,
        kb("VmRSS:")? / 1024.0,
        kb("VmHWM:")? / 1024.0,
    ))
}

/// Timings of one run, as seen by the tool.
#[derive(Default, Clone, Copy)]
struct Times {
    created: Option<Instant>,
    dispatched: Option<Instant>,
    stored: Option<Instant>,
}

#[derive(Default)]
struct Shared {
    runs: Mutex<HashMap<String, Times>>,
    open: AtomicUsize,
    failed: AtomicUsize,
    heartbeats: AtomicU64,
    requests: AtomicU64,
}

impl Shared {
    fn note(&self, run_id: &str, f: impl FnOnce(&mut Times)) {
        let mut runs = self.runs.lock().unwrap();
        f(runs.entry(run_id.to_owned()).or_default());
    }
}

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// One simulated agent: connect, hello, then heartbeat and answer runs until the process ends.
async fn agent(
    ws_url: String,
    key: String,
    id: String,
    heartbeat: Duration,
    shared: Arc<Shared>,
    opened: tokio::sync::OwnedSemaphorePermit,
) {
    let mut request = ws_url.into_client_request().expect("ws url");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    // Small buffers: ten thousand clients share this process with the server's two cores.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut ws =
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok((ws, _)) => ws,
            Err(e) => {
                if shared.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("{id}: connect: {e}");
                }
                return;
            }
        };
    let send = |m: &AgentMessage| Message::Text(medic_protocol::encode(m).unwrap().into());
    let hello = AgentMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: MIN_PROTOCOL_VERSION,
        agent_id: AgentId::new(id.clone()),
        hostname: id.clone(),
        agent_version: "fleet-sim".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        labels: BTreeMap::new(),
        running: Vec::new(),
        host: None,
    });
    if ws.send(send(&hello)).await.is_err() {
        shared.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match medic_protocol::decode::<ServerMessage>(&t) {
                Ok(ServerMessage::Welcome(_)) => break,
                other => {
                    if shared.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("{id}: no welcome: {:?}", other.map(|m| m.kind()));
                    }
                    return;
                }
            },
            Some(Ok(_)) => {}
            _ => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    shared.open.fetch_add(1, Ordering::Relaxed);
    drop(opened);
    // A random phase, so the fleet's heartbeats spread over the interval.
    let phase = Duration::from_millis(rand::random_range(0..heartbeat.as_millis() as u64));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + phase, heartbeat);
    let began = Instant::now();
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let m = AgentMessage::Heartbeat(Heartbeat {
                    seq,
                    sent_at: now(),
                    uptime_seconds: began.elapsed().as_secs(),
                    running_runs: 0,
                    load_average: None,
                    host: None,
                });
                seq += 1;
                if ws.send(send(&m)).await.is_err() {
                    break;
                }
                shared.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            frame = ws.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                match medic_protocol::decode::<ServerMessage>(&text) {
                    Ok(ServerMessage::RunRequest(r)) => {
                        let at = Instant::now();
                        shared.requests.fetch_add(1, Ordering::Relaxed);
                        shared.note(r.run_id.as_str(), |t| t.dispatched = Some(at));
                        let started = now();
                        let accepted = AgentMessage::RunAccepted(RunAccepted {
                            run_id: r.run_id.clone(),
                            started_at: started.clone(),
                        });
                        let result = AgentMessage::RunResult(RunResult {
                            run_id: RunId::new(r.run_id.as_str()),
                            status: RunStatus::Succeeded,
                            exit_code: Some(0),
                            signal: None,
                            stdout: String::new(),
                            stderr: String::new(),
                            stdout_truncated: false,
                            stderr_truncated: false,
                            started_at: started,
                            finished_at: now(),
                            duration_ms: 0,
                        });
                        if ws.feed(send(&accepted)).await.is_err() || ws.send(send(&result)).await.is_err() {
                            break;
                        }
                    }
                    Ok(ServerMessage::Ack(a)) => {
                        let at = Instant::now();
                        shared.note(a.run_id.as_str(), |t| t.stored = Some(at));
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("{id}: undecodable frame: {e}"),
                }
            }
        }
    }
    shared.open.fetch_sub(1, Ordering::Relaxed);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "  {name:<28} n={:<6} p50={:.1}ms p99={:.1}ms max={:.1}ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

async fn api(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let resp = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

#[tokio::main]
async fn main() {
    let a = args();
    let http = reqwest::Client::new();
    let base = a.base.trim_end_matches('/').to_owned();
    let ws_url = format!(
        "{}/v2/agents/connect",
        base.replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1)
    );
    let post = reqwest::Method::POST;

    // Keys and an approved script: registered with one admin key, approved with another.
    let approver = api(
        &http,
        &base,
        &a.admin_key,
        post.clone(),
        "/v2/api-keys",
        json!({"name": "fleet-approver", "scopes": "admin"}),
    )
    .await["results"]["key"]
        .as_str()
        .expect("approver key")
        .to_owned();
    let agent_key = api(
        &http,
        &base,
        &a.admin_key,
        post.clone(),
        "/v2/api-keys",
        json!({"name": "fleet-agents", "scopes": "agent"}),
    )
    .await["results"]["key"]
        .as_str()
        .expect("agent key")
        .to_owned();
    let script = api(
        &http,
        &base,
        &a.admin_key,
        post.clone(),
        "/v2/scripts",
        json!({"name": "fleet-ok", "interpreter": "sh", "content": "exit 0\n"}),
    )
    .await;
    let script_id = script["results"]["script_id"].clone();
    if script["results"]["status"] == "pending" {
        api(
            &http,
            &base,
            &approver,
            post.clone(),
            &format!("/v2/scripts/{script_id}/approve"),
            json!({"reason": "fleet benchmark"}),
        )
        .await;
    }

    // Open the sessions, a bounded number of handshakes at a time.
    let shared = Arc::new(Shared::default());
    let gate = Arc::new(Semaphore::new(a.connect_concurrency));
    let heartbeat = Duration::from_secs(a.heartbeat);
    let started = Instant::now();
    let ids: Vec<String> = (0..a.agents).map(|i| format!("fleet-{i:05}")).collect();
    for id in &ids {
        let permit = gate.clone().acquire_owned().await.unwrap();
        tokio::spawn(agent(
            ws_url.clone(),
            agent_key.clone(),
            id.clone(),
            heartbeat,
            shared.clone(),
            permit,
        ));
    }
    // Every handshake has finished once all permits are back.
    let _all = gate
        .acquire_many(a.connect_concurrency as u32)
        .await
        .unwrap();
    let connect_secs = started.elapsed().as_secs_f64();
    println!(
        "sessions: {} open, {} failed, opened in {connect_secs:.1}s",
        shared.open.load(Ordering::Relaxed),
        shared.failed.load(Ordering::Relaxed)
    );

    // Idle: every session heartbeating, nothing else.
    let sample = |label: &str| {
        a.pid.and_then(proc_sample).inspect(|(cpu, rss, hwm)| {
            println!("server {label}: rss={rss:.0}MiB peak_rss={hwm:.0}MiB cpu_total={cpu:.1}s")
        })
    };
    // Let the connection burst settle, then measure a full window.
    tokio::time::sleep(heartbeat).await;
    let beats0 = shared.heartbeats.load(Ordering::Relaxed);
    let idle0 = sample("idle start");
    tokio::time::sleep(Duration::from_secs(a.idle)).await;
    let idle1 = sample("idle end");
    let beats = shared.heartbeats.load(Ordering::Relaxed) - beats0;
    println!(
        "idle {}s with {} sessions: {beats} heartbeats ({:.0}/s)",
        a.idle,
        shared.open.load(Ordering::Relaxed),
        beats as f64 / a.idle as f64
    );
    if let (Some(s0), Some(s1)) = (idle0, idle1) {
        println!(
            "server idle CPU: {:.1}% of one core",
            100.0 * (s1.0 - s0.0) / a.idle as f64
        );
    }

    // Runs on random agents at a steady rate.
    let run_start = sample("runs start");
    let every = Duration::from_secs_f64(1.0 / a.rate);
    let mut tick = tokio::time::interval(every);
    let total = (a.rate * a.duration as f64) as usize;
    let began = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for _ in 0..total {
        tick.tick().await;
        let agent_id = ids[rand::random_range(0..ids.len())].clone();
        let (http, base, key, shared) = (
            http.clone(),
            base.clone(),
            a.admin_key.clone(),
            shared.clone(),
        );
        let script_id = script_id.clone();
        creators.spawn(async move {
            let created = Instant::now();
            let resp = api(
                &http,
                &base,
                &key,
                reqwest::Method::POST,
                "/v2/runs",
                json!({"agent_id": agent_id, "script_id": script_id, "timeout_seconds": 30}),
            )
            .await;
            let run_id = resp["results"]["run_id"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| resp["results"]["run_id"].as_i64().map(|n| n.to_string()))
                .expect("run id");
            shared.note(&run_id, |t| t.created = Some(created));
        });
    }
    while creators.join_next().await.is_some() {}
    let run_secs = began.elapsed().as_secs_f64();
    // Let the last results come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = shared
            .runs
            .lock()
            .unwrap()
            .values()
            .filter(|t| t.stored.is_some())
            .count();
        if done >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run_end = sample("runs end");
    if let (Some(s0), Some(s1)) = (run_start, run_end) {
        println!(
            "server CPU during runs: {:.1}% of one core",
            100.0 * (s1.0 - s0.0) / run_secs
        );
    }
    // The server's own count of open sessions.
    if let Ok(resp) = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&a.admin_key)
        .send()
        .await
        && let Ok(text) = resp.text().await
        && let Some(line) = text
            .lines()
            .find(|l| l.starts_with("medic_agents_connected "))
    {
        println!("server metric: {line}");
    }
    let runs: Vec<Times> = shared.runs.lock().unwrap().values().copied().collect();
    let ms = |a: Option<Instant>, b: Option<Instant>| Some((b? - a?).as_secs_f64() * 1000.0);
    let stored = runs.iter().filter(|t| t.stored.is_some()).count();
    println!(
        "runs: {total} created at {:.0}/s over {run_secs:.1}s, {} dispatched, {stored} results stored, {} sessions still open",
        a.rate,
        shared.requests.load(Ordering::Relaxed),
        shared.open.load(Ordering::Relaxed)
    );
    summary(
        "created -> dispatched",
        runs.iter()
            .filter_map(|t| ms(t.created, t.dispatched))
            .collect(),
    );
    summary(
        "dispatched -> result stored",
        runs.iter()
            .filter_map(|t| ms(t.dispatched, t.stored))
            .collect(),
    );
    summary(
        "created -> result stored",
        runs.iter()
            .filter_map(|t| ms(t.created, t.stored))
            .collect(),
    );
}
