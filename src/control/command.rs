//! What the control task is asked to do, and the sender every asker holds (the `Rlb`
//! handle, the admin API, the file watcher, signals).

use std::net::SocketAddr;

use tokio::sync::{mpsc, oneshot};

use crate::config::ConfigErrors;

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

/// One request to the control task; each is answered when done.
pub(super) enum Command {
    Reload(oneshot::Sender<Result<u64, ReloadError>>),
    Shutdown(oneshot::Sender<()>),
}

/// The way to the control task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Commands(mpsc::UnboundedSender<Command>);

impl Commands {
    pub(super) fn new() -> (Commands, mpsc::UnboundedReceiver<Command>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Commands(sender), receiver)
    }

    /// Reads the file again and applies it, as SIGHUP does.
    pub async fn reload(&self) -> Result<u64, ReloadError> {
        let (reply, answer) = oneshot::channel();
        if self.0.send(Command::Reload(reply)).is_err() {
            return Err(ReloadError::ShuttingDown);
        }
        answer.await.unwrap_or(Err(ReloadError::ShuttingDown))
    }

    /// Stops every listener and checker; returns once they are told.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.0.send(Command::Shutdown(reply)).is_ok() {
            let _ = done.await;
        }
    }
}
