//! A lock-free latency histogram: workers record with one atomic add, readers take percentiles.
//! Buckets grow by 5 % from 10 µs, so a percentile is exact to within 5 %.

use std::sync::atomic::{AtomicU64, Ordering};

const BUCKETS: usize = 400;
const FIRST_US: f64 = 10.0;
const GROWTH: f64 = 1.05;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    pub fn record_ms(&self, ms: f64) {
        let us = (ms * 1000.0).max(FIRST_US);
        let i = ((us / FIRST_US).ln() / GROWTH.ln()) as usize;
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The q-quantile (0–1) in milliseconds: the upper edge of the bucket holding it; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return FIRST_US * GROWTH.powi(i as i32 + 1) / 1000.0;
            }
        }
        unreachable!("rank is at most the total")
    }

    /// Observations at or below each bound (milliseconds, ascending), and the total: a histogram with
    /// fixed bounds, as Prometheus wants it. A bucket of ours counts below a bound when its upper edge is
    /// at or below it, so an observation within 5 % under a bound may be counted in the next one up.
    pub fn cumulative_ms(&self, bounds_ms: &[f64]) -> (Vec<u64>, u64) {
        let mut out = vec![0; bounds_ms.len()];
        let mut seen = 0;
        let mut next = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let upper_ms = FIRST_US * GROWTH.powi(i as i32 + 1) / 1000.0;
            while next < bounds_ms.len() && bounds_ms[next] < upper_ms {
                out[next] = seen;
                next += 1;
            }
            seen += b.load(Ordering::Relaxed);
        }
        out[next..].iter_mut().for_each(|c| *c = seen);
        (out, seen)
    }

    pub fn reset(&self) {
        self.buckets
            .iter()
            .for_each(|b| b.store(0, Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_five_percent() {
        let h = Histogram::default();
        for i in 1..=1000 {
            h.record_ms(i as f64 / 10.0); // 0.1 … 100 ms
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((50.0..=52.5).contains(&p50), "{p50}");
        assert!((99.0..=104.0).contains(&p99), "{p99}");
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn cumulative_counts_fall_under_fixed_bounds() {
        let h = Histogram::default();
        for ms in [0.001, 0.5, 2.0, 2.0, 40.0, 9_000.0] {
            h.record_ms(ms);
        }
        let (below, total) = h.cumulative_ms(&[1.0, 10.0, 100.0, 1000.0]);
        assert_eq!(below, vec![2, 4, 5, 5]);
        assert_eq!(total, 6);
        let (below, total) = Histogram::default().cumulative_ms(&[1.0]);
        assert_eq!((below, total), (vec![0], 0));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Histogram::default().quantile_ms(0.5), 0.0);
    }
}
