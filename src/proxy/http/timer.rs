//! The head and keep-alive timers of one HTTP/1 client connection, as a wrapper around
//! its socket, and the check that the request line alone fits.
//!
//! hyper has one `header_read_timeout`, which also runs while a keep-alive connection
//! idles and on expiry closes without a response (its `on_error` answers only parse
//! errors). This wrapper tells the phases apart: the connection's first head (timed
//! from accept), idle since the last response (`keepalive_timeout`), a head begun (its
//! first byte read; `header_timeout`), a request in flight or a tunnel (no timer). The
//! timer is reset when the phase changes, not per read. On expiry a begun head gets
//! rlb's fixed 408 and the connection closes; an idle one just closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::error::raw_response;
use crate::error::ProxyError;

/// Where one client connection is: written by the service (a request begins and
/// ends) and by the wrapper (a head begins, a timer ran out).
pub struct Phase(AtomicU8);

/// Accepted, no byte read yet: the first head is timed from the accept.
const FIRST: u8 = 0;
/// The last response is done; no byte of the next head yet.
const IDLE: u8 = 1;
/// A head has begun and is not complete.
const HEAD: u8 = 2;
/// A request is in flight: the service has it.
const BUSY: u8 = 3;
/// Upgraded: the bytes are a tunnel's.
const TUNNEL: u8 = 4;
/// The head timer ran out: the client got a 408 (or, before any byte, nothing).
const TIMED_OUT: u8 = 5;
/// The request line was over the limit: the client got a 414.
const LINE_TOO_LONG: u8 = 6;

impl Default for Phase {
    fn default() -> Phase {
        Phase(AtomicU8::new(FIRST))
    }
}

impl Phase {
    /// The service has a request.
    pub fn busy(&self) {
        self.0.store(BUSY, Ordering::Relaxed);
    }

    /// The response is done (a tunnel stays a tunnel).
    pub fn idle(&self) {
        let _ = self
            .0
            .compare_exchange(BUSY, IDLE, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The connection became a tunnel: no timer from now on.
    pub fn tunnel(&self) {
        self.0.store(TUNNEL, Ordering::Relaxed);
    }

    /// The refusal the wrapper answered on its own, if any, to be counted.
    pub fn refusal(&self, header_timeout: Duration, max_line: usize) -> Option<ProxyError> {
        match self.0.load(Ordering::Relaxed) {
            TIMED_OUT => Some(ProxyError::HeaderTimeout {
                timeout: header_timeout,
            }),
            LINE_TOO_LONG => Some(ProxyError::UriTooLong { limit: max_line }),
            _ => None,
        }
    }

    fn load(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client socket with the head and keep-alive timers; `P` owns the [`Phase`].
pub struct Timed<S, P> {
    inner: S,
    owner: Arc<P>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    /// The longest request line (method, URI, version): beyond it, 414.
    max_line: usize,
    /// The phase the timer is set for.
    armed: u8,
    sleep: Pin<Box<Sleep>>,
    /// Bytes of the current request line read so far; `None` once its end was seen.
    line: Option<usize>,
    /// hyper wrote and has not flushed: a 408 now would land inside its bytes.
    dirty: bool,
    /// rlb's own answer being written, and how much of it went out.
    answer: Option<(Vec<u8>, usize)>,
}

impl<S, P: AsRef<Phase>> Timed<S, P> {
    pub fn new(
        inner: S,
        owner: Arc<P>,
        (header_timeout, keepalive_timeout): (Duration, Duration),
        max_line: usize,
    ) -> Timed<S, P> {
        Timed {
            inner,
            owner,
            header_timeout,
            keepalive_timeout,
            max_line,
            armed: FIRST,
            sleep: Box::pin(tokio::time::sleep(header_timeout)),
            line: Some(0),
            dirty: false,
            answer: None,
        }
    }

    fn phase(&self) -> &Phase {
        (*self.owner).as_ref()
    }

    /// Follows the phase the service set; a new phase resets the timer once.
    fn rearm(&mut self, phase: u8) {
        if phase == self.armed {
            return;
        }
        let now = Instant::now();
        match phase {
            IDLE => self.sleep.as_mut().reset(now + self.keepalive_timeout),
            // The first head keeps the deadline of its accept.
            HEAD if self.armed != FIRST => self.sleep.as_mut().reset(now + self.header_timeout),
            _ => {}
        }
        self.armed = phase;
    }

    /// Bytes `fresh` of a head arrived: the head begins, and the request line must fit.
    fn head_bytes(&mut self, fresh: &[u8]) -> bool {
        let phase = self.phase().load();
        if phase == FIRST || phase == IDLE {
            self.phase().0.store(HEAD, Ordering::Relaxed);
            self.rearm(HEAD);
            self.line = Some(0);
        } else if phase != HEAD {
            return true;
        }
        let Some(so_far) = self.line else {
            return true;
        };
        let length = match fresh.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.line = None;
                so_far + end
            }
            None => {
                self.line = Some(so_far + fresh.len());
                so_far + fresh.len()
            }
        };
        length <= self.max_line
    }

    /// Ends the connection with rlb's `error` answer (or with nothing when hyper has
    /// unflushed bytes), recording `outcome` for the count.
    fn refuse(&mut self, outcome: u8, error: Option<ProxyError>) {
        self.phase().0.store(outcome, Ordering::Relaxed);
        let bytes = match error {
            Some(error) if !self.dirty => raw_response(&error),
            _ => Vec::new(),
        };
        self.answer = Some((bytes, 0));
    }
}

impl<S: AsyncWrite + Unpin, P> Timed<S, P> {
    /// Writes the answer, closes the write side, and reports the end of input.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((bytes, written)) = self.answer.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while *written < bytes.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..])) {
                Ok(0) | Err(_) => break,
                Ok(n) => *written += n,
            }
        }
        *written = bytes.len();
        let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin, P: AsRef<Phase>> AsyncRead for Timed<S, P> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.answer.is_some() {
            return this.poll_answer(cx);
        }
        let phase = this.phase().load();
        this.rearm(phase);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.head_bytes(&buf.filled()[before..]) {
                    // hyper never sees the oversized line.
                    buf.set_filled(before);
                    let limit = this.max_line;
                    this.refuse(LINE_TOO_LONG, Some(ProxyError::UriTooLong { limit }));
                    return this.poll_answer(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if matches!(phase, FIRST | IDLE | HEAD) && this.sleep.as_mut().poll(cx).is_ready() {
                    match phase {
                        IDLE => this.answer = Some((Vec::new(), 0)),
                        FIRST => this.refuse(TIMED_OUT, None),
                        _ => {
                            let timeout = this.header_timeout;
                            this.refuse(TIMED_OUT, Some(ProxyError::HeaderTimeout { timeout }));
                        }
                    }
                    return this.poll_answer(cx);
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin, P: AsRef<Phase>> AsyncWrite for Timed<S, P> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.dirty = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.dirty = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        if flushed.is_ok() {
            self.dirty = false;
        }
        // A response just ended: hyper's read may be parked since the request (its
        // EOF watch), so the keep-alive timer is armed here, on the same task, or
        // nothing would wake the connection when it runs out.
        let phase = self.phase().load();
        if phase == IDLE && self.armed != IDLE {
            self.rearm(IDLE);
            let _ = self.sleep.as_mut().poll(cx);
        }
        Poll::Ready(flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that tells the connection's [`Phase`] when it is done (dropped by
/// hyper once written), so the keep-alive timer starts then.
pub struct Finished<B, P: AsRef<Phase>> {
    pub body: B,
    pub owner: Arc<P>,
}

impl<B: Body<Data = Bytes> + Unpin, P: AsRef<Phase>> Body for Finished<B, P> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B, P: AsRef<Phase>> Drop for Finished<B, P> {
    fn drop(&mut self) {
        (*self.owner).as_ref().idle();
    }
}
