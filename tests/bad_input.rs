//! Bad input from one client costs that client's connection only: a chunk size that
//! overflows, a body cut short by a close, a client that never reads its response
//! (the server side must not be buffered without bound). Others are served meanwhile.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn web_to(server: SocketAddr) -> String {
    format!(
        "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{server}\"]\n"
    )
}

/// Sends `bytes`, shuts the write side when `close` says so, and reads what comes back
/// until rlb closes the connection (bounded by `WAIT`).
async fn send_and_read(web: SocketAddr, bytes: &[u8], close: bool) -> String {
    let mut stream = TcpStream::connect(web).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    if close {
        stream.shutdown().await.expect("shutdown");
    }
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("rlb did not close the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_size_that_overflows_gets_400_and_others_are_served() {
    let app = TestServer::start("app").await;
    let rlb = start(&web_to(app.addr));
    let web = rlb.listener_addr("web").unwrap();
    let request = b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                    FFFFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n";
    let answer = send_and_read(web, request, false).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert_eq!(get(web, "/").await, (200, "app".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_then_a_close_ends_that_connection_only() {
    let app = TestServer::start("app").await;
    let rlb = start(&web_to(app.addr));
    let web = rlb.listener_addr("web").unwrap();
    let request = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nabc";
    let answer = send_and_read(web, request, true).await;
    // The server never got its whole body: the client's fault, a 400 or nothing.
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert_eq!(get(web, "/").await, (200, "app".to_string()));
    eventually(
        "the cut request leaves nothing open on the server",
        WAIT,
        || async { active(&rlb, "app", app.addr) == 0 },
    )
    .await;
}

/// A server that answers every request with an endless chunked body, counting the
/// bytes its socket took.
async fn endless_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let written = Arc::new(AtomicU64::new(0));
    let count = written.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head).await.is_err() {
                    return;
                }
                let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
                // Bounded: 1 GiB at most, far more than any buffer between here and
                // a client that does not read.
                for _ in 0..16_384 {
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_stalls_its_server_instead_of_filling_rlb() {
    let (server, written) = endless_server().await;
    let app = TestServer::start("app").await;
    let rlb = start(&format!(
        "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ path_prefix = \"/endless\", upstream = \"endless\" }}, {{ upstream = \"app\" }}]\n\
         [upstreams.endless]\nservers = [\"{server}\"]\n[upstreams.app]\nservers = [\"{}\"]\n",
        app.addr
    ));
    let web = rlb.listener_addr("web").unwrap();
    let mut idle = TcpStream::connect(web).await.expect("connect");
    idle.write_all(b"GET /endless HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("write");
    // Wait until the server is blocked: what it wrote stops growing.
    let (_, stalled) = wait_until(
        "the server side stalls",
        WAIT,
        || {
            let written = written.clone();
            async move {
                let before = written.load(Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
                (before, written.load(Ordering::Relaxed))
            }
        },
        |&(before, after)| after > 0 && after == before,
    )
    .await;
    // Socket buffers on both hops and hyper's own: a few MiB, not the 1 GiB on offer.
    assert!(stalled < 64 << 20, "{stalled} bytes taken from the server");
    assert_eq!(get(web, "/").await, (200, "app".to_string()));
    drop(idle);
}
