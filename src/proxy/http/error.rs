//! The one function that turns a failure into the response the client sees, and its
//! twin for the answers written straight on the socket.
//!
//! Two answers are not built here: hyper's own 400 and 431 for a head it cannot parse
//! or that is over `max_header_size` (hyper writes them while its connection fails;
//! `serve` counts the 431 from the connection's error). The 408 and 414, which hyper
//! cannot send, are written by `timer.rs` with [`raw_response`].

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{Either, Full};

use super::body::ProxyBody;
use crate::error::ProxyError;

/// The only place that builds an error response: a status and a short plain-text body
/// naming the reason; `Retry-After` and `Connection: close` where the error says so.
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
    if let Some(seconds) = error.retry_after() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if error.closes() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The same answer as HTTP/1.1 bytes, for a connection hyper no longer serves; it
/// always closes the connection.
pub fn raw_response(error: &ProxyError) -> Vec<u8> {
    let (status, reason) = error.status_and_reason();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason.len(),
    )
    .into_bytes()
}
