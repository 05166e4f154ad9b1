//! Load and measurement tool for the monitor benchmark (`server/bench/monitor.sh` drives it).
//!
//! Registers `--services` services with interval `--interval` and grace `--grace`, keeps every one
//! beating once per interval at a random phase through `POST /heartbeat`, silences
//! `--silent-percent` of them at random moments, and after `--duration` seconds reads the
//! alerts back and prints:
//!
//! - detection lag per silenced service, p50/p99/max: the alert's `created_at` minus its
//!   deadline (the service's last accepted heartbeat plus the interval, as the server recorded
//!   it in `down_since`), and the same from the client's clock (last acknowledged beat plus the
//!   interval → alert opened);
//! - missed alerts (silenced, no alert) and false alerts (an alert, after the first interval,
//!   for a service that was still beating);
//! - the server processes' CPU seconds per minute and RSS (from `/proc`, `--pids`), and the
//!   monitor's pass durations from `/metrics` (`medic_monitor_pass_seconds`).
//!
//! Run it through the script; by hand:
//! `monitor_load --base http://127.0.0.1:18182 --key ADMIN --services 100000 --interval 60 \
//!  --duration 240 --pids 1234`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;

struct Args {
    base: String,
    key: String,
    services: usize,
    interval: u64,
    grace: u64,
    duration: u64,
    silent_percent: f64,
    pids: Vec<u32>,
    metrics_base: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        base: "http://127.0.0.1:18182".into(),
        key: String::new(),
        services: 10_000,
        interval: 60,
        grace: 5,
        duration: 240,
        silent_percent: 1.0,
        pids: Vec::new(),
        metrics_base: None,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--base" => a.base = v,
            "--key" => a.key = v,
            "--services" => a.services = v.parse().expect("--services"),
            "--interval" => a.interval = v.parse().expect("--interval"),
            "--grace" => a.grace = v.parse().expect("--grace"),
            "--duration" => a.duration = v.parse().expect("--duration"),
            "--silent-percent" => a.silent_percent = v.parse().expect("--silent-percent"),
            "--pids" => {
                a.pids = v
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse().expect("--pids"))
                    .collect();
            }
            "--metrics-base" => a.metrics_base = Some(v),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_ms(v: &Value) -> Option<i64> {
    let s = v.as_str()?;
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// (utime + stime) in seconds and RSS in MiB of a process.
fn proc_sample(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kb / 1024.0))
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `medic_monitor_pass_seconds` from the Prometheus text: count, sum and bucket counts.
fn pass_histogram(text: &str) -> (f64, f64, Vec<(f64, f64)>) {
    let (mut count, mut sum, mut buckets) = (0.0, 0.0, Vec::new());
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name == "medic_monitor_pass_seconds_count" {
            count = value;
        } else if name == "medic_monitor_pass_seconds_sum" {
            sum = value;
        } else if let Some(rest) = name.strip_prefix("medic_monitor_pass_seconds_bucket{le=\"") {
            let le = rest.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            buckets.push((le, value));
        }
    }
    (count, sum, buckets)
}

fn bucket_quantile(buckets: &[(f64, f64)], total: f64, q: f64) -> f64 {
    let want = total * q;
    buckets
        .iter()
        .find(|(_, c)| *c >= want)
        .map_or(f64::NAN, |(le, _)| *le)
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let auth = format!("Bearer {}", a.key);
    let prefix = format!("mb{}", now_ms() % 1_000_000);

    let interval_ms = a.interval as i64 * 1000;
    let duration_ms = a.duration as i64 * 1000;
    let t0 = Instant::now();
    let rel = move || t0.elapsed().as_millis() as i64;
    // When each service beats next (ms since t0; never until registered), when the measured
    // period starts (after registration), and whether the load has ended.
    let next: Arc<Vec<AtomicI64>> =
        Arc::new((0..a.services).map(|_| AtomicI64::new(i64::MAX)).collect());
    let start_rel = Arc::new(AtomicI64::new(i64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    // Silenced services stop at a random moment of the measured period, so that their deadline
    // (last beat + interval + grace) falls well inside it.
    let silent_count = ((a.services as f64) * a.silent_percent / 100.0).round() as usize;
    let mut silent: HashMap<usize, i64> = HashMap::new();
    while silent.len() < silent_count {
        let i = rand::random_range(0..a.services);
        let stop_at =
            rand::random_range(interval_ms..(duration_ms - 2 * interval_ms).max(interval_ms + 1));
        silent.insert(i, stop_at);
    }
    let silent = Arc::new(silent);
    let last_ack: Arc<Mutex<HashMap<usize, i64>>> = Arc::new(Mutex::new(HashMap::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));

    // Senders: 64 connections posting heartbeats.
    let (tx, rx) = tokio::sync::mpsc::channel::<usize>(200_000);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (client, rx, last_ack, sent, failed, base, prefix) = (
            client.clone(),
            rx.clone(),
            last_ack.clone(),
            sent.clone(),
            failed.clone(),
            a.base.clone(),
            prefix.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(i) = rx.lock().await.recv().await else {
                    break;
                };
                let r = client
                    .post(format!("{base}/heartbeat"))
                    .json(&json!({"heartbeat_name": format!("{prefix}-{i}"), "status": "up"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        sent.fetch_add(1, Ordering::Relaxed);
                        last_ack.lock().await.insert(i, now_ms());
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    // Scheduler: every service beats once per interval from its registration on, so none is
    // ever overdue while the others are still being registered.
    let scheduler = {
        let (next, start_rel, done, silent, failed) = (
            next.clone(),
            start_rel.clone(),
            done.clone(),
            silent.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let now = rel();
                let start = start_rel.load(Ordering::Relaxed);
                for (i, due) in next.iter().enumerate() {
                    let d = due.load(Ordering::Relaxed);
                    if d > now {
                        continue;
                    }
                    due.store(d + interval_ms, Ordering::Relaxed);
                    if start != i64::MAX && silent.get(&i).is_some_and(|stop| now >= start + stop) {
                        continue;
                    }
                    if tx.try_send(i).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // 1. Register; the registration's own beat starts each service's schedule.
    let t = Instant::now();
    let ids: Arc<Mutex<HashMap<i64, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    futures::stream::iter(0..a.services)
        .for_each_concurrent(32, |i| {
            let (client, auth, base, prefix, ids, next) =
                (&client, &auth, &a.base, &prefix, &ids, &next);
            async move {
                let body = json!({"heartbeat_name": format!("{prefix}-{i}"),
                                  "interval_seconds": a.interval, "grace_seconds": a.grace});
                for _ in 0..5 {
                    match client
                        .post(format!("{base}/v2/services"))
                        .header("Authorization", auth)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let v: Value = r.json().await.unwrap_or_default();
                            if let Some(id) = v["results"]["service_id"].as_i64() {
                                ids.lock().await.insert(id, i);
                            }
                            let _ = client
                                .post(format!("{base}/heartbeat"))
                                .json(&json!({"heartbeat_name": format!("{prefix}-{i}"), "status": "up"}))
                                .send()
                                .await;
                            next[i].store(rel() + interval_ms, Ordering::Relaxed);
                            return;
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                panic!("could not register service {i}");
            }
        })
        .await;
    eprintln!(
        "registered {} services in {:.1}s",
        a.services,
        t.elapsed().as_secs_f64()
    );

    // 2. The measured period.
    let start = Instant::now();
    let start_epoch = now_ms();
    start_rel.store(rel(), Ordering::Relaxed);
    // Only alerts after the first full interval and grace of the period count as false.
    let warmup_end = start_epoch + interval_ms + a.grace as i64 * 1000;
    let before: Vec<(f64, f64)> = a.pids.iter().filter_map(|p| proc_sample(*p)).collect();
    let metrics_base = a.metrics_base.clone().unwrap_or_else(|| a.base.clone());
    let metrics_before = client
        .get(format!("{metrics_base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let mut peak_rss = vec![0.0f64; a.pids.len()];
    while (start.elapsed().as_millis() as i64) < duration_ms {
        for (k, p) in a.pids.iter().enumerate() {
            if let Some((_, rss)) = proc_sample(*p) {
                peak_rss[k] = peak_rss[k].max(rss);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    done.store(true, Ordering::Relaxed);
    let _ = scheduler.await;
    for w in workers {
        let _ = w.await;
    }
    // Every service stops beating now; alerts for deadlines after this are the run ending.
    let end_epoch = now_ms();
    // Give the last deadlines (at most one interval after the last silence) time to fire.
    let after: Vec<(f64, f64)> = a.pids.iter().filter_map(|p| proc_sample(*p)).collect();
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics_after = client
        .get(format!("{metrics_base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();

    // 3. Read the alerts back.
    let mut alerts: Vec<Value> = Vec::new();
    let mut offset = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{}/v2/alerts?kind=heartbeat_missing&limit=250&offset={offset}&since={}",
                a.base,
                chrono::DateTime::from_timestamp_millis(warmup_end)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default()
                    .replace('+', "%2B")
            ))
            .header("Authorization", &auth)
            .send()
            .await
            .expect("alerts")
            .json()
            .await
            .expect("alerts json");
        let entries = page["results"]["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let n = entries.len();
        alerts.extend(entries);
        if n < 250 {
            break;
        }
        offset += 250;
    }
    let by_name = ids.lock().await.clone();
    let acks = last_ack.lock().await;
    let mut server_lag = Vec::new();
    let mut client_lag = Vec::new();
    let mut alerted: HashSet<usize> = HashSet::new();
    let mut false_alerts = 0;
    for x in &alerts {
        let Some(i) = x["service_id"]
            .as_i64()
            .and_then(|id| by_name.get(&id))
            .copied()
        else {
            continue;
        };
        let (Some(created), Some(down)) = (parse_ms(&x["created_at"]), parse_ms(&x["down_since"]))
        else {
            continue;
        };
        if down >= end_epoch {
            continue;
        }
        let silenced_at = silent.get(&i).map(|stop| start_epoch + stop);
        if silenced_at.is_none_or(|at| down < at) {
            if down > warmup_end {
                false_alerts += 1;
            }
            continue;
        }
        alerted.insert(i);
        server_lag.push(created - down);
        if let Some(ack) = acks.get(&i) {
            client_lag.push(created - (ack + interval_ms + a.grace as i64 * 1000));
        }
    }
    let missed = silent.keys().filter(|i| !alerted.contains(i)).count();
    server_lag.sort_unstable();
    client_lag.sort_unstable();
    let (c0, s0, _) = pass_histogram(&metrics_before);
    let (c1, s1, b1) = pass_histogram(&metrics_after);
    let passes = c1 - c0;
    println!(
        "RESULT services={} interval_s={} duration_s={} heartbeats_sent={} heartbeat_errors={}",
        a.services,
        a.interval,
        a.duration,
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    println!(
        "RESULT silenced={} alerted={} missed={} false_alerts={}",
        silent.len(),
        alerted.len(),
        missed,
        false_alerts
    );
    println!(
        "RESULT detection_lag_ms server(p50={} p99={} max={}) client(p50={} p99={} max={})",
        percentile(&server_lag, 0.5),
        percentile(&server_lag, 0.99),
        server_lag.last().copied().unwrap_or(0),
        percentile(&client_lag, 0.5),
        percentile(&client_lag, 0.99),
        client_lag.last().copied().unwrap_or(0),
    );
    println!(
        "RESULT monitor_passes={} pass_mean_ms={:.2} pass_p99_le_ms={:.1} pass_time_per_min_ms={:.0}",
        passes,
        if passes > 0.0 {
            (s1 - s0) / passes * 1000.0
        } else {
            0.0
        },
        bucket_quantile(&b1, c1, 0.99) * 1000.0,
        (s1 - s0) * 1000.0 / minutes,
    );
    for (k, p) in a.pids.iter().enumerate() {
        if let (Some(b), Some(e)) = (before.get(k), after.get(k)) {
            println!(
                "RESULT pid={p} cpu_s_per_min={:.2} rss_mb_end={:.1} rss_mb_peak={:.1}",
                (e.0 - b.0) / minutes,
                e.1,
                peak_rss[k].max(e.1)
            );
        }
    }
}
