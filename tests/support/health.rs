//! Health-check helpers over rlb's admin API: `/events`, `/status` and `/metrics`
//! parsed, and waiting for a server to go down, come back or be checked again.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::rlb::{eventually, get};

/// `GET /events`, parsed: one JSON object per line, oldest first.
pub async fn events(admin: SocketAddr) -> Vec<Value> {
    let (status, body) = get(admin, "/events").await;
    assert_eq!(status, 200, "GET /events: {body}");
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The events named `event` (`server_down`, `server_up`, ...) of `server`.
pub async fn server_events(admin: SocketAddr, event: &str, server: SocketAddr) -> Vec<Value> {
    events(admin)
        .await
        .into_iter()
        .filter(|e| e["event"] == event && e["server"] == server.to_string().as_str())
        .collect()
}

/// Waits for the `nth` (0-based) `event` of `server` and returns it.
pub async fn wait_event(
    admin: SocketAddr,
    event: &str,
    server: SocketAddr,
    nth: usize,
    timeout: Duration,
) -> Value {
    let what = format!("{event} #{nth} of {server}");
    eventually(&what, timeout, || async {
        server_events(admin, event, server).await.len() > nth
    })
    .await;
    server_events(admin, event, server).await.swap_remove(nth)
}

/// `GET /status`, parsed.
pub async fn status(admin: SocketAddr) -> Value {
    let (code, body) = get(admin, "/status").await;
    assert_eq!(code, 200, "GET /status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The `/status` entry of `server` in `upstream`.
pub async fn server_status(admin: SocketAddr, upstream: &str, server: SocketAddr) -> Value {
    let status = status(admin).await;
    let servers = status["upstreams"][upstream]["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstream {upstream} in /status: {status}"));
    servers
        .iter()
        .find(|s| s["addr"] == server.to_string().as_str())
        .unwrap_or_else(|| panic!("no server {server} in /status: {status}"))
        .clone()
}

/// `GET /metrics` as text.
pub async fn metrics(admin: SocketAddr) -> String {
    let (code, body) = get(admin, "/metrics").await;
    assert_eq!(code, 200, "GET /metrics: {body}");
    body
}

/// The value of the sample `name` whose labels include every `label="value"` given.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labels_text, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| labels_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

/// A per-server sample from `/metrics`: `rlb_server_<name>{upstream, server}`.
pub async fn server_metric(
    admin: SocketAddr,
    name: &str,
    upstream: &str,
    server: SocketAddr,
) -> f64 {
    let text = metrics(admin).await;
    let addr = server.to_string();
    sample(&text, name, &[("upstream", upstream), ("server", &addr)])
        .unwrap_or_else(|| panic!("no {name} for {upstream}/{server} in:\n{text}"))
}

/// Waits until `server` has been checked at least `n` times in all; returns the count.
pub async fn wait_checks(
    admin: SocketAddr,
    upstream: &str,
    server: SocketAddr,
    n: f64,
    timeout: Duration,
) -> f64 {
    let what = format!("{n} checks of {server}");
    eventually(&what, timeout, || async {
        server_metric(admin, "rlb_server_checks_total", upstream, server).await >= n
    })
    .await;
    server_metric(admin, "rlb_server_checks_total", upstream, server).await
}

/// Waits until `server` has been checked `n` more times from now; returns the count.
pub async fn wait_more_checks(
    admin: SocketAddr,
    upstream: &str,
    server: SocketAddr,
    n: f64,
    timeout: Duration,
) -> f64 {
    let since = server_metric(admin, "rlb_server_checks_total", upstream, server).await;
    wait_checks(admin, upstream, server, since + n, timeout).await
}

/// Milliseconds since the Unix epoch, comparable with the events' `ts_ms`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
