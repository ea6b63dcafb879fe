//! The tcp message processor example: newline-delimited messages in, one reply line per
//! message out (`SEQ NAME MESSAGE-UPPERCASED`), and a stress client that checks every reply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

/// Longest message accepted; a longer line gets `ERR line too long` and the connection closes.
pub const MAX_LINE: usize = 64 * 1024;
/// Messages a stress connection may have sent without a reply yet.
const WINDOW: usize = 512;

/// The reply to the `seq`-th message (1-based, per connection).
pub fn reply(seq: u64, name: &str, message: &str) -> String {
    format!("{seq} {name} {}", message.to_uppercase())
}

/// Serves connections on `listener` until `shutdown`; open connections finish their
/// current line and close.
pub async fn serve(
    listener: TcpListener,
    name: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name: Arc<str> = name.into();
    let tracker = TaskTracker::new();
    info!(server = %name, addr = %listener.local_addr()?, "msg-processor listening");
    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let name = name.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(
            async move {
                if let Err(e) = connection(stream, &name, shutdown).await {
                    tracing::debug!(error = %e, "connection ended");
                }
            }
            .instrument(tracing::debug_span!("connection", %client)),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    name: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let mut line = Vec::new();
    let mut seq = 0u64;
    loop {
        line.clear();
        let n = {
            let mut limited = (&mut read).take(MAX_LINE as u64 + 1);
            tokio::select! {
                _ = shutdown.cancelled() => None,
                n = limited.read_until(b'\n', &mut line) => Some(n?),
            }
        };
        if n.is_none_or(|n| n == 0) {
            break;
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
            write.write_all(b"ERR line too long\n").await?;
            break;
        }
        seq += 1;
        let text = String::from_utf8_lossy(&line);
        let mut out = reply(seq, name, text.trim_end_matches(['\n', '\r']));
        out.push('\n');
        write.write_all(out.as_bytes()).await?;
        // Flush once nothing more is waiting: pipelined messages share a write.
        if read.buffer().is_empty() {
            write.flush().await?;
        }
    }
    write.flush().await?;
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// What a stress run saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StressReport {
    pub messages: usize,
    pub connections: usize,
    pub elapsed_s: f64,
    pub replies_ok: usize,
    /// Messages without a reply (connection lost, or the time ran out).
    pub missing: usize,
    /// Replies that did not match their message.
    pub wrong: usize,
    /// Replies per chat server name, as the processors signed them.
    pub by_server: std::collections::BTreeMap<String, usize>,
    pub errors: Vec<String>,
}

impl StressReport {
    pub fn per_second(&self) -> f64 {
        self.replies_ok as f64 / self.elapsed_s.max(1e-9)
    }
}

/// Sends `messages` messages spread over `connections` persistent connections to `addr`,
/// pipelined, and checks every reply; gives up after `timeout`.
pub async fn stress(
    addr: SocketAddr,
    messages: usize,
    connections: usize,
    timeout: Duration,
) -> StressReport {
    let connections = connections.clamp(1, messages.max(1));
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let count = messages / connections + usize::from(c < messages % connections);
        tasks.push(tokio::spawn(stress_connection(addr, c, count, deadline)));
    }
    let mut report = StressReport {
        messages,
        connections,
        elapsed_s: 0.0,
        replies_ok: 0,
        missing: 0,
        wrong: 0,
        by_server: Default::default(),
        errors: Vec::new(),
    };
    for t in tasks {
        match t.await {
            Ok(one) => {
                report.replies_ok += one.ok;
                report.missing += one.missing;
                report.wrong += one.wrong;
                for (k, v) in one.by_server {
                    *report.by_server.entry(k).or_default() += v;
                }
                report.errors.extend(one.error);
            }
            Err(e) => report.errors.push(format!("task: {e}")),
        }
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    report
}

#[derive(Default)]
struct ConnOutcome {
    ok: usize,
    missing: usize,
    wrong: usize,
    by_server: std::collections::BTreeMap<String, usize>,
    error: Option<String>,
}

fn message(conn: usize, i: usize) -> String {
    format!("message {i} on connection {conn}: hello, rlb")
}

async fn stress_connection(
    addr: SocketAddr,
    conn: usize,
    count: usize,
    deadline: tokio::time::Instant,
) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let result = tokio::time::timeout_at(deadline, async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let window = Arc::new(Semaphore::new(WINDOW));
        let sender = {
            let window = window.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(64 * 1024);
                for i in 1..=count {
                    let permit = window.acquire().await?;
                    permit.forget();
                    buf.extend_from_slice(message(conn, i).as_bytes());
                    buf.push(b'\n');
                    // Batch what the window allows, then write.
                    if window.available_permits() == 0 || buf.len() > 32 * 1024 || i == count {
                        write.write_all(&buf).await?;
                        buf.clear();
                    }
                }
                write.flush().await?;
                anyhow::Ok(write)
            })
        };
        let mut lines = BufReader::new(read).lines();
        let mut seq = 0usize;
        while seq < count {
            let Some(line) = lines.next_line().await? else {
                anyhow::bail!("connection closed after {seq} of {count} replies");
            };
            seq += 1;
            window.add_permits(1);
            let mut parts = line.splitn(3, ' ');
            let (s, name, text) = (parts.next(), parts.next(), parts.next());
            if s == Some(seq.to_string().as_str())
                && text == Some(message(conn, seq).to_uppercase().as_str())
            {
                out.ok += 1;
                *out.by_server
                    .entry(name.unwrap_or("").to_owned())
                    .or_default() += 1;
            } else {
                out.wrong += 1;
            }
        }
        let _write = sender.await??;
        anyhow::Ok(())
    })
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => out.error = Some(format!("connection {conn}: {e:#}")),
        Err(_) => out.error = Some(format!("connection {conn}: timed out")),
    }
    out.missing = count - out.ok - out.wrong;
    out
}
