//! Processes of their own: a tiny HTTP server to SIGKILL or SIGSTOP (`http_server.py`,
//! python3 standard library) and the `rlb` binary, run to its exit or kept running
//! with its log captured. Every process is killed and waited for on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::rlb::TempDir;

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

/// How long the binary gets to log a line a test waits for, or to exit.
const BINARY_WAIT: Duration = Duration::from_secs(20);

/// The `rlb` binary, to be run: `rlb --config FILE` with `RLB_LOG=info`, plus what the
/// builder adds. `run` waits for its exit; `spawn` keeps it running as an [`RlbProcess`].
pub struct RlbCommand {
    command: Command,
    dir: Option<TempDir>,
}

impl RlbCommand {
    /// `rlb --config lb.toml`, with `toml` written as `lb.toml` in a temporary directory
    /// that is also the working directory (so messages name `lb.toml`).
    pub fn text(toml: &str) -> RlbCommand {
        let dir = TempDir::new("rlb-binary");
        dir.file("lb.toml", toml);
        let mut command = RlbCommand::file(Path::new("lb.toml"));
        command.command.current_dir(&dir.0);
        command.dir = Some(dir);
        command
    }

    /// `rlb --config PATH`, for a file the test rewrites or that ships with rlb.
    pub fn file(path: &Path) -> RlbCommand {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rlb"));
        command
            .arg("--config")
            .arg(path)
            .env("RLB_LOG", "info")
            .stdin(Stdio::null());
        RlbCommand { command, dir: None }
    }

    /// One more argument, e.g. `--check`.
    pub fn arg(mut self, arg: &str) -> RlbCommand {
        self.command.arg(arg);
        self
    }

    /// An environment variable (`RLB_LOG` included: it replaces `info`).
    pub fn env(mut self, name: &str, value: &str) -> RlbCommand {
        self.command.env(name, value);
        self
    }

    /// Runs it to its exit: exit status, stdout and stderr.
    pub fn run(mut self) -> Output {
        self.command.output().expect("run the rlb binary")
    }

    /// Starts it, its stdout dropped and its stderr (the log) kept.
    pub fn spawn(mut self) -> RlbProcess {
        let mut child = self
            .command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the rlb binary");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = std::thread::spawn({
            let log = log.clone();
            move || collect(stderr, &log)
        });
        RlbProcess {
            child,
            log,
            reader: Some(reader),
            _dir: self.dir,
        }
    }
}

/// The running `rlb` binary, its log captured; killed and waited for on drop.
pub struct RlbProcess {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl RlbProcess {
    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The `addr=` of the first log line holding every one of `words`.
    pub fn logged_addr(&self, words: &[&str]) -> Option<SocketAddr> {
        let log = self.log.lock().unwrap();
        log.lines()
            .find(|l| words.iter().all(|w| l.contains(w)))?
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))?
            .parse()
            .ok()
    }

    /// Waits for a log line holding every one of `words` and an `addr=`: the address
    /// a listener got (`["listening", "listener=web"]`, `["admin listening"]`).
    pub async fn wait_addr(&self, words: &[&str]) -> SocketAddr {
        let start = Instant::now();
        loop {
            if let Some(addr) = self.logged_addr(words) {
                return addr;
            }
            if start.elapsed() > BINARY_WAIT {
                panic!(
                    "rlb logged no {words:?} line with an addr=:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin listener's address, from its `admin listening` log line.
    pub async fn admin_addr(&self) -> SocketAddr {
        self.wait_addr(&["admin listening"]).await
    }

    /// Sends `name` ("HUP", "TERM", ...) to the process.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the process to exit, and for the rest of its log.
    pub async fn exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for rlb") {
                break status;
            }
            if start.elapsed() > BINARY_WAIT {
                panic!("rlb did not exit in {BINARY_WAIT:?}:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        status
    }
}

/// Appends stderr to `log`, line by line, until the process closes it.
fn collect(stderr: ChildStderr, log: &Mutex<String>) {
    let mut reader = BufReader::new(stderr);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.by_ref().take(64 * 1024).read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => return,
            Ok(_) => log.lock().unwrap().push_str(&String::from_utf8_lossy(&raw)),
        }
    }
}

impl Drop for RlbProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
