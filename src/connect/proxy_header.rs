//! The PROXY header rlb writes first on a server connection (`send_proxy_protocol`):
//! the client's address as the source, the address the client reached rlb on as the
//! destination. Built with `ppp`, the crate the receiving side parses with.

use std::net::{IpAddr, SocketAddr};

use ppp::v2::{Builder, Command, Protocol, Version};

use crate::config::ProxyVersion;

/// The header's bytes: at most 104 for v1 (`PROXY TCP6 ...\r\n`), 52 for v2.
///
/// A v1 or v2 header carries one address family, so an IPv4 client reaching rlb on an
/// IPv6 socket (or the reverse) is sent with both addresses as IPv6, the IPv4 one
/// mapped (`::ffff:a.b.c.d`); two IPv4 addresses, mapped or not, go as IPv4.
pub fn proxy_header(version: ProxyVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = one_family(client, local);
    match version {
        ProxyVersion::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        ProxyVersion::V2 => Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (client, local),
        )
        .build()
        // Only a payload over 64 KiB fails; two addresses are 36 bytes at most.
        .unwrap_or_default(),
    }
}

fn one_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (ia, ib) = (a.ip().to_canonical(), b.ip().to_canonical());
    match (ia, ib) {
        (IpAddr::V4(_), IpAddr::V4(_)) => {
            (SocketAddr::new(ia, a.port()), SocketAddr::new(ib, b.port()))
        }
        _ => (
            SocketAddr::new(IpAddr::V6(v6(ia)), a.port()),
            SocketAddr::new(IpAddr::V6(v6(ib)), b.port()),
        ),
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v1_is_the_text_line() {
        let header = proxy_header(
            ProxyVersion::V1,
            addr("192.0.2.7:5555"),
            addr("127.0.0.1:80"),
        );
        assert_eq!(header, b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n");
        let mixed = proxy_header(ProxyVersion::V1, addr("192.0.2.7:5555"), addr("[::1]:80"));
        assert_eq!(mixed, b"PROXY TCP6 ::ffff:192.0.2.7 ::1 5555 80\r\n");
        let mapped = proxy_header(
            ProxyVersion::V1,
            addr("[::ffff:192.0.2.7]:5555"),
            addr("[::ffff:127.0.0.1]:80"),
        );
        assert_eq!(mapped, b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n");
    }

    #[test]
    fn v2_is_the_binary_header() {
        let header = proxy_header(
            ProxyVersion::V2,
            addr("192.0.2.7:5555"),
            addr("127.0.0.1:80"),
        );
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(header[12..16], [0x21, 0x11, 0, 12]);
        assert_eq!(
            header[16..],
            [192, 0, 2, 7, 127, 0, 0, 1, 0x15, 0xb3, 0, 80]
        );
        assert_eq!(
            proxy_header(ProxyVersion::V2, addr("[2001:db8::1]:1"), addr("[::1]:2")).len(),
            16 + 36
        );
    }
}
