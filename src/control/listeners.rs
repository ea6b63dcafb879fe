//! The owner of the bound sockets: listeners diffed by name and bind, sockets moved
//! between names that swap an address, the admin listener, and their stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::admin::{self, Api};
use super::command::{Commands, ReloadError};
use crate::config::Config;
use crate::events::{Event, EventKind};
use crate::listener;
use crate::snapshot::Shared;

/// The running listeners and the admin listener.
#[derive(Default)]
pub(super) struct Listeners {
    running: HashMap<String, Running>,
    admin: Option<Running>,
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
pub(super) struct Sockets {
    /// Per listener name: a fresh socket, or one moved from a listener of another name
    /// that had the same bind.
    listeners: HashMap<String, Arc<TcpListener>>,
    /// (old name, new name) of the sockets that change hands.
    pub moved: Vec<(String, String)>,
    /// A fresh admin socket when `[admin] bind` is new or changed.
    pub admin: Option<Arc<TcpListener>>,
}

impl Listeners {
    /// Binds every listener whose name is new or whose `bind` changed, reusing the
    /// socket of a running listener with the same address; a failure refuses it all.
    pub fn bind(&self, config: &Config) -> Result<Sockets, ReloadError> {
        let mut sockets = Sockets {
            listeners: HashMap::new(),
            moved: Vec::new(),
            admin: None,
        };
        let bind = |name: &str, addr: SocketAddr| {
            listener::bind(addr)
                .map(Arc::new)
                .map_err(|error| ReloadError::Bind {
                    listener: name.to_string(),
                    addr,
                    error,
                })
        };
        for wanted in &config.listeners {
            if let Some(running) = self.running.get(&wanted.name)
                && running.bind == wanted.bind
            {
                continue;
            }
            let taken = self
                .running
                .iter()
                .find(|(_, r)| r.bind == wanted.bind && wanted.bind.port() != 0);
            let socket = match taken {
                // Another name now owns this address: move its socket over.
                Some((old, r)) => {
                    sockets.moved.push((old.clone(), wanted.name.clone()));
                    r.socket.clone()
                }
                None => bind(&wanted.name, wanted.bind)?,
            };
            sockets.listeners.insert(wanted.name.clone(), socket);
        }
        if let Some(admin) = &config.admin
            && self.admin.as_ref().map(|a| a.bind) != Some(admin.bind)
        {
            sockets.admin = Some(bind("admin", admin.bind)?);
        }
        Ok(sockets)
    }

    /// Where each listener of `config` will be bound once `sockets` are in use.
    pub fn locals(&self, config: &Config, sockets: &Sockets) -> HashMap<String, SocketAddr> {
        config
            .listeners
            .iter()
            .filter_map(|l| {
                let local = match sockets.listeners.get(&l.name) {
                    Some(socket) => socket.local_addr().ok()?,
                    None => self.running.get(&l.name)?.local,
                };
                Some((l.name.clone(), local))
            })
            .collect()
    }

    /// Where the admin API will listen once `sockets` are in use (nowhere without
    /// `[admin]`).
    pub fn admin_local(&self, config: &Config, sockets: &Sockets) -> Option<SocketAddr> {
        config.admin.as_ref()?;
        match &sockets.admin {
            Some(socket) => socket.local_addr().ok(),
            None => self.admin.as_ref().map(|a| a.local),
        }
    }

    /// Stops the listeners the file removed or moved, and starts accept loops on the
    /// sockets bound for new and moved ones. Unchanged listeners are not touched.
    pub fn swap(
        &mut self,
        shared: &Arc<Shared>,
        config: &Config,
        sockets: &mut Sockets,
        first: bool,
    ) {
        self.running.retain(|name, running| {
            let keep = config
                .listener(name)
                .is_some_and(|l| running.bind == l.bind);
            if !keep {
                running.stop.cancel();
                if config.listener(name).is_none() {
                    tracing::info!(listener = %name, "listener removed");
                    shared
                        .events
                        .push(Event::new(EventKind::ListenerRemoved).listener(name));
                }
            }
            keep
        });
        for wanted in &config.listeners {
            let Some(socket) = sockets.listeners.remove(&wanted.name) else {
                continue;
            };
            let local = socket.local_addr().unwrap_or(wanted.bind);
            let stop = CancellationToken::new();
            tokio::spawn(listener::accept_loop(
                shared.clone(),
                Arc::from(wanted.name.as_str()),
                socket.clone(),
                stop.clone(),
            ));
            tracing::info!(listener = %wanted.name, mode = wanted.mode.name(), addr = %local, "listening");
            if !first {
                shared.events.push(
                    Event::new(EventKind::ListenerAdded)
                        .listener(&wanted.name)
                        .detail(local.to_string()),
                );
            }
            self.running.insert(
                wanted.name.clone(),
                Running {
                    bind: wanted.bind,
                    local,
                    socket,
                    stop,
                },
            );
        }
    }

    /// Moves the admin listener to a new socket, or stops it when `[admin]` is gone.
    pub fn swap_admin(
        &mut self,
        shared: &Arc<Shared>,
        commands: &Commands,
        config: &Config,
        socket: Option<Arc<TcpListener>>,
    ) {
        let bind = config.admin.as_ref().map(|a| a.bind);
        if (bind.is_none() || socket.is_some())
            && let Some(old) = self.admin.take()
        {
            old.stop.cancel();
        }
        if let (Some(socket), Some(bind)) = (socket, bind) {
            let local = socket.local_addr().unwrap_or(bind);
            let stop = CancellationToken::new();
            let api = Api {
                shared: shared.clone(),
                commands: commands.clone(),
            };
            tokio::spawn(admin::serve(api, socket.clone(), stop.clone()));
            tracing::info!(addr = %local, "admin listening");
            self.admin = Some(Running {
                bind,
                local,
                socket,
                stop,
            });
        }
    }

    /// Stops every accept loop, the admin API's too; open connections run on.
    pub fn stop(&mut self) {
        for (_, running) in self.running.drain() {
            running.stop.cancel();
        }
        if let Some(admin) = self.admin.take() {
            admin.stop.cancel();
        }
    }
}
