//! What can fail while proxying, which side failed, and the one function that turns a
//! failure into the response the client sees.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use super::http::ProxyBody;

/// Who is to blame, for logs and metrics: the client side, the server side, or rlb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Proxy,
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
    #[error("bad request: {0}")]
    BadRequest(&'static str),
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_) => Side::Client,
            ProxyError::NoRoute | ProxyError::NoServer(_) => Side::Proxy,
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Server { .. }
            | ProxyError::ResponseTimeout { .. }
            | ProxyError::Ejected { .. } => Side::Server,
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
            ProxyError::BadRequest(_) => "bad_request",
        }
    }

    fn status_and_reason(&self) -> (StatusCode, &'static str) {
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
            ProxyError::ResponseTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "504 gateway timeout: the server did not answer in time\n",
            ),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "400 bad request\n"),
        }
    }
}

/// The only place that builds an error response: a status and a short plain-text body
/// naming the reason. A bad request also closes the connection.
pub fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let (status, reason) = error.status_and_reason();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        reason.as_bytes(),
    ))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if error.side() == Side::Client {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
