//! The admin API client, by admin address: GET/POST, `/status`, `/events`, `/metrics`
//! parsed, and waiting for an event or for more health checks.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use super::rlb::{call, client, wait_until};

/// `GET http://admin/path`: status and body text.
pub async fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let what = format!("GET {path} on the admin listener");
    call(client().get(format!("http://{admin}{path}")), &what).await
}

/// `POST http://admin/path` with `body` (empty for none): status and body text.
pub async fn admin_post(admin: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let request = client()
        .post(format!("http://{admin}{path}"))
        .body(body.to_string());
    call(request, &format!("POST {path} on the admin listener")).await
}

/// `POST /reload`: the status and body.
pub async fn admin_reload(admin: SocketAddr) -> (u16, String) {
    admin_post(admin, "/reload", "").await
}

/// `GET path`, which must answer 200: the body.
async fn get_ok(admin: SocketAddr, path: &str) -> String {
    let (code, body) = admin_get(admin, path).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// `GET /status` as JSON.
pub async fn status(admin: SocketAddr) -> Value {
    let body = get_ok(admin, "/status").await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// The entry of `server` in `upstream` of a `/status` document, or `None` when the
/// upstream does not list it.
pub fn find_server(status: &Value, upstream: &str, server: SocketAddr) -> Option<Value> {
    status["upstreams"][upstream]["servers"]
        .as_array()?
        .iter()
        .find(|s| s["addr"] == server.to_string().as_str())
        .cloned()
}

/// The `/status` entry of `server` in `upstream`, read now.
pub async fn server_status(admin: SocketAddr, upstream: &str, server: SocketAddr) -> Value {
    let status = status(admin).await;
    find_server(&status, upstream, server)
        .unwrap_or_else(|| panic!("no server {server} in upstream {upstream} of /status: {status}"))
}

/// `GET /events`, one JSON value per line, oldest first.
pub async fn events(admin: SocketAddr) -> Vec<Value> {
    get_ok(admin, "/events")
        .await
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("an /events line is not JSON ({e}): {line}"))
        })
        .collect()
}

/// The events named `name`, oldest first.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
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
    let read = || server_events(admin, event, server);
    wait_until(&what, timeout, read, |events| events.len() > nth)
        .await
        .swap_remove(nth)
}

/// `GET /metrics` as text.
pub async fn metrics(admin: SocketAddr) -> String {
    get_ok(admin, "/metrics").await
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
    let read = || server_metric(admin, "rlb_server_checks_total", upstream, server);
    wait_until(&what, timeout, read, |&checks| checks >= n).await
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
        .expect("clock after 1970")
        .as_millis() as u64
}
