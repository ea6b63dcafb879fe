//! Layer 4: one client connection, a server picked and connected with retry, then the
//! bytes copied both ways until both sides close (splice(2) when the client side is
//! plain, the copy loop when it is TLS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::stream::ClientStream;
use crate::balance::{Tried, Upstream};
use crate::connect::{connect_sending, proxy_header};
use crate::error::ProxyError;
use crate::limit::Admitted;
use crate::snapshot::Shared;

/// Proxies one tcp session. With no server to take it, the client connection is
/// closed at once; with every server at its limit, after `queue_timeout` in the queue.
pub async fn session(
    shared: Arc<Shared>,
    listener: Arc<str>,
    upstream: Arc<Upstream>,
    client: ClientStream,
    (client_addr, _admitted): (SocketAddr, Admitted),
    idle: Duration,
) {
    let start = Instant::now();
    // The PROXY header each server connection starts with, when the upstream wants one.
    let header = match upstream.send_proxy.map(|v| (v, client.tcp().local_addr())) {
        None => None,
        Some((version, Ok(local))) => Some(proxy_header(version, client_addr, local)),
        Some((_, Err(e))) => {
            tracing::debug!(error = %e, "client connection lost before a server was picked");
            return;
        }
    };
    let mut tried = Tried::default();
    let error = loop {
        let (index, active) = match upstream.acquire(&tried).await {
            Ok(acquired) => acquired,
            Err(e) => break e,
        };
        tried.add(index);
        let server = &upstream.servers[index];
        let timeout = upstream.connect_timeout;
        let stream = match connect_sending(server.addr, timeout, header.as_deref()).await {
            Ok(stream) => stream,
            Err(e) => {
                crate::health::passive_failure(&shared, server, &e);
                tracing::warn!(error = %e, "trying the next server");
                continue;
            }
        };
        server.connected();
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
        let totals = match client {
            #[cfg(target_os = "linux")]
            ClientStream::Plain(client) => {
                super::zerocopy::splice_tcp(&client, &stream, idle).await
            }
            #[cfg(not(target_os = "linux"))]
            ClientStream::Plain(client) => super::copy::copy_both_ways(client, stream, idle).await,
            // splice(2) cannot see the plaintext: rustls decrypts in user space.
            ClientStream::Tls(client) => super::copy::copy_both_ways(client, stream, idle).await,
        };
        if shared.access_log() {
            tracing::info!(
                target: "rlb::access",
                listener = %listener,
                client = %client_addr,
                server = %server.addr,
                bytes_up = totals.up,
                bytes_down = totals.down,
                end = totals.end.name(),
                duration_ms = %format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
            );
        }
        drop(active);
        return;
    };
    shared.metrics.error(error.kind());
    match error {
        ProxyError::QueueTimeout { .. } => {
            tracing::debug!(error = %error, "closing the client connection");
        }
        _ => {
            tracing::warn!(upstream = %upstream.name, "no server available; closing the client connection")
        }
    }
}
