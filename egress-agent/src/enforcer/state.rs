//! Reading policies and counters back out of the maps: used when an agent restarts on pinned
//! state and by the read-only `status` command.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, lpm_trie::LpmTrie};
use egress_common::{
    event::{Reason, Verdict},
    policy::CgroupPolicy,
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    stats,
};

use super::{Applied, keys};
use crate::{
    policy::{Policy, Rule},
    sys::cgroup::CgroupId,
};

/// Policies and stray rules found in the maps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PinnedView {
    pub policies: BTreeMap<CgroupId, Applied>,
    /// Rules whose policy id no policed cgroup uses, by policy id.
    pub orphans: BTreeMap<u32, Vec<Rule>>,
}

/// Reads every policy and rule.
pub fn read<T: Borrow<MapData>>(
    cgroups: &HashMap<T, u64, CgroupPolicy>,
    allow4: &HashMap<T, Ip4RuleKey, RuleValue>,
    allow6: &HashMap<T, Ip6RuleKey, RuleValue>,
    cidr4: &LpmTrie<T, Cidr4Data, RuleValue>,
    cidr6: &LpmTrie<T, Cidr6Data, RuleValue>,
) -> PinnedView {
    let mut rules: BTreeMap<u32, BTreeSet<Rule>> = BTreeMap::new();
    let mut add = |decoded: Option<(u32, Rule)>| {
        if let Some((id, r)) = decoded {
            rules.entry(id).or_default().insert(r);
        }
    };
    for k in allow4.keys().flatten() {
        add(keys::decode_v4(&k));
    }
    for k in allow6.keys().flatten() {
        add(keys::decode_v6(&k));
    }
    for k in cidr4.keys().flatten() {
        add(keys::decode_cidr4(k.prefix_len(), &k.data()));
    }
    for k in cidr6.keys().flatten() {
        add(keys::decode_cidr6(k.prefix_len(), &k.data()));
    }
    let mut policies = BTreeMap::new();
    for (cg, v) in cgroups.iter().flatten() {
        let own = rules.get(&v.policy_id).cloned().unwrap_or_default();
        policies.insert(
            cg,
            Applied {
                policy_id: v.policy_id,
                policy: Policy {
                    mode: v.mode(),
                    rules: own,
                },
            },
        );
    }
    let used: BTreeSet<u32> = policies.values().map(|a: &Applied| a.policy_id).collect();
    let orphans = rules
        .into_iter()
        .filter(|(id, _)| !used.contains(id))
        .map(|(id, r)| (id, r.into_iter().collect()))
        .collect();
    PinnedView { policies, orphans }
}

/// Counters, summed over CPUs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Connects and sends of policed cgroups that a rule allowed.
    pub allowed: u64,
    /// Denials, by reason.
    pub denied: BTreeMap<&'static str, u64>,
    /// Audit-mode hits (would have been denied), by reason.
    pub audited: BTreeMap<&'static str, u64>,
    /// Events dropped because the ring buffer was full.
    pub events_lost: u64,
}

impl Stats {
    pub fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }

    pub fn audited_total(&self) -> u64 {
        self.audited.values().sum()
    }
}

/// The name of a reason as logs and status show it.
pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::NoMatchingRule => "no_matching_rule",
    }
}

const REASONS: [Reason; 1] = [Reason::NoMatchingRule];

/// Reads the per-CPU counters.
pub fn read_stats<T: Borrow<MapData>>(m: &PerCpuArray<T, u64>) -> Result<Stats, MapError> {
    let sum = |slot: u32| -> Result<u64, MapError> { Ok(m.get(&slot, 0)?.iter().sum()) };
    let mut s = Stats {
        allowed: sum(stats::ALLOWED)?,
        events_lost: sum(stats::EVENTS_LOST)?,
        ..Default::default()
    };
    for r in REASONS {
        s.denied
            .insert(reason_name(r), sum(stats::slot(Verdict::Denied, r))?);
        s.audited
            .insert(reason_name(r), sum(stats::slot(Verdict::Audited, r))?);
    }
    Ok(s)
}
