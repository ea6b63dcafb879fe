//! `max_connections_per_server` and the upstream's queue over real sockets: first come
//! first served, 503 after `queue_timeout`, the limit held under concurrent load, tcp
//! sessions and WebSockets counted, the queue in /status and /metrics.
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rlb::Rlb;
use support::rlb::{
    TempDir, TestServer, active, eventually, get, start, start_file, tcp_echo_server, websocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// An http listener `web` to upstream `app` with the given servers, limit and
/// timeout, and the admin API.
fn http_config(servers: &[SocketAddr], balance: &str, max: usize, queue_timeout: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"
[global]
access_log = false
[admin]
bind = "127.0.0.1:0"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[upstreams.app]
balance = "{balance}"
servers = [{}]
max_connections_per_server = {max}
queue_timeout = "{queue_timeout}"
"#,
        servers.join(", ")
    )
}

fn queue_of(rlb: &Rlb, upstream: &str) -> serde_json::Value {
    rlb.status()["upstreams"][upstream]["queue"].clone()
}

fn queue_length(rlb: &Rlb, upstream: &str) -> u64 {
    queue_of(rlb, upstream)["length"]
        .as_u64()
        .expect("queue length")
}

/// Waits until `n` requests or sessions wait in the queue of `upstream`.
async fn until_queued(rlb: &Rlb, upstream: &str, n: u64) {
    eventually(&format!("{n} queued in {upstream}"), WAIT, || async {
        queue_length(rlb, upstream) == n
    })
    .await;
}

/// Waits until `n` requests or tunnels are open on `server` of upstream `app`.
async fn until_active(rlb: &Rlb, server: SocketAddr, n: usize) {
    eventually(&format!("{n} active on {server}"), WAIT, || async {
        active(rlb, "app", server) == n
    })
    .await;
}

/// The value of the sample `line_start` (name and labels) in `/metrics`.
async fn metric(rlb: &Rlb, line_start: &str) -> Option<f64> {
    let (status, text) = get(rlb.admin_addr().expect("admin"), "/metrics").await;
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test]
async fn queued_requests_are_served_first_come_first_served() {
    let server = TestServer::start("a").await;
    let rlb = start(&http_config(&[server.addr], "round_robin", 1, "10s"));
    let addr = rlb.listener_addr("web").unwrap();
    let done = Arc::new(Mutex::new(Vec::new()));
    let request = |name: &'static str, ms: u64| {
        let done = done.clone();
        tokio::spawn(async move {
            let (status, _) = get(addr, &format!("/slow?ms={ms}")).await;
            done.lock().unwrap().push((name, status));
        })
    };
    let first = request("first", 1000);
    until_active(&rlb, server.addr, 1).await;
    let mut queued = Vec::new();
    for (n, name) in ["second", "third", "fourth", "fifth"]
        .into_iter()
        .enumerate()
    {
        queued.push(request(name, 20));
        until_queued(&rlb, "app", n as u64 + 1).await;
    }
    assert_eq!(active(&rlb, "app", server.addr), 1);
    first.await.unwrap();
    for task in queued {
        task.await.unwrap();
    }
    let done = done.lock().unwrap().clone();
    let expected: Vec<_> = ["first", "second", "third", "fourth", "fifth"]
        .into_iter()
        .map(|name| (name, 200))
        .collect();
    assert_eq!(done, expected);
    assert_eq!(queue_length(&rlb, "app"), 0);
    assert_eq!(queue_of(&rlb, "app")["waited"], 4);
    rlb.shutdown().await;
}

#[tokio::test]
async fn a_queued_request_gets_503_after_the_queue_timeout_and_the_queue_shows() {
    let server = TestServer::start("a").await;
    let rlb = start(&http_config(&[server.addr], "least_conn", 1, "400ms"));
    let addr = rlb.listener_addr("web").unwrap();
    let busy = tokio::spawn(async move { get(addr, "/slow?ms=3000").await });
    until_active(&rlb, server.addr, 1).await;
    let started = Instant::now();
    let queued = tokio::spawn(async move { get(addr, "/").await });
    until_queued(&rlb, "app", 1).await;
    let length = metric(&rlb, "rlb_upstream_queue_length{upstream=\"app\"}").await;
    assert_eq!(length, Some(1.0));
    let queue = queue_of(&rlb, "app");
    assert_eq!(queue["max_connections_per_server"], 1);
    assert_eq!(queue["queue_timeout_ms"], 400);

    let (status, body) = queued.await.unwrap();
    let waited = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("busy"), "{body}");
    assert!(waited >= Duration::from_millis(400), "503 after {waited:?}");
    assert!(waited < Duration::from_millis(2500), "503 after {waited:?}");
    assert_eq!(
        server.hits(),
        1,
        "the queued request never reached the server"
    );
    assert_eq!(queue_length(&rlb, "app"), 0);
    assert_eq!(queue_of(&rlb, "app")["timeouts"], 1);
    let timeouts = "rlb_upstream_queue_timeouts_total{upstream=\"app\"}";
    assert_eq!(metric(&rlb, timeouts).await, Some(1.0));
    let errors = "rlb_errors_total{kind=\"queue_timeout\"}";
    assert_eq!(metric(&rlb, errors).await, Some(1.0));
    let waits = "rlb_upstream_queue_wait_seconds_count{upstream=\"app\"}";
    assert_eq!(metric(&rlb, waits).await, Some(1.0));
    assert_eq!(busy.await.unwrap().0, 200);
    rlb.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_the_queue_and_its_waiters() {
    let server = TestServer::start("a").await;
    let dir = TempDir::new("queue-reload");
    let path = dir.file(
        "lb.toml",
        &http_config(&[server.addr], "round_robin", 1, "10s"),
    );
    let rlb = start_file(&path);
    let addr = rlb.listener_addr("web").unwrap();
    let busy = tokio::spawn(async move { get(addr, "/slow?ms=800").await });
    until_active(&rlb, server.addr, 1).await;
    let queued = tokio::spawn(async move { get(addr, "/").await });
    until_queued(&rlb, "app", 1).await;
    // A longer timeout and another balance: the same upstream, the same queue.
    std::fs::write(&path, http_config(&[server.addr], "least_conn", 1, "20s")).unwrap();
    rlb.reload().await.expect("reload");
    assert_eq!(queue_length(&rlb, "app"), 1);
    assert_eq!(queue_of(&rlb, "app")["queue_timeout_ms"], 20_000);
    assert_eq!(busy.await.unwrap().0, 200);
    assert_eq!(queued.await.unwrap(), (200, "a".to_string()));
    assert_eq!(queue_of(&rlb, "app")["waited"], 1);
    rlb.shutdown().await;
}

/// An HTTP/1.1 server that answers every request after `ms`, counting the requests it
/// holds at once and the most it ever held.
async fn counting_server(ms: u64) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let most = peak.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (now, peak) = (now.clone(), peak.clone());
            let service = service_fn(move |_| {
                let (now, peak) = (now.clone(), peak.clone());
                async move {
                    peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, most)
}

#[tokio::test]
async fn no_server_goes_over_its_limit_under_concurrent_load() {
    for balance in ["round_robin", "least_conn"] {
        let (a, peak_a) = counting_server(15).await;
        let (b, peak_b) = counting_server(15).await;
        let rlb = start(&http_config(&[a, b], balance, 3, "20s"));
        let addr = rlb.listener_addr("web").unwrap();
        let requests: Vec<_> = (0..60)
            .map(|_| tokio::spawn(async move { get(addr, "/").await.0 }))
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), 200, "{balance}");
        }
        let peaks = (peak_a.load(Ordering::SeqCst), peak_b.load(Ordering::SeqCst));
        assert!(peaks.0 <= 3 && peaks.1 <= 3, "{balance}: peaks {peaks:?}");
        // The load did fill them: the limit was reached, not just never approached.
        assert!(peaks.0 == 3 || peaks.1 == 3, "{balance}: peaks {peaks:?}");
        assert!(queue_of(&rlb, "app")["waited"].as_u64().unwrap() > 0);
        rlb.shutdown().await;
    }
}

#[tokio::test]
async fn a_websocket_holds_its_place_under_the_limit() {
    let server = TestServer::start("a").await;
    let rlb = start(&http_config(&[server.addr], "round_robin", 1, "300ms"));
    let addr = rlb.listener_addr("web").unwrap();
    let ws = websocket(addr).await;
    assert_eq!(active(&rlb, "app", server.addr), 1);
    assert_eq!(get(addr, "/").await.0, 503);
    drop(ws);
    until_active(&rlb, server.addr, 0).await;
    assert_eq!(get(addr, "/").await, (200, "a".to_string()));
    rlb.shutdown().await;
}

/// Two tcp listeners on one echo server, each with max 1: `patient` queues for 10 s,
/// `hasty` for 300 ms.
fn tcp_config(echo: SocketAddr) -> String {
    let mut text = String::from("[global]\naccess_log = false\n");
    for (name, timeout) in [("patient", "10s"), ("hasty", "300ms")] {
        text += &format!(
            "[listeners.{name}]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"{name}\"\n\
             [upstreams.{name}]\nservers = [\"{echo}\"]\nmax_connections_per_server = 1\n\
             queue_timeout = \"{timeout}\"\n"
        );
    }
    text
}

async fn echo(stream: &mut TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut back = vec![0u8; text.len()];
    let read = tokio::time::timeout(WAIT, stream.read_exact(&mut back)).await;
    read.expect("no echo").expect("read echo");
    String::from_utf8(back).unwrap()
}

#[tokio::test]
async fn tcp_sessions_count_wait_in_the_queue_and_time_out_closed() {
    let (echo_addr, _stop) = tcp_echo_server().await;
    let rlb = start(&tcp_config(echo_addr));
    for name in ["patient", "hasty"] {
        let addr = rlb.listener_addr(name).unwrap();
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(echo(&mut first, "one").await, "one");
        assert_eq!(active(&rlb, name, echo_addr), 1);
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(b"two").await.unwrap();
        until_queued(&rlb, name, 1).await;
        if name == "hasty" {
            // Closed after the queue timeout, without a byte from the server (a reset,
            // as its own bytes were never read).
            let mut rest = Vec::new();
            let read = tokio::time::timeout(WAIT, second.read_to_end(&mut rest)).await;
            match read.expect("still open") {
                Ok(n) => assert_eq!(n, 0, "{rest:?}"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            }
            assert_eq!(queue_of(&rlb, name)["timeouts"], 1);
            continue;
        }
        // The first session's end lets the second through, its early bytes intact.
        drop(first);
        let mut back = [0u8; 3];
        let read = tokio::time::timeout(WAIT, second.read_exact(&mut back)).await;
        read.expect("the queued session was not served").unwrap();
        assert_eq!(&back, b"two");
        assert_eq!(active(&rlb, name, echo_addr), 1);
        assert_eq!(queue_length(&rlb, name), 0);
    }
    rlb.shutdown().await;
}
