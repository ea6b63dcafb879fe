//! Reloads of the control plane: under load, with tunnels and sessions open, with a bad
//! file, with listeners coming and going; graceful shutdown; SIGHUP to the real binary;
//! `watch_config` with a file replaced by rename.
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use support::admin::*;
use support::process::RlbCommand;
use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Everything rlb logs at warn and above in this test process, so a test can look for
/// the `lb.toml:LINE:COL` of a failed reload in the log itself.
fn captured_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let log = LOG.get_or_init(Mutex::default);
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(|| Capture)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    log
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        captured_log()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured_log().lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// Writes `lb.toml` in `dir` and returns its path.
fn write_config(dir: &TempDir, text: &str) -> std::path::PathBuf {
    dir.file("lb.toml", text)
}

/// A tcp session through rlb that echoes: sends `text`, reads as many bytes back.
async fn tcp_roundtrip(stream: &mut TcpStream, text: &str) -> String {
    stream.write_all(text.as_bytes()).await.expect("tcp send");
    let mut back = vec![0u8; text.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("tcp echo in time")
        .expect("tcp echo");
    String::from_utf8_lossy(&back).into_owned()
}

/// One keep-alive client connection, to send several requests over the same socket.
async fn keepalive(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(connection);
    sender
}

async fn send(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    sender.ready().await.expect("connection still open");
    let request = http::Request::get(path)
        .header(http::header::HOST, "rlb.test")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Six clients sending requests in a loop through `web` (three on keep-alive
/// connections, three opening one per request) while the file is reloaded 60 times at
/// 10 per second; every reload changes something: server `c` comes and goes,
/// `b`'s weight changes, a second listener comes and goes. No request may fail, and
/// `c`, added by the last reload, gets traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_reloads_under_load_fail_no_request() {
    const RELOADS: usize = 60;
    const CLIENTS: usize = 6;
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c = TestServer::start("c").await;
    let dir = TempDir::new("reload-load");
    let config = |i: usize| {
        let c_server = if i.is_multiple_of(2) && i > 0 {
            format!(", \"{}\"", c.addr)
        } else {
            String::new()
        };
        let extra = if i % 2 == 1 {
            "[listeners.extra]\nbind = \"127.0.0.1:0\"\nroutes = [{ upstream = \"app\" }]\n"
        } else {
            ""
        };
        format!(
            r#"
[admin]
bind = "127.0.0.1:0"

[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
{extra}
[upstreams.app]
servers = ["{a}", {{ addr = "{b}", weight = {weight} }}{c_server}]

[upstreams.app.health]
check = "http"
path = "/healthz"
interval = "200ms"
"#,
            a = a.addr,
            b = b.addr,
            weight = 1 + i % 3,
        )
    };
    let path = write_config(&dir, &config(0));
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();
    let first = rlb.generation();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            // Half keep their connection, half open one per request, so the listener
            // keeps accepting through the reloads.
            let http = if n % 2 == 0 {
                client()
            } else {
                reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap()
            };
            while !stop.load(Ordering::Relaxed) {
                match http.get(format!("http://{web}/")).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(format!("body: {e}"));
                            continue;
                        }
                    },
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        failures.lock().unwrap().push(format!("{status}: {text}"));
                        continue;
                    }
                    Err(e) => {
                        failures.lock().unwrap().push(format!("error: {e:?}"));
                        continue;
                    }
                };
            }
        }));
    }
    eventually("the clients get answers", WAIT, || async {
        ok.load(Ordering::Relaxed) >= CLIENTS
    })
    .await;

    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    for i in 1..=RELOADS {
        ticks.tick().await;
        write_config(&dir, &config(i));
        // Half through the admin API, half as SIGHUP would.
        if i.is_multiple_of(2) {
            let (code, body) = admin_reload(admin).await;
            assert_eq!(code, 200, "reload {i}: {body}");
        } else {
            rlb.reload()
                .await
                .unwrap_or_else(|e| panic!("reload {i} failed: {e}"));
        }
        assert_eq!(
            rlb.generation(),
            first + i as u64,
            "one generation per reload"
        );
    }
    // `c` came with the last reload; it gets traffic while the clients go on.
    let c_before = c.hits();
    eventually(
        "the server added by the last reload gets traffic",
        WAIT,
        || async { c.hits() > c_before },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let requests = ok.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap().clone();
    println!(
        "FIGURE reload-under-load: reloads={RELOADS} clients={CLIENTS} requests={} failures={}",
        requests + failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads, first ones: {:?}",
        failures.len(),
        requests + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(a.hits() > 0 && b.hits() > 0);
    assert_eq!(
        status(admin).await["config_generation"],
        first + RELOADS as u64
    );
    let reloads_ok = named(&events(admin).await, "reload_ok").len();
    assert_eq!(reloads_ok, RELOADS, "one reload_ok event per reload");
}

/// A server added by a reload gets traffic, and one removed by it gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_added_by_reload_gets_traffic() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = TempDir::new("reload-add");
    let config = |servers: &str| {
        format!(
            "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [upstreams.app]\nservers = [{servers}]\n"
        )
    };
    let path = write_config(&dir, &config(&format!("\"{}\"", a.addr)));
    let rlb = start_file(&path);
    let web = rlb.listener_addr("web").unwrap();
    assert_eq!(get(web, "/").await, (200, "a".to_string()));

    write_config(&dir, &config(&format!("\"{}\", \"{}\"", a.addr, b.addr)));
    rlb.reload().await.expect("reload");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(get(web, "/").await.1);
    }
    assert!(
        seen.contains("b"),
        "b never answered after the reload: {seen:?}"
    );

    write_config(&dir, &config(&format!("\"{}\"", b.addr)));
    rlb.reload().await.expect("reload");
    let a_before = a.hits();
    for _ in 0..4 {
        assert_eq!(get(web, "/").await, (200, "b".to_string()));
    }
    assert_eq!(a.hits(), a_before, "a removed server still got requests");
}

/// A WebSocket and a tcp session opened before 30 reloads still echo after each batch
/// of them, although every other reload removes the very servers they are connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_tcp_session_outlive_reloads() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let (echo1, _stop1) = tcp_echo_server().await;
    let (echo2, _stop2) = tcp_echo_server().await;
    let dir = TempDir::new("reload-tunnels");
    let config = |i: usize| {
        let (app, echo) = if i.is_multiple_of(2) {
            (a.addr, echo1)
        } else {
            (b.addr, echo2)
        };
        format!(
            r#"
[listeners.web]
bind = "127.0.0.1:0"
idle_timeout = "{idle}s"
routes = [{{ upstream = "app" }}]

[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "echo"

[upstreams.app]
servers = ["{app}"]

[upstreams.echo]
servers = ["{echo}"]
"#,
            idle = 60 + i,
        )
    };
    let path = write_config(&dir, &config(0));
    let rlb = start_file(&path);
    let web = rlb.listener_addr("web").unwrap();
    let raw = rlb.listener_addr("raw").unwrap();

    let mut ws = websocket(web).await;
    assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "a");
    let mut tcp = TcpStream::connect(raw).await.unwrap();
    assert_eq!(tcp_roundtrip(&mut tcp, "before").await, "before");

    for batch in 0..3 {
        for i in 1..=10 {
            write_config(&dir, &config(batch * 10 + i));
            rlb.reload().await.expect("reload");
        }
        let text = format!("after batch {batch}");
        assert_eq!(ws_roundtrip(&mut ws, &text).await, text);
        assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "a");
        assert_eq!(tcp_roundtrip(&mut tcp, &text).await, text);
    }
    // The last reload (30) went back to a; one more takes it out of the file.
    write_config(&dir, &config(31));
    rlb.reload().await.expect("reload");
    assert_eq!(get(web, "/").await, (200, "b".to_string()));
    assert_eq!(ws_roundtrip(&mut ws, "still here").await, "still here");
    assert_eq!(tcp_roundtrip(&mut tcp, "still here").await, "still here");
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "unexpected bytes after the echo: {rest:?}");
}

/// least_conn balances on open tunnels: the counts of open WebSockets survive a reload,
/// so the server the reload adds takes the next ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_counts_of_open_websockets_survive_reload() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c = TestServer::start("c").await;
    let dir = TempDir::new("reload-least-conn");
    let config = |servers: &[SocketAddr]| {
        let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
        format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n\
             [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"chat\" }}]\n\
             [upstreams.chat]\nbalance = \"least_conn\"\nservers = [{}]\n",
            servers.join(", ")
        )
    };
    let path = write_config(&dir, &config(&[a.addr, b.addr]));
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();

    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut ws = websocket(web).await;
        let name = ws_roundtrip(&mut ws, "whoami").await;
        sockets.push((name, ws));
    }
    let on = |name: &str| sockets.iter().filter(|(n, _)| n == name).count();
    assert_eq!(
        (on("a"), on("b")),
        (2, 2),
        "least_conn spreads 4 WebSockets 2/2"
    );
    let counts = |status: &serde_json::Value| {
        [a.addr, b.addr].map(|addr| {
            find_server(status, "chat", addr).expect("server listed")["active_connections"]
                .as_u64()
                .unwrap()
        })
    };
    let before = counts(&status(admin).await);
    assert_eq!(before, [2, 2]);
    assert_eq!(active(&rlb, "chat", a.addr), 2);

    write_config(&dir, &config(&[a.addr, b.addr, c.addr]));
    rlb.reload().await.expect("reload");
    let after = status(admin).await;
    assert_eq!(
        counts(&after),
        before,
        "a reload changed the open connection counts"
    );
    assert_eq!(active(&rlb, "chat", a.addr), 2);
    assert_eq!(active(&rlb, "chat", b.addr), 2);

    // With the counts kept, the new server has the fewest and takes the next two.
    for _ in 0..2 {
        let mut ws = websocket(web).await;
        assert_eq!(ws_roundtrip(&mut ws, "whoami").await, "c");
        sockets.push(("c".to_string(), ws));
    }
    for (name, ws) in &mut sockets {
        assert_eq!(ws_roundtrip(ws, "whoami").await, *name);
    }
    // Closing them brings the counts back to zero: the guards live in the tunnels.
    drop(sockets);
    eventually("every count back to zero", WAIT, || async {
        [a.addr, b.addr, c.addr]
            .iter()
            .all(|&s| active(&rlb, "chat", s) == 0)
    })
    .await;
}

/// An invalid file changes nothing: rlb keeps serving the running configuration, the
/// 400 of `POST /reload`, the log and the event name `lb.toml:LINE:COL`, and the failure
/// counter goes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_keeps_serving_and_names_the_lines() {
    let _ = captured_log();
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = TempDir::new("reload-invalid");
    let good = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{}\"]\n",
        a.addr
    );
    let path = write_config(&dir, &good);
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();
    let generation = rlb.generation();

    // Line 5: an unknown upstream; line 7: a bad balance; line 10: an unknown key. The
    // file also adds b, which must not take effect.
    let bad = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"nope\" }}]\n\
         [upstreams.app]\nbalance = \"fastest\"\nservers = [\"{}\", \"{}\"]\n\
         [upstreams.other]\nretries = 3\nservers = [\"{}\"]\n",
        a.addr, b.addr, b.addr
    );
    write_config(&dir, &bad);
    let (code, body) = admin_reload(admin).await;
    assert_eq!(code, 400, "POST /reload with a bad file: {body}");
    for line in ["lb.toml:5:", "lb.toml:7:", "lb.toml:10:"] {
        assert!(body.contains(line), "the 400 does not name {line}:\n{body}");
    }
    assert!(body.contains("nope"), "{body}");
    assert_eq!(
        rlb.generation(),
        generation,
        "a bad file changed the generation"
    );
    for _ in 0..4 {
        assert_eq!(get(web, "/").await, (200, "a".to_string()));
    }
    assert_eq!(b.hits(), 0, "a server of the rejected file got traffic");

    let log = log_text();
    for line in ["lb.toml:5:", "lb.toml:7:", "lb.toml:10:"] {
        assert!(
            log.lines()
                .any(|l| l.contains("reload failed") && l.contains(line)),
            "the log does not name {line}:\n{log}"
        );
    }
    let events = events(admin).await;
    let failed = named(&events, "reload_failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(
        failed[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("lb.toml:7:")),
        "{:?}",
        failed[0]
    );
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rlb_reloads_total{result=\"failed\"} 1")),
        "no failed reload counted:\n{metrics}"
    );

    // A direct reload says the same, and a good file afterwards is taken.
    let error = rlb
        .reload()
        .await
        .expect_err("the file is still bad")
        .to_string();
    assert!(error.contains("lb.toml:5:"), "{error}");
    write_config(
        &dir,
        &good.replace(&format!("\"{}\"", a.addr), &format!("\"{}\"", b.addr)),
    );
    let (code, body) = admin_reload(admin).await;
    assert_eq!(code, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["config_generation"], generation + 1);
    assert_eq!(get(web, "/").await, (200, "b".to_string()));
}

/// Listeners are diffed by name: a new one is bound and serves, a removed one refuses
/// new connections while its open ones run on, a changed bind moves, and a bind that
/// fails rejects the whole reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_added_serve_removed_refuse_and_bind_failure_rejects() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = TempDir::new("reload-listeners");
    let upstream = format!("[upstreams.app]\nservers = [\"{}\"]\n", a.addr);
    let listener = |name: &str, bind: &str| {
        format!("[listeners.{name}]\nbind = \"{bind}\"\nroutes = [{{ upstream = \"app\" }}]\n")
    };
    let admin = "[admin]\nbind = \"127.0.0.1:0\"\n";
    let path = write_config(
        &dir,
        &format!("{admin}{}{upstream}", listener("web", "127.0.0.1:0")),
    );
    let rlb = start_file(&path);
    let api = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();

    // Added: bound and serving.
    write_config(
        &dir,
        &format!(
            "{admin}{}{}{upstream}",
            listener("web", "127.0.0.1:0"),
            listener("extra", "127.0.0.1:0")
        ),
    );
    rlb.reload().await.expect("reload adding a listener");
    assert_eq!(
        rlb.listener_addr("web"),
        Some(web),
        "an unchanged listener moved"
    );
    let extra = rlb.listener_addr("extra").expect("extra is listening");
    assert_eq!(get(extra, "/").await, (200, "a".to_string()));
    let listed = status(api).await;
    assert_eq!(listed["listeners"]["extra"]["addr"], extra.to_string());

    // Removed: a connection opened before keeps working, new ones are refused.
    let mut open = keepalive(web).await;
    assert_eq!(send(&mut open, "/").await, (200, "a".to_string()));
    write_config(
        &dir,
        &format!("{admin}{}{upstream}", listener("extra", "127.0.0.1:0")),
    );
    rlb.reload().await.expect("reload removing a listener");
    eventually("the removed listener refuses", WAIT, || refused(web)).await;
    assert_eq!(send(&mut open, "/").await, (200, "a".to_string()));
    assert_eq!(rlb.listener_addr("web"), None);
    assert!(status(api).await["listeners"].get("web").is_none());
    assert_eq!(get(extra, "/").await, (200, "a".to_string()));

    // A bind that fails rejects everything in the file, b included.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let generation = rlb.generation();
    write_config(
        &dir,
        &format!(
            "{admin}{}{}[upstreams.app]\nservers = [\"{}\"]\n",
            listener("extra", "127.0.0.1:0"),
            listener("clash", &taken_addr.to_string()),
            b.addr
        ),
    );
    let (code, body) = admin_reload(api).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("clash") && body.contains(&taken_addr.to_string()),
        "the 400 does not say which bind failed: {body}"
    );
    assert_eq!(rlb.generation(), generation);
    assert_eq!(rlb.listener_addr("clash"), None);
    assert_eq!(get(extra, "/").await, (200, "a".to_string()));
    assert_eq!(b.hits(), 0);
    drop(taken);

    // A changed bind: the new address serves, the old one refuses.
    let moved = dead_addr();
    write_config(
        &dir,
        &format!("{admin}{}{upstream}", listener("extra", &moved.to_string())),
    );
    rlb.reload().await.expect("reload moving a listener");
    assert_eq!(rlb.listener_addr("extra"), Some(moved));
    assert_eq!(get(moved, "/").await, (200, "a".to_string()));
    eventually("the old address refuses", WAIT, || refused(extra)).await;

    let events = events(api).await;
    let added: Vec<_> = named(&events, "listener_added")
        .iter()
        .map(|e| e["listener"].as_str().unwrap_or("").to_string())
        .collect();
    let removed: Vec<_> = named(&events, "listener_removed")
        .iter()
        .map(|e| e["listener"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(added, ["extra", "extra"], "{events:?}");
    assert_eq!(removed, ["web"], "{events:?}");
}

/// Graceful shutdown (in-process): listeners stop accepting at once, the request in
/// flight is answered, and only then does `shutdown` return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_answers_the_request_in_flight() {
    let a = TestServer::start("a").await;
    let rlb = start(&format!(
        "[global]\nshutdown_timeout = \"20s\"\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{}\"]\n",
        a.addr
    ));
    let web = rlb.listener_addr("web").unwrap();
    let request = tokio::spawn(async move { get(web, "/slow?ms=1500").await });
    eventually("the slow request is in flight", WAIT, || async {
        active(&rlb, "app", a.addr) == 1
    })
    .await;
    let stopping = rlb.clone();
    let shutdown = tokio::spawn(async move {
        stopping.shutdown().await;
        // What is still open when shutdown says it is done.
        (
            active(&stopping, "app", a.addr),
            stopping.open_connections(),
        )
    });
    eventually("the listener refuses during shutdown", WAIT, || {
        refused(web)
    })
    .await;
    let answer = request.await.unwrap();
    assert_eq!(
        answer,
        (200, "a".to_string()),
        "the in-flight request was cut"
    );
    let (active_then, open_then) = shutdown.await.unwrap();
    assert_eq!(
        (active_then, open_then),
        (0, 0),
        "shutdown returned with the request still in flight"
    );
}

/// SIGHUP to the real binary reloads its file: the generation in its admin /status goes
/// up by one and a server added by the file gets traffic; a bad file is logged with its
/// `lb.toml:LINE:COL` and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = TempDir::new("reload-sighup");
    let config = |servers: &str| {
        format!(
            "[global]\nworkers = 1\n\
             [admin]\nbind = \"127.0.0.1:0\"\n\
             [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [upstreams.app]\nservers = [{servers}]\n"
        )
    };
    let path = write_config(&dir, &config(&format!("\"{}\"", a.addr)));
    let rlb = RlbCommand::file(&path).spawn();
    let web = rlb.wait_addr(&["listening", "listener=web"]).await;
    let admin = rlb.admin_addr().await;
    assert_eq!(get(web, "/").await, (200, "a".to_string()));
    let first = status(admin).await["config_generation"].as_u64().unwrap();

    write_config(&dir, &config(&format!("\"{}\"", b.addr)));
    rlb.signal("HUP");
    eventually("the generation goes up after SIGHUP", WAIT, || async {
        status(admin).await["config_generation"].as_u64() == Some(first + 1)
    })
    .await;
    assert_eq!(get(web, "/").await, (200, "b".to_string()));

    // Line 7 names an upstream that does not exist.
    write_config(
        &dir,
        &config(&format!("\"{}\"", a.addr)).replace("upstream = \"app\"", "upstream = \"ghost\""),
    );
    rlb.signal("HUP");
    eventually("the bad file is logged with its line", WAIT, || async {
        rlb.log()
            .lines()
            .any(|l| l.contains("reload failed") && l.contains("lb.toml:7:"))
    })
    .await;
    assert_eq!(
        status(admin).await["config_generation"].as_u64(),
        Some(first + 1),
        "a bad file changed the generation"
    );
    assert_eq!(get(web, "/").await, (200, "b".to_string()));
    let events = events(admin).await;
    assert_eq!(named(&events, "reload_ok").len(), 1, "{events:?}");
    assert_eq!(named(&events, "reload_failed").len(), 1, "{events:?}");
}

/// `watch_config = true`: replacing the file by rename (as editors and config tools
/// do) reloads it, and so does the next replacement of the new file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_config_reloads_a_file_replaced_by_rename() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let dir = TempDir::new("reload-watch");
    let config = |server: SocketAddr| {
        format!(
            "[global]\nwatch_config = true\n\
             [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [upstreams.app]\nservers = [\"{server}\"]\n"
        )
    };
    let path = write_config(&dir, &config(a.addr));
    let rlb = start_file(&path);
    let web = rlb.listener_addr("web").unwrap();
    let first = rlb.generation();
    assert_eq!(get(web, "/").await, (200, "a".to_string()));

    let replace = |server: SocketAddr| {
        let temporary = dir.file("lb.toml.new", &config(server));
        std::fs::rename(&temporary, &path).expect("rename over lb.toml");
    };
    replace(b.addr);
    eventually("the renamed file is loaded", WAIT, || async {
        rlb.generation() == first + 1
    })
    .await;
    assert_eq!(get(web, "/").await, (200, "b".to_string()));

    replace(a.addr);
    eventually("the next replacement is loaded too", WAIT, || async {
        rlb.generation() == first + 2
    })
    .await;
    assert_eq!(get(web, "/").await, (200, "a".to_string()));

    // An in-place rewrite is a change as well.
    write_config(&dir, &config(b.addr));
    eventually("the rewritten file is loaded", WAIT, || async {
        rlb.generation() == first + 3
    })
    .await;
    assert_eq!(get(web, "/").await, (200, "b".to_string()));
}

/// A listener renamed with the same bind keeps its socket: clients opening a new
/// connection for every request see no refusal and no reset across 20 renames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_listener_keeps_its_socket() {
    let a = TestServer::start("a").await;
    let dir = TempDir::new("reload-rename");
    let bind = dead_addr();
    let config = |i: usize| {
        format!(
            "[listeners.web{i}]\nbind = \"{bind}\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [upstreams.app]\nservers = [\"{}\"]\n",
            a.addr
        )
    };
    let path = write_config(&dir, &config(0));
    let rlb = start_file(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                match http.get(format!("http://{bind}/")).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.lock().unwrap().push(r.status().to_string()),
                    Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    eventually("the clients get answers", WAIT, || async {
        ok.load(Ordering::Relaxed) >= 4
    })
    .await;
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    for i in 1..=20 {
        ticks.tick().await;
        write_config(&dir, &config(i));
        rlb.reload().await.expect("reload renaming the listener");
        assert_eq!(rlb.listener_addr(&format!("web{i}")), Some(bind));
    }
    let done = ok.load(Ordering::Relaxed);
    eventually("requests after the last rename", WAIT, || async {
        ok.load(Ordering::Relaxed) > done + 4
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} requests failed across renames, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

/// The admin listener follows the file too: a reload asked through the old admin
/// address is answered there, then the new address serves and the old one refuses; a
/// file without `[admin]` closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_moves_with_the_file() {
    let a = TestServer::start("a").await;
    let dir = TempDir::new("reload-admin");
    let config = |admin: &str| {
        format!(
            "{admin}[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [upstreams.app]\nservers = [\"{}\"]\n",
            a.addr
        )
    };
    let path = write_config(&dir, &config("[admin]\nbind = \"127.0.0.1:0\"\n"));
    let rlb = start_file(&path);
    let old = rlb.admin_addr().unwrap();
    let moved = dead_addr();
    write_config(&dir, &config(&format!("[admin]\nbind = \"{moved}\"\n")));
    let (code, body) = admin_post(old, "/reload", "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(rlb.admin_addr(), Some(moved));
    assert_eq!(status(moved).await["config_generation"], rlb.generation());
    eventually("the old admin address refuses", WAIT, || refused(old)).await;

    write_config(&dir, &config(""));
    let (code, body) = admin_post(moved, "/reload", "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(rlb.admin_addr(), None);
    eventually("no admin listener any more", WAIT, || refused(moved)).await;
    let web = rlb.listener_addr("web").unwrap();
    assert_eq!(get(web, "/").await, (200, "a".to_string()));
}

/// A reload that turns an http listener into a tcp one (same bind) leaves an open
/// keep-alive connection on the routes it was accepted with; new connections get tcp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_http_connection_keeps_its_routes_when_the_listener_turns_tcp() {
    let app = TestServer::start("app").await;
    let (echo, _stop) = tcp_echo_server().await;
    let dir = TempDir::new("mode-switch");
    let servers = format!(
        "[upstreams.app]\nservers = [\"{}\"]\n[upstreams.echo]\nservers = [\"{echo}\"]\n",
        app.addr
    );
    let http = format!(
        "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n{servers}"
    );
    let path = dir.file("lb.toml", &http);
    let rlb = start_file(&path);
    let web = rlb.listener_addr("web").unwrap();
    let client = client();
    let get = |client: reqwest::Client| async move {
        let r = client
            .get(format!("http://{web}/"))
            .send()
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(get(client.clone()).await, (200, "app".to_string()));
    std::fs::write(&path, format!("[listeners.web]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"echo\"\n{servers}")).unwrap();
    rlb.reload().await.expect("reload to tcp");
    assert_eq!(app.connections(), 1);
    assert_eq!(get(client).await, (200, "app".to_string()));
    let mut raw = tokio::net::TcpStream::connect(web).await.unwrap();
    raw.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    raw.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
}
