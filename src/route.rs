//! Pure request matching: the one host normaliser, the one TLS name rule (SNI against
//! exact and one-label wildcard names), and an http listener's routes by host and path
//! prefix, first match wins.

/// The routes of an http listener, in file order; `T` is what a match leads to (an
/// upstream, in a snapshot).
pub struct Routes<T>(pub Vec<Route<T>>);

pub struct Route<T> {
    /// As [`normalize_host`] gives it: lowercase, without a port.
    pub host: Option<Box<str>>,
    pub path_prefix: Option<Box<str>>,
    pub target: T,
}

impl<T> Routes<T> {
    /// The first route whose host (any port, any case) and path prefix match.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&T> {
        let host = host.map(without_port);
        self.0
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
                    && r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            })
            .map(|r| &r.target)
    }
}

/// `example.test:8080` → `example.test`, `[::1]:80` → `[::1]`; a bare IPv6 address
/// (`::1`, more than one colon, no brackets) has no port to drop.
pub fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (name.starts_with('[') || !name.contains(':')) =>
        {
            name
        }
        _ => host,
    }
}

/// Lowercases a host and drops its port, so `Chat.Example.test:8080` is
/// `chat.example.test`: how route hosts are stored.
pub fn normalize_host(host: &str) -> String {
    without_port(host).to_ascii_lowercase()
}

/// A TLS server name as it is matched: lowercase, without a trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The suffix a one-label wildcard must name to match `name` (normalized):
/// `a.b.example.test` is matched by `*.b.example.test`, so this is `b.example.test`.
/// A name of one label has none.
pub fn wildcard_suffix(name: &str) -> Option<&str> {
    name.split_once('.')
        .map(|(_, rest)| rest)
        .filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_ignored_in_hosts() {
        assert_eq!(without_port("Example.test:8080"), "Example.test");
        assert_eq!(without_port("example.test"), "example.test");
        assert_eq!(without_port("[::1]:80"), "[::1]");
        assert_eq!(without_port("[::1]"), "[::1]");
        assert_eq!(without_port("::1"), "::1");
        assert_eq!(without_port("fe80::1:2"), "fe80::1:2");
        assert_eq!(
            normalize_host("Chat.Example.test:8080"),
            "chat.example.test"
        );
    }

    #[test]
    fn first_match_wins_by_host_then_path() {
        let route = |host: Option<&str>, path: Option<&str>, target| Route {
            host: host.map(Box::from),
            path_prefix: path.map(Box::from),
            target,
        };
        let routes = Routes(vec![
            route(None, Some("/api"), 1),
            route(Some("chat.example.test"), None, 2),
            route(None, None, 3),
        ]);
        assert_eq!(routes.find(Some("chat.example.test"), "/api/x"), Some(&1));
        assert_eq!(routes.find(Some("Chat.Example.TEST:80"), "/"), Some(&2));
        assert_eq!(routes.find(None, "/"), Some(&3));
    }

    #[test]
    fn a_wildcard_matches_exactly_one_label() {
        assert_eq!(normalize_name("A.Example.TEST."), "a.example.test");
        assert_eq!(wildcard_suffix("a.b.example.test"), Some("b.example.test"));
        assert_eq!(wildcard_suffix("b.example.test"), Some("example.test"));
        assert_eq!(wildcard_suffix("localhost"), None);
        assert_eq!(wildcard_suffix("trailing."), None);
    }
}
