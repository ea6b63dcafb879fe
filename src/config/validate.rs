//! The semantic layer: the document walked table by table, each leaf table read by
//! serde, then every cross-reference and value checked, all problems collected.

use std::collections::HashSet;
use std::net::SocketAddr;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::collect::{Errors, Value, finish};
use super::health::validate_health;
use super::limits::{nested, validate_limits, validate_rate};
use super::proxy_protocol::validate_proxy_protocol;
use super::raw::*;
use super::tls::validate_tls;
use super::types::*;

pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let mut errors = Errors {
        text,
        origin,
        list: Vec::new(),
    };
    let (document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            errors.toml(0..0, e);
        }
        return Err(finish(errors));
    }
    let tables = Tables::read(&mut errors, document.get_ref());
    let global = validate_global(&mut errors, tables.global.flatten());
    let admin = tables
        .admin
        .and_then(|a| errors.addr(&a.bind).map(|bind| Admin { bind }));

    let mut upstreams = Vec::new();
    for (name, value) in &tables.upstreams {
        if let Some(u) = validate_upstream(&mut errors, name.get_ref(), value) {
            upstreams.push(u);
        }
    }
    let known: HashSet<&str> = tables
        .upstreams
        .iter()
        .map(|(k, _)| k.get_ref().as_ref())
        .collect();

    let mut listeners = Vec::new();
    let mut binds: Vec<(SocketAddr, String)> = Vec::new();
    if let Some(a) = &admin {
        binds.push((a.bind, "the admin listener".to_string()));
    }
    for (name, value) in &tables.listeners {
        if let Some(listener) =
            validate_listener(&mut errors, name.get_ref(), value, &known, &mut binds)
        {
            listeners.push(listener);
        }
    }
    if tables.listeners.is_empty() && errors.list.is_empty() {
        errors.at(
            0..0,
            "no listeners: add at least one `[listeners.NAME]` table",
        );
    }

    if !errors.list.is_empty() {
        return Err(finish(errors));
    }
    Ok(Config {
        global,
        admin,
        listeners,
        upstreams,
    })
}

type Named<'i> = Vec<(Spanned<std::borrow::Cow<'i, str>>, Value<'i>)>;

/// The top-level tables of the document, each read as far as it can be.
struct Tables<'i> {
    global: Option<Option<RawGlobal>>,
    admin: Option<RawAdmin>,
    listeners: Named<'i>,
    upstreams: Named<'i>,
}

impl<'i> Tables<'i> {
    fn read(errors: &mut Errors<'_>, document: &DeTable<'i>) -> Tables<'i> {
        let mut tables = Tables {
            global: None,
            admin: None,
            listeners: Vec::new(),
            upstreams: Vec::new(),
        };
        let named = |t: &DeTable<'i>| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, value) in document.iter() {
            match key.get_ref().as_ref() {
                "global" => tables.global = Some(errors.leaf::<RawGlobal>(value)),
                "admin" => tables.admin = errors.leaf::<RawAdmin>(value),
                "listeners" => {
                    if let Some(t) = errors.table(value, "`listeners`") {
                        tables.listeners = named(t);
                    }
                }
                "upstreams" => {
                    if let Some(t) = errors.table(value, "`upstreams`") {
                        tables.upstreams = named(t);
                    }
                }
                other => errors.at(
                    key.span(),
                    format!("unknown key `{other}`, expected one of `global`, `admin`, `listeners`, `upstreams`"),
                ),
            }
        }
        tables
    }
}

fn validate_global(errors: &mut Errors<'_>, raw: Option<RawGlobal>) -> Global {
    let Some(raw) = raw else {
        return Global {
            workers: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            log_format: LogFormat::Text,
            access_log: true,
            watch_config: false,
        };
    };
    Global {
        workers: errors
            .count("workers", &raw.workers, 1, 1024)
            .map(|n| n as usize),
        shutdown_timeout: errors.duration(&raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT),
        log_format: raw.log_format.unwrap_or_default(),
        access_log: raw.access_log.unwrap_or(true),
        watch_config: raw.watch_config.unwrap_or(false),
    }
}

fn validate_listener(
    errors: &mut Errors<'_>,
    name: &str,
    value: &Value<'_>,
    known: &HashSet<&str>,
    binds: &mut Vec<(SocketAddr, String)>,
) -> Option<ListenerConfig> {
    errors.table(value, &format!("listener `{name}`"))?;
    let (routes_value, tls_value) = (nested(value, "routes"), nested(value, "tls"));
    let raw: Option<RawListener> = errors.leaf(value);
    // Routes, TLS and limits are checked even when the rest of the table is not, to
    // report everything.
    let routes = routes_value.and_then(|r| validate_routes(errors, name, r, known));
    let mode = raw
        .as_ref()
        .and_then(|r| r.mode.as_ref())
        .map_or(RawMode::Http, |m| *m.get_ref());
    let tls = match tls_value {
        None => Some(None),
        Some(t) => validate_tls(errors, name, mode, t).map(Some),
    };
    let limits = match nested(value, "limits") {
        None => Some(Limits::default()),
        Some(v) => errors
            .table(v, &format!("listener `{name}`: `limits`"))
            .and_then(|_| validate_limits(errors, name, v, mode == RawMode::Http)),
    };
    let raw = raw?;
    let bind = check_bind(errors, name, &raw.bind, binds);
    let idle_timeout =
        errors.positive_duration("idle_timeout", &raw.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    let proxy_protocol = validate_proxy_protocol(errors, &raw.proxy_protocol, &raw.trusted_proxies);
    let mode_span = raw.mode.as_ref().map_or(value.span(), |m| m.span());

    let mode = match mode {
        RawMode::Tcp => {
            if let Some(r) = routes_value {
                errors.at(r.span(), format!("listener `{name}`: `routes` is only for http listeners; a tcp listener names one `upstream`"));
            }
            match &raw.upstream {
                None => {
                    errors.at(
                        mode_span,
                        format!("tcp listener `{name}` needs an `upstream`"),
                    );
                    None
                }
                Some(u) => check_reference(errors, u, known).then(|| Mode::Tcp {
                    upstream: u.get_ref().clone(),
                }),
            }
        }
        RawMode::Http => {
            if let Some(u) = &raw.upstream {
                errors.at(u.span(), format!("listener `{name}`: `upstream` is only for tcp listeners; an http listener uses `routes = [{{ upstream = \"...\" }}]`"));
            }
            if routes_value.is_none() {
                errors.at(mode_span, format!("http listener `{name}` needs `routes`"));
            }
            routes.map(|routes| Mode::Http { routes })
        }
    };
    Some(ListenerConfig {
        name: name.to_string(),
        bind: bind?,
        mode: mode?,
        idle_timeout,
        tls: tls?,
        proxy_protocol,
        limits: limits?,
    })
}

/// Parses a listener's `bind` and refuses one that another listener already takes.
fn check_bind(
    errors: &mut Errors<'_>,
    name: &str,
    raw: &Spanned<String>,
    binds: &mut Vec<(SocketAddr, String)>,
) -> Option<SocketAddr> {
    let bind = errors.addr(raw);
    // Port 0 asks the kernel for a free port each time, so it never clashes.
    if let Some(addr) = bind.filter(|a| a.port() != 0) {
        match binds.iter().find(|(taken, _)| overlaps(*taken, addr)) {
            Some((taken, other)) if *taken == addr => errors.at(
                raw.span(),
                format!("duplicate bind {addr}: already used by {other}"),
            ),
            Some((taken, other)) => errors.at(
                raw.span(),
                format!("duplicate bind {addr}: {other} binds {taken}, which takes this port on every address"),
            ),
            None => binds.push((addr, format!("listener `{name}`"))),
        }
    }
    bind
}

/// Two binds on one port clash when their addresses are equal or either is a wildcard
/// (`0.0.0.0`, `[::]`, which on Linux also takes IPv4): the second bind would fail.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn validate_routes(
    errors: &mut Errors<'_>,
    listener: &str,
    value: &Value<'_>,
    known: &HashSet<&str>,
) -> Option<Vec<RouteConfig>> {
    let DeValue::Array(items) = value.get_ref() else {
        errors.at(
            value.span(),
            format!("listener `{listener}`: `routes` must be an array of tables"),
        );
        return None;
    };
    if items.is_empty() {
        errors.at(
            value.span(),
            format!("http listener `{listener}` needs at least one route"),
        );
        return None;
    }
    let mut routes = Vec::new();
    let mut ok = true;
    for item in items.iter() {
        let Some(raw) = errors.leaf::<RawRoute>(item) else {
            ok = false;
            continue;
        };
        ok &= check_reference(errors, &raw.upstream, known);
        let rate = nested(item, "rate").map(|v| validate_rate(errors, v));
        ok &= rate.is_none_or(|r| r.is_some());
        if let Some(p) = &raw.path_prefix
            && !p.get_ref().starts_with('/')
        {
            errors.at(
                p.span(),
                format!(
                    "`path_prefix` must start with '/', found \"{}\"",
                    p.get_ref()
                ),
            );
            ok = false;
        }
        routes.push(RouteConfig {
            host: raw.host.map(|h| crate::route::normalize_host(h.get_ref())),
            path_prefix: raw.path_prefix.map(Spanned::into_inner),
            upstream: raw.upstream.into_inner(),
            rate: rate.flatten(),
        });
    }
    ok.then_some(routes)
}

fn check_reference(
    errors: &mut Errors<'_>,
    upstream: &Spanned<String>,
    known: &HashSet<&str>,
) -> bool {
    if known.contains(upstream.get_ref().as_str()) {
        return true;
    }
    let mut names: Vec<&str> = known.iter().copied().collect();
    names.sort_unstable();
    let hint = if names.is_empty() {
        "no upstreams are defined".to_string()
    } else {
        format!("defined: {}", names.join(", "))
    };
    errors.at(
        upstream.span(),
        format!("unknown upstream `{}` ({hint})", upstream.get_ref()),
    );
    false
}

fn validate_upstream(
    errors: &mut Errors<'_>,
    name: &str,
    value: &Value<'_>,
) -> Option<UpstreamConfig> {
    let table = errors.table(value, &format!("upstream `{name}`"))?;
    let nested = |key: &str| {
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v.clone())
    };
    let (servers_value, health_value) = (nested("servers"), nested("health"));
    let raw: Option<RawUpstream> = errors.leaf(value);
    let servers = match &servers_value {
        None => {
            errors.at(value.span(), format!("upstream `{name}` has no `servers`"));
            None
        }
        Some(v) => validate_servers(errors, name, v),
    };
    let health = match &health_value {
        None => Some(None),
        Some(v) => validate_health(errors, v).map(Some),
    };
    let raw = raw?;
    Some(UpstreamConfig {
        name: name.to_string(),
        balance: raw.balance.unwrap_or(Balance::RoundRobin),
        connect_timeout: errors.positive_duration(
            "connect_timeout",
            &raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: errors.positive_duration(
            "response_timeout",
            &raw.response_timeout,
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        send_proxy_protocol: raw.send_proxy_protocol,
        limit: validate_limit(errors, &raw),
        servers: servers?,
        health: health?,
    })
}

/// `max_connections_per_server` and `queue_timeout`, which means nothing without it.
fn validate_limit(errors: &mut Errors<'_>, raw: &RawUpstream) -> Option<ServerLimit> {
    let max = &raw.max_connections_per_server;
    let queue_timeout =
        errors.positive_duration("queue_timeout", &raw.queue_timeout, DEFAULT_QUEUE_TIMEOUT);
    if let (None, Some(t)) = (max, &raw.queue_timeout) {
        errors.at(
            t.span(),
            "`queue_timeout` needs `max_connections_per_server`: without a limit nothing queues",
        );
    }
    let max = errors.count(
        "max_connections_per_server",
        max,
        1,
        MAX_CONNECTIONS_PER_SERVER,
    )?;
    Some(ServerLimit {
        max: max as usize,
        queue_timeout,
    })
}

fn validate_servers(
    errors: &mut Errors<'_>,
    upstream: &str,
    value: &Value<'_>,
) -> Option<Vec<ServerConfig>> {
    let DeValue::Array(items) = value.get_ref() else {
        errors.at(
            value.span(),
            format!("upstream `{upstream}`: `servers` must be an array"),
        );
        return None;
    };
    if items.is_empty() {
        errors.at(
            value.span(),
            format!("upstream `{upstream}` has no servers"),
        );
        return None;
    }
    let mut servers: Vec<ServerConfig> = Vec::new();
    let mut ok = true;
    for item in items.iter() {
        let (addr, weight) = match item.get_ref() {
            DeValue::String(s) => (Spanned::new(item.span(), s.to_string()), None),
            DeValue::Table(_) => match errors.leaf::<RawServer>(item) {
                Some(raw) => (raw.addr, raw.weight),
                None => {
                    ok = false;
                    continue;
                }
            },
            other => {
                errors.at(
                    item.span(),
                    format!(
                        "a server is \"IP:PORT\" or {{ addr = \"IP:PORT\", weight = N }}, found {}",
                        other.type_str()
                    ),
                );
                ok = false;
                continue;
            }
        };
        let weight = match &weight {
            None => Some(1),
            Some(_) => errors
                .count("weight", &weight, 1, MAX_WEIGHT as i64)
                .map(|w| w as u32),
        };
        let Some(parsed) = errors.addr(&addr) else {
            ok = false;
            continue;
        };
        if servers.iter().any(|s| s.addr == parsed) {
            errors.at(
                addr.span(),
                format!("duplicate server {parsed} in upstream `{upstream}`"),
            );
            ok = false;
        }
        match weight {
            Some(weight) => servers.push(ServerConfig {
                addr: parsed,
                weight,
            }),
            None => ok = false,
        }
    }
    ok.then_some(servers)
}
