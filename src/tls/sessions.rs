//! Session resumption state that outlives reloads: per client-auth policy, a rotating
//! ticketer and a server-side session cache, never shared between policies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

use crate::config::ClientCa;

/// Sessions kept for clients that resume by session ID (TLS 1.2 without tickets); about
/// what nginx's `ssl_session_cache shared:SSL:1m` holds (~4000).
const CACHED_SESSIONS: usize = 4096;

/// A client-auth policy: no client certificate asked (`None`), or the DER of the one
/// `client_ca` they must chain to. A session made under one policy must never resume
/// under another: a ticket issued where no client certificate was asked would let a
/// client into an mTLS listener without one.
type Policy = Option<Vec<Vec<u8>>>;

/// The session stores by policy, kept across reloads so that a reload does not send
/// every returning client into a full handshake. Locked only when a snapshot is built.
#[derive(Default)]
pub struct Sessions {
    stores: Mutex<HashMap<Policy, Store>>,
}

/// What one policy's listeners resume from.
#[derive(Clone)]
pub struct Store {
    pub cache: Arc<dyn StoresServerSessions>,
    /// rustls's `Ticketer`: keys rotated every 6 hours, tickets valid 12. `None` when
    /// the system's random source failed; then only session IDs resume.
    pub ticketer: Option<Arc<dyn ProducesTickets>>,
}

fn policy(client_ca: Option<&ClientCa>) -> Policy {
    client_ca.map(|ca| ca.certs.iter().map(|c| c.to_vec()).collect())
}

impl Sessions {
    /// The store for listeners with this `client_ca`, made on first use.
    pub fn store(&self, client_ca: Option<&ClientCa>) -> Store {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry(policy(client_ca))
            .or_insert_with(|| Store {
                cache: ServerSessionMemoryCache::new(CACHED_SESSIONS),
                ticketer: rustls::crypto::ring::Ticketer::new()
                    .inspect_err(|e| tracing::error!(error = %e, "no session tickets"))
                    .ok(),
            })
            .clone()
    }

    /// Keeps the stores of the policies `in_use` (one entry per TLS listener), drops
    /// the rest.
    pub fn retain<'a>(&self, in_use: impl IntoIterator<Item = Option<&'a ClientCa>>) {
        let used: Vec<Policy> = in_use.into_iter().map(policy).collect();
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.retain(|p, _| used.contains(p));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stores.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::server::WebPkiClientVerifier;
    use rustls::{RootCertStore, pki_types::CertificateDer};

    use super::*;
    use crate::config::crypto_provider;

    fn client_ca() -> ClientCa {
        let made = rcgen::generate_simple_self_signed(vec!["ca.example.test".into()]).unwrap();
        let cert: CertificateDer<'static> = made.cert.der().clone();
        let mut roots = RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .unwrap();
        ClientCa {
            path: "clients.pem".into(),
            certs: vec![cert],
            verifier,
        }
    }

    #[test]
    fn one_store_per_client_auth_policy_kept_while_a_listener_uses_it() {
        let sessions = Sessions::default();
        let (ca, other) = (client_ca(), client_ca());
        let open = sessions.store(None);
        assert!(Arc::ptr_eq(&open.cache, &sessions.store(None).cache));
        let mtls = sessions.store(Some(&ca));
        assert!(Arc::ptr_eq(
            &mtls.cache,
            &sessions.store(Some(&ca.clone())).cache
        ));
        assert!(!Arc::ptr_eq(&open.cache, &mtls.cache));
        let stranger = sessions.store(Some(&other));
        assert!(!Arc::ptr_eq(&mtls.cache, &stranger.cache));
        assert!(open.ticketer.is_some());
        assert_eq!(sessions.len(), 3);
        // A reload that keeps the open and one mTLS listener drops the third store only.
        sessions.retain([None, Some(&ca), Some(&ca)]);
        assert_eq!(sessions.len(), 2);
        assert!(Arc::ptr_eq(&mtls.cache, &sessions.store(Some(&ca)).cache));
    }
}
