//! Listener limits end to end, over real sockets: the head and keep-alive timers, head
//! and body sizes, rate buckets (kept across a reload), the per-client cap (clients
//! bound to 127.0.0.2 and 127.0.0.3 act as two IPs) and `max_connections`.
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Listener `web` (more keys in `[listeners.web.limits]`: `limits`) routing `routes`
/// (default: everything) to upstream `app` with one server.
fn config(server: SocketAddr, limits: &str, routes: &str) -> String {
    let routes = if routes.is_empty() {
        "{ upstream = \"app\" }"
    } else {
        routes
    };
    format!(
        "[global]\naccess_log = false\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{routes}]\n\
         [listeners.web.limits]\n{limits}\n\
         [upstreams.app]\nservers = [\"{server}\"]\n"
    )
}

/// A connection to `addr` from the loopback address `from`, as another client would.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.expect("connect")
}

/// Everything the other side sends until it closes (or resets), within `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&all).into_owned()
}

/// One response on a keep-alive connection: reads until the head and a body of
/// `body_len` bytes are in.
async fn one_response(stream: &mut TcpStream, body_len: usize) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = all.windows(4).position(|w| w == b"\r\n\r\n")
            && all.len() >= end + 4 + body_len
        {
            return String::from_utf8_lossy(&all).into_owned();
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&all));
        all.extend_from_slice(&buf[..n]);
    }
}

/// Sends `request` on a fresh connection and asserts the status of what comes back.
async fn answered(addr: SocketAddr, request: &str, status: u16) -> String {
    let answer = raw_http(addr, request).await;
    let line = format!("HTTP/1.1 {status} ");
    assert!(answer.starts_with(&line), "not {status}: {answer}");
    answer
}

/// Asserts that `GET path` is refused with 429 and returns its `Retry-After`.
async fn retry_after(addr: SocketAddr, path: &str) -> u64 {
    let response = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let header = response.headers()["retry-after"].to_str().unwrap();
    header.parse().unwrap()
}

const GET: &str = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_gets_408_and_is_closed_while_another_client_is_served() {
    let app = TestServer::start("app").await;
    let rlb = start(&config(app.addr, "header_timeout = \"300ms\"", ""));
    let addr = rlb.listener_addr("web").unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // One header byte every 50 ms, never the blank line; bounded to 5 s.
    let trickle = async {
        for _ in 0..100 {
            tokio::select! {
                read = slow.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if slow.write_all(b"x").await.is_err() {
                        return true;
                    }
                }
            }
        }
        false
    };
    let (closed, served) = tokio::join!(trickle, get(addr, "/"));
    assert_eq!(served, (200, "app".to_string()));
    assert!(closed, "the slowloris connection is still open after 5 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let app = TestServer::start("app").await;
    let limits = "keepalive_timeout = \"300ms\"\nheader_timeout = \"30s\"";
    let rlb = start(&config(app.addr, limits, ""));
    let addr = rlb.listener_addr("web").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(GET.as_bytes()).await.unwrap();
        let response = one_response(&mut stream, 3).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    // Idle now: closed without a word, well before the header timeout.
    let rest = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(rest, "");
    let mut probe = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut probe)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "still open: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431_and_an_oversized_request_line_414() {
    let app = TestServer::start("app").await;
    let rlb = start(&config(app.addr, "max_header_size = \"1KiB\"", ""));
    let addr = rlb.listener_addr("web").unwrap();
    let big = "a".repeat(2000);
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    answered(addr, &head, 431).await;
    answered(
        addr,
        &format!("GET /{big} HTTP/1.1\r\nHost: x\r\n\r\n"),
        414,
    )
    .await;
    // Under the limit all is as before.
    let close = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    answered(addr, close, 200).await;
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_with_and_without_content_length() {
    let app = TestServer::start("app").await;
    let rlb = start(&config(app.addr, "max_body_size = \"1KiB\"", ""));
    let addr = rlb.listener_addr("web").unwrap();
    let body = "b".repeat(2048);
    let announced = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n";
    answered(addr, &format!("{announced}{body}"), 413).await;
    assert_eq!(app.hits(), 0, "no server is picked for an announced body");
    let chunk = format!("258\r\n{}\r\n", "a".repeat(600));
    let chunked = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n";
    let over = format!("{chunked}\r\n{chunk}{chunk}{chunk}0\r\n\r\n");
    answered(addr, &over, 413).await;
    let under = format!("{chunked}Connection: close\r\n\r\n{chunk}0\r\n\r\n");
    let small = answered(addr, &under, 200).await;
    assert!(small.ends_with("600 bytes"), "{small}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after_and_recovers() {
    let app = TestServer::start("app").await;
    let routes = "{ path_prefix = \"/strict\", upstream = \"app\", rate = { requests = 1, per = \"1m\" } }, { upstream = \"app\" }";
    let limits = "rate = { requests = 2, per = \"1s\", burst = 2 }";
    let rlb = start(&config(app.addr, limits, routes));
    let addr = rlb.listener_addr("web").unwrap();
    assert_eq!(get(addr, "/").await.0, 200);
    assert_eq!(get(addr, "/").await.0, 200);
    assert_eq!(retry_after(addr, "/").await, 1);
    eventually("the bucket refills", Duration::from_secs(5), || async {
        get(addr, "/").await.0 == 200
    })
    .await;
    // The route's own rate applies instead of the listener's.
    assert_eq!(get(addr, "/strict").await.0, 200);
    let wait = retry_after(addr, "/strict").await;
    assert!((55..=60).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_cap_refuses_one_ip_and_not_another() {
    let app = TestServer::start("app").await;
    let rlb = start(&config(app.addr, "max_connections_per_client = 2", ""));
    let addr = rlb.listener_addr("web").unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from("127.0.0.2", addr).await;
        stream.write_all(GET.as_bytes()).await.unwrap();
        assert!(
            one_response(&mut stream, 3)
                .await
                .starts_with("HTTP/1.1 200")
        );
        open.push(stream);
    }
    let mut third = connect_from("127.0.0.2", addr).await;
    third.write_all(GET.as_bytes()).await.unwrap();
    let refused = read_until_closed(&mut third, Duration::from_secs(10)).await;
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    let mut other = connect_from("127.0.0.3", addr).await;
    other.write_all(GET.as_bytes()).await.unwrap();
    assert!(
        one_response(&mut other, 3)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // A closed connection gives its place back.
    drop(open.pop());
    eventually(
        "127.0.0.2 is below its cap again",
        Duration::from_secs(5),
        || async {
            let mut again = connect_from("127.0.0.2", addr).await;
            again.write_all(GET.as_bytes()).await.unwrap();
            let answer = read_until_closed(&mut again, Duration::from_millis(500)).await;
            answer.starts_with("HTTP/1.1 200")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_cap_closes_a_tcp_session() {
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&format!(
        "[listeners.db]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"echo\"\n\
         [listeners.db.limits]\nmax_connections_per_client = 1\n\
         [upstreams.echo]\nservers = [\"{echo}\"]\n"
    ));
    let addr = rlb.listener_addr("db").unwrap();
    let mut first = connect_from("127.0.0.2", addr).await;
    first.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).await.unwrap();
    let mut second = connect_from("127.0.0.2", addr).await;
    let _ = second.write_all(b"ping").await;
    let answer = read_until_closed(&mut second, Duration::from_secs(10)).await;
    assert_eq!(answer, "", "the second session was served");
    let mut other = connect_from("127.0.0.3", addr).await;
    other.write_all(b"pong").await.unwrap();
    other.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_pauses_accepting_and_resumes() {
    let app = TestServer::start("app").await;
    let rlb = start(&config(app.addr, "max_connections = 1", ""));
    let addr = rlb.listener_addr("web").unwrap();
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(GET.as_bytes()).await.unwrap();
    assert!(
        one_response(&mut first, 3)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // The kernel completes the handshake (backlog); rlb does not accept it yet.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(GET.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "answered while the listener was full");
    drop(first);
    let response = one_response(&mut waiting, 3).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_buckets_survive_a_reload_until_the_quota_changes() {
    let app = TestServer::start("app").await;
    let dir = TempDir::new("limits");
    let limits = "rate = { requests = 1, per = \"1m\" }";
    let path = dir.file("lb.toml", &config(app.addr, limits, ""));
    let rlb = start_file(&path);
    let addr = rlb.listener_addr("web").unwrap();
    assert_eq!(get(addr, "/").await.0, 200);
    assert_eq!(get(addr, "/").await.0, 429);
    // Another key changes; the quota does not: the client's bucket stays empty.
    let changed = format!("{limits}\nkeepalive_timeout = \"60s\"");
    std::fs::write(&path, config(app.addr, &changed, "")).unwrap();
    rlb.reload().await.expect("reload");
    assert_eq!(
        get(addr, "/").await.0,
        429,
        "a reload handed out a fresh bucket"
    );
    // A new quota is a new bucket.
    let raised = "rate = { requests = 5, per = \"1m\" }";
    std::fs::write(&path, config(app.addr, raised, "")).unwrap();
    rlb.reload().await.expect("reload");
    assert_eq!(get(addr, "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_holds_its_clients_place_for_its_whole_life() {
    let app = TestServer::start("app").await;
    let rlb = start(&config(app.addr, "max_connections_per_client = 1", ""));
    let addr = rlb.listener_addr("web").unwrap();
    let mut ws = websocket(addr).await;
    assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "app");
    // The upgraded connection still counts: a second one from 127.0.0.1 is refused.
    assert_eq!(get(addr, "/").await.0, 429);
    drop(ws);
    eventually(
        "the tunnel's place is given back",
        Duration::from_secs(5),
        || async { get(addr, "/").await.0 == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason_in_rlb_limited_total() {
    let app = TestServer::start("app").await;
    let limits = "max_header_size = \"1KiB\"\nrate = { requests = 1, per = \"1m\" }";
    let admin = "[admin]\nbind = \"127.0.0.1:0\"\n";
    let rlb = start(&format!("{}{admin}", config(app.addr, limits, "")));
    let addr = rlb.listener_addr("web").unwrap();
    let big = "a".repeat(2000);
    answered(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"),
        431,
    )
    .await;
    assert_eq!(get(addr, "/").await.0, 200);
    assert_eq!(get(addr, "/").await.0, 429);
    let admin = rlb.admin_addr().unwrap();
    let metrics = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    eventually(
        "the refusals are counted",
        Duration::from_secs(5),
        || async {
            let text = answered(admin, metrics, 200).await;
            [
                "rate\"} 1",
                "header_size\"} 1",
                "body_size\"} 0",
                "max_connections\"} 0",
            ]
            .iter()
            .all(|end| {
                text.contains(&format!(
                    "rlb_limited_total{{listener=\"web\",reason=\"{end}"
                ))
            })
        },
    )
    .await;
}
