//! Experiments against a real rlb: the failover experiment starts its own rlb, chat
//! servers (and, in full mode, history-writer and a MariaDB cluster), loads them, kills
//! a chat server (and a replica), starts them again, and reports what clients saw.

pub mod http;
pub mod load;
pub mod plot;
pub mod stack;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use load::{ChatClient, ClientOutcome, Recorder};
use stack::{Cluster, Proc, RlbPorts, local};

/// Newest messages `/history` returns for one room; rooms are sized to stay below it.
const HISTORY_LIMIT: usize = 1000;
/// How long clients get, after sending stops, to have everything acknowledged.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long history gets to show every acknowledged message (full mode stores it
/// asynchronously through RabbitMQ and history-writer, then replication).
const HISTORY_TIMEOUT: Duration = Duration::from_secs(20);
/// Full mode: `/history` reads per second during the run.
const HISTORY_READ_RATE: f64 = 20.0;
/// Password of `rlb_monitor`, the user `scripts/mariadb-cluster.sh` creates for checks.
const MONITOR_PASSWORD: &str = "monitorpass";

/// How rlb is run.
#[derive(Debug, Clone)]
pub enum RlbCommand {
    /// The `rlb` binary at this path.
    Binary(PathBuf),
    /// This program's hidden `serve-rlb` subcommand: rlb's library in its own process.
    SelfHosted(PathBuf),
}

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// WebSocket chat clients.
    pub clients: usize,
    /// Messages per second per chat client.
    pub rate: f64,
    /// HTTP GETs per second, in total.
    pub http_rate: f64,
    /// Keep-alive connections the GETs are spread over.
    pub http_connections: usize,
    pub duration: Duration,
    /// RabbitMQ + MariaDB instead of SQLite; also kills a replica.
    pub full: bool,
    pub amqp: String,
    pub cluster_script: PathBuf,
    pub rlb: RlbCommand,
    pub chat_server: PathBuf,
    pub history_writer: PathBuf,
    /// Keep the work directory (configs, logs) instead of removing it.
    pub keep: bool,
    /// Print a progress line every second.
    pub progress: bool,
}

/// A fault the experiment injected, and what rlb's `/events` said about it.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// `chat server s1` or `replica 1`.
    pub target: String,
    pub addr: String,
    pub killed_at_s: f64,
    pub restarted_at_s: f64,
    /// From the kill to rlb's `server_down` event.
    pub ejection_ms: Option<i64>,
    /// From the restart to rlb's `server_up` event.
    pub return_ms: Option<i64>,
    pub down_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Distribution {
    fn of(mut values: Vec<f64>) -> Distribution {
        values.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if values.is_empty() {
                0.0
            } else {
                values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1]
            }
        };
        Distribution {
            count: values.len(),
            p50: pick(0.50),
            p99: pick(0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub clients: usize,
    pub rate: f64,
    pub http_rate: f64,
    pub duration_s: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Full mode: `/history` reads through rlb (the chat servers read the replicas through
    /// rlb's tcp listener), at `HISTORY_READ_RATE`; not counted in `requests_*`.
    pub history_reads_ok: u64,
    pub history_reads_failed: u64,
    pub ws_reconnects: usize,
    pub ws_connect_failures: u64,
    pub ws_error_frames: u64,
    pub reconnect_ms: Distribution,
    pub messages_sent: usize,
    pub messages_resent: u64,
    pub messages_found: usize,
    pub messages_lost: usize,
    pub messages_duplicated: usize,
    pub messages_unacked: usize,
    /// Ejection delay of the killed chat server, in ms (the first fault's).
    pub ejection_ms: Option<i64>,
    pub return_ms: Option<i64>,
    pub faults: Vec<Fault>,
    /// The first errors clients saw: (seconds since start, what).
    pub errors: Vec<(f64, String)>,
    /// rlb's `/events` during the run.
    pub events: Vec<Value>,
    #[serde(skip)]
    pub samples: Vec<(u32, load::Sample)>,
}

impl Summary {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<34} {v}\n"));
        row(
            "HTTP GET requests (total / failed)",
            format!(
                "{} / {}",
                self.requests_ok + self.requests_failed,
                self.requests_failed
            ),
        );
        if self.mode == "full" {
            row(
                "/history reads (total / failed)",
                format!(
                    "{} / {}",
                    self.history_reads_ok + self.history_reads_failed,
                    self.history_reads_failed
                ),
            );
        }
        row("WebSocket reconnects", self.ws_reconnects.to_string());
        row(
            "  reconnect time p50 / p99 / max",
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                self.reconnect_ms.p50, self.reconnect_ms.p99, self.reconnect_ms.max
            ),
        );
        row(
            "  connect attempts failed",
            self.ws_connect_failures.to_string(),
        );
        row("  error frames", self.ws_error_frames.to_string());
        row("messages sent (acked)", self.messages_sent.to_string());
        row(
            "  resent after a reconnect",
            self.messages_resent.to_string(),
        );
        row("  found in history", self.messages_found.to_string());
        row("  lost", self.messages_lost.to_string());
        row("  stored twice", self.messages_duplicated.to_string());
        row("  never acked", self.messages_unacked.to_string());
        for f in &self.faults {
            let ms = |v: Option<i64>| v.map_or("never".into(), |v| format!("{v} ms"));
            row(
                &format!("{} ({})", f.target, f.addr),
                format!(
                    "killed at {:.1} s, ejected after {}; restarted at {:.1} s, back after {}",
                    f.killed_at_s,
                    ms(f.ejection_ms),
                    f.restarted_at_s,
                    ms(f.return_ms)
                ),
            );
        }
        t
    }
}

/// Runs the failover experiment and tears everything down, even on error.
pub async fn failover(options: FailoverOptions) -> anyhow::Result<Summary> {
    let work = std::env::temp_dir().join(format!(
        "rlb-experiment-{}-{}",
        std::process::id(),
        crate::protocol::now_millis()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut stack = Stack::default();
    // SIGINT/SIGTERM stop the run but not the teardown: everything started is stopped.
    let interrupted = crate::shutdown_on_signals()?;
    let result = tokio::select! {
        r = run(&options, &work, &mut stack) => r,
        _ = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    stack.teardown().await;
    if options.keep || result.is_err() {
        eprintln!("work directory (configs, logs): {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

#[derive(Default)]
struct Stack {
    chat: Vec<Proc>,
    rlb: Option<Proc>,
    writer: Option<Proc>,
    cluster: Option<Cluster>,
    amqp: Option<(String, String, String)>,
}

impl Stack {
    async fn teardown(&mut self) {
        for p in &mut self.chat {
            p.stop(Duration::from_secs(3)).await;
        }
        if let Some(p) = self.writer.as_mut() {
            p.stop(Duration::from_secs(3)).await;
        }
        if let Some(p) = self.rlb.as_mut() {
            p.stop(Duration::from_secs(3)).await;
        }
        if let Some(c) = self.cluster.take()
            && let Err(e) = c.stop().await
        {
            eprintln!("{e:#}");
        }
        if let Some((url, exchange, queue)) = self.amqp.take() {
            let _ = delete_amqp(&url, &exchange, &queue).await;
        }
    }
}

async fn delete_amqp(url: &str, exchange: &str, queue: &str) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let conn = crate::amqp::connect(url).await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Waits until rlb's `/status` shows every server of `upstream` up.
async fn wait_all_up(
    admin: std::net::SocketAddr,
    upstream: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(reply) = http::get(admin, "/status", Duration::from_secs(1)).await {
            let v: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            let servers = &v["upstreams"][upstream]["servers"];
            if let Some(list) = servers.as_array()
                && !list.is_empty()
                && list.iter().all(|s| s["state"] == "up")
            {
                return Ok(());
            }
            last = servers.to_string();
        }
        if start.elapsed() > timeout {
            bail!("rlb did not see every server of {upstream} up within {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(admin: std::net::SocketAddr) -> anyhow::Result<Vec<Value>> {
    let reply = http::get(admin, "/events", Duration::from_secs(3)).await?;
    Ok(String::from_utf8_lossy(&reply.body)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The first `event` for `addr` at or after `since_ms`.
fn first_event<'a>(
    events: &'a [Value],
    event: &str,
    addr: &str,
    since_ms: i64,
) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["event"] == event
            && e["server"] == addr
            && e["ts_ms"].as_i64().is_some_and(|t| t >= since_ms)
    })
}

async fn run(
    o: &FailoverOptions,
    work: &std::path::Path,
    stack: &mut Stack,
) -> anyhow::Result<Summary> {
    if o.clients == 0 || o.rate <= 0.0 || o.duration < Duration::from_secs(4) {
        bail!("need at least 1 client, a positive rate and a duration of 4 s or more");
    }
    let per_client = (o.rate * o.duration.as_secs_f64()).ceil() as usize + 10;
    if per_client > HISTORY_LIMIT {
        bail!(
            "one client would send {per_client} messages; /history checks at most {HISTORY_LIMIT} per room: lower --rate or --duration"
        );
    }
    // Two clients per room (so messages cross chat servers), if history can hold it.
    let per_room = if 2 * per_client <= HISTORY_LIMIT {
        2
    } else {
        1
    };
    let run_id = format!("x{:x}", crate::protocol::now_millis());
    let say = |text: String| {
        if o.progress {
            println!("{text}");
        }
    };

    // Full mode: RabbitMQ must be there; the cluster is ours.
    let mut replicas = Vec::new();
    let mut primary = 0;
    let names = (
        format!("rlb.exp.{run_id}"),
        format!("rlb.exp.{run_id}.history"),
        format!("rlb_exp_{run_id}"),
    );
    if o.full {
        match tokio::time::timeout(Duration::from_secs(3), crate::amqp::connect(&o.amqp)).await {
            Ok(Ok(c)) => {
                let _ = c.close(200, "probe".into()).await;
            }
            Ok(Err(e)) => bail!("full mode needs RabbitMQ at {}: {e:#}", o.amqp),
            Err(_) => bail!("full mode needs RabbitMQ at {}: no answer", o.amqp),
        }
        say("starting a MariaDB primary and 2 replicas…".into());
        let cluster = Cluster::start(&o.cluster_script).await?;
        primary = cluster.ports[0];
        replicas = vec![cluster.ports[1], cluster.ports[2]];
        stack.cluster = Some(cluster);
        stack.amqp = Some((o.amqp.clone(), names.0.clone(), names.1.clone()));
    }

    let free = stack::free_ports(if o.full { 6 } else { 5 })?;
    let chat_ports = free[..3].to_vec();
    let ports = RlbPorts {
        http: free[3],
        admin: free[4],
        mysql: free.get(5).copied(),
    };
    let config = work.join("rlb.toml");
    std::fs::write(&config, stack::rlb_config(&ports, &chat_ports, &replicas))?;
    let config_arg = config.display().to_string();
    let mut rlb = match &o.rlb {
        RlbCommand::Binary(path) => {
            Proc::new("rlb", path, vec!["--config".into(), config_arg], work)
        }
        RlbCommand::SelfHosted(path) => Proc::new(
            "rlb",
            path,
            vec!["serve-rlb".into(), "--config".into(), config_arg],
            work,
        ),
    }
    .env("RLB_MYSQL_PASSWORD", MONITOR_PASSWORD);
    rlb.start()?;
    let admin = local(ports.admin);
    stack::wait_http_ok(&mut rlb, admin, "/status", Duration::from_secs(10)).await?;
    stack.rlb = Some(rlb);

    if o.full {
        let mut writer = Proc::new(
            "history-writer",
            &o.history_writer,
            vec![
                "--amqp".into(),
                o.amqp.clone(),
                "--mysql-primary".into(),
                format!("mysql://root@127.0.0.1:{primary}/rlbtest"),
                "--exchange".into(),
                names.0.clone(),
                "--history-queue".into(),
                names.1.clone(),
                "--table".into(),
                names.2.clone(),
            ],
            work,
        );
        writer.start()?;
        stack.writer = Some(writer);
    }
    for (i, port) in chat_ports.iter().enumerate() {
        let name = format!("s{}", i + 1);
        let mut args = vec![
            "--name".into(),
            name.clone(),
            "--port".into(),
            port.to_string(),
            "--shutdown-timeout".into(),
            "2".into(),
        ];
        if let Some(mysql) = ports.mysql {
            args.extend([
                "--amqp".into(),
                o.amqp.clone(),
                "--mysql-read".into(),
                format!("mysql://root@127.0.0.1:{mysql}/rlbtest"),
                "--exchange".into(),
                names.0.clone(),
                "--history-queue".into(),
                names.1.clone(),
                "--table".into(),
                names.2.clone(),
            ]);
        } else {
            args.extend([
                "--db".into(),
                work.join("chat.sqlite").display().to_string(),
            ]);
        }
        let mut p = Proc::new(&name, &o.chat_server, args, work);
        p.start()?;
        stack.chat.push(p);
    }
    for (i, port) in chat_ports.iter().enumerate() {
        stack::wait_http_ok(
            &mut stack.chat[i],
            local(*port),
            "/healthz",
            Duration::from_secs(20),
        )
        .await?;
    }
    wait_all_up(admin, "chat", Duration::from_secs(15)).await?;
    if o.full {
        wait_all_up(admin, "replicas", Duration::from_secs(15)).await?;
        // The table exists once history-writer is connected; /history needs it.
        let probe = format!("/history?room={run_id}-probe&limit=1");
        let start = std::time::Instant::now();
        while http::get(local(ports.http), &probe, Duration::from_secs(2))
            .await
            .map(|r| r.status)
            .unwrap_or(0)
            != 200
        {
            if let Some(w) = stack.writer.as_mut() {
                w.check_running()?;
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("history through rlb's tcp listener never answered 200");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    say(format!(
        "stack up: rlb http 127.0.0.1:{} admin 127.0.0.1:{}, chat servers {:?}{}",
        ports.http,
        ports.admin,
        chat_ports,
        if o.full {
            format!(
                ", replicas {replicas:?} behind 127.0.0.1:{}",
                ports.mysql.unwrap_or(0)
            )
        } else {
            String::new()
        }
    ));

    // Load.
    let rec = Arc::new(Recorder::new());
    let t0_ms = crate::protocol::now_millis();
    let sending = CancellationToken::new();
    let stop_http = CancellationToken::new();
    let give_up = tokio::time::Instant::now() + o.duration + DRAIN_TIMEOUT;
    let url = format!("ws://127.0.0.1:{}/ws", ports.http);
    let mut clients = Vec::new();
    for i in 0..o.clients {
        let client = ChatClient {
            index: i,
            room: format!("{run_id}-r{}", i / per_room),
            user: format!("c{i}"),
            id_prefix: format!("{run_id}-c{i}"),
            url: url.clone(),
            rate: o.rate,
        };
        clients.push(tokio::spawn(client.run(
            rec.clone(),
            sending.clone(),
            give_up,
        )));
    }
    let mut loaders = Vec::new();
    let conns = o.http_connections.max(1);
    for _ in 0..conns {
        loaders.push(tokio::spawn(load::http_load(
            local(ports.http),
            "/".into(),
            o.http_rate / conns as f64,
            rec.clone(),
            stop_http.clone(),
        )));
    }
    let history_rec = Arc::new(Recorder::new());
    if o.full {
        loaders.push(tokio::spawn(load::http_load(
            local(ports.http),
            format!("/history?room={run_id}-r0&limit=5"),
            HISTORY_READ_RATE,
            history_rec.clone(),
            stop_http.clone(),
        )));
    }
    let progress = {
        let rec = rec.clone();
        let stop = stop_http.clone();
        let show = o.progress;
        let clients = o.clients;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if show {
                    println!(
                        "[{:5.1}s] GET ok {} failed {} | ws {}/{} up, {} closed, {} connect failures | msgs acked {} pending {}",
                        rec.elapsed(),
                        rec.requests_ok.load(Ordering::Relaxed),
                        rec.requests_failed.load(Ordering::Relaxed),
                        rec.ws_connected.load(Ordering::Relaxed),
                        clients,
                        rec.ws_closed.load(Ordering::Relaxed),
                        rec.ws_connect_failed.load(Ordering::Relaxed),
                        rec.messages_acked.load(Ordering::Relaxed),
                        rec.pending.load(Ordering::Relaxed),
                    );
                }
            }
        })
    };

    // Faults: kill s1 at 25 % of the run, restart it at 55 %; full mode also kills
    // replica 1 at 35 % and restarts it at 65 %.
    let d = o.duration.as_secs_f64();
    let at = |fraction: f64| rec.start() + Duration::from_secs_f64(d * fraction);
    let mut chat_fault = Fault {
        target: "chat server s1".into(),
        addr: format!("127.0.0.1:{}", chat_ports[0]),
        killed_at_s: 0.0,
        restarted_at_s: 0.0,
        ejection_ms: None,
        return_ms: None,
        down_reason: None,
    };
    let mut replica_fault = chat_fault.clone();
    let (mut replica_kill_ms, mut replica_restart_ms) = (0, 0);

    tokio::time::sleep_until(at(0.25).into()).await;
    let chat_kill_ms = crate::protocol::now_millis();
    chat_fault.killed_at_s = rec.elapsed();
    stack.chat[0].kill().await?;
    say(format!("[{:5.1}s] SIGKILL chat server s1", rec.elapsed()));
    if o.full {
        tokio::time::sleep_until(at(0.35).into()).await;
        if let Some(c) = &stack.cluster {
            replica_kill_ms = crate::protocol::now_millis();
            replica_fault.killed_at_s = rec.elapsed();
            c.kill(1).await?;
            replica_fault.target = "replica 1".into();
            replica_fault.addr = format!("127.0.0.1:{}", c.ports[1]);
            say(format!("[{:5.1}s] SIGKILL replica 1", rec.elapsed()));
        }
    }
    tokio::time::sleep_until(at(0.55).into()).await;
    let chat_restart_ms = crate::protocol::now_millis();
    chat_fault.restarted_at_s = rec.elapsed();
    stack.chat[0].start()?;
    say(format!(
        "[{:5.1}s] chat server s1 started again",
        rec.elapsed()
    ));
    if o.full {
        tokio::time::sleep_until(at(0.65).into()).await;
        if let Some(c) = &stack.cluster {
            replica_restart_ms = crate::protocol::now_millis();
            replica_fault.restarted_at_s = rec.elapsed();
            say(format!("[{:5.1}s] starting replica 1 again", rec.elapsed()));
            c.restart(1).await?;
        }
    }
    tokio::time::sleep_until(at(1.0).into()).await;
    sending.cancel();
    say(format!(
        "[{:5.1}s] sending stopped; waiting for acks",
        rec.elapsed()
    ));
    let mut outcomes: Vec<ClientOutcome> = Vec::new();
    for c in clients {
        outcomes.push(c.await.context("chat client task")?);
    }
    stop_http.cancel();
    for l in loaders {
        let _ = l.await;
    }
    let _ = progress.await;

    // What rlb saw.
    let events = events(admin).await.unwrap_or_default();
    let fill = |f: &mut Fault, kill: i64, restart: i64| {
        if let Some(e) = first_event(&events, "server_down", &f.addr, kill) {
            f.ejection_ms = e["ts_ms"].as_i64().map(|t| t - kill);
            f.down_reason = e["detail"].as_str().map(str::to_owned);
        }
        if let Some(e) = first_event(&events, "server_up", &f.addr, restart) {
            f.return_ms = e["ts_ms"].as_i64().map(|t| t - restart);
        }
    };
    fill(&mut chat_fault, chat_kill_ms, chat_restart_ms);
    let mut faults = vec![chat_fault];
    if o.full {
        fill(&mut replica_fault, replica_kill_ms, replica_restart_ms);
        faults.push(replica_fault);
    }

    // History: every acknowledged message must be there, once.
    let mut by_room: HashMap<String, HashSet<String>> = HashMap::new();
    for out in &outcomes {
        by_room
            .entry(out.room.clone())
            .or_default()
            .extend(out.acked.iter().cloned());
    }
    let (mut found, mut duplicated) = (0, 0);
    let start = std::time::Instant::now();
    for (room, ids) in &by_room {
        loop {
            let path = format!("/history?room={room}&limit={HISTORY_LIMIT}");
            let reply = http::get(local(ports.http), &path, Duration::from_secs(3)).await;
            let stored: Vec<String> = match reply {
                Ok(r) if r.status == 200 => serde_json::from_slice::<Vec<Value>>(&r.body)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let unique: HashSet<&String> = stored.iter().collect();
            let here = ids.iter().filter(|id| unique.contains(id)).count();
            if here == ids.len() || start.elapsed() > HISTORY_TIMEOUT {
                found += here;
                duplicated += stored.len() - unique.len();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let sent: usize = by_room.values().map(HashSet::len).sum();
    let requests_failed = rec.requests_failed.load(Ordering::Relaxed);
    let faults_first = faults.first().cloned();
    Ok(Summary {
        mode: if o.full { "full" } else { "embedded" },
        clients: o.clients,
        rate: o.rate,
        http_rate: o.http_rate,
        duration_s: d,
        requests_ok: rec.requests_ok.load(Ordering::Relaxed),
        requests_failed,
        history_reads_ok: history_rec.requests_ok.load(Ordering::Relaxed),
        history_reads_failed: history_rec.requests_failed.load(Ordering::Relaxed),
        ws_reconnects: rec.reconnect_ms().len(),
        ws_connect_failures: rec.ws_connect_failed.load(Ordering::Relaxed),
        ws_error_frames: rec.ws_error_frames.load(Ordering::Relaxed),
        reconnect_ms: Distribution::of(rec.reconnect_ms()),
        messages_sent: sent,
        messages_resent: rec.messages_resent.load(Ordering::Relaxed),
        messages_found: found,
        messages_lost: sent - found,
        messages_duplicated: duplicated,
        messages_unacked: outcomes.iter().map(|o| o.unacked.len()).sum(),
        ejection_ms: faults_first.as_ref().and_then(|f| f.ejection_ms),
        return_ms: faults_first.as_ref().and_then(|f| f.return_ms),
        faults,
        errors: rec
            .errors()
            .into_iter()
            .chain(history_rec.errors())
            .collect(),
        events: events
            .into_iter()
            .filter(|e| e["ts_ms"].as_i64().is_some_and(|t| t >= t0_ms))
            .collect(),
        samples: rec.samples(),
    })
}

/// Markers for the plot, in seconds since the start: what the experiment did (kill,
/// restart) and what rlb did about it, with how long that took.
pub fn markers(summary: &Summary) -> Vec<plot::Marker> {
    let mut out = Vec::new();
    for f in &summary.faults {
        let short = if f.target.starts_with("replica") {
            "replica 1"
        } else {
            "s1"
        };
        out.push(plot::Marker {
            at_s: f.killed_at_s,
            label: format!("kill {short}"),
            by_rlb: false,
        });
        if let Some(ms) = f.ejection_ms {
            out.push(plot::Marker {
                at_s: f.killed_at_s + ms as f64 / 1000.0,
                label: format!("{short} ejected after {ms} ms"),
                by_rlb: true,
            });
        }
        out.push(plot::Marker {
            at_s: f.restarted_at_s,
            label: format!("restart {short}"),
            by_rlb: false,
        });
        if let Some(ms) = f.return_ms {
            out.push(plot::Marker {
                at_s: f.restarted_at_s + ms as f64 / 1000.0,
                label: format!("{short} back after {ms} ms"),
                by_rlb: true,
            });
        }
    }
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out
}
