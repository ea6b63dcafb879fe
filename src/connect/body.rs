//! The request body rlb sends a server: the client's stream, telling the response
//! timer of its progress, or nothing (which lets a bodiless request be sent again).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use tokio::sync::watch;

/// What a pooled server connection carries as request bodies.
pub type RequestBody = Either<ClientBody, Empty<Bytes>>;

/// A client's request body on its way to a server, telling whoever holds the
/// receiver of each frame sent and, by dropping `progress`, of its end.
pub struct ClientBody {
    inner: Incoming,
    progress: Option<watch::Sender<()>>,
}

impl ClientBody {
    /// The body and the receiver that sees its progress.
    pub fn new(inner: Incoming) -> (ClientBody, watch::Receiver<()>) {
        let (sender, progress) = watch::channel(());
        let body = ClientBody {
            inner,
            progress: Some(sender),
        };
        (body, progress)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match (&frame, &this.progress) {
            (Some(Ok(_)), Some(progress)) if !this.inner.is_end_stream() => {
                progress.send_replace(());
            }
            _ => this.progress = None,
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
