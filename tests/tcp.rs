//! The tcp listener end to end: bytes intact both ways, half-close passed on, and a
//! dead server routed around.
mod support;

use std::net::SocketAddr;

use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn tcp_config(servers: &str) -> String {
    format!(
        r#"
[global]
access_log = false
[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "echo"
[upstreams.echo]
servers = [{servers}]
"#
    )
}

/// Writes `data` and shuts the write half while reading the echo to the end.
async fn echo_through(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect to rlb");
    let (mut read, mut write) = stream.into_split();
    let writer = async {
        write.write_all(data).await.expect("write");
        write.shutdown().await.expect("shutdown");
    };
    let reader = async {
        let mut back = Vec::with_capacity(data.len());
        read.read_to_end(&mut back).await.expect("read");
        back
    };
    let ((), back) = tokio::join!(writer, reader);
    back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_sessions_of_1_mib_echo_intact() {
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&tcp_config(&format!("\"{echo}\"")));
    let raw = rlb.listener_addr("raw").unwrap();
    let sessions = (0..4u32).map(|n| {
        tokio::spawn(async move {
            let data: Vec<u8> = (0..1024 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(n) >> 13) as u8)
                .collect();
            let back = echo_through(raw, &data).await;
            assert_eq!(back.len(), data.len(), "session {n}");
            assert!(back == data, "session {n}: the echo differs");
        })
    });
    for session in sessions.collect::<Vec<_>>() {
        session.await.expect("session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_lets_the_server_answer_after_the_clients_fin() {
    // A server that answers only once the client has finished sending.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let reply = format!("got {} bytes", got.len());
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    let rlb = start(&tcp_config(&format!("\"{server}\"")));
    let raw = rlb.listener_addr("raw").unwrap();
    let mut stream = TcpStream::connect(raw).await.unwrap();
    stream.write_all(b"hello, server").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 13 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_in_the_pool_fails_no_session() {
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&tcp_config(&format!("\"{}\", \"{echo}\"", dead_addr())));
    let raw = rlb.listener_addr("raw").unwrap();
    for i in 0..10 {
        let line = format!("session {i}");
        assert_eq!(echo_through(raw, line.as_bytes()).await, line.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_closes_the_client_connection() {
    let rlb = start(&tcp_config(&format!("\"{}\"", dead_addr())));
    let raw = rlb.listener_addr("raw").unwrap();
    let mut stream = TcpStream::connect(raw).await.unwrap();
    let mut buf = Vec::new();
    // Closed at once, with nothing sent: read_to_end ends (EOF or reset).
    let _ = stream.read_to_end(&mut buf).await;
    assert!(buf.is_empty());
}
