//! What can fail while proxying: which side failed, whether the request may go to
//! another server, and the status the client sees (`proxy::error` builds the response).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

/// Who is to blame, for logs and metrics: the client side (it went over a limit), the
/// server side, or rlb (no route, no server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Proxy,
}

/// Why a client was refused: the `reason` label of `rlb_limited_total`. Every refusal
/// but `MaxConnections` (the accept loop pausing, which refuses nobody an answer) is a
/// [`ProxyError`] of [`Side::Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    ClientConnections,
    Rate,
    HeaderTimeout,
    HeaderSize,
    UriSize,
    BodySize,
    /// A PROXY header missing, malformed, or from a source not trusted to send one.
    ProxyHeader,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::MaxConnections,
        Refusal::ClientConnections,
        Refusal::Rate,
        Refusal::HeaderTimeout,
        Refusal::HeaderSize,
        Refusal::UriSize,
        Refusal::BodySize,
        Refusal::ProxyHeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::ClientConnections => "client_connections",
            Refusal::Rate => "rate",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::HeaderSize => "header_size",
            Refusal::UriSize => "uri_size",
            Refusal::BodySize => "body_size",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
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
    #[error("the client is over its request rate; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("the client has too many connections open")]
    ClientConnections,
    #[error("the request body is over {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request head was not complete within {timeout:?}")]
    HeaderTimeout { timeout: Duration },
    #[error("the request head is over {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("the request line is over {limit} bytes")]
    UriTooLong { limit: usize },
    /// The client's request body could not be read to its end (a malformed chunk, or
    /// cut short by a close): the client's fault, not the server's.
    #[error("the request body could not be read: {0}")]
    ClientBody(hyper::Error),
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
            // Every refusal.
            _ => Side::Client,
        }
    }

    /// The limit a client went over, for a refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        Some(match self {
            ProxyError::RateLimited { .. } => Refusal::Rate,
            ProxyError::ClientConnections => Refusal::ClientConnections,
            ProxyError::BodyTooLarge { .. } => Refusal::BodySize,
            ProxyError::HeaderTimeout { .. } => Refusal::HeaderTimeout,
            ProxyError::HeaderTooLarge { .. } => Refusal::HeaderSize,
            ProxyError::UriTooLong { .. } => Refusal::UriSize,
            _ => return None,
        })
    }

    /// The client connection closes after rlb's answer: its request (or the rest of
    /// it) was not read, or the client has used up its share.
    pub fn closes(&self) -> bool {
        matches!(self, ProxyError::ClientBody(_))
            || !matches!(self.refusal(), None | Some(Refusal::Rate))
    }

    /// `Retry-After` for a refusal that says when to come back, in whole seconds
    /// (rounded up, at least 1).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::RateLimited { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .map(|s| s.max(1))
            }
            _ => None,
        }
    }

    /// Where the request may go after this failure: the retry rule is the error's, as
    /// pingora-error's `RetryType` is.
    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::Connect { .. } | ProxyError::ConnectTimeout { .. } => Retry::Anywhere,
            ProxyError::Server { .. } | ProxyError::Ejected { .. } => Retry::IfIdempotent,
            _ => Retry::Never,
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
    pub const KINDS: [&'static str; 9] = [
        "no_route",
        "no_server",
        "connect",
        "connect_timeout",
        "server",
        "timeout",
        "ejected",
        "queue_timeout",
        "client_body",
    ];

    /// A short name for logs and the `kind` label of the error metrics (for a
    /// refusal, its reason).
    pub fn kind(&self) -> &'static str {
        if let Some(refusal) = self.refusal() {
            return refusal.name();
        }
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoServer(_) => "no_server",
            ProxyError::Connect { .. } => "connect",
            ProxyError::ConnectTimeout { .. } => "connect_timeout",
            ProxyError::Server { .. } => "server",
            ProxyError::ResponseTimeout { .. } => "timeout",
            ProxyError::Ejected { .. } => "ejected",
            ProxyError::QueueTimeout { .. } => "queue_timeout",
            ProxyError::ClientBody(_) => "client_body",
            _ => "refused",
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
            ProxyError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "429 too many requests: over this client's request rate\n",
            ),
            ProxyError::ClientConnections => (
                StatusCode::TOO_MANY_REQUESTS,
                "429 too many requests: too many connections from this client\n",
            ),
            ProxyError::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "400 bad request: the request body could not be read\n",
            ),
            ProxyError::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 content too large: the request body is over the limit\n",
            ),
            ProxyError::HeaderTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "408 request timeout: the request head did not arrive in time\n",
            ),
            ProxyError::HeaderTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "431 request header fields too large\n",
            ),
            ProxyError::UriTooLong { .. } => (
                StatusCode::URI_TOO_LONG,
                "414 uri too long: the request line is over the limit\n",
            ),
        }
    }
}
