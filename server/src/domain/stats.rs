//! Run-duration statistics over the most recent finished job runs.

use serde::Serialize;

/// How many recent finished runs the statistics look at.
pub const STATS_WINDOW: usize = 100;
/// Below this many runs, the statistics are `null` (too few to mean anything).
pub const STATS_MIN_RUNS: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationStats {
    pub avg_duration_ms: f64,
    pub p50_duration_ms: i64,
    pub p95_duration_ms: i64,
    pub p99_duration_ms: i64,
    pub min_duration_ms: i64,
    pub max_duration_ms: i64,
}

/// Nearest-rank percentiles over `durations`; `None` when fewer than [`STATS_MIN_RUNS`].
pub fn duration_stats(durations: &[i64]) -> Option<DurationStats> {
    if durations.len() < STATS_MIN_RUNS {
        return None;
    }
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let rank = |p: f64| -> i64 {
        // nearest-rank: ceil(p * n), 1-based
        let r = ((p * n as f64).ceil() as usize).clamp(1, n);
        sorted[r - 1]
    };
    let sum: i128 = sorted.iter().map(|&d| i128::from(d)).sum();
    Some(DurationStats {
        avg_duration_ms: (sum as f64 / n as f64 * 100.0).round() / 100.0,
        p50_duration_ms: rank(0.50),
        p95_duration_ms: rank(0.95),
        p99_duration_ms: rank(0.99),
        min_duration_ms: sorted[0],
        max_duration_ms: sorted[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_runs_give_none() {
        assert_eq!(duration_stats(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<i64> = (1..=100).rev().collect();
        let s = duration_stats(&d).unwrap();
        assert_eq!(s.p50_duration_ms, 50);
        assert_eq!(s.p95_duration_ms, 95);
        assert_eq!(s.p99_duration_ms, 99);
        assert_eq!(s.min_duration_ms, 1);
        assert_eq!(s.max_duration_ms, 100);
        assert!((s.avg_duration_ms - 50.5).abs() < f64::EPSILON);
    }
}
