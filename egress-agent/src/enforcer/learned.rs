//! The learned layer of a container's policy: the addresses the DNS proxy learned from the
//! container's own answers, as rules. The reconciler's policy (labels, policy file, resolved
//! names) and this layer are kept apart and written together, so neither replaces the other:
//! a full write of the container's policy keeps what was learned, and the proxy replaces its
//! layer without knowing the rest.

use std::collections::{BTreeMap, BTreeSet};

use egress_common::container::ContainerId;
use egress_policy::policy::{Policy, Rule};

use super::{Enforcer, Owner, Result, Targets};

/// Per policed container: the policy the reconciler gave it, and its learned rules.
#[derive(Default)]
pub struct LearnedLayer {
    given: BTreeMap<ContainerId, Policy>,
    /// Sorted, as the proxy's set gave them (a slice: a thousand containers' sets in B-trees
    /// would cost twice the memory).
    learned: BTreeMap<ContainerId, Box<[Rule]>>,
}

impl LearnedLayer {
    /// Remembers `policy` as the container's given policy; returns it with the learned rules.
    pub fn with_learned(&mut self, container: &ContainerId, policy: &Policy) -> Policy {
        self.given.insert(*container, policy.clone());
        merged(policy, self.learned.get(container).map(|r| &r[..]))
    }

    /// Forgets the container (it is gone or no longer policed).
    pub fn forget(&mut self, container: &ContainerId) {
        self.given.remove(container);
        self.learned.remove(container);
    }
}

/// `policy` with the learned rules `extra`.
fn merged(policy: &Policy, extra: Option<&[Rule]>) -> Policy {
    match extra {
        Some(extra) if !extra.is_empty() => {
            Policy::new(policy.mode, policy.rules.iter().chain(extra).copied())
                .with_loopback(policy.loopback)
                .with_notes(policy.notes)
        }
        _ => policy.clone(),
    }
}

impl Enforcer {
    /// Replaces the learned rules of `owner` (a policed container) with `rules` and writes its
    /// policy with them: only what changed is written (nothing, if the rules are the ones it
    /// has). False, writing nothing, if the owner is no policed container.
    pub fn set_learned_rules(&mut self, owner: Owner, rules: BTreeSet<Rule>) -> Result<bool> {
        let Owner::Container(container) = owner else {
            return Ok(false);
        };
        let Some(Some(policy_id)) = self.containers.get(&container).copied() else {
            return Ok(false);
        };
        let Some(given) = self.learned.given.get(&container).cloned() else {
            return Ok(false);
        };
        if self
            .learned
            .learned
            .get(&container)
            .is_some_and(|had| had.iter().eq(rules.iter()))
        {
            return Ok(true);
        }
        let rules: Box<[Rule]> = rules.into_iter().collect();
        let policy = merged(&given, Some(&rules));
        let targets = Targets {
            container: Some(&container),
            cgroups: &[],
        };
        self.write_policy(owner, policy_id, &policy, &targets)?;
        // Recorded once written: after a failed write the old rules stay recorded, so the proxy
        // asking again with the same rules writes them again (never skipped as unchanged while
        // the maps still hold an address it let go of).
        self.learned.learned.insert(container, rules);
        Ok(true)
    }
}
