//! When to try a failed delivery again: exponential backoff with full jitter.
//!
//! After the `n`-th failed attempt (`n` ≥ 1) the next one waits a uniformly random time between
//! [`MIN_DELAY`] and `min(CAP, BASE × 2^(n-1))`: up to 5 s, 10 s, 20 s, … 10 min. Full jitter
//! spreads the retries of many deliveries that failed together (a receiver's outage) instead of
//! sending them back in waves. A delivery is given up after [`MAX_ATTEMPTS`] attempts in all,
//! which with these numbers spans about 15 minutes on average and at most about 30.

use std::time::Duration;

use rand::{Rng, RngExt};

/// Attempts in all, the first included; after the last one a `Retry` outcome counts as failed.
pub const MAX_ATTEMPTS: u32 = 10;

/// Ceiling of the first retry's delay; it doubles with every further attempt.
pub const BASE_DELAY: Duration = Duration::from_secs(5);

/// No delay is ever longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(600);

/// No delay is ever shorter than this, so a retry never follows its failure immediately.
pub const MIN_DELAY: Duration = Duration::from_secs(1);

/// How long to wait after the `attempt`-th failed attempt (1 for the first; 0 is treated as 1).
pub fn retry_delay(attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = delay_ceiling(attempt);
    let min = MIN_DELAY.as_millis() as u64;
    let max = ceiling.as_millis() as u64;
    Duration::from_millis(rng.random_range(min..=max))
}

/// The largest delay [`retry_delay`] can return for `attempt`.
pub fn delay_ceiling(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    BASE_DELAY
        .checked_mul(1u32 << doublings)
        .map_or(MAX_DELAY, |d| d.min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (0..=12).map(|a| delay_ceiling(a).as_secs()).collect();
        assert_eq!(
            secs,
            [5, 5, 10, 20, 40, 80, 160, 320, 600, 600, 600, 600, 600]
        );
        assert_eq!(delay_ceiling(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn delays_stay_within_the_bounds_and_spread_over_them() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..=40 {
            let ceiling = delay_ceiling(attempt);
            let delays: Vec<Duration> = (0..200).map(|_| retry_delay(attempt, &mut rng)).collect();
            assert!(
                delays.iter().all(|d| *d >= MIN_DELAY && *d <= ceiling),
                "attempt {attempt}"
            );
            // Full jitter: the draws cover the range, not a narrow band near the ceiling.
            let lowest = delays.iter().min().copied().unwrap_or_default();
            let highest = delays.iter().max().copied().unwrap_or_default();
            assert!(lowest < ceiling / 4, "attempt {attempt}: lowest {lowest:?}");
            assert!(
                highest > ceiling * 3 / 4,
                "attempt {attempt}: highest {highest:?}"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=MAX_ATTEMPTS)
                .map(|a| retry_delay(a, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn the_whole_schedule_is_bounded() {
        let worst: Duration = (1..MAX_ATTEMPTS).map(delay_ceiling).sum();
        assert!(worst <= Duration::from_secs(40 * 60), "{worst:?}");
        assert!(worst >= Duration::from_secs(15 * 60), "{worst:?}");
    }
}
