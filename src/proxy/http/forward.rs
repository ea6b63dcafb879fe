//! Forwarding one request: route, pick a server, send over a pooled connection, and on
//! failure try the next server as the error's retry rule allows.
//!
//! Independent of the client's HTTP version: it takes a `Request<Incoming>`, which
//! hyper gives for HTTP/1 and HTTP/2 alike.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::upgrade::OnUpgrade;
use tokio::sync::watch;

use super::Connection;
use super::access_log::{AccessLog, Timings};
use super::body::{Home, ProxyBody, ServerBody};
use super::headers::{host_of, is_idempotent, is_upgrade, strip_hop_by_hop};
use super::upgrade;
use crate::balance::{Tried, Upstream};
use crate::connect::{BodyTooLarge, ClientBody, RequestBody, checkout, proxy_header};
use crate::error::{ProxyError, Retry};
use crate::server::{Active, Server};

/// A response from a server, with the connection it came on, its count, and where the
/// connection goes afterwards.
type Answered = (Response<Incoming>, (SendRequest<RequestBody>, Active), Home);

impl Connection {
    /// Answers one request: the server's response, or rlb's own error response.
    pub(super) async fn proxy(&self, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let start = Instant::now();
        if self.over_client_cap {
            let log = self.access_log(&request, start);
            return self.fail(ProxyError::ClientConnections, log, start);
        }
        let max_body = self.fallback.limits.max_body_size;
        let upstream = match self.route(&request).and_then(|u| {
            // A body announced over the limit is refused before any server is picked.
            match max_body {
                Some(limit) if content_length(&request).is_some_and(|n| n > limit) => {
                    Err(ProxyError::BodyTooLarge { limit })
                }
                _ => Ok(u),
            }
        }) {
            Ok(upstream) => upstream,
            Err(error) => {
                let log = self.access_log(&request, start);
                return self.fail(error, log, start);
            }
        };
        let on_upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        // The client is answered in its own version, whatever the server spoke.
        let version = request.version();
        self.forwarded.rewrite(&mut request, on_upgrade.is_some());
        let mut log = self.access_log(&request, start);
        let mut timings = Timings::default();
        let forwarded = self
            .forward(&upstream, Outgoing::new(request, max_body), &mut timings)
            .await;
        if let Some(log) = log.as_mut() {
            log.timings = timings;
        }
        match forwarded {
            Ok(answered) => self.respond(answered, version, on_upgrade, log),
            Err(error) => self.fail(error, log, start),
        }
    }

    /// The upstream of the first matching route, once the client's rate bucket (the
    /// route's own, else the listener's) lets the request through. A reload that
    /// removed the listener or made it tcp leaves this connection on the routes it was
    /// accepted with.
    fn route(&self, request: &Request<Incoming>) -> Result<Arc<Upstream>, ProxyError> {
        let snapshot = self.shared.snapshot.load();
        let plan = snapshot
            .listeners
            .get(&*self.listener)
            .filter(|p| p.routes().is_some())
            .unwrap_or(&self.fallback);
        let target = plan
            .routes()
            .and_then(|r| r.find(host_of(request), request.uri().path()))
            .ok_or(ProxyError::NoRoute)?;
        if let Some(rate) = target.rate.as_ref().or(plan.rate.as_ref()) {
            rate.check(self.client.ip())
                .map_err(|retry_after| ProxyError::RateLimited { retry_after })?;
        }
        Ok(target.upstream.clone())
    }

    /// Tries the servers of `upstream` one at a time until one answers.
    async fn forward(
        &self,
        upstream: &Upstream,
        mut outgoing: Outgoing,
        timings: &mut Timings,
    ) -> Result<Answered, ProxyError> {
        let mut tried = Tried::default();
        let mut last_error = None;
        loop {
            let (index, active) = match upstream.acquire(&tried).await {
                Ok(acquired) => acquired,
                Err(e @ ProxyError::QueueTimeout { .. }) => return Err(e),
                Err(_) => break,
            };
            tried.add(index);
            timings.attempts += 1;
            let server = &upstream.servers[index];
            let opening = Instant::now();
            let (sender, reused) = match self.server_connection(upstream, server).await {
                Ok(connection) => connection,
                Err(e) => {
                    // Nothing was sent: any request goes to the next server.
                    crate::health::passive_failure(&self.shared, server, &e);
                    last_error = Some(e);
                    continue;
                }
            };
            timings.connect = (!reused).then(|| opening.elapsed());
            if !reused {
                server.connected();
            }
            let Some(request) = outgoing.pending.take() else {
                break;
            };
            server.stats.requests.fetch_add(1, Ordering::Relaxed);
            let (timeout, sent) = (upstream.response_timeout, Instant::now());
            match attempt(server, sender, request, &mut outgoing.progress, timeout).await {
                Attempt::Answered(response, sender) => {
                    timings.head = Some(sent.elapsed());
                    return Ok((response, (sender, active), self.home(upstream)));
                }
                Attempt::Unsent(request) => {
                    // The connection closed before the request went out: it may go
                    // again, to this server too when the connection was an old one.
                    outgoing.pending = Some(request);
                    if reused {
                        tried = tried.without(index);
                    }
                }
                Attempt::Failed(error) => {
                    let retry = error.retry();
                    last_error = Some(error);
                    if retry != Retry::IfIdempotent || !outgoing.rebuild() {
                        break;
                    }
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProxyError::NoServer(upstream.name.clone())))
    }

    /// A connection to `server` ready for a request, and whether it was reused: from
    /// the server's idle pool, or, when the upstream sends PROXY headers, from this
    /// client connection's own.
    async fn server_connection(
        &self,
        upstream: &Upstream,
        server: &Server,
    ) -> Result<(SendRequest<RequestBody>, bool), ProxyError> {
        let timeout = upstream.connect_timeout;
        let Some(version) = upstream.send_proxy else {
            return checkout(&server.idle, server.addr, timeout).await;
        };
        let local = self.forwarded.local.unwrap_or(self.fallback.local);
        let header = || proxy_header(version, self.client, local);
        self.private
            .checkout((server.addr, version), timeout, header)
            .await
    }

    fn home(&self, upstream: &Upstream) -> Home {
        match upstream.send_proxy {
            None => Home::Shared,
            Some(version) => Home::Private(self.private.clone(), version),
        }
    }

    /// The server's response as the client gets it: in the client's HTTP version (an
    /// HTTP/1.0 server's body, delimited by its close, goes on chunked to an HTTP/1.1
    /// client, whose connection stays open), or the start of a tunnel.
    fn respond(
        &self,
        (response, connection, home): Answered,
        version: Version,
        on_upgrade: Option<OnUpgrade>,
        mut log: Option<Box<AccessLog>>,
    ) -> Response<ProxyBody> {
        let status = response.status();
        if let Some(log) = log.as_mut() {
            log.status = status.as_u16();
            log.server = Some(connection.1.server().addr);
        }
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_side)) = (status, on_upgrade) {
            self.phase.tunnel();
            let idle = self.idle_timeout;
            return upgrade::start(&self.shared, response, client_side, connection, idle, log);
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, false);
        parts.version = version;
        Response::from_parts(
            parts,
            Either::Left(ServerBody::new(body, connection, home, log)),
        )
    }
}

/// The request on its way: taken for an attempt, given back when it never went out,
/// rebuilt when it may go again.
struct Outgoing {
    pending: Option<Request<RequestBody>>,
    /// What it takes to rebuild a request that may be sent again: only one that is
    /// idempotent and has no body.
    resend: Option<(Method, Uri, HeaderMap)>,
    /// Each frame of the body sent, for the response timeout.
    progress: Option<watch::Receiver<()>>,
}

impl Outgoing {
    /// `max_body`: the body is cut with an error past this many bytes.
    fn new(request: Request<Incoming>, max_body: Option<u64>) -> Outgoing {
        let (parts, body) = request.into_parts();
        if !http_body::Body::is_end_stream(&body) {
            let (body, progress) = ClientBody::new(body, max_body);
            return Outgoing {
                pending: Some(Request::from_parts(parts, Either::Left(body))),
                resend: None,
                progress: Some(progress),
            };
        }
        let resend = is_idempotent(&parts.method).then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        Outgoing {
            pending: Some(Request::from_parts(parts, Either::Right(Empty::new()))),
            resend,
            progress: None,
        }
    }

    /// Makes the request ready to go again; false when it may not.
    fn rebuild(&mut self) -> bool {
        let Some((method, uri, headers)) = &self.resend else {
            return false;
        };
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        self.pending = Some(request);
        true
    }
}

/// How one attempt on one server ended.
enum Attempt {
    Answered(Response<Incoming>, SendRequest<RequestBody>),
    /// hyper handed the request back: it never went out.
    Unsent(Request<RequestBody>),
    Failed(ProxyError),
}

/// Sends `request` on `sender` and waits for the response head, the response timeout
/// or the server's ejection, whichever comes first; counts the failures on the server.
async fn attempt(
    server: &Server,
    mut sender: SendRequest<RequestBody>,
    request: Request<RequestBody>,
    progress: &mut Option<watch::Receiver<()>>,
    timeout: Duration,
) -> Attempt {
    let addr = server.addr;
    // A server ejected while the request waits (a frozen one, by its checks' timeout)
    // will not answer: give up on it now, not at the response timeout.
    let ejected = server.ejected();
    // `None`: ejected; `Some(None)`: the response timeout ran out.
    let sent = tokio::select! {
        sent = response_within(sender.try_send_request(request), progress, timeout) => Some(sent),
        () = ejected => None,
    };
    let error = match sent {
        Some(Some(Ok(response))) => return Attempt::Answered(response, sender),
        Some(Some(Err(mut e))) => match e.take_message() {
            Some(request) => return Attempt::Unsent(request),
            // The client's body failed (over `max_body_size`, malformed, cut short):
            // not the server's failure, and not counted against it.
            None if e.error().is_user() => return Attempt::Failed(client_fault(e.into_error())),
            None => ProxyError::Server {
                addr,
                source: e.into_error(),
            },
        },
        Some(None) => {
            server.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            return Attempt::Failed(ProxyError::ResponseTimeout { addr, timeout });
        }
        None => ProxyError::Ejected { addr },
    };
    server
        .stats
        .response_failures
        .fetch_add(1, Ordering::Relaxed);
    Attempt::Failed(error)
}

/// The `Content-Length` of a request, when it has a valid one.
fn content_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// What the client did wrong when its request body made sending fail: went over
/// `max_body_size`, or sent a body that could not be read.
fn client_fault(error: hyper::Error) -> ProxyError {
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return ProxyError::BodyTooLarge {
                limit: too_large.limit,
            };
        }
        source = e.source();
    }
    ProxyError::ClientBody(error)
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
