//! Turns a configuration into a running snapshot, and orchestrates start, reload and
//! graceful shutdown: listeners diffed by name, checks diffed by server, server state
//! kept in the registry across snapshots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::Upstream;
use crate::config::{Config, ConfigErrors, Health, Mode};
use crate::events::{Event, Events};
use crate::metrics::Metrics;
use crate::proxy::http::{Route, Routes};
use crate::server::{Registry, ServerKey};

/// What every connection, check and admin request shares. The snapshot is the only
/// thing swapped; the rest lives as long as the process.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    pub events: Events,
    pub metrics: Metrics,
    /// Cancelled once, on graceful shutdown.
    pub shutdown: CancellationToken,
    /// Every client connection and tunnel, so shutdown can wait for them.
    pub tracker: TaskTracker,
    access_log: AtomicBool,
}

impl Shared {
    #[inline]
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }
}

/// Everything routing needs, immutable, built once per (re)load and loaded once per
/// connection or request.
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    /// In file order.
    pub upstreams: Vec<Arc<Upstream>>,
    pub listeners: HashMap<String, Arc<Plan>>,
}

impl Snapshot {
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| &*u.name == name)
    }
}

/// What a listener does with a connection.
pub struct Plan {
    pub idle_timeout: Duration,
    pub target: Target,
}

pub enum Target {
    Tcp(Arc<Upstream>),
    Http(Routes),
}

impl Plan {
    pub fn routes(&self) -> Option<&Routes> {
        match &self.target {
            Target::Http(routes) => Some(routes),
            Target::Tcp(_) => None,
        }
    }
}

/// Why a start or a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("listener `{listener}`: cannot bind {addr}: {error}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("no configuration file to reload")]
    NoFile,
}

/// A running rlb: cheap to clone, shared with the admin API and signal handlers.
#[derive(Clone)]
pub struct Rlb {
    shared: Arc<Shared>,
    path: Option<PathBuf>,
    control: Arc<Mutex<Control>>,
    /// Held from reading the file to applying it, so two reloads at once (SIGHUP, the
    /// admin API, the watcher) cannot apply an older read over a newer one.
    reloading: Arc<Mutex<()>>,
}

/// What only start, reload and shutdown touch.
#[derive(Default)]
struct Control {
    listeners: HashMap<String, Running>,
    admin: Option<Running>,
    checks: HashMap<ServerKey, (Health, CancellationToken)>,
}

/// A bound socket and its accept loop.
struct Running {
    /// As configured; a reload compares this, not the port the kernel picked for `:0`.
    bind: SocketAddr,
    local: SocketAddr,
    socket: Arc<TcpListener>,
    stop: CancellationToken,
}

/// The sockets a new configuration needs, bound before anything changes.
struct Sockets {
    /// Per listener name: a fresh socket, or one moved from a listener of another name
    /// that had the same bind.
    listeners: HashMap<String, Arc<TcpListener>>,
    /// (old name, new name) of the sockets that change hands.
    moved: Vec<(String, String)>,
    /// A fresh admin socket when `[admin] bind` is new or changed.
    admin: Option<Arc<TcpListener>>,
}

impl Sockets {
    /// Binds every listener whose name is new or whose `bind` changed, reusing the
    /// socket of a running listener with the same address; a failure refuses it all.
    fn bind(control: &Control, config: &Config) -> Result<Sockets, ReloadError> {
        let mut sockets = Sockets {
            listeners: HashMap::new(),
            moved: Vec::new(),
            admin: None,
        };
        let bind = |name: &str, addr: SocketAddr| {
            crate::listener::bind(addr)
                .map(Arc::new)
                .map_err(|error| ReloadError::Bind {
                    listener: name.to_string(),
                    addr,
                    error,
                })
        };
        for listener in &config.listeners {
            if let Some(running) = control.listeners.get(&listener.name)
                && running.bind == listener.bind
            {
                continue;
            }
            let taken = control
                .listeners
                .iter()
                .find(|(_, r)| r.bind == listener.bind && listener.bind.port() != 0);
            let socket = match taken {
                // Another name now owns this address: move its socket over.
                Some((old, r)) => {
                    sockets.moved.push((old.clone(), listener.name.clone()));
                    r.socket.clone()
                }
                None => bind(&listener.name, listener.bind)?,
            };
            sockets.listeners.insert(listener.name.clone(), socket);
        }
        if let Some(admin) = &config.admin
            && control.admin.as_ref().map(|a| a.bind) != Some(admin.bind)
        {
            sockets.admin = Some(bind("admin", admin.bind)?);
        }
        Ok(sockets)
    }
}

impl Rlb {
    /// Binds every listener and starts serving `config`. `path` is the file reloads read.
    pub fn start(config: Config, path: Option<PathBuf>) -> Result<Rlb, ReloadError> {
        let registry = Registry::default();
        let snapshot = build(&config, &registry, 0);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            events: Events::default(),
            metrics: Metrics::default(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            access_log: AtomicBool::new(config.global.access_log),
        });
        let rlb = Rlb {
            shared,
            path,
            control: Arc::new(Mutex::new(Control::default())),
            reloading: Arc::default(),
        };
        rlb.apply(config)?;
        Ok(rlb)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The address a listener is bound to (the real port when the file says `:0`).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control().listeners.get(name).map(|r| r.local)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.control().admin.as_ref().map(|r| r.local)
    }

    /// The file reloads read.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the file again and applies it; on any error the running configuration
    /// stays, the errors are logged, and they are returned.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let result = match &self.path {
            None => Err(ReloadError::NoFile),
            Some(path) => Config::load(path)
                .map_err(ReloadError::Config)
                .and_then(|c| self.apply(c)),
        };
        if let Err(e) = &result {
            self.shared.metrics.reload(false);
            for line in e.to_string().lines() {
                tracing::warn!("reload failed: {line}");
            }
            self.shared
                .events
                .push(Event::new("reload_failed").detail(e.to_string()));
        }
        result
    }

    /// Makes `config` the running configuration: binds what is new, swaps the snapshot,
    /// stops what was removed, and diffs the health checks. Returns the new generation.
    pub fn apply(&self, config: Config) -> Result<u64, ReloadError> {
        let mut control = self.control();
        let shared = &self.shared;
        // `start` leaves generation 0 behind it; every later call is a reload.
        let first = shared.snapshot.load().generation == 0;

        // Bind everything new before anything changes; one failure refuses the reload.
        let mut sockets = Sockets::bind(&control, &config)?;

        if !first {
            let running = shared.snapshot.load();
            let (before, after) = (&running.config.global, &config.global);
            if before.workers != after.workers || before.log_format != after.log_format {
                tracing::warn!(
                    "`workers` and `log_format` take effect at the next start, not on reload"
                );
            }
        }
        let generation = shared.snapshot.load().generation + 1;
        let mut snapshot = build(&config, &shared.registry, generation);
        // The old accept loop of a moved socket may still take a connection before it
        // sees its stop; under its old name it finds the new owner's plan, so that
        // connection is served instead of dropped.
        for (old, new) in &sockets.moved {
            if config.listener(old).is_none()
                && let Some(plan) = snapshot.listeners.get(new).cloned()
            {
                snapshot.listeners.insert(old.clone(), plan);
            }
        }
        self.configure_health(&mut control, &snapshot, &config);
        shared
            .access_log
            .store(config.global.access_log, Ordering::Relaxed);
        shared.snapshot.store(Arc::new(snapshot));

        self.swap_listeners(&mut control, &config, &mut sockets, first);
        self.swap_admin(&mut control, &config, sockets.admin.take());

        let in_use = |s: &crate::server::Server| {
            config
                .upstream(&s.upstream)
                .is_some_and(|u| u.servers.iter().any(|c| c.addr == s.addr))
        };
        shared.registry.retain(in_use);
        if !first {
            tracing::info!(generation, "configuration reloaded");
            shared.metrics.reload(true);
            shared
                .events
                .push(Event::new("reload_ok").generation(generation));
        }
        Ok(generation)
    }

    /// Stops the listeners the file removed or moved, and starts accept loops on the
    /// sockets bound for new and moved ones. Unchanged listeners are not touched.
    fn swap_listeners(
        &self,
        control: &mut Control,
        config: &Config,
        sockets: &mut Sockets,
        first: bool,
    ) {
        let shared = &self.shared;
        let names: Vec<String> = control.listeners.keys().cloned().collect();
        for name in names {
            let keep = config.listener(&name).is_some_and(|l| {
                control
                    .listeners
                    .get(&name)
                    .is_some_and(|r| r.bind == l.bind)
            });
            if !keep && let Some(running) = control.listeners.remove(&name) {
                running.stop.cancel();
                if config.listener(&name).is_none() {
                    tracing::info!(listener = %name, "listener removed");
                    shared
                        .events
                        .push(Event::new("listener_removed").listener(&name));
                }
            }
        }
        for listener in &config.listeners {
            let Some(socket) = sockets.listeners.remove(&listener.name) else {
                continue;
            };
            let local = socket.local_addr().unwrap_or(listener.bind);
            let stop = CancellationToken::new();
            tokio::spawn(crate::listener::accept_loop(
                shared.clone(),
                Arc::from(listener.name.as_str()),
                socket.clone(),
                stop.clone(),
            ));
            tracing::info!(listener = %listener.name, mode = listener.mode.name(), addr = %local, "listening");
            if !first {
                shared.events.push(
                    Event::new("listener_added")
                        .listener(&listener.name)
                        .detail(local.to_string()),
                );
            }
            control.listeners.insert(
                listener.name.clone(),
                Running {
                    bind: listener.bind,
                    local,
                    socket,
                    stop,
                },
            );
        }
    }

    /// Moves the admin listener to a new socket, or stops it when `[admin]` is gone.
    fn swap_admin(&self, control: &mut Control, config: &Config, socket: Option<Arc<TcpListener>>) {
        let bind = config.admin.as_ref().map(|a| a.bind);
        if (bind.is_none() || socket.is_some())
            && let Some(old) = control.admin.take()
        {
            old.stop.cancel();
        }
        if let (Some(socket), Some(bind)) = (socket, bind) {
            let local = socket.local_addr().unwrap_or(bind);
            let stop = CancellationToken::new();
            tokio::spawn(crate::admin::serve(
                self.clone(),
                socket.clone(),
                stop.clone(),
            ));
            tracing::info!(addr = %local, "admin listening");
            control.admin = Some(Running {
                bind,
                local,
                socket,
                stop,
            });
        }
    }

    /// Starts checks for new or changed servers, stops those of removed ones, and
    /// leaves unchanged ones running so their counters carry on.
    fn configure_health(&self, control: &mut Control, snapshot: &Snapshot, config: &Config) {
        let mut wanted: HashMap<ServerKey, Health> = HashMap::new();
        for (upstream, upstream_config) in snapshot.upstreams.iter().zip(&config.upstreams) {
            for server in &upstream.servers {
                let mut counters = server.health.lock().unwrap_or_else(|e| e.into_inner());
                match &upstream_config.health {
                    Some(health) => {
                        counters.checked = true;
                        counters.rise = health.rise;
                        counters.fall = health.fall;
                        wanted.insert((upstream.name.clone(), server.addr), health.clone());
                    }
                    None => {
                        if counters.checked {
                            // Nothing would bring it back without checks.
                            *counters = Default::default();
                            if !server.is_up() {
                                tracing::info!(upstream = %upstream.name, "server {} up: health checks removed", server.addr);
                                self.shared.events.push(
                                    Event::new("server_up")
                                        .server(&upstream.name, server.addr)
                                        .detail("health checks removed"),
                                );
                            }
                            server.set_up(true);
                        }
                    }
                }
            }
        }
        control.checks.retain(|key, (health, stop)| {
            let keep = wanted.get(key) == Some(health);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, health) in wanted {
            if control.checks.contains_key(&key) {
                continue;
            }
            let Some(server) = snapshot
                .upstream(&key.0)
                .and_then(|u| u.servers.iter().find(|s| s.addr == key.1))
            else {
                continue;
            };
            let stop = CancellationToken::new();
            tokio::spawn(crate::health::checker::run(
                self.shared.clone(),
                server.clone(),
                health.clone(),
                stop.clone(),
            ));
            control.checks.insert(key, (health, stop));
        }
    }

    /// Graceful shutdown: stop accepting, let in-flight requests, sessions and tunnels
    /// finish up to `shutdown_timeout`, then return.
    pub async fn shutdown(&self) {
        let timeout = self.shared.snapshot.load().config.global.shutdown_timeout;
        {
            let mut control = self.control();
            for (_, running) in control.listeners.drain() {
                running.stop.cancel();
            }
            if let Some(admin) = control.admin.take() {
                admin.stop.cancel();
            }
            for (_, (_, stop)) in control.checks.drain() {
                stop.cancel();
            }
        }
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        let open = self.shared.tracker.len();
        if open > 0 {
            tracing::info!(open, ?timeout, "waiting for open connections to finish");
        }
        if tokio::time::timeout(timeout, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.shared.tracker.len(),
                "shutdown timeout reached; closing the rest"
            );
        }
    }
}

/// Builds the snapshot for `config`, taking each server's live state from the registry.
fn build(config: &Config, registry: &Registry, generation: u64) -> Snapshot {
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
            Arc::new(upstream)
        })
        .collect();
    let find = |name: &str| {
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
            let target = match &l.mode {
                Mode::Tcp { upstream } => Target::Tcp(find(upstream)),
                Mode::Http { routes } => Target::Http(Routes(
                    routes
                        .iter()
                        .map(|r| Route {
                            host: r.host.as_deref().map(Box::from),
                            path_prefix: r.path_prefix.as_deref().map(Box::from),
                            upstream: find(&r.upstream),
                        })
                        .collect(),
                )),
            };
            let plan = Plan {
                idle_timeout: l.idle_timeout,
                target,
            };
            (l.name.clone(), Arc::new(plan))
        })
        .collect();
    Snapshot {
        generation,
        config: Arc::new(config.clone()),
        upstreams,
        listeners,
    }
}
