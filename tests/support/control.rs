//! Test helpers for the admin API: status, events, metrics and POSTs, read over a real
//! socket from `rlb.admin_addr()`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use rlb::Rlb;
use serde_json::Value;

fn admin(rlb: &Rlb) -> SocketAddr {
    rlb.admin_addr()
        .expect("the test config has an [admin] table")
}

/// `GET http://admin/path` on an admin address: status and body text.
pub async fn admin_get_at(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = super::rlb::client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} on the admin listener: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

pub async fn admin_get(rlb: &Rlb, path: &str) -> (u16, String) {
    admin_get_at(admin(rlb), path).await
}

/// `POST http://admin/path` with `body` (empty for none): status and body text.
pub async fn admin_post_at(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let response = super::rlb::client()
        .post(format!("http://{addr}{path}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path} on the admin listener: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

pub async fn admin_post(rlb: &Rlb, path: &str, body: &str) -> (u16, String) {
    admin_post_at(admin(rlb), path, body).await
}

/// `GET /status` as JSON.
pub async fn status_at(addr: SocketAddr) -> Value {
    let (code, body) = admin_get_at(addr, "/status").await;
    assert_eq!(code, 200, "GET /status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

pub async fn status(rlb: &Rlb) -> Value {
    status_at(admin(rlb)).await
}

/// The `/status` entry of one server, or `None` when the upstream does not list it.
pub fn server_status(status: &Value, upstream: &str, addr: SocketAddr) -> Option<Value> {
    status["upstreams"][upstream]["servers"]
        .as_array()?
        .iter()
        .find(|s| s["addr"] == addr.to_string())
        .cloned()
}

/// `GET /events`, one JSON value per line, oldest first.
pub async fn events_at(addr: SocketAddr) -> Vec<Value> {
    let (code, body) = admin_get_at(addr, "/events").await;
    assert_eq!(code, 200, "GET /events: {body}");
    body.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("an /events line is not JSON ({e}): {line}"))
        })
        .collect()
}

pub async fn events(rlb: &Rlb) -> Vec<Value> {
    events_at(admin(rlb)).await
}

/// The events named `name`, oldest first.
pub fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

/// `POST /reload`: the status and body.
pub async fn admin_reload(rlb: &Rlb) -> (u16, String) {
    admin_post(rlb, "/reload", "").await
}

/// Whether a tcp connect to `addr` is refused now.
pub async fn refused(addr: SocketAddr) -> bool {
    match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// Milliseconds since the Unix epoch, to compare with event timestamps.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}
