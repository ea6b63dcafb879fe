//! The owner of the health checkers: one task per checked server, started, kept or
//! stopped so that each server's checks match the file.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Health};
use crate::events::{Event, EventKind};
use crate::server::ServerKey;
use crate::snapshot::{Shared, Snapshot};

/// The running checkers, by server, with the settings each runs with.
#[derive(Default)]
pub(super) struct Checks {
    running: HashMap<ServerKey, (Health, CancellationToken)>,
}

impl Checks {
    /// Starts checks for new or changed servers, stops those of removed ones, and
    /// leaves unchanged ones running so their counters carry on.
    pub fn reconcile(&mut self, shared: &Arc<Shared>, snapshot: &Snapshot, config: &Config) {
        let mut wanted: HashMap<ServerKey, Health> = HashMap::new();
        for (upstream, upstream_config) in snapshot.upstreams.iter().zip(&config.upstreams) {
            for server in &upstream.servers {
                let mut counters = server.health.lock().unwrap_or_else(|e| e.into_inner());
                let Some(health) = &upstream_config.health else {
                    if counters.checked {
                        // Nothing would bring it back without checks.
                        *counters = Default::default();
                        if !server.is_up() {
                            tracing::info!(upstream = %upstream.name, "server {} up: health checks removed", server.addr);
                            shared.events.push(
                                Event::new(EventKind::ServerUp)
                                    .server(&upstream.name, server.addr)
                                    .detail("health checks removed"),
                            );
                        }
                        server.set_up(true);
                    }
                    continue;
                };
                counters.checked = true;
                counters.rise = health.rise;
                counters.fall = health.fall;
                wanted.insert((upstream.name.clone(), server.addr), health.clone());
            }
        }
        self.running.retain(|key, (health, stop)| {
            let keep = wanted.get(key) == Some(health);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, health) in wanted {
            if self.running.contains_key(&key) {
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
                shared.clone(),
                server.clone(),
                health.clone(),
                stop.clone(),
            ));
            self.running.insert(key, (health, stop));
        }
    }

    pub fn stop(&mut self) {
        for (_, (_, stop)) in self.running.drain() {
            stop.cancel();
        }
    }
}
