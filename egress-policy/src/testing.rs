//! Helpers of the unit tests.

use std::collections::HashMap;

use crate::{
    labels::{Capabilities, Classification, classify},
    policy::{Rule, parse_ip_entry},
};

/// The classification of a container with these labels (wildcards allowed).
pub(crate) fn class(pairs: &[(&str, &str)]) -> Classification {
    let labels: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    classify(&labels, Capabilities { wildcards: true })
}

/// An address entry as a rule.
pub(crate) fn rule(s: &str) -> Rule {
    parse_ip_entry(s).unwrap().unwrap()
}
