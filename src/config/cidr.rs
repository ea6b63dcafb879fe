//! Address ranges written as CIDRs (`"10.0.0.0/8"`, `"::1/128"`, or a bare address for
//! one host), as `trusted_proxies` lists them.

use std::fmt;
use std::net::IpAddr;

/// An IPv4 or IPv6 network: the address with its host bits zero, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `bits` with all but the first `prefix` bits zero.
fn mask_v4(bits: u32, prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => bits & (u32::MAX << (32 - u32::from(p))),
    }
}

fn mask_v6(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p))),
    }
}

/// Parses `"ADDR/PREFIX"` or a bare `"ADDR"` (all its bits). Host bits set below the
/// prefix are refused with the network that was probably meant, since `10.0.0.1/8`
/// reads like one host but would trust sixteen million.
pub fn parse_cidr(text: &str) -> Result<Cidr, String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let Ok(ip) = addr.trim().parse::<IpAddr>() else {
        return Err(format!(
            "bad CIDR `{text}`: expected ADDRESS/PREFIX, e.g. \"10.0.0.0/8\" or \"::1/128\""
        ));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.trim().parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(format!(
                    "bad CIDR `{text}`: the prefix length must be 0 to {max}"
                ));
            }
        },
    };
    let network = match ip {
        IpAddr::V4(v4) => IpAddr::from(mask_v4(u32::from(v4), prefix).to_be_bytes()),
        IpAddr::V6(v6) => IpAddr::from(mask_v6(u128::from(v6), prefix).to_be_bytes()),
    };
    if network != ip {
        return Err(format!(
            "bad CIDR `{text}`: host bits are set below /{prefix}; did you mean `{network}/{prefix}`?"
        ));
    }
    Ok(Cidr { network, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn matches_inside_its_prefix_only() {
        let net = parse_cidr("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!net.contains(ip("::1")));
        let host = parse_cidr("127.0.0.1").unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6 = parse_cidr("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let any = parse_cidr("0.0.0.0/0").unwrap();
        assert!(any.contains(ip("203.0.113.9")));
        assert!(parse_cidr("::/0").unwrap().contains(ip("2001:db8::1")));
    }

    #[test]
    fn refuses_bad_text_with_the_reason() {
        assert!(parse_cidr("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(parse_cidr("::/129").unwrap_err().contains("0 to 128"));
        assert!(parse_cidr("10.0.0.0/x").is_err());
        assert!(parse_cidr("ten/8").unwrap_err().contains("ADDRESS/PREFIX"));
        assert!(parse_cidr("").is_err());
        let e = parse_cidr("10.0.0.1/8").unwrap_err();
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
    }
}
