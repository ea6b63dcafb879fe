//! The body rlb answers with: a server's response streamed back (which returns its
//! connection to the pool when it ends), or a short one of rlb's own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::access_log::AccessLog;
use crate::config::ProxyVersion;
use crate::connect::RequestBody;
use crate::connect::private::Private;
use crate::server::Active;

/// The body rlb answers with: a server's streamed body, or a short one of its own.
pub type ProxyBody = Either<ServerBody, Full<Bytes>>;

/// Where a server connection goes once its response is read in full.
pub enum Home {
    /// The server's idle pool, for any client.
    Shared,
    /// This client connection's own: it carried the client's PROXY header.
    Private(Arc<Private>, ProxyVersion),
}

/// A server's response body on its way to the client. When it ends, the connection
/// goes back to its home; the server's active count drops with it.
pub struct ServerBody {
    inner: Incoming,
    done: bool,
    connection: Option<(SendRequest<RequestBody>, Active)>,
    home: Home,
    log: Option<Box<AccessLog>>,
}

impl ServerBody {
    pub fn new(
        inner: Incoming,
        connection: (SendRequest<RequestBody>, Active),
        home: Home,
        log: Option<Box<AccessLog>>,
    ) -> ServerBody {
        let done = inner.is_end_stream();
        ServerBody {
            inner,
            done,
            connection: Some(connection),
            home,
            log,
        }
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(log), Some(data)) = (this.log.as_mut(), f.data_ref()) {
                    log.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => this.connection = None,
            None => this.done = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ServerBody {
    fn drop(&mut self) {
        if let Some((sender, active)) = self.connection.take()
            && (self.done || self.inner.is_end_stream())
        {
            let server = active.server();
            match &self.home {
                Home::Shared => server.checkin(sender),
                Home::Private(private, version) if server.is_up() => {
                    private.put((server.addr, *version), sender);
                }
                Home::Private(..) => {}
            }
        }
        if let Some(log) = self.log.take() {
            log.write();
        }
    }
}
