//! A listener's `proxy_protocol` and `trusted_proxies` keys, read into `ProxyProtocol`.
//! (An upstream's `send_proxy_protocol` is a plain enum that serde reads.)

use toml::Spanned;

use super::cidr::parse_cidr;
use super::collect::Errors;
use super::types::ProxyProtocol;

/// `None` when the listener takes no PROXY header. Every bad CIDR is reported at its
/// own place.
pub(super) fn validate_proxy_protocol(
    errors: &mut Errors<'_>,
    enabled: &Option<Spanned<bool>>,
    trusted: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Option<ProxyProtocol> {
    let on = enabled.as_ref().is_some_and(|e| *e.get_ref());
    let Some(list) = trusted else {
        return on.then_some(ProxyProtocol { trusted: None });
    };
    if !on {
        errors.at(
            list.span(),
            "`trusted_proxies` is only for a listener with `proxy_protocol = true`",
        );
        return None;
    }
    if list.get_ref().is_empty() {
        errors.at(
            list.span(),
            "`trusted_proxies` is empty, so every connection would be closed; leave it out to accept a PROXY header from any source",
        );
        return None;
    }
    let mut cidrs = Vec::new();
    for item in list.get_ref() {
        match parse_cidr(item.get_ref()) {
            Ok(cidr) => cidrs.push(cidr),
            Err(message) => errors.at(item.span(), message),
        }
    }
    Some(ProxyProtocol {
        trusted: Some(cidrs),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ProxyVersion, parse_cidr};

    const UPSTREAM: &str = "[upstreams.app]\nservers = [\"127.0.0.1:9001\"]\n";

    fn parse(listener: &str, upstream: &str) -> Result<Config, String> {
        let text = format!(
            "[listeners.web]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"app\"\n{listener}\n{UPSTREAM}{upstream}"
        );
        Config::parse(&text, "lb.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_keys_with_their_defaults() {
        let config = parse("", "").unwrap();
        assert_eq!(config.listeners[0].proxy_protocol, None);
        assert_eq!(config.upstreams[0].send_proxy_protocol, None);
        let config = parse("proxy_protocol = true", "send_proxy_protocol = \"v2\"").unwrap();
        let pp = config.listeners[0].proxy_protocol.as_ref().unwrap();
        assert_eq!(pp.trusted, None, "any source by default");
        assert!(pp.trusts("203.0.113.1".parse().unwrap()));
        assert_eq!(
            config.upstreams[0].send_proxy_protocol,
            Some(ProxyVersion::V2)
        );
        let config = parse(
            "proxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\", \"fd00::/8\"]",
            "send_proxy_protocol = \"v1\"",
        )
        .unwrap();
        let pp = config.listeners[0].proxy_protocol.as_ref().unwrap();
        assert_eq!(
            pp.trusted,
            Some(vec![
                parse_cidr("127.0.0.1/32").unwrap(),
                parse_cidr("fd00::/8").unwrap()
            ])
        );
        assert!(pp.trusts("127.0.0.1".parse().unwrap()));
        assert!(!pp.trusts("127.0.0.2".parse().unwrap()));
        assert_eq!(
            parse("proxy_protocol = false", "").unwrap().listeners[0].proxy_protocol,
            None
        );
    }

    #[test]
    fn bad_values_are_reported_at_their_place() {
        let e = parse(
            "proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300/8\", \"::1/200\"]",
            "send_proxy_protocol = \"v3\"",
        )
        .unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with("lb.toml:6:34: bad CIDR `10.0.0.300/8`"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("lb.toml:6:50: bad CIDR `::1/200`"),
            "{e}"
        );
        assert!(lines[2].starts_with("lb.toml:9:23:"), "{e}");
        assert!(
            lines[2].contains("`v1`") && lines[2].contains("`v2`"),
            "{e}"
        );

        let e = parse("trusted_proxies = [\"127.0.0.1/32\"]", "").unwrap_err();
        assert!(
            e.starts_with("lb.toml:5:19: `trusted_proxies` is only for"),
            "{e}"
        );
        let e = parse("proxy_protocol = true\ntrusted_proxies = []", "").unwrap_err();
        assert!(e.contains("`trusted_proxies` is empty"), "{e}");
        let e = parse("proxy_protocol = \"yes\"", "").unwrap_err();
        assert!(e.starts_with("lb.toml:5:18:"), "{e}");
        let e = parse(
            "proxy_protocol = true\ntrusted_proxies = [\"10.1.0.0/8\"]",
            "",
        )
        .unwrap_err();
        assert!(e.contains("did you mean `10.0.0.0/8`?"), "{e}");
    }
}
