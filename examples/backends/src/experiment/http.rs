//! A minimal HTTP/1.1 client for the experiments: keep-alive GETs, one request at a time.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest response body read; the chat page and `/history` stay far below it.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// One keep-alive connection.
pub struct HttpConn {
    stream: BufReader<TcpStream>,
    addr: SocketAddr,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<HttpConn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream: BufReader::new(stream),
            addr,
        })
    }

    /// Sends `method path` and reads the whole answer. After an error the connection
    /// must be dropped.
    pub async fn request(&mut self, method: &str, path: &str) -> anyhow::Result<Reply> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.addr
        );
        self.stream.get_mut().write_all(head.as_bytes()).await?;
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            bail!("connection closed before the status line");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("connection closed in the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.parse::<usize>().context("bad content-length")?);
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        let body = if chunked {
            self.read_chunked().await?
        } else {
            let length = length.unwrap_or(0);
            if length > MAX_BODY {
                bail!("body of {length} bytes is too long");
            }
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await?;
            body
        };
        Ok(Reply { status, body })
    }

    async fn read_chunked(&mut self) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .context("bad chunk size")?;
            if body.len() + size > MAX_BODY {
                bail!("chunked body is too long");
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            line.clear();
            self.stream.read_line(&mut line).await?;
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

/// One request on a fresh connection, with a timeout on the whole exchange.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<Reply> {
    tokio::time::timeout(timeout, async {
        let mut conn = HttpConn::connect(addr, timeout).await?;
        conn.request("GET", path).await
    })
    .await
    .with_context(|| format!("GET {path} on {addr} timed out"))?
}

/// Like [`get`] with any method.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Reply> {
    tokio::time::timeout(timeout, async {
        let mut conn = HttpConn::connect(addr, timeout).await?;
        conn.request(method, path).await
    })
    .await
    .with_context(|| format!("{method} {path} on {addr} timed out"))?
}
