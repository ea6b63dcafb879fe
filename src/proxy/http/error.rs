//! The one function that turns a failure into the response the client sees.

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::{Either, Full};

use super::body::ProxyBody;
use crate::error::ProxyError;

/// The only place that builds an error response: a status and a short plain-text body
/// naming the reason.
pub fn error_response(error: &ProxyError) -> Response<ProxyBody> {
    let (status, reason) = error.status_and_reason();
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        reason.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
