//! Health checks and failover over real sockets and real processes: http checks that
//! eject and bring back, exact rise/fall counting, a SIGKILLed and a SIGSTOPped server
//! under load, passive ejection from the data path, no server up, /status and /metrics.
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rlb::Rlb;
use support::admin::*;
use support::process::HttpProcess;
use support::rlb::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Generous: two shared cores, other test binaries running at the same time.
const WAIT: Duration = Duration::from_secs(30);

/// An http listener `web` in front of upstream `app` with an http check on /healthz.
fn http_config(servers: &[SocketAddr], health: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[upstreams.app]
servers = [{}]
[upstreams.app.health]
check = "http"
path = "/healthz"
{health}
"#,
        servers.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_healthz_is_ejected_and_comes_back() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let rlb = start(&http_config(
        &[a.addr, b.addr],
        "interval = \"100ms\"\ntimeout = \"2s\"\nrise = 2\nfall = 2",
    ));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    wait_checks(admin, "app", b.addr, 1.0, WAIT).await;

    b.set_healthy(false);
    let sick_at = now_ms();
    let down = wait_event(admin, "server_down", b.addr, 0, WAIT).await;
    eprintln!(
        "/healthz failing -> server_down: {} ms (interval 100ms x fall 2)",
        down["ts_ms"].as_u64().unwrap_or(0).saturating_sub(sick_at)
    );
    assert_eq!(down["upstream"], "app");
    assert_eq!(down["detail"], "http status 500 (2/2)", "{down}");
    let entry = server_status(admin, "app", b.addr).await;
    assert_eq!(entry["healthy"], false, "{entry}");
    assert_eq!(entry["state"], "down", "{entry}");
    assert_eq!(server_status(admin, "app", a.addr).await["state"], "up");

    let b_hits = b.hits();
    for _ in 0..10 {
        assert_eq!(get(web, "/").await, (200, "a".to_string()));
    }
    assert_eq!(b.hits(), b_hits, "an ejected server got requests");

    b.set_healthy(true);
    wait_event(admin, "server_up", b.addr, 0, WAIT).await;
    assert_eq!(server_status(admin, "app", b.addr).await["state"], "up");
    eventually("b serves again", WAIT, || async {
        get(web, "/").await.1 == "b"
    })
    .await;
    // One flip each way, logged and recorded once.
    assert_eq!(server_events(admin, "server_down", b.addr).await.len(), 1);
    assert_eq!(server_events(admin, "server_up", b.addr).await.len(), 1);
    assert!(server_events(admin, "server_down", a.addr).await.is_empty());
}

/// A health endpoint whose answers follow a script, and which notes, at each check, the
/// state rlb had given the server: the result of all the checks before it, since one
/// server's checks run one after the other. That makes rise/fall exact, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rise_and_fall_count_consecutive_results_exactly() {
    // Check n (1-based) passes unless listed; after the last, every check passes.
    const FAILING: [usize; 4] = [3, 4, 6, 10];
    const CHECKS: usize = 14;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rlb_cell: Arc<OnceLock<Rlb>> = Arc::default();
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    tokio::spawn({
        let (rlb_cell, seen) = (rlb_cell.clone(), seen.clone());
        async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                read_head(&mut stream).await;
                let rlb = loop {
                    match rlb_cell.get() {
                        Some(rlb) => break rlb,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                };
                let up = rlb.status()["upstreams"]["app"]["servers"][0]["healthy"] == true;
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(up);
                    seen.len()
                };
                let status = if FAILING.contains(&n) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        }
    });
    let rlb = start(&http_config(
        &[addr],
        // A timeout far above a local answer, so no check fails but the scripted ones.
        "interval = \"50ms\"\ntimeout = \"5s\"\nrise = 3\nfall = 2",
    ));
    let _ = rlb_cell.set(rlb.clone());
    eventually("the scripted checks ran", WAIT, || async {
        seen.lock().unwrap().len() >= CHECKS
    })
    .await;
    let seen: Vec<&str> = seen.lock().unwrap()[..CHECKS]
        .iter()
        .map(|&up| if up { "up" } else { "down" })
        .collect();
    #[rustfmt::skip]
    let expected = [
        "up", "up", "up",       // at start, after passes 1 and 2
        "up",                   // after failure 3: 1/2
        "down",                 // after failure 4: 2/2
        "down", "down",         // pass 5 (1/3), failure 6 resets it
        "down", "down",         // passes 7 (1/3) and 8 (2/3)
        "up",                   // pass 9: 3/3
        "up", "up", "up", "up", // failures 10 and 12 are not consecutive
    ];
    assert_eq!(seen, expected);
    let admin = rlb.admin_addr().unwrap();
    assert_eq!(server_events(admin, "server_down", addr).await.len(), 1);
    assert_eq!(server_events(admin, "server_up", addr).await.len(), 1);
}

/// What 8 looping clients saw.
#[derive(Default)]
struct Tally {
    by_server: HashMap<String, usize>,
    failed: Vec<String>,
}

/// Eight clients sending GET / in a loop, each on its own keep-alive connection.
struct Load {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(web: SocketAddr) -> Load {
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let clients = (0..8)
            .map(|_| {
                let (tally, stop) = (tally.clone(), stop.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::Relaxed) {
                        let result = match client.get(format!("http://{web}/")).send().await {
                            Ok(response) if response.status() == 200 => {
                                response.text().await.map_err(|e| e.to_string())
                            }
                            Ok(response) => Err(format!("status {}", response.status())),
                            Err(e) => Err(e.to_string()),
                        };
                        let mut tally = tally.lock().unwrap();
                        match result {
                            Ok(name) => *tally.by_server.entry(name).or_default() += 1,
                            Err(e) => tally.failed.push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            tally,
            stop,
            clients,
        }
    }

    fn served(&self, name: &str) -> usize {
        let tally = self.tally.lock().unwrap();
        tally.by_server.get(name).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        let tally = self.tally.lock().unwrap();
        tally.by_server.values().sum::<usize>() + tally.failed.len()
    }

    async fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("client task");
        }
        Arc::try_unwrap(self.tally)
            .ok()
            .expect("clients done")
            .into_inner()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_server_under_load_fails_no_request() {
    let a = HttpProcess::start("a");
    let mut b = HttpProcess::start("b");
    let rlb = start(&http_config(
        &[a.addr, b.addr],
        "interval = \"250ms\"\ntimeout = \"1s\"\nrise = 2\nfall = 2",
    ));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    let load = Load::start(web);
    eventually("both servers serve the load", WAIT, || async {
        load.served("a") >= 50 && load.served("b") >= 50
    })
    .await;

    b.kill();
    let killed_at = now_ms();
    let down = wait_event(admin, "server_down", b.addr, 0, WAIT).await;
    eprintln!(
        "SIGKILL -> server_down: {} ms ({})",
        down["ts_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(killed_at),
        down["detail"]
    );
    let after_down = load.total();
    eventually("400 more requests", WAIT, || async {
        load.total() >= after_down + 400
    })
    .await;
    let tally = load.finish().await;
    eprintln!("served: {:?}", tally.by_server);
    assert!(
        tally.failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        tally.failed.len(),
        &tally.failed[..tally.failed.len().min(5)]
    );
    assert_eq!(server_status(admin, "app", b.addr).await["state"], "down");
    // Checks and 8 clients' failed connects race to eject b: it goes down once.
    let downs = server_events(admin, "server_down", b.addr).await;
    assert_eq!(downs.len(), 1, "{downs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_server_is_ejected_by_timeout_and_requests_do_not_stall() {
    let a = HttpProcess::start("a");
    let mut b = HttpProcess::start("b");
    let rlb = start(&http_config(
        &[a.addr, b.addr],
        "interval = \"250ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2",
    ));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    eventually("both servers answer", WAIT, || async {
        get(web, "/").await.1 == "b"
    })
    .await;

    b.freeze();
    let frozen_at = now_ms();
    let down = wait_event(admin, "server_down", b.addr, 0, WAIT).await;
    eprintln!(
        "SIGSTOP -> server_down: {} ms ({})",
        down["ts_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(frozen_at),
        down["detail"]
    );
    let detail = down["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("timeout") && detail.ends_with("(2/2)"),
        "{down}"
    );

    // With b out, no request waits on it: 8 clients x 25 requests, each answered by a
    // well before the 60 s a request sent to the frozen server would wait.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let mut answers = Vec::new();
                for _ in 0..25 {
                    let answer = match client.get(format!("http://{web}/")).send().await {
                        Ok(response) => response.text().await.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    answers.push(answer);
                }
                answers
            })
        })
        .collect();
    for client in clients {
        for answer in client.await.unwrap() {
            assert_eq!(answer, Ok("a".to_string()));
        }
    }

    b.thaw();
    wait_event(admin, "server_up", b.addr, 0, WAIT).await;
    eventually("b serves again", WAIT, || async {
        get(web, "/").await.1 == "b"
    })
    .await;
}

/// Under load, requests already waiting on the server when it froze, and those sent to
/// it before its checks timed out, must not wait out the 60 s response timeout: when
/// the checks eject it they go to another server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstopped_server_under_load_stalls_no_request() {
    let a = HttpProcess::start("a");
    let mut b = HttpProcess::start("b");
    let rlb = start(&http_config(
        &[a.addr, b.addr],
        "interval = \"250ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2",
    ));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    let load = Load::start(web);
    eventually("both servers serve the load", WAIT, || async {
        load.served("a") >= 50 && load.served("b") >= 50
    })
    .await;

    b.freeze();
    wait_event(admin, "server_down", b.addr, 0, WAIT).await;
    let after_down = load.total();
    eventually("400 more requests", WAIT, || async {
        load.total() >= after_down + 400
    })
    .await;
    let tally = load.finish().await;
    assert!(
        tally.failed.is_empty(),
        "{} failed requests, e.g. {:?}",
        tally.failed.len(),
        &tally.failed[..tally.failed.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connect_on_the_data_path_counts_as_a_failed_probe() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    // One check at start, the next an hour later: only the data path can eject b.
    let rlb = start(&format!(
        r#"
[admin]
bind = "127.0.0.1:0"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[upstreams.app]
servers = ["{}", "{}"]
[upstreams.app.health]
check = "tcp"
interval = "1h"
fall = 1
rise = 1
"#,
        a.addr, b.addr
    ));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    wait_checks(admin, "app", a.addr, 1.0, WAIT).await;
    wait_checks(admin, "app", b.addr, 1.0, WAIT).await;

    b.stop();
    for _ in 0..4 {
        assert_eq!(get(web, "/").await, (200, "a".to_string()));
    }
    let down = wait_event(admin, "server_down", b.addr, 0, WAIT).await;
    assert_eq!(down["detail"], "connection refused (1/1)", "{down}");
    let failures = |name| server_metric(admin, name, "app", b.addr);
    assert!(failures("rlb_server_connect_failures_total").await >= 1.0);
    assert_eq!(failures("rlb_server_check_failures_total").await, 0.0);
    assert_eq!(server_status(admin, "app", b.addr).await["state"], "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_up_http_answers_503_and_tcp_closes_without_trying() {
    let (x, y) = (dead_addr(), dead_addr());
    let rlb = start(&format!(
        r#"
[admin]
bind = "127.0.0.1:0"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "app"
[upstreams.app]
servers = ["{x}", "{y}"]
[upstreams.app.health]
check = "tcp"
interval = "100ms"
fall = 1
"#
    ));
    let (web, raw, admin) = (
        rlb.listener_addr("web").unwrap(),
        rlb.listener_addr("raw").unwrap(),
        rlb.admin_addr().unwrap(),
    );
    wait_event(admin, "server_down", x, 0, WAIT).await;
    wait_event(admin, "server_down", y, 0, WAIT).await;
    let connects =
        |server| server_metric(admin, "rlb_server_connect_failures_total", "app", server);
    let before = (connects(x).await, connects(y).await);

    let (status, body) = get(web, "/").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no healthy server"), "{body}");

    let mut client = TcpStream::connect(raw)
        .await
        .expect("connect to the tcp listener");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, client.read(&mut buf))
        .await
        .expect("the tcp listener kept the client connection open");
    assert!(matches!(read, Ok(0) | Err(_)), "read {read:?}");

    // "At once": neither request even tried a server.
    assert_eq!((connects(x).await, connects(y).await), before);
    let text = metrics(admin).await;
    assert!(
        sample(&text, "rlb_errors_total", &[("kind", "no_server")]).unwrap_or(0.0) >= 2.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_report_health() {
    let a = TestServer::start("a").await;
    let dead = dead_addr();
    let rlb = start(&format!(
        r#"
[admin]
bind = "127.0.0.1:0"
[listeners.web]
bind = "127.0.0.1:0"
routes = [{{ path_prefix = "/dead", upstream = "gone" }}, {{ upstream = "app" }}]
[upstreams.gone]
servers = ["{dead}"]
[upstreams.gone.health]
check = "tcp"
interval = "100ms"
fall = 1
[upstreams.app]
balance = "least_conn"
servers = ["{}", {{ addr = "{dead}", weight = 3 }}]
[upstreams.app.health]
check = "tcp"
interval = "100ms"
fall = 1
"#,
        a.addr
    ));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    eventually(
        "the dead server is down in both upstreams",
        WAIT,
        || async {
            server_status(admin, "app", dead).await["state"] == "down"
                && server_status(admin, "gone", dead).await["state"] == "down"
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(get(web, "/").await, (200, "a".to_string()));
    }
    assert_eq!(get(web, "/dead").await.0, 503);

    let status = status(admin).await;
    assert!(status["config_generation"].is_u64(), "{status}");
    assert!(status["listeners"]["web"].is_object(), "{status}");
    let app = &status["upstreams"]["app"];
    assert_eq!(app["balance"], "least_conn", "{status}");
    let servers = app["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2, "{status}");
    let (up, down) = (&servers[0], &servers[1]);
    assert_eq!(up["addr"], a.addr.to_string());
    assert_eq!(
        (
            &up["healthy"],
            &up["state"],
            &up["weight"],
            &up["active_connections"]
        ),
        (&true.into(), &"up".into(), &1.into(), &0.into()),
        "{up}"
    );
    assert_eq!(down["addr"], dead.to_string());
    assert_eq!(
        (&down["healthy"], &down["state"], &down["weight"]),
        (&false.into(), &"down".into(), &3.into()),
        "{down}"
    );

    let text = metrics(admin).await;
    let (a_addr, dead_addr) = (a.addr.to_string(), dead.to_string());
    let of = |name: &str, server: &str| {
        sample(&text, name, &[("upstream", "app"), ("server", server)])
            .unwrap_or_else(|| panic!("no {name} for {server} in:\n{text}"))
    };
    assert_eq!(of("rlb_server_up", &a_addr), 1.0);
    assert_eq!(of("rlb_server_up", &dead_addr), 0.0);
    assert_eq!(of("rlb_server_active_connections", &a_addr), 0.0);
    assert_eq!(of("rlb_server_requests_total", &a_addr), 3.0);
    assert!(of("rlb_server_checks_total", &a_addr) >= 1.0);
    assert_eq!(of("rlb_server_check_failures_total", &a_addr), 0.0);
    assert!(of("rlb_server_check_failures_total", &dead_addr) >= 1.0);
    // Check latency, a histogram: as many observations as checks, all under +Inf.
    let checks = of("rlb_server_checks_total", &a_addr);
    let latency = |suffix: &str| {
        of(
            &format!("rlb_server_check_duration_seconds_{suffix}"),
            &a_addr,
        )
    };
    assert!(latency("sum") > 0.0);
    assert!(latency("count") >= checks);
    let inf = sample(
        &text,
        "rlb_server_check_duration_seconds_bucket",
        &[("server", &a_addr), ("le", "+Inf")],
    );
    assert_eq!(inf, Some(latency("count")), "{text}");
    assert!(text.contains("# TYPE rlb_server_check_duration_seconds histogram"));
    assert!(text.contains("# TYPE rlb_server_up gauge"), "{text}");
    assert_eq!(
        sample(&text, "rlb_errors_total", &[("kind", "no_server")]),
        Some(1.0),
        "{text}"
    );
}
