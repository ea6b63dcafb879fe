//! The `rlb` binary itself: `--check` on good and bad files, and a graceful shutdown
//! on SIGTERM that lets a slow request finish.
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::rlb::*;

const RLB: &str = env!("CARGO_BIN_EXE_rlb");

/// Runs `rlb --config lb.toml --check` in a directory holding `text` as `lb.toml`;
/// returns the exit code and stdout + stderr.
fn check(text: &str) -> (i32, String) {
    let dir = TempDir::new("check");
    dir.file("lb.toml", text);
    let output = Command::new(RLB)
        .args(["--config", "lb.toml", "--check"])
        .current_dir(&dir.0)
        .output()
        .expect("run rlb --check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Asserts that `--check` fails with exit code 1 and reports `lb.toml:POSITION: ...`
/// with `needle` in the message.
fn rejects(text: &str, position: &str, needle: &str) {
    let (code, output) = check(text);
    assert_eq!(code, 1, "exit code for:\n{text}\noutput:\n{output}");
    let prefix = format!("lb.toml:{position}: ");
    assert!(
        output
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(needle)),
        "no `{prefix}...{needle}` in:\n{output}"
    );
    assert!(!output.contains("panicked"), "{output}");
}

const UPSTREAM: &str = "\n[upstreams.app]\nservers = [\"127.0.0.1:9001\"]\n";

#[test]
fn check_accepts_a_good_config() {
    let (code, output) = check(&format!(
        "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"app\" }}]\n{UPSTREAM}"
    ));
    assert_eq!(code, 0, "{output}");
    assert_eq!(output.trim(), "configuration OK");
}

#[test]
fn check_reports_toml_syntax_errors() {
    rejects(
        "[listeners.web]\nbind = \"127.0.0.1:8080\nroutes = []\n",
        "2:23",
        "",
    );
}

#[test]
fn check_reports_unknown_keys() {
    rejects(
        &format!(
            "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"app\" }}]\ncolour = \"blue\"\n{UPSTREAM}"
        ),
        "4:1",
        "colour",
    );
}

#[test]
fn check_reports_unknown_upstreams() {
    rejects(
        &format!(
            "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"nope\" }}]\n{UPSTREAM}"
        ),
        "3:24",
        "unknown upstream `nope`",
    );
}

#[test]
fn check_reports_duplicate_binds() {
    rejects(
        &format!(
            "[listeners.a]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [listeners.b]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"app\" }}]\n{UPSTREAM}"
        ),
        "5:8",
        "duplicate bind 127.0.0.1:8080",
    );
    // A wildcard takes the port on every address: the second bind would fail.
    rejects(
        &format!(
            "[listeners.a]\nbind = \"0.0.0.0:8080\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [listeners.b]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"app\" }}]\n{UPSTREAM}"
        ),
        "5:8",
        "duplicate bind 127.0.0.1:8080",
    );
}

#[test]
fn check_reports_bad_durations() {
    rejects(
        &format!(
            "[global]\nshutdown_timeout = \"30 parsecs\"\n[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{{ upstream = \"app\" }}]\n{UPSTREAM}"
        ),
        "2:20",
        "30 parsecs",
    );
}

#[test]
fn check_reports_bad_addresses() {
    rejects(
        &format!(
            "[listeners.web]\nbind = \"localhost:80\"\nroutes = [{{ upstream = \"app\" }}]\n{UPSTREAM}"
        ),
        "2:8",
        "localhost:80",
    );
}

#[test]
fn check_reports_unknown_balance_with_the_valid_values() {
    rejects(
        "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{ upstream = \"app\" }]\n\
         [upstreams.app]\nbalance = \"random\"\nservers = [\"127.0.0.1:9001\"]\n",
        "5:11",
        "`random`, expected `round_robin` or `least_conn`",
    );
}

#[test]
fn check_reports_a_tcp_listener_without_upstream() {
    rejects(
        &format!("[listeners.raw]\nbind = \"127.0.0.1:3307\"\nmode = \"tcp\"\n{UPSTREAM}"),
        "3:8",
        "needs an `upstream`",
    );
}

#[test]
fn check_reports_an_http_listener_without_routes() {
    rejects(
        &format!("[listeners.web]\nbind = \"127.0.0.1:8080\"\n{UPSTREAM}"),
        "1:1",
        "needs `routes`",
    );
}

#[test]
fn check_reports_an_upstream_without_servers() {
    rejects(
        "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{ upstream = \"app\" }]\n\
         [upstreams.app]\nservers = []\n",
        "5:11",
        "no servers",
    );
}

#[test]
fn check_reports_every_error_in_one_run() {
    let (code, output) = check(
        "[global]\nshutdown_timeout = \"soon\"\n\
         [listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{ upstream = \"nope\" }]\n\
         [upstreams.app]\nbalance = \"random\"\nservers = []\n",
    );
    assert_eq!(code, 1, "{output}");
    let positions: Vec<&str> = output
        .lines()
        .filter_map(|l| l.strip_prefix("lb.toml:"))
        .filter_map(|l| l.split(": ").next())
        .collect();
    assert_eq!(positions, ["2:20", "5:24", "7:11", "8:11"], "{output}");
}

/// Kills the child on drop, so a failed assert leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let a = TestServer::start("a").await;
    let dir = TempDir::new("shutdown");
    let path = dir.file(
        "lb.toml",
        &format!(
            "[global]\nshutdown_timeout = \"20s\"\naccess_log = false\n\
             [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
             [upstreams.app]\nservers = [\"{}\"]\n",
            a.addr
        ),
    );
    let mut child = Child(
        Command::new(RLB)
            .arg("--config")
            .arg(&path)
            .env("RLB_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rlb"),
    );
    // The port the kernel gave, from the `listening ... addr=` log line.
    let stderr = child.0.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening")
                && let Some(addr) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.parse().ok())
            {
                let _ = addr_tx.send(addr);
            }
            lines.push(line);
        }
        lines
    });
    let web = tokio::task::spawn_blocking(move || addr_rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("rlb logged no `listening ... addr=` line");

    let slow = tokio::spawn(get(web, "/slow?ms=2000"));
    eventually(
        "the slow request to reach the server",
        Duration::from_secs(10),
        || async { a.hits() == 1 },
    )
    .await;
    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());

    assert_eq!(slow.await.unwrap(), (200, "a".to_string()));
    let status = tokio::task::spawn_blocking(move || {
        let status = child.0.wait().expect("wait for rlb");
        (status, child)
    })
    .await
    .unwrap()
    .0;
    let lines = log.join().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", lines.join("\n"));
    // The request was still in flight when the signal came.
    for said in ["waiting for open connections", "rlb stopped"] {
        assert!(
            lines.iter().any(|l| l.contains(said)),
            "no `{said}` in the log:\n{}",
            lines.join("\n")
        );
    }
}
