//! Layer 7: one client connection served by hyper; each request is routed, rewritten
//! (`headers`), forwarded with retries (`forward`), and its response streamed back
//! (`body`); upgrades become tunnels (`upgrade`).

mod access_log;
mod body;
mod error;
mod forward;
mod headers;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use body::ProxyBody;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use super::stream::ClientStream;
use crate::connect::private::Private;
use crate::error::{ProxyError, Side};
use crate::snapshot::{ListenerPlan, Shared};
use access_log::AccessLog;
use error::error_response;
use headers::Forwarded;

/// How long a client may take to send a request head, and how long an idle keep-alive
/// connection waits for the next one (nginx's `client_header_timeout` is 60 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// What every request of one client connection shares.
struct Connection {
    shared: Arc<Shared>,
    listener: Arc<str>,
    client: SocketAddr,
    forwarded: Forwarded,
    /// Server connections that carried this client's PROXY header, for its next request.
    private: Arc<Private>,
    /// The routes in force when the connection was accepted, used if a reload removes
    /// the listener while the connection is still open.
    fallback: Arc<ListenerPlan>,
    idle_timeout: Duration,
}

/// Serves one client connection until it closes, or, on shutdown, until its in-flight
/// request is answered.
pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<str>,
    plan: Arc<ListenerPlan>,
    stream: ClientStream,
    client: SocketAddr,
) {
    let shutdown = shared.shutdown.clone();
    let mut forwarded = Forwarded::new(client, stream.tcp().local_addr().ok());
    forwarded.proto = stream.proto();
    let connection = Arc::new(Connection {
        shared,
        listener,
        client,
        forwarded,
        private: Arc::default(),
        idle_timeout: plan.idle_timeout,
        fallback: plan,
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
        tracing::debug!(error = %e, "client connection ended");
    }
}

impl Connection {
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

    /// rlb's own answer to a request that failed: counted, logged, access-logged.
    fn fail(
        &self,
        error: ProxyError,
        log: Option<Box<AccessLog>>,
        start: Instant,
    ) -> Response<ProxyBody> {
        let response = error_response(&error);
        self.shared.metrics.error(error.kind());
        match error.side() {
            Side::Server => tracing::warn!(error = %error, "request failed"),
            _ => tracing::debug!(error = %error, "request refused"),
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
