//! The chat server: HTTP routes, the WebSocket session, health and graceful shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

use crate::protocol::{self, ChatMessage, ClientFrame, IdGenerator, ServerFrame};
use crate::relay::{Mode, Relay};

/// Messages a slow WebSocket may fall behind before it is told it missed some.
const FANOUT_CAPACITY: usize = 1024;
/// Largest WebSocket message accepted from a client.
const MAX_WS_MESSAGE: usize = 64 * 1024;
/// `/history` answers this many messages when no `limit` is given, and at most `MAX`.
const DEFAULT_HISTORY_LIMIT: u32 = 50;
const MAX_HISTORY_LIMIT: u32 = 1000;

const PAGE: &str = include_str!("page.html");

pub struct ChatOptions {
    /// Shown in every message this chat server accepts or pushes.
    pub name: String,
    pub mode: Mode,
    /// How long open connections get to finish after shutdown is asked for.
    pub shutdown_timeout: Duration,
}

impl ChatOptions {
    pub fn new(name: impl Into<String>, mode: Mode) -> Self {
        Self {
            name: name.into(),
            mode,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

struct Shared {
    name: String,
    page: String,
    ids: IdGenerator,
    relay: Relay,
    fanout: broadcast::Sender<Arc<ChatMessage>>,
    /// Set by `POST /admin/fail` so a demo can watch rlb eject this chat server.
    failing: AtomicBool,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Serves chat on `listener` until `shutdown` is cancelled, then closes every WebSocket
/// (code 1001, going away) and lets HTTP requests finish within `shutdown_timeout`.
pub async fn run(
    listener: TcpListener,
    options: ChatOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    protocol::check_name("server name", &options.name).map_err(anyhow::Error::msg)?;
    let tracker = TaskTracker::new();
    let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
    let relay = Relay::start(
        &options.mode,
        &options.name,
        fanout.clone(),
        shutdown.clone(),
        &tracker,
    )
    .await?;
    let shared = Arc::new(Shared {
        page: PAGE.replace("__SERVER_NAME__", &html_escape(&options.name)),
        ids: IdGenerator::new(&options.name),
        name: options.name,
        relay,
        fanout,
        failing: AtomicBool::new(false),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    let local = listener.local_addr()?;
    info!(server = %shared.name, addr = %local, "chat server listening");

    loop {
        let (stream, client) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tracker.spawn(
            serve_connection(stream, shared, options.shutdown_timeout)
                .instrument(tracing::debug_span!("connection", %client)),
        );
    }

    drop(listener);
    info!(server = %shared.name, "shutting down");
    tracker.close();
    if tokio::time::timeout(options.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!("connections still open after the shutdown timeout; dropping them");
    }
    match Arc::try_unwrap(shared) {
        Ok(shared) => shared.relay.close().await,
        Err(_) => debug!("connections still hold the relay; not closing it"),
    }
    info!("stopped");
    Ok(())
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, grace: Duration) {
    let _ = stream.set_nodelay(true);
    let shutdown = shared.shutdown.clone();
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(req, shared).await) }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(grace, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "http connection ended with an error");
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = text(status, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let mut response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => {
            let mut r = text(StatusCode::OK, shared.page.clone());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/ws") => upgrade(req, shared.clone()),
        (&Method::GET, "/history") => history(req.uri().query().unwrap_or(""), &shared).await,
        (&Method::GET, "/healthz") => health(&shared),
        (&Method::POST, "/admin/fail") => {
            shared.failing.store(true, Ordering::Relaxed);
            warn!(server = %shared.name, "health check set to fail by /admin/fail");
            text(StatusCode::OK, "failing\n")
        }
        (&Method::POST, "/admin/recover") => {
            shared.failing.store(false, Ordering::Relaxed);
            info!(server = %shared.name, "health check set to pass by /admin/recover");
            text(StatusCode::OK, "ok\n")
        }
        (_, "/" | "/ws" | "/history" | "/healthz" | "/admin/fail" | "/admin/recover") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    // Lets a demo see which chat server answered a plain HTTP request.
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        response.headers_mut().insert("x-chat-server", v);
    }
    response
}

fn health(shared: &Shared) -> Response<Body> {
    if shared.failing.load(Ordering::Relaxed) {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "failing (POST /admin/recover)\n",
        );
    }
    match shared.relay.problem() {
        Some(problem) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")),
        None => text(StatusCode::OK, "ok"),
    }
}

async fn history(query: &str, shared: &Shared) -> Response<Body> {
    let mut room = None;
    let mut limit = DEFAULT_HISTORY_LIMIT;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "room" => room = Some(v.into_owned()),
            "limit" => match v.parse::<u32>() {
                Ok(n) if n > 0 => limit = n.min(MAX_HISTORY_LIMIT),
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("limit must be a positive integer, not {v:?}\n"),
                    );
                }
            },
            _ => {}
        }
    }
    let Some(room) = room else {
        return text(StatusCode::BAD_REQUEST, "missing query parameter room\n");
    };
    if let Err(e) = protocol::check_name("room", &room) {
        return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    match shared.relay.history(&room, limit).await {
        Ok(messages) => json(
            StatusCode::OK,
            serde_json::to_string(&messages).unwrap_or_else(|_| "[]".into()),
        ),
        Err(e) => {
            warn!(room, error = format!("{e:#}"), "history read failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("history unavailable: {e:#}\n"),
            )
        }
    }
}

/// Answers a WebSocket handshake (RFC 6455 §4.2) and spawns the session on the upgraded
/// connection.
fn upgrade(mut req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let h = req.headers();
    let wants_websocket = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "expected a websocket handshake\n");
    };
    if !wants_websocket || !version_ok {
        return text(
            StatusCode::BAD_REQUEST,
            "expected a websocket handshake (version 13)\n",
        );
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_shared = shared.clone();
    shared.tracker.spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = WebSocketConfig::default().max_message_size(Some(MAX_WS_MESSAGE));
                    let ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    session(ws, task_shared).await;
                }
                Err(e) => debug!(error = %e, "websocket upgrade failed"),
            }
        }
        .instrument(tracing::debug_span!("websocket")),
    );
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = r.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// Who this WebSocket joined as.
struct Member {
    room: String,
    user: String,
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

async fn session(mut ws: Ws, shared: Arc<Shared>) {
    let mut member: Option<Member> = None;
    let mut fanout = shared.fanout.subscribe();
    loop {
        let outcome = tokio::select! {
            _ = shared.shutdown.cancelled() => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "chat server shutting down".into(),
                    }))
                    .await;
                // Wait briefly for the client's close reply so the close is clean.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return;
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => on_client_text(&t, &mut member, &shared).await,
                Some(Ok(Message::Binary(_))) => Some(error_frame("send json text frames", None)),
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => None, // ping/pong are answered by tungstenite
                Some(Err(e)) => {
                    debug!(error = %e, "websocket read failed");
                    return;
                }
            },
            delivered = fanout.recv() => match delivered {
                Ok(m) => member
                    .as_ref()
                    .filter(|me| me.room == m.room)
                    .map(|_| ServerFrame::Msg { message: &m, via: &shared.name }.to_json()),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "websocket client too slow; it missed messages");
                    Some(error_frame(&format!("missed {n} messages; reload history"), None))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Some(out) = outcome
            && let Err(e) = ws.send(Message::text(out)).await
        {
            debug!(error = %e, "websocket write failed");
            return;
        }
    }
}

fn error_frame(error: &str, id: Option<&str>) -> String {
    ServerFrame::Error { error, id }.to_json()
}

/// Handles one client frame; returns the reply to send, if any.
async fn on_client_text(
    text: &str,
    member: &mut Option<Member>,
    shared: &Shared,
) -> Option<String> {
    let frame = match serde_json::from_str::<ClientFrame>(text) {
        Ok(f) => f,
        Err(e) => return Some(error_frame(&format!("bad frame: {e}"), None)),
    };
    match frame {
        ClientFrame::Join { room, user } => {
            if let Err(e) = protocol::check_name("room", &room)
                .and_then(|()| protocol::check_name("user", &user))
            {
                return Some(error_frame(&e, None));
            }
            debug!(room, user, "joined");
            let reply = ServerFrame::Joined {
                room: &room,
                user: &user,
                server: &shared.name,
            }
            .to_json();
            *member = Some(Member { room, user });
            Some(reply)
        }
        ClientFrame::Msg { text, id } => {
            let Some(me) = member.as_ref() else {
                return Some(error_frame("join a room first", id.as_deref()));
            };
            if let Err(e) = protocol::check_msg(&text, id.as_deref()) {
                return Some(error_frame(&e, id.as_deref()));
            }
            let message = ChatMessage {
                id: id.unwrap_or_else(|| shared.ids.next_id()),
                room: me.room.clone(),
                user: me.user.clone(),
                text,
                server: shared.name.clone(),
                ts: protocol::now_millis(),
            };
            let id = message.id.clone();
            match shared.relay.publish(message).await {
                Ok(()) => Some(ServerFrame::Sent { id: &id }.to_json()),
                Err(e) => {
                    warn!(id, error = format!("{e:#}"), "could not pass a message on");
                    Some(error_frame(&format!("not sent: {e:#}"), Some(&id)))
                }
            }
        }
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
