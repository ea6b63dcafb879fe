//! Bound sockets and their accept loops: each accepted connection is handed to the
//! tcp or http proxy according to the listener's plan in the current snapshot.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::Refusal;
use crate::limit::{Admitted, Open, Slot};
use crate::proxy::{http, tcp};
use crate::snapshot::{ListenerPlan, Shared, Target};

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
        let (stream, client) = match accepted {
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
        // Every log line of the connection carries its listener and client.
        let span = tracing::info_span!("conn", listener = %name, %client);
        tracing::debug!(parent: &span, "accepted");
        let admitted = admit(&plan, slot, client);
        match &plan.target {
            Target::Tcp(upstream) => {
                if admitted.over_client_cap {
                    if plan.state.refused(Refusal::ClientConnections) {
                        tracing::info!(parent: &span, reason = Refusal::ClientConnections.name(), "client refused (at most one line per second per reason): too many connections from this client");
                    }
                    continue;
                }
                let session = tcp::session(
                    shared.clone(),
                    name.clone(),
                    upstream.clone(),
                    stream,
                    (client, admitted),
                    plan.idle_timeout,
                );
                shared.tracker.spawn(session.instrument(span));
            }
            Target::Http(_) => {
                let serve = http::serve(
                    shared.clone(),
                    name.clone(),
                    plan,
                    stream,
                    (client, admitted),
                );
                shared.tracker.spawn(serve.instrument(span));
            }
        }
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

/// The per-client count of this connection, when the listener has a cap.
fn admit(plan: &ListenerPlan, open: Slot, client: SocketAddr) -> Admitted {
    let Some(max) = plan.limits.max_connections_per_client else {
        return Admitted {
            _open: open,
            _client: None,
            over_client_cap: false,
        };
    };
    let slot = plan.state.clients.try_take(client.ip(), max);
    Admitted {
        _open: open,
        over_client_cap: slot.is_none(),
        _client: slot,
    }
}
