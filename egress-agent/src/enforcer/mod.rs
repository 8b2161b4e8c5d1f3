//! The loaded programs and their maps: load or reuse the pinned state, attach, and change
//! policies. One [`Enforcer`] owns the maps; the daemon wraps it in one task
//! (`crate::owner`) so that nothing else writes to them.
//!
//! **Failing closed.** Whatever insert fails, the owner of the policy ends up denied, never
//! unpoliced, and the failure is counted (`egress_common::stats::INSERT_FAILED_BASE`, shown by
//! `status`) and returned as one [`FailedClosed`] error naming the owner, what did not fit, the
//! map and its capacity, and what was done:
//!
//! - a rule that does not fit (or a stale rule that will not go): the owner's entries get
//!   `FLAG_DENY_ALL` (deny everything; it needs no rule entries) until a later write of the
//!   policy succeeds in full; the rules added by the failed write are rolled back;
//! - a container entry that does not fit in `EG_CONTAINERS`: the container cannot be
//!   registered for the tracepoint, so until it fits new container cgroups the agent does not
//!   know get the unclassified default *deny* (even with `--unclassified allow`), and its
//!   cgroups that exist get their entries directly;
//! - an unpoliced container that does not fit in `EG_UNPOLICED`: its new cgroups get the
//!   unclassified default (with `deny`: denied) until the agent removes their entries;
//! - a container cgroup entry that does not fit in `EG_CGRP_POLICY` (here or in the
//!   `cgroup_mkdir` tracepoint, which reports it as a notice, see [`notices`]): the programs
//!   would not judge that cgroup at all, so it is frozen and its processes are killed, now and
//!   whenever one joins it (`crate::sys::cgroup_kill`); for a cgroup of the agent's own
//!   (`--policy`) the error says it is not policed (the agent refuses to start with it).
//!
//! The agent's own inserts into `EG_CGRP_POLICY` stop short of its capacity: it polices at most
//! `MAX_POLICED_CGROUPS` cgroups of its own, the rest is kept for container cgroups (see
//! `egress_common::maps::CGROUP_POLICY_ENTRIES`). Unpoliced containers live in `EG_UNPOLICED`,
//! so they never take the room of policed ones in `EG_CONTAINERS`.
//!
//! **Keeping entries in step.** A policy's flags and mode live in every cgroup entry that points
//! at it, including those the tracepoint wrote. The enforcer keeps an index of them
//! ([`index::CgroupIndex`]) and rewrites them all when the value changes.
//!
//! **DNS redirects.** Each owner may have a DNS redirect ([`Enforcer::set_dns_redirect`]): the
//! proxy port its cgroups' port-53 traffic goes to (`EG_DNS_REDIR`, keyed by policy id; see
//! `egress_common::dns`). It follows the owner's policy id (written under a new id before any
//! entry points at it, deleted with the policy) and is found again by a restarted agent. An
//! owner without one has its DNS denied (`dns_proxy_not_ready`).
//!
//! **Policy ids** come from [`ids::PolicyIds`]: handed out in increasing order, never one whose
//! rules may still be in the maps, so a removal that fails part way leaks nothing into the next
//! owner.

mod attach;
pub mod containers;
mod dns;
mod error;
pub mod ids;
pub mod index;
pub mod layout;
mod learned;
mod notices;
mod state;
#[cfg(test)]
mod tables;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf, lpm_trie::LpmTrie,
    },
};
use egress_common::{
    cgroup_path::PathKey,
    container::{ContainerKey, UNPOLICED_MARK},
    dns::DnsRedirect,
    maps,
    policy::{CgroupPolicy, FLAG_UNCLASSIFIED, NO_RULES_POLICY_ID, NOTE_KILLED},
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    stats,
};
use tracing::{debug, error, info, warn};

use self::{
    containers::ContainerTable,
    dns::Redirects,
    error::is_not_found,
    ids::{Leftover, PolicyIds},
    index::CgroupIndex,
    keys::{RuleKey, encode, lpm},
    layout::{PinDir, PinnedState},
};
pub use egress_common::rule::keys;

pub use self::{
    error::{EnforcerError, FailedClosed, Owner},
    state::{MapRefs, PinnedView, Stats, read as read_view, read_stats, reason_name},
};
use crate::sys::{
    cgroup::{self, CgroupId},
    cgroup_kill,
    kernel_path::KernelPath,
    mounts,
};
use egress_common::container::ContainerId;
use egress_policy::policy::{Policy, Rule};

/// The eBPF object built by `build.rs` from `egress-ebpf`.
/// (`egress_toolchain::EBPF_BIN` is its name.)
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress"));

/// Where to pin and where to attach.
#[derive(Debug, Clone)]
pub struct EnforcerConfig {
    /// Directory in bpffs for the maps and links.
    pub pin_dir: PathBuf,
    /// cgroup v2 directory to attach the programs to. They run for every socket created in it
    /// or any cgroup below it, including cgroups created later.
    pub attach_cgroup: PathBuf,
}

pub type Result<T, E = EnforcerError> = std::result::Result<T, E>;

/// A policy with the id its rules are stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub policy_id: u32,
    pub policy: Policy,
}

/// What [`Enforcer::open`] found and did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub mounted_bpffs: bool,
    /// True if pinned maps were reused (an agent ran before).
    pub reused: bool,
    /// Why an earlier pinned state was replaced, if it was.
    pub replaced: Option<String>,
    pub attach_cgroup: PathBuf,
    pub attach_cgroup_id: CgroupId,
    /// Link pins of earlier runs that were released after the new links were in place.
    pub released_links: usize,
    /// Policies (of cgroups and containers) found in the pinned maps.
    pub recovered_policies: usize,
    /// Rules found in the maps that belonged to no policed cgroup, removed.
    pub orphan_rules_removed: usize,
    /// Why the BPF LSM layer of the backstop is missing on this host, if it is.
    pub lsm_missing: Option<String>,
}

/// Typed handles on the maps.
struct Maps {
    cgroups: HashMap<MapData, u64, CgroupPolicy>,
    allow4: HashMap<MapData, Ip4RuleKey, RuleValue>,
    allow6: HashMap<MapData, Ip6RuleKey, RuleValue>,
    cidr4: LpmTrie<MapData, Cidr4Data, RuleValue>,
    cidr6: LpmTrie<MapData, Cidr6Data, RuleValue>,
    stats: PerCpuArray<MapData, u64>,
    containers: HashMap<MapData, ContainerKey, CgroupPolicy>,
    unpoliced: HashMap<MapData, ContainerKey, u8>,
    config: Array<MapData, u64>,
    path_policy: HashMap<MapData, PathKey, CgroupPolicy>,
    parents: HashMap<MapData, PathKey, u32>,
    dns_redirect: HashMap<MapData, u32, DnsRedirect>,
}

/// Most policies at once: one per cgroup of the agent's own and one per policed container.
const MAX_POLICIES: usize = (maps::MAX_POLICED_CGROUPS + maps::MAX_CONTAINERS) as usize;
/// `BPF_EXIST`: update an entry only if it is there (never makes one).
const BPF_EXIST: u64 = 2;

/// Where a policy's entry value goes: the owner's container entry and cgroups it names.
struct Targets<'a> {
    container: Option<&'a ContainerId>,
    cgroups: &'a [CgroupId],
}

/// The loaded programs, the maps, and the policies the maps hold.
///
/// A policy (mode and rules) is stored once under a policy id and owned either by one cgroup
/// ([`Enforcer::set_policy`]), by one cgroup path and everything below it
/// ([`Enforcer::set_path_policy`]) or by one container ([`Enforcer::set_container`]), whose
/// cgroups (its own and any it makes below it) all point at the container's policy id.
pub struct Enforcer {
    // Kept so that aya-log and later programs can find the object; links are pinned.
    _ebpf: Ebpf,
    maps: Maps,
    events: Option<RingBuf<MapData>>,
    /// Policy id -> its mode and the rules the maps hold under it.
    policies: BTreeMap<u32, Policy>,
    /// Policy id -> the value its entries hold (flags, mode, notes).
    values: BTreeMap<u32, CgroupPolicy>,
    /// Cgroups policed on their own (not as part of a container), with their policy id.
    cgroup_owned: BTreeMap<CgroupId, u32>,
    /// Cgroup paths policed with everything below them, with their policy id.
    path_owned: BTreeMap<PathKey, u32>,
    /// Known containers: Some(policy id) if policed, None if known and unpoliced.
    containers: ContainerTable,
    ids: PolicyIds,
    /// Cgroup entries by policy id (those the agent wrote and those the tracepoint reported).
    index: CgroupIndex,
    /// The lost-event counter when the index was last known complete.
    index_lost_mark: u64,
    /// (owner, map) of the inserts that failed at the owner's last write, to tell a new
    /// failure from one reported already.
    failing: BTreeSet<(Owner, &'static str)>,
    /// Policed containers `EG_CONTAINERS` had no room for, with their policy ids.
    unregistered: BTreeMap<ContainerId, u32>,
    /// `--unclassified deny` (the setting; see [`Enforcer::set_unclassified_deny`]).
    unclassified_deny: bool,
    /// What the config map holds, once written.
    config_deny: Option<bool>,
    /// The cgroup v2 mount, to find a cgroup's directory by id.
    cgroup_mount: Option<PathBuf>,
    /// Container cgroups that had no room for their entry, frozen, with their processes killed
    /// at every retry until the cgroup is gone.
    failed_cgroups: BTreeMap<CgroupId, PathBuf>,
    /// Links of an earlier run with an incompatible layout, still enforcing its policies.
    previous_links: Vec<PathBuf>,
    /// The DNS redirect of each owner (see [`Enforcer::set_dns_redirect`]).
    redirects: Redirects,
    /// The cgroup id of each policed path's directory: the [`Owner`] its DNS redirect is set
    /// for.
    path_dirs: BTreeMap<CgroupId, PathKey>,
    pin: PinDir,
    /// What containers' policies were given and what the DNS proxy learned for them.
    learned: learned::LearnedLayer,
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> EnforcerError {
    move |source| EnforcerError::Map { name, source }
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T> {
    let map = ebpf.take_map(name).ok_or(EnforcerError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl Enforcer {
    /// Loads the programs, reusing pinned maps of a compatible earlier run (so policies survive
    /// an agent restart), attaches them at `attach_cgroup` and pins the links. Links of earlier
    /// runs stay attached until the new ones are in place, so enforcement has no gap.
    pub fn open(cfg: &EnforcerConfig) -> Result<(Self, OpenReport)> {
        let mounted_bpffs = mounts::ensure_bpffs(&cfg.pin_dir)?;
        mounts::ensure_tracefs()?;
        let pin = PinDir::new(&cfg.pin_dir);
        let mut replaced = None;
        let reused = match pin.check() {
            PinnedState::Empty => false,
            PinnedState::Compatible => true,
            PinnedState::Incompatible(why) => {
                warn!(pin_dir = %pin.root.display(), reason = %why,
                    "pinned state is from an incompatible version; replacing it (its programs keep enforcing until the new ones have their policies)");
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                if pin.maps().exists() {
                    pin.retire_maps(stamp)?;
                }
                replaced = Some(why);
                false
            }
        };
        for dir in [pin.maps(), pin.links()] {
            std::fs::create_dir_all(&dir).map_err(|source| layout::PinIoError {
                path: dir.clone(),
                source,
            })?;
        }
        // No kernel BTF: the programs use no CO-RE relocations, and parsing vmlinux's BTF
        // would cost the agent ~15 MiB of memory for nothing.
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .default_map_pin_directory(pin.maps())
            .load(EBPF_OBJECT)?;
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => crate::observe::kernel_log::spawn(logger),
            Err(e) => debug!("no kernel-side log: {e}"),
        }

        let mut meta: Array<MapData, u64> = take(&mut ebpf, maps::META)?;
        meta.set(maps::META_LAYOUT_SLOT, egress_common::LAYOUT_VERSION, 0)
            .map_err(map_err(maps::META))?;
        let maps = Maps {
            cgroups: take(&mut ebpf, maps::CGROUP_POLICY)?,
            allow4: take(&mut ebpf, maps::ALLOW_V4)?,
            allow6: take(&mut ebpf, maps::ALLOW_V6)?,
            cidr4: take(&mut ebpf, maps::CIDR_V4)?,
            cidr6: take(&mut ebpf, maps::CIDR_V6)?,
            stats: take(&mut ebpf, maps::STATS)?,
            containers: take(&mut ebpf, maps::CONTAINERS)?,
            unpoliced: take(&mut ebpf, maps::UNPOLICED)?,
            config: take(&mut ebpf, maps::CONFIG)?,
            path_policy: take(&mut ebpf, maps::PATH_POLICY)?,
            parents: take(&mut ebpf, maps::CONTAINER_PARENTS)?,
            dns_redirect: take(&mut ebpf, maps::DNS_REDIRECT)?,
        };
        let events: RingBuf<MapData> = take(&mut ebpf, maps::EVENTS)?;

        let attach_cgroup = cgroup::resolve(&cfg.attach_cgroup)?;
        let attach_cgroup_id = cgroup::id_of(&attach_cgroup)?;
        let attach::Attached {
            old_pins: old_links,
            lsm_missing,
        } = attach::attach_all(&mut ebpf, &attach_cgroup, attach_cgroup_id, &pin)?;
        // Same maps: the new programs already see every policy, the old links can go now.
        // New maps (replaced layout): the old programs keep enforcing the old policies until
        // the caller has re-applied them and calls `release_previous`.
        let (released_links, previous_links) = if replaced.is_none() {
            (pin.release(&old_links)?, Vec::new())
        } else {
            (0, old_links)
        };

        let mut enforcer = Self {
            _ebpf: ebpf,
            maps,
            events: Some(events),
            policies: BTreeMap::new(),
            values: BTreeMap::new(),
            cgroup_owned: BTreeMap::new(),
            path_owned: BTreeMap::new(),
            containers: ContainerTable::default(),
            ids: PolicyIds::new(MAX_POLICIES),
            index: CgroupIndex::default(),
            index_lost_mark: 0,
            failing: BTreeSet::new(),
            unregistered: BTreeMap::new(),
            unclassified_deny: true,
            config_deny: None,
            cgroup_mount: mounts::cgroup2_mount().ok(),
            failed_cgroups: BTreeMap::new(),
            previous_links,
            redirects: Redirects::default(),
            path_dirs: BTreeMap::new(),
            pin,
            learned: learned::LearnedLayer::default(),
        };
        let (recovered_policies, orphan_rules_removed) = enforcer.recover()?;
        let report = OpenReport {
            mounted_bpffs,
            reused,
            replaced,
            attach_cgroup,
            attach_cgroup_id,
            released_links,
            recovered_policies,
            orphan_rules_removed,
            lsm_missing,
        };
        info!(
            pin_dir = %enforcer.pin.root.display(),
            reused_pinned_maps = report.reused,
            attach_cgroup = %report.attach_cgroup.display(),
            released_old_links = report.released_links,
            recovered_policies = report.recovered_policies,
            orphan_rules_removed = report.orphan_rules_removed,
            "programs attached"
        );
        match &report.lsm_missing {
            None => info!(
                "backstop: raw, ping and non-TCP/UDP inet sockets refused (sock_create), source routes refused (setsockopt) and dropped (egress), other protocols judged at egress, non-IP address families refused (BPF LSM socket_create)"
            ),
            Some(why) => warn!(
                reason = %why,
                "backstop without its BPF LSM layer: raw, ping and non-TCP/UDP inet sockets refused (sock_create), source routes refused and dropped, other protocols judged at egress; AF_PACKET, AF_XDP and the other non-IP address families are NOT refused for policed containers"
            ),
        }
        Ok((enforcer, report))
    }

    /// Releases the links and maps of an earlier run whose layout was replaced (they kept
    /// enforcing its policies so far). Call it once the policies are re-applied. Returns the
    /// number of links released; nothing to do after a compatible restart.
    pub fn release_previous(&mut self) -> Result<usize> {
        let links = std::mem::take(&mut self.previous_links);
        let n = self.pin.release(&links)?;
        if n > 0 {
            info!(
                links = n,
                "released the programs and maps of the replaced layout"
            );
        }
        Ok(n)
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin.root
    }

    /// Takes the event ring buffer (once) for the event reader.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Rebuilds the bookkeeping from the maps and removes rules nobody refers to.
    fn recover(&mut self) -> Result<(usize, usize)> {
        let view = state::read(&state::MapRefs {
            cgroups: &self.maps.cgroups,
            allow4: &self.maps.allow4,
            allow6: &self.maps.allow6,
            cidr4: &self.maps.cidr4,
            cidr6: &self.maps.cidr6,
            containers: &self.maps.containers,
            unpoliced: &self.maps.unpoliced,
            path_policy: &self.maps.path_policy,
        });
        let mut orphans = 0;
        for (policy_id, rules) in &view.orphans {
            let mut left = BTreeSet::new();
            for rule in rules {
                match self.remove_rule(*policy_id, rule) {
                    Ok(()) => orphans += 1,
                    Err(_) => {
                        left.insert(Leftover::Rule(*rule));
                    }
                }
            }
            // Never hand the id out while its rules are there.
            self.ids.release(*policy_id, left);
        }
        if orphans > 0 {
            warn!(
                rules = orphans,
                "removed allow rules that belonged to no policed cgroup or container"
            );
        }
        self.policies = view.policies;
        self.values = view.values;
        self.cgroup_owned = view.cgroup_owned;
        self.path_owned = view.path_owned;
        self.containers = view.containers.into();
        self.ids
            .recover(self.policies.keys().copied(), view.highest_id);
        self.index.rebuild(
            view.cgroup_entries
                .iter()
                .filter(|(_, v)| {
                    v.flags & FLAG_UNCLASSIFIED == 0 && v.policy_id != NO_RULES_POLICY_ID
                })
                .map(|(cg, v)| (*cg, v.policy_id)),
        );
        self.index_lost_mark = self.stats().map(|s| s.events_lost).unwrap_or(0);
        let path_ids: BTreeSet<u32> = self.path_owned.values().copied().collect();
        let cgroup_of: BTreeMap<u32, CgroupId> = self
            .cgroup_owned
            .iter()
            .map(|(cg, id)| (*id, *cg))
            .collect();
        let containers = &self.containers;
        self.redirects = Redirects::recover(&mut self.maps.dns_redirect, |id| {
            if let Some(c) = containers.owner_of(id) {
                Ok(Owner::Container(c))
            } else if let Some(cg) = cgroup_of.get(&id) {
                Ok(Owner::Cgroup(*cg))
            } else {
                Err(path_ids.contains(&id))
            }
        });
        Ok((
            self.cgroup_owned.len() + self.path_owned.len() + self.containers.len(),
            orphans,
        ))
    }

    /// Cgroups policed on their own (see [`Enforcer::set_policy`]) or by their path or an
    /// ancestor's (see [`Enforcer::set_path_policy`]), with their policies.
    pub fn policies(&self) -> BTreeMap<CgroupId, Applied> {
        let path_ids: BTreeSet<u32> = self.path_owned.values().copied().collect();
        let by_path = self
            .maps
            .cgroups
            .iter()
            .flatten()
            .filter(|(_, v)| v.flags & FLAG_UNCLASSIFIED == 0 && path_ids.contains(&v.policy_id))
            .map(|(cg, v)| (cg, v.policy_id));
        self.cgroup_owned
            .iter()
            .map(|(cg, id)| (*cg, *id))
            .chain(by_path)
            .filter_map(|(cg, id)| {
                let policy = self.policies.get(&id)?.clone();
                Some((
                    cg,
                    Applied {
                        policy_id: id,
                        policy,
                    },
                ))
            })
            .collect()
    }

    /// Cgroup paths policed with everything below them (see [`Enforcer::set_path_policy`]).
    pub fn path_policies(&self) -> BTreeMap<PathKey, Applied> {
        self.path_owned
            .iter()
            .filter_map(|(key, id)| {
                Some((
                    *key,
                    Applied {
                        policy_id: *id,
                        policy: self.policies.get(id)?.clone(),
                    },
                ))
            })
            .collect()
    }

    /// Known containers: their policy if policed, None if known and not policed.
    pub fn containers(&self) -> BTreeMap<ContainerId, Option<Applied>> {
        self.containers
            .iter()
            .map(|(c, id)| {
                let applied = id.and_then(|id| {
                    Some(Applied {
                        policy_id: id,
                        policy: self.policies.get(&id)?.clone(),
                    })
                });
                (*c, applied)
            })
            .collect()
    }

    /// The container that owns `policy_id` (an index lookup, no scan).
    pub fn container_of_policy(&self, policy_id: u32) -> Option<ContainerId> {
        self.containers.owner_of(policy_id)
    }

    /// What new container cgroups get while their container is unknown to the agent: allow
    /// (false) or deny (true, the default and the safe choice). While a policed container could
    /// not be registered (`EG_CONTAINERS` full) they are denied whatever this says.
    pub fn set_unclassified_deny(&mut self, deny: bool) -> Result<()> {
        self.unclassified_deny = deny;
        self.config_deny = None;
        self.sync_unclassified()
    }

    /// Writes the unclassified default the setting and the unregistered containers call for.
    fn sync_unclassified(&mut self) -> Result<()> {
        let deny = self.unclassified_deny || !self.unregistered.is_empty();
        if self.config_deny == Some(deny) {
            return Ok(());
        }
        let v = if deny {
            maps::UNCLASSIFIED_DENY
        } else {
            maps::UNCLASSIFIED_ALLOW
        };
        self.maps
            .config
            .set(maps::CONFIG_UNCLASSIFIED, v, 0)
            .map_err(map_err(maps::CONFIG))?;
        if deny && !self.unclassified_deny {
            warn!(
                unregistered = self.unregistered.len(),
                "new container cgroups of containers the agent does not know are denied while a policed container has no room in {}",
                maps::CONTAINERS
            );
        } else if self.config_deny.is_some() && !deny {
            info!(
                "every policed container is registered again: --unclassified allow is back in force"
            );
        }
        self.config_deny = Some(deny);
        Ok(())
    }

    /// Writes `policy` under `policy_id`, replacing what was there: new rules are written
    /// first, then the entry value goes to the targets and to every cgroup that carries the
    /// policy, then stale rules go, so a replacement never denies what both versions allow.
    ///
    /// If a rule does not fit, the rules this call added are rolled back and the entries deny
    /// everything ([`CgroupPolicy::failed_closed`]) until a later write succeeds in full; the
    /// same if a stale rule will not go. Entry failures are handled by
    /// [`Enforcer::write_entries`]. Returns the first failure.
    fn write_policy(
        &mut self,
        owner: Owner,
        policy_id: u32,
        policy: &Policy,
        targets: &Targets<'_>,
    ) -> Result<()> {
        let before: BTreeSet<&'static str> = self
            .failing
            .iter()
            .filter(|(o, _)| *o == owner)
            .map(|(_, m)| *m)
            .collect();
        let mut failed: Vec<(String, &'static str, MapError, String)> = Vec::new();
        let deny_all = format!(
            "the {} is denied all egress until its policy fits (reason policy_not_written)",
            match owner {
                Owner::Container(_) => "container",
                Owner::Cgroup(_) => "cgroup",
            }
        );
        let old = self
            .policies
            .get(&policy_id)
            .map(|p| p.rules.clone())
            .unwrap_or_default();
        let added: Vec<Rule> = policy.rules.difference(&old).copied().collect();
        let mut in_maps = old.clone();
        for rule in &added {
            match self.insert_rule(policy_id, rule) {
                Ok(()) => {
                    in_maps.insert(*rule);
                }
                Err((map, source)) => {
                    self.count_insert_failure(map);
                    failed.push((format!("rule {rule}"), map, source, deny_all.clone()));
                    break;
                }
            }
        }
        if !failed.is_empty() {
            // Free the room again: the owner is denied everything anyway.
            for rule in &added {
                if in_maps.contains(rule) && self.remove_rule(policy_id, rule).is_ok() {
                    in_maps.remove(rule);
                }
            }
        }
        // The caller's notes, and what the enforcer noted itself (a killed cgroup).
        let killed = self
            .values
            .get(&policy_id)
            .map_or(0, |v| v.notes & NOTE_KILLED);
        // The cgroup entry is written after the rules it adds and before the rules it drops are
        // removed, so a flag never hides a rule of the policy in force.
        let mut value = CgroupPolicy::of(policy_id, policy);
        value.notes |= killed;
        if !failed.is_empty() {
            value = value.failed_closed();
        }
        self.policies.insert(
            policy_id,
            Policy::new(policy.mode, in_maps.iter().copied())
                .with_loopback(policy.loopback)
                .with_notes(policy.notes),
        );
        let mut errors = self.write_entries(owner, policy_id, value, targets);
        if failed.is_empty() {
            let mut stuck = None;
            for rule in old.difference(&policy.rules) {
                match self.remove_rule(policy_id, rule) {
                    Ok(()) => {
                        in_maps.remove(rule);
                    }
                    Err(source) => {
                        let map = encode(policy_id, rule).map();
                        stuck.get_or_insert((format!("removing rule {rule}"), map, source));
                    }
                }
            }
            if let Some((what, map, source)) = stuck {
                // A rule the new policy drops is still there: deny everything rather than
                // allow it.
                failed.push((what, map, source, deny_all));
                errors.extend(self.write_entries(owner, policy_id, value.failed_closed(), targets));
            }
            if let Some(p) = self.policies.get_mut(&policy_id) {
                p.rules = in_maps;
            }
        }
        let mut all: Vec<EnforcerError> = failed
            .into_iter()
            .map(|(what, map, source, outcome)| {
                self.failed_closed(owner, what, map, source, outcome, &before)
            })
            .collect();
        all.extend(errors.into_iter().map(|e| match e {
            EntryError::Failed {
                what,
                map,
                source,
                outcome,
            } => self.failed_closed(owner, what, map, source, outcome, &before),
            EntryError::Other(e) => e,
        }));
        let now: BTreeSet<&'static str> = all
            .iter()
            .filter_map(|e| match e {
                EnforcerError::FailedClosed(f) => Some(f.map),
                _ => None,
            })
            .collect();
        self.failing.retain(|(o, _)| *o != owner);
        self.failing.extend(now.iter().map(|m| (owner, *m)));
        if now.is_empty() && !before.is_empty() {
            info!(%owner, maps = ?before, "the policy fits again and is written in full");
        }
        // A new failure first: the caller logs what is not repeated.
        let first = all.iter().position(|e| !e.is_repeated()).unwrap_or(0);
        if all.is_empty() {
            Ok(())
        } else {
            Err(all.swap_remove(first))
        }
    }

    /// One [`FailedClosed`] error; `before` are the maps that failed at the owner's last write.
    fn failed_closed(
        &self,
        owner: Owner,
        what: String,
        map: &'static str,
        source: MapError,
        outcome: String,
        before: &BTreeSet<&'static str>,
    ) -> EnforcerError {
        EnforcerError::FailedClosed(Box::new(FailedClosed {
            owner,
            what,
            map,
            capacity: maps::capacity(map).unwrap_or_default(),
            source,
            outcome,
            repeated: before.contains(map),
        }))
    }

    /// Writes `value` (the entry of `policy_id`) into the targets, and into every other cgroup
    /// that carries the policy if the value changed. A container entry that does not fit leaves
    /// the container unregistered (see the module docs); a cgroup entry that does not fit has
    /// the cgroup's processes killed.
    fn write_entries(
        &mut self,
        owner: Owner,
        policy_id: u32,
        mut value: CgroupPolicy,
        targets: &Targets<'_>,
    ) -> Vec<EntryError> {
        let mut errors = Vec::new();
        if let Some(c) = targets.container {
            match self.maps.containers.insert(c.key(), value, 0) {
                Ok(()) => {
                    if self.unregistered.remove(c).is_some()
                        && let Err(e) = self.sync_unclassified()
                    {
                        errors.push(EntryError::Other(e));
                    }
                }
                Err(source) => {
                    self.count_insert_failure(maps::CONTAINERS);
                    self.unregistered.insert(*c, policy_id);
                    if let Err(e) = self.sync_unclassified() {
                        errors.push(EntryError::Other(e));
                    }
                    errors.push(EntryError::Failed {
                        what: "its entry".into(),
                        map: maps::CONTAINERS,
                        source,
                        outcome: "it cannot be registered for the cgroup_mkdir tracepoint, so until it fits the cgroups of containers the agent does not know are denied (as with --unclassified deny), and its cgroups get their entries from the agent".into(),
                    });
                }
            }
        }
        let mut killed = false;
        for cg in targets.cgroups {
            match self.maps.cgroups.insert(*cg, value, 0) {
                Ok(()) => self.index.set(*cg, policy_id),
                Err(source) => {
                    self.count_insert_failure(maps::CGROUP_POLICY);
                    let outcome = self.kill_cgroup(owner, *cg);
                    killed |= outcome.is_ok();
                    errors.push(EntryError::Failed {
                        what: format!("the entry of cgroup {cg}"),
                        map: maps::CGROUP_POLICY,
                        source,
                        outcome: outcome.unwrap_or_else(|e| e),
                    });
                }
            }
        }
        if killed {
            value.notes |= NOTE_KILLED;
            if let Some(c) = targets.container {
                let _ = self.maps.containers.insert(c.key(), value, BPF_EXIST);
            }
        }
        if self.values.get(&policy_id) != Some(&value) {
            self.refresh_index();
            for cg in self.index.cgroups_of(policy_id) {
                if targets.cgroups.contains(&cg) {
                    continue;
                }
                match self.maps.cgroups.insert(cg, value, BPF_EXIST) {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => self.index.remove_cgroup(cg),
                    Err(source) => errors.push(EntryError::Other(EnforcerError::Write {
                        cgroup: cg,
                        what: format!("updating the entry of policy {policy_id}"),
                        source,
                    })),
                }
            }
        }
        self.values.insert(policy_id, value);
        errors
    }

    /// Rebuilds the index from the cgroup map if a notice may have been lost since it was last
    /// known complete.
    fn refresh_index(&mut self) {
        let lost = match self.stats() {
            Ok(s) => s.events_lost,
            Err(e) => {
                warn!("reading the lost-event counter: {e}; rebuilding the cgroup index");
                u64::MAX
            }
        };
        if lost == self.index_lost_mark {
            return;
        }
        let entries: Vec<(CgroupId, u32)> = self
            .maps
            .cgroups
            .iter()
            .flatten()
            .filter(|(_, v)| v.flags & FLAG_UNCLASSIFIED == 0 && v.policy_id != NO_RULES_POLICY_ID)
            .map(|(cg, v)| (cg, v.policy_id))
            .collect();
        debug!(
            entries = entries.len(),
            "events were lost: rebuilt the index of cgroup entries from the map"
        );
        self.index.rebuild(entries);
        if lost != u64::MAX {
            self.index_lost_mark = lost;
        }
    }

    /// Fails `cgroup` closed: it should be policed but has no entry, so it is frozen and its
    /// processes are killed (again at every retry while it exists). Ok: what was done; Err: why
    /// nothing could be done. Both end up in the one log line of the failure.
    fn kill_cgroup(&mut self, owner: Owner, cgroup: CgroupId) -> Result<String, String> {
        let Owner::Container(container) = owner else {
            return Err(
                "a cgroup of the agent's own (--policy) is not killed: it is NOT policed".into(),
            );
        };
        let Some(mount) = self.cgroup_mount.clone() else {
            return Err("no cgroup v2 mount to find it in: it is NOT policed".into());
        };
        let Some(path) = cgroup::find_by_id(&mount, cgroup) else {
            return Ok("the cgroup is gone".into());
        };
        match cgroup_kill::freeze_and_kill(&mount, &path, container.as_str()) {
            Ok(()) => {
                let done = format!(
                    "froze {} and killed its processes (cgroup.freeze, cgroup.kill; also any that join it later) so that nothing in it runs unpoliced",
                    path.display()
                );
                self.failed_cgroups.insert(cgroup, path);
                Ok(done)
            }
            Err(e) => Err(format!("{e}: it is NOT policed")),
        }
    }

    /// Removes every rule of `policy_id`, forgets it and releases the id; the id is quarantined
    /// with whatever could not be deleted (`left` and the rules that stay).
    fn drop_policy(&mut self, policy_id: u32, mut left: BTreeSet<Leftover>) {
        if let Some(p) = self.policies.remove(&policy_id) {
            for rule in &p.rules {
                if self.remove_rule(policy_id, rule).is_err() {
                    left.insert(Leftover::Rule(*rule));
                }
            }
        }
        self.values.remove(&policy_id);
        if let Err(e) = dns::remove(&mut self.maps.dns_redirect, policy_id) {
            // Harmless but for the room it takes: ids are never handed out again.
            warn!(
                policy_id,
                "removing the DNS redirect of a removed policy from {}: {e}",
                maps::DNS_REDIRECT
            );
        }
        if !left.is_empty() {
            warn!(
                policy_id,
                leftovers = left.len(),
                "entries of a removed policy could not be deleted; its id is not used again until they are (retried)"
            );
        }
        self.ids.release(policy_id, left);
    }

    /// Removes the entries of `listed` cgroups and of every cgroup that carries `policy_id`;
    /// returns those that would not go.
    fn remove_entries_of(&mut self, policy_id: u32, listed: &[CgroupId]) -> BTreeSet<Leftover> {
        self.refresh_index();
        let mut all: BTreeSet<CgroupId> = listed.iter().copied().collect();
        all.extend(self.index.cgroups_of(policy_id));
        let mut left = BTreeSet::new();
        for cg in all {
            match remove_cgroup_entry(&mut self.maps, cg) {
                Ok(()) => self.index.remove_cgroup(cg),
                Err(e) => {
                    warn!("{e}");
                    left.insert(Leftover::Cgroup(cg));
                }
            }
        }
        left
    }

    /// Sets or replaces the policy of one cgroup (not part of a container). New rules are
    /// written before the cgroup entry and stale ones removed after it. On a failed insert the
    /// cgroup is failed closed (see the module docs) and the error says how.
    pub fn set_policy(&mut self, cgroup: CgroupId, policy: &Policy) -> Result<()> {
        let policy_id = match self.cgroup_owned.get(&cgroup) {
            Some(id) => *id,
            None => {
                if self.cgroup_owned.len() >= maps::MAX_POLICED_CGROUPS as usize {
                    return Err(EnforcerError::CgroupShareFull {
                        cgroup,
                        limit: maps::MAX_POLICED_CGROUPS,
                    });
                }
                let id = self.ids.alloc()?;
                self.cgroup_owned.insert(cgroup, id);
                self.redirect_new_id(Owner::Cgroup(cgroup), id);
                id
            }
        };
        let targets = Targets {
            container: None,
            cgroups: &[cgroup],
        };
        self.write_policy(Owner::Cgroup(cgroup), policy_id, policy, &targets)
    }

    /// Removes the policy of `cgroup`: it is unpoliced again at once. Returns false if it had
    /// none.
    pub fn remove_policy(&mut self, cgroup: CgroupId) -> Result<bool> {
        let Some(policy_id) = self.cgroup_owned.remove(&cgroup) else {
            return Ok(false);
        };
        let left = self.remove_entries_of(policy_id, &[cgroup]);
        self.failing.retain(|(o, _)| *o != Owner::Cgroup(cgroup));
        self.redirects.set(Owner::Cgroup(cgroup), None);
        self.drop_policy(policy_id, left);
        Ok(true)
    }

    /// Polices the cgroup at `path` (its directory is `dir`) and every cgroup below it, now and
    /// whenever any of them is made again: the `cgroup_mkdir` tracepoint gives a new cgroup the
    /// policy of the deepest policed path at or above it before any process runs in it.
    /// Setting the same path again replaces its policy. Returns the number of existing cgroups
    /// (`dir` and below) given the policy now; cgroups of containers and those below a deeper
    /// policed path keep theirs.
    ///
    /// The path's entry is written before the existing cgroups are walked, so a cgroup made
    /// meanwhile is policed by one or the other.
    pub fn set_path_policy(
        &mut self,
        path: &KernelPath,
        dir: &Path,
        policy: &Policy,
    ) -> Result<usize> {
        if path.is_root() {
            return Err(EnforcerError::RootPath);
        }
        if !path.fits_tracepoint() {
            return Err(EnforcerError::PathTooLong {
                path: path.to_string(),
                len: path.as_bytes().len(),
                max: egress_common::cgroup_path::MAX_REGISTERED_LEN,
            });
        }
        if path.depth() > egress_common::cgroup_path::MAX_ANCESTORS {
            return Err(EnforcerError::PathTooDeep {
                path: path.to_string(),
                depth: path.depth(),
                max: egress_common::cgroup_path::MAX_ANCESTORS,
            });
        }
        let key = path.key();
        let owner = Owner::Cgroup(cgroup::id_of(dir).unwrap_or(0));
        if let Owner::Cgroup(dir_id) = owner {
            self.path_dirs.insert(dir_id, key);
        }
        let policy_id = match self.path_owned.get(&key) {
            Some(id) => {
                self.redirects.claim(owner, *id);
                *id
            }
            None => {
                let id = self.ids.alloc()?;
                self.redirect_new_id(owner, id);
                id
            }
        };
        // The rules first; a policy that does not fit is failed closed at the path too.
        let no_entries = Targets {
            container: None,
            cgroups: &[],
        };
        let written = self.write_policy(owner, policy_id, policy, &no_entries);
        let mut value = CgroupPolicy::of(policy_id, policy);
        if written.is_err() {
            value = value.failed_closed();
        }
        self.maps
            .path_policy
            .insert(key, value, 0)
            .map_err(|source| EnforcerError::PathWrite {
                map: maps::PATH_POLICY,
                path: path.to_string(),
                source,
            })?;
        self.path_owned.insert(key, policy_id);
        written?;
        let container_ids: BTreeSet<u32> = self.containers.values().flatten().copied().collect();
        let mut policed = 0;
        for (sub, cg) in cgroup::subtree(dir) {
            let sub_path = path.join_rel(sub.strip_prefix(dir).unwrap_or(Path::new("")));
            let deepest = sub_path
                .self_and_ancestors()
                .find_map(|p| self.path_owned.get(&p.key()).copied());
            if deepest != Some(policy_id)
                || self.cgroup_owned.contains_key(&cg)
                || is_known_container(&sub_path, &self.containers)
            {
                continue;
            }
            match self.maps.cgroups.get(&cg, 0) {
                Ok(v)
                    if v.flags & FLAG_UNCLASSIFIED != 0 || container_ids.contains(&v.policy_id) =>
                {
                    continue;
                }
                _ => {}
            }
            self.maps
                .cgroups
                .insert(cg, value, 0)
                .map_err(|source| EnforcerError::Write {
                    cgroup: cg,
                    what: format!("the policy entry of {sub_path} (below {path})"),
                    source,
                })?;
            policed += 1;
        }
        Ok(policed)
    }

    /// Adds `bits` (`egress_common::cgroup_path::PARENT_*`) to `path`'s entry among this
    /// dockerd's cgroup parents. Returns false if they were all there already.
    pub fn add_container_parent(&mut self, path: &KernelPath, bits: u32) -> Result<bool> {
        let key = path.key();
        let had = self.maps.parents.get(&key, 0).unwrap_or(0);
        if had & bits == bits {
            return Ok(false);
        }
        self.maps
            .parents
            .insert(key, had | bits, 0)
            .map_err(|source| EnforcerError::PathWrite {
                map: maps::CONTAINER_PARENTS,
                path: path.to_string(),
                source,
            })?;
        Ok(true)
    }

    /// Takes `bits` off `path`'s entry among the cgroup parents; the entry goes when no bit is
    /// left. Returns false if it had none of them.
    pub fn remove_container_parent(&mut self, path: &KernelPath, bits: u32) -> Result<bool> {
        let key = path.key();
        let Ok(had) = self.maps.parents.get(&key, 0) else {
            return Ok(false);
        };
        if had & bits == 0 {
            return Ok(false);
        }
        let left = had & !bits;
        let r = if left == 0 {
            match self.maps.parents.remove(&key) {
                Err(e) if is_not_found(&e) => Ok(()),
                r => r,
            }
        } else {
            self.maps.parents.insert(key, left, 0)
        };
        r.map_err(|source| EnforcerError::PathWrite {
            map: maps::CONTAINER_PARENTS,
            path: path.to_string(),
            source,
        })?;
        Ok(true)
    }

    /// Forgets every cgroup parent (an agent that does not follow Docker classifies no
    /// container). Returns how many there were.
    pub fn clear_container_parents(&mut self) -> Result<usize> {
        let keys: Vec<PathKey> = self.maps.parents.keys().flatten().collect();
        for key in &keys {
            match self.maps.parents.remove(key) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(source) => {
                    return Err(EnforcerError::Map {
                        name: maps::CONTAINER_PARENTS,
                        source,
                    });
                }
            }
        }
        Ok(keys.len())
    }

    /// The cgroup parents, with their `PARENT_*` bits.
    pub fn container_parents(&self) -> BTreeMap<PathKey, u32> {
        self.maps.parents.iter().flatten().collect()
    }

    /// Registers a container: `Some(policy)` polices it, `None` marks it known and unpoliced.
    ///
    /// The container's entry is what the `cgroup_mkdir` tracepoint gives the container's
    /// cgroups when runc makes them, so calling this at Docker's `create` event polices the
    /// container from its first instruction. `cgroups` are the container's cgroups that exist
    /// already (its own and those below it); their entries are updated too (for a container
    /// that started before the agent knew it, or whose policy changes), and so are the entries
    /// of every other cgroup that carries the policy when its flags or mode change.
    pub fn set_container(
        &mut self,
        container: &ContainerId,
        policy: Option<&Policy>,
        cgroups: &[CgroupId],
    ) -> Result<()> {
        let key = container.key();
        let owner = Owner::Container(*container);
        let previous = self.containers.get(container).copied();
        match policy {
            Some(policy) => {
                let policy_id = match previous.flatten() {
                    Some(id) => id,
                    None => {
                        let id = self.ids.alloc()?;
                        // Before anything points at the new id.
                        self.redirect_new_id(owner, id);
                        id
                    }
                };
                self.containers.insert(*container, Some(policy_id));
                let targets = Targets {
                    container: Some(container),
                    cgroups,
                };
                let policy = self.learned.with_learned(container, policy);
                let written = self.write_policy(owner, policy_id, &policy, &targets);
                if previous == Some(None) {
                    // The tracepoint prefers the container entry written above.
                    if let Err(e) = remove_key(&mut self.maps.unpoliced, &key) {
                        warn!(%owner, "removing its {} entry: {e}", maps::UNPOLICED);
                    }
                }
                return written;
            }
            None => {
                let registered = match self.maps.unpoliced.insert(key, UNPOLICED_MARK, 0) {
                    Ok(()) => {
                        self.failing.remove(&(owner, maps::UNPOLICED));
                        Ok(())
                    }
                    Err(source) => {
                        self.count_insert_failure(maps::UNPOLICED);
                        let before = if self.failing.contains(&(owner, maps::UNPOLICED)) {
                            BTreeSet::from([maps::UNPOLICED])
                        } else {
                            BTreeSet::new()
                        };
                        self.failing.insert((owner, maps::UNPOLICED));
                        Err(self.failed_closed(
                            owner,
                            "its entry (not policed)".into(),
                            maps::UNPOLICED,
                            source,
                            "cgroups runc makes for it get the --unclassified default (deny: denied) until the agent sees them and removes their entries".into(),
                            &before,
                        ))
                    }
                };
                self.containers.insert(*container, None);
                self.learned.forget(container);
                if let Some(Some(id)) = previous {
                    let mut left = BTreeSet::new();
                    if remove_key(&mut self.maps.containers, &key).is_err() {
                        left.insert(Leftover::Container(*container));
                    }
                    self.unregistered.remove(container);
                    left.extend(self.remove_entries_of(id, cgroups));
                    self.failing
                        .retain(|(o, m)| *o != owner || *m == maps::UNPOLICED);
                    self.drop_policy(id, left);
                    self.sync_unclassified()?;
                } else {
                    for cg in cgroups {
                        remove_cgroup_entry(&mut self.maps, *cg)?;
                    }
                }
                registered?;
            }
        }
        Ok(())
    }

    /// Adds `rules` to the policy of a policed container at once, keeping the rest of it (mode,
    /// rules, loopback, notes): only the new rules are written, and the entries only if their
    /// flags change (see [`Enforcer::write_policy`]). Returns false, writing nothing, if the
    /// container is not policed or is failed closed (its full policy has to fit first). The
    /// next [`Enforcer::set_container`] replaces the policy as a whole.
    pub fn add_container_rules(&mut self, container: &ContainerId, rules: &[Rule]) -> Result<bool> {
        let Some(Some(policy_id)) = self.containers.get(container).copied() else {
            return Ok(false);
        };
        let failed_closed = self
            .values
            .get(&policy_id)
            .is_some_and(|v| v.flags & egress_common::policy::FLAG_DENY_ALL != 0);
        let Some(current) = self.policies.get(&policy_id).filter(|_| !failed_closed) else {
            return Ok(false);
        };
        if rules.iter().all(|r| current.rules.contains(r)) {
            return Ok(true);
        }
        let policy = Policy::new(current.mode, current.rules.iter().chain(rules).copied())
            .with_loopback(current.loopback)
            .with_notes(current.notes);
        let targets = Targets {
            container: Some(container),
            cgroups: &[],
        };
        self.write_policy(Owner::Container(*container), policy_id, &policy, &targets)?;
        Ok(true)
    }

    /// Forgets a container: its entry, the entries of its cgroups and its rules. Deletes that
    /// fail are retried later; the policy id stays out of use until they succeed.
    pub fn remove_container(
        &mut self,
        container: &ContainerId,
        cgroups: &[CgroupId],
    ) -> Result<bool> {
        let Some(previous) = self.containers.remove(container) else {
            return Ok(false);
        };
        self.learned.forget(container);
        let key = container.key();
        let owner = Owner::Container(*container);
        self.failing.retain(|(o, _)| *o != owner);
        self.redirects.set(owner, None);
        match previous {
            Some(id) => {
                let mut left = BTreeSet::new();
                if let Err(e) = remove_key(&mut self.maps.containers, &key) {
                    warn!(%owner, "removing its entry: {e}");
                    left.insert(Leftover::Container(*container));
                }
                if self.unregistered.remove(container).is_some() {
                    self.sync_unclassified()?;
                }
                left.extend(self.remove_entries_of(id, cgroups));
                self.drop_policy(id, left);
            }
            None => {
                remove_key(&mut self.maps.unpoliced, &key).map_err(|source| {
                    EnforcerError::Write {
                        cgroup: 0,
                        what: format!("removing the {} entry of {owner}", maps::UNPOLICED),
                        source,
                    }
                })?;
                for cg in cgroups {
                    remove_cgroup_entry(&mut self.maps, *cg)?;
                }
            }
        }
        Ok(true)
    }

    /// Forgets every container and every unclassified container cgroup (`--docker off`: the
    /// agent does not follow Docker, so it neither polices nor denies containers). Returns how
    /// many containers and unclassified cgroups it dropped.
    pub fn forget_containers(&mut self) -> Result<(usize, usize)> {
        let ids: Vec<ContainerId> = self.containers.keys().copied().collect();
        for id in &ids {
            self.remove_container(id, &[])?;
        }
        let unclassified: Vec<u64> = self
            .maps
            .cgroups
            .iter()
            .flatten()
            .filter(|(_, v)| v.flags & FLAG_UNCLASSIFIED != 0)
            .map(|(k, _)| k)
            .collect();
        for cg in &unclassified {
            remove_cgroup_entry(&mut self.maps, *cg)?;
        }
        Ok((ids.len(), unclassified.len()))
    }

    /// True while something waits for a retry ([`Enforcer::retry_pending`]).
    pub fn has_pending(&self) -> bool {
        !self.ids.quarantined().is_empty()
            || !self.unregistered.is_empty()
            || !self.failed_cgroups.is_empty()
    }

    /// Retries what failed before: the deletes of quarantined policy ids and the entries of
    /// containers `EG_CONTAINERS` had no room for; and kills what joined a failed cgroup.
    pub fn retry_pending(&mut self) {
        for (cg, path) in self.failed_cgroups.clone() {
            match cgroup_kill::kill_members(&path) {
                Ok(true) => {}
                Ok(false) => {
                    self.failed_cgroups.remove(&cg);
                }
                Err(e) => {
                    debug!(cgroup = %path.display(), "killing what joined a failed cgroup: {e}")
                }
            }
        }
        for (id, left) in self.ids.quarantined().clone() {
            for l in left {
                if self.delete_leftover(id, &l) {
                    self.ids.cleared(id, &l);
                }
            }
            if !self.ids.quarantined().contains_key(&id) {
                info!(
                    policy_id = id,
                    "the leftovers of a removed policy are gone; its id is free"
                );
            }
        }
        for (c, id) in self.unregistered.clone() {
            let Some(v) = self.values.get(&id).copied() else {
                self.unregistered.remove(&c);
                continue;
            };
            if self.maps.containers.insert(c.key(), v, 0).is_ok() {
                self.unregistered.remove(&c);
                self.failing
                    .remove(&(Owner::Container(c), maps::CONTAINERS));
                info!(
                    container = c.short(),
                    "registered in {} after all",
                    maps::CONTAINERS
                );
            }
        }
        if let Err(e) = self.sync_unclassified() {
            error!("{e}");
        }
    }

    /// Deletes one leftover of quarantined `policy_id`; true once it is gone.
    fn delete_leftover(&mut self, policy_id: u32, l: &Leftover) -> bool {
        match l {
            Leftover::Rule(rule) => self.remove_rule(policy_id, rule).is_ok(),
            Leftover::Cgroup(cg) => match self.maps.cgroups.get(cg, 0) {
                Ok(v) if v.policy_id == policy_id => {
                    remove_cgroup_entry(&mut self.maps, *cg).is_ok()
                }
                // Gone, or somebody else's by now.
                _ => true,
            },
            Leftover::Container(c) => match self.maps.containers.get(&c.key(), 0) {
                Ok(v) if v.policy_id == policy_id => {
                    remove_key(&mut self.maps.containers, &c.key()).is_ok()
                }
                _ => true,
            },
        }
    }

    /// Sets (Some) or removes (None) the DNS redirect of `owner`: where the port-53 traffic of
    /// its cgroups goes (see `egress_common::dns`). It follows the owner's policy id: written
    /// at once if the owner has one, else when it gets one, before any cgroup entry points at
    /// it; deleted when the owner goes. Without a redirect in the map the owner's DNS is denied
    /// (`dns_proxy_not_ready`); so is it when the write fails (counted, and the error says so).
    pub fn set_dns_redirect(&mut self, owner: Owner, redirect: Option<DnsRedirect>) -> Result<()> {
        self.redirects.set(owner, redirect);
        let Some(policy_id) = self.policy_id_of(owner) else {
            return Ok(());
        };
        match redirect {
            Some(_) => self.write_redirect(owner, policy_id),
            None => dns::remove(&mut self.maps.dns_redirect, policy_id)
                .map_err(map_err(maps::DNS_REDIRECT)),
        }
    }

    /// Every owner's DNS redirect: those set since the start, and those a restarted agent found
    /// pinned under the policy ids of known owners (a `--policy` path's once its policy is set
    /// again).
    pub fn dns_redirects(&self) -> Vec<(Owner, DnsRedirect)> {
        self.redirects.all()
    }

    /// The policy id `owner`'s cgroups point at now, if it has one.
    fn policy_id_of(&self, owner: Owner) -> Option<u32> {
        match owner {
            Owner::Container(c) => self.containers.get(&c).copied().flatten(),
            Owner::Cgroup(cg) => self.cgroup_owned.get(&cg).copied().or_else(|| {
                self.path_dirs
                    .get(&cg)
                    .and_then(|key| self.path_owned.get(key))
                    .copied()
            }),
        }
    }

    /// Writes `owner`'s DNS redirect (if it has one) under its new `policy_id`, before any entry
    /// points at it. A failure is logged, not returned: the owner's DNS is denied meanwhile
    /// (no redirect: `dns_proxy_not_ready`), its policy is written all the same.
    fn redirect_new_id(&mut self, owner: Owner, policy_id: u32) {
        if let Err(e) = self.write_redirect(owner, policy_id) {
            error!("{e}");
        }
    }

    /// Writes `owner`'s DNS redirect (if it has one) under `policy_id`; a failed insert is
    /// counted.
    fn write_redirect(&mut self, owner: Owner, policy_id: u32) -> Result<()> {
        let Some(r) = self.redirects.get(&owner) else {
            return Ok(());
        };
        let written = dns::write(&mut self.maps.dns_redirect, owner, policy_id, r);
        if written.is_err() {
            self.count_insert_failure(maps::DNS_REDIRECT);
        }
        written
    }

    /// Every cgroup entry in the kernel map (own, container and unclassified ones).
    pub fn cgroup_entries(&self) -> Vec<(CgroupId, CgroupPolicy)> {
        self.maps.cgroups.iter().flatten().collect()
    }

    /// Inserts one rule; the map's name with the error if it fails.
    fn insert_rule(&mut self, policy_id: u32, rule: &Rule) -> Result<(), (&'static str, MapError)> {
        let v = RuleValue { tag: 0 };
        let key = encode(policy_id, rule);
        let r = match key {
            RuleKey::V4(k) => self.maps.allow4.insert(k, v, 0),
            RuleKey::V6(k) => self.maps.allow6.insert(k, v, 0),
            RuleKey::Cidr4(l, d) => self.maps.cidr4.insert(&lpm(l, d), v, 0),
            RuleKey::Cidr6(l, d) => self.maps.cidr6.insert(&lpm(l, d), v, 0),
        };
        r.map_err(|e| (key.map(), e))
    }

    /// Deletes one rule; one that is not there is fine (and logged).
    fn remove_rule(&mut self, policy_id: u32, rule: &Rule) -> Result<(), MapError> {
        let r = match encode(policy_id, rule) {
            RuleKey::V4(k) => self.maps.allow4.remove(&k),
            RuleKey::V6(k) => self.maps.allow6.remove(&k),
            RuleKey::Cidr4(l, d) => self.maps.cidr4.remove(&lpm(l, d)),
            RuleKey::Cidr6(l, d) => self.maps.cidr6.remove(&lpm(l, d)),
        };
        match r {
            Err(e) if is_not_found(&e) => {
                warn!(policy_id, %rule, "rule to remove was not in the map");
                Ok(())
            }
            r => r,
        }
    }

    /// Adds one to the agent's insert-failure counter of `map` (on the first CPU's copy: only
    /// the agent writes these slots).
    fn count_insert_failure(&mut self, map: &'static str) {
        let Some(slot) = stats::insert_failed_slot(map) else {
            return;
        };
        let bumped = self.maps.stats.get(&slot, 0).and_then(|values| {
            let mut v: Vec<u64> = values.iter().copied().collect();
            if let Some(first) = v.first_mut() {
                *first += 1;
            }
            let values = PerCpuValues::try_from(v).map_err(|e| {
                MapError::SyscallError(aya::sys::SyscallError {
                    call: "per-CPU values",
                    io_error: e,
                })
            })?;
            self.maps.stats.set(slot, values, 0)
        });
        if let Err(e) = bumped {
            error!(map, "counting a failed insert: {e}");
        }
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        state::read_stats(&self.maps.stats).map_err(map_err(maps::STATS))
    }
}

/// True if the tracepoint takes the cgroup at `path` for a container the agent knows (it gives
/// such a cgroup its container's policy, or none, whatever path it is below).
fn is_known_container(path: &KernelPath, containers: &ContainerTable) -> bool {
    use egress_common::container::{PATH_SCAN, find_container_id, key_at};
    let bytes = path.as_bytes();
    if bytes.len() >= PATH_SCAN {
        return false;
    }
    let mut buf = [0u8; PATH_SCAN];
    buf[..bytes.len()].copy_from_slice(bytes);
    find_container_id(&buf, bytes.len())
        .and_then(|at| ContainerId::from_key(&key_at(&buf, at)))
        .is_some_and(|id| containers.contains_key(&id))
}

/// A failure of [`Enforcer::write_entries`], before it is told as a [`FailedClosed`].
enum EntryError {
    Failed {
        what: String,
        map: &'static str,
        source: MapError,
        outcome: String,
    },
    Other(EnforcerError),
}

/// Deletes `key` from a hash map; a key that is not there is fine.
fn remove_key<V: aya::Pod>(
    map: &mut HashMap<MapData, ContainerKey, V>,
    key: &ContainerKey,
) -> Result<(), MapError> {
    match map.remove(key) {
        Err(e) if !is_not_found(&e) => Err(e),
        _ => Ok(()),
    }
}

fn remove_cgroup_entry(maps: &mut Maps, cgroup: CgroupId) -> Result<()> {
    match maps.cgroups.remove(&cgroup) {
        Ok(()) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(source) => Err(EnforcerError::Write {
            cgroup,
            what: "removing the cgroup's policy entry".into(),
            source,
        }),
    }
}
