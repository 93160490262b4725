//! Per-plugin counters: calls, failures by cause, latency, dropped logs.
//! Lock-free, cheap enough to update on every call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::Failure;

/// Latency buckets: bucket `i` holds calls under `2^i` µs.
const BUCKETS: usize = 24;

/// Live counters of one plugin.
#[derive(Debug, Default)]
pub struct Metrics {
    calls: AtomicU64,
    failures: [AtomicU64; Failure::CAUSES.len()],
    nanos: AtomicU64,
    hist: [AtomicU64; BUCKETS],
    instances: AtomicU64,
    /// Log lines dropped by the budget (shared with the plugin's stores).
    pub logs_dropped: Arc<AtomicU64>,
}

/// A copy of the counters, for `berth plugin show` and the API.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct MetricsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Failed calls by cause (`timeout`, `memory`, `trap`, `invalid-output`, `init`).
    pub failures: BTreeMap<String, u64>,
    /// Mean latency, µs.
    pub mean_us: f64,
    /// Median latency (bucket upper bound), µs.
    pub p50_us: f64,
    /// 99th percentile latency (bucket upper bound), µs.
    pub p99_us: f64,
    /// Instances made (the first, and one after each failure that
    /// discarded the store).
    pub instances: u64,
    /// Log lines dropped by the per-call budget.
    pub logs_dropped: u64,
}

impl Metrics {
    /// Counts a call that took `took`.
    pub fn call(&self, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(ns, Ordering::Relaxed);
        let us = (ns / 1000).max(1);
        let b = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.hist[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failure.
    pub fn failure(&self, f: &Failure) {
        self.failures[f.cause_index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new instance.
    pub fn instance(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let calls = self.calls.load(Ordering::Relaxed);
        let hist: Vec<u64> = self
            .hist
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect();
        let total: u64 = hist.iter().sum();
        let quantile = |q: f64| {
            let want = (total as f64 * q).ceil() as u64;
            let mut seen = 0;
            for (i, n) in hist.iter().enumerate() {
                seen += n;
                if seen >= want.max(1) {
                    return (1u64 << i) as f64;
                }
            }
            0.0
        };
        MetricsSnapshot {
            calls,
            failures: Failure::CAUSES
                .iter()
                .zip(&self.failures)
                .map(|(c, n)| (c.to_string(), n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            mean_us: if calls == 0 {
                0.0
            } else {
                self.nanos.load(Ordering::Relaxed) as f64 / calls as f64 / 1000.0
            },
            p50_us: if total == 0 { 0.0 } else { quantile(0.5) },
            p99_us: if total == 0 { 0.0 } else { quantile(0.99) },
            instances: self.instances.load(Ordering::Relaxed),
            logs_dropped: self.logs_dropped.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles() {
        let m = Metrics::default();
        for us in [3u64, 3, 3, 100] {
            m.call(Duration::from_micros(us));
        }
        m.failure(&Failure::Timeout(Duration::from_millis(5)));
        let s = m.snapshot();
        assert_eq!(s.calls, 4);
        assert_eq!(s.failures["timeout"], 1);
        assert_eq!(s.p50_us, 4.0);
        assert_eq!(s.p99_us, 128.0);
        assert!((s.mean_us - 27.25).abs() < 0.01, "{}", s.mean_us);
    }
}
