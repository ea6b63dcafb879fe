//! The control task: the only code that changes running state. It takes commands one
//! at a time, loads the file, builds and publishes the snapshot, and has each owner
//! reconcile its part (listeners, checks).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::checks::Checks;
use super::command::{Command, Commands, ReloadError};
use super::listeners::Listeners;
use crate::config::Config;
use crate::events::{Event, EventKind};
use crate::snapshot::{Shared, build};

/// How often the rate buckets of idle clients are dropped.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The running state only the control task touches.
pub(super) struct Control {
    pub shared: Arc<Shared>,
    /// The file reloads read.
    pub path: Option<Arc<Path>>,
    /// Handed to what it starts (the admin API reloads through it).
    pub commands: Commands,
    pub listeners: Listeners,
    pub checks: Checks,
}

impl Control {
    /// Takes commands one at a time, so two reloads never interleave, until shutdown.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        // Idle rate buckets are dropped once a minute, so memory follows active clients.
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let command = tokio::select! {
                command = commands.recv() => command,
                _ = prune.tick() => {
                    self.shared.limits.prune();
                    continue;
                }
            };
            let Some(command) = command else {
                return;
            };
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
        let shared = self.shared.clone();
        let result = match self.path.clone() {
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
    pub fn apply(&mut self, config: Config) -> Result<u64, ReloadError> {
        let shared = self.shared.clone();
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
        let mut snapshot = build(
            &config,
            (&shared.registry, &shared.sessions, &shared.limits),
            generation,
            &bound,
            admin,
        );
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
            .swap_admin(&shared, &self.commands, &config, sockets.admin.take());

        let in_use = |s: &crate::server::Server| {
            config
                .upstream(&s.upstream)
                .is_some_and(|u| u.servers.iter().any(|c| c.addr == s.addr))
        };
        shared.registry.retain(in_use);
        shared.limits.retain(&config);
        if !first {
            tracing::info!(generation, "configuration reloaded");
            shared.metrics.reload(true);
            shared
                .events
                .push(Event::new(EventKind::ReloadOk).generation(generation));
            certificates_changed(&shared, &running.config, &config, generation);
        }
        Ok(generation)
    }
}

/// One `tls_reloaded` event per listener, kept through the reload, whose certificates
/// (chains and keys, compared byte for byte) are not the ones it had: its new
/// handshakes get the new ones.
fn certificates_changed(shared: &Shared, before: &Config, after: &Config, generation: u64) {
    for listener in &after.listeners {
        let Some(tls) = &listener.tls else { continue };
        let Some(old) = before.listener(&listener.name) else {
            continue;
        };
        if old.tls.as_ref().map(|t| &t.certificates) == Some(&tls.certificates) {
            continue;
        }
        let names: Vec<&str> = tls
            .certificates
            .iter()
            .flat_map(|c| c.names.iter().map(String::as_str))
            .collect();
        tracing::info!(listener = %listener.name, names = ?names, "certificates reloaded");
        shared.events.push(
            Event::new(EventKind::TlsReloaded)
                .listener(&listener.name)
                .generation(generation)
                .detail(format!("certificates for: {}", names.join(", "))),
        );
    }
}
