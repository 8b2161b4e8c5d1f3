//! `policy_file`: a policy file parsed from any text, and, when it parses, judged against a
//! container: one read from the input, and one made to match each of its rules.
//!
//! Input: UTF-8 text; the policy file, then optionally a line `---` and a container in the
//! `labels` target's format (its first line `name=...` names it).

use std::collections::HashMap;

use egress_policy::{
    labels::{Capabilities, Classification, ImageLabels},
    policy_file::{self, ContainerLabels, PolicyFile},
};

use crate::labels::{NO_WILDCARDS, WILDCARDS, check_classification};

pub fn run(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let (file, container) = match text.split_once("\n---\n") {
        Some((f, c)) => (f, c),
        None => (text, ""),
    };
    let mut read = crate::labels::read(container);
    let name = read.container.remove("name").unwrap_or_default();
    let parsed = [NO_WILDCARDS, WILDCARDS].map(|caps| (caps, PolicyFile::parse(file, caps)));
    for (caps, result) in &parsed {
        let f = match result {
            Ok(f) => f,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        for (i, rule) in f.rules().iter().enumerate() {
            assert_eq!(rule.index, i + 1);
            assert!(
                rule.name.is_some() || rule.label.is_some(),
                "a rule without selector"
            );
        }
        // The container of the input, then one that each rule selects.
        let mut containers = vec![(name.clone(), read.container.clone())];
        for rule in f.rules() {
            let mut labels = read.container.clone();
            if let Some(sel) = &rule.label {
                labels.insert(sel.key.clone(), sel.value.clone().unwrap_or_default());
                let _ = sel.to_string();
            }
            // As Docker writes names: with a leading `/`.
            let rule_name = rule
                .name
                .as_ref()
                .map_or_else(|| name.clone(), |n| format!("/{n}"));
            assert!(
                rule.matches(&rule_name, &labels),
                "rule #{} selects its own",
                rule.index
            );
            containers.push((rule_name, labels));
        }
        for (name, labels) in &containers {
            judge(f, name, labels, &read.image, *caps);
            if caps.wildcards {
                // Parsed with wildcards, applied without: fail closed, never drop them.
                judge(f, name, labels, &read.image, NO_WILDCARDS);
            }
        }
    }
}

fn judge(
    f: &PolicyFile,
    name: &str,
    labels: &HashMap<String, String>,
    image: &HashMap<String, String>,
    caps: Capabilities,
) {
    let r = f.resolve(name, labels, caps);
    assert_eq!(
        r.matched,
        f.matching(name, labels)
            .map(|r| r.index)
            .collect::<Vec<_>>()
    );
    if !r.matched.is_empty() {
        assert!(
            !matches!(r.classification, Classification::Unpoliced),
            "a container a rule selects is policed"
        );
    }
    check_classification(&r.classification, caps);
    assert_eq!(f.effective(name, labels, caps), r.classification);
    let trusted: Vec<String> = f.trusted_images().iter().map(|t| t.to_string()).collect();
    let images = std::iter::once("busybox").chain(trusted.iter().map(String::as_str));
    for image_ref in images {
        for image_labels in [
            ImageLabels::Known(image.clone()),
            ImageLabels::Unknown("not read".into()),
        ] {
            let c = ContainerLabels {
                name,
                labels,
                image: image_ref,
                image_id: None,
                image_labels: &image_labels,
            };
            let v = policy_file::judge(Some(f), &c, caps);
            check_classification(&v.classification, caps);
        }
    }
}
