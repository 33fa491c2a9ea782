//! Which addresses a plugin may reach when a tenant, not the operator,
//! names the host (a webhook URL, an SMTP server): public ones only, unless
//! the operator allows private networks. Otherwise a tenant could point a
//! plugin at the platform's own network (its database, a cloud metadata
//! service).
//!
//! The check is made on the addresses a connection actually uses: the HTTP
//! client resolves through [`PublicResolver`], and SMTP connects to an
//! address checked here, so a name that resolves differently the second
//! time (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};

/// Whether `ip` is on the public internet: not loopback, private,
/// link-local, shared (carrier-grade NAT), documentation, multicast or
/// unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // 100.64.0.0/10: shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 198.18.0.0/15: benchmarking.
        || (a == 198 && (b == 18 || b == 19))
        // 240.0.0.0/4: reserved.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7: unique local.
        || (first & 0xfe00) == 0xfc00
        // fe80::/10: link-local.
        || (first & 0xffc0) == 0xfe80
        // 2001:db8::/32: documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// Resolves `host:port`, keeping only public addresses; an error says why
/// none is left.
pub fn resolve_public(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host}: {error}"))?
        .collect();
    let public: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|addr| is_public(addr.ip()))
        .collect();
    if public.is_empty() {
        return Err(format!(
            "{host} is not on the public internet (it resolves to {}); this host lets plugins reach only public addresses",
            addrs
                .iter()
                .map(|addr| addr.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(public)
}

/// ureq's resolver, keeping only public addresses.
#[derive(Debug, Default)]
pub struct PublicResolver(DefaultResolver);

impl Resolver for PublicResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = self.0.resolve(uri, config, timeout)?;
        let mut public = self.empty();
        for addr in resolved.iter().filter(|addr| is_public(addr.ip())) {
            public.push(*addr);
        }
        if public.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::other(format!(
                "{} is not on the public internet",
                uri.host().unwrap_or_default()
            ))));
        }
        Ok(public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn names_that_resolve_to_private_addresses_are_refused() {
        let refusal = resolve_public("localhost", 25).unwrap_err();
        assert!(
            refusal.starts_with("localhost is not on the public internet"),
            "{refusal}"
        );
        let refusal = resolve_public("127.0.0.1", 25).unwrap_err();
        assert!(refusal.contains("resolves to 127.0.0.1"), "{refusal}");
    }
}
