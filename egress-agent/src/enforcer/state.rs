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
    maps,
    policy::{CgroupPolicy, FLAG_LOOPBACK, FLAG_UNCLASSIFIED, NO_RULES_POLICY_ID},
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    stats,
};

use super::{Applied, keys};
use crate::sys::cgroup::CgroupId;
use egress_common::container::ContainerId;
use egress_policy::policy::{Mode, Policy, Rule};

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
    /// The entry value of each owned policy id (from its container's or cgroup's entry).
    pub values: BTreeMap<u32, CgroupPolicy>,
    /// Rules per map, for `status`.
    pub rule_counts: BTreeMap<&'static str, usize>,
    /// The highest policy id found anywhere (owned or orphaned), 0 if none.
    pub highest_id: u32,
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

/// Typed handles on the maps [`read`] reads.
pub struct MapRefs<'a, T: Borrow<MapData>> {
    pub cgroups: &'a HashMap<T, u64, CgroupPolicy>,
    pub allow4: &'a HashMap<T, Ip4RuleKey, RuleValue>,
    pub allow6: &'a HashMap<T, Ip6RuleKey, RuleValue>,
    pub cidr4: &'a LpmTrie<T, Cidr4Data, RuleValue>,
    pub cidr6: &'a LpmTrie<T, Cidr6Data, RuleValue>,
    pub containers: &'a HashMap<T, ContainerKey, CgroupPolicy>,
    pub unpoliced: &'a HashMap<T, ContainerKey, u8>,
    pub path_policy: &'a HashMap<T, PathKey, CgroupPolicy>,
}

/// Reads every policy and rule.
pub fn read<T: Borrow<MapData>>(m: &MapRefs<'_, T>) -> PinnedView {
    let mut rules: BTreeMap<u32, BTreeSet<Rule>> = BTreeMap::new();
    let mut view = PinnedView::default();
    let mut add = |map: &'static str, decoded: Option<(u32, Rule)>| {
        *view.rule_counts.entry(map).or_default() += 1;
        if let Some((id, r)) = decoded {
            rules.entry(id).or_default().insert(r);
        }
    };
    for k in m.allow4.keys().flatten() {
        add(maps::ALLOW_V4, keys::decode_v4(&k));
    }
    for k in m.allow6.keys().flatten() {
        add(maps::ALLOW_V6, keys::decode_v6(&k));
    }
    for k in m.cidr4.keys().flatten() {
        add(maps::CIDR_V4, keys::decode_cidr4(k.prefix_len(), &k.data()));
    }
    for k in m.cidr6.keys().flatten() {
        add(maps::CIDR_V6, keys::decode_cidr6(k.prefix_len(), &k.data()));
    }
    // policy id -> mode, from whichever entry names it.
    let mut modes: BTreeMap<u32, Mode> = BTreeMap::new();
    for k in m.unpoliced.keys().flatten() {
        if let Some(id) = ContainerId::from_key(&k) {
            view.containers.insert(id, None);
        }
    }
    for (k, v) in m.containers.iter().flatten() {
        let Some(id) = ContainerId::from_key(&k) else {
            continue;
        };
        view.containers.insert(id, Some(v.policy_id));
        modes.insert(v.policy_id, v.mode().into());
        view.values.insert(v.policy_id, v);
    }
    for (k, v) in m.path_policy.iter().flatten() {
        view.path_owned.insert(k, v.policy_id);
        modes.insert(v.policy_id, v.mode().into());
        view.values.insert(v.policy_id, v);
    }
    let shared_ids: BTreeSet<u32> = view
        .containers
        .values()
        .flatten()
        .chain(view.path_owned.values())
        .copied()
        .collect();
    for (cg, v) in m.cgroups.iter().flatten() {
        view.cgroup_entries.insert(cg, v);
        if v.flags & FLAG_UNCLASSIFIED != 0
            || v.policy_id == NO_RULES_POLICY_ID
            || shared_ids.contains(&v.policy_id)
        {
            continue;
        }
        view.cgroup_owned.insert(cg, v.policy_id);
        modes.insert(v.policy_id, v.mode().into());
        view.values.insert(v.policy_id, v);
    }
    view.highest_id = rules
        .keys()
        .chain(modes.keys())
        .chain(view.cgroup_entries.values().map(|v| &v.policy_id))
        .copied()
        .max()
        .unwrap_or(0);
    for (id, mode) in modes {
        let own = rules.remove(&id).unwrap_or_default();
        let entry = view.values.get(&id);
        let policy = Policy::new(mode, own)
            .with_loopback(entry.is_some_and(|v| v.flags & FLAG_LOOPBACK != 0))
            .with_notes(entry.map(|v| v.notes).unwrap_or(0));
        view.policies.insert(id, policy);
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
    /// Inserts of the `cgroup_mkdir` tracepoint that found `EG_CGRP_POLICY` full.
    pub cgroup_mkdir_insert_failures: u64,
    /// The agent's failed inserts, by map (every map it writes, zero or not).
    pub insert_failures: BTreeMap<&'static str, u64>,
    /// Port-53 destinations rewritten to the DNS proxy.
    pub dns_redirected: u64,
    /// Port-53 destinations allowed as they were (a rule names them with port 53).
    pub dns_direct: u64,
    /// Redirects denied because the socket's origin could not be stored.
    pub dns_origin_failures: u64,
}

impl Stats {
    pub fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }

    pub fn audited_total(&self) -> u64 {
        self.audited.values().sum()
    }

    /// Every failed insert, the tracepoint's and the agent's.
    pub fn insert_failures_total(&self) -> u64 {
        self.cgroup_mkdir_insert_failures + self.insert_failures.values().sum::<u64>()
    }
}

/// The name of a reason as logs and status show it.
pub fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::NoMatchingRule => "no_matching_rule",
        Reason::Unclassified => "unclassified_container",
        Reason::PolicyNotWritten => "policy_not_written",
        Reason::DnsProxyNotReady => "dns_proxy_not_ready",
        Reason::SocketRefused => "socket_refused",
        Reason::SourceRoute => "source_route",
        Reason::UnjudgedPacket => "unjudged_packet",
    }
}

/// Reads the per-CPU counters.
pub fn read_stats<T: Borrow<MapData>>(m: &PerCpuArray<T, u64>) -> Result<Stats, MapError> {
    let sum = |slot: u32| -> Result<u64, MapError> { Ok(m.get(&slot, 0)?.iter().sum()) };
    let mut s = Stats {
        allowed: sum(stats::ALLOWED)?,
        events_lost: sum(stats::EVENTS_LOST)?,
        cgroup_mkdir_insert_failures: sum(stats::CGROUP_MKDIR_INSERT_FAILED)?,
        dns_redirected: sum(stats::DNS_REDIRECTED)?,
        dns_direct: sum(stats::DNS_DIRECT)?,
        dns_origin_failures: sum(stats::DNS_ORIGIN_FAILED)?,
        ..Default::default()
    };
    for (i, map) in stats::INSERT_FAILED_MAPS.into_iter().enumerate() {
        s.insert_failures
            .insert(map, sum(stats::INSERT_FAILED_BASE + i as u32)?);
    }
    for r in Reason::ALL {
        s.denied
            .insert(reason_name(r), sum(stats::slot(Verdict::Denied, r))?);
        s.audited
            .insert(reason_name(r), sum(stats::slot(Verdict::Audited, r))?);
    }
    Ok(s)
}
