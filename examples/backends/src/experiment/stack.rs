//! The processes an experiment runs and kills: chat servers, rlb, history-writer and the
//! MariaDB cluster, each stopped by its own handle (pid), never by name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::http;

/// Ports tried by [`free_port`]: below Linux's ephemeral range (32768–60999), so that no
/// `bind(:0)` or outgoing connection elsewhere on the machine takes a killed chat
/// server's port before it starts again.
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// A port on 127.0.0.1 that was free a moment ago, outside the ephemeral range.
pub fn free_port() -> anyhow::Result<u16> {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new();
    for attempt in 0u32..200 {
        let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
        let port = PORT_RANGE.start + (random.hash_one(attempt) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `n` distinct free ports (see [`free_port`]).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::with_capacity(n);
    while ports.len() < n {
        let port = free_port()?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// A binary built beside the running one (same cargo target directory and profile).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running binary")?;
    let mut dir = exe
        .parent()
        .context("binary has no directory")?
        .to_path_buf();
    // Integration tests run from target/PROFILE/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first: cargo build -p rlb-demo",
            path.display()
        );
    }
    Ok(path)
}

/// A child process that can be killed and started again with the same command line.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    pub fn new(name: &str, program: &Path, args: Vec<String>, log_dir: &Path) -> Proc {
        Proc {
            name: name.to_owned(),
            program: program.to_path_buf(),
            args,
            env: Vec::new(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Proc {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// SIGKILL, then reap.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().ok();
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM by pid, SIGKILL if still running after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            child.start_kill().ok();
            let _ = child.wait().await;
        }
    }

    /// Fails if the process has exited, naming its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited ({status}); log: {}\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            );
        }
        Ok(())
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `GET path` on `addr` until it answers 200, while `proc` keeps running.
pub async fn wait_http_ok(
    proc: &mut Proc,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        proc.check_running()?;
        if let Ok(reply) = http::get(addr, path, Duration::from_millis(500)).await
            && reply.status == 200
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "{} did not answer GET {path} on {addr} within {timeout:?}",
                proc.name
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The MariaDB primary and two replicas of `scripts/mariadb-cluster.sh`.
pub struct Cluster {
    script: PathBuf,
    pub base: String,
    /// Primary, replica 1, replica 2.
    pub ports: [u16; 3],
}

impl Cluster {
    /// Starts a cluster on free ports (tries other ports when the script says a port was
    /// taken meanwhile). A watchdog stops it if this process dies without cleaning up.
    pub async fn start(script: &Path) -> anyhow::Result<Cluster> {
        for _ in 0..5 {
            let free = free_ports(3)?;
            let ports = [free[0], free[1], free[2]];
            let out = Command::new(script)
                .arg("start")
                .args(ports.map(|p| p.to_string()))
                .env("RLB_MARIADB_OWNER_PID", std::process::id().to_string())
                .stdin(Stdio::null())
                .output()
                .await
                .with_context(|| format!("running {}", script.display()))?;
            if out.status.code() == Some(3) {
                continue;
            }
            if !out.status.success() {
                bail!(
                    "{} start failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let base = stdout
                .lines()
                .find_map(|l| l.strip_prefix("RLB_MARIADB_BASE="))
                .context("mariadb-cluster.sh printed no RLB_MARIADB_BASE")?
                .to_owned();
            return Ok(Cluster {
                script: script.to_path_buf(),
                base,
                ports,
            });
        }
        bail!("no free ports for the mariadb cluster after 5 tries")
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(&self.script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await?;
        if !out.status.success() {
            bail!(
                "mariadb-cluster.sh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// SIGKILL node `n` (1 and 2 are the replicas).
    pub async fn kill(&self, n: u8) -> anyhow::Result<()> {
        self.run(&["kill", &self.base, &n.to_string()]).await
    }

    /// Starts node `n` again and waits until it accepts connections.
    pub async fn restart(&self, n: u8) -> anyhow::Result<()> {
        self.run(&["restart", &self.base, &n.to_string()]).await
    }

    pub async fn stop(&self) -> anyhow::Result<()> {
        self.run(&["stop", &self.base]).await
    }
}

/// The rlb configuration of an experiment: chat servers behind an http listener and, in
/// full mode, the replicas behind a tcp listener.
pub struct RlbPorts {
    pub http: u16,
    pub admin: u16,
    pub mysql: Option<u16>,
}

pub fn rlb_config(ports: &RlbPorts, chat: &[u16], replicas: &[u16]) -> String {
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut toml = format!(
        r#"[global]
shutdown_timeout = "2s"
access_log = false

[admin]
bind = "127.0.0.1:{admin}"

[listeners.chat]
bind = "127.0.0.1:{http}"
mode = "http"
routes = [{{ upstream = "chat" }}]

[upstreams.chat]
balance = "least_conn"
servers = [{chat}]

[upstreams.chat.health]
check = "http"
path = "/healthz"
interval = "500ms"
timeout = "300ms"
fall = 2
rise = 2
"#,
        admin = ports.admin,
        http = ports.http,
        chat = list(chat),
    );
    if let Some(mysql) = ports.mysql {
        toml.push_str(&format!(
            r#"
[listeners.history_read]
bind = "127.0.0.1:{mysql}"
mode = "tcp"
upstream = "replicas"

[upstreams.replicas]
balance = "least_conn"
servers = [{replicas}]

[upstreams.replicas.health]
check = "mysql"
user = "rlb_monitor"
password_env = "RLB_MYSQL_PASSWORD"
max_replication_lag = "5s"
interval = "500ms"
timeout = "400ms"
fall = 2
rise = 2
"#,
            replicas = list(replicas),
        ));
    }
    toml
}

/// Runs rlb in this process from `path`, like the `rlb` binary: SIGHUP reloads,
/// SIGTERM/SIGINT shut down gracefully. Lets an experiment run rlb as its own process
/// (so it has its own environment and can be signalled) without locating the binary.
pub fn serve_rlb(path: &Path) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let config = rlb::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut hangup = signal(SignalKind::hangup())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let rlb = rlb::Rlb::start(config, Some(path.to_path_buf()))
            .map_err(|e| anyhow::anyhow!("rlb not started: {e}"))?;
        tracing::info!(config = %path.display(), "rlb started");
        loop {
            tokio::select! {
                _ = hangup.recv() => { let _ = rlb.reload().await; }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        rlb.shutdown().await;
        Ok(())
    })
}
