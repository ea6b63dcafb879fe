//! The admin API: drain, enable and weight at runtime and across reloads, the failover
//! timeline of `GET /events`, the `/status` document, and the live status page (in a
//! real headless browser, when one is installed: see `scripts/screenshot-status.sh`).
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::admin::*;
use support::rlb::*;

const WAIT: Duration = Duration::from_secs(10);

fn app_config(servers: &str, health: &str) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:0\"\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [{servers}]\n{health}"
    )
}

fn quoted(servers: &[SocketAddr]) -> String {
    servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends `n` requests one after the other and returns how many each server answered.
async fn spread(web: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let http = client();
    for _ in 0..n {
        let response = http
            .get(format!("http://{web}/"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        *counts.entry(response.text().await.unwrap()).or_insert(0) += 1;
    }
    counts
}

/// Drain takes a server out of rotation without cutting its open WebSocket; enable puts
/// it back; weight changes its share. Each one is an event, and bad requests are told
/// what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_enable_and_weight() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let rlb = start(&app_config(&quoted(&[a.addr, b.addr]), ""));
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();
    let server_path =
        |addr: SocketAddr, action: &str| format!("/upstreams/app/servers/{addr}/{action}");

    // A WebSocket on a, open before the drain.
    let mut on_a = None;
    for _ in 0..4 {
        let mut ws = websocket(web).await;
        if ws_roundtrip(&mut ws, "whoami").await == "a" {
            on_a = Some(ws);
            break;
        }
    }
    let mut on_a = on_a.expect("round robin reaches a");

    let (code, body) = admin_post(admin, &server_path(a.addr, "drain"), "").await;
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["state"], "draining");
    assert_eq!(
        server_status(admin, "app", a.addr).await["state"],
        "draining"
    );
    assert_eq!(server_status(admin, "app", a.addr).await["healthy"], true);
    let counts = spread(web, 10).await;
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "a draining server got requests: {counts:?}"
    );
    assert_eq!(ws_roundtrip(&mut on_a, "still open").await, "still open");
    assert_eq!(
        active(&rlb, "app", a.addr),
        1,
        "the open WebSocket is still counted"
    );
    let mut ws = websocket(web).await;
    assert_eq!(
        ws_roundtrip(&mut ws, "whoami").await,
        "b",
        "a new session went to a draining server"
    );
    drop(ws);

    let (code, body) = admin_post(admin, &server_path(a.addr, "enable"), "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server_status(admin, "app", a.addr).await["state"], "up");
    let counts = spread(web, 10).await;
    assert_eq!(counts.get("a"), Some(&5), "{counts:?}");

    let (code, body) = admin_post(admin, &server_path(a.addr, "weight"), r#"{"weight": 3}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(server_status(admin, "app", a.addr).await["weight"], 3);
    let counts = spread(web, 40).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&30), Some(&10)),
        "weights 3:1"
    );

    // Bad requests.
    for (path, body, want) in [
        (server_path(a.addr, "weight"), r#"{"weight": 0}"#, 400),
        (server_path(a.addr, "weight"), r#"{"weight": "3"}"#, 400),
        (server_path(a.addr, "weight"), "three", 400),
        (server_path(a.addr, "weight"), "", 400),
        (server_path(a.addr, "explode"), "", 404),
        (
            "/upstreams/app/servers/not-an-address/drain".to_string(),
            "",
            400,
        ),
        (server_path(dead_addr(), "drain"), "", 404),
        (
            format!("/upstreams/ghost/servers/{}/drain", a.addr),
            "",
            404,
        ),
    ] {
        let (code, answer) = admin_post(admin, &path, body).await;
        assert_eq!(code, want, "POST {path} {body}: {answer}");
        assert!(!answer.trim().is_empty(), "POST {path}: no reason given");
    }
    let (code, _) = admin_get(admin, &server_path(a.addr, "drain")).await;
    assert_eq!(code, 405, "GET on a POST-only path");
    assert_eq!(server_status(admin, "app", a.addr).await["weight"], 3);
    assert_eq!(server_status(admin, "app", a.addr).await["state"], "up");

    let events = events(admin).await;
    let flips: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .filter(|e| e["upstream"] == "app")
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["server"].as_str().unwrap(),
                e["detail"].as_str(),
            )
        })
        .collect();
    let a_name = a.addr.to_string();
    assert_eq!(
        flips,
        [
            ("drain", a_name.as_str(), None),
            ("enable", a_name.as_str(), None),
            ("weight", a_name.as_str(), Some("3")),
        ],
        "{events:?}"
    );
}

/// A reload keeps a drain and an admin weight unless the file changes that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_weight_survive_reload_unless_the_file_changes_the_server() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let c = TestServer::start("c").await;
    let dir = TempDir::new("admin-reload");
    let servers = |a_weight: u32, b_weight: u32, with_c: bool| {
        let mut list = format!(
            "{{ addr = \"{}\", weight = {a_weight} }}, {{ addr = \"{}\", weight = {b_weight} }}",
            a.addr, b.addr
        );
        if with_c {
            list.push_str(&format!(", \"{}\"", c.addr));
        }
        app_config(&list, "")
    };
    let path = dir.file("lb.toml", &servers(1, 1, false));
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();

    let drain = format!("/upstreams/app/servers/{}/drain", a.addr);
    let weight = format!("/upstreams/app/servers/{}/weight", b.addr);
    assert_eq!(admin_post(admin, &drain, "").await.0, 200);
    assert_eq!(admin_post(admin, &weight, r#"{"weight": 7}"#).await.0, 200);

    // An unrelated change: c joins.
    dir.file("lb.toml", &servers(1, 1, true));
    assert_eq!(admin_reload(admin).await.0, 200);
    assert_eq!(
        server_status(admin, "app", a.addr).await["state"],
        "draining"
    );
    assert_eq!(server_status(admin, "app", b.addr).await["weight"], 7);
    let counts = spread(web, 18).await;
    assert_eq!(
        counts.get("a"),
        None,
        "a drained server got requests: {counts:?}"
    );
    // Two full rounds of weights 1:7:1 with a left out: b keeps the admin weight.
    let (b_share, c_share) = (counts.get("b").copied(), counts.get("c").copied());
    assert!(
        matches!((b_share, c_share), (Some(b), Some(c)) if b + c == 18 && b >= 4 * c),
        "weights 7:1 expected: {counts:?}"
    );

    // The file changes a: its drain ends; b keeps the admin weight.
    dir.file("lb.toml", &servers(2, 1, true));
    assert_eq!(admin_reload(admin).await.0, 200);
    assert_eq!(server_status(admin, "app", a.addr).await["state"], "up");
    assert_eq!(server_status(admin, "app", a.addr).await["weight"], 2);
    assert_eq!(server_status(admin, "app", b.addr).await["weight"], 7);

    // The file changes b: the file's weight wins.
    dir.file("lb.toml", &servers(2, 4, true));
    assert_eq!(admin_reload(admin).await.0, 200);
    assert_eq!(server_status(admin, "app", b.addr).await["weight"], 4);
    let counts = spread(web, 14).await;
    assert_eq!(
        (counts.get("a"), counts.get("b"), counts.get("c")),
        (Some(&4), Some(&8), Some(&2)),
        "weights 2:4:1"
    );
}

/// A counting tcp listener: how many connections it accepted (a tcp check is one).
async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, count)
}

/// Health carries over a reload: a server down stays down, checks start for a new
/// server, stop for a removed one, and are not restarted for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_survives_reload_and_checks_are_diffed() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    b.set_healthy(false);
    // `steady` probes once an hour: only its first probe, at start, can be seen, so a
    // second one would mean its check was restarted.
    let (s1, s1_probes) = counting_listener().await;
    let (s2, s2_probes) = counting_listener().await;
    let (f1, f1_probes) = counting_listener().await;
    let (f2, f2_probes) = counting_listener().await;
    // A server added to app by the reload, with nothing listening.
    let nobody = dead_addr();
    let dir = TempDir::new("admin-health");
    let config = |steady: &[SocketAddr], fast: &[SocketAddr], with_c: bool| {
        let extra = if with_c {
            format!(", \"{nobody}\"")
        } else {
            String::new()
        };
        format!(
            "{}\n[upstreams.app.health]\ncheck = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\nfall = 1\nrise = 100\n\
             [upstreams.steady]\nservers = [{}]\n[upstreams.steady.health]\ncheck = \"tcp\"\ninterval = \"1h\"\n\
             [upstreams.fast]\nservers = [{}]\n[upstreams.fast.health]\ncheck = \"tcp\"\ninterval = \"50ms\"\n",
            app_config(&format!("{}{extra}", quoted(&[a.addr, b.addr])), ""),
            quoted(steady),
            quoted(fast),
        )
    };
    let path = dir.file("lb.toml", &config(&[s1], &[f1, f2], false));
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    eventually("b is found down", WAIT, || async {
        server_status(admin, "app", b.addr).await["state"] == "down"
    })
    .await;
    eventually("the first probes", WAIT, || async {
        s1_probes.load(Ordering::SeqCst) == 1 && f2_probes.load(Ordering::SeqCst) > 0
    })
    .await;
    // b is healthy again, but needs 100 passes (10 s) to come back: a reset would show it up.
    b.set_healthy(true);

    dir.file("lb.toml", &config(&[s1, s2], &[f1], true));
    assert_eq!(admin_reload(admin).await.0, 200);
    let after = status(admin).await;
    assert_eq!(find_server(&after, "app", b.addr).unwrap()["state"], "down");
    assert_eq!(find_server(&after, "app", a.addr).unwrap()["state"], "up");
    let web = rlb.listener_addr("web").unwrap();
    let b_hits = b.hits();
    spread(web, 4).await;
    assert_eq!(
        b.hits(),
        b_hits,
        "a down server got requests after a reload"
    );

    eventually("the new server's first probe", WAIT, || async {
        s2_probes.load(Ordering::SeqCst) == 1
    })
    .await;
    let f2_then = f2_probes.load(Ordering::SeqCst);
    let f1_then = f1_probes.load(Ordering::SeqCst);
    eventually("the kept fast server is probed on", WAIT, || async {
        f1_probes.load(Ordering::SeqCst) >= f1_then + 5
    })
    .await;
    assert!(
        f2_probes.load(Ordering::SeqCst) <= f2_then + 1,
        "the removed server is still probed"
    );
    assert_eq!(
        s1_probes.load(Ordering::SeqCst),
        1,
        "the unchanged server's check was restarted by the reload"
    );
}

/// The failover timeline: a killed server goes down with a reason and comes back up,
/// twice (once found by the checks alone, once under traffic); the events carry
/// millisecond timestamps in order, none before the kill. Prints the time from each
/// kill to its `server_down` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_flips_are_in_the_events_in_order() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    let rlb = start(&app_config(
        &quoted(&[a.addr, b.addr]),
        "[upstreams.app.health]\ncheck = \"http\"\npath = \"/healthz\"\n\
         interval = \"250ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2\n",
    ));
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();
    let b_name = b.addr.to_string();
    let b_events = |events: Vec<Value>, name: &str| -> Vec<Value> {
        events
            .into_iter()
            .filter(|e| e["event"] == name && e["server"] == b_name.as_str())
            .collect()
    };

    // 1. Killed with no traffic, just after a check passed (the slowest case): the
    // checks find it.
    let checks = || async {
        let metrics = metrics(admin).await;
        sample(&metrics, "rlb_server_checks_total", &[("server", &b_name)]).unwrap_or(0.0) as u64
    };
    eventually("b passes three checks", WAIT, || async {
        checks().await >= 3
    })
    .await;
    let killed = now_ms();
    b.stop();
    eventually("b down", WAIT, || async {
        b_events(events(admin).await, "server_down").len() == 1
    })
    .await;
    let down = b_events(events(admin).await, "server_down").remove(0);
    let checks_ms = down["ts_ms"].as_u64().unwrap() - killed;
    assert!(
        down["ts_ms"].as_u64().unwrap() >= killed,
        "down before the kill"
    );
    assert!(
        down["detail"]
            .as_str()
            .is_some_and(|d| d.contains("refused")),
        "no reason: {down}"
    );
    assert_eq!(server_status(admin, "app", b.addr).await["state"], "down");
    b.restart().await;
    eventually("b up", WAIT, || async {
        b_events(events(admin).await, "server_up").len() == 1
    })
    .await;

    // 2. Killed under traffic: failed connects count too. No request fails: a failed
    // connect goes to the next server.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, failures) = (stop.clone(), failures.clone());
        tokio::spawn(async move {
            let http = client();
            while !stop.load(Ordering::Relaxed) {
                match http.get(format!("http://{web}/")).send().await {
                    Ok(r) if r.status() == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    eventually("traffic reaches b", WAIT, || async { b.hits() > 0 }).await;
    let killed_loaded = now_ms();
    b.stop();
    eventually("b down again", WAIT, || async {
        b_events(events(admin).await, "server_down").len() == 2
    })
    .await;
    let loaded_ms = b_events(events(admin).await, "server_down")[1]["ts_ms"]
        .as_u64()
        .unwrap()
        - killed_loaded;
    b.restart().await;
    eventually("b up again", WAIT, || async {
        b_events(events(admin).await, "server_up").len() == 2
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    println!(
        "FIGURE kill-to-server_down: checks only {checks_ms} ms (http check every 250ms, \
         fall 2, killed just after a pass); under traffic {loaded_ms} ms"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed while b died"
    );

    let events = events(admin).await;
    let flips: Vec<&str> = events
        .iter()
        .filter(|e| e["server"] == b_name.as_str())
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        flips,
        ["server_down", "server_up", "server_down", "server_up"]
    );
    let stamps: Vec<u64> = events
        .iter()
        .map(|e| e["ts_ms"].as_u64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "timestamps out of order: {stamps:?}"
    );
    assert!(
        stamps[0] >= killed,
        "an event stamped before the kill: {stamps:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e["server"] == a.addr.to_string().as_str()),
        "a never flipped: {events:?}"
    );
}

/// `GET /status` is the contract's document; unknown paths and methods are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_document_follows_the_contract() {
    let a = TestServer::start("a").await;
    let (echo, _stop) = tcp_echo_server().await;
    let rlb = start(&format!(
        "{}[listeners.raw]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"echo\"\n\
         [upstreams.echo]\nbalance = \"least_conn\"\nservers = [{{ addr = \"{echo}\", weight = 5 }}]\n",
        app_config(&quoted(&[a.addr]), "")
    ));
    let admin = rlb.admin_addr().unwrap();
    let status = status(admin).await;
    assert_eq!(status["config_generation"], rlb.generation());
    let app = &status["upstreams"]["app"];
    assert_eq!(app["balance"], "round_robin");
    let server = &app["servers"][0];
    assert_eq!(server["addr"], a.addr.to_string());
    assert_eq!(server["healthy"], true);
    assert_eq!(server["active_connections"], 0);
    assert_eq!(server["weight"], 1);
    assert_eq!(server["state"], "up");
    let echo_status = &status["upstreams"]["echo"];
    assert_eq!(echo_status["balance"], "least_conn");
    assert_eq!(echo_status["servers"][0]["weight"], 5);
    let web = &status["listeners"]["web"];
    assert_eq!(web["mode"], "http");
    assert_eq!(web["addr"], rlb.listener_addr("web").unwrap().to_string());
    assert_eq!(web["routes"][0]["upstream"], "app");
    assert_eq!(status["listeners"]["raw"]["mode"], "tcp");
    assert_eq!(status["listeners"]["raw"]["upstream"], "echo");

    let (code, metrics) = admin_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("rlb_"), "{metrics}");
    assert_eq!(admin_get(admin, "/nope").await.0, 404);
    assert_eq!(admin_post(admin, "/status", "").await.0, 405);
    assert_eq!(admin_get(admin, "/reload").await.0, 405);
    // Started from text, not a file: nothing to reload, and it says so.
    let (code, body) = admin_reload(admin).await;
    assert_eq!(code, 400);
    assert!(body.contains("no configuration file"), "{body}");
}

/// `GET /` is one self-contained page: no CDN, no other file; it reads /status and
/// /events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_is_one_self_contained_file() {
    let a = TestServer::start("a").await;
    let rlb = start(&app_config(&quoted(&[a.addr]), ""));
    let admin = rlb.admin_addr().unwrap();
    let response = client()
        .get(format!("http://{admin}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.contains("/status") && page.contains("/events"));
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(
            !page.contains(external),
            "the page loads something from outside: {external}"
        );
    }
    assert!(!page.contains("<link"), "the page links another file");
    assert!(!page.contains(" src="), "the page loads another file");
}

/// The status page in Debian's chromium, headless: the script fills the page from
/// /status and /events (the rendered DOM names the servers, their states and the
/// events), and a screenshot goes to `$RLB_SCREENSHOT` when set. Needs chromium, so it
/// is ignored by default; `scripts/screenshot-status.sh` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium; run scripts/screenshot-status.sh"]
async fn status_page_renders_in_chromium() {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed (apt-get install -y chromium)");

    // A small demo: a web app of three servers (one drained, one killed), a chat
    // upstream on least_conn with WebSockets open, a tcp upstream, and some reloads.
    let app: Vec<TestServer> =
        futures_util::future::join_all(["app-1", "app-2", "app-3"].map(TestServer::start)).await;
    let chat: Vec<TestServer> =
        futures_util::future::join_all(["chat-1", "chat-2"].map(TestServer::start)).await;
    let (echo, _stop) = tcp_echo_server().await;
    let dir = TempDir::new("admin-page");
    let config = |generation: usize| {
        format!(
            r#"
[admin]
bind = "127.0.0.1:0"

[listeners.web]
bind = "127.0.0.1:0"
routes = [
  {{ path_prefix = "/ws", upstream = "chat" }},
  {{ host = "ws.example.test", upstream = "chat" }},
  {{ upstream = "app" }},
]

[listeners.mysql_read]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "replicas"

[upstreams.app]
servers = ["{}", "{}", {{ addr = "{}", weight = {} }}]

[upstreams.app.health]
check = "http"
path = "/healthz"
interval = "200ms"
fall = 2

[upstreams.chat]
balance = "least_conn"
servers = ["{}", "{}"]

[upstreams.replicas]
balance = "least_conn"
servers = ["{echo}"]
"#,
            app[0].addr,
            app[1].addr,
            app[2].addr,
            1 + generation,
            chat[0].addr,
            chat[1].addr,
        )
    };
    let path = dir.file("lb.toml", &config(0));
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    let web = rlb.listener_addr("web").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let http = client();
                while !stop.load(Ordering::Relaxed) {
                    let _ = http.get(format!("http://{web}/")).send().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    eventually("traffic on every app server", WAIT, || async {
        app.iter().all(|s| s.hits() > 20)
    })
    .await;
    for generation in 1..=2 {
        dir.file("lb.toml", &config(generation));
        assert_eq!(admin_reload(admin).await.0, 200);
    }
    dir.file("lb.toml", "[upstreams.app]\nbalance = \"fastest\"\n");
    assert_eq!(admin_reload(admin).await.0, 400);
    dir.file("lb.toml", &config(2));
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(websocket(web).await);
    }
    let drain = format!("/upstreams/app/servers/{}/drain", app[1].addr);
    assert_eq!(admin_post(admin, &drain, "").await.0, 200);
    app[0].stop();
    eventually("app-1 down", WAIT, || async {
        server_status(admin, "app", app[0].addr).await["state"] == "down"
    })
    .await;

    let url = format!("http://{}/", rlb.admin_addr().unwrap());
    let chromium = |extra: Vec<String>| {
        let profile = TempDir::new("chromium-profile");
        let url = url.clone();
        async move {
            let mut args: Vec<String> = [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1280,800",
                "--virtual-time-budget=3000",
            ]
            .map(String::from)
            .to_vec();
            args.push(format!("--user-data-dir={}", profile.0.display()));
            args.extend(extra);
            args.push(url);
            let output = tokio::process::Command::new(browser)
                .args(&args)
                .output()
                .await
                .expect("run chromium");
            drop(profile);
            output
        }
    };
    let dom = chromium(vec!["--dump-dom".to_string()]).await;
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    for expected in [
        app[0].addr.to_string(),
        app[1].addr.to_string(),
        chat[0].addr.to_string(),
        "draining".to_string(),
        "server down".to_string(),
        "reload failed".to_string(),
        "mysql_read".to_string(),
    ] {
        assert!(
            dom.contains(&expected),
            "the rendered page lacks {expected:?}:\n{dom}"
        );
    }
    assert!(
        dom.contains("<body data-state=\"ok\">"),
        "the page did not refresh from /status and /events:\n{dom}"
    );

    if let Ok(target) = std::env::var("RLB_SCREENSHOT") {
        let target = std::path::absolute(&target).expect("screenshot path");
        let shot = chromium(vec![format!("--screenshot={}", target.display())]).await;
        assert!(
            target.exists(),
            "no screenshot written: {}",
            String::from_utf8_lossy(&shot.stderr)
        );
        println!("screenshot: {}", target.display());
    }
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
    drop(sockets);
}

/// A reload that removes an upstream's checks brings its down servers back (nothing
/// else could), and the timeline says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_checks_brings_a_down_server_back_with_an_event() {
    let a = TestServer::start("a").await;
    let b = TestServer::start("b").await;
    b.set_healthy(false);
    let dir = TempDir::new("admin-unchecked");
    let servers = quoted(&[a.addr, b.addr]);
    let checked = app_config(
        &servers,
        "[upstreams.app.health]\ncheck = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\"\nfall = 1\n",
    );
    let path = dir.file("lb.toml", &checked);
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    eventually("b is found down", WAIT, || async {
        server_status(admin, "app", b.addr).await["state"] == "down"
    })
    .await;

    dir.file("lb.toml", &app_config(&servers, ""));
    assert_eq!(admin_reload(admin).await.0, 200);
    assert_eq!(server_status(admin, "app", b.addr).await["state"], "up");
    let events = events(admin).await;
    let up: Vec<_> = named(&events, "server_up")
        .into_iter()
        .filter(|e| e["server"] == b.addr.to_string().as_str())
        .collect();
    assert_eq!(up.len(), 1, "{events:?}");
    assert_eq!(up[0]["detail"], "health checks removed");
    let counts = spread(rlb.listener_addr("web").unwrap(), 4).await;
    assert_eq!(counts.get("b"), Some(&2), "{counts:?}");
}

/// Without checks, `rlb_server_up` and `/status` `healthy` say whether the server's last
/// connect failed; it stays in rotation, and one good connect makes it healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_without_checks_is_not_healthy_until_it_answers() {
    let (dead, live) = (
        TestServer::start("dead").await,
        TestServer::start("live").await,
    );
    dead.stop();
    let rlb = start(&app_config(&quoted(&[dead.addr, live.addr]), ""));
    let (web, admin) = (rlb.listener_addr("web").unwrap(), rlb.admin_addr().unwrap());
    assert_eq!(
        server_metric(admin, "rlb_server_up", "app", dead.addr).await,
        1.0
    );
    for _ in 0..4 {
        assert_eq!(get(web, "/").await, (200, "live".to_string()));
    }
    assert_eq!(
        server_metric(admin, "rlb_server_up", "app", dead.addr).await,
        0.0
    );
    assert_eq!(
        server_metric(admin, "rlb_server_up", "app", live.addr).await,
        1.0
    );
    let entry = server_status(admin, "app", dead.addr).await;
    assert_eq!(
        (&entry["healthy"], &entry["state"]),
        (&Value::Bool(false), &Value::from("up"))
    );

    dead.restart().await;
    eventually("the restarted server is used again", WAIT, || async {
        get(web, "/").await.1 == "dead"
    })
    .await;
    assert_eq!(
        server_metric(admin, "rlb_server_up", "app", dead.addr).await,
        1.0
    );
}

/// Every metric is there from the start, at 0 for each label value, and a refused
/// `POST /reload` answers JSON naming each problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exist_from_the_start_and_reload_errors_are_json() {
    let a = TestServer::start("a").await;
    let dir = TempDir::new("admin-json");
    let path = dir.file("lb.toml", &app_config(&quoted(&[a.addr]), ""));
    let rlb = start_file(&path);
    let admin = rlb.admin_addr().unwrap();
    let text = metrics(admin).await;
    for (name, labels) in [
        ("rlb_errors_total", [("kind", "no_server")]),
        ("rlb_errors_total", [("kind", "timeout")]),
        ("rlb_reloads_total", [("result", "ok")]),
        ("rlb_reloads_total", [("result", "failed")]),
    ] {
        assert_eq!(
            sample(&text, name, &labels),
            Some(0.0),
            "{name} {labels:?} in:\n{text}"
        );
    }
    std::fs::write(&path, "[listeners.web]\nbind = 80\nroutes = 1\n").unwrap();
    let (code, body) = admin_reload(admin).await;
    assert_eq!(code, 400);
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let errors = answer["errors"].as_array().expect("an errors list");
    assert!(errors.len() >= 2, "{answer}");
    assert!(
        errors
            .iter()
            .all(|e| e.as_str().unwrap_or("").contains("lb.toml:")),
        "{answer}"
    );
    let text = metrics(admin).await;
    assert_eq!(
        sample(&text, "rlb_reloads_total", &[("result", "failed")]),
        Some(1.0)
    );
}
