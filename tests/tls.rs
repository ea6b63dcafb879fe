//! TLS termination end to end over real sockets, with certificates made in each test:
//! https and tcp over TLS, the certificate chosen by SNI, `min_version`, client
//! certificates, session resumption kept per client-auth policy, the handshake
//! timeout, garbage instead of a ClientHello, and certificates reloaded (or a bad
//! reload refused) while a connection stays open.
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
use support::admin::{admin_reload, events, named};
use support::rlb::*;
use support::tls::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "app.example.test";

/// `certificates = [...]` for these (cert, key) paths.
fn certificates(files: &[(PathBuf, PathBuf)]) -> String {
    let list: Vec<String> = files
        .iter()
        .map(|(cert, key)| format!("{{ cert = {cert:?}, key = {key:?} }}"))
        .collect();
    format!("certificates = [{}]", list.join(", "))
}

/// An https listener `web` in front of `server`, its `tls` table `certificates` plus
/// `extra` lines; the admin API on port 0.
fn https_config(server: SocketAddr, certificates: &str, extra: &str) -> String {
    format!(
        r#"[global]
access_log = false
[admin]
bind = "127.0.0.1:0"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[listeners.web.tls]
{certificates}
{extra}
[upstreams.app]
servers = ["{server}"]
"#
    )
}

/// A CA, a certificate for `HOST` written into `dir`, and rlb serving it before a
/// test server named `s1`.
async fn https_rlb(dir: &TempDir, extra: &str) -> (Ca, Leaf, TestServer, rlb::Rlb) {
    let (ca, leaf, certs) = host_certificate(dir);
    let server = TestServer::start("s1").await;
    let rlb = start(&https_config(server.addr, &certs, extra));
    (ca, leaf, server, rlb)
}

/// A CA and its certificate for `HOST`, written into `dir` as `app.pem` and `app.key`,
/// with the `certificates = [...]` line that names them.
fn host_certificate(dir: &TempDir) -> (Ca, Leaf, String) {
    let ca = Ca::new("test CA");
    let leaf = ca.server(&[HOST]);
    let certs = certificates(&[leaf.write(dir, "app")]);
    (ca, leaf, certs)
}

/// `LINE:COL` (1-based) of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> String {
    let at = text.find(needle).expect("needle in text");
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{line}:{col}")
}

#[tokio::test]
async fn an_https_request_is_served_and_the_server_sees_x_forwarded_proto_https() {
    let dir = TempDir::new("tls-https");
    let (ca, _leaf, _server, rlb) = https_rlb(&dir, "").await;
    let addr = rlb.listener_addr("web").unwrap();
    let stream = connect(addr, HOST, trusting(&ca)).await.expect("handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut http = http1(stream).await;
    let (status, headers) = get_on(&mut http, HOST, "/headers").await.unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains("x-forwarded-proto: https\n"), "{headers}");
    let status = rlb.status();
    let tls = &status["listeners"]["web"]["tls"];
    assert_eq!(tls["certificates"], serde_json::json!([[HOST]]), "{status}");
    assert_eq!(tls["alpn"], serde_json::json!(["http/1.1"]));
    assert_eq!(tls["client_certificates"], false);
    // Keep-alive: a second request on the same TLS connection.
    assert_eq!(
        get_on(&mut http, HOST, "/").await.unwrap(),
        (200, "s1".into())
    );
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_exact_then_wildcard_else_the_first() {
    let dir = TempDir::new("tls-sni");
    let ca = Ca::new("test CA");
    let a = ca.server(&["a.example.test"]);
    let b = ca.server(&["*.b.example.test"]);
    let files = [a.write(&dir, "a"), b.write(&dir, "b")];
    let server = TestServer::start("s1").await;
    let rlb = start(&https_config(server.addr, &certificates(&files), ""));
    let addr = rlb.listener_addr("web").unwrap();
    let cases = [
        ("a.example.test", &a),
        ("x.b.example.test", &b),
        ("X.B.Example.TEST", &b),
        // A wildcard covers one label: neither the bare name nor two labels.
        ("b.example.test", &a),
        ("y.x.b.example.test", &a),
        ("unknown.example.test", &a),
        // An IP address sends no SNI.
        ("127.0.0.1", &a),
    ];
    for (sni, want) in cases {
        let stream = connect(addr, sni, any_certificate()).await.expect(sni);
        assert!(
            peer_certificate(&stream) == want.der,
            "SNI {sni}: the wrong certificate"
        );
    }
    // A client that verifies: the wildcard certificate is valid for its name.
    let (status, _) = https_get(addr, "x.b.example.test", trusting(&ca))
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let dir = TempDir::new("tls-version");
    let (ca, _leaf, _server, rlb) = https_rlb(&dir, "min_version = \"1.3\"").await;
    let addr = rlb.listener_addr("web").unwrap();
    let old = client_with(Some(&ca), TLS12_ONLY, None);
    assert!(
        connect(addr, HOST, old).await.is_err(),
        "a TLS 1.2 client got in"
    );
    let new = client_with(Some(&ca), TLS13_ONLY, None);
    assert_eq!(https_get(addr, HOST, new).await.unwrap().0, 200);
    // The default (1.2) lets the same TLS 1.2 client in.
    let dir = TempDir::new("tls-version-default");
    let (ca, _leaf, _server, rlb) = https_rlb(&dir, "").await;
    let addr = rlb.listener_addr("web").unwrap();
    let old = client_with(Some(&ca), TLS12_ONLY, None);
    assert_eq!(https_get(addr, HOST, old).await.unwrap().0, 200);
}

#[tokio::test]
async fn with_client_ca_only_clients_with_a_certificate_it_signed_are_served() {
    let dir = TempDir::new("tls-mtls");
    let clients = Ca::new("clients CA");
    let ca_file = clients.write(&dir, "clients.pem");
    let extra = format!("client_ca = {ca_file:?}");
    let (ca, _leaf, _server, rlb) = https_rlb(&dir, &extra).await;
    let addr = rlb.listener_addr("web").unwrap();
    let good = clients.client("client.example.test");
    let with_cert = client_with(Some(&ca), ANY_VERSION, Some(&good));
    assert_eq!(
        https_get(addr, HOST, with_cert).await.unwrap(),
        (200, "s1".into())
    );
    let without = https_get(addr, HOST, trusting(&ca)).await;
    assert!(
        without.is_err(),
        "served without a client certificate: {without:?}"
    );
    let stranger = Ca::new("another CA").client("client.example.test");
    let other = client_with(Some(&ca), ANY_VERSION, Some(&stranger));
    let refused = https_get(addr, HOST, other).await;
    assert!(
        refused.is_err(),
        "served with a certificate of another CA: {refused:?}"
    );
}

/// Connects with `config` and has `GET /` answered 200 (which also makes the client
/// read the session ticket that follows the handshake): how the handshake went.
async fn served(addr: SocketAddr, config: std::sync::Arc<rustls::ClientConfig>) -> HandshakeKind {
    let stream = connect(addr, HOST, config).await.expect("handshake");
    let kind = stream.get_ref().1.handshake_kind().expect("handshake done");
    let answer = get_on(&mut http1(stream).await, HOST, "/").await;
    assert_eq!(answer.map(|(status, _)| status), Ok(200));
    kind
}

#[tokio::test]
async fn a_second_connection_resumes_its_session() {
    let dir = TempDir::new("tls-resume");
    let (ca, _leaf, _server, rlb) = https_rlb(&dir, "").await;
    let addr = rlb.listener_addr("web").unwrap();
    // One client config holds one session cache.
    let config = trusting(&ca);
    assert_eq!(served(addr, config.clone()).await, HandshakeKind::Full);
    assert_eq!(served(addr, config).await, HandshakeKind::Resumed);
}

#[tokio::test]
async fn a_session_from_a_listener_without_client_auth_does_not_open_an_mtls_one() {
    let dir = TempDir::new("tls-policies");
    let (ca, _leaf, certs) = host_certificate(&dir);
    let clients = Ca::new("clients CA").write(&dir, "clients.pem");
    let server = TestServer::start("s1").await;
    let rlb = start(&format!(
        r#"[listeners.open]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[listeners.open.tls]
{certs}
[listeners.mtls]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[listeners.mtls.tls]
{certs}
client_ca = {clients:?}
[upstreams.app]
servers = ["{}"]
"#,
        server.addr
    ));
    let config = trusting(&ca);
    let open = rlb.listener_addr("open").unwrap();
    assert_eq!(served(open, config.clone()).await, HandshakeKind::Full);
    // The client offers its ticket for HOST to the mTLS listener, which must not take it.
    let mtls = rlb.listener_addr("mtls").unwrap();
    let refused = https_get(mtls, HOST, config.clone()).await;
    assert!(
        refused.is_err(),
        "resumed into the mTLS listener: {refused:?}"
    );
    // The open listener still resumes it.
    assert_eq!(served(open, config).await, HandshakeKind::Resumed);
}

#[tokio::test]
async fn a_tcp_listener_terminates_tls_in_front_of_an_echo_server() {
    let dir = TempDir::new("tls-tcp");
    let (ca, _leaf, certs) = host_certificate(&dir);
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&format!(
        r#"[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "echo"
[listeners.raw.tls]
{certs}
[upstreams.echo]
servers = ["{echo}"]
"#
    ));
    let addr = rlb.listener_addr("raw").unwrap();
    let mut stream = connect(addr, HOST, trusting(&ca)).await.unwrap();
    // A tcp listener offers no ALPN unless configured.
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = tokio::io::split(&mut stream);
    let writer = async {
        write.write_all(&data).await.expect("write");
        write.shutdown().await.expect("close_notify and FIN");
    };
    let reader = async {
        let mut back = Vec::new();
        read.read_to_end(&mut back).await.expect("read to the end");
        back
    };
    let ((), back) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the echo came back and the session closed");
    assert!(back == data, "the echo differs ({} bytes back)", back.len());
}

#[tokio::test]
async fn a_client_that_does_not_finish_its_handshake_is_closed_while_others_are_served() {
    let dir = TempDir::new("tls-timeout");
    let (ca, _leaf, _server, rlb) = https_rlb(&dir, "handshake_timeout = \"300ms\"").await;
    let addr = rlb.listener_addr("web").unwrap();
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Half a TLS record header, then nothing.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    assert_eq!(https_get(addr, HOST, trusting(&ca)).await.unwrap().0, 200);
    for stream in [&mut silent, &mut stalled] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "not closed: {read:?}"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too soon"
    );
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_costs_only_its_own_connection() {
    let dir = TempDir::new("tls-garbage");
    let (ca, _leaf, server, rlb) = https_rlb(&dir, "").await;
    let addr = rlb.listener_addr("web").unwrap();
    let mut open = http1(connect(addr, HOST, trusting(&ca)).await.unwrap()).await;
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the garbage connection was not closed");
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "answered in plain HTTP"
    );
    assert_eq!(server.hits(), 0);
    // The connection opened before and a new one are both served.
    assert_eq!(get_on(&mut open, HOST, "/").await.unwrap().0, 200);
    assert_eq!(https_get(addr, HOST, trusting(&ca)).await.unwrap().0, 200);
}

/// rlb started from `dir/lb.toml`, serving a certificate for `HOST` (`old`) from
/// `app.pem` and `app.key` of `dir` by relative paths, so a reload reads them again.
struct Reloadable {
    dir: TempDir,
    ca: Ca,
    old: Leaf,
    /// The text of `lb.toml`.
    text: String,
    // Bind it by name when destructuring: `..` would drop it with the rest.
    rlb: rlb::Rlb,
    addr: SocketAddr,
    _server: TestServer,
}

async fn reloadable(tag: &str) -> Reloadable {
    let dir = TempDir::new(tag);
    let ca = Ca::new("test CA");
    let old = ca.server(&[HOST]);
    old.write(&dir, "app");
    let server = TestServer::start("s1").await;
    let files = [(PathBuf::from("app.pem"), PathBuf::from("app.key"))];
    let text = https_config(server.addr, &certificates(&files), "");
    let rlb = start_file(&dir.file("lb.toml", &text));
    let addr = rlb.listener_addr("web").unwrap();
    Reloadable {
        dir,
        ca,
        old,
        text,
        rlb,
        addr,
        _server: server,
    }
}

#[tokio::test]
async fn a_reload_gives_new_handshakes_the_new_certificate_and_open_connections_keep_theirs() {
    let Reloadable {
        dir,
        ca,
        old,
        rlb,
        addr,
        _server,
        ..
    } = reloadable("tls-reload").await;
    let stream = connect(addr, HOST, trusting(&ca)).await.unwrap();
    assert!(peer_certificate(&stream) == old.der);
    let mut open = http1(stream).await;
    assert_eq!(get_on(&mut open, HOST, "/").await.unwrap().0, 200);

    let new = ca.server(&[HOST]);
    new.write(&dir, "app");
    rlb.reload().await.expect("reload with the new certificate");
    assert_eq!(
        get_on(&mut open, HOST, "/").await.unwrap(),
        (200, "s1".into())
    );
    let fresh = connect(addr, HOST, any_certificate()).await.unwrap();
    assert!(
        peer_certificate(&fresh) == new.der,
        "a new handshake got the old certificate"
    );

    let admin = rlb.admin_addr().unwrap();
    let timeline = events(admin).await;
    let reloaded = named(&timeline, "tls_reloaded");
    assert_eq!(reloaded.len(), 1, "{timeline:?}");
    assert_eq!(reloaded[0]["listener"], "web");
    assert!(reloaded[0]["detail"].as_str().unwrap().contains(HOST));
    // A reload that changes nothing says nothing.
    rlb.reload().await.expect("reload again");
    assert_eq!(named(&events(admin).await, "tls_reloaded").len(), 1);
}

#[tokio::test]
async fn a_reload_with_a_key_that_is_not_the_certificates_is_refused_and_the_old_one_serves() {
    let Reloadable {
        dir,
        ca,
        old,
        text,
        rlb,
        addr,
        _server,
        ..
    } = reloadable("tls-bad-reload").await;
    let mut open = http1(connect(addr, HOST, trusting(&ca)).await.unwrap()).await;

    let stranger = ca.server(&[HOST]);
    dir.file("app.key", &stranger.key_pem);
    let admin = rlb.admin_addr().unwrap();
    let (status, body) = admin_reload(admin).await;
    assert_ne!(status, 200, "{body}");
    let at = format!("lb.toml:{}: ", position(&text, "\"app.key\""));
    assert!(body.contains(&at), "{body} does not name {at}");
    assert!(body.contains("is not the key of the certificate"), "{body}");

    assert_eq!(get_on(&mut open, HOST, "/").await.unwrap().0, 200);
    let fresh = connect(addr, HOST, trusting(&ca)).await.unwrap();
    assert!(
        peer_certificate(&fresh) == old.der,
        "the old certificate no longer serves"
    );
    assert!(named(&events(admin).await, "tls_reloaded").is_empty());
}
