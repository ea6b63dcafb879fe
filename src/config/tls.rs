//! `[listeners.NAME.tls]`: the certificate files read and checked (each key against its
//! certificate, the names from its SANs), `client_ca` turned into a verifier, and every
//! problem reported at the key that names the file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{Error as TlsError, InconsistentKeys, RootCertStore};
use toml::Spanned;

use super::collect::{Errors, Value};
use super::raw::{RawCertificate, RawMode, RawTls};
use super::types::{Certificate, ClientCa, DEFAULT_HANDSHAKE_TIMEOUT, TlsConfig};

/// What an http listener may offer in ALPN until HTTP/2 is served (issue 10's next step
/// adds `h2` and makes it the default).
const HTTP_ALPN: &str = "http/1.1";

/// The one crypto provider, named rather than taken from the process default, so that
/// a dependency enabling another provider cannot change it. ring: it builds with a C
/// compiler alone, where aws-lc-rs needs cmake or clang on some targets
/// (`docs/design/tls.md`).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Validates a listener's `tls` table; relative paths are relative to the directory of
/// the configuration file (`errors.origin`).
pub(super) fn validate_tls(
    errors: &mut Errors<'_>,
    listener: &str,
    mode: RawMode,
    value: &Value<'_>,
) -> Option<TlsConfig> {
    // Read as far as it goes: a bad `min_version` still lets the files be checked.
    let (raw, complete) = errors.partial::<RawTls>(value)?;
    let base = Path::new(errors.origin)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let certificates = match &raw.certificates {
        Some(list) if !list.get_ref().is_empty() => {
            // Every entry is loaded before any failure counts, so each reports.
            let loaded: Vec<Option<Certificate>> = list
                .get_ref()
                .iter()
                .map(|c| load_certificate(errors, &base, c))
                .collect();
            loaded.into_iter().collect::<Option<Vec<_>>>()
        }
        Some(list) => {
            errors.at(list.span(), format!("listener `{listener}`: `certificates` is empty; give at least one {{ cert = \"...\", key = \"...\" }}"));
            None
        }
        None => {
            errors.at(value.span(), format!("listener `{listener}`: `tls` needs `certificates = [{{ cert = \"...\", key = \"...\" }}]`"));
            None
        }
    };
    let alpn = validate_alpn(errors, mode, raw.alpn.as_deref());
    let client_ca = match &raw.client_ca {
        None => Some(None),
        Some(path) => load_client_ca(errors, &base, path).map(Some),
    };
    let handshake_timeout = errors.positive_duration(
        "handshake_timeout",
        &raw.handshake_timeout,
        DEFAULT_HANDSHAKE_TIMEOUT,
    );
    if !complete {
        return None;
    }
    Some(TlsConfig {
        certificates: certificates?,
        min_version: raw.min_version.unwrap_or_default(),
        alpn: alpn?,
        client_ca: client_ca?,
        handshake_timeout,
    })
}

/// The ALPN list: by default `http/1.1` for http listeners and none for tcp ones.
fn validate_alpn(
    errors: &mut Errors<'_>,
    mode: RawMode,
    alpn: Option<&[Spanned<String>]>,
) -> Option<Vec<String>> {
    let Some(alpn) = alpn else {
        return Some(match mode {
            RawMode::Http => vec![HTTP_ALPN.to_string()],
            RawMode::Tcp => Vec::new(),
        });
    };
    let mut ok = true;
    for protocol in alpn {
        let name = protocol.get_ref();
        if name.is_empty() || name.len() > 255 {
            errors.at(protocol.span(), "an ALPN protocol name is 1 to 255 bytes");
            ok = false;
        } else if mode == RawMode::Http && name != HTTP_ALPN {
            errors.at(protocol.span(), format!("http listeners offer only \"{HTTP_ALPN}\" in `alpn` for now (\"h2\" comes with HTTP/2), found \"{name}\""));
            ok = false;
        }
    }
    ok.then(|| alpn.iter().map(|p| p.get_ref().clone()).collect())
}

/// Reads the file a key names; an error names the key's position and the path.
fn read(errors: &mut Errors<'_>, base: &Path, key: &Spanned<String>) -> Option<(PathBuf, Vec<u8>)> {
    let path = base.join(key.get_ref());
    match std::fs::read(&path) {
        Ok(bytes) => Some((path, bytes)),
        Err(e) => {
            errors.at(key.span(), format!("cannot read `{}`: {e}", path.display()));
            None
        }
    }
}

fn load_certificate(
    errors: &mut Errors<'_>,
    base: &Path,
    raw: &RawCertificate,
) -> Option<Certificate> {
    let chain = read(errors, base, &raw.cert).and_then(|(path, pem)| {
        let chain = certificates_in(errors, &raw.cert, &path, &pem)?;
        let names = names_of(errors, &raw.cert, &path, &chain[0])?;
        Some((path, chain, names))
    });
    let key = read(errors, base, &raw.key).and_then(|(path, pem)| {
        match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(key) => Some(key),
            Err(e) => {
                errors.at(
                    raw.key.span(),
                    format!(
                        "no private key in `{}` (a PEM PKCS#8, RSA or EC key): {e}",
                        path.display()
                    ),
                );
                None
            }
        }
    });
    let ((path, chain, names), key) = (chain?, key?);
    let key_der: Arc<[u8]> = Arc::from(key.secret_der());
    match CertifiedKey::from_der(chain, key, &crypto_provider()) {
        Ok(key) => Some(Certificate {
            path,
            names,
            key: Arc::new(key),
            key_der,
        }),
        Err(TlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            errors.at(
                raw.key.span(),
                format!(
                    "`{}` is not the key of the certificate in `{}`",
                    raw.key.get_ref(),
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            errors.at(
                raw.key.span(),
                format!("cannot use the key `{}`: {e}", raw.key.get_ref()),
            );
            None
        }
    }
}

/// The certificates of a PEM file, in order; none is an error.
fn certificates_in(
    errors: &mut Errors<'_>,
    key: &Spanned<String>,
    path: &Path,
    pem: &[u8],
) -> Option<Vec<CertificateDer<'static>>> {
    match CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>() {
        Ok(chain) if !chain.is_empty() => Some(chain),
        Ok(_) => {
            errors.at(
                key.span(),
                format!(
                    "no certificate in `{}` (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
                    path.display()
                ),
            );
            None
        }
        Err(e) => {
            errors.at(key.span(), format!("bad PEM in `{}`: {e}", path.display()));
            None
        }
    }
}

/// The DNS names of a certificate's SANs, lowercase.
fn names_of(
    errors: &mut Errors<'_>,
    key: &Spanned<String>,
    path: &Path,
    cert: &CertificateDer<'_>,
) -> Option<Vec<String>> {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(parsed) => Some(
            parsed
                .valid_dns_names()
                .map(crate::route::normalize_name)
                .collect(),
        ),
        Err(e) => {
            errors.at(
                key.span(),
                format!(
                    "the first certificate in `{}` cannot be parsed: {e}",
                    path.display()
                ),
            );
            None
        }
    }
}

fn load_client_ca(errors: &mut Errors<'_>, base: &Path, key: &Spanned<String>) -> Option<ClientCa> {
    let (path, pem) = read(errors, base, key)?;
    let certs = certificates_in(errors, key, &path, &pem)?;
    let mut roots = RootCertStore::empty();
    let (_, unusable) = roots.add_parsable_certificates(certs.iter().cloned());
    if unusable > 0 {
        errors.at(
            key.span(),
            format!(
                "{unusable} certificate(s) in `{}` cannot be used as a CA",
                path.display()
            ),
        );
        return None;
    }
    match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider()).build() {
        Ok(verifier) => Some(ClientCa {
            path,
            certs,
            verifier,
        }),
        Err(e) => {
            errors.at(
                key.span(),
                format!("cannot verify clients with `{}`: {e}", path.display()),
            );
            None
        }
    }
}
