//! The client is answered in its own HTTP version, whatever the server speaks: behind
//! an HTTP/1.0 server, or one that ends its body by closing, an HTTP/1.1 client keeps
//! its connection, and the body comes chunked.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::rlb::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A server that reads a request head, writes `response` and closes, for every
/// connection: the body is delimited by the close.
async fn closing_server(response: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Two GETs on one HTTP/1.1 client connection to rlb; each answer's version,
/// `Transfer-Encoding` and body.
async fn two_requests_on_one_connection(web: SocketAddr) -> Vec<(Version, String, String)> {
    let stream = TcpStream::connect(web).await.expect("connect to rlb");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut answers = Vec::new();
    for n in 0..2 {
        sender
            .ready()
            .await
            .unwrap_or_else(|e| panic!("rlb closed the client connection before request {n}: {e}"));
        let request = Request::get("/")
            .header(header::HOST, "app.test")
            .body(Empty::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let encoding = response
            .headers()
            .get(header::TRANSFER_ENCODING)
            .map(|v| v.to_str().unwrap_or("").to_string())
            .unwrap_or_default();
        let version = response.version();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        answers.push((
            version,
            encoding,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
    answers
}

fn one_listener(server: SocketAddr) -> String {
    format!(
        "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{server}\"]\n"
    )
}

/// Two keep-alive requests through rlb to a server that answers `response` and
/// closes: each answer is HTTP/1.1, chunked, with the server's body.
async fn answered_in_http_1_1_on_one_connection(response: &'static str, body: &str) {
    let rlb = start(&one_listener(closing_server(response).await));
    let answers = two_requests_on_one_connection(rlb.listener_addr("web").unwrap()).await;
    for answer in answers {
        assert_eq!(
            answer,
            (Version::HTTP_11, "chunked".to_string(), body.to_string())
        );
    }
}

#[tokio::test]
async fn an_http_1_0_server_answers_an_http_1_1_client_in_http_1_1_and_keeps_it_alive() {
    let response = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from 1.0";
    answered_in_http_1_1_on_one_connection(response, "hello from 1.0").await;
}

#[tokio::test]
async fn a_body_delimited_by_the_servers_close_goes_on_chunked() {
    let response = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close";
    answered_in_http_1_1_on_one_connection(response, "until the close").await;
}

/// An HTTP/1.0 client still gets HTTP/1.0, its body ended by rlb closing.
#[tokio::test]
async fn an_http_1_0_client_gets_http_1_0() {
    let server =
        closing_server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close").await;
    let rlb = start(&one_listener(server));
    let response = raw_http(
        rlb.listener_addr("web").unwrap(),
        "GET / HTTP/1.0\r\nHost: app.test\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nuntil the close"), "{response}");
}
