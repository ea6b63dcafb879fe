//! Health: the rise/fall state machine, passive ejection from the data path, and (in
//! `checker`) the active probes.

use std::sync::Arc;

pub mod checker;
pub mod mysql;

use crate::events::Event;
use crate::proxy::error::ProxyError;
use crate::runtime::Shared;
use crate::server::Server;

/// Consecutive probe results of one server, and the thresholds in force.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Active checks configured: only then do failures eject the server.
    pub checked: bool,
    pub rise: u32,
    pub fall: u32,
    passes: u32,
    failures: u32,
}

/// A change of a server's state, reported once when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    Down,
    Up,
}

impl Counters {
    /// Records one probe result against the server's current state; returns the flip
    /// when a threshold is reached. Only consecutive results count.
    pub fn record(&mut self, pass: bool, up: bool) -> Option<Flip> {
        if pass {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
            (!up && self.passes >= self.rise).then_some(Flip::Up)
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
            (up && self.failures >= self.fall).then_some(Flip::Down)
        }
    }

    /// "2/2": failures so far out of `fall`, for the log line.
    pub fn failures_of_fall(&self) -> String {
        format!("{}/{}", self.failures.min(self.fall), self.fall)
    }

    pub fn passes_of_rise(&self) -> String {
        format!("{}/{}", self.passes.min(self.rise), self.rise)
    }
}

/// Records a probe result for `server` and applies a flip: the state, one log line,
/// one event. Returns the flip, if any.
pub fn record(shared: &Shared, server: &Server, pass: bool, reason: &str) -> Option<Flip> {
    let (flip, progress) = {
        let mut counters = server.health.lock().unwrap_or_else(|e| e.into_inner());
        let flip = counters.record(pass, server.is_up());
        let progress = if pass {
            counters.passes_of_rise()
        } else {
            counters.failures_of_fall()
        };
        (flip, progress)
    };
    match flip {
        Some(Flip::Down) => {
            server.set_up(false);
            tracing::warn!(upstream = %server.upstream, "server {} down: {reason} ({progress})", server.addr);
            shared.events.push(
                Event::new("server_down")
                    .server(&server.upstream, server.addr)
                    .detail(format!("{reason} ({progress})")),
            );
        }
        Some(Flip::Up) => {
            server.set_up(true);
            tracing::info!(upstream = %server.upstream, "server {} up ({progress})", server.addr);
            shared
                .events
                .push(Event::new("server_up").server(&server.upstream, server.addr));
        }
        None => {}
    }
    flip
}

/// A failed connect on the data path counts as a failed probe, so a dead server is
/// ejected without waiting for its next check. Without active checks nothing would
/// bring it back, so then it is only routed around.
pub fn passive_failure(shared: &Shared, server: &Arc<Server>, error: &ProxyError) {
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
pub fn io_reason(error: &std::io::Error) -> String {
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

    fn counters(rise: u32, fall: u32) -> Counters {
        Counters {
            checked: true,
            rise,
            fall,
            ..Counters::default()
        }
    }

    #[test]
    fn falls_after_consecutive_failures_only() {
        let mut c = counters(2, 3);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(true, true), None);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(false, true), None);
        assert_eq!(c.record(false, true), Some(Flip::Down));
        assert_eq!(c.failures_of_fall(), "3/3");
    }

    #[test]
    fn rises_after_consecutive_passes() {
        let mut c = counters(2, 1);
        assert_eq!(c.record(false, true), Some(Flip::Down));
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(false, false), None);
        assert_eq!(c.record(true, false), None);
        assert_eq!(c.record(true, false), Some(Flip::Up));
    }

    #[test]
    fn no_flip_when_already_in_that_state() {
        let mut c = counters(1, 1);
        assert_eq!(c.record(true, true), None);
        assert_eq!(c.record(false, false), None);
    }
}
