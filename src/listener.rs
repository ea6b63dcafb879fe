//! Bound sockets and their accept loops: each accepted connection gets its own task,
//! which reads its PROXY header when the listener takes one (`proxy_header`), then
//! hands it to the tcp or http proxy according to the listener's plan.

mod proxy_header;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::{Empty, display};

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
    loop {
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
        let span = tracing::info_span!("conn", listener = %name, client = Empty, via = Empty);
        let task = connection(shared.clone(), name.clone(), plan, stream, peer);
        shared.tracker.spawn(task.instrument(span));
    }
    tracing::info!(listener = %name, "stopped accepting");
}

/// One client connection, in its own task so that a slow PROXY header holds up no
/// other: the header first (before anything else, TLS included), then the proxy.
async fn connection(
    shared: Arc<Shared>,
    name: Arc<str>,
    plan: Arc<ListenerPlan>,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let span = tracing::Span::current();
    let client = match &plan.proxy_protocol {
        None => peer,
        Some(settings) => match receive_unless_shutdown(&shared, &mut stream, peer, settings).await
        {
            Ok(client) => {
                span.record("via", display(peer));
                client
            }
            Err(e) => {
                // Per connection, so debug: a scan or a misconfigured proxy must not
                // flood the log.
                tracing::debug!(%peer, error = %e, "closed before serving");
                return;
            }
        },
    };
    span.record("client", display(client));
    tracing::debug!("accepted");
    match &plan.target {
        Target::Tcp(upstream) => {
            let upstream = upstream.clone();
            tcp::session(shared, name, upstream, stream, client, plan.idle_timeout).await;
        }
        Target::Http(_) => http::serve(shared, name, plan, stream, client).await,
    }
}

/// The PROXY header, or an error at once when shutdown begins: a client that has not
/// sent its header yet has nothing in flight to finish.
async fn receive_unless_shutdown(
    shared: &Shared,
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &crate::config::ProxyProtocol,
) -> Result<SocketAddr, proxy_header::HeaderError> {
    tokio::select! {
        received = proxy_header::receive(stream, peer, settings) => received,
        () = shared.shutdown.cancelled() => Err(proxy_header::HeaderError::ShuttingDown),
    }
}
