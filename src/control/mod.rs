//! The control task: the only code that changes running state. SIGHUP, `POST /reload`
//! and the file watcher send it commands; it loads the file, builds and publishes the
//! snapshot, and has each owner reconcile its part (listeners, checks).

pub mod admin;
mod checks;
mod listeners;
pub mod signals;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigErrors};
use crate::events::{Event, EventKind};
use crate::snapshot::{Shared, Snapshot, build};
use checks::Checks;
use listeners::Listeners;

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
    #[error("rlb is shutting down")]
    ShuttingDown,
}

/// What the control task is asked to do; each command is answered when done.
enum Command {
    Reload(oneshot::Sender<Result<u64, ReloadError>>),
    Shutdown(oneshot::Sender<()>),
}

/// A running rlb: a cheap handle to its shared state and its control task.
#[derive(Clone)]
pub struct Rlb {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    path: Option<Arc<Path>>,
}

impl Rlb {
    /// Binds every listener and starts serving `config`; `path` is the file reloads
    /// read (and the watcher watches). Call within a tokio runtime.
    pub fn start(config: Config, path: Option<PathBuf>) -> Result<Rlb, ReloadError> {
        let shared = Arc::new(Shared::new(Snapshot::empty(config.clone())));
        let (commands, received) = mpsc::unbounded_channel();
        let rlb = Rlb {
            shared,
            commands,
            path: path.map(Arc::from),
        };
        let mut control = Control {
            rlb: rlb.clone(),
            listeners: Listeners::default(),
            checks: Checks::default(),
        };
        control.apply(config)?;
        tokio::spawn(control.run(received));
        if let Some(path) = &rlb.path {
            tokio::spawn(watch::run(rlb.clone(), path.to_path_buf()));
        }
        Ok(rlb)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The address a listener is bound to (the real port when the file says `:0`).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .snapshot
            .load()
            .listeners
            .get(name)
            .map(|p| p.local)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.shared.snapshot.load().admin
    }

    /// The file reloads read.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn generation(&self) -> u64 {
        self.shared.snapshot.load().generation
    }

    /// Client connections and tunnels still open (what shutdown waits for).
    pub fn open_connections(&self) -> usize {
        self.shared.tracker.len()
    }

    /// The `GET /status` document.
    pub fn status(&self) -> Value {
        admin::status(&self.shared)
    }

    /// Reads the file again and applies it; on any error the running configuration
    /// stays, the errors are logged, and they are returned.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Reload(reply)).is_err() {
            return Err(ReloadError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(ReloadError::ShuttingDown))
    }

    /// Graceful shutdown: stop accepting, let in-flight requests, sessions and tunnels
    /// finish up to `shutdown_timeout`, then return.
    pub async fn shutdown(&self) {
        let timeout = self.shared.snapshot.load().config.global.shutdown_timeout;
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Shutdown(reply)).is_ok() {
            let _ = done.await;
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

/// The running state only the control task touches.
struct Control {
    /// A handle for what it starts (the admin API reloads through it).
    rlb: Rlb,
    listeners: Listeners,
    checks: Checks,
}

impl Control {
    /// Takes commands one at a time, so two reloads never interleave, until shutdown.
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Reload(reply) => {
                    let _ = reply.send(self.reload());
                }
                Command::Shutdown(reply) => {
                    self.listeners.stop();
                    self.checks.stop();
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn reload(&mut self) -> Result<u64, ReloadError> {
        let shared = self.rlb.shared.clone();
        let result = match self.rlb.path.clone() {
            None => Err(ReloadError::NoFile),
            Some(path) => Config::load(&path)
                .map_err(ReloadError::Config)
                .and_then(|c| self.apply(c)),
        };
        if let Err(e) = &result {
            shared.metrics.reload(false);
            for line in e.to_string().lines() {
                tracing::warn!("reload failed: {line}");
            }
            shared
                .events
                .push(Event::new(EventKind::ReloadFailed).detail(e.to_string()));
        }
        result
    }

    /// Makes `config` the running configuration: binds what is new, publishes the
    /// snapshot, then has each owner reconcile. Returns the new generation.
    fn apply(&mut self, config: Config) -> Result<u64, ReloadError> {
        let shared = self.rlb.shared.clone();
        let running = shared.snapshot.load_full();
        // Generation 0 is the empty snapshot of `start`; every later call is a reload.
        let first = running.generation == 0;
        // Bind everything new before anything changes; one failure refuses the reload.
        let mut sockets = self.listeners.bind(&config)?;
        if !first {
            let (before, after) = (&running.config.global, &config.global);
            if before.workers != after.workers || before.log_format != after.log_format {
                tracing::warn!(
                    "`workers` and `log_format` take effect at the next start, not on reload"
                );
            }
        }
        let generation = running.generation + 1;
        let bound: HashMap<String, SocketAddr> = self.listeners.locals(&config, &sockets);
        let admin = self.listeners.admin_local(&config, &sockets);
        let mut snapshot = build(&config, &shared.registry, generation, &bound, admin);
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
        self.checks.reconcile(&shared, &snapshot, &config);
        shared.publish(snapshot);
        self.listeners.swap(&shared, &config, &mut sockets, first);
        self.listeners
            .swap_admin(&self.rlb, &config, sockets.admin.take());

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
                .push(Event::new(EventKind::ReloadOk).generation(generation));
        }
        Ok(generation)
    }
}
