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
    maps,
    policy::{CgroupPolicy, FLAG_CIDR4, FLAG_CIDR6},
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
};
use tracing::{debug, info, warn};

pub use self::state::{PinnedView, Stats, read as read_view, read_stats, reason_name};
use self::{
    keys::{RuleKey, encode, lpm},
    layout::{PinDir, PinnedState},
};
use crate::{
    policy::{Policy, Rule},
    sys::{
        cgroup::{self, CgroupId},
        mounts,
    },
};

/// The eBPF object built by `build.rs` from `egress-ebpf`.
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
}

pub type Result<T, E = EnforcerError> = std::result::Result<T, E>;

/// A policy as applied to a cgroup.
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
    /// Policies found in the pinned maps.
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
}

/// The loaded programs, the maps, and the policies the maps hold.
pub struct Enforcer {
    // Kept so that aya-log and later programs can find the object; links are pinned.
    _ebpf: Ebpf,
    maps: Maps,
    events: Option<RingBuf<MapData>>,
    applied: BTreeMap<CgroupId, Applied>,
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

impl Enforcer {
    /// Loads the programs, reusing pinned maps of a compatible earlier run (so policies survive
    /// an agent restart), attaches them at `attach_cgroup` and pins the links. Links of earlier
    /// runs stay attached until the new ones are in place, so enforcement has no gap.
    pub fn open(cfg: &EnforcerConfig) -> Result<(Self, OpenReport)> {
        let mounted_bpffs = mounts::ensure_bpffs(&cfg.pin_dir)?;
        let pin = PinDir::new(&cfg.pin_dir);
        let mut replaced = None;
        let reused = match pin.check() {
            PinnedState::Empty => false,
            PinnedState::Compatible => true,
            PinnedState::Incompatible(why) => {
                warn!(pin_dir = %pin.root.display(), reason = %why,
                    "pinned state is from an incompatible version; replacing it (policies are re-applied from their sources)");
                pin.remove_all()?;
                mounts::ensure_bpffs(&cfg.pin_dir)?;
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
        let btf = aya::Btf::from_sys_fs().ok();
        let mut ebpf = EbpfLoader::new()
            .btf(btf.as_ref())
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
        };
        let events: RingBuf<MapData> = take(&mut ebpf, maps::EVENTS)?;

        let attach_cgroup = cgroup::resolve(&cfg.attach_cgroup)?;
        let attach_cgroup_id = cgroup::id_of(&attach_cgroup)?;
        let released_links = attach::attach_all(&mut ebpf, &attach_cgroup, attach_cgroup_id, &pin)?;

        let mut enforcer = Self {
            _ebpf: ebpf,
            maps,
            events: Some(events),
            applied: BTreeMap::new(),
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

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin.root
    }

    /// Takes the event ring buffer (once) for the event reader.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Rebuilds `applied` from the maps and removes rules no policed cgroup refers to.
    fn recover(&mut self) -> Result<(usize, usize)> {
        let view = state::read(
            &self.maps.cgroups,
            &self.maps.allow4,
            &self.maps.allow6,
            &self.maps.cidr4,
            &self.maps.cidr6,
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
                "removed allow rules that belonged to no policed cgroup"
            );
        }
        self.applied = view.policies;
        Ok((self.applied.len(), orphans))
    }

    /// Policies currently applied, by cgroup id.
    pub fn policies(&self) -> &BTreeMap<CgroupId, Applied> {
        &self.applied
    }

    fn alloc_policy_id(&self) -> Result<u32> {
        let used: BTreeSet<u32> = self.applied.values().map(|a| a.policy_id).collect();
        (1..=maps::MAX_POLICED_CGROUPS)
            .find(|id| !used.contains(id))
            .ok_or(EnforcerError::NoPolicyId(used.len()))
    }

    /// Sets or replaces the policy of `cgroup`. New rules are written before the cgroup entry
    /// and stale rules are removed after it, so a replacement never denies what both the old
    /// and the new policy allow. On a write error the maps keep the old policy.
    pub fn set_policy(&mut self, cgroup: CgroupId, policy: &Policy) -> Result<()> {
        let (policy_id, old_rules) = match self.applied.get(&cgroup) {
            Some(a) => (a.policy_id, a.policy.rules.clone()),
            None => (self.alloc_policy_id()?, BTreeSet::new()),
        };
        let added: Vec<Rule> = policy.rules.difference(&old_rules).copied().collect();
        for (i, rule) in added.iter().enumerate() {
            if let Err(e) = self.insert_rule(cgroup, policy_id, rule) {
                for r in &added[..i] {
                    let _ = self.remove_rule(cgroup, policy_id, r);
                }
                return Err(e);
            }
        }
        let mut flags = 0;
        if policy.has_v4_cidr() {
            flags |= FLAG_CIDR4;
        }
        if policy.has_v6_cidr() {
            flags |= FLAG_CIDR6;
        }
        let value = CgroupPolicy::new(policy_id, policy.mode, flags);
        if let Err(source) = self.maps.cgroups.insert(cgroup, value, 0) {
            for r in &added {
                let _ = self.remove_rule(cgroup, policy_id, r);
            }
            return Err(EnforcerError::Write {
                cgroup,
                what: "the cgroup's policy entry".into(),
                source,
            });
        }
        for rule in old_rules.difference(&policy.rules) {
            self.remove_rule(cgroup, policy_id, rule)?;
        }
        self.applied.insert(
            cgroup,
            Applied {
                policy_id,
                policy: policy.clone(),
            },
        );
        Ok(())
    }

    /// Removes the policy of `cgroup`: it is unpoliced again at once. Returns false if it had
    /// none.
    pub fn remove_policy(&mut self, cgroup: CgroupId) -> Result<bool> {
        let Some(applied) = self.applied.get(&cgroup).cloned() else {
            return Ok(false);
        };
        match self.maps.cgroups.remove(&cgroup) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(EnforcerError::Write {
                    cgroup,
                    what: "removing the cgroup's policy entry".into(),
                    source,
                });
            }
        }
        self.applied.remove(&cgroup);
        for rule in &applied.policy.rules {
            self.remove_rule(cgroup, applied.policy_id, rule)?;
        }
        Ok(true)
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
            Err(MapError::KeyNotFound) => {
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
