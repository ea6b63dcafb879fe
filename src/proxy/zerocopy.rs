//! Zero-copy tcp sessions on Linux: splice(2) from one socket into a pipe and from the
//! pipe into the other socket, so the bytes never enter user space.
//!
//! A pipe is taken from a process-wide pool only while bytes are in flight and given
//! back once it is empty, so an idle session holds no buffer and no pipe: its cost is
//! its two sockets. `copy.rs` stays the portable loop (and the one for upgraded http
//! tunnels, whose first bytes may already sit in hyper's buffer).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{Shutdown, shutdown};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::copy::{End, Totals};

/// The pipe capacity asked for, and so the most one splice call moves. Bigger than
/// Linux's default 64 KiB: a bulk transfer then takes fewer calls. The kernel caps it
/// at `/proc/sys/fs/pipe-max-size` (1 MiB by default); a smaller pipe still works.
const CHUNK: usize = 1024 * 1024;

/// Empty pipes kept for reuse; past this many, a returned pipe is closed.
const POOL_SIZE: usize = 1024;

static POOL: LazyLock<ArrayQueue<Pipe>> = LazyLock::new(|| ArrayQueue::new(POOL_SIZE));

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL.pop() {
            return Ok(pipe);
        }
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
        Ok(Pipe { read, write })
    }

    /// Only an empty pipe may be reused.
    fn give_back(self) {
        let _ = POOL.push(self);
    }
}

/// Copies between two tcp sockets until both directions are closed, one fails, or
/// nothing moves for `idle`; the same contract as [`super::copy::copy_both_ways`].
pub async fn splice_tcp(client: &TcpStream, server: &TcpStream, idle: Duration) -> Totals {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let upward = one_way(client, server, &up, &last, start);
    let downward = one_way(server, client, &down, &last, start);
    tokio::pin!(upward, downward);
    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        tokio::select! {
            result = &mut upward, if !up_done => match result {
                Ok(()) => up_done = true,
                Err(e) => break End::Error(e.kind()),
            },
            result = &mut downward, if !down_done => match result {
                Ok(()) => down_done = true,
                Err(e) => break End::Error(e.kind()),
            },
            _ = idle_for(idle, &last, start) => break End::Idle,
        }
        if up_done && down_done {
            break End::Closed;
        }
    };
    Totals {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        end,
    }
}

/// Resolves once no byte has moved for `idle`.
async fn idle_for(idle: Duration, last: &AtomicU64, start: Instant) {
    loop {
        let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Moves bytes from `from` to `to` until `from` sends its FIN, then shuts down the
/// write half of `to`.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    moved: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        from.readable().await?;
        let pipe = Pipe::take()?;
        let filled = from.try_io(Interest::READABLE, || {
            splice(from, None, &pipe.write, None, CHUNK, flags).map_err(io::Error::from)
        });
        let mut left = match filled {
            Ok(0) => {
                pipe.give_back();
                shutdown(to.as_raw_fd(), Shutdown::Write).or_else(|e| match e {
                    // The other side is gone already: nothing left to tell it.
                    nix::errno::Errno::ENOTCONN => Ok(()),
                    e => Err(io::Error::from(e)),
                })?;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                pipe.give_back();
                continue;
            }
            Err(e) => return Err(e),
        };
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    left -= n;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // A pipe with bytes still in it is dropped, not reused.
                Err(e) => return Err(e),
            }
        }
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        pipe.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn moves_megabytes_both_ways_and_passes_half_close() {
        let (mut client_far, client) = pair().await;
        let (server, mut server_far) = pair().await;
        let task =
            tokio::spawn(
                async move { splice_tcp(&client, &server, Duration::from_secs(10)).await },
            );
        let data: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client_far.write_all(&sent).await.unwrap();
            client_far.shutdown().await.unwrap();
            client_far
        });
        let mut got = Vec::new();
        server_far.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "bytes differ");
        let mut client_far = writer.await.unwrap();
        server_far.write_all(b"reply after FIN").await.unwrap();
        server_far.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client_far.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply after FIN");
        let totals = task.await.unwrap();
        assert_eq!(
            (totals.up, totals.down, totals.end),
            (4 << 20, 15, End::Closed)
        );
    }

    #[tokio::test]
    async fn a_silent_session_ends_by_idle_timeout() {
        let (_client_far, client) = pair().await;
        let (server, _server_far) = pair().await;
        let totals = splice_tcp(&client, &server, Duration::from_millis(200)).await;
        assert_eq!(totals.end, End::Idle);
    }
}
