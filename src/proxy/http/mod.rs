//! Layer 7: one client connection served by hyper; each request is routed, rewritten
//! (`headers`), forwarded with retries (`forward`), and its response streamed back
//! (`body`); upgrades become tunnels (`upgrade`).

mod access_log;
mod body;
mod error;
mod forward;
mod headers;
mod timer;
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
use crate::limit::Admitted;
use crate::snapshot::{ListenerPlan, Shared};
use access_log::{AccessLog, Timings};
use error::error_response;
use headers::Forwarded;
use timer::{Finished, Phase, Timed};

/// hyper's own bound on its read buffer (its `DEFAULT_MAX_BUFFER_SIZE`): raised only
/// when `max_header_size` is larger, so the head limit is the one that answers.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

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
    /// The head and keep-alive timers' view of the connection.
    phase: Phase,
    /// The client is over `max_connections_per_client`: every request gets 429.
    over_client_cap: bool,
    /// Its slots in the listener's limits, held as long as the connection: the
    /// socket wrapper holds the connection, so a tunnel made of it holds them too.
    _admitted: Admitted,
}

impl AsRef<Phase> for Connection {
    fn as_ref(&self) -> &Phase {
        &self.phase
    }
}

/// Serves one client connection until it closes, or, on shutdown, until its in-flight
/// request is answered.
pub async fn serve(
    shared: Arc<Shared>,
    listener: Arc<str>,
    plan: Arc<ListenerPlan>,
    stream: ClientStream,
    (client, admitted): (SocketAddr, Admitted),
) {
    let shutdown = shared.shutdown.clone();
    let mut forwarded = Forwarded::new(client, stream.tcp().local_addr().ok());
    forwarded.proto = stream.proto();
    let limits = plan.limits.clone();
    let connection = Arc::new(Connection {
        shared,
        listener,
        client,
        forwarded,
        private: Arc::default(),
        idle_timeout: plan.idle_timeout,
        over_client_cap: admitted.over_client_cap(),
        fallback: plan,
        phase: Phase::default(),
        _admitted: admitted,
    });
    let timers = (limits.header_timeout, limits.keepalive_timeout);
    let io = Timed::new(stream, connection.clone(), timers, limits.max_header_size);
    let owner = connection.clone();
    let service = service_fn(move |request| {
        let connection = connection.clone();
        connection.phase.busy();
        async move {
            let response = connection.proxy(request).await;
            let finished = response.map(|body| Finished {
                body,
                owner: connection,
            });
            Ok::<_, Infallible>(finished)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The head and keep-alive timers are `Timed`'s: hyper's would close without a 408.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_size)
        .max_buf_size(limits.max_header_size.max(HYPER_MAX_BUF))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    let refusal = match &result {
        Err(e) if e.is_parse_too_large() => Some(ProxyError::HeaderTooLarge {
            limit: limits.max_header_size,
        }),
        _ => owner
            .phase
            .refusal(limits.header_timeout, limits.max_header_size),
    };
    if let Some(refusal) = refusal {
        owner.refused(&refusal);
    } else if let Err(e) = result {
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
            timings: Timings::default(),
            reason: None,
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
        match error.side() {
            Side::Server => tracing::warn!(error = %error, "request failed"),
            Side::Client => self.refused(&error),
            Side::Proxy => tracing::debug!(error = %error, "request refused"),
        }
        if error.side() != Side::Client {
            self.shared.metrics.error(error.kind());
        }
        if let Some(mut log) = log {
            log.reason = Some(error.kind());
            log.status = response.status().as_u16();
            log.bytes = response.body().size_hint().exact().unwrap_or(0);
            log.start = start;
            log.write();
        }
        response
    }

    /// Counts a client's refusal; logs it when it is the first of its reason this
    /// second, so that an attack does not flood the log.
    fn refused(&self, error: &ProxyError) {
        let Some(refusal) = error.refusal() else {
            return;
        };
        if self.fallback.state.refused(refusal) {
            tracing::info!(reason = refusal.name(), error = %error, "client refused (at most one line per second per reason)");
        }
    }
}
