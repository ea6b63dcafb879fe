//! Layer 7: one client connection served by hyper, each request routed, rewritten,
//! forwarded with retries, and its response streamed back; upgrades become tunnels.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::copy::splice;
use super::error::{ProxyError, error_response};
use super::pool::{UpstreamBody, checkin, checkout};
use crate::balance::{Tried, Upstream};
use crate::runtime::{Plan, Shared};
use crate::server::Active;

/// The body rlb answers with: a server's streamed body, or a short one of its own.
pub type ProxyBody = Either<ServerBody, Full<Bytes>>;

/// How long a client may take to send a request head, and how long an idle keep-alive
/// connection waits for the next one (nginx's `client_header_timeout` is 60 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// The routes of an http listener, first match wins.
pub struct Routes(pub Vec<Route>);

pub struct Route {
    /// Lowercase, without a port.
    pub host: Option<Box<str>>,
    pub path_prefix: Option<Box<str>>,
    pub upstream: Arc<Upstream>,
}

impl Routes {
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Upstream>> {
        let host = host.map(without_port);
        self.0
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                    && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map(|r| &r.upstream)
    }
}

/// `example.test:8080` → `example.test`, `[::1]:80` → `[::1]`.
fn without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

/// What every request of one client connection shares.
struct Connection {
    shared: Arc<Shared>,
    listener: Arc<str>,
    client: SocketAddr,
    /// The client's IP, ready for `X-Forwarded-For`.
    client_ip: HeaderValue,
    /// The address the client connected to: the `Host` of a request that has none.
    local: Option<SocketAddr>,
    /// The routes in force when the connection was accepted, used if a reload removes
    /// the listener while the connection is still open.
    fallback: Arc<Plan>,
    idle_timeout: Duration,
}

/// Serves one client connection until it closes, or, on shutdown, until its in-flight
/// request is answered.
pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<str>,
    plan: Arc<Plan>,
    stream: TcpStream,
    client: SocketAddr,
) {
    let client_ip = HeaderValue::from_str(&client.ip().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"));
    let shutdown = shared.shutdown.clone();
    let idle_timeout = plan.idle_timeout;
    let local = stream.local_addr().ok();
    let connection = Arc::new(Connection {
        shared,
        listener,
        client,
        client_ip,
        local,
        fallback: plan,
        idle_timeout,
    });
    let service = service_fn(move |request| {
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(connection.proxy(request).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "client connection ended");
    }
}

impl Connection {
    async fn proxy(&self, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        let upstream = {
            let snapshot = self.shared.snapshot.load();
            // A reload that removed the listener or made it tcp leaves this connection
            // on the routes it was accepted with.
            let routes = snapshot
                .listeners
                .get(&*self.listener)
                .and_then(|p| p.routes())
                .or_else(|| self.fallback.routes());
            let host = host_of(&request);
            routes
                .and_then(|r| r.find(host, request.uri().path()))
                .cloned()
        };
        let Some(upstream) = upstream else {
            return self.fail(ProxyError::NoRoute, &request, None, start);
        };
        let on_upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        self.rewrite(&mut request, on_upgrade.is_some());
        let log = self.access_log(&request, start);
        let method = request.method().clone();

        let (parts, body) = request.into_parts();
        let bodiless = body.is_end_stream();
        // A request that was sent may go again only if it is idempotent and has no
        // body; keep what it takes to rebuild it.
        let resend = (bodiless && is_idempotent(&method)).then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        let (body, mut progress) = if bodiless {
            (Either::Right(Empty::new()), None)
        } else {
            let (sender, progress) = watch::channel(());
            let body = ClientBody {
                inner: body,
                progress: Some(sender),
            };
            (Either::Left(body), Some(progress))
        };
        let mut pending = Some(Request::from_parts(parts, body));

        let mut tried = Tried::default();
        let mut last_error = None;
        while let Some(index) = upstream.pick(&tried) {
            tried.add(index);
            let server = &upstream.servers[index];
            let active = Active::new(server.clone());
            let (mut sender, reused) = match checkout(server, upstream.connect_timeout).await {
                Ok(connection) => connection,
                Err(e) => {
                    crate::health::passive_failure(&self.shared, server, &e);
                    last_error = Some(e);
                    continue;
                }
            };
            let Some(outgoing) = pending.take() else {
                break;
            };
            server
                .stats
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A server ejected while the request waits (a frozen one, by its checks'
            // timeout) will not answer: give up on it now, not at the response timeout.
            let ejected = server.ejected();
            let sent = tokio::select! {
                sent = response_within(
                    sender.try_send_request(outgoing),
                    &mut progress,
                    upstream.response_timeout,
                ) => sent.map(|r| r.map_err(|e| Failure::Sent(Box::new(e)))),
                () = ejected => Some(Err(Failure::Ejected)),
            };
            match sent {
                Some(Ok(response)) => {
                    return self.respond(response, sender, active, on_upgrade, log);
                }
                Some(Err(Failure::Sent(mut e))) if e.message().is_some() => {
                    // The connection closed before the request went out: any request
                    // may go again, to this server too when the connection was an old
                    // keep-alive one.
                    pending = e.take_message();
                    if reused {
                        tried = tried.without(index);
                    }
                }
                Some(Err(failure)) => {
                    // Sent and failed: only an idempotent request without a body goes
                    // to the next server.
                    server
                        .stats
                        .response_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    last_error = Some(match failure {
                        Failure::Sent(e) => ProxyError::Server {
                            addr: server.addr,
                            source: (*e).into_error(),
                        },
                        Failure::Ejected => ProxyError::Ejected { addr: server.addr },
                    });
                    match &resend {
                        Some((method, uri, headers)) => {
                            pending = Some(rebuild(method, uri, headers))
                        }
                        None => break,
                    }
                }
                None => {
                    server
                        .stats
                        .timeouts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    last_error = Some(ProxyError::ResponseTimeout {
                        addr: server.addr,
                        timeout: upstream.response_timeout,
                    });
                    break;
                }
            }
        }
        let error = last_error.unwrap_or_else(|| ProxyError::NoServer(upstream.name.clone()));
        self.fail_logged(error, log, start)
    }

    /// Drops hop-by-hop headers and adds the `X-Forwarded-*` ones; `Host` is kept.
    fn rewrite(&self, request: &mut Request<Incoming>, upgrade: bool) {
        if let Some(authority) = request.uri().authority() {
            // An absolute-form request (`GET http://host/path`) goes on in origin form;
            // its authority wins over any `Host` (RFC 9112 §3.2.2), as it did in routing.
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, host);
            }
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            if let Ok(uri) = path.parse::<Uri>() {
                *request.uri_mut() = uri;
            }
        }
        *request.version_mut() = Version::HTTP_11;
        let host = request.headers().get(header::HOST).cloned();
        if host.is_none()
            && let Some(local) = self.local
            && let Ok(value) = HeaderValue::from_str(&local.to_string())
        {
            // An HTTP/1.0 request may come without `Host`, but it goes on as HTTP/1.1,
            // which servers such as nginx refuse without one.
            request.headers_mut().insert(header::HOST, value);
        }
        let headers = request.headers_mut();
        strip_hop_by_hop(headers, upgrade);
        headers.remove(header::EXPECT);
        // Several `X-Forwarded-For` lines are one comma-separated list; keep them all.
        let mut joined: Option<Vec<u8>> = None;
        for previous in headers.get_all(X_FORWARDED_FOR) {
            let list = joined.get_or_insert_with(Vec::new);
            list.extend_from_slice(previous.as_bytes());
            list.extend_from_slice(b", ");
        }
        let forwarded_for = match joined {
            Some(mut list) => {
                list.extend_from_slice(self.client_ip.as_bytes());
                HeaderValue::from_bytes(&list).unwrap_or_else(|_| self.client_ip.clone())
            }
            None => self.client_ip.clone(),
        };
        headers.insert(X_FORWARDED_FOR, forwarded_for);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }

    fn respond(
        &self,
        mut response: Response<Incoming>,
        sender: SendRequest<UpstreamBody>,
        active: Active,
        on_upgrade: Option<OnUpgrade>,
        mut log: Option<Box<AccessLog>>,
    ) -> Response<ProxyBody> {
        let status = response.status();
        if let Some(log) = log.as_mut() {
            log.status = status.as_u16();
            log.server = Some(active.server().addr);
        }
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (status, on_upgrade) {
            let server_side = hyper::upgrade::on(&mut response);
            let idle = self.idle_timeout;
            self.shared
                .tracker
                .spawn(tunnel(client_side, server_side, sender, active, idle, log));
            let (mut parts, _) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, Either::Right(Full::new(Bytes::new())));
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        let done = body.is_end_stream();
        Response::from_parts(
            parts,
            Either::Left(ServerBody {
                inner: body,
                done,
                connection: Some((sender, active)),
                log,
            }),
        )
    }

    fn access_log(&self, request: &Request<Incoming>, start: Instant) -> Option<Box<AccessLog>> {
        if !self.shared.access_log() {
            return None;
        }
        Some(Box::new(AccessLog {
            listener: self.listener.clone(),
            client: self.client,
            method: request.method().clone(),
            path: request.uri().path().to_string(),
            status: 0,
            server: None,
            bytes: 0,
            start,
        }))
    }

    fn fail(
        &self,
        error: ProxyError,
        request: &Request<Incoming>,
        server: Option<SocketAddr>,
        start: Instant,
    ) -> Response<ProxyBody> {
        let mut log = self.access_log(request, start);
        if let Some(log) = log.as_mut() {
            log.server = server;
        }
        self.fail_logged(error, log, start)
    }

    fn fail_logged(
        &self,
        error: ProxyError,
        log: Option<Box<AccessLog>>,
        start: Instant,
    ) -> Response<ProxyBody> {
        let response = error_response(&error);
        self.shared.metrics.error(error.kind());
        match error.side() {
            super::error::Side::Server => {
                tracing::warn!(listener = %self.listener, client = %self.client, error = %error, "request failed")
            }
            _ => {
                tracing::debug!(listener = %self.listener, client = %self.client, error = %error, "request refused")
            }
        }
        if let Some(mut log) = log {
            log.status = response.status().as_u16();
            log.bytes = response.body().size_hint().exact().unwrap_or(0);
            log.start = start;
            log.write();
        }
        response
    }
}

/// Why an attempt on a server ended without a response.
enum Failure {
    /// hyper's error; it hands the request back if it never went out.
    Sent(Box<hyper::client::conn::TrySendError<Request<UpstreamBody>>>),
    /// The checks ejected the server while the request waited for it.
    Ejected,
}

/// Splices an upgraded client connection with the upgraded server connection for as
/// long as both keep it open, counting it on the server all the while.
async fn tunnel(
    client_side: OnUpgrade,
    server_side: OnUpgrade,
    sender: SendRequest<UpstreamBody>,
    active: Active,
    idle: Duration,
    log: Option<Box<AccessLog>>,
) {
    let (client, server) = tokio::join!(client_side, server_side);
    drop(sender);
    match (client, server) {
        (Ok(client), Ok(server)) => {
            let totals = splice(TokioIo::new(client), TokioIo::new(server), idle).await;
            if let Some(mut log) = log {
                log.bytes = totals.down;
                log.write();
            }
            tracing::debug!(server = %active.server().addr, up = totals.up, down = totals.down, end = totals.end.name(), "tunnel closed");
        }
        (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "upgrade failed"),
    }
    drop(active);
}

/// Waits for the response head. The `timeout` runs from the moment the request body
/// has been sent in full, and while it is sent, from its last progress: a slow upload
/// is not a slow server, and a stalled one still ends. `None` when it ran out.
async fn response_within<F: Future>(
    response: F,
    progress: &mut Option<watch::Receiver<()>>,
    timeout: Duration,
) -> Option<F::Output> {
    tokio::pin!(response);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let moved = async {
            match progress.as_mut() {
                Some(progress) => progress.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            output = &mut response => return Some(output),
            () = &mut deadline => return None,
            more = moved => {
                if !more {
                    *progress = None;
                }
                deadline.as_mut().reset(tokio::time::Instant::now() + timeout);
            }
        }
    }
}

/// A client's request body on its way to a server, telling `response_within` of each
/// frame sent and, by dropping `progress`, of its end.
pub struct ClientBody {
    inner: Incoming,
    progress: Option<watch::Sender<()>>,
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match (&frame, &this.progress) {
            (Some(Ok(_)), Some(progress)) if !this.inner.is_end_stream() => {
                progress.send_replace(());
            }
            _ => this.progress = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A server's response body on its way to the client. When it ends, the connection
/// goes back to the server's idle pool; the server's active count drops with it.
pub struct ServerBody {
    inner: Incoming,
    done: bool,
    connection: Option<(SendRequest<UpstreamBody>, Active)>,
    log: Option<Box<AccessLog>>,
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(log), Some(data)) = (this.log.as_mut(), f.data_ref()) {
                    log.bytes += data.len() as u64;
                }
            }
            Some(Err(_)) => this.connection = None,
            None => this.done = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ServerBody {
    fn drop(&mut self) {
        if let Some((sender, active)) = self.connection.take()
            && (self.done || self.inner.is_end_stream())
        {
            checkin(active.server(), sender);
        }
        if let Some(log) = self.log.take() {
            log.write();
        }
    }
}

/// One access log line, filled in as the request goes; allocated only when the access
/// log is on.
struct AccessLog {
    listener: Arc<str>,
    client: SocketAddr,
    method: Method,
    path: String,
    status: u16,
    server: Option<SocketAddr>,
    bytes: u64,
    start: Instant,
}

impl AccessLog {
    fn write(&self) {
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let upgrade_to = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // Headers the Connection header names are hop-by-hop as well.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !matches!(n.as_str(), "close" | "keep-alive" | "upgrade"))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The authority of an absolute-form request, else the `Host` header.
fn host_of<B>(request: &Request<B>) -> Option<&str> {
    request.uri().host().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn rebuild(method: &Method, uri: &Uri, headers: &HeaderMap) -> Request<UpstreamBody> {
    let mut request = Request::new(Either::Right(Empty::new()));
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.headers_mut() = headers.clone();
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_ignored_in_hosts() {
        assert_eq!(without_port("Example.test:8080"), "Example.test");
        assert_eq!(without_port("example.test"), "example.test");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
    }

    #[test]
    fn connection_named_headers_are_dropped_and_upgrades_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, X-Secret"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        assert!(is_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get(header::CONNECTION).unwrap(), "upgrade");
        assert_eq!(headers.get(header::UPGRADE).unwrap(), "websocket");
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get("x-kept").is_some());
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get(header::UPGRADE).is_none());
    }
}
