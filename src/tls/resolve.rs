//! The certificate for a handshake, chosen by the client's SNI: an exact SAN first, then
//! a one-label wildcard SAN, else the listener's first certificate.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Certificate;
use crate::route::{normalize_name, wildcard_suffix};

/// A listener's certificates by name. When two certificates carry one name, the first
/// in the file wins, as the first is also the default.
#[derive(Debug)]
pub struct ByName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by what follows `*.`: `*.b.example.test` is under `b.example.test`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    first: Option<Arc<CertifiedKey>>,
}

impl ByName {
    pub fn new(certificates: &[Certificate]) -> ByName {
        let mut by_name = ByName {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            first: certificates.first().map(|c| c.key.clone()),
        };
        for certificate in certificates {
            for name in &certificate.names {
                let (map, name) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut by_name.wildcard, suffix),
                    None => (&mut by_name.exact, name.as_str()),
                };
                map.entry(name.to_string())
                    .or_insert_with(|| certificate.key.clone());
            }
        }
        by_name
    }

    /// The certificate for `sni`; `None` only for a listener without certificates,
    /// which validation does not let through.
    pub fn find(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = sni.and_then(|sni| {
            let name = normalize_name(sni);
            self.exact
                .get(&name)
                .or_else(|| wildcard_suffix(&name).and_then(|suffix| self.wildcard.get(suffix)))
        });
        found.or(self.first.as_ref()).cloned()
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name())
    }
}
