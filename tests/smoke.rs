//! A first check of the harness: one request, one WebSocket, one tcp echo through rlb.
mod support;

use support::rlb::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ws_and_tcp_pass_through() {
    let a = TestServer::start("a").await;
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&format!(
        r#"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "echo"
[upstreams.app]
servers = ["{}"]
[upstreams.echo]
servers = ["{echo}"]
"#,
        a.addr
    ));
    let web = rlb.listener_addr("web").unwrap();
    assert_eq!(get(web, "/").await, (200, "a".to_string()));
    let mut ws = websocket(web).await;
    assert_eq!(ws_roundtrip(&mut ws, "hello").await, "hello");
    let mut tcp = tokio::net::TcpStream::connect(rlb.listener_addr("raw").unwrap())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"ping").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    tcp.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"ping");
}
