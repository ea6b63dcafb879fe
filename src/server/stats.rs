//! A server's counters, exposed by /metrics: relaxed atomics, never reset.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters exposed by /metrics; relaxed atomics, never reset.
#[derive(Default)]
pub struct ServerStats {
    /// Requests forwarded (http) or sessions opened (tcp).
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
    pub response_failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub check_failures: AtomicU64,
    pub check_count: AtomicU64,
    /// Sum of check latencies in microseconds, with `check_count` a mean.
    pub check_micros: AtomicU64,
    /// Checks by latency: `check_buckets[i]` counts those at most
    /// `CHECK_BUCKETS[i]`, not counted in a lower bucket; the last, those slower
    /// than every bound.
    pub check_buckets: [AtomicU64; CHECK_BUCKETS.len() + 1],
}

/// Upper bounds, in seconds, of the check latency histogram: from a local connect
/// (well under a millisecond) to the longest sensible check timeout.
pub const CHECK_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl ServerStats {
    /// Counts one check that took `elapsed`.
    pub fn record_check(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = CHECK_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(CHECK_BUCKETS.len());
        self.check_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.check_count.fetch_add(1, Ordering::Relaxed);
        self.check_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_latency_goes_to_the_first_bucket_that_holds_it() {
        let stats = ServerStats::default();
        for ms in [0, 1, 700, 1000, 60_000] {
            stats.record_check(Duration::from_millis(ms));
        }
        let counts: Vec<u64> = stats
            .check_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // 0 ms in 0.5 ms, 1 ms in 1 ms, 700 ms and 1 s in 1 s, 60 s above every bound.
        assert_eq!(counts, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
        assert_eq!(stats.check_count.load(Ordering::Relaxed), 5);
        assert_eq!(stats.check_micros.load(Ordering::Relaxed), 61_701_000);
    }
}
