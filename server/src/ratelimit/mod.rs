//! Per-route-class request rate limiting.
//!
//! Every check is a GCRA (generic cell rate algorithm) step with
//! `rate = limit / 60 s` and `burst = limit`: a client may send `limit`
//! requests at once and then one every `60 / limit` seconds. State is keyed
//! on `(class, limit, key)`, so classes are independent and one key may be
//! checked against several tiers.
//!
//! # Backends
//!
//! * **Redis** — one atomic `EVALSHA` per check (on `NOSCRIPT`, e.g. after a
//!   Redis restart, the script is loaded and the call retried), running GCRA
//!   on the single key `medic:rl:<class>:<limit>:<key>` with the Redis server
//!   clock (`TIME`), so all replicas share one budget even with skewed host
//!   clocks. Keys expire (`PX`) as soon as their bucket is full again.
//!   Connections come from a round-robin pool of `pool_size`
//!   [`redis::aio::ConnectionManager`]s, which reconnect by themselves.
//!   Single-node (or primary/replica behind one address) Redis only; Redis
//!   Cluster is not supported by this client setup.
//! * **Memory** — a `DashMap` from bucket to its theoretical arrival time,
//!   driven by the same pure GCRA function (`gcra.rs`) the Lua script mirrors.
//!   This was chosen over `governor`'s keyed limiters because: both backends
//!   then compute identical [`Decision`]s (including `remaining` and
//!   `reset_after`, which `governor` does not expose directly), per-key tiers
//!   need no lazily created limiter per quota, and the clock is a one-method
//!   trait that tests replace. Buckets whose TAT has passed carry no
//!   information and are swept out at most every 10 s by the check that
//!   notices, so the map only holds keys active within about the last minute.
//!
//! # Fallback
//!
//! With a Redis URL, a failing or slow (500 ms) Redis call makes that check,
//! and every check after it, use the in-memory limiter (fail-open to local
//! limits, never to "allow everything"). A background task PINGs every 2 s and
//! switches back once Redis answers on all pooled connections. While the
//! fallback is active each replica enforces the quota on its own, and the
//! in-memory buckets know nothing of what was spent in Redis (and vice versa). A call that timed out may still be applied
//! by Redis later, so at worst it consumes one request of that bucket.
//!
//! Metrics:
//! * `medic_rate_limiter_fallback_total` (counter): checks served by the
//!   memory limiter although Redis is configured.
//! * `medic_rate_limiter_backend{backend="redis"|"memory"}` (gauge): 1 for the
//!   active backend, 0 for the other.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, Weak};
use std::time::{Duration, Instant};

mod gcra;
mod memory;
mod redis_backend;

#[cfg(test)]
mod tests_redis;

use memory::MemoryLimiter;
use redis_backend::RedisBackend;

const FALLBACK_METRIC: &str = "medic_rate_limiter_fallback_total";
const BACKEND_METRIC: &str = "medic_rate_limiter_backend";

/// Minimum time between two "Redis unavailable" warnings.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Which route class a request belongs to; each has its own per-minute limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateClass {
    Heartbeat,
    Management,
    Health,
    Metrics,
    Docs,
}

impl RateClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::Management => "management",
            Self::Health => "health",
            Self::Metrics => "metrics",
            Self::Docs => "docs",
        }
    }
}

impl fmt::Display for RateClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Backend selection, from `MEDIC_RATE_LIMITER_TYPE` (`auto`, `redis` or
/// `memory`, case-insensitive; see [`FromStr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimiterKind {
    /// Redis when a URL is configured and reachable, memory otherwise.
    #[default]
    Auto,
    /// Redis is required at startup.
    Redis,
    /// In-process only; Redis is never contacted.
    Memory,
}

impl FromStr for LimiterKind {
    type Err = RateLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Self::Auto),
            "redis" => Ok(Self::Redis),
            "memory" => Ok(Self::Memory),
            _ => Err(RateLimitError::UnknownKind(s.to_owned())),
        }
    }
}

/// Outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The per-minute quota the request was checked against.
    pub limit: u32,
    /// How many more requests would be allowed right now.
    pub remaining: u32,
    /// Time until the bucket is full again (`remaining == limit`).
    pub reset_after: Duration,
    /// When denied: how long until the next request would be allowed.
    pub retry_after: Option<Duration>,
}

/// Errors from building a [`RateLimiter`] or parsing its configuration.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("the redis rate limiter requires a Redis URL")]
    MissingRedisUrl,
    #[error("invalid Redis URL: {0}")]
    InvalidRedisUrl(String),
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error("unknown rate limiter type {0:?} (expected \"auto\", \"redis\" or \"memory\")")]
    UnknownKind(String),
}

/// Timing knobs; the defaults are what production uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Upper bound for one Redis command (check or PING).
    pub(crate) call_timeout: Duration,
    /// Upper bound for opening one connection.
    pub(crate) connect_timeout: Duration,
    /// Period of the background reconnect / health probe.
    pub(crate) probe_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            probe_interval: Duration::from_secs(2),
        }
    }
}

/// Rate limiter shared by all request handlers. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("backend", &self.backend())
            .field("redis", &self.inner.redis)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// In-memory limiter; never touches Redis.
    pub fn memory() -> Self {
        let limiter = Self::from_parts(MemoryLimiter::new(), None);
        limiter.inner.publish_backend();
        limiter
    }

    /// In-memory limiter with an injected clock.
    #[cfg(test)]
    pub(crate) fn memory_with_clock(clock: Arc<dyn memory::Clock>) -> Self {
        Self::from_parts(MemoryLimiter::with_clock(clock), None)
    }

    /// Builds the limiter for `kind`.
    ///
    /// * `Memory`: never touches Redis.
    /// * `Redis`: connects (all `pool_size` connections) or fails.
    /// * `Auto`: Redis if a URL is given and reachable, otherwise memory with
    ///   a warning; keeps trying to connect in the background and switches
    ///   to Redis when it becomes reachable.
    ///
    /// `pool_size` is the number of multiplexed connections used
    /// round-robin (`REDIS_POOL_SIZE`, 10 by default; 0 is treated as 1). An
    /// empty or blank URL counts as "not configured". Must be called within a
    /// Tokio runtime (it spawns the background probe when a URL is given).
    pub async fn new(
        kind: LimiterKind,
        redis_url: Option<&str>,
        pool_size: usize,
    ) -> Result<Self, RateLimitError> {
        Self::with_settings(kind, redis_url, pool_size, Settings::default()).await
    }

    pub(crate) async fn with_settings(
        kind: LimiterKind,
        redis_url: Option<&str>,
        pool_size: usize,
        settings: Settings,
    ) -> Result<Self, RateLimitError> {
        let url = redis_url.map(str::trim).filter(|u| !u.is_empty());
        let url = match (kind, url) {
            (LimiterKind::Memory, _) => {
                tracing::info!("rate limiter: in-memory backend");
                return Ok(Self::memory());
            }
            (LimiterKind::Auto, None) => {
                tracing::info!("rate limiter: no Redis URL configured, using in-memory backend");
                return Ok(Self::memory());
            }
            (LimiterKind::Redis, None) => return Err(RateLimitError::MissingRedisUrl),
            (_, Some(url)) => url,
        };

        let backend = RedisBackend::new(url, pool_size, settings)
            .map_err(|e| RateLimitError::InvalidRedisUrl(e.to_string()))?;
        match backend.connect().await {
            Ok(()) => tracing::info!(pool_size, "rate limiter: Redis backend connected"),
            Err(e) if kind == LimiterKind::Redis => return Err(RateLimitError::Connect(e)),
            Err(e) => tracing::warn!(
                error = %e,
                "rate limiter: Redis unreachable, using in-memory limits until it becomes available"
            ),
        }

        let limiter = Self::from_parts(MemoryLimiter::new(), Some(backend));
        tokio::spawn(supervise(
            Arc::downgrade(&limiter.inner),
            settings.probe_interval,
        ));
        Ok(limiter)
    }

    fn from_parts(memory: MemoryLimiter, redis: Option<RedisBackend>) -> Self {
        static DESCRIBE: Once = Once::new();
        DESCRIBE.call_once(|| {
            metrics::describe_counter!(
                FALLBACK_METRIC,
                "Rate-limit checks served by the in-memory limiter because Redis was unavailable"
            );
            metrics::describe_gauge!(BACKEND_METRIC, "Active rate limiter backend (1 = active)");
        });
        let limiter = Self {
            inner: Arc::new(Inner {
                memory,
                redis,
                warn_gate: WarnGate::new(),
                refused: dashmap::DashMap::new(),
            }),
        };
        limiter.inner.publish_backend();
        limiter
    }

    /// Checks (and on success consumes) one request for `key` in `class`
    /// against a quota of `limit_per_minute`. A quota of 0 denies everything.
    ///
    /// `key` identifies the client, e.g. `"key:<api key id>"` or
    /// `"ip:<addr>"`.
    pub async fn check(&self, class: RateClass, key: &str, limit_per_minute: u32) -> Decision {
        if limit_per_minute == 0 {
            return gcra::deny_all();
        }
        if let Some(redis) = &self.inner.redis {
            if redis.is_active() {
                match redis.check(class, key, limit_per_minute).await {
                    Ok(decision) => return decision,
                    Err(e) => self.inner.mark_down(&e),
                }
            }
            metrics::counter!(FALLBACK_METRIC).increment(1);
        }
        self.inner.memory.check(class, key, limit_per_minute)
    }

    /// [`Self::check`], remembering on this replica a refusal until it runs out, so that
    /// [`Self::refusing`] can answer for the client without asking the backend. For budgets
    /// whose refusal should stop work *before* it is done (looking up a presented API key).
    pub async fn check_refusing(&self, class: RateClass, key: &str, limit: u32) -> Decision {
        let decision = self.check(class, key, limit).await;
        if !decision.allowed {
            let until = Instant::now() + decision.retry_after.unwrap_or(Duration::from_secs(1));
            let refused = &self.inner.refused;
            if refused.len() >= self.inner.memory.max_buckets() {
                let now = Instant::now();
                refused.retain(|_, (u, _)| *u > now);
            }
            if refused.len() < self.inner.memory.max_buckets() {
                refused.insert((class, key.to_owned()), (until, decision));
            }
        }
        decision
    }

    /// The refusal [`Self::check_refusing`] last gave `key`, while it lasts.
    pub fn refusing(&self, class: RateClass, key: &str) -> Option<Decision> {
        let id = (class, key.to_owned());
        let (until, decision) = *self.inner.refused.get(&id)?;
        let now = Instant::now();
        if until <= now {
            self.inner.refused.remove(&id);
            return None;
        }
        Some(Decision {
            retry_after: Some(until - now),
            ..decision
        })
    }

    /// Bounds the in-memory limiter's client buckets (see `memory.rs`).
    pub fn set_max_buckets(&self, max: usize) {
        self.inner.memory.set_max_buckets(max);
    }

    /// Client buckets the in-memory limiter holds right now.
    pub fn memory_buckets(&self) -> usize {
        self.inner.memory.len()
    }

    /// Currently active backend: `"redis"` or `"memory"`.
    pub fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// Redis health for the health endpoint: `None` when Redis is not
    /// configured, otherwise the PING round-trip time or the failure reason.
    pub async fn ping(&self) -> Option<Result<Duration, String>> {
        let redis = self.inner.redis.as_ref()?;
        if !redis.is_connected() {
            let reason = redis
                .last_error()
                .unwrap_or_else(|| "not connected".to_owned());
            return Some(Err(reason));
        }
        let result = redis.ping_one().await;
        if let Err(e) = &result {
            self.inner.mark_down(e);
        }
        Some(result)
    }
}

struct Inner {
    memory: MemoryLimiter,
    redis: Option<RedisBackend>,
    warn_gate: WarnGate,
    /// Clients refused by [`RateLimiter::check_refusing`], until when; at most as many as the
    /// memory limiter's buckets.
    refused: dashmap::DashMap<(RateClass, String), (Instant, Decision)>,
}

impl Inner {
    fn backend(&self) -> &'static str {
        match &self.redis {
            Some(redis) if redis.is_active() => "redis",
            _ => "memory",
        }
    }

    fn publish_backend(&self) {
        let redis = self.backend() == "redis";
        metrics::gauge!(BACKEND_METRIC, "backend" => "redis").set(if redis { 1.0 } else { 0.0 });
        metrics::gauge!(BACKEND_METRIC, "backend" => "memory").set(if redis { 0.0 } else { 1.0 });
    }

    fn mark_down(&self, reason: &str) {
        let Some(redis) = &self.redis else { return };
        if redis.mark_down(reason) {
            self.publish_backend();
            if self.warn_gate.allow() {
                tracing::warn!(
                    error = %reason,
                    "rate limiter: Redis unavailable, falling back to in-memory limits"
                );
            } else {
                tracing::debug!(
                    error = %reason,
                    "rate limiter: Redis unavailable, falling back to in-memory limits"
                );
            }
        }
    }

    fn mark_up(&self) {
        let Some(redis) = &self.redis else { return };
        if redis.mark_up() {
            self.publish_backend();
            tracing::info!("rate limiter: Redis reachable, switched to Redis backend");
        }
    }

    /// One round of the background probe.
    async fn probe(&self) {
        let Some(redis) = &self.redis else { return };
        if !redis.is_connected() {
            match redis.connect().await {
                // `connect` already set the healthy flag; report the switch.
                Ok(()) => {
                    self.publish_backend();
                    tracing::info!("rate limiter: Redis reachable, switched to Redis backend");
                }
                Err(e) => tracing::debug!(error = %e, "rate limiter: Redis still unreachable"),
            }
        } else if redis.is_healthy() {
            if let Err(e) = redis.ping_one().await {
                self.mark_down(&e);
            }
        } else {
            match redis.ping_all().await {
                Ok(()) => self.mark_up(),
                Err(e) => tracing::debug!(error = %e, "rate limiter: Redis still unavailable"),
            }
        }
    }
}

/// Background reconnect / health probe; ends when the limiter is dropped.
async fn supervise(inner: Weak<Inner>, period: Duration) {
    let start = tokio::time::Instant::now() + period;
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.probe().await;
    }
}

/// Lets at most one warning through per [`WARN_INTERVAL`].
struct WarnGate {
    origin: Instant,
    /// Milliseconds since `origin` of the last warning; `u64::MAX` = never.
    last_ms: AtomicU64,
}

impl WarnGate {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn allow(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let interval = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < interval {
            return false;
        }
        self.last_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memory::FakeClock;

    #[test]
    fn class_names() {
        let all = [
            (RateClass::Heartbeat, "heartbeat"),
            (RateClass::Management, "management"),
            (RateClass::Health, "health"),
            (RateClass::Metrics, "metrics"),
            (RateClass::Docs, "docs"),
        ];
        for (class, name) in all {
            assert_eq!(class.as_str(), name);
            assert_eq!(class.to_string(), name);
        }
    }

    #[test]
    fn limiter_kind_parsing() {
        assert_eq!("auto".parse::<LimiterKind>().ok(), Some(LimiterKind::Auto));
        assert_eq!(
            "Redis".parse::<LimiterKind>().ok(),
            Some(LimiterKind::Redis)
        );
        assert_eq!(
            " MEMORY ".parse::<LimiterKind>().ok(),
            Some(LimiterKind::Memory)
        );
        assert_eq!("".parse::<LimiterKind>().ok(), Some(LimiterKind::Auto));
        assert!(matches!(
            "postgres".parse::<LimiterKind>(),
            Err(RateLimitError::UnknownKind(_))
        ));
        assert_eq!(LimiterKind::default(), LimiterKind::Auto);
    }

    #[test]
    fn warn_gate_throttles() {
        let gate = WarnGate::new();
        assert!(gate.allow());
        assert!(!gate.allow());
        assert!(!gate.allow());
    }

    #[tokio::test]
    async fn memory_limiter_burst_and_refill() {
        let clock = Arc::new(FakeClock::default());
        let limiter = RateLimiter::memory_with_clock(clock.clone());
        assert_eq!(limiter.backend(), "memory");
        assert!(limiter.ping().await.is_none());

        let mut remaining = Vec::new();
        for _ in 0..5 {
            let d = limiter.check(RateClass::Heartbeat, "key:1", 5).await;
            assert!(d.allowed);
            remaining.push(d.remaining);
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        let d = limiter.check(RateClass::Heartbeat, "key:1", 5).await;
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(d.reset_after, Duration::from_secs(60));

        // Independent class and key.
        assert!(limiter.check(RateClass::Health, "key:1", 5).await.allowed);
        assert!(
            limiter
                .check(RateClass::Heartbeat, "key:2", 5)
                .await
                .allowed
        );

        clock.advance(Duration::from_secs(12));
        let d = limiter.check(RateClass::Heartbeat, "key:1", 5).await;
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[tokio::test]
    async fn zero_limit_denies() {
        let limiter = RateLimiter::memory();
        let d = limiter.check(RateClass::Docs, "ip:127.0.0.1", 0).await;
        assert!(!d.allowed);
        assert_eq!(d.limit, 0);
    }

    #[tokio::test]
    async fn memory_kind_ignores_url() {
        let limiter = RateLimiter::new(LimiterKind::Memory, Some("redis://127.0.0.1:1"), 4)
            .await
            .unwrap();
        assert_eq!(limiter.backend(), "memory");
        assert!(limiter.ping().await.is_none());
    }

    #[tokio::test]
    async fn auto_without_url_is_memory() {
        for url in [None, Some(""), Some("  ")] {
            let limiter = RateLimiter::new(LimiterKind::Auto, url, 4).await.unwrap();
            assert_eq!(limiter.backend(), "memory");
            assert!(limiter.ping().await.is_none());
        }
    }

    #[tokio::test]
    async fn redis_kind_requires_url() {
        let err = RateLimiter::new(LimiterKind::Redis, None, 4)
            .await
            .unwrap_err();
        assert!(matches!(err, RateLimitError::MissingRedisUrl));
    }

    #[tokio::test]
    async fn invalid_url_is_an_error() {
        for kind in [LimiterKind::Auto, LimiterKind::Redis] {
            let err = RateLimiter::new(kind, Some("http://example"), 1)
                .await
                .unwrap_err();
            assert!(matches!(err, RateLimitError::InvalidRedisUrl(_)), "{err}");
        }
    }

    #[test]
    fn limiter_is_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + 'static>() {}
        assert_traits::<RateLimiter>();
    }
}
