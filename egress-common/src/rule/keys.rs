//! Conversion between the policy model's [`Rule`]s and these map keys (user space only).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use egress_policy::policy::Rule;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{ANY_PORT, CIDR_PREFIX_BITS, Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey};
use crate::maps;

/// Where a rule lives in the kernel: exact addresses in hash maps, CIDRs in LPM tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKey {
    V4(Ip4RuleKey),
    V6(Ip6RuleKey),
    Cidr4(u32, Cidr4Data),
    Cidr6(u32, Cidr6Data),
}

impl RuleKey {
    /// The name of the map the key lives in.
    pub fn map(&self) -> &'static str {
        match self {
            RuleKey::V4(_) => maps::ALLOW_V4,
            RuleKey::V6(_) => maps::ALLOW_V6,
            RuleKey::Cidr4(..) => maps::CIDR_V4,
            RuleKey::Cidr6(..) => maps::CIDR_V6,
        }
    }
}

fn port_bits(port: Option<u16>) -> u16 {
    port.unwrap_or(ANY_PORT)
}

fn port_of(bits: u16) -> Option<u16> {
    (bits != ANY_PORT).then_some(bits)
}

/// The key of `rule` in policy `policy_id`.
pub fn encode(policy_id: u32, rule: &Rule) -> RuleKey {
    let port = port_bits(rule.port());
    match rule.net() {
        IpNet::V4(n) if rule.is_host() => {
            RuleKey::V4(Ip4RuleKey::new(policy_id, n.addr().octets(), port))
        }
        IpNet::V6(n) if rule.is_host() => {
            RuleKey::V6(Ip6RuleKey::new(policy_id, n.addr().octets(), port))
        }
        IpNet::V4(n) => RuleKey::Cidr4(
            CIDR_PREFIX_BITS + u32::from(n.prefix_len()),
            Cidr4Data::new(policy_id, n.addr().octets(), port),
        ),
        IpNet::V6(n) => RuleKey::Cidr6(
            CIDR_PREFIX_BITS + u32::from(n.prefix_len()),
            Cidr6Data::new(policy_id, n.addr().octets(), port),
        ),
    }
}

/// An LPM key for aya.
pub fn lpm<K: aya::Pod>(prefix_len: u32, data: K) -> Key<K> {
    Key::new(prefix_len, data)
}

/// (policy id, rule) of an exact IPv4 key.
pub fn decode_v4(k: &Ip4RuleKey) -> Option<(u32, Rule)> {
    let ip = IpAddr::V4(Ipv4Addr::from(k.addr));
    Rule::addr(ip, port_of(k.port))
        .ok()
        .map(|r| (k.policy_id, r))
}

/// (policy id, rule) of an exact IPv6 key.
pub fn decode_v6(k: &Ip6RuleKey) -> Option<(u32, Rule)> {
    let ip = IpAddr::V6(Ipv6Addr::from(k.addr));
    Rule::addr(ip, port_of(k.port))
        .ok()
        .map(|r| (k.policy_id, r))
}

/// (policy id, rule) of an IPv4 CIDR key.
pub fn decode_cidr4(prefix_len: u32, d: &Cidr4Data) -> Option<(u32, Rule)> {
    let len = u8::try_from(prefix_len.checked_sub(CIDR_PREFIX_BITS)?).ok()?;
    let net = Ipv4Net::new(Ipv4Addr::from(d.addr), len).ok()?;
    let port = port_of(u16::from_be_bytes(d.port));
    Rule::new(IpNet::V4(net), port)
        .ok()
        .map(|r| (u32::from_be_bytes(d.policy_id), r))
}

/// (policy id, rule) of an IPv6 CIDR key.
pub fn decode_cidr6(prefix_len: u32, d: &Cidr6Data) -> Option<(u32, Rule)> {
    let len = u8::try_from(prefix_len.checked_sub(CIDR_PREFIX_BITS)?).ok()?;
    let net = Ipv6Net::new(Ipv6Addr::from(d.addr), len).ok()?;
    let port = port_of(u16::from_be_bytes(d.port));
    Rule::new(IpNet::V6(net), port)
        .ok()
        .map(|r| (u32::from_be_bytes(d.policy_id), r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_policy::policy::parse_ip_entry;

    fn round_trip(entry: &str) {
        let rule = parse_ip_entry(entry).unwrap().unwrap();
        let back = match encode(7, &rule) {
            RuleKey::V4(k) => decode_v4(&k),
            RuleKey::V6(k) => decode_v6(&k),
            RuleKey::Cidr4(l, d) => decode_cidr4(l, &d),
            RuleKey::Cidr6(l, d) => decode_cidr6(l, &d),
        };
        assert_eq!(back, Some((7, rule)), "{entry}");
    }

    #[test]
    fn every_kind_of_rule_round_trips() {
        for e in [
            "127.0.0.2",
            "127.0.0.2:8080",
            "10.0.0.0/8",
            "10.0.0.0/8:53",
            "0.0.0.0/0",
            "::1",
            "[::1]:443",
            "2001:db8::/32",
            "[2001:db8::/32]:443",
            "::/0",
        ] {
            round_trip(e);
        }
    }

    #[test]
    fn hosts_go_to_hash_maps_and_cidrs_to_tries() {
        let host = parse_ip_entry("10.1.2.3/32").unwrap().unwrap();
        assert!(matches!(encode(1, &host), RuleKey::V4(_)));
        let net = parse_ip_entry("10.1.0.0/16:5432").unwrap().unwrap();
        match encode(1, &net) {
            RuleKey::Cidr4(len, d) => {
                assert_eq!(len, 48 + 16);
                assert_eq!(d.port, 5432u16.to_be_bytes());
                assert_eq!(d.policy_id, 1u32.to_be_bytes());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_port_is_zero() {
        let r = parse_ip_entry("10.1.2.3").unwrap().unwrap();
        match encode(3, &r) {
            RuleKey::V4(k) => {
                assert_eq!(k.port, ANY_PORT);
                assert_eq!(k.addr, [10, 1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
    }
}
