//! The loaded programs and their maps: load or reuse the pinned state, attach, and change
//! policies. One [`Enforcer`] owns the maps; the daemon wraps it in one task
//! (`crate::owner`) so that nothing else writes to them.

mod attach;
pub mod keys;
pub mod layout;
mod state;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::LpmTrie},
};
use egress_common::{
    cgroup_path::PathKey,
    container::ContainerKey,
    maps,
    policy::{
        CgroupPolicy, FLAG_ANY_PORT_ONLY4, FLAG_ANY_PORT_ONLY6, FLAG_CIDR4, FLAG_CIDR6,
        FLAG_UNCLASSIFIED, FLAG_UNPOLICED,
    },
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
};
use tracing::{debug, info, warn};

pub use self::state::{PinnedView, Stats, read as read_view, read_stats, reason_name};
use self::{
    keys::{RuleKey, encode, lpm},
    layout::{PinDir, PinnedState},
};
use crate::{
    container::ContainerId,
    policy::{Policy, Rule},
    sys::{
        cgroup::{self, CgroupId},
        kernel_path::KernelPath,
        mounts,
    },
};

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

#[derive(Debug, thiserror::Error)]
pub enum EnforcerError {
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Pin(#[from] layout::PinIoError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("program {name}: link: {source}")]
    Link {
        name: &'static str,
        source: aya::programs::links::LinkError,
    },
    #[error("pinning link {path}: {source}")]
    PinLink {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error(
        "no free policy id: {0} cgroups are policed already (the limit is egress_common::maps::MAX_POLICED_CGROUPS)"
    )]
    NoPolicyId(usize),
    #[error("cgroup {cgroup}: writing {what}: {source} (maps full?)")]
    Write {
        cgroup: CgroupId,
        what: String,
        source: MapError,
    },
    #[error("map {map}: writing the entry of cgroup path {path}: {source} (map full?)")]
    PathWrite {
        map: &'static str,
        path: String,
        source: MapError,
    },
    #[error(
        "cgroup path {path} is {len} bytes long: the cgroup_mkdir tracepoint names paths of at most {max} bytes exactly, so a re-made cgroup there could not be recognised"
    )]
    PathTooLong {
        path: String,
        len: usize,
        max: usize,
    },
    #[error(
        "cgroup path {path} is {depth} levels deep: the cgroup_mkdir tracepoint recognises the cgroups below a policed path only down to {max} levels"
    )]
    PathTooDeep {
        path: String,
        depth: usize,
        max: usize,
    },
    #[error(
        "a policy on the cgroup v2 root would police every cgroup of the host; name a cgroup below it"
    )]
    RootPath,
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
    config: Array<MapData, u64>,
    path_policy: HashMap<MapData, PathKey, CgroupPolicy>,
    parents: HashMap<MapData, PathKey, u32>,
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
    /// Policy id -> policy.
    policies: BTreeMap<u32, Policy>,
    /// Cgroups policed on their own (not as part of a container), with their policy id.
    cgroup_owned: BTreeMap<CgroupId, u32>,
    /// Cgroup paths policed with everything below them, with their policy id.
    path_owned: BTreeMap<PathKey, u32>,
    /// Known containers: Some(policy id) if policed, None if known and unpoliced.
    containers: BTreeMap<ContainerId, Option<u32>>,
    /// Links of an earlier run with an incompatible layout, still enforcing its policies.
    previous_links: Vec<PathBuf>,
    pin: PinDir,
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

/// The cgroup entry of a policy: its id, mode and the flags that spare the programs lookups.
/// Written after the rules it adds and before the rules it drops are removed, so a flag never
/// hides a rule of the policy in force (see [`Enforcer::write_policy`]).
fn cgroup_value(policy_id: u32, policy: &Policy) -> CgroupPolicy {
    let mut flags = 0;
    if !policy.has_v4_host_port() {
        flags |= FLAG_ANY_PORT_ONLY4;
    }
    if !policy.has_v6_host_port() {
        flags |= FLAG_ANY_PORT_ONLY6;
    }
    if policy.has_v4_cidr() {
        flags |= FLAG_CIDR4;
    }
    if policy.has_v6_cidr() {
        flags |= FLAG_CIDR6;
    }
    CgroupPolicy::new(policy_id, policy.mode, flags)
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
            Ok(logger) => crate::kernel_log::spawn(logger),
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
            config: take(&mut ebpf, maps::CONFIG)?,
            path_policy: take(&mut ebpf, maps::PATH_POLICY)?,
            parents: take(&mut ebpf, maps::CONTAINER_PARENTS)?,
        };
        let events: RingBuf<MapData> = take(&mut ebpf, maps::EVENTS)?;

        let attach_cgroup = cgroup::resolve(&cfg.attach_cgroup)?;
        let attach_cgroup_id = cgroup::id_of(&attach_cgroup)?;
        let old_links = attach::attach_all(&mut ebpf, &attach_cgroup, attach_cgroup_id, &pin)?;
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
            cgroup_owned: BTreeMap::new(),
            path_owned: BTreeMap::new(),
            containers: BTreeMap::new(),
            previous_links,
            pin,
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
        let view = state::read(
            &self.maps.cgroups,
            &self.maps.allow4,
            &self.maps.allow6,
            &self.maps.cidr4,
            &self.maps.cidr6,
            &self.maps.containers,
            &self.maps.path_policy,
        );
        let mut orphans = 0;
        for (policy_id, rules) in &view.orphans {
            for rule in rules {
                self.remove_rule(0, *policy_id, rule)?;
                orphans += 1;
            }
        }
        if orphans > 0 {
            warn!(
                rules = orphans,
                "removed allow rules that belonged to no policed cgroup or container"
            );
        }
        self.policies = view.policies;
        self.cgroup_owned = view.cgroup_owned;
        self.path_owned = view.path_owned;
        self.containers = view.containers;
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

    /// What new container cgroups get while their container is unknown to the agent: allow
    /// (false) or deny (true, the default and the safe choice).
    pub fn set_unclassified_deny(&mut self, deny: bool) -> Result<()> {
        let v = if deny {
            maps::UNCLASSIFIED_DENY
        } else {
            maps::UNCLASSIFIED_ALLOW
        };
        self.maps
            .config
            .set(maps::CONFIG_UNCLASSIFIED, v, 0)
            .map_err(map_err(maps::CONFIG))
    }

    fn alloc_policy_id(&self) -> Result<u32> {
        let max = maps::MAX_POLICED_CGROUPS + maps::MAX_CONTAINERS;
        (1..=max)
            .find(|id| !self.policies.contains_key(id))
            .ok_or(EnforcerError::NoPolicyId(self.policies.len()))
    }

    /// Writes `policy` under `policy_id`, replacing what was there: new rules are written
    /// first, then `commit` points the cgroup/container entries at it, then stale rules go, so a
    /// replacement never denies what both versions allow. On error the maps keep the old rules.
    fn write_policy(
        &mut self,
        owner: CgroupId,
        policy_id: u32,
        policy: &Policy,
        commit: impl FnOnce(&mut Maps, CgroupPolicy) -> Result<()>,
    ) -> Result<()> {
        let old_rules = self
            .policies
            .get(&policy_id)
            .map(|p| p.rules.clone())
            .unwrap_or_default();
        let added: Vec<Rule> = policy.rules.difference(&old_rules).copied().collect();
        for (i, rule) in added.iter().enumerate() {
            if let Err(e) = self.insert_rule(owner, policy_id, rule) {
                for r in &added[..i] {
                    let _ = self.remove_rule(owner, policy_id, r);
                }
                return Err(e);
            }
        }
        if let Err(e) = commit(&mut self.maps, cgroup_value(policy_id, policy)) {
            for r in &added {
                let _ = self.remove_rule(owner, policy_id, r);
            }
            return Err(e);
        }
        for rule in old_rules.difference(&policy.rules) {
            self.remove_rule(owner, policy_id, rule)?;
        }
        self.policies.insert(policy_id, policy.clone());
        Ok(())
    }

    /// Removes every rule of `policy_id` and forgets it.
    fn drop_policy(&mut self, owner: CgroupId, policy_id: u32) -> Result<()> {
        if let Some(p) = self.policies.remove(&policy_id) {
            for rule in &p.rules {
                self.remove_rule(owner, policy_id, rule)?;
            }
        }
        Ok(())
    }

    /// Sets or replaces the policy of one cgroup (not part of a container). New rules are
    /// written before the cgroup entry and stale ones removed after it. On a write error the
    /// maps keep the old policy.
    pub fn set_policy(&mut self, cgroup: CgroupId, policy: &Policy) -> Result<()> {
        let policy_id = match self.cgroup_owned.get(&cgroup) {
            Some(id) => *id,
            None => self.alloc_policy_id()?,
        };
        self.write_policy(cgroup, policy_id, policy, |maps, value| {
            maps.cgroups
                .insert(cgroup, value, 0)
                .map_err(|source| EnforcerError::Write {
                    cgroup,
                    what: "the cgroup's policy entry".into(),
                    source,
                })
        })?;
        self.cgroup_owned.insert(cgroup, policy_id);
        Ok(())
    }

    /// Removes the policy of `cgroup`: it is unpoliced again at once. Returns false if it had
    /// none.
    pub fn remove_policy(&mut self, cgroup: CgroupId) -> Result<bool> {
        let Some(policy_id) = self.cgroup_owned.get(&cgroup).copied() else {
            return Ok(false);
        };
        remove_cgroup_entry(&mut self.maps, cgroup)?;
        self.cgroup_owned.remove(&cgroup);
        self.drop_policy(cgroup, policy_id)?;
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
        let policy_id = match self.path_owned.get(&key) {
            Some(id) => *id,
            None => self.alloc_policy_id()?,
        };
        let owner = cgroup::id_of(dir).unwrap_or(0);
        self.write_policy(owner, policy_id, policy, |maps, value| {
            maps.path_policy
                .insert(key, value, 0)
                .map_err(|source| EnforcerError::PathWrite {
                    map: maps::PATH_POLICY,
                    path: path.to_string(),
                    source,
                })
        })?;
        self.path_owned.insert(key, policy_id);
        let value = cgroup_value(policy_id, policy);
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
    /// that started before the agent knew it, or whose policy changes).
    pub fn set_container(
        &mut self,
        container: &ContainerId,
        policy: Option<&Policy>,
        cgroups: &[CgroupId],
    ) -> Result<()> {
        let key = container.key();
        let previous = self.containers.get(container).copied().flatten();
        match policy {
            Some(policy) => {
                let policy_id = match previous {
                    Some(id) => id,
                    None => self.alloc_policy_id()?,
                };
                let first = cgroups.first().copied().unwrap_or(0);
                self.write_policy(first, policy_id, policy, |maps, value| {
                    maps.containers.insert(key, value, 0).map_err(|source| {
                        EnforcerError::Write {
                            cgroup: first,
                            what: format!("the entry of container {}", container.short()),
                            source,
                        }
                    })?;
                    for cg in cgroups {
                        maps.cgroups.insert(*cg, value, 0).map_err(|source| {
                            EnforcerError::Write {
                                cgroup: *cg,
                                what: format!(
                                    "the cgroup entry of container {}",
                                    container.short()
                                ),
                                source,
                            }
                        })?;
                    }
                    Ok(())
                })?;
                self.containers.insert(*container, Some(policy_id));
            }
            None => {
                let unpoliced = CgroupPolicy::new(0, crate::policy::Mode::Enforce, FLAG_UNPOLICED);
                self.maps
                    .containers
                    .insert(key, unpoliced, 0)
                    .map_err(|source| EnforcerError::Write {
                        cgroup: 0,
                        what: format!("the entry of container {}", container.short()),
                        source,
                    })?;
                for cg in cgroups {
                    remove_cgroup_entry(&mut self.maps, *cg)?;
                }
                self.containers.insert(*container, None);
                if let Some(id) = previous {
                    self.remove_entries_of(id)?;
                    self.drop_policy(0, id)?;
                }
            }
        }
        Ok(())
    }

    /// Forgets a container: its entry, the entries of its cgroups and its rules.
    pub fn remove_container(
        &mut self,
        container: &ContainerId,
        cgroups: &[CgroupId],
    ) -> Result<bool> {
        let Some(previous) = self.containers.remove(container) else {
            return Ok(false);
        };
        match self.maps.containers.remove(&container.key()) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(source) => {
                return Err(EnforcerError::Write {
                    cgroup: 0,
                    what: format!("removing the entry of container {}", container.short()),
                    source,
                });
            }
        }
        for cg in cgroups {
            remove_cgroup_entry(&mut self.maps, *cg)?;
        }
        if let Some(id) = previous {
            self.remove_entries_of(id)?;
            self.drop_policy(0, id)?;
        }
        Ok(true)
    }

    /// Removes every cgroup entry that points at `policy_id` (cgroups the tracepoint gave a
    /// container's policy that the caller did not list).
    fn remove_entries_of(&mut self, policy_id: u32) -> Result<()> {
        let stale: Vec<u64> = self
            .maps
            .cgroups
            .iter()
            .flatten()
            .filter(|(_, v)| v.policy_id == policy_id)
            .map(|(k, _)| k)
            .collect();
        for cg in stale {
            remove_cgroup_entry(&mut self.maps, cg)?;
        }
        Ok(())
    }

    /// Every cgroup entry in the kernel map (own, container and unclassified ones).
    pub fn cgroup_entries(&self) -> Vec<(CgroupId, CgroupPolicy)> {
        self.maps.cgroups.iter().flatten().collect()
    }

    fn insert_rule(&mut self, cgroup: CgroupId, policy_id: u32, rule: &Rule) -> Result<()> {
        let v = RuleValue { tag: 0 };
        let r = match encode(policy_id, rule) {
            RuleKey::V4(k) => self.maps.allow4.insert(k, v, 0),
            RuleKey::V6(k) => self.maps.allow6.insert(k, v, 0),
            RuleKey::Cidr4(l, d) => self.maps.cidr4.insert(&lpm(l, d), v, 0),
            RuleKey::Cidr6(l, d) => self.maps.cidr6.insert(&lpm(l, d), v, 0),
        };
        r.map_err(|source| EnforcerError::Write {
            cgroup,
            what: format!("rule {rule}"),
            source,
        })
    }

    fn remove_rule(&mut self, cgroup: CgroupId, policy_id: u32, rule: &Rule) -> Result<()> {
        let r = match encode(policy_id, rule) {
            RuleKey::V4(k) => self.maps.allow4.remove(&k),
            RuleKey::V6(k) => self.maps.allow6.remove(&k),
            RuleKey::Cidr4(l, d) => self.maps.cidr4.remove(&lpm(l, d)),
            RuleKey::Cidr6(l, d) => self.maps.cidr6.remove(&lpm(l, d)),
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => {
                warn!(cgroup, %rule, "rule to remove was not in the map");
                Ok(())
            }
            Err(source) => Err(EnforcerError::Write {
                cgroup,
                what: format!("removing rule {rule}"),
                source,
            }),
        }
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        state::read_stats(&self.maps.stats).map_err(map_err(maps::STATS))
    }
}

/// True if the tracepoint takes the cgroup at `path` for a container the agent knows (it gives
/// such a cgroup its container's policy, or none, whatever path it is below).
fn is_known_container(path: &KernelPath, containers: &BTreeMap<ContainerId, Option<u32>>) -> bool {
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

/// A delete of a key that is not there (aya reports ENOENT from the syscall as it is).
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(aya::sys::SyscallError { io_error, .. }) => {
            io_error.raw_os_error() == Some(libc::ENOENT)
        }
        _ => false,
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
