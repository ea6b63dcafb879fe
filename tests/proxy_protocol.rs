//! The PROXY protocol over real sockets: headers received on tcp and http listeners
//! (trusted and untrusted sources, bad headers closing only their own connection, a
//! header in tiny pieces), and headers sent to servers in tcp and http mode.
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

const V1: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header for 198.51.100.4:6000 -> 127.0.0.1:80 with `tlvs` after the
/// addresses.
fn v2(tlvs: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend([0x21, 0x11]);
    header.extend(((12 + tlvs.len()) as u16).to_be_bytes());
    header.extend([198, 51, 100, 4, 127, 0, 0, 1, 0x17, 0x70, 0, 80]);
    header.extend(tlvs);
    header
}

fn http_config(listener_keys: &str, server: SocketAddr, upstream_keys: &str) -> String {
    format!(
        r#"
[global]
access_log = false
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
{listener_keys}
[upstreams.app]
servers = ["{server}"]
{upstream_keys}
"#
    )
}

fn tcp_config(listener_keys: &str, server: SocketAddr, upstream_keys: &str) -> String {
    format!(
        r#"
[global]
access_log = false
[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "app"
{listener_keys}
[upstreams.app]
servers = ["{server}"]
{upstream_keys}
"#
    )
}

/// Writes `bytes` (in pieces of `piece` bytes, a pause between them) and reads until
/// the other side closes; what came back, empty when the connection was closed or
/// reset without an answer.
async fn exchange(stream: TcpStream, bytes: &[u8], piece: usize) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    for chunk in bytes.chunks(piece) {
        if write.write_all(chunk).await.is_err() {
            break;
        }
        if piece < bytes.len() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut back));
    let _ = read
        .await
        .expect("rlb neither answered nor closed the connection");
    back
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect to rlb")
}

/// A connection from 127.0.0.2, outside `127.0.0.1/32`.
async fn connect_from_127_0_0_2(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    socket.connect(addr).await.expect("connect from 127.0.0.2")
}

const GET_HEADERS: &[u8] = b"GET /headers HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";

/// The `x-forwarded-for` a request with `header` in front of it reaches the server with.
async fn forwarded_for(addr: SocketAddr, header: &[u8], piece: usize) -> String {
    let answer = exchange(connect(addr).await, &[header, GET_HEADERS].concat(), piece).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix("x-forwarded-for: "))
        .unwrap_or_else(|| panic!("no x-forwarded-for in {text}"))
        .to_string()
}

/// A TestServer behind an http listener with `keys`, and the listener's address.
async fn web_behind_a_proxy(keys: &str) -> (TestServer, rlb::Rlb, SocketAddr) {
    let server = TestServer::start("a").await;
    let rlb = start(&http_config(keys, server.addr, ""));
    let addr = rlb.listener_addr("web").unwrap();
    (server, rlb, addr)
}

#[tokio::test]
async fn http_listener_takes_the_client_address_from_v1_and_v2_headers() {
    let (_server, rlb, addr) = web_behind_a_proxy("proxy_protocol = true").await;
    assert_eq!(forwarded_for(addr, V1, usize::MAX).await, "192.0.2.7");
    assert_eq!(
        forwarded_for(addr, &v2(&[]), usize::MAX).await,
        "198.51.100.4"
    );
    // v2 with TLVs rlb does not know (0xE0 custom, 0x04 NOOP), ignored.
    let tlvs = [0xE0, 0, 3, b'a', b'b', b'c', 0x04, 0, 0];
    assert_eq!(
        forwarded_for(addr, &v2(&tlvs), usize::MAX).await,
        "198.51.100.4"
    );
    // LOCAL (a health check from the proxy itself) and UNKNOWN: the socket's address.
    let mut local = v2(&[]);
    local[12] = 0x20;
    assert_eq!(forwarded_for(addr, &local, usize::MAX).await, "127.0.0.1");
    assert_eq!(
        forwarded_for(addr, b"PROXY UNKNOWN\r\n", usize::MAX).await,
        "127.0.0.1"
    );
    rlb.shutdown().await;
}

#[tokio::test]
async fn a_header_split_into_tiny_writes_is_read_whole() {
    let (_server, rlb, addr) = web_behind_a_proxy("proxy_protocol = true").await;
    assert_eq!(forwarded_for(addr, V1, 1).await, "192.0.2.7");
    assert_eq!(
        forwarded_for(addr, &v2(&[0xE0, 0, 1, 7]), 3).await,
        "198.51.100.4"
    );
    rlb.shutdown().await;
}

#[tokio::test]
async fn only_trusted_sources_may_send_a_header() {
    let keys = "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]";
    let (server, rlb, addr) = web_behind_a_proxy(keys).await;
    assert_eq!(forwarded_for(addr, V1, usize::MAX).await, "192.0.2.7");
    let untrusted = connect_from_127_0_0_2(addr).await;
    let answer = exchange(untrusted, &[V1, GET_HEADERS].concat(), usize::MAX).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(server.hits(), 1);
    rlb.shutdown().await;
}

#[tokio::test]
async fn a_bad_header_closes_its_own_connection_only() {
    let (_server, rlb, addr) = web_behind_a_proxy("proxy_protocol = true").await;
    // A keep-alive client in the middle of its session the whole time.
    let mut kept = connect(addr).await;
    kept.write_all(V1).await.unwrap();
    let mut oversized_v2 = v2(&[]);
    oversized_v2[14..16].copy_from_slice(&60000u16.to_be_bytes());
    let bad: [(&str, Vec<u8>); 6] = [
        ("no header", GET_HEADERS.to_vec()),
        (
            "malformed v1",
            b"PROXY TCP4 192.0.2.999 127.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "v1 over 107 bytes",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat(),
        ),
        ("v2 claiming 60000 bytes", oversized_v2),
        ("bad v2 version", {
            let mut h = v2(&[]);
            h[12] = 0x31;
            h
        }),
        ("v2 cut short", v2(&[])[..20].to_vec()),
    ];
    for (what, bytes) in bad {
        let mut stream = connect(addr).await;
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let answer = exchange(stream, b"", 1).await;
        assert!(
            answer.is_empty(),
            "{what}: {}",
            String::from_utf8_lossy(&answer)
        );
        // The others are served all along.
        kept.write_all(b"GET /headers HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut kept).await;
        assert!(
            head.contains("x-forwarded-for: 192.0.2.7"),
            "{what}: {head}"
        );
        assert_eq!(
            forwarded_for(addr, &v2(&[]), usize::MAX).await,
            "198.51.100.4"
        );
    }
    rlb.shutdown().await;
}

/// One keep-alive response (its body delimited by content-length) as text.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("read response");
            assert!(n > 0, "closed mid-response");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return text.into_owned();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no response")
}

#[tokio::test]
async fn tcp_listener_passes_on_exactly_the_bytes_after_the_header() {
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&tcp_config("proxy_protocol = true", echo, ""));
    let addr = rlb.listener_addr("raw").unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for (header, piece) in [(V1.to_vec(), usize::MAX), (v2(&[0xE0, 0, 0]), 7)] {
        let stream = connect(addr).await;
        let sent = [header.as_slice(), &data].concat();
        let back = exchange_half_closed(stream, &sent, piece).await;
        assert_eq!(back.len(), data.len());
        assert!(
            back == data,
            "the echo differs from what followed the header"
        );
    }
    let untrusted = tcp_config(
        "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1\"]",
        echo,
        "",
    );
    let rlb2 = start(&untrusted);
    let addr2 = rlb2.listener_addr("raw").unwrap();
    let back = exchange(
        connect_from_127_0_0_2(addr2).await,
        &[V1, b"hi"].concat(),
        64,
    )
    .await;
    assert!(back.is_empty());
    let back = exchange(connect(addr2).await, b"no header here", 64).await;
    assert!(back.is_empty());
    rlb.shutdown().await;
    rlb2.shutdown().await;
}

/// Like `exchange`, but shuts the write half after sending, as the echo server waits
/// for it.
async fn exchange_half_closed(stream: TcpStream, bytes: &[u8], piece: usize) -> Vec<u8> {
    let (mut read, mut write) = stream.into_split();
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        for (i, chunk) in bytes.chunks(piece).enumerate() {
            write.write_all(chunk).await.expect("write");
            if i < 10 && piece < bytes.len() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        write.shutdown().await.expect("shutdown");
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut back))
        .await
        .expect("echo not finished")
        .expect("read");
    writer.await.unwrap();
    back
}

/// A server that reads the PROXY header each connection starts with and keeps it, then
/// answers each HTTP request on the connection with 200 `ok` (http) or echoes (tcp).
struct HeaderServer {
    addr: SocketAddr,
    headers: Arc<Mutex<Vec<Vec<u8>>>>,
    connections: Arc<AtomicUsize>,
    _stop: tokio_util::sync::DropGuard,
}

impl HeaderServer {
    async fn start(http: bool) -> HeaderServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (headers, connections) = (Arc::default(), Arc::new(AtomicUsize::new(0)));
        let stop = CancellationToken::new();
        let (kept, count, token) = (Arc::clone(&headers), connections.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                count.fetch_add(1, Ordering::SeqCst);
                let kept = Arc::clone(&kept);
                tokio::spawn(serve_one(stream, kept, http));
            }
        });
        HeaderServer {
            addr,
            headers,
            connections,
            _stop: stop.drop_guard(),
        }
    }

    /// The source address of each header received, parsed with `ppp`.
    fn sources(&self) -> Vec<SocketAddr> {
        let headers = self.headers.lock().unwrap();
        headers.iter().map(|h| source_of(h)).collect()
    }
}

fn source_of(header: &[u8]) -> SocketAddr {
    if header.starts_with(V2_SIGNATURE) {
        match ppp::v2::Header::try_from(header)
            .expect("a valid v2 header")
            .addresses
        {
            ppp::v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
            ppp::v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
            other => panic!("addresses {other:?}"),
        }
    } else {
        match ppp::v1::Header::try_from(header)
            .expect("a valid v1 header")
            .addresses
        {
            ppp::v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
            ppp::v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
            other => panic!("addresses {other:?}"),
        }
    }
}

async fn serve_one(mut stream: TcpStream, kept: Arc<Mutex<Vec<Vec<u8>>>>, http: bool) {
    // The shortest header rlb sends (v1 TCP4) is longer than 16 bytes.
    let mut header = vec![0u8; 16];
    if stream.read_exact(&mut header).await.is_err() {
        return;
    }
    if header.starts_with(V2_SIGNATURE) {
        let length = u16::from_be_bytes([header[14], header[15]]) as usize;
        let mut rest = vec![0u8; length];
        if stream.read_exact(&mut rest).await.is_err() {
            return;
        }
        header.extend(rest);
    } else {
        while !header.ends_with(b"\r\n") {
            let mut byte = [0u8];
            if stream.read_exact(&mut byte).await.is_err() || header.len() > 107 {
                return;
            }
            header.push(byte[0]);
        }
    }
    kept.lock().unwrap().push(header);
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !http {
            if stream.write_all(&buf[..n]).await.is_err() {
                return;
            }
            continue;
        }
        head.extend_from_slice(&buf[..n]);
        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.drain(..end + 4);
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test]
async fn tcp_sessions_start_with_the_client_header_v1_and_v2() {
    for version in ["v1", "v2"] {
        let server = HeaderServer::start(false).await;
        let keys = format!("send_proxy_protocol = \"{version}\"");
        let rlb = start(&tcp_config("", server.addr, &keys));
        let addr = rlb.listener_addr("raw").unwrap();
        let stream = connect(addr).await;
        let client = stream.local_addr().unwrap();
        let back = exchange_half_closed(stream, b"hello", usize::MAX).await;
        assert_eq!(back, b"hello");
        assert_eq!(server.sources(), vec![client], "{version}");
        let header = server.headers.lock().unwrap()[0].clone();
        assert_eq!(header.starts_with(V2_SIGNATURE), version == "v2");
        if version == "v1" {
            let text = String::from_utf8(header).unwrap();
            assert_eq!(
                text,
                format!(
                    "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                    client.port(),
                    addr.port()
                )
            );
        }
        rlb.shutdown().await;
    }
}

#[tokio::test]
async fn the_address_received_is_the_address_sent_on() {
    let server = HeaderServer::start(false).await;
    let rlb = start(&tcp_config(
        "proxy_protocol = true",
        server.addr,
        "send_proxy_protocol = \"v2\"",
    ));
    let addr = rlb.listener_addr("raw").unwrap();
    let back = exchange_half_closed(connect(addr).await, &[V1, b"data"].concat(), usize::MAX).await;
    assert_eq!(back, b"data");
    assert_eq!(server.sources(), vec!["192.0.2.7:5555".parse().unwrap()]);
    rlb.shutdown().await;
}

#[tokio::test]
async fn http_server_connections_with_a_header_serve_one_client_connection() {
    for version in ["v1", "v2"] {
        let server = HeaderServer::start(true).await;
        let keys = format!("send_proxy_protocol = \"{version}\"");
        let rlb = start(&http_config("", server.addr, &keys));
        let addr = rlb.listener_addr("web").unwrap();
        // One client connection, three requests: one server connection, kept for it.
        let mut first = connect(addr).await;
        let first_addr = first.local_addr().unwrap();
        for _ in 0..3 {
            first
                .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .unwrap();
            let answer = read_response(&mut first).await;
            assert!(answer.ends_with("ok"), "{answer}");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1, "{version}");
        // Another client connection, while the first is idle: a server connection of
        // its own, with its own header.
        let mut second = connect(addr).await;
        let second_addr = second.local_addr().unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut second).await.ends_with("ok"));
        // The first one again after the second, still on its own connection.
        first
            .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut first).await.ends_with("ok"));
        assert_eq!(server.connections.load(Ordering::SeqCst), 2, "{version}");
        assert_eq!(server.sources(), vec![first_addr, second_addr], "{version}");
        // A third client after both closed: never a connection that carried another's header.
        drop((first, second));
        let (status, body) = get(addr, "/").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert_eq!(server.connections.load(Ordering::SeqCst), 3, "{version}");
        rlb.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_header_that_never_comes() {
    let (_server, rlb, addr) = web_behind_a_proxy("proxy_protocol = true").await;
    let _silent = connect(addr).await;
    let accepted = || async { rlb.open_connections() == 1 };
    eventually(
        "the silent connection accepted",
        Duration::from_secs(5),
        accepted,
    )
    .await;
    let shutdown = tokio::time::timeout(Duration::from_secs(3), rlb.shutdown());
    shutdown.await.expect("shutdown waited for a PROXY header");
    assert_eq!(rlb.open_connections(), 0);
}

/// Each connection closed for its PROXY header is counted in `rlb_limited_total`.
#[tokio::test]
async fn refused_headers_are_counted_in_rlb_limited_total() {
    let server = TestServer::start("app").await;
    let keys = "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]";
    let rlb = start(&format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n{}",
        http_config(keys, server.addr, "")
    ));
    let (addr, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    let untrusted = connect_from_127_0_0_2(addr).await;
    assert!(
        exchange(untrusted, &[V1, GET_HEADERS].concat(), usize::MAX)
            .await
            .is_empty()
    );
    let labels = [("listener", "web"), ("reason", "proxy_header")];
    eventually(
        "the refusal is counted",
        Duration::from_secs(10),
        || async {
            let text = support::admin::metrics(admin).await;
            support::admin::sample(&text, "rlb_limited_total", &labels) == Some(1.0)
        },
    )
    .await;
}
