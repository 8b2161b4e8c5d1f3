//! The maps, pinned by name: the agent points aya at its pin directory so that a restarted
//! agent reuses them. Each pinned map is a row of `egress_common::maps::MAPS` and takes its
//! size from that row's constant; the agent's unit tests check the object against the table
//! (the `map` macro wants its name as a literal).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use egress_common::{
    cgroup_path::{PATH_BUF, PathKey, PathWalk},
    container::ContainerKey,
    dns::{DnsOrigin, DnsRedirect},
    maps::{
        CGROUP_POLICY_ENTRIES, CONFIG_SLOTS, DNS_ORIGIN_ENTRIES, EVENTS_BYTES, MAX_ADDR_RULES,
        MAX_CIDR_RULES, MAX_CONTAINER_PARENTS, MAX_CONTAINERS, MAX_DNS_REDIRECTS, MAX_POLICY_PATHS,
        MAX_UNPOLICED, META_SLOTS,
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

#[map(name = "EG_PATH_POLICY")]
pub static PATH_POLICY: HashMap<PathKey, CgroupPolicy> = HashMap::pinned(MAX_POLICY_PATHS, 0);

#[map(name = "EG_CT_PARENTS")]
pub static CONTAINER_PARENTS: HashMap<PathKey, u32> = HashMap::pinned(MAX_CONTAINER_PARENTS, 0);

/// Written by the agent: the DNS proxy of each policy id.
#[map(name = "EG_DNS_REDIR")]
pub static DNS_REDIRECT: HashMap<u32, DnsRedirect> = HashMap::pinned(MAX_DNS_REDIRECTS, 0);

/// Socket cookie -> the destination its redirected DNS was sent to.
#[map(name = "EG_DNS_ORIG")]
pub static DNS_ORIGIN: LruHashMap<u64, DnsOrigin> = LruHashMap::pinned(DNS_ORIGIN_ENTRIES, 0);

/// Peer address given to a redirected IPv4 socket -> the destination asked (read by the agent).
#[map(name = "EG_DNS_PEER")]
pub static DNS_PEER: LruHashMap<u32, DnsOrigin> = LruHashMap::pinned(DNS_ORIGIN_ENTRIES, 0);

/// Per-CPU scratch space for the cgroup path a tracepoint reads (too big for the stack).
#[map(name = "EG_PATH_SCRATCH")]
pub static PATH_SCRATCH: PerCpuArray<[u8; PATH_BUF]> = PerCpuArray::with_max_entries(1, 0);

/// What `cgroup_mkdir` found in the new cgroup's path (in a map: too big for the stack, and
/// the verifier does not track what a map holds).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MkdirScan {
    pub walk: PathWalk,
    /// The policy of the deepest `--policy` path at or above the new cgroup, if `found`.
    pub policy: CgroupPolicy,
    pub found: u32,
    /// The length of the path to walk.
    pub len: u32,
}

#[map(name = "EG_MKDIR_SCAN")]
pub static MKDIR_SCAN: PerCpuArray<MkdirScan> = PerCpuArray::with_max_entries(1, 0);
