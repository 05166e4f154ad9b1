//! Tests against real Redis servers.
//!
//! * The shared server is taken from `MEDIC_TEST_REDIS_URL`. When it is unset
//!   these tests are skipped, unless `MEDIC_TEST_REQUIRE_SERVICES=1`, in which
//!   case they fail.
//! * The fallback/recovery test starts its own `redis-server` on a free port
//!   (skipped, or failed under `MEDIC_TEST_REQUIRE_SERVICES=1`, when the
//!   binary is missing), so it never disturbs the shared server.
//!
//! Every test uses a unique key prefix, so runs do not collide.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

fn services_required() -> bool {
    std::env::var("MEDIC_TEST_REQUIRE_SERVICES").is_ok_and(|v| v.trim() == "1")
}

/// Shared Redis URL, or `None` (after printing a skip note) when it is not
/// configured. Panics when services are required.
fn redis_url(test: &str) -> Option<String> {
    match std::env::var("MEDIC_TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if services_required() => panic!(
            "{test}: MEDIC_TEST_REDIS_URL is not set but MEDIC_TEST_REQUIRE_SERVICES=1; \
             point it at a Redis server, e.g. redis://127.0.0.1:6379"
        ),
        _ => {
            println!("skipping {test}: MEDIC_TEST_REDIS_URL is not set");
            None
        }
    }
}

/// A key prefix unique to this test run and call.
fn unique(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test-{tag}-{}-{nanos:x}-{n}", std::process::id())
}

async fn raw_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn pttl(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

async fn redis_limiter(url: &str, pool: usize) -> RateLimiter {
    let limiter = RateLimiter::new(LimiterKind::Redis, Some(url), pool)
        .await
        .unwrap();
    assert_eq!(limiter.backend(), "redis");
    limiter
}

#[tokio::test]
async fn redis_burst_remaining_and_retry_after() {
    let Some(url) = redis_url("redis_burst_remaining_and_retry_after") else {
        return;
    };
    let limiter = redis_limiter(&url, 2).await;
    let key = unique("burst");
    for i in 0..10u32 {
        let d = limiter.check(RateClass::Heartbeat, &key, 10).await;
        assert!(d.allowed, "request {i}");
        assert_eq!(d.limit, 10);
        assert_eq!(d.remaining, 9 - i);
        assert_eq!(d.retry_after, None);
        // Each allowed request adds one 6 s interval (minus elapsed time).
        let expected = Duration::from_secs(6 * u64::from(i + 1));
        assert!(d.reset_after <= expected, "{:?}", d.reset_after);
        assert!(d.reset_after > expected - Duration::from_secs(2));
    }
    let d = limiter.check(RateClass::Heartbeat, &key, 10).await;
    assert!(!d.allowed);
    assert_eq!(d.remaining, 0);
    let retry = d.retry_after.unwrap();
    assert!(
        retry > Duration::from_secs(4) && retry <= Duration::from_secs(6),
        "{retry:?}"
    );
    assert!(d.reset_after > Duration::from_secs(58) && d.reset_after <= Duration::from_secs(60));
}

#[tokio::test]
async fn redis_refills_over_time() {
    let Some(url) = redis_url("redis_refills_over_time") else {
        return;
    };
    let limiter = redis_limiter(&url, 1).await;
    let key = unique("refill");
    // 1200/min = one every 50 ms.
    let mut allowed = 0;
    for _ in 0..1300 {
        if limiter.check(RateClass::Metrics, &key, 1200).await.allowed {
            allowed += 1;
        }
    }
    // The loop takes a little time, during which a few tokens come back.
    assert!((1200..1300).contains(&allowed), "{allowed}");
    let d = limiter.check(RateClass::Metrics, &key, 1200).await;
    assert!(!d.allowed);
    assert!(d.retry_after.unwrap() <= Duration::from_millis(50));
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(limiter.check(RateClass::Metrics, &key, 1200).await.allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_checks_are_atomic() {
    let Some(url) = redis_url("redis_concurrent_checks_are_atomic") else {
        return;
    };
    let limiter = redis_limiter(&url, 4).await;
    let key = Arc::new(unique("atomic"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let limiter = limiter.clone();
        let key = Arc::clone(&key);
        tasks.spawn(async move { limiter.check(RateClass::Heartbeat, &key, 50).await });
    }
    let mut allowed = 0;
    let mut remaining_seen = Vec::new();
    while let Some(d) = tasks.join_next().await {
        let d = d.unwrap();
        if d.allowed {
            allowed += 1;
            remaining_seen.push(d.remaining);
        }
    }
    assert_eq!(allowed, 50);
    assert_eq!(limiter.backend(), "redis", "no fallback may have happened");
    // Each allowed request saw a distinct count (modulo the little refill
    // during the run, remaining values are 49..=0).
    remaining_seen.sort_unstable();
    remaining_seen.dedup();
    assert!(remaining_seen.len() >= 45, "{remaining_seen:?}");
}

#[tokio::test]
async fn redis_replicas_share_budget() {
    let Some(url) = redis_url("redis_replicas_share_budget") else {
        return;
    };
    let a = redis_limiter(&url, 2).await;
    let b = redis_limiter(&url, 3).await;
    let key = unique("replicas");
    let mut allowed = 0;
    for i in 0..40 {
        let replica = if i % 2 == 0 { &a } else { &b };
        if replica.check(RateClass::Management, &key, 20).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 20);
    assert!(!a.check(RateClass::Management, &key, 20).await.allowed);
    assert!(!b.check(RateClass::Management, &key, 20).await.allowed);
}

#[tokio::test]
async fn redis_keys_have_ttl_and_format() {
    let Some(url) = redis_url("redis_keys_have_ttl_and_format") else {
        return;
    };
    let limiter = redis_limiter(&url, 1).await;
    let mut conn = raw_conn(&url).await;
    let key = unique("ttl");

    // limit 60 → one request occupies 1 s.
    assert!(limiter.check(RateClass::Health, &key, 60).await.allowed);
    let redis_key = format!("medic:rl:health:60:{key}");
    let ttl = pttl(&mut conn, &redis_key).await;
    assert!(ttl > 0 && ttl <= 1_000, "ttl {ttl}");

    // limit 1 → one request occupies the full minute.
    assert!(limiter.check(RateClass::Health, &key, 1).await.allowed);
    let ttl = pttl(&mut conn, &format!("medic:rl:health:1:{key}")).await;
    assert!(ttl > 58_000 && ttl <= 60_000, "ttl {ttl}");

    // A denied request does not extend the TTL.
    assert!(!limiter.check(RateClass::Health, &key, 1).await.allowed);
    let ttl2 = pttl(&mut conn, &format!("medic:rl:health:1:{key}")).await;
    assert!(ttl2 <= ttl, "{ttl2} > {ttl}");

    // Nothing else was written for this key.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("medic:rl:*{key}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");

    // Keys expire: a bucket at limit 1200 (50 ms) is gone shortly after.
    let short = unique("expire");
    assert!(limiter.check(RateClass::Docs, &short, 1200).await.allowed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("medic:rl:docs:1200:{short}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn redis_limits_classes_and_keys_are_separate() {
    let Some(url) = redis_url("redis_limits_classes_and_keys_are_separate") else {
        return;
    };
    let limiter = redis_limiter(&url, 2).await;
    let key = unique("tiers");
    assert!(limiter.check(RateClass::Heartbeat, &key, 1).await.allowed);
    assert!(!limiter.check(RateClass::Heartbeat, &key, 1).await.allowed);
    // Same key, different tier.
    let d = limiter.check(RateClass::Heartbeat, &key, 2).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    // Same key and tier, different class.
    assert!(limiter.check(RateClass::Docs, &key, 1).await.allowed);
    // Different key.
    assert!(
        limiter
            .check(RateClass::Heartbeat, &format!("{key}-other"), 1)
            .await
            .allowed
    );
}

#[tokio::test]
async fn redis_ping_reports_latency() {
    let Some(url) = redis_url("redis_ping_reports_latency") else {
        return;
    };
    let limiter = redis_limiter(&url, 1).await;
    let latency = limiter.ping().await.unwrap().unwrap();
    assert!(latency < Duration::from_secs(1));

    let auto = RateLimiter::new(LimiterKind::Auto, Some(&url), 1)
        .await
        .unwrap();
    assert_eq!(auto.backend(), "redis");
    assert!(matches!(auto.ping().await, Some(Ok(_))));
}

// ---------------------------------------------------------------------------
// Fallback and recovery (no shared server needed).
// ---------------------------------------------------------------------------

/// Records counters and gauges on the current thread, for metric assertions.
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<TestGauge>>>,
}

#[derive(Default)]
struct TestGauge(Mutex<f64>);

struct TestCounter(Arc<AtomicU64>);

impl metrics::CounterFn for TestCounter {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl metrics::GaugeFn for TestGauge {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

fn render(key: &metrics::Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn counter(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(&format!("{name}{{}}"))
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    fn gauge(&self, rendered: &str) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(rendered)
            .map(|g| *g.0.lock().unwrap())
    }

    fn assert_backend_gauge(&self, active: &str) {
        for backend in ["redis", "memory"] {
            let expected = if backend == active { 1.0 } else { 0.0 };
            assert_eq!(
                self.gauge(&format!("medic_rate_limiter_backend{{backend={backend}}}")),
                Some(expected),
                "gauge for {backend} while {active} is active"
            );
        }
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let cell = Arc::clone(
            self.counters
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        );
        metrics::Counter::from_arc(Arc::new(TestCounter(cell)))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let cell = Arc::clone(self.gauges.lock().unwrap().entry(render(key)).or_default());
        metrics::Gauge::from_arc(cell)
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[tokio::test]
async fn auto_with_unreachable_redis_uses_memory() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let limiter = RateLimiter::new(LimiterKind::Auto, Some("redis://127.0.0.1:1"), 3)
        .await
        .unwrap();
    assert_eq!(limiter.backend(), "memory");
    recorder.assert_backend_gauge("memory");
    assert!(matches!(limiter.ping().await, Some(Err(_))));

    // Still enforces limits (fail-open to memory, not to "allow all").
    for i in 0..5 {
        assert!(
            limiter
                .check(RateClass::Heartbeat, "ip:10.0.0.1", 5)
                .await
                .allowed,
            "{i}"
        );
    }
    let d = limiter.check(RateClass::Heartbeat, "ip:10.0.0.1", 5).await;
    assert!(!d.allowed);
    assert!(d.retry_after.is_some());
    assert_eq!(recorder.counter("medic_rate_limiter_fallback_total"), 6);
}

#[tokio::test]
async fn explicit_redis_fails_when_unreachable() {
    let err = RateLimiter::new(LimiterKind::Redis, Some("redis://127.0.0.1:1"), 2)
        .await
        .unwrap_err();
    assert!(matches!(err, RateLimitError::Connect(_)), "{err}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private `redis-server` child process, killed on drop.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// `None` when `redis-server` is not installed.
    fn new(port: u16) -> Option<Self> {
        let mut this = Self { port, child: None };
        this.start().then_some(this)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start(&mut self) -> bool {
        let spawned = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => {
                self.child = Some(child);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => panic!("cannot start redis-server: {e}"),
        }
    }

    async fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on port {} did not start", self.port);
    }

    /// Sends a signal (e.g. `STOP` / `CONT`) to the child.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().map(Child::id).unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_for_backend(limiter: &RateLimiter, want: &str) {
    for _ in 0..150 {
        if limiter.backend() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("backend did not become {want:?} within 15 s");
}

#[tokio::test]
async fn auto_falls_back_and_recovers() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let settings = Settings {
        probe_interval: Duration::from_millis(100),
        ..Settings::default()
    };

    // 1. Redis is down at startup: memory.
    let limiter = RateLimiter::with_settings(LimiterKind::Auto, Some(&url), 2, settings)
        .await
        .unwrap();
    assert_eq!(limiter.backend(), "memory");
    recorder.assert_backend_gauge("memory");

    // 2. Redis comes up: the background probe connects and switches over.
    let Some(mut server) = PrivateRedis::new(port) else {
        assert!(
            !services_required(),
            "redis-server is not installed but MEDIC_TEST_REQUIRE_SERVICES=1"
        );
        println!("skipping auto_falls_back_and_recovers: redis-server is not installed");
        return;
    };
    server.wait_ready().await;
    wait_for_backend(&limiter, "redis").await;
    recorder.assert_backend_gauge("redis");
    let key = unique("recover");
    let d = limiter.check(RateClass::Heartbeat, &key, 3).await;
    assert!(d.allowed);
    let mut conn = raw_conn(&url).await;
    let ttl = pttl(&mut conn, &format!("medic:rl:heartbeat:3:{key}")).await;
    assert!(ttl > 0, "check must have gone to Redis");
    drop(conn);

    // 3. Redis dies: the next check fails over to memory and still limits.
    server.stop();
    let fallbacks_before = recorder.counter("medic_rate_limiter_fallback_total");
    let mut allowed = 0;
    for _ in 0..10 {
        if limiter.check(RateClass::Heartbeat, &key, 3).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "memory fallback has its own, full bucket");
    assert_eq!(limiter.backend(), "memory");
    recorder.assert_backend_gauge("memory");
    assert_eq!(
        recorder.counter("medic_rate_limiter_fallback_total") - fallbacks_before,
        10
    );
    assert!(matches!(limiter.ping().await, Some(Err(_))));

    // 4. Redis returns (empty: script cache and keys are gone): switch back.
    assert!(server.start());
    server.wait_ready().await;
    wait_for_backend(&limiter, "redis").await;
    recorder.assert_backend_gauge("redis");
    let d = limiter.check(RateClass::Heartbeat, &key, 3).await;
    assert!(d.allowed, "fresh Redis has an empty bucket");
    assert_eq!(d.remaining, 2);
    assert_eq!(limiter.backend(), "redis");
    assert!(matches!(limiter.ping().await, Some(Ok(_))));

    // 5. The script is reloaded transparently after SCRIPT FLUSH.
    let mut conn = raw_conn(&url).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let d = limiter.check(RateClass::Heartbeat, &key, 3).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    assert_eq!(limiter.backend(), "redis");
}

#[tokio::test]
async fn hung_redis_times_out_to_memory_and_recovers() {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let port = free_port();
    let Some(mut server) = PrivateRedis::new(port) else {
        assert!(
            !services_required(),
            "redis-server is not installed but MEDIC_TEST_REQUIRE_SERVICES=1"
        );
        println!("skipping hung_redis_times_out_to_memory_and_recovers: no redis-server");
        return;
    };
    server.wait_ready().await;
    let settings = Settings {
        call_timeout: Duration::from_millis(200),
        probe_interval: Duration::from_millis(100),
        ..Settings::default()
    };
    let limiter = RateLimiter::with_settings(LimiterKind::Redis, Some(&server.url()), 3, settings)
        .await
        .unwrap();
    assert_eq!(limiter.backend(), "redis");
    let key = unique("hung");
    assert!(limiter.check(RateClass::Management, &key, 2).await.allowed);

    // A frozen server accepts connections but never answers.
    server.signal("STOP");
    let started = Instant::now();
    let d = limiter.check(RateClass::Management, &key, 2).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "check blocked for {took:?}");
    assert!(d.allowed, "memory fallback starts with a full bucket");
    wait_for_backend(&limiter, "memory").await;
    recorder.assert_backend_gauge("memory");
    assert!(recorder.counter("medic_rate_limiter_fallback_total") >= 1);
    // While marked down, checks do not wait for Redis at all.
    let started = Instant::now();
    for _ in 0..20 {
        limiter.check(RateClass::Management, &key, 2).await;
    }
    assert!(started.elapsed() < Duration::from_millis(100));

    server.signal("CONT");
    wait_for_backend(&limiter, "redis").await;
    recorder.assert_backend_gauge("redis");
    // Back on Redis. (The check that timed out was still queued on the
    // frozen server and may have been applied after it resumed, so only a
    // fresh key has a known state.)
    let fresh = unique("hung-fresh");
    let d = limiter.check(RateClass::Management, &fresh, 2).await;
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
    let mut conn = raw_conn(&server.url()).await;
    let ttl = pttl(&mut conn, &format!("medic:rl:management:2:{fresh}")).await;
    assert!(ttl > 0, "check must have gone to Redis");
    server.stop();
}
