//! Test harness: rlb started in-process on port 0, test servers on real sockets that
//! count their hits, and polling instead of sleeps.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rlb::{Config, Rlb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Starts rlb in-process from TOML text (use `127.0.0.1:0` binds and read the ports
/// back with `rlb.listener_addr(name)`).
pub fn start(toml: &str) -> Rlb {
    let config =
        Config::parse(toml, "test.toml").unwrap_or_else(|e| panic!("bad test config:\n{e}"));
    Rlb::start(config, None).unwrap_or_else(|e| panic!("rlb did not start: {e}"))
}

/// Starts rlb from a file, so that `rlb.reload()` reads it again.
pub fn start_file(path: &std::path::Path) -> Rlb {
    let config = Config::load(path).unwrap_or_else(|e| panic!("bad test config:\n{e}"));
    Rlb::start(config, Some(path.to_path_buf()))
        .unwrap_or_else(|e| panic!("rlb did not start: {e}"))
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rlb-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` every 20 ms until it is true; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_until(what, timeout, check, |ok| *ok).await;
}

/// Polls `read` every 20 ms until `done` holds for what it read, and returns that;
/// panics naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let start = Instant::now();
    loop {
        let value = read().await;
        if done(&value) {
            return value;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type TestBody = BoxBody<Bytes, hyper::Error>;

fn full(text: impl Into<Bytes>) -> TestBody {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An HTTP/1.1 server on a real socket, named, counting its hits. It answers:
/// - `GET /healthz`: 200, or 500 after `set_healthy(false)`;
/// - `/echo`: the request body streamed back;
/// - `/upload`: `N bytes` once the whole request body is read, like a form handler;
/// - `/slow?ms=N`: its name after N ms;
/// - `/headers`: the request headers as `name: value` lines;
/// - `/ws`: a WebSocket echo;
/// - anything else: its name, with an `x-server` header.
///
/// `stop()` closes the listening socket and every open connection, like a killed
/// process; `restart()` binds the same port again.
pub struct TestServer {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Client connections accepted, to see keep-alive reuse.
    connections: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    stop: std::sync::Mutex<CancellationToken>,
}

impl TestServer {
    pub async fn start(name: &str) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test server");
        let addr = listener.local_addr().expect("local addr");
        let server = TestServer {
            name: name.to_string(),
            addr,
            hits: Arc::default(),
            connections: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
            stop: std::sync::Mutex::new(CancellationToken::new()),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let stop = self.stop.lock().unwrap().clone();
        let (name, hits, healthy) = (self.name.clone(), self.hits.clone(), self.healthy.clone());
        let connections = self.connections.clone();
        tokio::spawn(async move {
            let tracker = TaskTracker::new();
            loop {
                let (stream, _) = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let (name, hits, healthy, stop) =
                    (name.clone(), hits.clone(), healthy.clone(), stop.clone());
                tracker.spawn(async move {
                    let service = service_fn(move |request| {
                        let (name, hits, healthy) = (name.clone(), hits.clone(), healthy.clone());
                        async move { Ok::<_, Infallible>(answer(&name, &hits, &healthy, request).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
    }

    /// Requests answered, health checks excluded.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, health checks included.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Closes the socket and every connection: new connects are refused.
    pub fn stop(&self) {
        self.stop.lock().unwrap().cancel();
    }

    /// Serves again on the same address.
    pub async fn restart(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        *self.stop.lock().unwrap() = CancellationToken::new();
        self.serve(listener);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn answer(
    name: &str,
    hits: &AtomicUsize,
    healthy: &AtomicBool,
    mut request: Request<Incoming>,
) -> Response<TestBody> {
    let path = request.uri().path().to_string();
    if path == "/healthz" {
        let ok = healthy.load(Ordering::SeqCst);
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Response::builder()
            .status(status)
            .body(full(if ok { "ok" } else { "sick" }))
            .unwrap();
    }
    hits.fetch_add(1, Ordering::SeqCst);
    match path.as_str() {
        "/echo" => Response::builder()
            .header("x-server", name)
            .body(request.into_body().boxed())
            .unwrap(),
        "/upload" => {
            let text = match request.into_body().collect().await {
                Ok(body) => format!("{} bytes", body.to_bytes().len()),
                Err(e) => format!("body failed: {e}"),
            };
            Response::builder()
                .header("x-server", name)
                .body(full(text))
                .unwrap()
        }
        "/slow" => {
            let ms: u64 = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::builder()
                .header("x-server", name)
                .body(full(name.to_string()))
                .unwrap()
        }
        "/headers" => {
            let text: String = request
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
                .collect();
            Response::new(full(text))
        }
        "/ws" => {
            let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
                return Response::builder()
                    .status(400)
                    .body(full("not a websocket request"))
                    .unwrap();
            };
            let on_upgrade = hyper::upgrade::on(&mut request);
            let name = name.to_string();
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                let mut ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(message)) = ws.next().await {
                    let reply = match message {
                        Message::Text(t) if t.as_str() == "whoami" => Message::text(name.clone()),
                        Message::Text(_) | Message::Binary(_) => message,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "websocket")
                .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
                .body(full(""))
                .unwrap()
        }
        _ => Response::builder()
            .header("x-server", name)
            .body(full(name.to_string()))
            .unwrap(),
    }
}

/// A tcp echo server on a real socket: every connection gets its bytes back, and a
/// FIN from the client is answered with the echo of everything, then a FIN.
pub async fn tcp_echo_server() -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, stop)
}

/// A server that reads each request head, counts it, and closes the connection
/// without answering: a server that dies mid-request. Returns its address and count.
pub async fn dying_server() -> (SocketAddr, Arc<AtomicUsize>, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind dying");
    let addr = listener.local_addr().unwrap();
    let (requests, stop) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
    let (count, token) = (requests.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            };
            let count = count.clone();
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, requests, stop)
}

/// Writes `request` on a fresh connection and reads until the other side closes.
/// Reads from `stream` until a request head has ended (a blank line); false when the
/// client went away first.
pub async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("the connection was not closed")
        .expect("read response");
    String::from_utf8_lossy(&response).into_owned()
}

/// A free loopback port (bound, read back, closed): for a server that is not there.
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Whether a tcp connect to `addr` is refused now.
pub async fn refused(addr: SocketAddr) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// A keep-alive HTTP client (reqwest, no TLS, no proxy from the environment).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Sends `request`: status and body text; panics naming `what` when nothing answers.
pub async fn call(request: reqwest::RequestBuilder, what: &str) -> (u16, String) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// `GET http://addr/path`: status and body text.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    call(
        client().get(format!("http://{addr}{path}")),
        "GET through rlb",
    )
    .await
}

/// Opens a WebSocket to `ws://addr/ws` (tokio-tungstenite client).
pub async fn websocket(
    addr: SocketAddr,
) -> WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let (ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("websocket through rlb");
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `text` and returns the text that comes back.
pub async fn ws_roundtrip<S>(ws: &mut WebSocketStream<S>, text: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text.to_string()))
        .await
        .expect("ws send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("websocket closed: {other:?}"),
        }
    }
}

/// The active connection count of `server` in `upstream`, as `/status` shows it.
pub fn active(rlb: &Rlb, upstream: &str, server: SocketAddr) -> usize {
    let status = rlb.status();
    let servers = status["upstreams"][upstream]["servers"]
        .as_array()
        .expect("upstream");
    servers
        .iter()
        .find(|s| s["addr"] == server.to_string())
        .and_then(|s| s["active_connections"].as_u64())
        .expect("server") as usize
}
