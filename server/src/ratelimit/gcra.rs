//! Pure GCRA (generic cell rate algorithm) arithmetic.
//!
//! The state of one bucket is a single number, the *theoretical arrival time*
//! (TAT) in microseconds. With `limit` requests per [`PERIOD_US`]:
//!
//! * emission interval `I = PERIOD / limit` (at least 1 µs),
//! * burst tolerance `T = I * limit` (a full burst of `limit` requests),
//! * a request at `now` is allowed iff `max(TAT, now) + I - now <= T`; if it is
//!   allowed the new TAT is `max(TAT, now) + I`, otherwise TAT is unchanged.
//!
//! A bucket whose TAT is `<= now` is indistinguishable from an absent one, so a
//! stored TAT only needs to be kept until it passes (that is the TTL used by
//! both backends). The Redis Lua script in `redis_backend.rs` implements
//! exactly the same arithmetic; keep the two in sync.

use std::time::Duration;

use super::Decision;

/// Length of the rate-limit window: limits are expressed per minute.
pub(crate) const PERIOD_US: u64 = 60_000_000;

/// Time between two requests at the sustained rate, in microseconds.
///
/// `limit` must be non-zero; limits above 60 000 000 per minute are clamped
/// to one request per microsecond for the sustained rate (the burst is still
/// `limit`).
pub(crate) fn emission_interval_us(limit: u32) -> u64 {
    (PERIOD_US / u64::from(limit.max(1))).max(1)
}

/// Result of one GCRA step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub decision: Decision,
    /// New TAT to store, or `None` when the request was denied (the stored
    /// state must not change).
    pub new_tat: Option<u64>,
}

/// Decision for a quota of zero: every request is denied.
pub(crate) fn deny_all() -> Decision {
    Decision {
        allowed: false,
        limit: 0,
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: Some(Duration::from_micros(PERIOD_US)),
    }
}

/// Runs one GCRA step for a request arriving at `now_us` against a bucket
/// whose stored TAT is `stored_tat` (`None` = no state, i.e. a full bucket).
pub(crate) fn check(stored_tat: Option<u64>, now_us: u64, limit: u32) -> Outcome {
    if limit == 0 {
        return Outcome {
            decision: deny_all(),
            new_tat: None,
        };
    }
    let interval = emission_interval_us(limit);
    let tolerance = interval.saturating_mul(u64::from(limit));
    let tat = stored_tat.map_or(now_us, |t| t.max(now_us));
    let new_tat = tat.saturating_add(interval);
    let new_delay = new_tat - now_us; // tat >= now_us, so no underflow

    if new_delay > tolerance {
        let retry = new_delay - tolerance;
        return Outcome {
            decision: Decision {
                allowed: false,
                limit,
                remaining: 0,
                reset_after: Duration::from_micros(tat - now_us),
                retry_after: Some(Duration::from_micros(retry)),
            },
            new_tat: None,
        };
    }

    let remaining = (tolerance - new_delay) / interval;
    Outcome {
        decision: Decision {
            allowed: true,
            limit,
            remaining: u32::try_from(remaining).unwrap_or(limit).min(limit),
            reset_after: Duration::from_micros(new_delay),
            retry_after: None,
        },
        new_tat: Some(new_tat),
    }
}

/// Builds a [`Decision`] from the four integers returned by the Lua script
/// (`allowed`, `remaining`, `reset_after_us`, `retry_after_us`).
pub(crate) fn decision_from_script(limit: u32, raw: (i64, i64, i64, i64)) -> Decision {
    let (allowed, remaining, reset_us, retry_us) = raw;
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    let allowed = allowed == 1;
    Decision {
        allowed,
        limit,
        remaining: u32::try_from(non_negative(remaining))
            .unwrap_or(limit)
            .min(limit),
        reset_after: Duration::from_micros(non_negative(reset_us)),
        retry_after: (!allowed).then(|| Duration::from_micros(non_negative(retry_us))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies a check to `tat`, updating it like a backend would.
    fn step(tat: &mut Option<u64>, now: u64, limit: u32) -> Decision {
        let out = check(*tat, now, limit);
        if let Some(t) = out.new_tat {
            *tat = Some(t);
        }
        out.decision
    }

    #[test]
    fn burst_of_limit_then_denied() {
        for limit in [1u32, 2, 7, 50, 60, 1000, 7919] {
            let mut tat = None;
            for i in 0..limit {
                let d = step(&mut tat, 1_000, limit);
                assert!(d.allowed, "limit {limit}: request {i} should pass");
                assert_eq!(d.remaining, limit - 1 - i, "limit {limit}");
                assert_eq!(d.limit, limit);
                assert_eq!(d.retry_after, None);
            }
            let d = step(&mut tat, 1_000, limit);
            assert!(!d.allowed, "limit {limit}: request {limit} should fail");
            assert_eq!(d.remaining, 0);
            assert_eq!(
                d.retry_after,
                Some(Duration::from_micros(emission_interval_us(limit)))
            );
        }
    }

    #[test]
    fn one_more_request_per_interval() {
        let limit = 60; // one per second
        let mut tat = None;
        let t0 = 5_000_000;
        for _ in 0..limit {
            assert!(step(&mut tat, t0, limit).allowed);
        }
        assert!(!step(&mut tat, t0 + 999_999, limit).allowed);
        let d = step(&mut tat, t0 + 1_000_000, limit);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!step(&mut tat, t0 + 1_000_000, limit).allowed);
    }

    #[test]
    fn denied_requests_do_not_consume() {
        let limit = 2;
        let mut tat = None;
        assert!(step(&mut tat, 0, limit).allowed);
        assert!(step(&mut tat, 0, limit).allowed);
        let before = tat;
        for _ in 0..100 {
            assert!(!step(&mut tat, 0, limit).allowed);
        }
        assert_eq!(tat, before);
        // 30 s later exactly one request is available again.
        assert!(step(&mut tat, 30_000_000, limit).allowed);
        assert!(!step(&mut tat, 30_000_000, limit).allowed);
    }

    #[test]
    fn reset_after_is_time_to_full_bucket() {
        let limit = 10; // interval 6 s
        let mut tat = None;
        let d = step(&mut tat, 0, limit);
        assert_eq!(d.reset_after, Duration::from_secs(6));
        let d = step(&mut tat, 0, limit);
        assert_eq!(d.reset_after, Duration::from_secs(12));
        for _ in 0..8 {
            step(&mut tat, 0, limit);
        }
        let d = step(&mut tat, 0, limit);
        assert!(!d.allowed);
        assert_eq!(d.reset_after, Duration::from_secs(60));
        assert_eq!(d.retry_after, Some(Duration::from_secs(6)));
        // After the full window the bucket is fresh.
        let d = step(&mut tat, 60_000_000, limit);
        assert!(d.allowed);
        assert_eq!(d.remaining, limit - 1);
    }

    #[test]
    fn expired_state_equals_no_state() {
        let limit = 5;
        let stale = check(Some(10), 1_000_000_000, limit);
        let fresh = check(None, 1_000_000_000, limit);
        assert_eq!(stale, fresh);
    }

    #[test]
    fn zero_limit_denies_everything() {
        let out = check(None, 0, 0);
        assert!(!out.decision.allowed);
        assert_eq!(out.new_tat, None);
        assert_eq!(out.decision.limit, 0);
        assert!(out.decision.retry_after.is_some());
    }

    #[test]
    fn huge_limit_does_not_overflow() {
        let mut tat = None;
        let d = step(&mut tat, u64::MAX - 10, u32::MAX);
        assert!(d.allowed);
        assert_eq!(emission_interval_us(u32::MAX), 1);
        let d = step(&mut tat, u64::MAX, u32::MAX);
        assert_eq!(d.limit, u32::MAX);
    }

    #[test]
    fn script_result_conversion() {
        let d = decision_from_script(10, (1, 9, 6_000_000, 0));
        assert!(d.allowed);
        assert_eq!(d.remaining, 9);
        assert_eq!(d.reset_after, Duration::from_secs(6));
        assert_eq!(d.retry_after, None);

        let d = decision_from_script(10, (0, 0, 60_000_000, 6_000_000));
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_secs(6)));

        // Garbage from the server is clamped rather than trusted.
        let d = decision_from_script(10, (1, 1_000, -5, -5));
        assert_eq!(d.remaining, 10);
        assert_eq!(d.reset_after, Duration::ZERO);
    }
}
