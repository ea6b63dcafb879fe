//! Server connections private to one client connection: they started with that
//! client's PROXY header, so no other client may be sent over them. They wait in the
//! client connection's own state for its next request, never in the server's shared
//! idle `Pool` (HAProxy keeps such connections with the session the same way).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;

use super::{Idle, RequestBody, open};
use crate::config::ProxyVersion;
use crate::error::ProxyError;

/// How many idle private connections one client connection keeps (one per server it
/// used last); HAProxy's `max-session-srv-conns` default.
const PER_CLIENT: usize = 10;

/// Which connection may serve a request: the same server, the same header version (two
/// upstreams may list one address with different versions).
type Key = (SocketAddr, ProxyVersion);

/// One client connection's idle private server connections. Its requests come one at
/// a time (HTTP/1.1), so the lock is never contended; it is held for a push or a
/// removal, never across an await.
#[derive(Default)]
pub struct Private(Mutex<Vec<(Key, Idle)>>);

impl Private {
    /// An idle private connection to `addr`, or a new one that first sends the header
    /// `header` makes; and whether it was reused.
    pub async fn checkout(
        &self,
        (addr, version): Key,
        timeout: Duration,
        header: impl FnOnce() -> Vec<u8>,
    ) -> Result<(SendRequest<RequestBody>, bool), ProxyError> {
        while let Some(idle) = self.take((addr, version)) {
            if let Some(sender) = idle.usable().await {
                return Ok((sender, true));
            }
        }
        let header = header();
        Ok((open(addr, timeout, Some(&header)).await?, false))
    }

    /// Keeps a connection whose response was read in full for this client's next
    /// request; the oldest goes when there are too many.
    pub fn put(&self, key: Key, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= PER_CLIENT {
            idle.remove(0);
        }
        idle.push((
            key,
            Idle {
                sender,
                since: Instant::now(),
            },
        ));
    }

    fn take(&self, key: Key) -> Option<Idle> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = idle.iter().rposition(|(k, _)| *k == key)?;
        Some(idle.remove(at).1)
    }
}
