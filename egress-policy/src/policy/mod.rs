//! The policy model: what a cgroup may reach, independent of how the kernel stores it
//! (`egress_common`'s `user` feature converts it to and from the map keys and values).

mod entry;

use std::{collections::BTreeSet, fmt, net::IpAddr, str::FromStr};

pub use entry::{EntryError, parse_ip_entries, parse_ip_entry};
use ipnet::{IpNet, Ipv4Net};

/// What a policed cgroup does with a destination that no rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Deny with EPERM and report.
    Enforce,
    /// Allow, but report what would have been denied.
    Audit,
}

/// One allowed destination: an address or CIDR, on one port or on every port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    net: IpNet,
    port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("port 0 is not a destination port")]
    PortZero,
}

impl Rule {
    /// A rule for `net` (host bits are cleared; `::ffff:a.b.c.d` forms become IPv4, as the
    /// programs judge such destinations as IPv4) on `port` (`None`: every port).
    pub fn new(net: IpNet, port: Option<u16>) -> Result<Self, RuleError> {
        if port == Some(0) {
            return Err(RuleError::PortZero);
        }
        Ok(Self {
            net: normalize(net),
            port,
        })
    }

    /// A rule for one address.
    pub fn addr(ip: IpAddr, port: Option<u16>) -> Result<Self, RuleError> {
        Self::new(IpNet::from(ip), port)
    }

    pub fn net(&self) -> IpNet {
        self.net
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// True if the rule names exactly one address (kept in a hash map, not a trie).
    pub fn is_host(&self) -> bool {
        self.net.prefix_len() == self.net.max_prefix_len()
    }
}

fn normalize(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96)
                .map(|n| IpNet::V4(n.trunc()))
                .unwrap_or(net),
            None => IpNet::V6(n.trunc()),
        },
        IpNet::V6(n) => IpNet::V6(n.trunc()),
        IpNet::V4(n) => IpNet::V4(n.trunc()),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dest = if self.is_host() {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        };
        match (self.port, self.net) {
            (None, _) => f.write_str(&dest),
            (Some(p), IpNet::V4(_)) => write!(f, "{dest}:{p}"),
            (Some(p), IpNet::V6(_)) => write!(f, "[{dest}]:{p}"),
        }
    }
}

/// What a policed cgroup may reach and what happens to everything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    pub rules: BTreeSet<Rule>,
    /// The cgroup may reach its own network namespace's loopback (but never port 53 nor
    /// Docker's embedded resolver `127.0.0.11`); the kernel's `FLAG_LOOPBACK`.
    pub loopback: bool,
    /// What the agent knows about the policy's enforceability (the kernel's `NOTE_*` bits),
    /// kept beside it in the maps for `status`; the programs never read them.
    pub notes: u8,
}

impl Policy {
    pub fn new(mode: Mode, rules: impl IntoIterator<Item = Rule>) -> Self {
        Self {
            mode,
            rules: rules.into_iter().collect(),
            loopback: false,
            notes: 0,
        }
    }

    /// The same policy, with its own loopback allowed or not.
    pub fn with_loopback(mut self, loopback: bool) -> Self {
        self.loopback = loopback;
        self
    }

    /// The same policy, with these `NOTE_*` bits.
    pub fn with_notes(mut self, notes: u8) -> Self {
        self.notes = notes;
        self
    }

    /// A policy that allows nothing (fail closed).
    pub fn deny_all() -> Self {
        Self::new(Mode::Enforce, [])
    }

    pub fn has_v4_cidr(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.is_host() && matches!(r.net, IpNet::V4(_)))
    }

    pub fn has_v6_cidr(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.is_host() && matches!(r.net, IpNet::V6(_)))
    }

    /// True if an exact IPv4 address rule names a port.
    pub fn has_v4_host_port(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.is_host() && r.port().is_some() && matches!(r.net, IpNet::V4(_)))
    }

    /// True if an exact IPv6 address rule names a port.
    pub fn has_v6_host_port(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.is_host() && r.port().is_some() && matches!(r.net, IpNet::V6(_)))
    }
}

/// `enforce` or `audit`.
pub fn parse_mode(s: &str) -> Result<Mode, UnknownMode> {
    match s.trim() {
        "enforce" => Ok(Mode::Enforce),
        "audit" => Ok(Mode::Audit),
        other => Err(UnknownMode(other.to_owned())),
    }
}

/// The name of a mode as written in labels and flags.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown mode {0:?}: expected `enforce` or `audit`")]
pub struct UnknownMode(pub String);

/// A `Mode` newtype for clap and FromStr users.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeArg(pub Mode);

impl FromStr for ModeArg {
    type Err = UnknownMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_mode(s).map(ModeArg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn v4_mapped_rules_become_v4() {
        let r = Rule::new(net("::ffff:10.1.2.3/128"), Some(80)).unwrap();
        assert_eq!(r.net(), net("10.1.2.3/32"));
        let r = Rule::new(net("::ffff:10.1.0.0/112"), None).unwrap();
        assert_eq!(r.net(), net("10.1.0.0/16"));
    }

    #[test]
    fn host_bits_are_cleared() {
        let r = Rule::new(net("10.1.2.3/16"), None).unwrap();
        assert_eq!(r.net(), net("10.1.0.0/16"));
        assert!(!r.is_host());
    }

    #[test]
    fn port_zero_is_rejected() {
        assert_eq!(
            Rule::new(net("10.0.0.1/32"), Some(0)),
            Err(RuleError::PortZero)
        );
    }

    #[test]
    fn display_round_trips_through_the_entry_grammar() {
        for s in [
            "10.0.0.1",
            "10.0.0.1:53",
            "10.0.0.0/8",
            "10.0.0.0/8:5432",
            "2001:db8::1",
            "[2001:db8::1]:443",
            "2001:db8::/32",
            "[2001:db8::/32]:443",
        ] {
            let r = parse_ip_entry(s).unwrap().unwrap();
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn cidr_flags_follow_rules() {
        let p = Policy::new(
            Mode::Enforce,
            [
                Rule::new(net("10.0.0.0/8"), None).unwrap(),
                Rule::new(net("2001:db8::1/128"), None).unwrap(),
            ],
        );
        assert!(p.has_v4_cidr());
        assert!(!p.has_v6_cidr());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(parse_mode("audit"), Ok(Mode::Audit));
        assert_eq!(parse_mode("enforce"), Ok(Mode::Enforce));
        assert!(parse_mode("block").is_err());
    }
}
