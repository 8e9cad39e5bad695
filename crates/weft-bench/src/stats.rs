//! Latency summaries: every sample is kept (a 10 s run at 40k rps is 400k `u64`s, 3 MB), sorted
//! once, and read by nearest rank, so percentiles are exact rather than bucketed.

use serde::{Deserialize, Serialize};

/// Percentiles of one run, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `p`% of all
/// samples at or below it.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The epsilon keeps float noise (99.9% of 1000 = 999.0000000000001) from skipping a rank.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latency {
    /// Summarises latencies given in nanoseconds (sorts them in place).
    pub fn from_nanos(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Latency {
            mean: sum as f64 / samples.len() as f64 / 1e6,
            p50: ms(percentile(samples, 50.0)),
            p90: ms(percentile(samples, 90.0)),
            p99: ms(percentile(samples, 99.0)),
            p999: ms(percentile(samples, 99.9)),
            max: ms(*samples.last().expect("not empty")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summary_in_ms() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1_000).collect();
        v.reverse();
        let l = Latency::from_nanos(&mut v);
        assert_eq!(l.p50, 0.5);
        assert_eq!(l.p999, 0.999);
        assert_eq!(l.max, 1.0);
        assert!((l.mean - 0.5005).abs() < 1e-9);
    }
}
