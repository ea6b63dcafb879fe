//! Connections to servers: connect with a timeout, keep-alive connections handed out
//! and taken back per server.
//!
//! Written over hyper's low-level `client::conn` rather than hyper-util's pooled
//! client: the balancer must choose the server for each attempt, a failed connect must
//! leave the request (body included) unsent so it can go to the next server, and the
//! idle connections belong to the live server state that outlives reloads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::http::ClientBody;
use crate::server::Server;

/// The body rlb sends to a server: the client's stream, or nothing (which lets a
/// bodiless request be sent again).
pub type UpstreamBody = Either<ClientBody, Empty<Bytes>>;

/// How long an idle keep-alive connection to a server is reused; below the usual
/// server-side keep-alive timeouts (nginx 75 s, Node 5 s is the exception, handled by
/// resending an unsent request).
const MAX_IDLE: Duration = Duration::from_secs(30);

pub struct Idle {
    pub sender: SendRequest<UpstreamBody>,
    pub since: Instant,
}

/// Opens a TCP connection with a timeout and TCP_NODELAY.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ProxyError::Connect { addr, source }),
        Err(_) => Err(ProxyError::ConnectTimeout { addr, timeout }),
    }
}

/// An http/1.1 connection ready for a request, and whether it was reused.
pub async fn checkout(
    server: &Server,
    timeout: Duration,
) -> Result<(SendRequest<UpstreamBody>, bool), ProxyError> {
    while let Some(idle) = server.take_idle(MAX_IDLE) {
        let mut sender = idle.sender;
        if sender.ready().await.is_ok() {
            return Ok((sender, true));
        }
    }
    let addr = server.addr;
    let stream = connect(addr, timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Server { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(server = %addr, error = %e, "server connection ended");
        }
    });
    Ok((sender, false))
}

/// Returns a connection whose response has been read in full.
pub fn checkin(server: &Server, sender: SendRequest<UpstreamBody>) {
    if !sender.is_closed() && server.is_up() {
        let _ = server.idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}
