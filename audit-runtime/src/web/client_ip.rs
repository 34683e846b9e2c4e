//! The client's address: the connection's peer, or what trusted proxies say
//! in `Forwarded` / `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use ::http::header::{HeaderMap, HeaderName, FORWARDED};
use ipnet::IpNet;

/// Networks whose `Forwarded` / `X-Forwarded-For` headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub(crate) fn add(&mut self, net: IpNet) {
        self.0.push(net.trunc());
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer`.
    ///
    /// Only a peer in a trusted network is believed. Its header lists the
    /// hops nearest last: walking from the end, each trusted hop vouches
    /// for the one before it, and the first address not trusted is the
    /// client. A value that is not an address (`unknown`, an obfuscated
    /// name) ends the walk at the last hop known. `Forwarded` is read when
    /// present, else `X-Forwarded-For`.
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut current = canonical(peer);
        if self.is_empty() || !self.trusts(current) {
            return current;
        }
        let hops = if headers.contains_key(FORWARDED) {
            forwarded_for(headers)
        } else {
            x_forwarded_for(headers)
        };
        for hop in hops.iter().rev() {
            if !self.trusts(current) {
                break;
            }
            match hop {
                Some(ip) => current = canonical(*ip),
                None => break,
            }
        }
        current
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An address as a proxy writes it: `1.2.3.4`, `1.2.3.4:80`, `::1`,
/// `[::1]`, `[::1]:443`, possibly quoted.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok()
}

fn header_values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        // A value that is not visible ASCII is no address list: an
        // unreadable hop, which ends the walk.
        .map(|v| v.to_str().unwrap_or("\u{0}"))
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    header_values(headers, &X_FORWARDED_FOR)
        .flat_map(|v| v.split(','))
        .map(parse_hop)
        .collect()
}

/// The `for=` parameter of each element of `Forwarded` (RFC 7239); an
/// element without one counts as an unreadable hop.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    header_values(headers, &FORWARDED)
        .flat_map(|v| v.split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v)
            })
        })
        .map(|v| v.and_then(parse_hop))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        let mut t = TrustedProxies::default();
        for n in nets {
            t.add(n.parse().unwrap());
        }
        t
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let headers = h(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(t.client(ip("203.0.113.9"), &headers), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn trusted_hops_are_walked_from_the_end() {
        let t = trusted(&["10.0.0.0/8", "192.168.0.0/16"]);
        // Spoofed first entry, real client, then an inner proxy.
        let headers = h(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 192.168.1.1")]);
        assert_eq!(t.client(ip("10.0.0.1"), &headers), ip("198.51.100.7"));
        // Two header lines read as one list.
        let headers = h(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:5555"),
        ]);
        assert_eq!(t.client(ip("10.0.0.1"), &headers), ip("198.51.100.7"));
        // Every hop trusted: the first one.
        let headers = h(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(t.client(ip("10.0.0.1"), &headers), ip("10.1.1.1"));
        // Garbage stops the walk at the proxy that wrote it.
        let headers = h(&[("x-forwarded-for", "198.51.100.7, unknown")]);
        assert_eq!(t.client(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
        // No header: the peer.
        assert_eq!(t.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_header() {
        let t = trusted(&["127.0.0.0/8", "::1/128"]);
        let headers = h(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        assert_eq!(t.client(ip("::1"), &headers), ip("2001:db8:cafe::17"));
        let headers = h(&[("forwarded", "for=_hidden"), ("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(t.client(ip("127.0.0.1"), &headers), ip("127.0.0.1"));
        let headers = h(&[("forwarded", "For=192.0.2.60;proto=http;by=203.0.113.43")]);
        assert_eq!(t.client(ip("127.0.0.1"), &headers), ip("192.0.2.60"));
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let t = trusted(&["127.0.0.0/8"]);
        let headers = h(&[("x-forwarded-for", "::ffff:198.51.100.7")]);
        assert_eq!(
            t.client(ip("::ffff:127.0.0.1"), &headers),
            ip("198.51.100.7")
        );
    }
}
