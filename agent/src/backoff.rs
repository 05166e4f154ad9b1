//! When to dial again: capped exponential backoff with full jitter, and the server's own
//! "come back after" hints (`drain`, `reconnect`).
//!
//! Pure functions of the attempt number and a random draw, so the schedule is testable without
//! a clock. The random numbers come from a small xorshift generator seeded from the clock and
//! the process id: jitter only has to spread agents apart, not be unpredictable, and a random
//! crate would cost binary size for nothing.

use std::time::{Duration, SystemTime};

/// The first retry waits up to this long.
pub const BASE_DELAY: Duration = Duration::from_secs(1);

/// No retry waits longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// A session that stayed open this long resets the backoff: the next failure starts small.
pub const STABLE_SESSION: Duration = Duration::from_secs(30);

/// Full jitter: a uniform draw in `0..=min(MAX_DELAY, BASE_DELAY * 2^attempt)`.
///
/// `attempt` counts failures since the last stable session, from 0; `random` is any `u64`.
pub fn full_jitter(attempt: u32, random: u64) -> Duration {
    let ceiling = exponential_ceiling(attempt);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(random % (ms + 1))
}

/// `min(MAX_DELAY, BASE_DELAY * 2^attempt)`.
pub fn exponential_ceiling(attempt: u32) -> Duration {
    let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
    let ms = (BASE_DELAY.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(ms).min(MAX_DELAY)
}

/// A server-named wait plus up to half of it again as jitter (at least up to one second), so
/// agents told to come back together do not all arrive in the same instant.
pub fn after_hint(after: Duration, random: u64) -> Duration {
    let spread = (after.as_millis() as u64 / 2).max(1000);
    after + Duration::from_millis(random % (spread + 1))
}

/// A xorshift64* generator: cheap, good enough to spread reconnects.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and the process id.
    pub fn from_entropy() -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }

    /// A fixed seed, for tests.
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next draw.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_then_caps() {
        assert_eq!(exponential_ceiling(0), Duration::from_secs(1));
        assert_eq!(exponential_ceiling(1), Duration::from_secs(2));
        assert_eq!(exponential_ceiling(5), Duration::from_secs(32));
        assert_eq!(exponential_ceiling(6), MAX_DELAY);
        assert_eq!(exponential_ceiling(500), MAX_DELAY);
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let mut rng = Jitter::seeded(7);
        let draws: Vec<Duration> = (0..1000).map(|_| full_jitter(3, rng.next_u64())).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(8)));
        assert!(draws.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(draws.iter().any(|d| *d > Duration::from_secs(6)));
        assert_eq!(full_jitter(0, 0), Duration::ZERO);
        assert_eq!(
            full_jitter(60, u64::MAX),
            Duration::from_millis(u64::MAX % 60_001)
        );
    }

    #[test]
    fn a_hint_is_a_floor_with_some_jitter_on_top() {
        let mut rng = Jitter::seeded(11);
        for _ in 0..1000 {
            let d = after_hint(Duration::from_secs(10), rng.next_u64());
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(15),
                "{d:?}"
            );
        }
        let d = after_hint(Duration::ZERO, 999);
        assert!(d <= Duration::from_secs(1));
    }
}
