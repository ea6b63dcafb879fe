//! The access log: one line per request or tunnel, on target `rlb::access`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

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
}

impl AccessLog {
    pub fn write(&self) {
        let server = self.server.map(|s| s.to_string());
        tracing::info!(
            target: "rlb::access",
            listener = %self.listener,
            client = %self.client,
            method = %self.method,
            path = %self.path,
            status = self.status,
            server = server.as_deref().unwrap_or("-"),
            bytes = self.bytes,
            duration_ms = %format_args!("{:.3}", self.start.elapsed().as_secs_f64() * 1000.0),
        );
    }
}
