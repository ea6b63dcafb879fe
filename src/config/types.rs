//! The validated configuration: every address parsed, every duration converted, every
//! upstream reference resolved; and the errors that name `file:line:col`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

pub use super::cidr::Cidr;
pub use super::raw::{Balance, LogFormat, ProxyVersion, TlsVersion};

/// A validated configuration: every address parsed, every duration converted, every
/// upstream reference resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub admin: Option<Admin>,
    /// In file order; names are unique.
    pub listeners: Vec<ListenerConfig>,
    /// In file order; names are unique.
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    pub access_log: bool,
    pub watch_config: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub mode: Mode,
    /// How long a tcp session or an upgraded tunnel may stay silent in both directions.
    pub idle_timeout: Duration,
    /// Set when the listener terminates TLS (`[listeners.NAME.tls]`).
    pub tls: Option<TlsConfig>,
    /// `proxy_protocol = true`: every connection starts with a PROXY header.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `[listeners.NAME.limits]`, defaults filled in.
    pub limits: Limits,
}

/// What a listener that receives PROXY headers accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyProtocol {
    /// The sources allowed to send a header (`trusted_proxies`); `None`: any source.
    pub trusted: Option<Vec<Cidr>>,
}

impl ProxyProtocol {
    pub fn trusts(&self, source: std::net::IpAddr) -> bool {
        self.trusted
            .as_ref()
            .is_none_or(|list| list.iter().any(|net| net.contains(source)))
    }
}

/// What one client may take of a listener (`[listeners.NAME.limits]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open client connections; beyond it accepting pauses. `None`: the file limit.
    pub max_connections: Option<usize>,
    /// A request head not complete in this time gets 408 (http).
    pub header_timeout: Duration,
    /// An idle keep-alive client connection is closed after this (http).
    pub keepalive_timeout: Duration,
    /// Request line and headers, in bytes: 431 beyond, 414 for the request line alone.
    pub max_header_size: usize,
    /// Request body in bytes: 413 beyond. `None`: bodies stream without a bound.
    pub max_body_size: Option<u64>,
    /// Open connections per client IP: http 429 and close, tcp close.
    pub max_connections_per_client: Option<u32>,
    /// Requests per client IP (http): 429 with `Retry-After` beyond.
    pub rate: Option<Rate>,
}

/// A rate bucket's quota: `requests` per `per`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_body_size: None,
            max_connections_per_client: None,
            rate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Tcp { upstream: String },
    Http { routes: Vec<RouteConfig> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Lowercase, without a port.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: String,
    /// Applies instead of the listener's `rate` to the requests of this route.
    pub rate: Option<Rate>,
}

/// A listener that terminates TLS, its files loaded and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// In file order; the first is the one served without SNI or without a match.
    pub certificates: Vec<Certificate>,
    pub min_version: TlsVersion,
    /// Offered in this order; empty offers nothing.
    pub alpn: Vec<String>,
    /// When set, a client must present a certificate signed by it.
    pub client_ca: Option<ClientCa>,
    pub handshake_timeout: Duration,
}

/// One PEM chain and its private key, loaded. Equal when the chain and the key bytes
/// are, so a reload can tell which listeners' certificates changed.
#[derive(Clone)]
pub struct Certificate {
    /// The `cert` file, resolved against the configuration file's directory.
    pub path: PathBuf,
    /// The DNS names of its SANs, lowercase; a wildcard is kept as `*.example.test`.
    pub names: Vec<String>,
    pub key: Arc<CertifiedKey>,
    /// The private key's DER, compared and never printed.
    pub(super) key_der: Arc<[u8]>,
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Certificate) -> bool {
        self.key.cert == other.key.cert && self.key_der == other.key_der
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("path", &self.path)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// The CA that client certificates must chain to (mTLS).
#[derive(Clone)]
pub struct ClientCa {
    pub path: PathBuf,
    /// The CA certificates; also what tells one client-auth policy from another.
    pub certs: Vec<CertificateDer<'static>>,
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl PartialEq for ClientCa {
    fn eq(&self, other: &ClientCa) -> bool {
        self.certs == other.certs
    }
}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCa")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: Balance,
    pub servers: Vec<ServerConfig>,
    pub health: Option<Health>,
    pub connect_timeout: Duration,
    /// From the request sent in full to the response head received (while a body is on
    /// its way, from its last progress); past it the client gets 504.
    pub response_timeout: Duration,
    /// `send_proxy_protocol`: each server connection starts with the client's PROXY
    /// header (in http mode it then serves that client connection only).
    pub send_proxy_protocol: Option<ProxyVersion>,
    /// `max_connections_per_server` and `queue_timeout`; `None`: no limit.
    pub limit: Option<ServerLimit>,
}

/// At most `max` requests, sessions and tunnels open on each server of an upstream;
/// beyond that they wait in the upstream's queue, each at most `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimit {
    pub max: usize,
    pub queue_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: Check,
    pub interval: Duration,
    /// Bounds the whole probe: connect, greeting, reply.
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Tcp,
    Http {
        path: String,
    },
    Mysql {
        user: String,
        /// The name of the environment variable holding the password, never the password.
        password_env: Option<String>,
        max_replication_lag: Option<Duration>,
    },
}

pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Like nginx's `proxy_timeout` for streams.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// HAProxy's usual `timeout connect`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// nginx's `proxy_read_timeout`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// HAProxy's `inter`, `rise` and `fall` defaults.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// The check timeout when none is given, or the interval if that is shorter.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const MAX_WEIGHT: u32 = 1000;
/// nginx's `ssl_handshake_timeout` and HAProxy's usual `timeout client-hs`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HAProxy's `timeout queue` falls back to `timeout connect` (5 s here as there): a
/// client that waited longer is better told 503 than kept on.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest `max_connections_per_server`: far above what one server takes, low
/// enough to catch a typo.
pub const MAX_CONNECTIONS_PER_SERVER: i64 = 1_000_000;
/// Shorter than nginx's `client_header_timeout` (60 s): a real client sends its head in
/// one packet, and each second a slowloris connection is held costs a socket.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// nginx's `keepalive_timeout`.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// HAProxy's `tune.bufsize` (16 KiB, the whole head must fit); nginx allows 4 x 8 KiB.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Tcp { .. } => "tcp",
            Mode::Http { .. } => "http",
        }
    }
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self {
            Check::Tcp => "tcp",
            Check::Http { .. } => "http",
            Check::Mysql { .. } => "mysql",
        }
    }
}

/// One problem in a configuration file, printed as `lb.toml:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    /// 1-based line and column; `None` when the file could not be read at all.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

/// Every problem found in one file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
