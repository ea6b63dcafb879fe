//! The admin API on `[admin].bind`: status, metrics, events, reload, drain/enable/weight,
//! and the live status page.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::command::Commands;
use crate::balance::Upstream;
use crate::events::{Event, EventKind};
use crate::server::Server;
use crate::snapshot::{Shared, Target};

/// The status page: one self-contained file, no CDN, no build step.
const STATUS_PAGE: &str = include_str!("status.html");

/// The largest request body the admin API reads (a weight change is a few bytes).
const MAX_BODY: usize = 16 * 1024;

/// What the admin API reads and whom it asks to reload.
#[derive(Clone)]
pub(super) struct Api {
    pub shared: Arc<Shared>,
    pub commands: Commands,
}

/// Serves the admin API until `stop`.
pub(super) async fn serve(api: Api, listener: Arc<TcpListener>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::error!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let api = api.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(handle(&api, request).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn handle(api: &Api, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (request.method(), segments.as_slice()) {
        (&Method::GET, [""]) => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            STATUS_PAGE.to_string(),
        ),
        (&Method::GET, ["status"]) => json_reply(StatusCode::OK, &status(&api.shared)),
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            api.shared
                .metrics
                .encode(&api.shared.snapshot.load().upstreams, &api.shared.limits),
        ),
        (&Method::GET, ["events"]) => reply(
            StatusCode::OK,
            "application/x-ndjson",
            api.shared.events.json_lines(),
        ),
        (&Method::POST, ["reload"]) => match api.commands.reload().await {
            Ok(generation) => {
                json_reply(StatusCode::OK, &json!({ "config_generation": generation }))
            }
            // One entry per problem, each `lb.toml:LINE:COL: message` for a bad file.
            Err(e) => json_reply(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "reload refused", "errors": e.to_string().lines().collect::<Vec<_>>() }),
            ),
        },
        (&Method::POST, ["upstreams", upstream, "servers", addr, action]) => {
            // `[::1]:80` arrives as `%5B::1%5D:80` from most clients.
            let (upstream, addr, action) = (
                percent_decode(upstream),
                percent_decode(addr),
                action.to_string(),
            );
            server_action(api, &upstream, &addr, &action, request.into_body()).await
        }
        (_, ["status" | "metrics" | "events" | ""]) => method_not_allowed("GET"),
        (_, ["reload"]) | (_, ["upstreams", _, "servers", _, "drain" | "enable" | "weight"]) => {
            method_not_allowed("POST")
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// `POST /upstreams/NAME/servers/ADDR/{drain,enable,weight}`.
async fn server_action(
    api: &Api,
    upstream: &str,
    addr: &str,
    action: &str,
    body: Incoming,
) -> Response<Full<Bytes>> {
    let text = |status, message: String| reply(status, "text/plain; charset=utf-8", message + "\n");
    let snapshot = api.shared.snapshot.load();
    let Some(group) = snapshot.upstream(upstream) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("unknown upstream `{upstream}`"),
        );
    };
    let Ok(parsed) = addr.parse::<SocketAddr>() else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("bad address `{addr}`: expected IP:PORT"),
        );
    };
    let Some(server) = group.servers.iter().find(|s| s.addr == parsed) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no server {addr} in upstream `{upstream}`"),
        );
    };
    let events = &api.shared.events;
    match action {
        "drain" => {
            server.set_draining(true);
            tracing::info!(upstream, server = %parsed, "server draining");
            events.push(Event::new(EventKind::Drain).server(upstream, parsed));
        }
        "enable" => {
            server.set_draining(false);
            tracing::info!(upstream, server = %parsed, "server enabled");
            events.push(Event::new(EventKind::Enable).server(upstream, parsed));
        }
        "weight" => {
            let weight = match read_weight(body).await {
                Ok(weight) => weight,
                Err(message) => return text(StatusCode::BAD_REQUEST, message),
            };
            server.set_weight(weight);
            group.reweigh();
            tracing::info!(upstream, server = %parsed, weight, "server weight changed");
            events.push(
                Event::new(EventKind::Weight)
                    .server(upstream, parsed)
                    .detail(weight.to_string()),
            );
        }
        other => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: use drain, enable or weight"),
            );
        }
    }
    json_reply(StatusCode::OK, &server_json(server))
}

async fn read_weight(body: Incoming) -> Result<u32, String> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body: {e}"))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("bad JSON: {e}; expected {{\"weight\": N}}"))?;
    let max = crate::config::MAX_WEIGHT as u64;
    match value.get("weight").and_then(Value::as_u64) {
        Some(w) if (1..=max).contains(&w) => Ok(w as u32),
        _ => Err(format!("expected {{\"weight\": N}} with N from 1 to {max}")),
    }
}

fn server_json(server: &Server) -> Value {
    let mut value = json!({
        "addr": server.addr.to_string(),
        "healthy": server.healthy(),
        "active_connections": server.active(),
        "weight": server.weight(),
        "state": server.state().name(),
        "requests": server.stats.requests.load(std::sync::atomic::Ordering::Relaxed),
    });
    if let Some(lag) = server.lag() {
        value["replication_lag_ms"] = json!(lag.as_millis() as u64);
    }
    value
}

/// An upstream's queue: its length now, its limit, and what waited so far.
fn queue_json(upstream: &Upstream) -> Value {
    let queue = &upstream.queue;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let waited: u64 = queue.wait.buckets.iter().map(load).sum();
    let wait_ms = load(&queue.wait.micros) / 1000;
    json!({
        "length": queue.len(),
        "max_connections_per_server": upstream.limit.map(|l| l.max),
        "queue_timeout_ms": upstream.limit.map(|l| l.queue_timeout.as_millis() as u64),
        "waited": waited,
        "wait_ms_total": wait_ms,
        "timeouts": load(&queue.timeouts),
    })
}

/// The `GET /status` document of the contract.
pub fn status(shared: &Shared) -> Value {
    let snapshot = shared.snapshot.load();
    let mut upstreams = serde_json::Map::new();
    for upstream in &snapshot.upstreams {
        upstreams.insert(
            upstream.name.to_string(),
            json!({
                "balance": upstream.balance.name(),
                "servers": upstream.servers.iter().map(|s| server_json(s)).collect::<Vec<_>>(),
                "queue": queue_json(upstream),
            }),
        );
    }
    let mut listeners = serde_json::Map::new();
    for listener in &snapshot.config.listeners {
        let plan = snapshot.listeners.get(&listener.name);
        let mut value = json!({
            "bind": listener.bind.to_string(),
            "addr": plan.map(|p| p.local.to_string()),
            "mode": listener.mode.name(),
        });
        match plan.map(|p| &p.target) {
            Some(Target::Tcp(upstream)) => value["upstream"] = json!(&*upstream.name),
            Some(Target::Http(routes)) => {
                value["routes"] = routes
                    .0
                    .iter()
                    .map(|r| json!({ "host": r.host.as_deref(), "path_prefix": r.path_prefix.as_deref(), "upstream": &*r.target.upstream.name }))
                    .collect();
            }
            None => {}
        }
        if let Some(tls) = &listener.tls {
            value["tls"] = json!({
                "certificates": tls.certificates.iter().map(|c| &c.names).collect::<Vec<_>>(),
                "alpn": tls.alpn,
                "client_certificates": tls.client_ca.is_some(),
            });
        }
        listeners.insert(listener.name.clone(), value);
    }
    json!({
        "upstreams": upstreams,
        "listeners": listeners,
        "config_generation": snapshot.generation,
        // rlb's clock, so a page can compute rates and ages without trusting its own.
        "now_ms": crate::events::now_millis(),
    })
}

/// Decodes `%XX` escapes of a path segment; a malformed escape is kept as it is.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 405 with the `Allow` header RFC 9110 asks for.
fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        format!("method not allowed: use {allow}\n"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", value.to_string())
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%5B::1%5D:8080"), "[::1]:8080");
        assert_eq!(percent_decode("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
