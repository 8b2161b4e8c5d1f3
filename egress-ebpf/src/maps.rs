//! The maps, pinned by name: the agent points aya at its pin directory so that a restarted
//! agent reuses them (names and sizes from `egress_common::maps`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use egress_common::{
    container::{ContainerKey, PATH_SCAN},
    maps::{
        CGROUP_POLICY_ENTRIES, CONFIG_SLOTS, EVENTS_BYTES, MAX_ADDR_RULES, MAX_CIDR_RULES,
        MAX_CONTAINERS, MAX_UNPOLICED, META_SLOTS,
    },
    policy::CgroupPolicy,
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    stats,
};

#[map(name = "EG_CGRP_POLICY")]
pub static CGROUP_POLICY: HashMap<u64, CgroupPolicy> = HashMap::pinned(CGROUP_POLICY_ENTRIES, 0);

#[map(name = "EG_ALLOW_V4")]
pub static ALLOW_V4: HashMap<Ip4RuleKey, RuleValue> = HashMap::pinned(MAX_ADDR_RULES, 0);

#[map(name = "EG_ALLOW_V6")]
pub static ALLOW_V6: HashMap<Ip6RuleKey, RuleValue> = HashMap::pinned(MAX_ADDR_RULES, 0);

#[map(name = "EG_CIDR_V4")]
pub static CIDR_V4: LpmTrie<Cidr4Data, RuleValue> = LpmTrie::pinned(MAX_CIDR_RULES, 0);

#[map(name = "EG_CIDR_V6")]
pub static CIDR_V6: LpmTrie<Cidr6Data, RuleValue> = LpmTrie::pinned(MAX_CIDR_RULES, 0);

#[map(name = "EG_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

#[map(name = "EG_STATS")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::pinned(stats::SLOTS, 0);

/// Written by the agent only; declared here so that it is created and pinned with the rest.
#[map(name = "EG_META")]
pub static META: Array<u64> = Array::pinned(META_SLOTS, 0);

#[map(name = "EG_CONTAINERS")]
pub static CONTAINERS: HashMap<ContainerKey, CgroupPolicy> = HashMap::pinned(MAX_CONTAINERS, 0);

/// Known unpoliced containers (the value is `egress_common::container::UNPOLICED_MARK`).
#[map(name = "EG_UNPOLICED")]
pub static UNPOLICED: HashMap<ContainerKey, u8> = HashMap::pinned(MAX_UNPOLICED, 0);

#[map(name = "EG_CONFIG")]
pub static CONFIG: Array<u64> = Array::pinned(CONFIG_SLOTS, 0);

/// Per-CPU scratch space for the cgroup path a tracepoint reads (too big for the stack).
#[map(name = "EG_PATH_SCRATCH")]
pub static PATH_SCRATCH: PerCpuArray<[u8; PATH_SCAN]> = PerCpuArray::with_max_entries(1, 0);
