//! Header rewriting on the way to a server and back: hop-by-hop headers dropped,
//! `X-Forwarded-*` added, the request put in origin form with a `Host`.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

/// What the `X-Forwarded-*` headers and a missing `Host` are made of, per client
/// connection.
pub struct Forwarded {
    /// The client's IP, ready for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// The address the client connected to: the `Host` of a request that has none.
    pub local: Option<SocketAddr>,
    /// `X-Forwarded-Proto`: `http`, or `https` on a listener that terminates TLS.
    pub proto: &'static str,
}

impl Forwarded {
    pub fn new(client: SocketAddr, local: Option<SocketAddr>) -> Forwarded {
        Forwarded {
            client_ip: HeaderValue::from_str(&client.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            local,
            proto: "http",
        }
    }

    /// Drops hop-by-hop headers and adds the `X-Forwarded-*` ones; `Host` is kept.
    pub fn rewrite<B>(&self, request: &mut Request<B>, upgrade: bool) {
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
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        if let Some(host) = host {
            headers.insert(X_FORWARDED_HOST, host);
        }
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

pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
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

pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The authority of an absolute-form request, else the `Host` header.
pub fn host_of<B>(request: &Request<B>) -> Option<&str> {
    request.uri().host().or_else(|| {
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
