//! TLS for tests: a CA and the certificates it signs (rcgen), rustls clients that trust
//! it (or anything, to see which certificate they were shown), and HTTP/1.1 over them.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls::{SupportedProtocolVersion, version};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::rlb::TempDir;

/// A certificate authority made for one test.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

/// A certificate signed by a test CA, with its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (SANs; wildcards allowed).
    pub fn server(&self, names: &[&str]) -> Leaf {
        self.sign(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate, for mTLS.
    pub fn client(&self, name: &str) -> Leaf {
        self.sign(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn sign(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns its path.
    pub fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        dir.file(name, &self.pem)
    }
}

impl Leaf {
    /// Writes `stem.pem` (the certificate) and `stem.key` into `dir`: their paths.
    pub fn write(&self, dir: &TempDir, stem: &str) -> (PathBuf, PathBuf) {
        (
            dir.file(&format!("{stem}.pem"), &self.cert_pem),
            dir.file(&format!("{stem}.key"), &self.key_pem),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub const TLS12_ONLY: &[&SupportedProtocolVersion] = &[&version::TLS12];
pub const TLS13_ONLY: &[&SupportedProtocolVersion] = &[&version::TLS13];
pub const ANY_VERSION: &[&SupportedProtocolVersion] = &[&version::TLS13, &version::TLS12];

/// A client of `versions` that trusts `ca` (or, with `None`, any certificate) and
/// presents `cert` when given; it offers ALPN `http/1.1`.
pub fn client_with(
    ca: Option<&Ca>,
    versions: &[&'static SupportedProtocolVersion],
    cert: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions");
    let builder = match ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der.clone()).expect("CA into the roots");
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider()))),
    };
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let key = PrivateKeyDer::try_from(leaf.key_der.clone()).expect("client key");
            builder
                .with_client_auth_cert(vec![leaf.der.clone()], key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client that trusts `ca`, any TLS version, no client certificate.
pub fn trusting(ca: &Ca) -> Arc<ClientConfig> {
    client_with(Some(ca), ANY_VERSION, None)
}

/// A client that accepts any certificate: to see which one rlb chose.
pub fn any_certificate() -> Arc<ClientConfig> {
    client_with(None, ANY_VERSION, None)
}

/// Connects and completes the handshake with `sni` (an IP address sends no SNI).
pub async fn connect(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_string()).expect("a server name");
    let handshake = async {
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "handshake")))
}

/// The end-entity certificate the server presented.
pub fn peer_certificate(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a peer certificate")[0]
        .clone()
}

/// An HTTP/1.1 client connection over `stream`, for several requests.
pub async fn http1(stream: TlsStream<TcpStream>) -> SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http1 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET path` with `Host: host` on an open connection: status and body, or why not.
pub async fn get_on(
    sender: &mut SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .expect("request");
    let exchange = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in 10 s".to_string()))
}

/// Connects with `config` and sends one `GET /`: its status and body, or why not.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> Result<(u16, String), String> {
    let stream = connect(addr, sni, config)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    get_on(&mut http1(stream).await, sni, "/").await
}

/// Accepts any server certificate; signatures are still checked.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
