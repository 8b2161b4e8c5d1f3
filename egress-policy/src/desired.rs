//! What a container's classification (its labels and the policy file, combined) asks of the
//! kernel: pure functions of the classification, the IPs of its allowed domains, the addresses
//! it learned from its DNS answers and the agent's default DNS mode. No Docker, no maps, no
//! DNS: the reconciler feeds them and writes the result.
//!
//! There is no implicit DNS allowance: a policed container's DNS goes through the agent's proxy
//! only, and a resolver is reachable directly only if an entry names it.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use crate::{
    dns::{DnsMode, DnsPolicy},
    labels::Classification,
    policy::{Mode, Policy, Rule, mode_name},
};

/// The names the agent must resolve itself for a classification (as [`crate::domain::key`]s):
/// its exact names in resolve mode; none in learn mode (the container's answers are learned
/// instead), none unless it is policed.
pub fn domains(class: &Classification, default_dns: DnsMode) -> BTreeSet<String> {
    match class {
        Classification::Policed(spec) if spec.dns_mode(default_dns) == DnsMode::Resolve => {
            spec.domains().map(|(d, _)| d.to_owned()).collect()
        }
        _ => BTreeSet::new(),
    }
}

/// The mode and rules of a classification; None if it is not policed.
///
/// - Invalid labels: deny all (learned rules included).
/// - Policed: its address and CIDR rules; in resolve mode the IPs `domain_ips` holds for each
///   exact name (by key; a name not resolved yet adds nothing) on the ports of the entries
///   that match it ([`DnsPolicy::allows`]); and every rule in `learned` (what the DNS proxy
///   learned from the container's answers, already limited to the names' ports).
pub fn rules(
    class: &Classification,
    domain_ips: &HashMap<String, BTreeSet<IpAddr>>,
    learned: &BTreeSet<Rule>,
    default_dns: DnsMode,
) -> Option<(Mode, BTreeSet<Rule>)> {
    match class {
        Classification::Unpoliced => None,
        Classification::Invalid(_) => {
            let p = Policy::deny_all();
            Some((p.mode, p.rules))
        }
        Classification::Policed(spec) => {
            let mut rules: BTreeSet<Rule> = spec.rules().collect();
            let dns = DnsPolicy::of(class, default_dns)?;
            for name in domains(class, default_dns) {
                let ips = domain_ips.get(&name).into_iter().flatten().copied();
                rules.extend(dns.rules_for(&name, ips));
            }
            rules.extend(learned.iter().copied());
            Some((spec.mode, rules))
        }
    }
}

/// How logs and the denial log name what a classification does.
pub fn mode_label(class: &Classification) -> &'static str {
    match class {
        Classification::Unpoliced => "unpoliced",
        Classification::Invalid(_) => "deny-all (invalid egress labels)",
        Classification::Policed(spec) => mode_name(spec.mode),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::testing::{class, rule};

    fn rules_of(list: &[&str]) -> BTreeSet<Rule> {
        list.iter().map(|s| rule(s)).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn none() -> BTreeSet<Rule> {
        BTreeSet::new()
    }

    const ALLOW: &str = "Api.Example.COM:443,10.0.0.5,b.example,*.w.example";

    #[test]
    fn resolve_mode_resolves_the_exact_names_learn_mode_none() {
        let c = class(&[("egress.allow", ALLOW)]);
        let exact = BTreeSet::from(["api.example.com".to_owned(), "b.example".to_owned()]);
        assert_eq!(domains(&c, DnsMode::Resolve), exact);
        assert!(domains(&c, DnsMode::Learn).is_empty());
        // The label overrides the default.
        let c = class(&[("egress.allow", ALLOW), ("egress.dns", "resolve")]);
        assert_eq!(domains(&c, DnsMode::Learn), exact);
        let c = class(&[("egress.allow", ALLOW), ("egress.dns", "learn")]);
        assert!(domains(&c, DnsMode::Resolve).is_empty());
        assert!(domains(&class(&[]), DnsMode::Resolve).is_empty());
        assert!(domains(&class(&[("egress.allow", "10.0.0.300")]), DnsMode::Resolve).is_empty());
    }

    #[test]
    fn learn_mode_gets_its_rules_and_what_it_learned_only() {
        let c = class(&[("egress.allow", ALLOW)]);
        let ips = HashMap::from([(
            "api.example.com".to_owned(),
            BTreeSet::from([ip("192.0.2.1")]),
        )]);
        let learned = rules_of(&["192.0.2.7:443", "198.51.100.1"]);
        let (mode, got) = rules(&c, &ips, &learned, DnsMode::Learn).unwrap();
        assert_eq!(mode, Mode::Enforce);
        assert_eq!(
            got,
            rules_of(&["10.0.0.5", "192.0.2.7:443", "198.51.100.1"])
        );
    }

    #[test]
    fn resolve_mode_adds_the_resolved_ips_on_the_matching_ports() {
        let c = class(&[(
            "egress.allow",
            "10.0.0.5,api.example.com:443,*.example.com:80,slow.example",
        )]);
        let ips = HashMap::from([(
            "api.example.com".to_owned(),
            BTreeSet::from([ip("192.0.2.1"), ip("2001:db8::1")]),
        )]);
        let learned = rules_of(&["192.0.2.9:80"]);
        let (_, got) = rules(&c, &ips, &learned, DnsMode::Resolve).unwrap();
        let want = rules_of(&[
            "10.0.0.5",
            "192.0.2.1:80",
            "192.0.2.1:443",
            "[2001:db8::1]:80",
            "[2001:db8::1]:443",
            "192.0.2.9:80",
        ]);
        assert_eq!(got, want, "slow.example has no IPs yet and adds nothing");
    }

    #[test]
    fn no_resolver_is_allowed_implicitly() {
        let c = class(&[("egress.allow", "api.example.com")]);
        let (_, got) = rules(&c, &HashMap::new(), &none(), DnsMode::Learn).unwrap();
        assert!(got.is_empty(), "{got:?}");
        // Only an entry that names it.
        let c = class(&[("egress.allow", "10.0.0.2:53")]);
        let (_, got) = rules(&c, &HashMap::new(), &none(), DnsMode::Resolve).unwrap();
        assert_eq!(got, rules_of(&["10.0.0.2:53"]));
    }

    #[test]
    fn audit_mode_is_kept() {
        let c = class(&[("egress.allow", "10.0.0.5"), ("egress.mode", "audit")]);
        let (mode, _) = rules(&c, &HashMap::new(), &none(), DnsMode::Learn).unwrap();
        assert_eq!(mode, Mode::Audit);
        assert_eq!(mode_label(&c), "audit");
    }

    #[test]
    fn invalid_labels_deny_all_and_unlabelled_containers_are_not_policed() {
        let bad = class(&[("egress.allow", "10.0.0.300")]);
        let learned = rules_of(&["192.0.2.7"]);
        let (mode, got) = rules(&bad, &HashMap::new(), &learned, DnsMode::Learn).unwrap();
        assert_eq!(
            (mode, got.len()),
            (Mode::Enforce, 0),
            "not even what it learned"
        );
        assert_eq!(mode_label(&bad), "deny-all (invalid egress labels)");
        let none_class = class(&[]);
        assert_eq!(
            super::rules(&none_class, &HashMap::new(), &learned, DnsMode::Learn),
            None
        );
        assert_eq!(mode_label(&none_class), "unpoliced");
    }
}
