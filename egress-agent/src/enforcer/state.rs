//! Reading policies and counters back out of the maps: used when an agent restarts on pinned
//! state and by the read-only `status` command.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
};

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, lpm_trie::LpmTrie};
use egress_common::{
    cgroup_path::PathKey,
    container::ContainerKey,
    event::{Reason, Verdict},
    policy::{CgroupPolicy, FLAG_UNCLASSIFIED, FLAG_UNPOLICED},
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    stats,
};

use super::{Applied, keys};
use crate::{
    container::ContainerId,
    policy::{Mode, Policy, Rule},
    sys::cgroup::CgroupId,
};

/// Policies, their owners and stray rules found in the maps.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PinnedView {
    /// Policy id -> policy, for every policy a cgroup or container owns.
    pub policies: BTreeMap<u32, Policy>,
    /// Cgroups policed on their own, with their policy id.
    pub cgroup_owned: BTreeMap<CgroupId, u32>,
    /// Cgroup paths policed with everything below them, with their policy id.
    pub path_owned: BTreeMap<PathKey, u32>,
    /// Known containers: Some(policy id) if policed.
    pub containers: BTreeMap<ContainerId, Option<u32>>,
    /// Every cgroup entry (own, container and unclassified ones).
    pub cgroup_entries: BTreeMap<CgroupId, CgroupPolicy>,
    /// Rules whose policy id nobody owns, by policy id.
    pub orphans: BTreeMap<u32, Vec<Rule>>,
}

impl PinnedView {
    /// Cgroups whose entry comes from a policed path (theirs or an ancestor's), with the
    /// path's policy id.
    pub fn path_cgroups(&self) -> BTreeMap<CgroupId, u32> {
        let ids: BTreeSet<u32> = self.path_owned.values().copied().collect();
        self.cgroup_entries
            .iter()
            .filter(|(_, v)| v.flags & FLAG_UNCLASSIFIED == 0 && ids.contains(&v.policy_id))
            .map(|(cg, v)| (*cg, v.policy_id))
            .collect()
    }

    /// Policies of cgroups policed on their own or by a policed path, by cgroup.
    pub fn cgroup_policies(&self) -> BTreeMap<CgroupId, Applied> {
        self.cgroup_owned
            .iter()
            .map(|(cg, id)| (*cg, *id))
            .chain(self.path_cgroups())
            .collect::<BTreeMap<_, _>>()
            .iter()
            .filter_map(|(cg, id)| {
                Some((
                    *cg,
                    Applied {
                        policy_id: *id,
                        policy: self.policies.get(id)?.clone(),
                    },
                ))
            })
            .collect()
    }
}

/// Reads every policy and rule.
pub fn read<T: Borrow<MapData>>(
    cgroups: &HashMap<T, u64, CgroupPolicy>,
    allow4: &HashMap<T, Ip4RuleKey, RuleValue>,
    allow6: &HashMap<T, Ip6RuleKey, RuleValue>,
    cidr4: &LpmTrie<T, Cidr4Data, RuleValue>,
    cidr6: &LpmTrie<T, Cidr6Data, RuleValue>,
    containers: &HashMap<T, ContainerKey, CgroupPolicy>,
    path_policy: &HashMap<T, PathKey, CgroupPolicy>,
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
    let mut view = PinnedView::default();
    // policy id -> mode, from whichever entry names it.
    let mut modes: BTreeMap<u32, Mode> = BTreeMap::new();
    for (k, v) in containers.iter().flatten() {
        let Some(id) = ContainerId::from_key(&k) else {
            continue;
        };
        if v.flags & FLAG_UNPOLICED != 0 {
            view.containers.insert(id, None);
        } else {
            view.containers.insert(id, Some(v.policy_id));
            modes.insert(v.policy_id, v.mode());
        }
    }
    for (k, v) in path_policy.iter().flatten() {
        view.path_owned.insert(k, v.policy_id);
        modes.insert(v.policy_id, v.mode());
    }
    let shared_ids: BTreeSet<u32> = view
        .containers
        .values()
        .flatten()
        .chain(view.path_owned.values())
        .copied()
        .collect();
    for (cg, v) in cgroups.iter().flatten() {
        view.cgroup_entries.insert(cg, v);
        if v.flags & FLAG_UNCLASSIFIED != 0 || shared_ids.contains(&v.policy_id) {
            continue;
        }
        view.cgroup_owned.insert(cg, v.policy_id);
        modes.insert(v.policy_id, v.mode());
    }
    for (id, mode) in modes {
        let own = rules.remove(&id).unwrap_or_default();
        view.policies.insert(id, Policy { mode, rules: own });
    }
    view.orphans = rules
        .into_iter()
        .map(|(id, r)| (id, r.into_iter().collect()))
        .collect();
    view
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
        Reason::Unclassified => "unclassified_container",
    }
}

const REASONS: [Reason; 2] = [Reason::NoMatchingRule, Reason::Unclassified];

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
