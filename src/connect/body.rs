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
/// receiver of each frame sent and, by dropping `progress`, of its end; cut with
/// [`BodyTooLarge`] past `max_body_size` (a chunked body is counted as it streams).
pub struct ClientBody {
    inner: Incoming,
    progress: Option<watch::Sender<()>>,
    /// Bytes that may still come (`u64::MAX` without a limit).
    left: u64,
    limit: u64,
}

/// Why a request body was cut: it went over `max_body_size`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is over {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

impl ClientBody {
    /// The body and the receiver that sees its progress.
    pub fn new(inner: Incoming, limit: Option<u64>) -> (ClientBody, watch::Receiver<()>) {
        let (sender, progress) = watch::channel(());
        let limit = limit.unwrap_or(u64::MAX);
        let body = ClientBody {
            inner,
            progress: Some(sender),
            left: limit,
            limit,
        };
        (body, progress)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let size = data.map_or(0, |d| d.len() as u64);
            match this.left.checked_sub(size) {
                Some(left) => this.left = left,
                None => {
                    this.progress = None;
                    let limit = this.limit;
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                }
            }
        }
        match (&frame, &this.progress) {
            (Some(Ok(_)), Some(progress)) if !this.inner.is_end_stream() => {
                progress.send_replace(());
            }
            _ => this.progress = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
