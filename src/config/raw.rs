//! The serde layer: one struct per leaf table with `deny_unknown_fields`, and the
//! enums whose names the file spells.

use serde::Deserialize;
use serde::de::IgnoredAny;
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastConn,
}

impl Balance {
    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
        }
    }
}

/// The PROXY protocol version an upstream's server connections start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawMode {
    Http,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawCheck {
    Tcp,
    Http,
    Mysql,
}

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub(super) workers: Option<Spanned<i64>>,
    pub(super) shutdown_timeout: Option<Spanned<String>>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) access_log: Option<bool>,
    pub(super) watch_config: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) bind: Spanned<String>,
}

/// A listener; its `routes` and `tls` are walked on their own, so serde only lets them
/// pass.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) bind: Spanned<String>,
    #[serde(rename = "routes")]
    pub(super) _routes: Option<IgnoredAny>,
    #[serde(rename = "tls")]
    pub(super) _tls: Option<IgnoredAny>,
    pub(super) mode: Option<Spanned<RawMode>>,
    pub(super) upstream: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
    pub(super) trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(rename = "limits")]
    pub(super) _limits: Option<IgnoredAny>,
}

/// `[listeners.NAME.limits]`; its `rate` is read on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) header_timeout: Option<Spanned<String>>,
    pub(super) keepalive_timeout: Option<Spanned<String>>,
    pub(super) max_header_size: Option<Spanned<String>>,
    pub(super) max_body_size: Option<Spanned<String>>,
    pub(super) max_connections_per_client: Option<Spanned<i64>>,
    #[serde(rename = "rate")]
    pub(super) _rate: Option<IgnoredAny>,
}

/// `rate = { requests = N, per = "1s", burst = M }`, of a listener or a route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    pub(super) requests: Spanned<i64>,
    pub(super) per: Option<Spanned<String>>,
    pub(super) burst: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) host: Option<Spanned<String>>,
    pub(super) path_prefix: Option<Spanned<String>>,
    pub(super) upstream: Spanned<String>,
    #[serde(rename = "rate")]
    pub(super) _rate: Option<IgnoredAny>,
}

/// `[listeners.NAME.tls]`; files are read in validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) certificates: Option<Spanned<Vec<RawCertificate>>>,
    pub(super) min_version: Option<TlsVersion>,
    pub(super) alpn: Option<Vec<Spanned<String>>>,
    pub(super) client_ca: Option<Spanned<String>>,
    pub(super) handshake_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
}

/// An upstream; its `servers` and `health` are walked on their own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    #[serde(rename = "servers")]
    pub(super) _servers: Option<IgnoredAny>,
    #[serde(rename = "health")]
    pub(super) _health: Option<IgnoredAny>,
    pub(super) balance: Option<Balance>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) response_timeout: Option<Spanned<String>>,
    pub(super) send_proxy_protocol: Option<ProxyVersion>,
    pub(super) max_connections_per_server: Option<Spanned<i64>>,
    pub(super) queue_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) addr: Spanned<String>,
    pub(super) weight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    /// Optional here so that a bad `check` does not hide the other keys' problems;
    /// its absence is reported in validation.
    pub(super) check: Option<Spanned<RawCheck>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password_env: Option<Spanned<String>>,
    pub(super) max_replication_lag: Option<Spanned<String>>,
}
