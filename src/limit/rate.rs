//! `rate`: one GCRA bucket per client IP (governor's keyed limiter: a lookup and a
//! compare-and-swap per request, and only where a rate is configured).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::Rate;

/// The buckets of one listener or route, and the quota they were made for.
pub struct RateLimit {
    pub quota: Rate,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl RateLimit {
    pub fn new(quota: Rate) -> RateLimit {
        // Validation keeps `per / requests` above zero and both counts above zero.
        let period = (quota.per / quota.requests.max(1)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
        let gcra = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        RateLimit {
            quota,
            limiter: DefaultKeyedRateLimiter::keyed(gcra),
        }
    }

    /// Takes one request from `ip`'s bucket; `Err` says how long until it may send one.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
