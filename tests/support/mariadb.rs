//! A throwaway MariaDB primary + 2 replicas for integration tests, run by
//! `scripts/mariadb-cluster.sh` and stopped on drop.
//!
//! Node numbers follow the script: 0 is the primary, 1 and 2 are the replicas. Users on
//! every node: `root` (no password), `repl`/`replpass`, `rlb_check` (no password, no
//! privileges), `rlb_monitor`/`monitorpass` (REPLICATION CLIENT, SLAVE MONITOR); database
//! `rlbtest`. All calls block (std::process); call them from `spawn_blocking` inside a
//! runtime if the runtime must keep running meanwhile.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mariadb-cluster.sh");

/// The script's exit status for "a port is already in use": pick other ports and retry.
const PORT_IN_USE: i32 = 3;
const START_ATTEMPTS: usize = 5;

/// A running primary + 2 replicas; `Drop` stops the servers and removes their files.
#[derive(Debug)]
pub struct MariaDbCluster {
    base: PathBuf,
    ports: [u16; 3],
    pids: [u32; 3],
}

impl MariaDbCluster {
    /// Whether mariadbd is installed (on PATH or in /usr/sbin).
    pub fn available() -> bool {
        let on_path = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join("mariadbd").is_file())
        });
        on_path || Path::new("/usr/sbin/mariadbd").is_file()
    }

    /// Starts a cluster on three free loopback ports, with replication verified.
    pub fn start() -> anyhow::Result<Self> {
        if !Self::available() {
            bail!("mariadbd is not installed: run scripts/install-test-deps.sh as root");
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let ports = free_ports()?;
            let output = Command::new(SCRIPT)
                .arg("start")
                .args(ports.map(|p| p.to_string()))
                .env("RLB_MARIADB_TEMPLATE", template_dir())
                .env("RLB_MARIADB_OWNER_PID", std::process::id().to_string())
                .output()
                .with_context(|| format!("running {SCRIPT} start"))?;
            if output.status.code() == Some(PORT_IN_USE) {
                last_error = Some(describe("start", &output));
                continue;
            }
            if !output.status.success() {
                bail!("{}", describe("start", &output));
            }
            return Self::from_env_lines(&String::from_utf8_lossy(&output.stdout));
        }
        bail!(
            "no free ports after {START_ATTEMPTS} attempts: {}",
            last_error.unwrap_or_default()
        )
    }

    fn from_env_lines(stdout: &str) -> anyhow::Result<Self> {
        let vars: HashMap<&str, &str> = stdout
            .lines()
            .filter_map(|line| line.split_once('='))
            .collect();
        let var = |key: &str| {
            vars.get(key)
                .copied()
                .with_context(|| format!("start printed no {key}: {stdout:?}"))
        };
        let base = PathBuf::from(var("RLB_MARIADB_BASE")?);
        let mut ports = [0; 3];
        let mut pids = [0; 3];
        for (i, name) in ["PRIMARY", "REPLICA1", "REPLICA2"].iter().enumerate() {
            ports[i] = var(&format!("RLB_MARIADB_{name}_PORT"))?.parse()?;
            pids[i] = var(&format!("RLB_MARIADB_{name}_PID"))?.parse()?;
        }
        Ok(Self { base, ports, pids })
    }

    /// The directory holding the servers' data, sockets and logs.
    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn primary_port(&self) -> u16 {
        self.ports[0]
    }

    /// Port of replica `n` (1 or 2).
    pub fn replica_port(&self, n: usize) -> u16 {
        assert!(n == 1 || n == 2, "replicas are 1 and 2, not {n}");
        self.ports[n]
    }

    /// Port of node `n` (0 primary, 1 and 2 replicas).
    pub fn port(&self, n: usize) -> u16 {
        self.ports[n]
    }

    /// The process id the node had at start (a restart changes it).
    pub fn initial_pid(&self, n: usize) -> u32 {
        self.pids[n]
    }

    /// SIGKILL node `n`; its port refuses connections when this returns.
    pub fn kill(&self, n: usize) -> anyhow::Result<()> {
        self.run(&["kill", &n.to_string()]).map(drop)
    }

    /// Starts node `n` again with the same command line (stopping it first if it runs)
    /// and waits until it accepts logins. A replica resumes replication by itself.
    pub fn restart(&self, n: usize) -> anyhow::Result<()> {
        self.run(&["restart", &n.to_string()]).map(drop)
    }

    /// SIGSTOP node `n`: TCP connects still succeed (listen backlog), no greeting comes.
    pub fn freeze(&self, n: usize) -> anyhow::Result<()> {
        self.run(&["freeze", &n.to_string()]).map(drop)
    }

    pub fn thaw(&self, n: usize) -> anyhow::Result<()> {
        self.run(&["thaw", &n.to_string()]).map(drop)
    }

    /// Makes replica `n` report `Seconds_Behind_Master >= secs` (growing by 1/s) with
    /// both replication threads running; `lag(n, 0)` catches it up.
    pub fn lag(&self, n: usize, secs: u64) -> anyhow::Result<()> {
        self.run(&["lag", &n.to_string(), &secs.to_string()])
            .map(drop)
    }

    /// Runs `query` as root over node `n`'s socket; rows are tab-separated, one per
    /// line, without column names and without the final newline.
    pub fn sql(&self, n: usize, query: &str) -> anyhow::Result<String> {
        let out = self.run(&["sql", &n.to_string(), query])?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// `SHOW SLAVE STATUS` of node `n` as column name → value (`NULL` for NULL); empty
    /// when the node is not a replica.
    pub fn slave_status(&self, n: usize) -> anyhow::Result<HashMap<String, String>> {
        let output = self
            .command(&["sql", &n.to_string(), "SHOW SLAVE STATUS"])
            .env("RLB_MARIADB_SQL_HEADERS", "1")
            .output()?;
        if !output.status.success() {
            bail!("{}", describe("sql SHOW SLAVE STATUS", &output));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Ok(HashMap::new());
        };
        Ok(names
            .split('\t')
            .zip(values.split('\t'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// `Seconds_Behind_Master` of replica `n`: `None` when NULL.
    pub fn seconds_behind_master(&self, n: usize) -> anyhow::Result<Option<u64>> {
        let status = self.slave_status(n)?;
        let value = status
            .get("Seconds_Behind_Master")
            .with_context(|| format!("node {n} is not a replica"))?;
        if value == "NULL" {
            return Ok(None);
        }
        Ok(Some(value.parse().with_context(|| {
            format!("Seconds_Behind_Master {value:?}")
        })?))
    }

    /// `Aborted_connects` of node `n`: connections that failed before or during login.
    pub fn aborted_connects(&self, n: usize) -> anyhow::Result<u64> {
        self.global_status(n, "Aborted_connects")
    }

    /// `Aborted_clients` of node `n`: connections closed after login without COM_QUIT.
    pub fn aborted_clients(&self, n: usize) -> anyhow::Result<u64> {
        self.global_status(n, "Aborted_clients")
    }

    /// A numeric `SHOW GLOBAL STATUS` counter of node `n`.
    pub fn global_status(&self, n: usize, name: &str) -> anyhow::Result<u64> {
        let row = self.sql(n, &format!("SHOW GLOBAL STATUS LIKE '{name}'"))?;
        let value = row
            .split('\t')
            .nth(1)
            .with_context(|| format!("unexpected status row {row:?}"))?;
        value
            .parse()
            .with_context(|| format!("{name} is {value:?}"))
    }

    /// Logs in to node `n` over TCP as `user` with the mariadb client and runs `query`.
    /// The error carries the client's message (e.g. `ERROR 1045 ... Access denied`).
    pub fn tcp_sql(
        &self,
        n: usize,
        user: &str,
        password: Option<&str>,
        query: &str,
    ) -> anyhow::Result<String> {
        let mut cmd = Command::new(client_bin("mariadb"));
        cmd.args(["--no-defaults", "--connect-timeout=5", "--protocol=TCP"])
            .args(["-h", "127.0.0.1", "-P", &self.ports[n].to_string()])
            .args(["-u", user, "-B", "-N", "-e", query]);
        // The client reads MYSQL_PWD, which keeps the password off the command line.
        cmd.env_remove("MYSQL_PWD");
        if let Some(password) = password {
            cmd.env("MYSQL_PWD", password);
        }
        let output = cmd.output().context("running the mariadb client")?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end_matches('\n')
            .to_owned())
    }

    /// The script's `status` report (ports, pids, running/frozen/dead, replication).
    pub fn status(&self) -> anyhow::Result<String> {
        self.run(&["status"])
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(SCRIPT);
        cmd.arg(args[0]).arg(&self.base).args(&args[1..]);
        cmd
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self
            .command(args)
            .output()
            .with_context(|| format!("running {SCRIPT} {}", args[0]))?;
        if !output.status.success() {
            bail!("{}", describe(&args.join(" "), &output));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for MariaDbCluster {
    fn drop(&mut self) {
        match self.command(&["stop"]).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("mariadb cluster: {}", describe("stop", &output)),
            Err(e) => eprintln!("mariadb cluster: running {SCRIPT} stop: {e}"),
        }
    }
}

/// Three distinct free loopback ports. mariadbd takes port 0 to mean 3306, so the ports
/// are chosen here: bound together (hence distinct), read back, released.
fn free_ports() -> anyhow::Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Where the initial datadir is cached across test runs (the script publishes it
/// atomically, so parallel test processes share it safely).
fn template_dir() -> PathBuf {
    let target = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("mariadb-template")
}

fn client_bin(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    PathBuf::from(name)
}

fn describe(what: &str, output: &Output) -> String {
    format!(
        "mariadb-cluster.sh {what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )
}
