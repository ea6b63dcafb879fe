//! TLS termination: a listener's rustls `ServerConfig` built from its validated `[tls]`
//! table, the certificate chosen by SNI (`resolve`), and the session stores that
//! outlive reloads (`sessions`). The handshake itself runs in `listener/`.

mod resolve;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::version::{TLS12, TLS13};
use tokio_rustls::TlsAcceptor;

use crate::config::{TlsConfig, TlsVersion, crypto_provider};
pub use resolve::ByName;
pub use sessions::Sessions;

/// What a listener that terminates TLS does with a new connection, in one snapshot:
/// open connections keep the `ServerConfig` they were accepted with.
#[derive(Clone)]
pub struct Termination {
    pub acceptor: TlsAcceptor,
    /// A client that has not finished its handshake by then is closed.
    pub handshake_timeout: Duration,
}

impl Termination {
    pub fn new(tls: &TlsConfig, sessions: &Sessions) -> Termination {
        Termination {
            acceptor: TlsAcceptor::from(server_config(tls, sessions)),
            handshake_timeout: tls.handshake_timeout,
        }
    }
}

/// The rustls configuration of one listener; session stores come from `sessions`, by
/// the listener's client-auth policy.
pub fn server_config(tls: &TlsConfig, sessions: &Sessions) -> Arc<ServerConfig> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&TLS13, &TLS12],
        TlsVersion::Tls13 => &[&TLS13],
    };
    let builder = ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(versions)
        .expect("ring has cipher suites for TLS 1.2 and 1.3");
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(ca.verifier.clone()),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByName::new(&tls.certificates)));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let store = sessions.store(tls.client_ca.as_ref());
    config.session_storage = store.cache;
    if let Some(ticketer) = store.ticketer {
        config.ticketer = ticketer;
    }
    Arc::new(config)
}
