//! In-process GCRA backend: one `DashMap` entry (the bucket's TAT) per
//! `(class, limit, key)`.
//!
//! The map is bounded: at most `max_buckets` client buckets (100,000 by default,
//! `MEDIC_RATE_LIMIT_MAX_BUCKETS`; about 100 bytes each). Buckets whose TAT has
//! passed are swept every 10 s, and at once (at most once a second) when the map
//! is full. When it is still full, a client that has no bucket yet is checked
//! against one shared *overflow* bucket of its class and limit: a flood of new
//! addresses cannot grow memory, cannot reset anybody's bucket, and cannot get
//! past the limit — it only makes new clients share one budget until buckets
//! expire (at most a minute). Clients that already have a bucket keep it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::{Decision, RateClass, gcra};

/// How often (at most) expired buckets are swept out of the map.
const PURGE_INTERVAL: Duration = Duration::from_secs(10);

/// How often (at most) a full map is swept before a new client is sent to the overflow bucket.
const FULL_PURGE_INTERVAL: Duration = Duration::from_secs(1);

/// Default bound on client buckets.
pub(crate) const DEFAULT_MAX_BUCKETS: usize = 100_000;

/// The key of the shared bucket new clients use while the map is full (real keys start with
/// `ip:` or `key:`).
const OVERFLOW_KEY: &str = "overflow:";

/// Source of monotonic time in microseconds. Injectable so tests can move
/// time forward without sleeping.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    fn now_us(&self) -> u64;
}

/// Production clock: microseconds elapsed since the limiter was created.
#[derive(Debug)]
pub(crate) struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Manually advanced clock for tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct FakeClock {
    now: AtomicU64,
}

#[cfg(test)]
impl FakeClock {
    pub(crate) fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.now.fetch_add(by, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for FakeClock {
    fn now_us(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    class: RateClass,
    limit: u32,
    key: Box<str>,
}

/// Keyed in-memory GCRA limiter.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    buckets: DashMap<BucketKey, u64>,
    clock: Arc<dyn Clock>,
    /// Clock reading (µs) of the last purge.
    last_purge_us: AtomicU64,
    /// Clock reading (µs) of the last purge of a full map.
    last_full_purge_us: AtomicU64,
    max_buckets: AtomicUsize,
}

impl MemoryLimiter {
    pub(crate) fn new() -> Self {
        Self::with_clock(Arc::new(MonotonicClock::new()))
    }

    pub(crate) fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_us();
        Self {
            buckets: DashMap::new(),
            clock,
            last_purge_us: AtomicU64::new(now),
            last_full_purge_us: AtomicU64::new(now),
            max_buckets: AtomicUsize::new(DEFAULT_MAX_BUCKETS),
        }
    }

    /// Bounds the number of client buckets (at least 1).
    pub(crate) fn set_max_buckets(&self, max: usize) {
        self.max_buckets.store(max.max(1), Ordering::Relaxed);
    }

    pub(crate) fn max_buckets(&self) -> usize {
        self.max_buckets.load(Ordering::Relaxed)
    }

    /// Number of live buckets, overflow buckets included.
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// The bucket a client without one is checked against: its own while there is room,
    /// else the shared overflow bucket of its class and limit.
    fn new_bucket(&self, bucket: BucketKey, now: u64) -> BucketKey {
        let max = self.max_buckets.load(Ordering::Relaxed);
        if self.buckets.len() < max {
            return bucket;
        }
        let last = self.last_full_purge_us.load(Ordering::Relaxed);
        let interval = u64::try_from(FULL_PURGE_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= interval
            && self
                .last_full_purge_us
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.purge_expired(now);
            if self.buckets.len() < max {
                return bucket;
            }
        }
        BucketKey {
            key: OVERFLOW_KEY.into(),
            ..bucket
        }
    }

    pub(crate) fn check(&self, class: RateClass, key: &str, limit: u32) -> Decision {
        let now = self.clock.now_us();
        self.maybe_purge(now);
        if limit == 0 {
            return gcra::deny_all();
        }
        let bucket = BucketKey {
            class,
            limit,
            key: key.into(),
        };
        // Existing clients first, without taking a shard's write lock for new ones (the size
        // check below reads every shard, so it must not run while an entry is held).
        if let Some(mut tat) = self.buckets.get_mut(&bucket) {
            let out = gcra::check(Some(*tat), now, limit);
            if let Some(new_tat) = out.new_tat {
                *tat = new_tat;
            }
            return out.decision;
        }
        let bucket = self.new_bucket(bucket, now);
        match self.buckets.entry(bucket) {
            Entry::Occupied(mut entry) => {
                let out = gcra::check(Some(*entry.get()), now, limit);
                if let Some(tat) = out.new_tat {
                    *entry.get_mut() = tat;
                }
                out.decision
            }
            Entry::Vacant(entry) => {
                let out = gcra::check(None, now, limit);
                if let Some(tat) = out.new_tat {
                    entry.insert(tat);
                }
                out.decision
            }
        }
    }

    /// Removes buckets whose TAT has passed (they are equivalent to absent
    /// buckets). Runs at most once per [`PURGE_INTERVAL`], on the calling
    /// thread of whichever check wins the race.
    fn maybe_purge(&self, now: u64) {
        let last = self.last_purge_us.load(Ordering::Relaxed);
        let interval = u64::try_from(PURGE_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_purge_us
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.purge_expired(now);
        }
    }

    pub(crate) fn purge_expired(&self, now: u64) {
        self.buckets.retain(|_, tat| *tat > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> (Arc<FakeClock>, MemoryLimiter) {
        let clock = Arc::new(FakeClock::default());
        let limiter = MemoryLimiter::with_clock(clock.clone());
        (clock, limiter)
    }

    #[test]
    fn burst_then_denied_with_retry_after() {
        let (_clock, l) = limiter();
        for i in 0..10u32 {
            let d = l.check(RateClass::Heartbeat, "key:a", 10);
            assert!(d.allowed);
            assert_eq!(d.remaining, 9 - i);
            assert_eq!(d.limit, 10);
        }
        let d = l.check(RateClass::Heartbeat, "key:a", 10);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Some(Duration::from_secs(6)));
        assert_eq!(d.reset_after, Duration::from_secs(60));
    }

    #[test]
    fn keys_classes_and_limits_are_independent() {
        let (_clock, l) = limiter();
        assert!(l.check(RateClass::Heartbeat, "ip:1.2.3.4", 1).allowed);
        assert!(!l.check(RateClass::Heartbeat, "ip:1.2.3.4", 1).allowed);
        // Other key, same class.
        assert!(l.check(RateClass::Heartbeat, "ip:5.6.7.8", 1).allowed);
        // Same key, other classes.
        for class in [
            RateClass::Management,
            RateClass::Health,
            RateClass::Metrics,
            RateClass::Docs,
        ] {
            assert!(l.check(class, "ip:1.2.3.4", 1).allowed, "{class:?}");
            assert!(!l.check(class, "ip:1.2.3.4", 1).allowed, "{class:?}");
        }
        // Same key and class, different tier.
        assert!(l.check(RateClass::Heartbeat, "ip:1.2.3.4", 2).allowed);
    }

    #[test]
    fn refills_as_time_passes() {
        let (clock, l) = limiter();
        for _ in 0..60 {
            assert!(l.check(RateClass::Management, "key:k", 60).allowed);
        }
        assert!(!l.check(RateClass::Management, "key:k", 60).allowed);
        clock.advance(Duration::from_millis(500));
        let d = l.check(RateClass::Management, "key:k", 60);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(500));
        assert!(l.check(RateClass::Management, "key:k", 60).allowed);
        assert!(!l.check(RateClass::Management, "key:k", 60).allowed);
        // After ten seconds, ten more requests.
        clock.advance(Duration::from_secs(10));
        let allowed = (0..20)
            .filter(|_| l.check(RateClass::Management, "key:k", 60).allowed)
            .count();
        assert_eq!(allowed, 10);
        // After a full minute the bucket is full again.
        clock.advance(Duration::from_secs(60));
        let d = l.check(RateClass::Management, "key:k", 60);
        assert!(d.allowed);
        assert_eq!(d.remaining, 59);
    }

    #[test]
    fn expired_buckets_are_purged() {
        let (clock, l) = limiter();
        for i in 0..1_000 {
            l.check(RateClass::Heartbeat, &format!("ip:{i}"), 100);
        }
        assert_eq!(l.len(), 1_000);
        // Interval is 0.6 s, so every bucket is expired after 1 s; the purge
        // itself is throttled to once per PURGE_INTERVAL.
        clock.advance(Duration::from_secs(1));
        l.check(RateClass::Heartbeat, "ip:new", 100);
        assert_eq!(l.len(), 1_001, "purge must be throttled");
        clock.advance(PURGE_INTERVAL);
        l.check(RateClass::Heartbeat, "ip:new", 100);
        assert_eq!(l.len(), 1, "only the live bucket remains");
    }

    #[test]
    fn live_buckets_survive_purge() {
        let (clock, l) = limiter();
        // limit 1 → TAT one minute ahead.
        assert!(l.check(RateClass::Docs, "ip:x", 1).allowed);
        clock.advance(PURGE_INTERVAL);
        l.purge_expired(clock.now_us());
        assert_eq!(l.len(), 1);
        assert!(!l.check(RateClass::Docs, "ip:x", 1).allowed);
    }

    #[test]
    fn a_full_map_sends_new_clients_to_one_shared_bucket() {
        let (clock, l) = limiter();
        l.set_max_buckets(100);
        for i in 0..100 {
            assert!(l.check(RateClass::Heartbeat, &format!("ip:{i}"), 2).allowed);
        }
        // A flood of new addresses: the map does not grow past its bound plus the overflow
        // bucket, and together they get one client's budget, not one each.
        let allowed = (100..10_000)
            .filter(|i| l.check(RateClass::Heartbeat, &format!("ip:{i}"), 2).allowed)
            .count();
        assert_eq!(allowed, 2);
        assert_eq!(l.len(), 101);
        // Clients that had a bucket keep theirs.
        assert!(l.check(RateClass::Heartbeat, "ip:7", 2).allowed);
        assert!(!l.check(RateClass::Heartbeat, "ip:7", 2).allowed);
        // Once buckets expire, the sweep of a full map makes room for new clients again.
        clock.advance(Duration::from_secs(61));
        assert!(l.check(RateClass::Heartbeat, "ip:new", 2).allowed);
        assert!(l.check(RateClass::Heartbeat, "ip:new", 2).allowed);
        assert!(!l.check(RateClass::Heartbeat, "ip:new", 2).allowed);
        assert!(l.len() <= 2, "{}", l.len());
    }

    #[test]
    fn denied_first_request_creates_no_state() {
        let (_clock, l) = limiter();
        assert!(!l.check(RateClass::Docs, "ip:x", 0).allowed);
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn concurrent_checks_allow_exactly_limit() {
        let (_clock, l) = limiter();
        let l = Arc::new(l);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| l.check(RateClass::Heartbeat, "key:shared", 50).allowed)
                        .count()
                })
            })
            .collect();
        let total: usize = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .sum();
        assert_eq!(total, 50);
    }
}
