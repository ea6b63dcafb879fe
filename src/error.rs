//! What can fail while proxying: which side failed, whether the request may go to
//! another server, and the status the client sees (`proxy::error` builds the response).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// Who is to blame, for logs and metrics: the server side, or rlb (no route, no
/// server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Proxy,
}

/// Whether a request that failed on one server may go to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the server: any request may go to the next one.
    Anywhere,
    /// The server may have acted on the request: only one that is idempotent and has no
    /// body goes again.
    IfIdempotent,
    /// The client has waited long enough (a timeout), or no server is to blame.
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("no server available in upstream `{0}`")]
    NoServer(Arc<str>),
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("server {addr} failed: {source}")]
    Server {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("server {addr} sent no response within {timeout:?}")]
    ResponseTimeout { addr: SocketAddr, timeout: Duration },
    #[error("server {addr} was ejected while the request waited for its response")]
    Ejected { addr: SocketAddr },
    /// Every usable server of the upstream stayed at `max_connections_per_server` for
    /// the whole `queue_timeout`.
    #[error("no server of upstream `{upstream}` was free within {timeout:?}")]
    QueueTimeout {
        upstream: Arc<str>,
        timeout: Duration,
    },
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute | ProxyError::NoServer(_) | ProxyError::QueueTimeout { .. } => {
                Side::Proxy
            }
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Server { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::Ejected { .. } => Side::Server,
        }
    }

    /// Where the request may go after this failure: the retry rule is the error's, as
    /// pingora-error's `RetryType` is.
    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. } => Retry::Anywhere,
            ProxyError::Server { .. } | ProxyError::Ejected { .. } => Retry::IfIdempotent,
            ProxyError::NoRoute
            | ProxyError::NoServer(_)
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::QueueTimeout { .. } => Retry::Never,
        }
    }

    /// A failure to open a connection: nothing was sent, so any request may go to
    /// another server.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. }
        )
    }

    /// Every value [`ProxyError::kind`] takes, so the metrics show each from the start.
    pub const KINDS: [&'static str; 8] = [
        "no_route",
        "no_server",
        "connect",
        "connect_timeout",
        "server",
        "timeout",
        "ejected",
        "queue_timeout",
    ];

    /// A short name for logs and the `kind` label of the error metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoServer(_) => "no_server",
            ProxyError::Connect { .. } => "connect",
            ProxyError::ConnectTimeout { .. } => "connect_timeout",
            ProxyError::Server { .. } => "server",
            ProxyError::ResponseTimeout { .. } => "timeout",
            ProxyError::Ejected { .. } => "ejected",
            ProxyError::QueueTimeout { .. } => "queue_timeout",
        }
    }

    /// The status and the short plain-text body the client gets.
    pub fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoRoute => (
                StatusCode::NOT_FOUND,
                "404 not found: no route matches this request\n",
            ),
            ProxyError::NoServer(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "503 service unavailable: no healthy server for this request\n",
            ),
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. } => (
                StatusCode::BAD_GATEWAY,
                "502 bad gateway: could not connect to a server\n",
            ),
            ProxyError::Server { .. } | ProxyError::Ejected { .. } => (
                StatusCode::BAD_GATEWAY,
                "502 bad gateway: the server failed to answer\n",
            ),
            ProxyError::QueueTimeout { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "503 service unavailable: every server is busy; try again later\n",
            ),
            ProxyError::ResponseTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "504 gateway timeout: the server did not answer in time\n",
            ),
        }
    }
}
