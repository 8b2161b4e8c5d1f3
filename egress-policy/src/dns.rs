//! What the agent's DNS proxy needs of a container's policy: which names it may look up, on
//! which ports the addresses of their answers may then be used, and whether those addresses are
//! learned from the answers or resolved by the agent itself ([`DnsMode`]). Pure: the proxy
//! feeds it names as [`crate::domain::key`] spells them.

use std::{collections::BTreeSet, fmt, net::IpAddr, str::FromStr};

use crate::{
    domain::Pattern,
    labels::Classification,
    policy::{Mode, Rule},
};

/// Where the addresses a container may reach for a name come from (`egress.dns`, the agent's
/// `--dns-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DnsMode {
    /// Exactly the addresses the container's own DNS answers carried (the default).
    #[default]
    Learn,
    /// The exact names are also resolved by the agent, and what it got is allowed (for
    /// applications that connect to addresses they did not look up); wildcards are learned.
    Resolve,
}

impl DnsMode {
    /// `learn` or `resolve` (surrounding whitespace ignored, case-sensitive as the labels).
    pub fn parse(s: &str) -> Result<Self, UnknownDnsMode> {
        match s.trim() {
            "learn" => Ok(Self::Learn),
            "resolve" => Ok(Self::Resolve),
            other => Err(UnknownDnsMode(other.to_owned())),
        }
    }

    /// The mode as written in labels and flags.
    pub fn name(self) -> &'static str {
        match self {
            Self::Learn => "learn",
            Self::Resolve => "resolve",
        }
    }
}

impl fmt::Display for DnsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DnsMode {
    type Err = UnknownDnsMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown DNS mode {0:?}: expected `learn` or `resolve`")]
pub struct UnknownDnsMode(pub String);

/// The ports an address may be used on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    Any,
    /// These only (never empty).
    Only(BTreeSet<u16>),
}

impl Ports {
    /// The union of the ports of the entries, `None` standing for every port (which wins); None
    /// for no entry at all.
    pub fn union(ports: impl IntoIterator<Item = Option<u16>>) -> Option<Self> {
        let mut out: Option<Self> = None;
        for port in ports {
            out = Some(match (out, port) {
                (_, None) | (Some(Self::Any), _) => Self::Any,
                (None, Some(p)) => Self::Only(BTreeSet::from([p])),
                (Some(Self::Only(mut set)), Some(p)) => {
                    set.insert(p);
                    Self::Only(set)
                }
            });
        }
        out
    }

    /// The rules that allow `ip` on these ports.
    pub fn rules(&self, ip: IpAddr) -> Vec<Rule> {
        let ports: Vec<Option<u16>> = match self {
            Self::Any => vec![None],
            Self::Only(set) => set.iter().copied().map(Some).collect(),
        };
        ports
            .into_iter()
            .filter_map(|port| Rule::addr(ip, port).ok())
            .collect()
    }
}

/// What the DNS proxy needs of one container's policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPolicy {
    mode: Mode,
    dns: DnsMode,
    /// The name and wildcard entries, with their ports.
    names: Vec<(Pattern, Option<u16>)>,
}

impl DnsPolicy {
    /// The DNS policy of a classification, `default` being the agent's DNS mode; None if it is
    /// not policed. Invalid labels give a policy that allows no name, in enforce mode.
    pub fn of(class: &Classification, default: DnsMode) -> Option<Self> {
        match class {
            Classification::Unpoliced => None,
            Classification::Invalid(_) => Some(Self {
                mode: Mode::Enforce,
                dns: default,
                names: Vec::new(),
            }),
            Classification::Policed(spec) => Some(Self {
                mode: spec.mode,
                dns: spec.dns_mode(default),
                names: spec.names().map(|(p, port)| (p.clone(), port)).collect(),
            }),
        }
    }

    /// Enforce or audit: what happens to a question for a name no entry allows.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn dns_mode(&self) -> DnsMode {
        self.dns
    }

    /// The name and wildcard entries, with their ports.
    pub fn names(&self) -> &[(Pattern, Option<u16>)] {
        &self.names
    }

    /// The ports an address learned for `name_key` (a [`crate::domain::key`]) may be used on:
    /// the union over every entry that matches it, any port winning; None if none matches
    /// (the question is refused).
    pub fn allows(&self, name_key: &str) -> Option<Ports> {
        Ports::union(
            self.names
                .iter()
                .filter(|(p, _)| p.matches(name_key))
                .map(|(_, port)| *port),
        )
    }

    /// True if the addresses of an answer for `name_key` are learned: the name is allowed and
    /// the container is in learn mode, or only wildcards match it. In resolve mode an exact
    /// name is resolved by the agent instead (its answers are still filtered).
    pub fn learns(&self, name_key: &str) -> bool {
        let mut matching = self.names.iter().filter(|(p, _)| p.matches(name_key));
        match self.dns {
            DnsMode::Learn => matching.next().is_some(),
            DnsMode::Resolve => {
                let matching: Vec<_> = matching.collect();
                !matching.is_empty() && matching.iter().all(|(p, _)| p.is_wildcard())
            }
        }
    }

    /// The rules that allow `addrs`, learned for `name_key`, on the ports [`Self::allows`]
    /// gives; none if the name is not allowed.
    pub fn rules_for(&self, name_key: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Vec<Rule> {
        let Some(ports) = self.allows(name_key) else {
            return Vec::new();
        };
        let mut rules: Vec<Rule> = addrs.into_iter().flat_map(|ip| ports.rules(ip)).collect();
        rules.sort();
        rules.dedup();
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{class, rule};

    fn policy(allow: &str, default: DnsMode) -> DnsPolicy {
        DnsPolicy::of(&class(&[("egress.allow", allow)]), default).unwrap()
    }

    fn only(ports: &[u16]) -> Option<Ports> {
        Some(Ports::Only(ports.iter().copied().collect()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn modes_parse_and_display() {
        assert_eq!(DnsMode::parse(" learn "), Ok(DnsMode::Learn));
        assert_eq!("resolve".parse(), Ok(DnsMode::Resolve));
        assert_eq!(DnsMode::parse("Learn"), Err(UnknownDnsMode("Learn".into())));
        assert!(DnsMode::parse("").is_err());
        assert_eq!(DnsMode::Resolve.to_string(), "resolve");
        assert_eq!(DnsMode::default(), DnsMode::Learn);
    }

    #[test]
    fn ports_union_any_wins() {
        assert_eq!(Ports::union([]), None);
        assert_eq!(Ports::union([Some(443)]), only(&[443]));
        assert_eq!(
            Ports::union([Some(443), Some(80), Some(443)]),
            only(&[80, 443])
        );
        assert_eq!(Ports::union([Some(443), None, Some(80)]), Some(Ports::Any));
    }

    #[test]
    fn unpoliced_has_no_dns_policy_and_invalid_allows_no_name() {
        assert_eq!(DnsPolicy::of(&class(&[]), DnsMode::Learn), None);
        let bad = DnsPolicy::of(
            &class(&[
                ("egress.allow", "x.test"),
                ("egress.mode", "audit"),
                ("egress.dns", "x"),
            ]),
            DnsMode::Resolve,
        )
        .unwrap();
        assert_eq!(bad.mode(), Mode::Enforce);
        assert_eq!(bad.dns_mode(), DnsMode::Resolve);
        assert!(bad.names().is_empty());
        assert_eq!(bad.allows("x.test"), None);
        assert!(!bad.learns("x.test"));
        assert!(bad.rules_for("x.test", [ip("192.0.2.1")]).is_empty());
    }

    #[test]
    fn mode_and_dns_mode_come_from_the_labels_or_the_default() {
        let p = DnsPolicy::of(
            &class(&[("egress.mode", "audit"), ("egress.dns", "resolve")]),
            DnsMode::Learn,
        )
        .unwrap();
        assert_eq!((p.mode(), p.dns_mode()), (Mode::Audit, DnsMode::Resolve));
        let p = DnsPolicy::of(&class(&[("egress.allow", "")]), DnsMode::Resolve).unwrap();
        assert_eq!((p.mode(), p.dns_mode()), (Mode::Enforce, DnsMode::Resolve));
    }

    #[test]
    fn allows_exact_names_and_wildcards_by_their_semantics() {
        let p = policy(
            "api.example.com:443, *.one.test, **.any.test:53",
            DnsMode::Learn,
        );
        assert_eq!(p.allows("api.example.com"), only(&[443]));
        assert_eq!(p.allows("a.api.example.com"), None);
        assert_eq!(p.allows("example.com"), None);
        assert_eq!(p.allows("a.one.test"), Some(Ports::Any));
        assert_eq!(p.allows("a.b.one.test"), None, "`*.` is exactly one label");
        assert_eq!(p.allows("one.test"), None, "not the apex");
        assert_eq!(p.allows("a.any.test"), only(&[53]));
        assert_eq!(p.allows("a.b.c.any.test"), only(&[53]));
        assert_eq!(p.allows("any.test"), None, "not the apex");
        assert_eq!(p.allows("other.test"), None);
    }

    #[test]
    fn allows_unions_the_ports_of_every_matching_entry() {
        let p = policy(
            "a.x.test:443, *.x.test:80, **.x.test:8080, b.x.test, c.x.test:443",
            DnsMode::Learn,
        );
        assert_eq!(p.allows("a.x.test"), only(&[80, 443, 8080]));
        assert_eq!(p.allows("b.x.test"), Some(Ports::Any), "any port wins");
        assert_eq!(p.allows("d.x.test"), only(&[80, 8080]));
        assert_eq!(p.allows("e.d.x.test"), only(&[8080]));
    }

    #[test]
    fn learn_mode_learns_every_allowed_name() {
        let p = policy("api.example.com, *.x.test", DnsMode::Learn);
        assert!(p.learns("api.example.com"));
        assert!(p.learns("a.x.test"));
        assert!(!p.learns("nope.test"), "a refused name teaches nothing");
    }

    #[test]
    fn resolve_mode_learns_only_names_that_only_wildcards_match() {
        let p = policy(
            "api.example.com, a.x.test, *.x.test, **.y.test",
            DnsMode::Resolve,
        );
        assert!(!p.learns("api.example.com"), "resolved by the agent");
        assert!(!p.learns("a.x.test"), "an exact entry matches it too");
        assert!(p.learns("b.x.test"));
        assert!(p.learns("a.b.y.test"));
        assert!(!p.learns("nope.test"));
        // The label overrides the default, both ways.
        let learn = DnsPolicy::of(
            &class(&[("egress.allow", "api.example.com"), ("egress.dns", "learn")]),
            DnsMode::Resolve,
        )
        .unwrap();
        assert!(learn.learns("api.example.com"));
        let resolve = DnsPolicy::of(
            &class(&[
                ("egress.allow", "api.example.com"),
                ("egress.dns", "resolve"),
            ]),
            DnsMode::Learn,
        )
        .unwrap();
        assert!(!resolve.learns("api.example.com"));
    }

    #[test]
    fn rules_for_allow_the_addresses_on_the_allowed_ports() {
        let p = policy("a.test:443, a.test:80, *.b.test, ::1", DnsMode::Learn);
        let addrs = [ip("192.0.2.1"), ip("2001:db8::1"), ip("192.0.2.1")];
        assert_eq!(
            p.rules_for("a.test", addrs),
            vec![
                rule("192.0.2.1:80"),
                rule("192.0.2.1:443"),
                rule("[2001:db8::1]:80"),
                rule("[2001:db8::1]:443"),
            ]
        );
        assert_eq!(
            p.rules_for("x.b.test", [ip("::ffff:192.0.2.9")]),
            vec![rule("192.0.2.9")],
            "any port; v4-mapped answers become IPv4 rules"
        );
        assert!(p.rules_for("c.test", [ip("192.0.2.1")]).is_empty());
        assert!(p.rules_for("a.test", []).is_empty());
    }
}
