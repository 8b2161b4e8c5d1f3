//! What a container's classification (its labels and the policy file, combined) asks of the
//! kernel: pure functions of the classification, the IPs of its allowed domains and its DNS
//! servers. No Docker, no maps, no DNS: the reconciler feeds them and writes the result.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use crate::{
    domain,
    labels::Classification,
    policy::{Mode, Policy, Rule, mode_name},
};

/// The allowed domains of a classification, as the resolver keys them (normalized); none
/// unless it is policed.
pub fn domains(class: &Classification) -> BTreeSet<String> {
    match class {
        Classification::Policed(spec) => spec
            .domains()
            .filter_map(|(d, _)| domain::key(d.as_str()).ok())
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The mode and rules of a classification; None if it is not policed.
///
/// - Invalid labels: deny all.
/// - Policed: its address and CIDR rules, the IPs `domain_ips` holds for each allowed domain
///   (by normalized domain; a domain not resolved yet adds nothing) on that entry's port, and
///   its DNS servers `resolvers` on port 53 (it could not resolve its names otherwise).
pub fn rules(
    class: &Classification,
    domain_ips: &HashMap<String, BTreeSet<IpAddr>>,
    resolvers: &[IpAddr],
) -> Option<(Mode, BTreeSet<Rule>)> {
    match class {
        Classification::Unpoliced => None,
        Classification::Invalid(_) => {
            let p = Policy::deny_all();
            Some((p.mode, p.rules))
        }
        Classification::Policed(spec) => {
            let mut rules: BTreeSet<Rule> = spec.rules().collect();
            for (name, port) in spec.domains() {
                let Ok(key) = domain::key(name.as_str()) else {
                    continue;
                };
                for ip in domain_ips.get(&key).into_iter().flatten() {
                    if let Ok(r) = Rule::addr(*ip, port) {
                        rules.insert(r);
                    }
                }
            }
            for ip in resolvers {
                if let Ok(r) = Rule::addr(*ip, Some(53)) {
                    rules.insert(r);
                }
            }
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
    use crate::labels::{Capabilities, classify};

    fn class(pairs: &[(&str, &str)]) -> Classification {
        let labels: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        classify(&labels, Capabilities::default())
    }

    fn rule(s: &str) -> Rule {
        crate::policy::parse_ip_entry(s).unwrap().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn domains_are_the_normalized_allowed_names() {
        let c = class(&[("egress.allow", "Api.Example.COM:443,10.0.0.5,b.example")]);
        assert_eq!(
            domains(&c),
            BTreeSet::from(["api.example.com".to_owned(), "b.example".to_owned()])
        );
        assert!(domains(&class(&[])).is_empty());
        assert!(domains(&class(&[("egress.allow", "10.0.0.300")])).is_empty());
    }

    #[test]
    fn a_policed_container_gets_its_rules_its_domains_ips_and_its_dns_servers() {
        let c = class(&[("egress.allow", "10.0.0.5,api.example.com:443,slow.example")]);
        let ips = HashMap::from([(
            "api.example.com".to_owned(),
            BTreeSet::from([ip("192.0.2.1"), ip("2001:db8::1")]),
        )]);
        let (mode, rules) = rules(&c, &ips, &[ip("10.0.0.2")]).unwrap();
        assert_eq!(mode, Mode::Enforce);
        let want: BTreeSet<Rule> = [
            "10.0.0.5",
            "192.0.2.1:443",
            "[2001:db8::1]:443",
            "10.0.0.2:53",
        ]
        .into_iter()
        .map(rule)
        .collect();
        assert_eq!(rules, want, "slow.example has no IPs yet and adds nothing");
    }

    #[test]
    fn audit_mode_is_kept() {
        let c = class(&[("egress.allow", "10.0.0.5"), ("egress.mode", "audit")]);
        let (mode, _) = rules(&c, &HashMap::new(), &[]).unwrap();
        assert_eq!(mode, Mode::Audit);
        assert_eq!(mode_label(&c), "audit");
    }

    #[test]
    fn invalid_labels_deny_all_and_unlabelled_containers_are_not_policed() {
        let bad = class(&[("egress.allow", "10.0.0.300")]);
        let (mode, rules) = rules(&bad, &HashMap::new(), &[ip("10.0.0.2")]).unwrap();
        assert_eq!((mode, rules.len()), (Mode::Enforce, 0), "not even DNS");
        assert_eq!(mode_label(&bad), "deny-all (invalid egress labels)");
        let none = class(&[]);
        assert_eq!(
            super::rules(&none, &HashMap::new(), &[ip("10.0.0.2")]),
            None
        );
        assert_eq!(mode_label(&none), "unpoliced");
    }
}
