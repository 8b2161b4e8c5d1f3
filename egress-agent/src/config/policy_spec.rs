//! `--policy CGROUP[@MODE]=ENTRY[,ENTRY...]`: a plain cgroup and its policy.

use std::path::PathBuf;

use egress_policy::policy::{EntryError, Mode, Policy, UnknownMode, parse_ip_entries, parse_mode};

/// A `--policy` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub cgroup: PathBuf,
    pub policy: Policy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("--policy `{spec}`: expected CGROUP[@MODE]=ENTRY[,ENTRY...]")]
    Shape { spec: String },
    #[error("--policy `{spec}`: {source}")]
    Mode { spec: String, source: UnknownMode },
    #[error("--policy `{spec}`: {source}")]
    Entry { spec: String, source: EntryError },
}

/// Parses `CGROUP[@MODE]=ENTRY[,ENTRY...]`.
pub fn parse_policy_spec(spec: &str) -> Result<PolicySpec, SpecError> {
    let (left, entries) = spec.split_once('=').ok_or_else(|| SpecError::Shape {
        spec: spec.to_owned(),
    })?;
    let (cg, mode) = match left.rsplit_once('@') {
        Some((cg, m)) => (
            cg,
            parse_mode(m).map_err(|source| SpecError::Mode {
                spec: spec.to_owned(),
                source,
            })?,
        ),
        None => (left, Mode::Enforce),
    };
    if cg.trim().is_empty() {
        return Err(SpecError::Shape {
            spec: spec.to_owned(),
        });
    }
    let rules = parse_ip_entries(entries).map_err(|source| SpecError::Entry {
        spec: spec.to_owned(),
        source,
    })?;
    Ok(PolicySpec {
        cgroup: PathBuf::from(cg.trim()),
        policy: Policy::new(mode, rules),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s = parse_policy_spec("test/a@audit=127.0.0.2,10.0.0.0/8:53").unwrap();
        assert_eq!(s.cgroup, PathBuf::from("test/a"));
        assert_eq!(s.policy.mode, Mode::Audit);
        assert_eq!(s.policy.rules.len(), 2);
        let s = parse_policy_spec("/sys/fs/cgroup/x=").unwrap();
        assert_eq!(s.policy, Policy::deny_all());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        assert!(matches!(
            parse_policy_spec("nocgroup"),
            Err(SpecError::Shape { .. })
        ));
        assert!(matches!(
            parse_policy_spec("=10.0.0.1"),
            Err(SpecError::Shape { .. })
        ));
        let e = parse_policy_spec("a@block=10.0.0.1").unwrap_err();
        assert!(e.to_string().contains("block"), "{e}");
        let e = parse_policy_spec("a=10.0.0.1,10.0.0.300").unwrap_err();
        assert!(e.to_string().contains("10.0.0.300"), "{e}");
    }
}
