//! The copy loop shared by tcp sessions and upgraded http tunnels: both directions in
//! one future, half-close passed on, an idle timeout over both directions.
//!
//! Written by hand rather than `tokio::io::copy_bidirectional` because that has no idle
//! timeout and no way to tell which side closed first; wrapping each read in a timeout
//! would cut a download whose other direction is silent.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Bytes per direction, as nginx's stream `proxy_buffer_size`.
const BUFFER: usize = 16 * 1024;

/// How a copy ended, with the bytes moved each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Client side to server side.
    pub up: u64,
    /// Server side to client side.
    pub down: u64,
    pub end: End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their write halves.
    Closed,
    /// Neither side sent a byte for the idle timeout.
    Idle,
    /// A read or write failed (reset, broken pipe).
    Error(io::ErrorKind),
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle timeout",
            End::Error(_) => "error",
        }
    }
}

/// Copies between `client` and `server` until both directions are closed, one fails,
/// or nothing moves for `idle`. A FIN from one side shuts the write half of the other
/// while the opposite direction keeps flowing.
pub async fn copy_both_ways<C, S>(client: C, server: S, idle: Duration) -> Totals
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    Splice {
        client,
        server,
        up: Direction::new(),
        down: Direction::new(),
        idle,
        last_activity: Instant::now(),
        timer: Box::pin(tokio::time::sleep(idle)),
    }
    .await
}

struct Splice<C, S> {
    client: C,
    server: S,
    up: Direction,
    down: Direction,
    idle: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
}

impl<C, S> Future for Splice<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Totals;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Totals> {
        let this = self.get_mut();
        let mut moved = false;
        let up = this
            .up
            .poll(cx, &mut this.client, &mut this.server, &mut moved);
        let down = this
            .down
            .poll(cx, &mut this.server, &mut this.client, &mut moved);
        let totals = |end| Totals {
            up: this.up.amount,
            down: this.down.amount,
            end,
        };
        match (up, down) {
            (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => {
                return Poll::Ready(totals(End::Error(e.kind())));
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(totals(End::Closed)),
            _ => {}
        }
        if moved {
            // Only note the time; the timer is re-armed when it fires, not on every read.
            this.last_activity = Instant::now();
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = this.last_activity + this.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(totals(End::Idle));
            }
            this.timer.as_mut().reset(deadline);
        }
    }
}

/// One direction: read into the buffer, write it all out, repeat; on EOF shut the
/// writer down.
struct Direction {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    amount: u64,
    read_done: bool,
    need_flush: bool,
    shut_down: bool,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            cap: 0,
            amount: 0,
            read_done: false,
            need_flush: false,
            shut_down: false,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        moved: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.shut_down {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                let mut buf = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            *moved = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if self.need_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.pos < self.cap {
                let n =
                    ready!(Pin::new(&mut *writer).poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.amount += n as u64;
                self.need_flush = true;
                *moved = true;
            }
            if self.read_done {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.shut_down = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close() {
        let (client, mut client_far) = duplex(64);
        let (server, mut server_far) = duplex(64);
        let task = tokio::spawn(copy_both_ways(client, server, Duration::from_secs(5)));
        client_far.write_all(b"ping").await.unwrap();
        client_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        // The server still answers after the client's FIN.
        server_far.write_all(b"pong").await.unwrap();
        server_far.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client_far.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"pong");
        let totals = task.await.unwrap();
        assert_eq!((totals.up, totals.down, totals.end), (4, 4, End::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_a_silent_tunnel_but_not_a_busy_one() {
        let (client, mut client_far) = duplex(64);
        let (server, mut server_far) = duplex(64);
        let task = tokio::spawn(copy_both_ways(client, server, Duration::from_secs(10)));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client_far.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server_far.read_exact(&mut one).await.unwrap();
        }
        assert!(!task.is_finished());
        let totals = task.await.unwrap();
        assert_eq!(totals.end, End::Idle);
        assert_eq!(totals.up, 5);
    }
}
