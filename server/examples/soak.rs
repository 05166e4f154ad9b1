//! Memory soak: steady heartbeats at a fixed rate for a long time, with the server's RSS sampled
//! every `--sample` seconds (`server/bench/soak.sh` drives it; see `docs/benchmarks.md`).
//!
//! Registers `--services` services (`soak-1` … `soak-N`) through `POST /v2/services`, then posts
//! `--rate` heartbeats per second round-robin over them for `--minutes`, optionally reading
//! `/metrics` every `--scrape` seconds as a Prometheus server would. Every sample prints one
//! line; at the end it prints the peak RSS and the least-squares slope of RSS over the second
//! half of the run (after warm-up), in MB per minute, plus the rate actually achieved and the
//! number of failed requests with their causes (HTTP status, or `timeout`/`connect`/`transport`).
//!
//! `--key` registers the services (admin or write scope); `--beat-key` (default: the same key)
//! authenticates the heartbeats.
//!
//! By hand: `soak --base http://127.0.0.1:18183 --key ADMIN --pid 1234 --services 100 \
//!  --rate 2000 --minutes 15 [--scrape 15]`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;

struct Args {
    base: String,
    key: String,
    beat_key: Option<String>,
    pid: u32,
    services: usize,
    rate: u64,
    minutes: f64,
    scrape: Option<u64>,
    sample: u64,
    in_flight: usize,
}

fn args() -> Args {
    let mut a = Args {
        base: "http://127.0.0.1:18183".into(),
        key: String::new(),
        beat_key: None,
        pid: 0,
        services: 100,
        rate: 2_000,
        minutes: 15.0,
        scrape: None,
        sample: 10,
        in_flight: 256,
    };
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        match flag.as_str() {
            "--base" => a.base = v,
            "--key" => a.key = v,
            "--beat-key" => a.beat_key = Some(v),
            "--pid" => a.pid = v.parse().expect("--pid"),
            "--services" => a.services = v.parse().expect("--services"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--minutes" => a.minutes = v.parse().expect("--minutes"),
            "--scrape" => a.scrape = Some(v.parse().expect("--scrape")).filter(|s| *s > 0),
            "--sample" => a.sample = v.parse().expect("--sample"),
            "--in-flight" => a.in_flight = v.parse().expect("--in-flight"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.pid > 0, "--pid (the server's process id) is required");
    a
}

/// A field of `/proc/<pid>/status` in MiB (`VmRSS`, `RssAnon`: the heap and stacks, `RssFile`:
/// mapped files such as the binary's own code).
fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    num / den
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.in_flight)
        .build()
        .expect("client");
    let auth = format!("Bearer {}", a.key);
    let beat_auth = format!("Bearer {}", a.beat_key.as_deref().unwrap_or(&a.key));

    // Register the services (already registered ones answer 409 and are fine).
    let registered = futures::stream::iter(1..=a.services)
        .map(|i| {
            let (client, auth, base) = (client.clone(), auth.clone(), a.base.clone());
            async move {
                let r = client
                    .post(format!("{base}/v2/services"))
                    .header("Authorization", auth)
                    .json(
                        &json!({ "heartbeat_name": format!("soak-{i}"), "interval_seconds": 600 }),
                    )
                    .send()
                    .await
                    .expect("register");
                assert!(
                    r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT,
                    "registering soak-{i}: {}",
                    r.status()
                );
            }
        })
        .buffer_unordered(32)
        .count()
        .await;
    println!(
        "registered {registered} services; rate {}/s for {} min, scrape {}, RSS every {} s",
        a.rate,
        a.minutes,
        a.scrape
            .map_or("off".to_owned(), |s| format!("every {s} s")),
        a.sample
    );

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    // Why requests failed: an HTTP status, or the transport error's kind.
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let total = Duration::from_secs_f64(a.minutes * 60.0);
    let t0 = Instant::now();

    // Scraper: GET /metrics on its own schedule, body read and dropped.
    if let Some(every) = a.scrape {
        let (client, base) = (client.clone(), a.base.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            loop {
                tick.tick().await;
                if let Ok(r) = client.get(format!("{base}/metrics")).send().await {
                    let _ = r.bytes().await;
                }
            }
        });
    }

    // Sampler: RSS every `sample` seconds, printed as it goes.
    let samples = {
        let (ok, failed, skipped, pid, every) =
            (ok.clone(), failed.clone(), skipped.clone(), a.pid, a.sample);
        tokio::spawn(async move {
            let mut points: Vec<(f64, f64, f64)> = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            loop {
                tick.tick().await;
                let at = t0.elapsed();
                let Some(rss) = rss_mb(pid) else {
                    println!("server process {pid} is gone");
                    break;
                };
                let minutes = at.as_secs_f64() / 60.0;
                let sent = ok.load(Ordering::Relaxed);
                let anon = status_mb(pid, "RssAnon:").unwrap_or(f64::NAN);
                println!(
                    "t={:>5.0}s rss={rss:>7.1}MB anon={anon:>7.1}MB ok={sent} failed={} \
                     skipped={} rate={:.0}/s",
                    at.as_secs_f64(),
                    failed.load(Ordering::Relaxed),
                    skipped.load(Ordering::Relaxed),
                    sent as f64 / at.as_secs_f64().max(1e-9),
                );
                points.push((minutes, rss, anon));
                if at >= total {
                    break;
                }
            }
            points
        })
    };

    // Load: every 10 ms, send the requests due by now; at most `in_flight` at once (a request
    // that would exceed it is counted as skipped, so the achieved rate is honest).
    let slots = Arc::new(Semaphore::new(a.in_flight));
    let bodies: Arc<Vec<String>> = Arc::new(
        (1..=a.services)
            .map(|i| json!({ "heartbeat_name": format!("soak-{i}"), "status": "UP" }).to_string())
            .collect(),
    );
    let mut due_sent: u64 = 0;
    let mut next_service = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while t0.elapsed() < total {
        tick.tick().await;
        let due = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64;
        while due_sent < due {
            due_sent += 1;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let body = bodies[next_service].clone();
            next_service = (next_service + 1) % bodies.len();
            let (client, auth, base, ok, failed, failures) = (
                client.clone(),
                beat_auth.clone(),
                a.base.clone(),
                ok.clone(),
                failed.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/heartbeat"))
                    .header("Authorization", auth)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        let why = match other {
                            Ok(r) => r.status().as_u16().to_string(),
                            Err(e) if e.is_timeout() => "timeout".to_owned(),
                            Err(e) if e.is_connect() => "connect".to_owned(),
                            Err(_) => "transport".to_owned(),
                        };
                        *failures.lock().expect("failures").entry(why).or_default() += 1;
                    }
                }
                drop(permit);
            });
        }
    }

    let points = samples.await.expect("sampler");
    let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let half = points.last().map_or(0.0, |p| p.0) / 2.0;
    let second: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.0 >= half)
        .map(|p| (p.0, p.1))
        .collect();
    let second_anon: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.0 >= half)
        .map(|p| (p.0, p.2))
        .collect();
    let first_rss = points.first().map_or(f64::NAN, |p| p.1);
    let last_rss = points.last().map_or(f64::NAN, |p| p.1);
    let elapsed = t0.elapsed().as_secs_f64();
    let failures = failures.lock().expect("failures");
    let failure_kinds = if failures.is_empty() {
        "none".to_owned()
    } else {
        failures
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "RESULT services={} rate_target={} rate_achieved={:.0} minutes={:.1} scrape={} \
         ok={} failed={} failures={failure_kinds} skipped={} rss_first_mb={first_rss:.1} rss_last_mb={last_rss:.1} \
         peak_rss_mb={peak:.1} slope_second_half_mb_per_min={:.3} \
         anon_slope_second_half_mb_per_min={:.3} samples_second_half={}",
        a.services,
        a.rate,
        ok.load(Ordering::Relaxed) as f64 / elapsed,
        elapsed / 60.0,
        a.scrape.map_or("off".to_owned(), |s| format!("{s}s")),
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        skipped.load(Ordering::Relaxed),
        slope(&second),
        slope(&second_anon),
        second.len(),
    );
}
