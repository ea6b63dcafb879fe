//! Helpers shared by the integration tests: in-process chat servers, HTTP and WebSocket clients.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use rlb_demo::{ChatOptions, Mode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

/// A chat server started in-process on a port-0 listener.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .context("chat server did not stop")??
    }
}

/// Shows the chat servers' logs in test output when `RUST_LOG` is set.
pub fn logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn start_chat(name: &str, mode: Mode) -> anyhow::Result<Running> {
    logging();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut options = ChatOptions::new(name, mode);
    options.shutdown_timeout = Duration::from_secs(3);
    let handle = tokio::spawn(rlb_demo::run_chat_server(
        listener,
        options,
        shutdown.clone(),
    ));
    Ok(Running {
        addr,
        shutdown,
        handle,
    })
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await??;
    let raw = String::from_utf8(raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_owned()))
}

pub async fn history(addr: SocketAddr, room: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    let (status, body) = http(addr, "GET", &format!("/history?room={room}&limit={limit}")).await?;
    if status != 200 {
        bail!("history answered {status}: {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Polls `check` until it returns Ok or `WAIT` passes; returns the last error otherwise.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e.context(format!("timed out waiting for {what}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await?;
        Ok(Self { ws })
    }

    /// Connects and joins; returns once the `joined` ack arrived.
    pub async fn join(addr: SocketAddr, room: &str, user: &str) -> anyhow::Result<Self> {
        let mut c = Self::connect(addr).await?;
        c.send(json!({"type": "join", "room": room, "user": user}))
            .await?;
        let ack = c.next_of("joined").await?;
        if ack["room"] != room || ack["user"] != user {
            bail!("unexpected ack {ack}");
        }
        Ok(c)
    }

    pub async fn send(&mut self, frame: Value) -> anyhow::Result<()> {
        self.ws.send(Message::text(frame.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn say(&mut self, text: &str, id: &str) -> anyhow::Result<()> {
        self.send(json!({"type": "msg", "text": text, "id": id}))
            .await
    }

    /// The next JSON frame, waiting at most `within`.
    pub async fn next_within(&mut self, within: Duration) -> anyhow::Result<Value> {
        loop {
            let m = tokio::time::timeout(within, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {within:?}"))?
                .ok_or_else(|| anyhow!("websocket closed"))??;
            match m {
                Message::Text(t) => return Ok(serde_json::from_str(&t)?),
                Message::Close(c) => bail!("websocket closed: {c:?}"),
                _ => continue,
            }
        }
    }

    pub async fn next(&mut self) -> anyhow::Result<Value> {
        self.next_within(WAIT).await
    }

    /// Skips frames until one of type `kind` arrives.
    pub async fn next_of(&mut self, kind: &str) -> anyhow::Result<Value> {
        loop {
            let f = self.next().await?;
            if f["type"] == kind {
                return Ok(f);
            }
        }
    }

    /// The next `msg` frame carrying message `id`, skipping others.
    pub async fn msg_with_id(&mut self, id: &str) -> anyhow::Result<Value> {
        loop {
            let f = self.next_of("msg").await?;
            if f["id"] == id {
                return Ok(f);
            }
        }
    }

    /// Waits for the close frame (or the end of the stream).
    pub async fn closed(&mut self) -> anyhow::Result<Option<u16>> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await? {
                None | Some(Err(_)) => return Ok(None),
                Some(Ok(Message::Close(c))) => return Ok(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// A SQLite path under the temp dir, unique to this test, removed (with its WAL files)
/// when dropped, even if the test fails.
pub struct TempDb(pub std::path::PathBuf);

impl TempDb {
    pub fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "rlb-demo-test-{tag}-{}-{}.sqlite",
            std::process::id(),
            rlb_demo::protocol::now_millis()
        )))
    }

    pub fn mode(&self) -> Mode {
        Mode::embedded(&self.0)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}
