//! The http listener end to end: routing, error answers, header rewriting, bodies,
//! WebSockets, keep-alive, retries and timeouts, with real sockets on both sides.
mod support;

use std::time::Duration;

use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(body: &str) -> String {
    format!("[global]\naccess_log = false\n{body}")
}

/// Listener `web` routing everything to upstream `app` with one server; `app_keys` are
/// more keys of `[upstreams.app]`.
fn web_to_app(server: std::net::SocketAddr, app_keys: &str) -> String {
    config(&format!(
        "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{server}\"]\n{app_keys}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_path_routing_first_match_wins() {
    let (api, chat, app) = (
        TestServer::start("api").await,
        TestServer::start("chat").await,
        TestServer::start("app").await,
    );
    let rlb = start(&config(&format!(
        r#"
[listeners.web]
bind = "127.0.0.1:0"
routes = [
  {{ path_prefix = "/api", upstream = "api" }},
  {{ host = "chat.example.test", upstream = "chat" }},
  {{ upstream = "app" }},
]
[upstreams.api]
servers = ["{}"]
[upstreams.chat]
servers = ["{}"]
[upstreams.app]
servers = ["{}"]
"#,
        api.addr, chat.addr, app.addr
    )));
    let web = rlb.listener_addr("web").unwrap();
    let via = |host: &'static str, path: &'static str| async move {
        let response = client()
            .get(format!("http://{web}{path}"))
            .header("host", host)
            .send()
            .await
            .expect("request through rlb");
        assert_eq!(response.status(), 200, "{host}{path}");
        response.text().await.unwrap()
    };
    assert_eq!(via("chat.example.test", "/").await, "chat");
    // Host is case-insensitive and its port is ignored.
    assert_eq!(via("Chat.EXAMPLE.test:8080", "/room").await, "chat");
    // The path route comes first, whatever the host.
    assert_eq!(via("chat.example.test", "/api/x").await, "api");
    assert_eq!(via("other.test", "/api").await, "api");
    assert_eq!(via("other.test", "/").await, "app");
    assert_eq!(via("chat.example.test.evil", "/").await, "app");
    assert_eq!((api.hits(), chat.hits(), app.hits()), (2, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_dead_server_is_502_no_healthy_server_is_503() {
    let a = TestServer::start("a").await;
    let rlb = start(&config(&format!(
        r#"
[listeners.web]
bind = "127.0.0.1:0"
routes = [
  {{ path_prefix = "/app", upstream = "app" }},
  {{ path_prefix = "/dead", upstream = "dead" }},
  {{ path_prefix = "/sick", upstream = "sick" }},
]
[upstreams.app]
servers = ["{}"]
[upstreams.dead]
servers = ["{}"]
[upstreams.sick]
servers = ["{}"]
[upstreams.sick.health]
check = "tcp"
interval = "50ms"
timeout = "50ms"
fall = 1
"#,
        a.addr,
        dead_addr(),
        dead_addr()
    )));
    let web = rlb.listener_addr("web").unwrap();
    assert_eq!(get(web, "/app").await, (200, "a".to_string()));

    let (status, body) = get(web, "/nowhere").await;
    assert_eq!(status, 404);
    assert!(body.contains("no route"), "404 body: {body}");

    let (status, body) = get(web, "/dead").await;
    assert_eq!(status, 502);
    assert!(body.contains("bad gateway"), "502 body: {body}");

    eventually(
        "the unchecked dead server still gives 502, the checked one 503",
        Duration::from_secs(10),
        || async { get(web, "/sick").await.0 == 503 },
    )
    .await;
    let (status, body) = get(web, "/sick").await;
    assert_eq!(status, 503);
    assert!(body.contains("no healthy server"), "503 body: {body}");
    // A server without checks is never ejected: still a 502, not a 503.
    assert_eq!(get(web, "/dead").await.0, 502);
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_added_host_kept_hop_by_hop_dropped() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, ""));
    let web = rlb.listener_addr("web").unwrap();
    let response = raw_http(
        web,
        "GET /headers HTTP/1.1\r\n\
         Host: shop.example.test:8080\r\n\
         Connection: close, x-secret\r\n\
         X-Secret: named by connection\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         X-Forwarded-For: 10.0.0.1\r\n\
         X-Forwarded-For: 10.0.0.2\r\n\
         X-Kept: yes\r\n\
         \r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("a response body");
    let seen: Vec<&str> = body.lines().collect();
    for want in [
        "host: shop.example.test:8080",
        "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: shop.example.test:8080",
        "x-kept: yes",
    ] {
        assert!(seen.contains(&want), "`{want}` not in:\n{body}");
    }
    for gone in ["x-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(
            !seen.iter().any(|l| l.starts_with(&format!("{gone}:"))),
            "`{gone}` was forwarded:\n{body}"
        );
    }

    // Without a previous X-Forwarded-For, the client's address alone.
    let (status, body) = get(web, "/headers").await;
    assert_eq!(status, 200);
    assert!(
        body.lines().any(|l| l == "x-forwarded-for: 127.0.0.1"),
        "{body}"
    );
    assert!(body.lines().any(|l| l == format!("host: {web}")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_request_is_routed_by_its_authority_and_hostless_ones_get_a_host() {
    let (chat, app) = (
        TestServer::start("chat").await,
        TestServer::start("app").await,
    );
    let rlb = start(&config(&format!(
        r#"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ host = "chat.example.test", upstream = "chat" }}, {{ upstream = "app" }}]
[upstreams.chat]
servers = ["{}"]
[upstreams.app]
servers = ["{}"]
"#,
        chat.addr, app.addr
    )));
    let web = rlb.listener_addr("web").unwrap();
    // The request line's authority wins over `Host`, for the route and the server.
    let response = raw_http(
        web,
        "GET http://chat.example.test/headers HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("\nhost: chat.example.test\n"),
        "{response}"
    );
    assert_eq!((chat.hits(), app.hits()), (1, 0));
    // HTTP/1.0 allows no `Host`; it goes on as HTTP/1.1, which needs one.
    let response = raw_http(web, "GET /headers HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.contains(&format!("\nhost: {web}\n")), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_post_is_echoed_intact() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, ""));
    let web = rlb.listener_addr("web").unwrap();
    let body: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let response = client()
        .post(format!("http://{web}/echo"))
        .body(body.clone())
        .send()
        .await
        .expect("POST through rlb");
    assert_eq!(response.status(), 200);
    let back = response.bytes().await.expect("echoed body");
    assert_eq!(back.len(), body.len());
    assert!(back == body, "the echoed body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, ""));
    let web = rlb.listener_addr("web").unwrap();
    let mut ws = websocket(web).await;
    assert_eq!(ws_roundtrip(&mut ws, "hello").await, "hello");
    assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "a");
    let big = "x".repeat(256 * 1024);
    assert_eq!(ws_roundtrip(&mut ws, &big).await, big);
    // Plain requests still work beside the tunnel.
    assert_eq!(get(web, "/").await, (200, "a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_server_connections() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, ""));
    let web = rlb.listener_addr("web").unwrap();
    let client = client();
    for _ in 0..50 {
        let response = client
            .get(format!("http://{web}/"))
            .send()
            .await
            .expect("GET through rlb");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "a");
    }
    assert_eq!(a.hits(), 50);
    assert!(
        a.connections() <= 3,
        "50 requests over one client connection opened {} server connections",
        a.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_request_is_retried_only_when_idempotent() {
    let good = TestServer::start("good").await;
    let (dying, received, _stop) = dying_server().await;
    let rlb = start(&config(&format!(
        r#"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[upstreams.app]
servers = ["{dying}", "{}"]
"#,
        good.addr
    )));
    let web = rlb.listener_addr("web").unwrap();
    let client = client();
    let url = format!("http://{web}/echo");

    // Round robin sends every other request to the dying server first.
    for _ in 0..4 {
        let response = client.get(&url).send().await.expect("GET");
        assert_eq!(
            response.status(),
            200,
            "a GET is retried on the other server"
        );
    }
    let after_gets = received.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_gets >= 1, "no GET reached the dying server");
    assert_eq!(good.hits(), 4);

    let mut failed = 0;
    for i in 0..4 {
        let response = client
            .post(&url)
            .body(format!("order {i}"))
            .send()
            .await
            .expect("POST");
        match response.status().as_u16() {
            200 => assert_eq!(response.text().await.unwrap(), format!("order {i}")),
            502 => failed += 1,
            other => panic!("POST answered {other}"),
        }
    }
    let posts_to_dying = received.load(std::sync::atomic::Ordering::SeqCst) - after_gets;
    assert!(failed >= 1, "no POST reached the dying server");
    assert_eq!(failed, posts_to_dying, "each failed POST was sent once");
    assert_eq!(
        good.hits() - 4,
        4 - failed,
        "a POST that reached the dying server was sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_response_timeout_gives_504() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, "response_timeout = \"200ms\""));
    let web = rlb.listener_addr("web").unwrap();
    let (status, body) = get(web, "/slow?ms=3000").await;
    assert_eq!(status, 504);
    assert!(body.contains("gateway timeout"), "504 body: {body}");
    assert_eq!(a.hits(), 1, "a timed-out request is not sent again");
    assert_eq!(get(web, "/").await, (200, "a".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_slow_server() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, "response_timeout = \"1s\""));
    let web = rlb.listener_addr("web").unwrap();
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 250\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // The client takes 2.5 s to send its body, never pausing long; the server answers
    // at once when it has it all.
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(&[b'x'; 10]).await.is_err() {
            break;
        }
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("250 bytes"), "{response}");

    // An upload that stalls still ends, as a 504 after the response timeout.
    let mut stream = TcpStream::connect(web).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 504"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_of_130_dead_servers_answers_502() {
    // Distinct loopback addresses on one free port: every connect is refused.
    let port = dead_addr().port();
    let servers: Vec<String> = (2..132)
        .map(|i| format!("\"127.0.0.{i}:{port}\""))
        .collect();
    let rlb = start(&config(&format!(
        r#"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[upstreams.app]
servers = [{}]
"#,
        servers.join(", ")
    )));
    let web = rlb.listener_addr("web").unwrap();
    let (status, body) = get(web, "/").await;
    assert_eq!(status, 502);
    assert!(body.contains("could not connect"), "502 body: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_gets_400_and_the_connection_closes() {
    let a = TestServer::start("a").await;
    let rlb = start(&web_to_app(a.addr, ""));
    let web = rlb.listener_addr("web").unwrap();
    // raw_http reads until the connection closes.
    let response = raw_http(web, "THIS IS NOT HTTP\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    let response = raw_http(web, "GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(a.hits(), 0);
    assert_eq!(get(web, "/").await, (200, "a".to_string()));
}
