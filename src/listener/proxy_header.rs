//! The PROXY header a listener with `proxy_protocol` reads first on each connection: the
//! source checked against `trusted_proxies`, then exactly the header's bytes read (no
//! more: in tcp mode the rest of the stream is spliced from the socket), then the client
//! address taken from it.
//!
//! Framing is ours, parsing is `ppp`'s. `ppp` parses a complete header from a buffer but
//! does not read a socket; reading from one without taking a byte too many needs the
//! length first: v2 says it in its 16-byte fixed part, v1 ends at the first CRLF within
//! 107 bytes. So the bytes are peeked (MSG_PEEK) until the length is known, then exactly
//! that many are read.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};
use ppp::v1;
use ppp::v2;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;

/// How long a connection may take to send its header; as the contract's default
/// `header_timeout` for a request head (nginx's `proxy_protocol_timeout` is 30 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest v1 header, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;

/// The v2 fixed part: 12 signature bytes, version and command, family and protocol, and
/// the length of the rest.
const V2_FIXED: usize = 16;

/// The longest v2 header accepted. Addresses take 216 bytes at most (two UNIX paths);
/// the rest is TLVs, which senders keep small (AWS adds a VPC endpoint id, HAProxy the
/// TLS details, both well under 1 KiB). A longer one is closed rather than buffered.
pub const V2_MAX: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Why a connection was closed before it was served.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("source {0} is not in trusted_proxies")]
    Untrusted(std::net::IpAddr),
    #[error("no PROXY header")]
    Missing,
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("the connection closed inside the PROXY header")]
    Truncated,
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("rlb is shutting down")]
    ShuttingDown,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// What the bytes seen so far say about the header.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// The header is this many bytes.
    Length(usize),
    /// Too few bytes to tell.
    More,
}

/// Where the header ends, from its first bytes; an error when they cannot start one.
pub fn frame(bytes: &[u8]) -> Result<Framing, HeaderError> {
    let n = bytes.len();
    if bytes[..n.min(12)] == v2::PROTOCOL_PREFIX[..n.min(12)] {
        if n < V2_FIXED {
            return Ok(Framing::More);
        }
        let length = V2_FIXED + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        if length > V2_MAX {
            return Err(HeaderError::TooLong(V2_MAX));
        }
        return Ok(Framing::Length(length));
    }
    if bytes[..n.min(V1_PREFIX.len())] != V1_PREFIX[..n.min(V1_PREFIX.len())] {
        return Err(HeaderError::Missing);
    }
    let seen = &bytes[..n.min(V1_MAX)];
    match seen.windows(2).position(|w| w == b"\r\n") {
        Some(at) => Ok(Framing::Length(at + 2)),
        None if n >= V1_MAX => Err(HeaderError::TooLong(V1_MAX)),
        None => Ok(Framing::More),
    }
}

/// The client address a complete header gives: `None` when it carries none to use (v1
/// `UNKNOWN`, v2 `LOCAL` or a family other than IPv4/IPv6), so the socket's own peer
/// stands. Unknown v2 TLVs are ignored.
pub fn parse(header: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let malformed = |e: &dyn std::fmt::Display| HeaderError::Malformed(e.to_string());
    if header.starts_with(v2::PROTOCOL_PREFIX) {
        let parsed = v2::Header::try_from(header).map_err(|e| malformed(&e))?;
        if parsed.command == v2::Command::Local {
            return Ok(None);
        }
        return Ok(match parsed.addresses {
            v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
        });
    }
    let parsed = v1::Header::try_from(header).map_err(|e| malformed(&e))?;
    if parsed.header.len() != header.len() {
        return Err(HeaderError::Malformed("bytes after the CRLF".into()));
    }
    Ok(match parsed.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    })
}

/// Checks the source and reads the header off `stream`: the client address to use from
/// now on (the header's, or `peer` when it carries none).
pub async fn receive(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &ProxyProtocol,
) -> Result<SocketAddr, HeaderError> {
    if !settings.trusts(peer.ip()) {
        return Err(HeaderError::Untrusted(peer.ip()));
    }
    let read = async {
        let length = peek_length(stream).await?;
        let mut header = vec![0; length];
        stream.read_exact(&mut header).await?;
        parse(&header)
    };
    match tokio::time::timeout(HEADER_TIMEOUT, read).await {
        Ok(client) => Ok(client?.unwrap_or(peer)),
        Err(_) => Err(HeaderError::Timeout(HEADER_TIMEOUT)),
    }
}

/// Peeks at the socket until the header's length is known, waiting for more bytes
/// between peeks.
///
/// A peek leaves the bytes queued, so the socket stays readable; to wait for *new*
/// bytes the peek reports `WouldBlock` to tokio, which clears the readiness until the
/// next arrival (epoll is edge-triggered: each arrival is an edge). A FIN stays ready,
/// so it is checked after each peek.
async fn peek_length(stream: &TcpStream) -> Result<usize, HeaderError> {
    let mut buf = [0u8; V1_MAX];
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        let peeked = stream.try_io(Interest::READABLE, || {
            let n =
                recv(stream.as_raw_fd(), &mut buf, MsgFlags::MSG_PEEK).map_err(io::Error::from)?;
            match frame(&buf[..n]) {
                _ if n == 0 => Ok(Err(HeaderError::Truncated)),
                Ok(Framing::More) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(Framing::Length(length)) => Ok(Ok(length)),
                Err(e) => Ok(Err(e)),
            }
        });
        match peeked {
            Ok(framed) => return framed,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if ready.is_read_closed() {
                    return Err(HeaderError::Truncated);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyVersion;
    use crate::connect::proxy_header;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A v2 header for 192.0.2.7:5555 -> 127.0.0.1:80 with `tlvs` appended.
    fn v2_with(command: u8, tlvs: &[u8]) -> Vec<u8> {
        let mut header = v2::PROTOCOL_PREFIX.to_vec();
        header.extend([command, 0x11]);
        header.extend(((12 + tlvs.len()) as u16).to_be_bytes());
        header.extend([192, 0, 2, 7, 127, 0, 0, 1, 0x15, 0xb3, 0, 80]);
        header.extend(tlvs);
        header
    }

    #[test]
    fn frames_v1_and_v2_from_their_first_bytes() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\nGET /";
        assert_eq!(frame(&v1[..3]).unwrap(), Framing::More);
        assert_eq!(frame(&v1[..20]).unwrap(), Framing::More);
        assert_eq!(frame(v1).unwrap(), Framing::Length(40));
        assert_eq!(frame(b"PROXY UNKNOWN\r\n").unwrap(), Framing::Length(15));
        let long = [b"PROXY ".as_slice(), &[b'1'; 101]].concat();
        assert!(matches!(frame(&long), Err(HeaderError::TooLong(107))));
        assert!(matches!(
            frame(b"GET / HTTP/1.1\r\n"),
            Err(HeaderError::Missing)
        ));
        assert!(matches!(frame(b"\x16\x03\x01"), Err(HeaderError::Missing)));
        let v2 = v2_with(0x21, &[]);
        assert_eq!(frame(&v2[..15]).unwrap(), Framing::More);
        assert_eq!(frame(&v2[..16]).unwrap(), Framing::Length(28));
        let mut huge = v2.clone();
        huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert!(matches!(
            frame(&huge[..16]),
            Err(HeaderError::TooLong(V2_MAX))
        ));
    }

    #[test]
    fn parses_the_client_address_or_none() {
        let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n";
        assert_eq!(parse(v1).unwrap(), Some(addr("192.0.2.7:5555")));
        let v6 = b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n";
        assert_eq!(parse(v6).unwrap(), Some(addr("[2001:db8::7]:5555")));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), None);
        // Unknown TLVs (type 0xE0, 3 bytes; a NOOP) are ignored.
        let tlvs = [0xE0, 0, 3, 1, 2, 3, 0x04, 0, 1, 0];
        assert_eq!(
            parse(&v2_with(0x21, &tlvs)).unwrap(),
            Some(addr("192.0.2.7:5555"))
        );
        assert_eq!(parse(&v2_with(0x20, &[])).unwrap(), None, "LOCAL");
        for bad in [
            b"PROXY TCP4 192.0.2.999 127.0.0.1 5555 80\r\n".as_slice(),
            b"PROXY TCP4 192.0.2.7 127.0.0.1 5555\r\n",
            b"PROXY TCP5 192.0.2.7 127.0.0.1 5555 80\r\n",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 80\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeaderError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut bad_version = v2_with(0x21, &[]);
        bad_version[12] = 0x31;
        assert!(parse(&bad_version).is_err());
    }

    /// A connected pair: what the client side writes, the server side reads.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    fn any_source() -> ProxyProtocol {
        ProxyProtocol { trusted: None }
    }

    #[tokio::test]
    async fn reads_a_header_sent_a_byte_at_a_time_and_not_one_byte_more() {
        for header in [
            b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n".to_vec(),
            v2_with(0x21, &[0xE0, 0, 2, 9, 9]),
        ] {
            let (mut client, mut server) = pair().await;
            let peer = client.local_addr().unwrap();
            let writer = tokio::spawn(async move {
                for byte in header.iter().chain(b"after") {
                    client.write_all(&[*byte]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                client
            });
            let got = receive(&mut server, peer, &any_source()).await.unwrap();
            assert_eq!(got, addr("192.0.2.7:5555"));
            let _client = writer.await.unwrap();
            let mut rest = [0u8; 5];
            server.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"after");
        }
    }

    #[tokio::test]
    async fn a_header_cut_short_by_a_close_ends_at_once() {
        let (mut client, mut server) = pair().await;
        let peer = client.local_addr().unwrap();
        client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
        client.shutdown().await.unwrap();
        let started = std::time::Instant::now();
        let got = receive(&mut server, peer, &any_source()).await;
        assert!(matches!(got, Err(HeaderError::Truncated)), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_untrusted_source_is_refused_before_any_read() {
        let (mut client, mut server) = pair().await;
        let peer = client.local_addr().unwrap();
        client.write_all(b"PROXY UNKNOWN\r\n").await.unwrap();
        let only_ten = ProxyProtocol {
            trusted: Some(vec![crate::config::parse_cidr("10.0.0.0/8").unwrap()]),
        };
        let got = receive(&mut server, peer, &only_ten).await;
        assert!(matches!(got, Err(HeaderError::Untrusted(_))), "{got:?}");
        // LOCAL and UNKNOWN keep the socket's own address.
        let got = receive(&mut server, peer, &any_source()).await.unwrap();
        assert_eq!(got, peer);
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest! {
        /// Whatever a client sends, framing and parsing answer without panicking, and
        /// a length is never past what the framing may read.
        #[test]
        fn any_bytes_frame_and_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Framing::Length(n)) = frame(&bytes) {
                prop_assert!(n <= V2_MAX);
                if n <= bytes.len() {
                    let _ = parse(&bytes[..n]);
                }
            }
            let _ = parse(&bytes);
        }

        /// Headers that start right but go wrong anywhere after still only give errors.
        #[test]
        fn mangled_headers_give_errors_not_panics(
            v2 in any::<bool>(),
            at in 0usize..60,
            byte in any::<u8>(),
            cut in 0usize..60,
        ) {
            let mut header = if v2 {
                v2_with(0x21, &[0xE0, 0, 1, 7])
            } else {
                b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n".to_vec()
            };
            let at = at % header.len();
            header[at] = byte;
            header.truncate(header.len() - cut % header.len());
            if let Ok(Framing::Length(n)) = frame(&header)
                && n <= header.len()
            {
                let _ = parse(&header[..n]);
            }
        }

        /// What the sending side writes, the receiving side frames to its exact length
        /// and reads back as the same client address.
        #[test]
        fn sent_headers_read_back(v2 in any::<bool>(), client in socket_addr(), local in socket_addr()) {
            let version = if v2 { ProxyVersion::V2 } else { ProxyVersion::V1 };
            let header = proxy_header(version, client, local);
            prop_assert_eq!(frame(&header).unwrap(), Framing::Length(header.len()));
            let got = parse(&header).unwrap().unwrap();
            prop_assert_eq!(got.ip().to_canonical(), client.ip().to_canonical());
            prop_assert_eq!(got.port(), client.port());
        }
    }
}
