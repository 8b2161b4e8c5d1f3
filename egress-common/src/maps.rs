//! Names and capacities of the maps (names stay under the kernel's 15-character limit), and
//! [`MAPS`], the one table of them. The eBPF side declares maps with these names and sizes; the
//! agent opens them, pins them under its pin directory and checks pinned maps against the table.

/// cgroup id (u64) -> [`crate::policy::CgroupPolicy`]. The only lookup an unpoliced cgroup pays.
/// Holds [`CGROUP_POLICY_ENTRIES`]: see there for who may use how much of it.
pub const CGROUP_POLICY: &str = "EG_CGRP_POLICY";
/// [`crate::rule::Ip4RuleKey`] -> [`crate::rule::RuleValue`]: exact IPv4 destinations.
pub const ALLOW_V4: &str = "EG_ALLOW_V4";
/// [`crate::rule::Ip6RuleKey`] -> [`crate::rule::RuleValue`]: exact IPv6 destinations.
pub const ALLOW_V6: &str = "EG_ALLOW_V6";
/// LPM trie of [`crate::rule::Cidr4Data`] -> [`crate::rule::RuleValue`]: IPv4 CIDR rules.
pub const CIDR_V4: &str = "EG_CIDR_V4";
/// LPM trie of [`crate::rule::Cidr6Data`] -> [`crate::rule::RuleValue`]: IPv6 CIDR rules.
pub const CIDR_V6: &str = "EG_CIDR_V6";
/// Ring buffer of [`crate::event::Event`] records (denials and audit hits).
pub const EVENTS: &str = "EG_EVENTS";
/// Per-CPU array of u64 counters indexed by [`crate::stats`].
pub const STATS: &str = "EG_STATS";
/// Array of u64: index 0 holds the [`crate::LAYOUT_VERSION`] the maps were created with.
pub const META: &str = "EG_META";
/// [`crate::container::ContainerKey`] -> [`crate::policy::CgroupPolicy`]: the policy each
/// policed container gets, written by the agent at Docker's `create` event, applied by the
/// `cgroup_mkdir` tracepoint to the container's cgroups the moment runc makes them. Only policed
/// containers are here (unpoliced ones are in [`UNPOLICED`]), so containers that need no
/// policy never take a slot that a policed one needs.
pub const CONTAINERS: &str = "EG_CONTAINERS";
/// [`crate::container::ContainerKey`] -> u8 ([`crate::container::UNPOLICED_MARK`]): the
/// containers the agent knows and does not police (no `egress.*` label). The tracepoint leaves
/// their cgroups alone instead of giving them the `--unclassified` default.
pub const UNPOLICED: &str = "EG_UNPOLICED";
/// Array of u64 settings the programs read (see `CONFIG_*`).
pub const CONFIG: &str = "EG_CONFIG";
/// [`crate::cgroup_path::PathKey`] -> [`crate::policy::CgroupPolicy`]: the policy of a
/// `--policy` cgroup by its path. The `cgroup_mkdir` tracepoint gives it to a new cgroup at that
/// path (a removed and re-made cgroup) and to every new cgroup below it, the deepest such path
/// winning, before any process runs in them.
pub const PATH_POLICY: &str = "EG_PATH_POLICY";
/// [`crate::cgroup_path::PathKey`] -> u32 (`cgroup_path::PARENT_*` bits): this dockerd's cgroup
/// parents. A cgroup that looks like a container of no known container gets the unclassified
/// default only when its parent is one of them.
pub const CONTAINER_PARENTS: &str = "EG_CT_PARENTS";
/// Policy id (u32) -> [`crate::dns::DnsRedirect`]: where the port-53 traffic of the policy's
/// cgroups goes (the agent's DNS proxy). Written by the agent; a policy without an entry has
/// its DNS denied ([`crate::event::Reason::DnsProxyNotReady`]).
pub const DNS_REDIRECT: &str = "EG_DNS_REDIR";
/// LRU hash of socket cookie (u64) -> [`crate::dns::DnsOrigin`]: the destination a socket's
/// redirected DNS was sent to, written by the connect and sendmsg programs, read by the
/// recvmsg and getpeername programs. LRU: a socket that is gone needs no delete.
pub const DNS_ORIGIN: &str = "EG_DNS_ORIG";
/// LRU hash of peer address (u32, network order, see [`crate::dns::peer_addr`]) ->
/// [`crate::dns::DnsOrigin`]: the same destination, under the loopback source address the
/// programs gave the redirected IPv4 socket, so that the DNS proxy, which sees that address as
/// its client's, forwards the question to the server the application asked.
pub const DNS_PEER: &str = "EG_DNS_PEER";

/// How many cgroups the agent polices on its own (`--policy`) at most: its share of
/// [`CGROUP_POLICY`]. It refuses more, so that they never take the room of container cgroups.
pub const MAX_POLICED_CGROUPS: u32 = 16_384;
/// Capacity of [`CGROUP_POLICY`]: the agent's own share ([`MAX_POLICED_CGROUPS`]) plus one entry
/// per policed container ([`MAX_CONTAINERS`], as many as [`CONTAINERS`] holds), which the
/// `cgroup_mkdir` tracepoint writes when runc makes the container's cgroup. So a registered
/// container's cgroup always finds room, unless containers have cgroups of their own below
/// theirs, many unregistered containers are denied as unclassified at once, or the map was
/// filled from outside; then the tracepoint's insert fails, is counted
/// ([`crate::stats::CGROUP_MKDIR_INSERT_FAILED`]) and reported as a notice
/// ([`crate::event::Notice::CgroupMapFull`]), and the agent fails the cgroup closed.
pub const CGROUP_POLICY_ENTRIES: u32 = MAX_POLICED_CGROUPS + MAX_CONTAINERS;
/// Exact-address rules over all policies, per family.
pub const MAX_ADDR_RULES: u32 = 262_144;
/// CIDR rules over all policies, per family.
pub const MAX_CIDR_RULES: u32 = 16_384;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Slot in [`META`] that holds the layout version.
pub const META_LAYOUT_SLOT: u32 = 0;
/// Number of slots in [`META`].
pub const META_SLOTS: u32 = 4;
/// Policed containers the agent can know at once ([`CONTAINERS`]).
pub const MAX_CONTAINERS: u32 = 16_384;
/// Unpoliced containers the agent can know at once ([`UNPOLICED`]).
pub const MAX_UNPOLICED: u32 = 16_384;
/// `--policy` cgroup paths.
pub const MAX_POLICY_PATHS: u32 = 1024;
/// Docker cgroup parents (the driver's default, every `--cgroup-parent` seen).
pub const MAX_CONTAINER_PARENTS: u32 = 1024;
/// Policies with a DNS redirect at once ([`DNS_REDIRECT`]): one per policed container.
pub const MAX_DNS_REDIRECTS: u32 = MAX_CONTAINERS;
/// Sockets whose redirected DNS destination is remembered at once ([`DNS_ORIGIN`]); the least
/// recently used goes first.
pub const DNS_ORIGIN_ENTRIES: u32 = 65_536;
/// [`CONFIG`] slot: what a new container cgroup gets when the agent has not classified its
/// container: [`UNCLASSIFIED_ALLOW`] or [`UNCLASSIFIED_DENY`] (the default, 0, denies).
pub const CONFIG_UNCLASSIFIED: u32 = 0;
/// Number of slots in [`CONFIG`].
pub const CONFIG_SLOTS: u32 = 4;
pub const UNCLASSIFIED_DENY: u64 = 0;
pub const UNCLASSIFIED_ALLOW: u64 = 1;

/// A map's type, by the kernel's `bpf_map_type` number.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PerCpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
    RingBuf = 27,
}

/// One pinned map: what the eBPF object declares and what a pinned map must look like to be
/// reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn sz<T>() -> u32 {
    core::mem::size_of::<T>() as u32
}

/// The key size of an LPM trie whose key data is `T`: the prefix length (u32), then the data.
const fn lpm_key<T>() -> u32 {
    sz::<u32>() + sz::<T>()
}

const fn spec(
    name: &'static str,
    kind: MapKind,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> MapSpec {
    MapSpec {
        name,
        kind,
        key_size,
        value_size,
        max_entries,
    }
}

/// Every pinned map, in the order `status` shows them: the one table the loader's layout
/// check, `status` and the tests read. A new map is a row here (with its name and size
/// constants above) and its definition in `egress-ebpf/src/maps.rs`, which takes its size from
/// the same constant.
pub const MAPS: &[MapSpec] = {
    use crate::{
        cgroup_path::PathKey,
        container::ContainerKey,
        dns::{DnsOrigin, DnsRedirect},
        policy::CgroupPolicy,
        rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    };
    use MapKind::*;
    let policy = sz::<CgroupPolicy>();
    let rule = sz::<RuleValue>();
    &[
        spec(
            CGROUP_POLICY,
            Hash,
            sz::<u64>(),
            policy,
            CGROUP_POLICY_ENTRIES,
        ),
        spec(ALLOW_V4, Hash, sz::<Ip4RuleKey>(), rule, MAX_ADDR_RULES),
        spec(ALLOW_V6, Hash, sz::<Ip6RuleKey>(), rule, MAX_ADDR_RULES),
        spec(
            CIDR_V4,
            LpmTrie,
            lpm_key::<Cidr4Data>(),
            rule,
            MAX_CIDR_RULES,
        ),
        spec(
            CIDR_V6,
            LpmTrie,
            lpm_key::<Cidr6Data>(),
            rule,
            MAX_CIDR_RULES,
        ),
        spec(EVENTS, RingBuf, 0, 0, EVENTS_BYTES),
        spec(
            STATS,
            PerCpuArray,
            sz::<u32>(),
            sz::<u64>(),
            crate::stats::SLOTS,
        ),
        spec(META, Array, sz::<u32>(), sz::<u64>(), META_SLOTS),
        spec(
            CONTAINERS,
            Hash,
            sz::<ContainerKey>(),
            policy,
            MAX_CONTAINERS,
        ),
        spec(CONFIG, Array, sz::<u32>(), sz::<u64>(), CONFIG_SLOTS),
        spec(
            UNPOLICED,
            Hash,
            sz::<ContainerKey>(),
            sz::<u8>(),
            MAX_UNPOLICED,
        ),
        spec(PATH_POLICY, Hash, sz::<PathKey>(), policy, MAX_POLICY_PATHS),
        spec(
            CONTAINER_PARENTS,
            Hash,
            sz::<PathKey>(),
            sz::<u32>(),
            MAX_CONTAINER_PARENTS,
        ),
        spec(
            DNS_REDIRECT,
            Hash,
            sz::<u32>(),
            sz::<DnsRedirect>(),
            MAX_DNS_REDIRECTS,
        ),
        spec(
            DNS_ORIGIN,
            LruHash,
            sz::<u64>(),
            sz::<DnsOrigin>(),
            DNS_ORIGIN_ENTRIES,
        ),
        spec(
            DNS_PEER,
            LruHash,
            sz::<u32>(),
            sz::<DnsOrigin>(),
            DNS_ORIGIN_ENTRIES,
        ),
    ]
};

/// The row of the map called `name`; None for a name that is not one of ours.
pub fn spec_of(name: &str) -> Option<&'static MapSpec> {
    MAPS.iter().find(|m| m.name == name)
}

/// The capacity (max_entries) of the map called `name`, for messages that say which map was full
/// and how big it is. None for a name that is not one of ours.
pub fn capacity(name: &str) -> Option<u32> {
    spec_of(name).map(|m| m.max_entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_has_a_capacity() {
        for m in MAPS {
            assert!(capacity(m.name).is_some_and(|c| c > 0), "{}", m.name);
            assert!(
                m.name.len() <= 15,
                "{} is longer than the kernel allows",
                m.name
            );
        }
        assert_eq!(capacity("EG_NOPE"), None);
    }

    #[test]
    fn names_are_unique_and_sizes_match_the_shared_types() {
        for (i, m) in MAPS.iter().enumerate() {
            assert!(
                MAPS[..i].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
        }
        let key = |n| spec_of(n).unwrap().key_size;
        assert_eq!(key(CIDR_V4), 16, "LPM key is prefix_len + 12 data bytes");
        assert_eq!(key(CIDR_V6), 28);
        assert_eq!(key(PATH_POLICY), 16, "path key: hash, length, padding");
    }
}
