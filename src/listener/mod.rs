//! Bound sockets and their accept loops: each accepted connection gets a task of its
//! own (`handshake`), which reads its PROXY header when the listener takes one
//! (`proxy_header`), terminates TLS when the listener does, and hands the connection to
//! the tcp or http proxy, by the listener's plan in the current snapshot.

mod handshake;
mod proxy_header;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::Refusal;
use crate::limit::{Open, Slot};
use crate::snapshot::Shared;

/// The accept backlog, as nginx's default on Linux.
const BACKLOG: u32 = 511;

/// Binds `addr` with SO_REUSEADDR, so a restart does not wait for TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts until `stop` (the listener was removed by a reload) or shutdown; the
/// connections already accepted run on in the task tracker.
pub async fn accept_loop(
    shared: Arc<Shared>,
    name: Arc<str>,
    listener: Arc<TcpListener>,
    stop: CancellationToken,
) {
    // The same counter in every snapshot: it lives in the limit registry.
    let Some(open) = shared
        .snapshot
        .load()
        .listeners
        .get(&*name)
        .map(|p| p.state.open.clone())
    else {
        return;
    };
    loop {
        let slot = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = shared.shutdown.cancelled() => break,
            slot = take_slot(&shared, &name, &open) => slot,
        };
        let accepted = tokio::select! {
            // Stop first: once a reload has stopped this loop (and perhaps handed its
            // socket to another listener), it must not take one more connection.
            biased;
            _ = stop.cancelled() => break,
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::error!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(plan) = shared.snapshot.load().listeners.get(&*name).cloned() else {
            break;
        };
        // Every log line of the connection carries its listener and client address
        // (`via`: the proxy that sent a PROXY header), filled in by the connection task.
        // The PROXY header, the per-client cap and the TLS handshake run in that task:
        // a slow client never holds up the accept loop.
        let span = tracing::info_span!("conn", listener = %name, client = Empty, via = Empty);
        let task = handshake::connection(shared.clone(), name.clone(), plan, stream, peer, slot);
        shared.tracker.spawn(task.instrument(span));
    }
    tracing::info!(listener = %name, "stopped accepting");
}

/// A slot of `max_connections`; when there is none, counts the pause, logs it (at most
/// once a second) and waits: new clients wait in the backlog meanwhile.
async fn take_slot(shared: &Shared, name: &str, open: &Arc<Open>) -> Slot {
    if let Some(slot) = open.try_take() {
        return slot;
    }
    if let Some(plan) = shared.snapshot.load().listeners.get(name)
        && plan.state.refused(Refusal::MaxConnections)
    {
        tracing::info!(listener = %name, open = open.count(), reason = Refusal::MaxConnections.name(), "max_connections reached: accepting paused (at most one line per second)");
    }
    open.take().await
}
