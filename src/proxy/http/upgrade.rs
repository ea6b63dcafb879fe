//! Upgrades (WebSocket and any other): the 101 goes back to the client, then both
//! upgraded connections become one tunnel, copied as bytes.

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::Instrument;

use super::access_log::AccessLog;
use super::body::ProxyBody;
use super::headers::strip_hop_by_hop;
use crate::connect::RequestBody;
use crate::proxy::copy::copy_both_ways;
use crate::server::Active;
use crate::snapshot::Shared;

/// Starts the tunnel of a switched connection and returns the 101 for the client.
pub fn start(
    shared: &Shared,
    mut response: Response<Incoming>,
    client_side: OnUpgrade,
    (sender, active): (SendRequest<RequestBody>, Active),
    idle: Duration,
    log: Option<Box<AccessLog>>,
) -> Response<ProxyBody> {
    let server_side = hyper::upgrade::on(&mut response);
    shared
        .tracker
        .spawn(tunnel(client_side, server_side, sender, active, idle, log).in_current_span());
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, true);
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}

/// Splices an upgraded client connection with the upgraded server connection for as
/// long as both keep it open, counting it on the server all the while.
async fn tunnel(
    client_side: OnUpgrade,
    server_side: OnUpgrade,
    sender: SendRequest<RequestBody>,
    active: Active,
    idle: Duration,
    log: Option<Box<AccessLog>>,
) {
    let (client, server) = tokio::join!(client_side, server_side);
    drop(sender);
    match (client, server) {
        (Ok(client), Ok(server)) => {
            let totals = copy_both_ways(TokioIo::new(client), TokioIo::new(server), idle).await;
            if let Some(mut log) = log {
                log.bytes = totals.down;
                log.write();
            }
            tracing::debug!(server = %active.server().addr, up = totals.up, down = totals.down, end = totals.end.name(), "tunnel closed");
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "upgrade failed"),
    }
    drop(active);
}
