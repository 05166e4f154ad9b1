//! Load and measurement tool for the playbook engine benchmark (`server/bench/playbook.sh`
//! drives it against a `medic-server` process on PostgreSQL).
//!
//! 1. **Concurrent executions.** Stores a playbook of three steps — a webhook to a local
//!    recorder (this process), a `wait` of `--wait` seconds, a `condition` — and starts
//!    `--executions` executions of it at once through `POST /v2/playbooks/{id}/execute`
//!    (`--submitters` requests in flight). When all have ended it prints, from the executions'
//!    stored step timelines, **due → step started** p50/p99/max: the condition step against the
//!    wait's deadline (the durable timer; the first step is recorded started in the transaction
//!    that creates the execution, so it cannot be late by this measure), plus how many requests the recorder saw per `Idempotency-Key`.
//! 2. **Idle.** With nothing due, counts the database's transactions (`pg_stat_database`
//!    `xact_commit + xact_rollback`, the tool's own two reads taken off) and the reads of the
//!    executions table (`pg_stat_user_tables` sequential + index scans of
//!    `playbook_executions`, which only the engine reads while idle) for `--idle` seconds.
//! 3. **Agents** (with `--agents N`: N real `medic-agent` processes, started by the script,
//!    connected with the label `role=bench` and an allowlist that pins the script `true`).
//!    Registers that script (approved with `--approver-key`, another person's admin key),
//!    stores a playbook of one script step on `{labels: {role: bench}}`, starts
//!    `--agent-executions` executions at `--agent-rate` per second and prints **execution
//!    start → first agent run dispatched** p50/p99/max: the execution's `created_at` against
//!    the earliest `dispatched_at` of its runs (the moment a session handed the run to its
//!    agent's connection; run ids are `<execution>.<step>.<n>`), plus start → last run ended.
//! 4. **Alert burst.** Registers `--burst` services that never beat, matched by a playbook
//!    with an alert trigger and its own circuit breaker (`max_per_hour: --burst-limit`); as
//!    they go down together the monitor opens their alerts and fires the playbook. Prints the
//!    executions started and skipped, the time from the first to the last, and `medic_circuit_breaker_trips_total` from `/metrics`.
//!
//! For each phase it prints the server process's CPU seconds per minute and its RSS (from
//! `/proc/<pid>`, `--pid`). By hand:
//! `playbook_load --base http://127.0.0.1:18195 --key ADMIN --db postgres://… --pid 1234`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use medic_server::domain::Timestamp;
use serde_json::{Value, json};
use sqlx::Row;

#[derive(Clone)]
struct Args {
    base: String,
    key: String,
    db: String,
    pid: u32,
    executions: usize,
    wait: u64,
    submitters: usize,
    idle: u64,
    settle: u64,
    burst: usize,
    burst_limit: u32,
    burst_interval: u64,
    agents: usize,
    agent_executions: usize,
    agent_rate: u64,
    approver_key: String,
}

fn args() -> Args {
    let mut a = Args {
        base: "http://127.0.0.1:18195".into(),
        key: String::new(),
        db: String::new(),
        pid: 0,
        executions: 1000,
        wait: 5,
        submitters: 64,
        idle: 60,
        settle: 15,
        burst: 10_000,
        burst_limit: 100,
        burst_interval: 30,
        agents: 0,
        agent_executions: 200,
        agent_rate: 20,
        approver_key: String::new(),
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--base" => a.base = v,
            "--key" => a.key = v,
            "--db" => a.db = v,
            "--pid" => a.pid = v.parse().expect("--pid"),
            "--executions" => a.executions = v.parse().expect("--executions"),
            "--wait" => a.wait = v.parse().expect("--wait"),
            "--submitters" => a.submitters = v.parse().expect("--submitters"),
            "--idle" => a.idle = v.parse().expect("--idle"),
            "--settle" => a.settle = v.parse().expect("--settle"),
            "--burst" => a.burst = v.parse().expect("--burst"),
            "--burst-limit" => a.burst_limit = v.parse().expect("--burst-limit"),
            "--burst-interval" => a.burst_interval = v.parse().expect("--burst-interval"),
            "--agents" => a.agents = v.parse().expect("--agents"),
            "--agent-executions" => a.agent_executions = v.parse().expect("--agent-executions"),
            "--agent-rate" => a.agent_rate = v.parse().expect("--agent-rate"),
            "--approver-key" => a.approver_key = v.clone(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// CPU seconds (user + system) and RSS / peak RSS (KiB) of a process, from `/proc`.
fn proc_usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command: state is field 0, utime 11, stime 12; 100 ticks a second.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

struct Phase {
    cpu: f64,
    at: Instant,
}

impl Phase {
    fn start(pid: u32) -> Self {
        Self {
            cpu: proc_usage(pid).0,
            at: Instant::now(),
        }
    }

    fn report(&self, pid: u32, name: &str) {
        let (cpu, rss, hwm) = proc_usage(pid);
        let secs = self.at.elapsed().as_secs_f64();
        println!(
            "RESULT {name}: {secs:.1} s, server CPU {:.2} s ({:.2} CPU-s per minute), RSS {} MiB \
             (peak {} MiB)",
            cpu - self.cpu,
            (cpu - self.cpu) * 60.0 / secs.max(0.001),
            rss / 1024,
            hwm / 1024
        );
    }
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<i64>) {
    v.sort_unstable();
    println!(
        "RESULT {name}: n={} p50={} ms p99={} ms max={} ms",
        v.len(),
        pct(&v, 0.50),
        pct(&v, 0.99),
        v.last().copied().unwrap_or(0)
    );
}

fn ms_of(v: &Value) -> Option<i64> {
    v.as_str().and_then(Timestamp::parse).map(Timestamp::millis)
}

/// A local receiver for the webhook steps: counts requests per `Idempotency-Key`.
async fn recorder() -> (String, Arc<Mutex<HashMap<String, u32>>>) {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let s = Arc::clone(&s);
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            *s.lock().expect("lock").entry(key).or_default() += 1;
            "{}"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the recorder");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen)
}

async fn post(http: &reqwest::Client, a: &Args, path: &str, body: &Value) -> Value {
    let r = http
        .post(format!("{}{path}", a.base))
        .bearer_auth(&a.key)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {path}: {status} {v}");
    v["results"].clone()
}

async fn store_playbook(http: &reqwest::Client, a: &Args, yaml: &str) -> i64 {
    post(http, a, "/v2/playbooks", &json!({ "document": yaml })).await["playbook_id"]
        .as_i64()
        .expect("playbook id")
}

async fn xacts(pool: &sqlx::PgPool) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database \
           WHERE datname = current_database()), \
         (SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
           WHERE relname = 'playbook_executions')",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_database");
    (row.get::<i64, _>(0), row.get::<i64, _>(1))
}

async fn metric(http: &reqwest::Client, a: &Args, name: &str) -> f64 {
    let text = http
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::main]
async fn main() {
    let a = args();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&a.db)
        .await
        .expect("connect to the database");
    let (hook, seen) = recorder().await;

    // 1. Concurrent executions.
    let yaml = format!(
        "name: bench-load\nsteps:\n  - name: call\n    type: webhook\n    url: {hook}\n  \
         - name: pause\n    type: wait\n    duration: {}s\n  - name: check\n    type: condition\n    \
         check: {{step_status: {{step: call, status: completed}}}}\n",
        a.wait
    );
    let playbook = store_playbook(&http, &a, &yaml).await;
    println!(
        "== {} executions (webhook, {} s wait, condition)",
        a.executions, a.wait
    );
    let phase = Phase::start(a.pid);
    let path = format!("/v2/playbooks/{playbook}/execute");
    let submitted = Instant::now();
    let ids: Vec<i64> = futures::stream::iter(0..a.executions)
        .map(|_| {
            let (http, a, path) = (&http, &a, &path);
            async move {
                post(http, a, path, &json!({})).await["execution_id"]
                    .as_i64()
                    .expect("execution id")
            }
        })
        .buffer_unordered(a.submitters)
        .collect()
        .await;
    println!(
        "RESULT submitted {} executions in {:.2} s",
        ids.len(),
        submitted.elapsed().as_secs_f64()
    );
    loop {
        let open: i64 = sqlx::query(
            "SELECT count(*) FROM playbook_executions WHERE playbook_id = $1 \
             AND finished_at IS NULL",
        )
        .bind(playbook)
        .fetch_one(&pool)
        .await
        .expect("count")
        .get(0);
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase.report(a.pid, "executions phase");
    let rows = sqlx::query(
        "SELECT status, created_at, state FROM playbook_executions WHERE playbook_id = $1",
    )
    .bind(playbook)
    .fetch_all(&pool)
    .await
    .expect("executions");
    let (mut after_wait, mut statuses) = (Vec::new(), HashMap::new());
    for r in &rows {
        let status: String = r.get(0);
        *statuses.entry(status).or_insert(0_usize) += 1;
        let state: Value = r.get(2);
        let steps = &state["steps"];
        if let (Some(due), Some(s2)) =
            (ms_of(&steps[1]["deadline"]), ms_of(&steps[2]["started_at"]))
        {
            after_wait.push(s2 - due);
        }
    }
    println!("RESULT statuses: {statuses:?}");
    // The first step is recorded started in the transaction that creates the execution, so
    // only a step that a durable timer makes due measures the engine's lateness.
    summary(
        "due (wait's deadline) -> condition step started",
        after_wait,
    );
    {
        let seen = seen.lock().expect("lock");
        let twice = seen.values().filter(|&&n| n > 1).count();
        println!(
            "RESULT recorder: {} requests, {} keys, {} keys seen more than once",
            seen.values().sum::<u32>(),
            seen.len(),
            twice
        );
    }

    // 2. Idle: nothing due. PostgreSQL flushes a backend's statistics up to seconds after its
    //    work (at most every second, an idle backend after 10 s): the window opens after a
    //    settling time so that the executions phase's reads do not land in it.
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    println!(
        "== idle for {} s with nothing due (after {} s to settle)",
        a.idle, a.settle
    );
    let phase = Phase::start(a.pid);
    let (x0, s0) = xacts(&pool).await;
    tokio::time::sleep(Duration::from_secs(a.idle)).await;
    let (x1, s1) = xacts(&pool).await;
    let minutes = a.idle as f64 / 60.0;
    println!(
        "RESULT idle: {:.1} database transactions per minute (whole server), {:.1} reads of \
         the executions table per minute",
        (x1 - x0 - 1) as f64 / minutes,
        (s1 - s0) as f64 / minutes
    );
    phase.report(a.pid, "idle phase");

    // 3. Agents: start -> first run dispatched.
    if a.agents > 0 {
        agent_phase(&http, &a, &pool).await;
    }

    // 4. Alert burst with the circuit breaker on.
    if a.burst == 0 {
        return;
    }
    println!(
        "== alert burst: {} services going down together, playbook breaker {} per hour",
        a.burst, a.burst_limit
    );
    let burst_yaml = format!(
        "name: bench-burst\ncircuit_breaker: {{max_per_hour: {}}}\ntriggers:\n  - heartbeat: \
         \"burst-*\"\n    kinds: [heartbeat_missing]\nsteps:\n  - name: call\n    type: webhook\n    \
         url: {hook}\n",
        a.burst_limit
    );
    let burst_pb = store_playbook(&http, &a, &burst_yaml).await;
    let trips0 = metric(&http, &a, "medic_circuit_breaker_trips_total").await;
    let created = Instant::now();
    futures::stream::iter(0..a.burst)
        .map(|i| {
            let (http, a) = (&http, &a);
            async move {
                post(
                    http,
                    a,
                    "/v2/services",
                    &json!({"heartbeat_name": format!("burst-{i}"),
                            "interval_seconds": a.burst_interval, "grace_seconds": 0}),
                )
                .await;
            }
        })
        .buffer_unordered(a.submitters)
        .collect::<Vec<()>>()
        .await;
    println!(
        "RESULT registered {} services in {:.1} s",
        a.burst,
        created.elapsed().as_secs_f64()
    );
    let phase = Phase::start(a.pid);
    let deadline = Instant::now() + Duration::from_secs(a.burst_interval * 4 + 120);
    loop {
        let (n, open): (i64, i64) = {
            let r = sqlx::query(
                "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL) \
                 FROM playbook_executions WHERE playbook_id = $1",
            )
            .bind(burst_pb)
            .fetch_one(&pool)
            .await
            .expect("count");
            (r.get(0), r.get(1))
        };
        if n as usize >= a.burst && open == 0 {
            break;
        }
        if Instant::now() > deadline {
            println!("RESULT burst: only {n} executions ({open} open) before the deadline");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase.report(a.pid, "burst phase");
    let rows =
        sqlx::query("SELECT status, created_at FROM playbook_executions WHERE playbook_id = $1")
            .bind(burst_pb)
            .fetch_all(&pool)
            .await
            .expect("executions");
    let mut statuses = HashMap::new();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for r in &rows {
        let status: String = r.get(0);
        *statuses.entry(status).or_insert(0_usize) += 1;
        let created: chrono::DateTime<chrono::Utc> = r.get(1);
        let c = created.timestamp_millis();
        lo = lo.min(c);
        hi = hi.max(c);
    }
    println!(
        "RESULT burst: {} executions over {:.1} s, statuses {statuses:?}",
        rows.len(),
        (hi - lo).max(0) as f64 / 1000.0
    );
    let trips1 = metric(&http, &a, "medic_circuit_breaker_trips_total").await;
    println!("RESULT burst: breaker trips counted {}", trips1 - trips0);
}

/// Phase 3: executions of a one-step playbook that runs a script on every agent labelled
/// `role=bench`, started at a steady rate; start -> first run handed to its agent.
async fn agent_phase(http: &reqwest::Client, a: &Args, pool: &sqlx::PgPool) {
    println!(
        "== {} executions at {}/s, each running a script on {} agents",
        a.agent_executions, a.agent_rate, a.agents
    );
    // The script's approval needs another person's admin key (`medic-server api-key create
    // --owner`, made by the script): keys made through the API belong to their creator's owner.
    assert!(!a.approver_key.is_empty(), "--agents needs --approver-key");
    let script = post(
        http,
        a,
        "/v2/scripts",
        &json!({"name": "bench-true", "interpreter": "sh", "content": "true\n"}),
    )
    .await;
    if script["status"] == "pending" {
        let as_approver = Args {
            key: a.approver_key.clone(),
            ..a.clone()
        };
        post(
            http,
            &as_approver,
            &format!("/v2/scripts/{}/approve", script["script_id"]),
            &json!({}),
        )
        .await;
    }
    let yaml = "name: bench-agents\nsteps:\n  - name: run\n    type: script\n    script: bench-true\n    \
                on: {labels: {role: bench}}\n    require: all\n";
    let playbook = store_playbook(http, a, yaml).await;
    let path = format!("/v2/playbooks/{playbook}/execute");
    let phase = Phase::start(a.pid);
    let every = Duration::from_secs_f64(1.0 / a.agent_rate.max(1) as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut started = tokio::task::JoinSet::new();
    for _ in 0..a.agent_executions {
        tick.tick().await;
        let (http, a, path) = (http.clone(), a.clone(), path.clone());
        started.spawn(async move { post(&http, &a, &path, &json!({})).await });
    }
    while let Some(r) = started.join_next().await {
        r.expect("start");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let open: i64 = sqlx::query(
            "SELECT count(*) FROM playbook_executions WHERE playbook_id = $1 \
             AND finished_at IS NULL",
        )
        .bind(playbook)
        .fetch_one(pool)
        .await
        .expect("count")
        .get(0);
        if open == 0 || Instant::now() > deadline {
            if open > 0 {
                println!("RESULT agents: {open} executions still open after the deadline");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    phase.report(a.pid, "agents phase");
    let rows = sqlx::query(
        "SELECT e.status, e.created_at, min(r.dispatched_at), max(r.finished_at), count(r.id), \
           count(*) FILTER (WHERE r.status = 'succeeded') \
         FROM playbook_executions e \
         LEFT JOIN agent_runs r ON split_part(r.id, '.', 1) = e.id::text \
         WHERE e.playbook_id = $1 GROUP BY e.id",
    )
    .bind(playbook)
    .fetch_all(pool)
    .await
    .expect("executions and runs");
    let (mut statuses, mut dispatched, mut ended) = (HashMap::new(), Vec::new(), Vec::new());
    let (mut runs, mut succeeded) = (0_i64, 0_i64);
    for r in &rows {
        let status: String = r.get(0);
        *statuses.entry(status).or_insert(0_usize) += 1;
        let created: chrono::DateTime<chrono::Utc> = r.get(1);
        let sent: Option<chrono::DateTime<chrono::Utc>> = r.get(2);
        let finished: Option<chrono::DateTime<chrono::Utc>> = r.get(3);
        if let Some(sent) = sent {
            dispatched.push((sent - created).num_milliseconds());
        }
        if let Some(finished) = finished {
            ended.push((finished - created).num_milliseconds());
        }
        runs += r.get::<i64, _>(4);
        succeeded += r.get::<i64, _>(5);
    }
    println!("RESULT agents: statuses {statuses:?}, {runs} runs, {succeeded} succeeded");
    summary("execution start -> first agent run dispatched", dispatched);
    summary("execution start -> last agent run ended", ended);
}
