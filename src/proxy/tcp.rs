//! Layer 4: one client connection, a server picked and connected with retry, then the
//! bytes copied both ways until both sides close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::balance::{Tried, Upstream};
use crate::connect::connect;
use crate::limit::Admitted;
use crate::server::Active;
use crate::snapshot::Shared;

/// Proxies one tcp session. With no server to take it, the client connection is
/// closed at once.
pub async fn session(
    shared: Arc<Shared>,
    listener: Arc<str>,
    upstream: Arc<Upstream>,
    client: TcpStream,
    (client_addr, _admitted): (SocketAddr, Admitted),
    idle: Duration,
) {
    let start = Instant::now();
    let mut tried = Tried::default();
    while let Some(index) = upstream.pick(&tried) {
        tried.add(index);
        let server = &upstream.servers[index];
        let active = Active::new(server.clone());
        let stream = match connect(server.addr, upstream.connect_timeout).await {
            Ok(stream) => stream,
            Err(e) => {
                crate::health::passive_failure(&shared, server, &e);
                tracing::warn!(error = %e, "trying the next server");
                continue;
            }
        };
        server.connected();
        server.stats.requests.fetch_add(1, Ordering::Relaxed);
        #[cfg(target_os = "linux")]
        let totals = super::zerocopy::splice_tcp(&client, &stream, idle).await;
        #[cfg(not(target_os = "linux"))]
        let totals = super::copy::splice(client, stream, idle).await;
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
    }
    shared.metrics.error("no_server");
    tracing::warn!(upstream = %upstream.name, "no server available; closing the client connection");
}
