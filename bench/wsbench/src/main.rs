//! Load tools for `bench/run.sh`: a WebSocket echo server, a WebSocket echo client that
//! counts round trips, and a holder of many idle keep-alive HTTP connections.
//!
//! Everything runs on one thread (the harness pins each tool to one core) and prints its
//! result as one JSON line on stdout, so the shell side needs no parser beyond python's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::{Bytes, Message};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WebSocket echo server: every text or binary message is sent back unchanged.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9300")]
        listen: SocketAddr,
    },
    /// Opens N WebSocket connections; each sends a message and waits for its echo, in a
    /// loop, for the given duration. Prints messages/s and round-trip percentiles.
    Client {
        /// ws:// URL of the echo server or of the proxy in front of it.
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds of measurement, counted from the moment every connection is open.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Payload size in bytes.
        #[arg(long, default_value_t = 32)]
        size: usize,
    },
    /// Opens N TCP connections, sends one keep-alive `GET` on each and reads the whole
    /// response, then keeps them all open and idle. Prints `ready ...` once every
    /// connection is set up, idles, then prints a JSON summary and exits.
    Hold {
        /// host:port of the HTTP server or of the proxy in front of it.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 5000)]
        connections: usize,
        /// Seconds to keep the connections open after the last one is set up.
        #[arg(long, default_value_t = 10.0)]
        idle: f64,
        /// Connections being set up at the same time (keeps accept backlogs from overflowing).
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        #[arg(long, default_value = "/")]
        path: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Server { listen } => server(listen).await,
            Command::Client {
                url,
                connections,
                duration,
                size,
            } => client(&url, connections, Duration::from_secs_f64(duration), size).await,
            Command::Hold {
                addr,
                connections,
                idle,
                concurrency,
                path,
            } => {
                hold(
                    addr,
                    connections,
                    Duration::from_secs_f64(idle),
                    concurrency,
                    &path,
                )
                .await
            }
        }
    })
}

async fn server(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("wsbench server listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            while let Some(Ok(msg)) = ws.next().await {
                match msg {
                    Message::Text(_) | Message::Binary(_) => {}
                    Message::Close(_) => break,
                    _ => continue,
                }
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            let _ = ws.close(None).await;
        });
    }
}

/// What one client connection did.
#[derive(Default)]
struct ConnReport {
    messages: u64,
    latencies_us: Vec<u32>,
    error: Option<String>,
}

async fn client(url: &str, connections: usize, duration: Duration, size: usize) -> Result<()> {
    let authority = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if connections == 0 {
        bail!("--connections must be at least 1");
    }
    let payload = Bytes::from(vec![b'x'; size]);
    let barrier = Arc::new(Barrier::new(connections + 1));
    let start_at = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (url, authority, payload) = (url.to_owned(), authority.clone(), payload.clone());
        let (barrier, start_at) = (barrier.clone(), start_at.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = ConnReport::default();
            let connected = tokio::time::timeout(Duration::from_secs(10), async {
                let tcp = TcpStream::connect(&authority).await?;
                tcp.set_nodelay(true)?;
                let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp).await?;
                anyhow::Ok(ws)
            })
            .await;
            barrier.wait().await;
            let mut ws = match connected {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    report.error = Some(format!("connect: {e}"));
                    return report;
                }
                Err(_) => {
                    report.error = Some("connect: timed out".into());
                    return report;
                }
            };
            let deadline = *start_at
                .get()
                .expect("start time is set before the barrier opens")
                + duration;
            report.latencies_us.reserve(1 << 14);
            'outer: loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                if let Err(e) = ws.send(Message::Binary(payload.clone())).await {
                    report.error = Some(format!("send: {e}"));
                    break;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                        Ok(Some(Ok(Message::Binary(_) | Message::Text(_)))) => break,
                        Ok(Some(Ok(Message::Close(_)))) | Ok(None) => {
                            report.error = Some("closed by the server side".into());
                            break 'outer;
                        }
                        Ok(Some(Ok(_))) => continue,
                        Ok(Some(Err(e))) => {
                            report.error = Some(format!("receive: {e}"));
                            break 'outer;
                        }
                        Err(_) => {
                            report.error = Some("no echo within 5s".into());
                            break 'outer;
                        }
                    }
                }
                let done = Instant::now();
                if done <= deadline {
                    report.messages += 1;
                    let us = done.duration_since(sent).as_micros();
                    report
                        .latencies_us
                        .push(u32::try_from(us).unwrap_or(u32::MAX));
                }
            }
            let _ = ws.close(None).await;
            report
        }));
    }
    // Every connection has tried to open before the clock starts.
    start_at.set(Instant::now() + Duration::from_millis(1)).ok();
    barrier.wait().await;

    let mut messages = 0u64;
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    let mut first_error = None;
    for task in tasks {
        let report = task.await.context("client task panicked")?;
        messages += report.messages;
        latencies.extend_from_slice(&report.latencies_us);
        if let Some(e) = report.error {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    latencies.sort_unstable();
    let secs = duration.as_secs_f64();
    println!(
        "{{\"connections\":{connections},\"messages\":{messages},\"seconds\":{secs},\
         \"msgs_per_sec\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"errors\":{errors},\
         \"first_error\":{}}}",
        messages as f64 / secs,
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        json_string(first_error.as_deref()),
    );
    if messages == 0 {
        bail!("no message was echoed: {}", first_error.unwrap_or_default());
    }
    Ok(())
}

fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[idx]) / 1000.0
}

fn json_string(s: Option<&str>) -> String {
    match s {
        None => "null".into(),
        Some(s) => {
            let escaped: String = s
                .chars()
                .map(|c| match c {
                    '"' | '\\' => format!("\\{c}"),
                    c if c.is_control() => " ".into(),
                    c => c.to_string(),
                })
                .collect();
            format!("\"{escaped}\"")
        }
    }
}

async fn hold(
    addr: SocketAddr,
    connections: usize,
    idle: Duration,
    concurrency: usize,
    path: &str,
) -> Result<()> {
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: wsbench-hold\r\n\r\n"
    ));
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (request, gate) = (request.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            tokio::time::timeout(Duration::from_secs(15), one_request(addr, &request))
                .await
                .context("timed out")?
        }));
    }
    let mut held = Vec::with_capacity(connections);
    let mut failed = 0usize;
    let mut first_error = None;
    for task in tasks {
        match task.await.context("hold task panicked")? {
            Ok(stream) => held.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let setup = started.elapsed().as_secs_f64();
    println!("ready ok={} failed={failed} setup_s={setup:.2}", held.len());
    tokio::time::sleep(idle).await;
    // A connection the server side closed while idle reads EOF at once.
    let mut closed_while_idle = 0usize;
    for stream in &held {
        let mut byte = [0u8; 1];
        match stream.try_read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(n) if n > 0 => {}
            _ => closed_while_idle += 1,
        }
    }
    println!(
        "{{\"ok\":{},\"failed\":{failed},\"closed_while_idle\":{closed_while_idle},\
         \"setup_s\":{setup:.2},\"first_error\":{}}}",
        held.len(),
        json_string(first_error.as_deref()),
    );
    Ok(())
}

/// Connects, sends one request and reads the whole response, leaving the connection open.
async fn one_request(addr: SocketAddr, request: &str) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    stream
        .write_all(request.as_bytes())
        .await
        .context("write")?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.context("read")?;
        if n == 0 {
            bail!("closed before the response headers");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 64 * 1024 {
            bail!("response headers too long");
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    if !status.starts_with('2') {
        bail!("status {status}");
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse())
        .transpose()
        .context("bad content-length")?
        .context("no content-length (the holder needs a sized keep-alive response)")?;
    let mut have = buf.len() - header_end;
    while have < length {
        let n = stream.read(&mut chunk).await.context("read body")?;
        if n == 0 {
            bail!("closed inside the body");
        }
        have += n;
    }
    Ok(stream)
}
