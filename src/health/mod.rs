//! Health: the rise/fall state machine, passive ejection from the data path, and (in
//! `checker`) the active probes.

use std::sync::Arc;

pub(crate) mod checker;
pub mod mysql;

use crate::error::ProxyError;
use crate::events::{Event, EventKind};
use crate::server::{Flip, Server};
use crate::snapshot::Shared;

/// Records a probe result for `server` and applies a flip: the state, one log line,
/// one event. Returns the flip, if any.
pub(crate) fn record(shared: &Shared, server: &Server, pass: bool, reason: &str) -> Option<Flip> {
    // The flip is applied, logged and recorded under the lock: a checker and failed
    // connects on the data path record at once, and only the first of them may see a
    // flip, with the log and the events in the order the flips happened.
    let mut counters = server.health.lock().unwrap_or_else(|e| e.into_inner());
    if !counters.checked {
        // A probe that was in flight when a reload removed the checks: its thresholds
        // are gone (zero), and nothing would bring the server back.
        return None;
    }
    let flip = counters.record(pass, server.is_up());
    match flip {
        Some(Flip::Down) => {
            server.set_up(false);
            let progress = counters.failures_of_fall();
            tracing::warn!(upstream = %server.upstream, "server {} down: {reason} ({progress})", server.addr);
            shared.events.push(
                Event::new(EventKind::ServerDown)
                    .server(&server.upstream, server.addr)
                    .detail(format!("{reason} ({progress})")),
            );
        }
        Some(Flip::Up) => {
            server.set_up(true);
            let progress = counters.passes_of_rise();
            tracing::info!(upstream = %server.upstream, "server {} up ({progress})", server.addr);
            shared
                .events
                .push(Event::new(EventKind::ServerUp).server(&server.upstream, server.addr));
        }
        None => {}
    }
    flip
}

/// A failed connect on the data path counts as a failed probe, so a dead server is
/// ejected without waiting for its next check. Without active checks nothing would
/// bring it back, so then it is only routed around.
pub(crate) fn passive_failure(shared: &Shared, server: &Arc<Server>, error: &ProxyError) {
    server
        .stats
        .connect_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if error.is_connect() {
        // A replica that cannot be reached is no fallback when every replica lags.
        server.set_lag(None);
    }
    let checked = server.health.lock().map(|c| c.checked).unwrap_or(false);
    if checked && error.is_connect() {
        let _ = record(shared, server, false, &reason(error));
    } else if error.is_connect() {
        server.connect_failed();
    }
}

fn reason(error: &ProxyError) -> String {
    match error {
        ProxyError::Connect { source, .. } => io_reason(source),
        ProxyError::ConnectTimeout { .. } => "connect timeout".to_string(),
        other => other.to_string(),
    }
}

/// "connection refused" rather than "Connection refused (os error 111)".
pub(crate) fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        std::io::ErrorKind::TimedOut => "timeout".to_string(),
        _ => error.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Counters;

    /// Passive failures from many connections and the checker race on one server: the
    /// state must flip once, so one log line and one event, not one per racer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_failures_flip_once() {
        let toml = r#"
[listeners.raw]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "db"
[upstreams.db]
servers = ["127.0.0.1:9"]
"#;
        let config = crate::Config::parse(toml, "test.toml").expect("a valid config");
        let rlb = crate::Rlb::start(config, None).expect("rlb starts");
        let shared = rlb.shared().clone();
        let server = shared.snapshot.load().upstream("db").expect("db").servers[0].clone();
        *server.health.lock().unwrap() = Counters::checked(1, 1);
        const RACERS: usize = 8;
        for round in 0..300 {
            let barrier = std::sync::Barrier::new(RACERS);
            std::thread::scope(|scope| {
                for _ in 0..RACERS {
                    scope.spawn(|| {
                        barrier.wait();
                        record(&shared, &server, false, "connection refused");
                    });
                }
            });
            record(&shared, &server, true, "");
            let events = shared.events.snapshot();
            let downs = events.iter().filter(|e| e.event == "server_down").count();
            assert_eq!(downs, round + 1, "round {round}: {} events", events.len());
        }
    }
}
