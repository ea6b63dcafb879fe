//! Servers in processes of their own, for tests that SIGKILL or SIGSTOP them: a tiny
//! HTTP server (`http_server.py`, python3 standard library) and the `rlb` binary itself,
//! with its log captured. Every process is killed and waited for on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HTTP_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/http_server.py");

/// Sends `signal` (e.g. "STOP", "CONT") to `pid` with kill(1), so the tests need no unsafe.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// `http_server.py NAME` in its own process: `/healthz` is 200, anything else answers
/// NAME with an `x-server` header.
pub struct HttpProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    frozen: bool,
}

impl HttpProcess {
    pub fn start(name: &str) -> HttpProcess {
        let mut child = Command::new("python3")
            .arg(HTTP_SERVER)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs tests/support/http_server.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's port");
        let port: u16 = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("http_server.py printed {line:?} instead of its port");
            }
        };
        HttpProcess {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            frozen: false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaped: its port refuses connects when this returns.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: connects still complete in the kernel's backlog, nothing is answered.
    pub fn freeze(&mut self) {
        signal(self.pid(), "STOP");
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        signal(self.pid(), "CONT");
        self.frozen = false;
    }
}

impl Drop for HttpProcess {
    fn drop(&mut self) {
        if self.frozen {
            // SIGKILL works on a stopped process too; this only spares a zombie's wait.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.pid().to_string())
                .status();
        }
        self.kill();
    }
}

/// The `rlb` binary run with a configuration file, its stderr (the log) kept.
pub struct RlbProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    admin: SocketAddr,
    _dir: super::rlb::TempDir,
}

impl RlbProcess {
    /// Runs `rlb --config FILE` with `env` added; the config must have an `[admin]`
    /// table (bind `127.0.0.1:0` is fine: the port is read from the log).
    pub fn start(toml: &str, env: &[(&str, &str)]) -> RlbProcess {
        let dir = super::rlb::TempDir::new("rlb-process");
        let path: PathBuf = dir.file("lb.toml", toml);
        let mut child = Command::new(env!("CARGO_BIN_EXE_rlb"))
            .arg("--config")
            .arg(&path)
            .envs(env.iter().copied())
            .env("RLB_LOG", "info,rlb=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the rlb binary");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn({
            let log = log.clone();
            move || collect(stderr, &log, tx)
        });
        let admin = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(admin) => admin,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rlb logged no `admin listening` line:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        RlbProcess {
            child,
            log,
            admin,
            _dir: dir,
        }
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Appends stderr to `log`, and sends the admin address once it is logged.
fn collect(stderr: ChildStderr, log: &Mutex<String>, admin: std::sync::mpsc::Sender<SocketAddr>) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.by_ref().take(64 * 1024).read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        if line.contains("admin listening")
            && let Some(addr) = field(&line, "addr")
        {
            let _ = admin.send(addr);
        }
        log.lock().unwrap().push_str(&line);
    }
}

/// `name=VALUE` from a text log line, parsed as an address.
fn field(line: &str, name: &str) -> Option<SocketAddr> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()?.parse().ok()
}

impl Drop for RlbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
