//! The `rlb` binary itself, for what only a spawned process shows: `--check`'s exit
//! codes and output, a missing file, `--version` and `--help`, the JSON log, and a
//! graceful shutdown on SIGTERM that lets a slow request finish.
//! The messages of bad configurations are the config unit tests' (`src/config/tests.rs`).
mod support;

use std::path::Path;
use std::time::Duration;

use support::process::RlbCommand;
use support::rlb::*;

/// Runs `rlb --config lb.toml --check` in a directory holding `text` as `lb.toml`;
/// returns the exit code and stdout + stderr.
fn check(text: &str) -> (i32, String) {
    let output = RlbCommand::text(text).arg("--check").run();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let a = TestServer::start("a").await;
    let mut rlb = RlbCommand::text(&format!(
        "[global]\nshutdown_timeout = \"20s\"\naccess_log = false\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{}\"]\n",
        a.addr
    ))
    .spawn();
    // The port the kernel gave, from the `listening ... addr=` log line.
    let web = rlb.wait_addr(&["listening"]).await;

    let slow = tokio::spawn(get(web, "/slow?ms=2000"));
    eventually(
        "the slow request to reach the server",
        Duration::from_secs(10),
        || async { a.hits() == 1 },
    )
    .await;
    rlb.signal("TERM");

    assert_eq!(slow.await.unwrap(), (200, "a".to_string()));
    let status = rlb.exit().await;
    let lines: Vec<String> = rlb.log().lines().map(str::to_string).collect();
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

#[test]
fn a_missing_file_exits_1_naming_it() {
    let output = RlbCommand::file(Path::new("/nonexistent/lb.toml")).run();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("/nonexistent/lb.toml: cannot read the file"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn version_and_help_exit_0() {
    let version = RlbCommand::file(Path::new("lb.toml"))
        .arg("--version")
        .run();
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("rlb {}", env!("CARGO_PKG_VERSION"))
    );
    let help = RlbCommand::file(Path::new("lb.toml")).arg("--help").run();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    assert!(
        text.contains("--config") && text.contains("--check"),
        "{text}"
    );
}

/// `log_format = "json"`: every line of the log is one JSON object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_object_a_line() {
    let a = TestServer::start("a").await;
    let mut rlb = RlbCommand::text(&format!(
        "[global]\nlog_format = \"json\"\n\
         [listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{}\"]\n",
        a.addr
    ))
    .spawn();
    wait_until(
        "rlb started",
        Duration::from_secs(20),
        || async { rlb.log() },
        |log| log.contains("rlb started"),
    )
    .await;
    rlb.signal("TERM");
    assert_eq!(rlb.exit().await.code(), Some(0), "{}", rlb.log());
    let lines: Vec<serde_json::Value> = rlb
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["level"].is_string()), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l["message"] == "rlb started"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "rlb stopped"),
        "{lines:#?}"
    );
}

/// The access log line says how forwarding went: servers tried, the connect and
/// time-to-head of the one that answered, and why rlb answered itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_gives_attempts_timings_and_the_reason() {
    let a = TestServer::start("a").await;
    let dead = dead_addr();
    let rlb = RlbCommand::text(&format!(
        "[listeners.web]\nbind = \"127.0.0.1:0\"\nroutes = [{{ path_prefix = \"/app\", upstream = \"app\" }}]\n\
         [upstreams.app]\nservers = [\"{dead}\", \"{}\"]\n",
        a.addr
    ))
    .spawn();
    let web = rlb.wait_addr(&["listening", "listener=web"]).await;
    assert_eq!(get(web, "/app/x").await.0, 200);
    assert_eq!(get(web, "/nothing").await.0, 404);
    let log = wait_until(
        "two access log lines",
        Duration::from_secs(20),
        || async { rlb.log() },
        |log| log.matches("rlb::access").count() >= 2,
    )
    .await;
    let field = |line: &str, name: &str| {
        let prefix = format!("{name}=");
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(prefix.as_str()).map(str::to_string))
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    let line = |path: &str| {
        log.lines()
            .find(|l| l.contains("rlb::access") && l.contains(&format!("path={path} ")))
            .unwrap_or_else(|| panic!("no access line for {path}:\n{log}"))
            .to_string()
    };
    let proxied = line("/app/x");
    // Round robin starts at the dead server: two attempts, the second answered.
    assert_eq!(field(&proxied, "attempts"), "2", "{proxied}");
    for timing in ["connect_ms", "head_ms", "duration_ms"] {
        let value = field(&proxied, timing);
        assert!(
            value.parse::<f64>().is_ok(),
            "{timing}={value} in {proxied}"
        );
    }
    assert_eq!(field(&proxied, "reason"), "-", "{proxied}");
    let refused = line("/nothing");
    assert_eq!(
        ["status", "attempts", "connect_ms", "head_ms", "reason"].map(|f| field(&refused, f)),
        ["404", "0", "-", "-", "no_route"].map(String::from),
        "{refused}"
    );
}
