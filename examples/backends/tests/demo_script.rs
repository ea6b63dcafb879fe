//! `scripts/demo.sh` as a user runs it, on this build's debug binaries and free ports:
//! Ctrl-C (SIGINT to its process group, as a terminal sends it; to the script alone; or
//! with SIGINT ignored by whoever started it) stops every process it started, removes its
//! work directory and exits 0; a chat server killed with SIGKILL is started again, and
//! bash's "Killed" report stays out of the output.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rlb_demo::experiment::stack::free_ports;

/// Debug binaries start in well under a second each; the demo waits for five of them.
const START: Duration = Duration::from_secs(60);
/// The script gives its programs 10 s to stop before SIGKILL.
const STOP: Duration = Duration::from_secs(20);

/// How the process that starts the script leaves SIGINT.
#[derive(Clone, Copy)]
enum Sigint {
    Default,
    /// As a non-interactive shell leaves it for a background job.
    Ignored,
}

struct Demo {
    child: Child,
    output: Arc<Mutex<String>>,
    http_port: u16,
    chat_ports: Vec<u16>,
    /// Every process below the script once it was up, to check (and, if the test fails,
    /// to stop) by pid.
    started: Vec<u32>,
    work: PathBuf,
}

/// The directory of this build's binaries, with `rlb` in it (built here if a
/// `cargo test -p rlb-demo` did not build it).
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_chat-server"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    if !dir.join("rlb").exists() {
        let target = dir.parent().expect("target dir");
        let mut cargo = Command::new(env!("CARGO"));
        // With rlb-demo selected too, features unify as in this build: nothing else rebuilds.
        cargo
            .args(["build", "-p", "rlb", "-p", "rlb-demo", "--bin", "rlb"])
            .arg("--target-dir")
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.ends_with("release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p rlb failed");
    }
    dir
}

impl Demo {
    fn start(sigint: Sigint) -> Demo {
        let ports = free_ports(5).expect("free ports");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/demo.sh");
        let mut cmd = Command::new("env");
        cmd.arg(match sigint {
            Sigint::Default => "--default-signal=INT",
            Sigint::Ignored => "--ignore-signal=INT",
        })
        .arg("bash")
        .arg(script)
        .arg("--no-build")
        .arg("--bin-dir")
        .arg(bin_dir())
        .env("RLB_DEMO_HTTP_PORT", ports[0].to_string())
        .env("RLB_DEMO_ADMIN_PORT", ports[1].to_string())
        .env(
            "RLB_DEMO_CHAT_PORTS",
            format!("{} {} {}", ports[2], ports[3], ports[4]),
        )
        .env("RLB_DEMO_RESTART_DELAY", "1")
        .env_remove("RLB_DEMO_SIGINT_RESET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, as a shell gives a foreground job: the group is what a
        // terminal's Ctrl-C signals.
        .process_group(0);
        let mut child = cmd.spawn().expect("start scripts/demo.sh");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut demo = Demo {
            child,
            output,
            http_port: ports[0],
            chat_ports: ports[2..].to_vec(),
            started: Vec::new(),
            work: PathBuf::new(),
        };
        demo.wait_for_output("Ctrl-C stops everything", START);
        demo.work = demo.work_dir();
        assert!(demo.work.is_dir(), "work directory {:?}", demo.work);
        // The chat page answers through rlb.
        let status = http_status(demo.http_port, "/");
        assert_eq!(status, Some(200), "GET / through rlb\n{}", demo.output());
        demo.started = descendants(demo.child.id());
        // rlb, three chat servers and their four supervisors.
        assert!(
            demo.started.len() >= 8,
            "processes under the script: {:?}\n{}",
            demo.started,
            demo.output()
        );
        demo
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn wait_for_output(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.output().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "demo.sh exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from demo.sh within {limit:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// From the banner's `logs:  /tmp/rlb-demo.XXXXXX/*.log`.
    fn work_dir(&self) -> PathBuf {
        let out = self.output();
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("logs:"))
            .unwrap_or_else(|| panic!("no logs: line in\n{out}"));
        let path = line.trim_start()["logs:".len()..].trim();
        PathBuf::from(path.strip_suffix("/*.log").expect("logs: DIR/*.log"))
    }

    /// The pid the banner gives for chat server `name` (`s1 :PORT (pid N)`).
    fn banner_pid(&self, name: &str) -> u32 {
        let out = self.output();
        let at = out
            .find(&format!("{name} :"))
            .expect("chat server in banner");
        let rest = &out[at..];
        let pid = &rest[rest.find("(pid ").expect("pid") + 5..];
        pid[..pid.find(')').expect(")")]
            .parse()
            .expect("pid number")
    }

    fn signal(&self, sig: &str, target: &str) {
        let status = Command::new("kill")
            .args([sig, "--", target])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {target}");
    }

    /// SIGINT to the script's process group, as a terminal's Ctrl-C.
    fn ctrl_c(&self) {
        self.signal("-INT", &format!("-{}", self.child.id()));
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STOP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for demo.sh") {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "demo.sh still running {STOP:?} after the signal:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Exit 0, every process it started gone, the work directory removed.
    fn assert_stopped_cleanly(&mut self, also: &[u32]) {
        let status = self.wait_exit();
        let out = self.output();
        assert!(status.success(), "demo.sh exited with {status}:\n{out}");
        let left: Vec<u32> = self
            .started
            .iter()
            .chain(also)
            .copied()
            .filter(|&pid| alive(pid))
            .collect();
        assert!(
            left.is_empty(),
            "still running after demo.sh exited: {:?}\n{out}",
            left.iter().map(|&p| describe(p)).collect::<Vec<_>>()
        );
        assert!(
            !self.work.exists(),
            "work directory {:?} left behind:\n{out}",
            self.work
        );
        assert!(
            !out.contains("Killed") && !out.contains("Terminated"),
            "bash job reports in the output:\n{out}"
        );
    }
}

impl Drop for Demo {
    /// A failed test still stops what it started, by pid.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &pid in &self.started {
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// (state, ppid) of a process, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// A live process (a zombie has already exited).
fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

fn describe(pid: u32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!("{pid} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
}

/// Every live process whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?.1)))
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    found.remove(0);
    found.retain(|&pid| alive(pid));
    found
}

/// The status code of `GET path` on 127.0.0.1:port, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn ctrl_c_on_a_terminal_stops_everything_and_exits_0() {
    let mut demo = Demo::start(Sigint::Default);
    demo.ctrl_c();
    demo.assert_stopped_cleanly(&[]);
    assert!(demo.output().contains("demo: stopped"), "{}", demo.output());
}

#[test]
fn sigint_to_the_script_alone_stops_everything_and_exits_0() {
    let mut demo = Demo::start(Sigint::Default);
    demo.signal("-INT", &demo.child.id().to_string());
    demo.assert_stopped_cleanly(&[]);
}

/// A shell that starts the script in the background hands it SIGINT ignored, and bash
/// cannot trap a signal ignored at its start: the script must still stop cleanly.
#[test]
fn ctrl_c_stops_everything_even_when_started_with_sigint_ignored() {
    let mut demo = Demo::start(Sigint::Ignored);
    demo.ctrl_c();
    demo.assert_stopped_cleanly(&[]);
}

#[test]
fn a_killed_chat_server_is_started_again_without_bash_noise() {
    let mut demo = Demo::start(Sigint::Default);
    let s1 = demo.banner_pid("s1");
    demo.signal("-KILL", &s1.to_string());
    demo.wait_for_output("demo: s1 is running again, pid ", Duration::from_secs(20));
    let out = demo.output();
    assert!(
        out.contains(&format!(
            "demo: s1 (pid {s1}) was killed by SIGKILL; starting it again in 1 s"
        )),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("demo: s1 is running again, pid "))
        .expect("restart line");
    let new_pid: u32 = line["demo: s1 is running again, pid ".len()..]
        .trim()
        .parse()
        .expect("new pid");
    assert!(alive(new_pid), "the new s1 runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_status(demo.chat_ports[0], "/healthz") != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the new s1 never answered /healthz"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    demo.ctrl_c();
    demo.assert_stopped_cleanly(&[new_pid]);
}
