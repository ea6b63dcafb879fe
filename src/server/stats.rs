//! A server's counters and the latency histogram, exposed by /metrics: relaxed
//! atomics, never reset.

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
    pub check_latency: Histogram,
}

/// Upper bounds, in seconds, of the latency histograms: from a local connect (well
/// under a millisecond) to the longest sensible check timeout or queue wait.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations by [`LATENCY_BUCKETS`], counted where they happen and read at scrape time.
#[derive(Default)]
pub struct Histogram {
    /// Sum of the durations in microseconds.
    pub micros: AtomicU64,
    /// `buckets[i]` counts those at most `LATENCY_BUCKETS[i]`, not counted in a lower
    /// bucket; the last, those longer than every bound. Their total is the count.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

impl ServerStats {
    /// Counts one check that took `elapsed`.
    pub fn record_check(&self, elapsed: Duration) {
        self.check_latency.record(elapsed);
        self.check_count.fetch_add(1, Ordering::Relaxed);
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
            .check_latency
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // 0 ms in 0.5 ms, 1 ms in 1 ms, 700 ms and 1 s in 1 s, 60 s above every bound.
        assert_eq!(counts, [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1]);
        assert_eq!(stats.check_count.load(Ordering::Relaxed), 5);
        let micros = &stats.check_latency.micros;
        assert_eq!(micros.load(Ordering::Relaxed), 61_701_000);
    }
}
