//! Balancing through a real listener: round robin and its weights, least_conn over
//! open WebSockets, and a dead server routed around.
mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::rlb::*;

/// Sends `n` requests and counts the answers by server name.
async fn spread(web: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let client = client();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let response = client
            .get(format!("http://{web}/"))
            .send()
            .await
            .expect("GET through rlb");
        assert_eq!(response.status(), 200);
        *counts.entry(response.text().await.unwrap()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_and_respects_weights() {
    let (a, b, c) = (
        TestServer::start("a").await,
        TestServer::start("b").await,
        TestServer::start("c").await,
    );
    let rlb = start(&format!(
        r#"
[global]
access_log = false
[listeners.even]
bind = "127.0.0.1:0"
routes = [{{ upstream = "even" }}]
[listeners.weighted]
bind = "127.0.0.1:0"
routes = [{{ upstream = "weighted" }}]
[upstreams.even]
servers = ["{a}", "{b}", "{c}"]
[upstreams.weighted]
servers = [{{ addr = "{a}", weight = 3 }}, "{b}"]
"#,
        a = a.addr,
        b = b.addr,
        c = c.addr
    ));
    let even = spread(rlb.listener_addr("even").unwrap(), 30).await;
    assert_eq!(
        (even.get("a"), even.get("b"), even.get("c")),
        (Some(&10), Some(&10), Some(&10)),
        "{even:?}"
    );
    let weighted = spread(rlb.listener_addr("weighted").unwrap(), 40).await;
    assert_eq!(
        (weighted.get("a"), weighted.get("b"), weighted.get("c")),
        (Some(&30), Some(&10), None),
        "{weighted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_balances_open_websockets() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let rlb = start(&format!(
        r#"
[global]
access_log = false
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "chat" }}]
[upstreams.chat]
balance = "least_conn"
servers = ["{}", "{}"]
"#,
        a.addr, b.addr
    ));
    let web = rlb.listener_addr("web").unwrap();
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for _ in 0..6 {
        let mut ws = websocket(web).await;
        match ws_roundtrip(&mut ws, "whoami").await.as_str() {
            "a" => on_a.push(ws),
            "b" => on_b.push(ws),
            other => panic!("answered by {other}"),
        }
    }
    assert_eq!((on_a.len(), on_b.len()), (3, 3));
    assert_eq!(
        (active(&rlb, "chat", a.addr), active(&rlb, "chat", b.addr)),
        (3, 3)
    );

    for mut ws in on_a.drain(..) {
        let _ = ws.close(None).await;
    }
    eventually(
        "the tunnels to a to close",
        Duration::from_secs(10),
        || async { active(&rlb, "chat", a.addr) == 0 },
    )
    .await;
    for _ in 0..2 {
        let mut ws = websocket(web).await;
        assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "a");
        on_a.push(ws);
    }
    // The 3 on b were never disturbed.
    for ws in &mut on_b {
        assert_eq!(ws_roundtrip(ws, "still there").await, "still there");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_in_the_pool_fails_no_request() {
    let (a, b) = (TestServer::start("a").await, TestServer::start("b").await);
    let rlb = start(&format!(
        r#"
[global]
access_log = false
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[upstreams.app]
servers = ["{}", "{}", "{}"]
"#,
        a.addr,
        dead_addr(),
        b.addr
    ));
    let counts = spread(rlb.listener_addr("web").unwrap(), 30).await;
    assert_eq!(counts.values().sum::<usize>(), 30);
    assert!(
        counts.contains_key("a") && counts.contains_key("b"),
        "{counts:?}"
    );

    // A server that dies while in the pool: its idle connections and new connects
    // fail, and every request still succeeds.
    b.stop();
    let counts = spread(rlb.listener_addr("web").unwrap(), 30).await;
    assert_eq!(counts.get("a"), Some(&30), "{counts:?}");
}
