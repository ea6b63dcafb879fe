//! Prometheus metrics: counters kept here for errors and reloads, and per-server
//! gauges and counters read from the live server state at scrape time.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::runtime::Shared;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    upstream: String,
    server: String,
}

/// The counters that are not server state: errors by kind and reloads by result.
#[derive(Default)]
pub struct Metrics {
    errors: Family<KindLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
}

impl Metrics {
    /// Counts a request or session that failed; `kind` is [`ProxyError::kind`].
    ///
    /// [`ProxyError::kind`]: crate::proxy::error::ProxyError::kind
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self, shared: &Shared) -> String {
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

        let up = Family::<ServerLabels, Gauge>::default();
        let active = Family::<ServerLabels, Gauge>::default();
        let requests = Family::<ServerLabels, Counter>::default();
        let connect_failures = Family::<ServerLabels, Counter>::default();
        let response_failures = Family::<ServerLabels, Counter>::default();
        let timeouts = Family::<ServerLabels, Counter>::default();
        let checks = Family::<ServerLabels, Counter>::default();
        let check_failures = Family::<ServerLabels, Counter>::default();
        let check_seconds = Family::<ServerLabels, Counter<f64>>::default();
        let snapshot = shared.snapshot.load();
        for upstream in &snapshot.upstreams {
            for server in &upstream.servers {
                let labels = ServerLabels {
                    upstream: upstream.name.to_string(),
                    server: server.addr.to_string(),
                };
                let load =
                    |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
                let stats = &server.stats;
                up.get_or_create(&labels).set(server.is_up() as i64);
                active.get_or_create(&labels).set(server.active() as i64);
                requests
                    .get_or_create(&labels)
                    .inc_by(load(&stats.requests));
                connect_failures
                    .get_or_create(&labels)
                    .inc_by(load(&stats.connect_failures));
                response_failures
                    .get_or_create(&labels)
                    .inc_by(load(&stats.response_failures));
                timeouts
                    .get_or_create(&labels)
                    .inc_by(load(&stats.timeouts));
                checks
                    .get_or_create(&labels)
                    .inc_by(load(&stats.check_count));
                check_failures
                    .get_or_create(&labels)
                    .inc_by(load(&stats.check_failures));
                check_seconds
                    .get_or_create(&labels)
                    .inc_by(load(&stats.check_micros) as f64 / 1e6);
            }
        }
        registry.register("server_up", "1 when the server passes its checks", up);
        registry.register(
            "server_active_connections",
            "Requests in flight plus open sessions and tunnels",
            active,
        );
        registry.register(
            "server_requests",
            "Requests forwarded and sessions opened",
            requests,
        );
        registry.register(
            "server_connect_failures",
            "Failed connects on the data path",
            connect_failures,
        );
        registry.register(
            "server_response_failures",
            "Requests sent that got no response",
            response_failures,
        );
        registry.register(
            "server_timeouts",
            "Requests that timed out waiting for a response",
            timeouts,
        );
        registry.register("server_checks", "Health checks run", checks);
        registry.register(
            "server_check_failures",
            "Health checks failed",
            check_failures,
        );
        registry.register(
            "server_check_duration_seconds",
            "Total time spent in health checks",
            check_seconds,
        );

        let mut out = String::new();
        let _ = encode(&mut out, &registry);
        out
    }
}
