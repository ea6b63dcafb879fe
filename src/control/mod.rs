//! Control: the [`Rlb`] handle, and the control task behind it (`task`), the only code
//! that changes running state. SIGHUP (`signals`), `POST /reload` (`admin`) and the
//! file watcher (`watch`) send it commands (`command`); the task has each owner
//! reconcile its part (`listeners`, `checks`).

mod admin;
mod checks;
mod command;
mod listeners;
pub mod signals;
mod task;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

pub use command::ReloadError;

use crate::config::Config;
use crate::snapshot::{Shared, Snapshot};
use checks::Checks;
use command::Commands;
use listeners::Listeners;
use task::Control;

/// A running rlb: a cheap handle to its shared state and its control task.
#[derive(Clone)]
pub struct Rlb {
    shared: Arc<Shared>,
    commands: Commands,
    path: Option<Arc<Path>>,
}

impl Rlb {
    /// Binds every listener and starts serving `config`; `path` is the file reloads
    /// read (and the watcher watches). Call within a tokio runtime.
    pub fn start(config: Config, path: Option<PathBuf>) -> Result<Rlb, ReloadError> {
        let shared = Arc::new(Shared::new(Snapshot::empty(config.clone())));
        let (commands, received) = Commands::new();
        let path: Option<Arc<Path>> = path.map(Arc::from);
        let mut control = Control {
            shared: shared.clone(),
            path: path.clone(),
            commands: commands.clone(),
            listeners: Listeners::default(),
            checks: Checks::default(),
        };
        control.apply(config)?;
        tokio::spawn(control.run(received));
        if let Some(path) = &path {
            let watch = watch::run(shared.clone(), commands.clone(), path.to_path_buf());
            tokio::spawn(watch);
        }
        Ok(Rlb {
            shared,
            commands,
            path,
        })
    }

    #[cfg(test)]
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
        self.commands.reload().await
    }

    /// Graceful shutdown: stop accepting, let in-flight requests, sessions and tunnels
    /// finish up to `shutdown_timeout`, then return.
    pub async fn shutdown(&self) {
        let timeout = self.shared.snapshot.load().config.global.shutdown_timeout;
        self.commands.shutdown().await;
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
