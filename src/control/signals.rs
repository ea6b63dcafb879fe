//! Signals to commands: SIGHUP reloads, SIGTERM and SIGINT end the wait so the caller
//! shuts down.

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::Rlb;

/// The handlers, installed before rlb starts so that an early SIGHUP cannot kill it.
pub struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Reloads `rlb` on each SIGHUP; returns at the first SIGTERM or SIGINT.
    pub async fn serve(mut self, rlb: &Rlb) {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    let _ = rlb.reload().await;
                }
                _ = self.terminate.recv() => { tracing::info!("SIGTERM: shutting down"); return }
                _ = self.interrupt.recv() => { tracing::info!("SIGINT: shutting down"); return }
            }
        }
    }
}
