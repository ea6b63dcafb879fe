//! One accepted client connection, in its own task: its PROXY header when the listener
//! takes one (before anything else, TLS included), the TLS handshake under the
//! listener's `handshake_timeout` when it terminates TLS, then the proxy for its mode.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::field::display;

use super::proxy_header;

use crate::error::Refusal;
use crate::limit::{Admitted, Slot};
use crate::proxy::stream::ClientStream;
use crate::proxy::{http, tcp};
use crate::snapshot::{ListenerPlan, Shared, Target};
use crate::tls::Termination;

/// Serves one client connection by `plan`, the plan in force when it was accepted.
pub(super) async fn connection(
    shared: Arc<Shared>,
    name: Arc<str>,
    plan: Arc<ListenerPlan>,
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
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
            Err(proxy_header::HeaderError::ShuttingDown) => return,
            Err(e) => {
                // Counted; logged at info at most once a second, the rest at debug: a
                // scan or a misconfigured proxy must not flood the log.
                let reason = Refusal::ProxyHeader.name();
                if plan.state.refused(Refusal::ProxyHeader) {
                    tracing::info!(%peer, reason, error = %e, "closed before serving (at most one line per second per reason)");
                } else {
                    tracing::debug!(%peer, reason, error = %e, "closed before serving");
                }
                return;
            }
        },
    };
    span.record("client", display(client));
    tracing::debug!("accepted");
    // The per-client cap counts the client the PROXY header named.
    let admitted = admit(&plan, slot, client);
    if admitted.over_client_cap && matches!(plan.target, Target::Tcp(_)) {
        if plan.state.refused(Refusal::ClientConnections) {
            tracing::info!(
                reason = Refusal::ClientConnections.name(),
                "client refused (at most one line per second per reason): too many connections from this client"
            );
        }
        return;
    }
    let stream = match &plan.tls {
        None => ClientStream::Plain(stream),
        Some(tls) => match handshake(&shared, tls, stream).await {
            Some(tls) => ClientStream::Tls(Box::new(tls)),
            None => return,
        },
    };
    match &plan.target {
        Target::Tcp(upstream) => {
            let upstream = upstream.clone();
            let client = (client, admitted);
            tcp::session(shared, name, upstream, stream, client, plan.idle_timeout).await;
        }
        Target::Http(_) => http::serve(shared, name, plan, stream, (client, admitted)).await,
    }
}

/// The TLS handshake; `None` (the connection is dropped) when it fails, when the client
/// does not finish it in time, or on shutdown.
async fn handshake(
    shared: &Shared,
    tls: &Termination,
    stream: TcpStream,
) -> Option<TlsStream<TcpStream>> {
    let accept = tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream));
    let result = tokio::select! {
        _ = shared.shutdown.cancelled() => return None,
        result = accept => result,
    };
    match result {
        Ok(Ok(stream)) => {
            let session = stream.get_ref().1;
            tracing::debug!(
                sni = session.server_name(),
                version = ?session.protocol_version(),
                alpn = ?session.alpn_protocol().map(String::from_utf8_lossy),
                "TLS handshake done"
            );
            Some(stream)
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(timeout = ?tls.handshake_timeout, "TLS handshake timed out");
            None
        }
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
