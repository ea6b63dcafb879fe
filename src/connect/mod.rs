//! Connections to servers: connect with a timeout, and the keep-alive connections a
//! server keeps idle between requests.
//!
//! Written over hyper's low-level `client::conn` rather than hyper-util's pooled
//! client: the balancer must choose the server for each attempt, a failed connect must
//! leave the request (body included) unsent so it can go to the next server, and the
//! idle connections belong to the live server state that outlives reloads.

mod body;
pub mod private;
mod proxy_header;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub use body::{BodyTooLarge, ClientBody, RequestBody};
pub use proxy_header::proxy_header;

use crate::error::ProxyError;

/// How long an idle keep-alive connection to a server is reused; below the usual
/// server-side keep-alive timeouts (nginx 75 s, Node 5 s is the exception, handled by
/// resending an unsent request).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// How many idle keep-alive connections one server keeps at most.
const IDLE_PER_SERVER: usize = 512;

/// A server's idle keep-alive connections, lock-free.
pub struct Pool(ArrayQueue<Idle>);

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool(ArrayQueue::new(IDLE_PER_SERVER))
    }
}

impl Pool {
    /// Keeps a connection whose response has been read in full for the next request.
    pub fn put(&self, sender: SendRequest<RequestBody>) {
        if !sender.is_closed() {
            let _ = self.0.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes every idle connection (their server went down: they would only fail the
    /// next request).
    pub fn clear(&self) {
        while self.0.pop().is_some() {}
    }

    /// An idle connection that is still open and ready for a request, if any.
    async fn take(&self) -> Option<SendRequest<RequestBody>> {
        while let Some(idle) = self.0.pop() {
            if let Some(sender) = idle.usable().await {
                return Some(sender);
            }
        }
        None
    }
}

impl Idle {
    /// The connection, if it is still open, not idle too long, and ready for a request.
    async fn usable(self) -> Option<SendRequest<RequestBody>> {
        if self.sender.is_closed() || self.since.elapsed() >= MAX_IDLE {
            return None;
        }
        let mut sender = self.sender;
        sender.ready().await.ok().map(|()| sender)
    }
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

/// Opens a TCP connection as `connect` does, then writes `header` (a PROXY header) on
/// it before any other byte.
pub async fn connect_sending(
    addr: SocketAddr,
    timeout: Duration,
    header: Option<&[u8]>,
) -> Result<TcpStream, ProxyError> {
    let mut stream = connect(addr, timeout).await?;
    if let Some(header) = header {
        stream
            .write_all(header)
            .await
            .map_err(|source| ProxyError::Connect { addr, source })?;
    }
    Ok(stream)
}

/// An HTTP/1.1 connection to `addr` ready for a request, taken from `pool` or opened,
/// and whether it was reused.
pub async fn checkout(
    pool: &Pool,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(SendRequest<RequestBody>, bool), ProxyError> {
    if let Some(sender) = pool.take().await {
        return Ok((sender, true));
    }
    Ok((open(addr, timeout, None).await?, false))
}

/// Opens an HTTP/1.1 connection to `addr`, starting with `header` when given.
async fn open(
    addr: SocketAddr,
    timeout: Duration,
    header: Option<&[u8]>,
) -> Result<SendRequest<RequestBody>, ProxyError> {
    let stream = connect_sending(addr, timeout, header).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Server { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(server = %addr, error = %e, "server connection ended");
        }
    });
    Ok(sender)
}
