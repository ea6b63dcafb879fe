//! The access log: one line per request or tunnel, on target `rlb::access`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

/// One access log line, filled in as the request goes; allocated only when the access
/// log is on.
pub struct AccessLog {
    pub listener: Arc<str>,
    pub client: SocketAddr,
    pub method: Method,
    pub path: String,
    pub status: u16,
    pub server: Option<SocketAddr>,
    pub bytes: u64,
    pub start: Instant,
    pub timings: Timings,
    /// Why rlb answered itself: the error's kind or the refusal's reason.
    pub reason: Option<&'static str>,
}

/// How forwarding went, for the access log: what operators look at first.
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Servers tried (a resend to the same server counts again).
    pub attempts: u32,
    /// Opening the connection the response came on; `None` when it was reused.
    pub connect: Option<Duration>,
    /// From the request sent to the response head received.
    pub head: Option<Duration>,
}

impl AccessLog {
    pub fn write(&self) {
        let server = self.server.map(|s| s.to_string());
        let ms = |d: Option<Duration>| d.map(|d| format!("{:.3}", d.as_secs_f64() * 1000.0));
        tracing::info!(
            target: "rlb::access",
            listener = %self.listener,
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status = self.status,
            server = server.as_deref().unwrap_or("-"),
            bytes = self.bytes,
            attempts = self.timings.attempts,
            connect_ms = %ms(self.timings.connect).as_deref().unwrap_or("-"),
            head_ms = %ms(self.timings.head).as_deref().unwrap_or("-"),
            duration_ms = %format_args!("{:.3}", self.start.elapsed().as_secs_f64() * 1000.0),
            reason = %self.reason.unwrap_or("-"),
        );
    }
}
