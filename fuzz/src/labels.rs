//! `labels`: a container's labels, as the agent reads them ([`labels::classify`], the image
//! screen, [`policy_file::judge`] without a file), and each `egress.allow` item alone.
//!
//! Input: UTF-8 text, one label per line, `key=value` (split at the first `=`; a line without
//! one is a key with an empty value). `A`, `M` and `D` stand for `egress.allow`, `egress.mode`
//! and `egress.dns`, so the fuzzer reaches the agent's keys in one byte. A line starting with
//! `!` is a label the image has too (it counts as the image's); `?` one only the image has.

use std::{collections::HashMap, net::IpAddr};

use egress_policy::{
    dns::{DnsMode, DnsPolicy},
    labels::{
        self, ALLOW_LABEL, AllowEntry, Capabilities, Classification, DNS_LABEL, ImageLabels,
        KeyKind, MODE_LABEL,
    },
    policy_file::{self, ContainerLabels},
};

pub const NO_WILDCARDS: Capabilities = Capabilities { wildcards: false };
pub const WILDCARDS: Capabilities = Capabilities { wildcards: true };

/// The container's labels and its image's, read from the input (see the module docs).
pub struct Labels {
    pub container: HashMap<String, String>,
    pub image: HashMap<String, String>,
}

pub fn read(text: &str) -> Labels {
    let mut out = Labels {
        container: HashMap::new(),
        image: HashMap::new(),
    };
    for line in text.lines() {
        let (to_container, to_image, line) = match line.as_bytes().first() {
            Some(b'!') => (true, true, &line[1..]),
            Some(b'?') => (false, true, &line[1..]),
            _ => (true, false, line),
        };
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match key {
            "A" => ALLOW_LABEL,
            "M" => MODE_LABEL,
            "D" => DNS_LABEL,
            k => k,
        };
        if to_container {
            out.container.insert(key.to_owned(), value.to_owned());
        }
        if to_image {
            out.image.insert(key.to_owned(), value.to_owned());
        }
    }
    out
}

pub fn run(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let l = read(text);
    for caps in [NO_WILDCARDS, WILDCARDS] {
        let class = labels::classify(&l.container, caps);
        assert_eq!(
            matches!(class, Classification::Unpoliced),
            !labels::is_policed(&l.container),
            "policed exactly when a policy label is there"
        );
        check_classification(&class, caps);
        let image_labels = [
            ImageLabels::Known(l.image.clone()),
            ImageLabels::Unknown("not read".into()),
        ];
        for image in &image_labels {
            for (trusted, operator_rules) in [(false, false), (false, true), (true, false)] {
                let screened = labels::screen(&l.container, image, trusted, operator_rules);
                for i in &screened.ignored {
                    assert!(l.container.contains_key(&i.label));
                    assert!(!screened.labels.contains_key(&i.label));
                    let _ = i.to_string();
                }
                check_classification(&labels::classify(&screened.labels, caps), caps);
            }
            let c = ContainerLabels {
                name: "c",
                labels: &l.container,
                image: "busybox",
                image_id: None,
                image_labels: image,
            };
            let verdict = policy_file::judge(None, &c, caps);
            check_classification(&verdict.classification, caps);
        }
    }
    for (key, value) in &l.container {
        let _ = KeyKind::of(key);
        for item in value.split(',') {
            check_entry(item);
        }
    }
}

/// One allow entry alone: an error names its token; an entry prints as text that parses back
/// to it (as [`AllowEntry`]'s `Display` promises).
pub fn check_entry(item: &str) {
    match labels::parse_allow_entry(item, WILDCARDS) {
        Ok(entry) => check_round_trip(&entry, WILDCARDS),
        Err(p) => {
            assert_eq!(p.token, item.trim());
            let _ = p.to_string();
        }
    }
}

fn check_round_trip(entry: &AllowEntry, caps: Capabilities) {
    let shown = entry.to_string();
    assert_eq!(
        labels::parse_allow_entry(&shown, caps).as_ref(),
        Ok(entry),
        "`{shown}` does not parse back to {entry:?}"
    );
}

/// What must hold of any classification, and the DNS proxy's use of it.
pub fn check_classification(class: &Classification, caps: Capabilities) {
    match class {
        Classification::Unpoliced => {}
        Classification::Invalid(errors) => {
            assert!(!errors.is_empty(), "invalid without an error");
            for e in errors {
                let _ = e.to_string();
            }
        }
        Classification::Policed(spec) => {
            if !caps.wildcards {
                assert_eq!(
                    spec.wildcards().count(),
                    0,
                    "a wildcard without the capability"
                );
            }
            for (i, entry) in spec.entries.iter().enumerate() {
                assert!(!spec.entries[..i].contains(entry), "{entry} twice");
                check_round_trip(entry, caps);
            }
            let _ = spec.rules().count() + spec.domains().count();
        }
    }
    for default in [DnsMode::Learn, DnsMode::Resolve] {
        let Some(policy) = DnsPolicy::of(class, default) else {
            assert!(matches!(class, Classification::Unpoliced));
            continue;
        };
        let ip: IpAddr = [192, 0, 2, 1].into();
        for (pattern, _) in policy.names() {
            let name = pattern.name();
            for asked in [name.to_owned(), format!("a.{name}"), format!("a.b.{name}")] {
                let allowed = policy.allows(&asked).is_some();
                if pattern.matches(&asked) {
                    assert!(allowed, "`{asked}` matches {pattern} but is not allowed");
                }
                if policy.learns(&asked) {
                    assert!(allowed, "learns `{asked}` it does not allow");
                }
                assert_eq!(policy.rules_for(&asked, [ip]).is_empty(), !allowed);
            }
        }
    }
}
