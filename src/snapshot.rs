//! What every connection, check and admin request shares: the snapshot (immutable,
//! built once per load, swapped whole) and the live state beside it that outlives it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::Upstream;
use crate::config::{Config, Limits, ListenerConfig, Mode, ProxyProtocol};
use crate::events::Events;
use crate::limit::{self, ListenerState, RateKey, RateLimit};
use crate::metrics::Metrics;
use crate::route::{Route, Routes};
use crate::server::Registry;
use crate::tls::{Sessions, Termination};

/// The snapshot is the only thing swapped; the rest lives as long as the process.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    /// TLS session resumption, per client-auth policy.
    pub sessions: Sessions,
    /// Connection counts and rate buckets, beside the servers' state and as lasting.
    pub limits: limit::Registry,
    pub events: Events,
    pub metrics: Metrics,
    /// Cancelled once, on graceful shutdown.
    pub shutdown: CancellationToken,
    /// Every client connection and tunnel, so shutdown can wait for them.
    pub tracker: TaskTracker,
    access_log: AtomicBool,
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Shared {
        let access_log = snapshot.config.global.access_log;
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry: Registry::default(),
            sessions: Sessions::default(),
            limits: limit::Registry::default(),
            events: Events::default(),
            metrics: Metrics::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            access_log: AtomicBool::new(access_log),
        }
    }

    #[inline]
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Makes `snapshot` the one in force.
    pub fn publish(&self, snapshot: Snapshot) {
        self.access_log
            .store(snapshot.config.global.access_log, Ordering::Relaxed);
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// Everything routing needs, immutable, built once per (re)load and loaded once per
/// connection or request.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    /// In file order.
    pub upstreams: Vec<Arc<Upstream>>,
    pub listeners: HashMap<String, Arc<ListenerPlan>>,
    /// Where the admin API listens, when it does.
    pub admin: Option<SocketAddr>,
}

impl Snapshot {
    /// Generation 0: nothing configured yet, the state before the first load.
    pub fn empty(config: Config) -> Snapshot {
        Snapshot {
            generation: 0,
            config: Arc::new(config),
            upstreams: Vec::new(),
            listeners: HashMap::new(),
            admin: None,
        }
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}

/// What a listener does with a connection.
pub struct ListenerPlan {
    /// The address it is bound to (the kernel's port when the file says `:0`).
    pub local: SocketAddr,
    pub idle_timeout: Duration,
    /// Set when the listener terminates TLS: the handshake comes before the target.
    pub tls: Option<Termination>,
    /// Set when each connection starts with a PROXY header, read before anything else.
    pub proxy_protocol: Option<ProxyProtocol>,
    pub target: Target,
    pub limits: Limits,
    /// Live: open connections, connections per client, refusals.
    pub state: Arc<ListenerState>,
    /// The listener's rate buckets, when it has a `rate`.
    pub rate: Option<Arc<RateLimit>>,
}

pub enum Target {
    Tcp(Arc<Upstream>),
    Http(Routes<RouteTarget>),
}

/// Where a route sends its requests, and its own rate buckets when it has a `rate`.
pub struct RouteTarget {
    pub upstream: Arc<Upstream>,
    pub rate: Option<Arc<RateLimit>>,
}

impl ListenerPlan {
    pub fn routes(&self) -> Option<&Routes<RouteTarget>> {
        match &self.target {
            Target::Http(routes) => Some(routes),
            Target::Tcp(_) => None,
        }
    }
}

/// Builds the snapshot for `config`, taking each server's live state from the
/// registry, each TLS listener's session store from `sessions` and each listener's
/// limit state from `limits`; `bound` gives each listener's local address.
pub fn build(
    config: &Config,
    (registry, sessions, limits): (&Registry, &Sessions, &limit::Registry),
    generation: u64,
    bound: &HashMap<String, SocketAddr>,
    admin: Option<SocketAddr>,
) -> Snapshot {
    let upstreams: Vec<Arc<Upstream>> = config
        .upstreams
        .iter()
        .map(|u| {
            let name: Arc<str> = Arc::from(u.name.as_str());
            let servers = u
                .servers
                .iter()
                .map(|s| registry.server(&name, s.addr, s.weight))
                .collect();
            let mut upstream = Upstream::new(name, u.balance, servers);
            upstream.connect_timeout = u.connect_timeout;
            upstream.response_timeout = u.response_timeout;
            upstream.send_proxy = u.send_proxy_protocol;
            upstream.limit = u.limit;
            Arc::new(upstream)
        })
        .collect();
    let find = &|name: &str| {
        upstreams
            .iter()
            .find(|u| &*u.name == name)
            .cloned()
            .expect("validated configs only name defined upstreams")
    };
    let listeners = config
        .listeners
        .iter()
        .map(|l| {
            let local = bound.get(&l.name).copied().unwrap_or(l.bind);
            let plan = plan(l, local, find, sessions, limits);
            (l.name.clone(), Arc::new(plan))
        })
        .collect();
    let tls = config.listeners.iter().filter_map(|l| l.tls.as_ref());
    sessions.retain(tls.map(|t| t.client_ca.as_ref()));
    Snapshot {
        generation,
        config: Arc::new(config.clone()),
        upstreams,
        listeners,
        admin,
    }
}

/// One listener's plan: its target, TLS and PROXY settings, its limits and their live
/// state.
fn plan(
    l: &ListenerConfig,
    local: SocketAddr,
    find: &dyn Fn(&str) -> Arc<Upstream>,
    sessions: &Sessions,
    limits: &limit::Registry,
) -> ListenerPlan {
    let target = match &l.mode {
        Mode::Tcp { upstream } => Target::Tcp(find(upstream)),
        Mode::Http { routes } => Target::Http(Routes(
            routes
                .iter()
                .map(|r| Route {
                    host: r.host.as_deref().map(Box::from),
                    path_prefix: r.path_prefix.as_deref().map(Box::from),
                    target: RouteTarget {
                        upstream: find(&r.upstream),
                        rate: r.rate.map(|quota| {
                            let route = Some((r.host.clone(), r.path_prefix.clone()));
                            let listener = l.name.clone();
                            limits.rate(RateKey { listener, route }, quota)
                        }),
                    },
                })
                .collect(),
        )),
    };
    ListenerPlan {
        local,
        idle_timeout: l.idle_timeout,
        tls: l.tls.as_ref().map(|t| Termination::new(t, sessions)),
        proxy_protocol: l.proxy_protocol.clone(),
        target,
        limits: l.limits.clone(),
        state: limits.listener(&l.name, l.limits.max_connections),
        rate: l.limits.rate.map(|quota| {
            let listener = l.name.clone();
            limits.rate(
                RateKey {
                    listener,
                    route: None,
                },
                quota,
            )
        }),
    }
}
