//! Client addresses: which one a request came from when proxies stand in
//! front (`server.trusted_proxies`), and how rate limits group them.
//!
//! X-Forwarded-For is a list every hop appends to, so only the entries
//! added by proxies we run can be believed: everything left of them is
//! whatever the client wrote. The client is therefore the first address,
//! read from the right, that is not one of our proxies, and nothing is
//! read at all when the TCP peer itself is not one of them.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

/// The networks whose X-Forwarded-For entries are believed. Empty (the
/// default): the TCP peer is always the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&ip))
    }

    /// The client of a request from `peer` that carried these
    /// X-Forwarded-For header values, in the order received (several
    /// header lines are one list, RFC 9110 §5.3). Walks from the right
    /// past our own proxies; an entry that is not a plain IP address stops
    /// the walk at the last proxy reached, since nothing left of garbage
    /// was written by a proxy we know.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let entries: Vec<&[u8]> =
            forwarded_for.into_iter().flat_map(|value| value.split(|b| *b == b',')).collect();
        for entry in entries.into_iter().rev() {
            let Some(hop) = parse_entry(entry) else {
                break;
            };
            client = hop;
            if !self.trusts(hop) {
                break;
            }
        }
        client
    }
}

fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The part of a client address that rate limits count by: an IPv4
/// address on its own, an IPv6 address by its /64. One subscriber or host
/// is routinely given a whole /64 (RFC 6177), so counting single IPv6
/// addresses would hand one client 2^64 separate limits.
pub fn rate_limit_block(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V6(v6)) => {
            let network = Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)));
            format!("{network}/64")
        }
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn client(trusted: &TrustedProxies, peer: &str, headers: &[&str]) -> String {
        let peer: IpAddr = peer.parse().unwrap();
        trusted.client_ip(peer, headers.iter().map(|h| h.as_bytes())).to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let none = TrustedProxies::default();
        assert_eq!(client(&none, "127.0.0.1", &["203.0.113.7"]), "127.0.0.1");
        let lan = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&lan, "198.51.100.2", &["203.0.113.7, 10.0.0.1"]), "198.51.100.2");
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let lan = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&lan, "10.1.1.1", &[]), "10.1.1.1");
    }

    #[test]
    fn the_first_untrusted_entry_from_the_right_is_the_client() {
        let lan = proxies(&["10.0.0.0/8", "::1/128"]);
        assert_eq!(client(&lan, "10.0.0.2", &["6.6.6.6, 203.0.113.7"]), "203.0.113.7");
        assert_eq!(
            client(&lan, "::1", &["6.6.6.6, 203.0.113.7, 10.9.9.9", "10.0.0.3"]),
            "203.0.113.7",
            "several header lines are one list, and trusted hops are skipped"
        );
        assert_eq!(client(&lan, "10.0.0.2", &["2001:db8::5"]), "2001:db8::5");
    }

    #[test]
    fn when_every_entry_is_trusted_the_leftmost_is_the_client() {
        let lan = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&lan, "10.0.0.2", &["10.0.0.9,10.0.0.8"]), "10.0.0.9");
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let lan = proxies(&["10.0.0.0/8"]);
        for header in [
            "203.0.113.7, unknown, 10.0.0.5",
            "203.0.113.7, 10.0.0.5:1234, 10.0.0.5",
            "203.0.113.7,, 10.0.0.5",
            "203.0.113.7, 10.0.0.5, ",
        ] {
            let expected = if header.ends_with(' ') { "10.0.0.2" } else { "10.0.0.5" };
            assert_eq!(client(&lan, "10.0.0.2", &[header]), expected, "{header:?}");
        }
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let not_utf8: &[u8] = b"203.0.113.7, \xff";
        assert_eq!(lan.client_ip(peer, [not_utf8]).to_string(), "10.0.0.2");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let lan = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&lan, "::ffff:10.0.0.2", &["::ffff:203.0.113.7"]), "203.0.113.7");
    }

    #[test]
    fn rate_limits_count_ipv6_by_its_64_and_ipv4_by_address() {
        assert_eq!(rate_limit_block("203.0.113.7"), "203.0.113.7");
        assert_eq!(rate_limit_block("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(rate_limit_block("2001:db8:1:2::ffff"), "2001:db8:1:2::/64");
        assert_ne!(rate_limit_block("2001:db8:1:3::1"), rate_limit_block("2001:db8:1:2::1"));
        assert_eq!(rate_limit_block("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(rate_limit_block("unknown"), "unknown");
    }
}
