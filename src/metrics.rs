//! Prometheus metrics: counters kept here for errors and reloads, and per-server and
//! per-upstream (queue) gauges and counters read from the live state at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::balance::Upstream;
use crate::error::ProxyError;
use crate::limit;
use crate::server::{Histogram, LATENCY_BUCKETS, ServerStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitedLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    upstream: String,
    server: String,
}

/// A histogram read from live state at scrape time: check latencies and queue waits
/// are counted where they happen, without a registry on their path.
#[derive(Debug, Default)]
struct Latency {
    read: Mutex<Latencies>,
}

/// What a histogram is encoded from.
#[derive(Debug, Default)]
struct Latencies {
    sum_seconds: f64,
    count: u64,
    /// (upper bound in seconds, checks in this bucket and not a lower one).
    buckets: Vec<(f64, u64)>,
}

impl Latency {
    fn read(&self, histogram: &Histogram) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds
            .zip(histogram.buckets.iter().map(load))
            .collect::<Vec<_>>();
        // The count is the buckets' total, so that `+Inf` equals `_count` even while
        // one is being counted.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum_seconds = load(&histogram.micros) as f64 / 1e6;
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = Latencies {
            sum_seconds,
            count,
            buckets,
        };
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        encoder.encode_histogram::<NoLabelSet>(read.sum_seconds, read.count, &read.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The counters that are not server state: errors by kind and reloads by result.
pub struct Metrics {
    errors: Family<KindLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
}

/// The values of `rlb_reloads_total{result}`.
const RELOAD_RESULTS: [&str; 2] = ["ok", "failed"];

impl Default for Metrics {
    /// Every label value is there from the start, at 0, so that a dashboard shows 0
    /// rather than "no data" until the first error or reload.
    fn default() -> Metrics {
        let metrics = Metrics {
            errors: Family::default(),
            reloads: Family::default(),
        };
        for kind in ProxyError::KINDS {
            let label = KindLabel {
                kind: kind.to_string(),
            };
            metrics.errors.get_or_create(&label).inc_by(0);
        }
        for result in RELOAD_RESULTS {
            let label = ResultLabel {
                result: result.to_string(),
            };
            metrics.reloads.get_or_create(&label).inc_by(0);
        }
        metrics
    }
}

impl Metrics {
    /// Counts a request or session that failed; `kind` is [`ProxyError::kind`].
    ///
    /// [`ProxyError::kind`]: crate::error::ProxyError::kind
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = RELOAD_RESULTS[if ok { 0 } else { 1 }];
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition of every metric, with the servers of `upstreams` and the
    /// listeners' limit state.
    pub fn encode(&self, upstreams: &[Arc<Upstream>], limits: &limit::Registry) -> String {
        let mut registry = Registry::with_prefix("rlb");
        registry.register(
            "errors",
            "Requests and sessions that failed, by kind",
            self.errors.clone(),
        );
        registry.register(
            "reloads",
            "Configuration reloads, by result",
            self.reloads.clone(),
        );
        register_servers(&mut registry, upstreams);
        register_queues(&mut registry, upstreams);
        register_limits(&mut registry, limits);
        let mut out = String::new();
        let _ = encode(&mut out, &registry);
        out
    }
}

/// The per-server counters: name, help, and where the server keeps it.
type ServerCounter = (&'static str, &'static str, fn(&ServerStats) -> &AtomicU64);

const SERVER_COUNTERS: [ServerCounter; 6] = [
    (
        "server_requests",
        "Requests forwarded and sessions opened",
        |s| &s.requests,
    ),
    (
        "server_connect_failures",
        "Failed connects on the data path",
        |s| &s.connect_failures,
    ),
    (
        "server_response_failures",
        "Requests sent that got no response",
        |s| &s.response_failures,
    ),
    (
        "server_timeouts",
        "Requests that timed out waiting for a response",
        |s| &s.timeouts,
    ),
    ("server_checks", "Health checks run", |s| &s.check_count),
    ("server_check_failures", "Health checks failed", |s| {
        &s.check_failures
    }),
];

/// Per listener: refusals by reason (every reason there from the start, at 0) and open
/// client connections, read from the live limit state now.
fn register_limits(registry: &mut Registry, limits: &limit::Registry) {
    let limited = Family::<LimitedLabels, Counter>::default();
    let open = Family::<ListenerLabel, Gauge>::default();
    for (listener, state) in limits.listeners() {
        for (reason, count) in state.refusals() {
            let labels = LimitedLabels {
                listener: listener.clone(),
                reason: reason.name().to_string(),
            };
            limited.get_or_create(&labels).inc_by(count);
        }
        let labels = ListenerLabel { listener };
        open.get_or_create(&labels).set(state.open.count() as i64);
    }
    registry.register(
        "limited",
        "Clients refused for going over a limit, by listener and reason",
        limited,
    );
    registry.register(
        "listener_connections",
        "Open client connections by listener, with the slot its accept loop holds for the next",
        open,
    );
}

/// Every server's gauges and counters, read from its live state now.
fn register_servers(registry: &mut Registry, upstreams: &[Arc<Upstream>]) {
    let up = Family::<ServerLabels, Gauge>::default();
    let active = Family::<ServerLabels, Gauge>::default();
    let counters: Vec<Family<ServerLabels, Counter>> =
        SERVER_COUNTERS.iter().map(|_| Family::default()).collect();
    let check_seconds = Family::<ServerLabels, Latency>::default();
    for upstream in upstreams {
        for server in &upstream.servers {
            let labels = ServerLabels {
                upstream: upstream.name.to_string(),
                server: server.addr.to_string(),
            };
            up.get_or_create(&labels).set(server.healthy() as i64);
            active.get_or_create(&labels).set(server.active() as i64);
            for (family, (_, _, counter)) in counters.iter().zip(SERVER_COUNTERS) {
                let value = counter(&server.stats).load(Ordering::Relaxed);
                family.get_or_create(&labels).inc_by(value);
            }
            let check_latency = &server.stats.check_latency;
            check_seconds.get_or_create(&labels).read(check_latency);
        }
    }
    registry.register(
        "server_up",
        "1 when the server is healthy: it passes its checks, or, without checks, its last connect did not fail",
        up,
    );
    registry.register(
        "server_active_connections",
        "Requests in flight plus open sessions and tunnels",
        active,
    );
    for (family, (name, help, _)) in counters.into_iter().zip(SERVER_COUNTERS) {
        registry.register(name, help, family);
    }
    registry.register(
        "server_check_duration_seconds",
        "Health check latency",
        check_seconds,
    );
}

/// Each upstream's queue: its length now, how long queued requests waited, how many
/// timed out.
fn register_queues(registry: &mut Registry, upstreams: &[Arc<Upstream>]) {
    let length = Family::<UpstreamLabel, Gauge>::default();
    let wait = Family::<UpstreamLabel, Latency>::default();
    let timeouts = Family::<UpstreamLabel, Counter>::default();
    for upstream in upstreams {
        let label = UpstreamLabel {
            upstream: upstream.name.to_string(),
        };
        let queue = &upstream.queue;
        length.get_or_create(&label).set(queue.len() as i64);
        wait.get_or_create(&label).read(&queue.wait);
        let timed_out = queue.timeouts.load(Ordering::Relaxed);
        timeouts.get_or_create(&label).inc_by(timed_out);
    }
    registry.register(
        "upstream_queue_length",
        "Requests and tcp sessions waiting for a server below max_connections_per_server",
        length,
    );
    registry.register(
        "upstream_queue_wait_seconds",
        "Time queued requests and sessions waited, served or timed out",
        wait,
    );
    registry.register(
        "upstream_queue_timeouts",
        "Requests and sessions refused after queue_timeout",
        timeouts,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_and_reload_result_is_exposed_from_the_start() {
        let limits = limit::Registry::default();
        limits.listener("web", None);
        let text = Metrics::default().encode(&[], &limits);
        assert!(text.contains("# HELP rlb_errors Requests and sessions that failed, by kind"));
        for kind in ProxyError::KINDS {
            let line = format!("rlb_errors_total{{kind=\"{kind}\"}} 0\n");
            assert!(text.contains(&line), "no {line} in:\n{text}");
        }
        for result in RELOAD_RESULTS {
            let line = format!("rlb_reloads_total{{result=\"{result}\"}} 0\n");
            assert!(text.contains(&line), "no {line} in:\n{text}");
        }
        for reason in crate::error::Refusal::ALL {
            let name = reason.name();
            let line = format!("rlb_limited_total{{listener=\"web\",reason=\"{name}\"}} 0\n");
            assert!(text.contains(&line), "no {line} in:\n{text}");
        }
    }
}
