//! The read-only view behind `egress-agent status`: what is pinned and attached, straight from
//! bpffs and the kernel, whether or not an agent is running.

use std::{fs::File, path::Path};

use aya::maps::{HashMap, Map, MapData, PerCpuArray, lpm_trie::LpmTrie};
use egress_common::{
    cgroup_path::{PARENT_CONFIGURED, PARENT_DEFAULT, PARENT_DRIVER, PARENT_SEEN, PathKey},
    maps,
};
use serde::Serialize;

use crate::{
    enforcer::{
        layout::{self, PinDir, PinnedState},
        read_stats, read_view,
    },
    policy::mode_name,
    sys::{
        bpf::{CgroupAttachType, attached_programs},
        cgroup,
        kernel_path::KernelPath,
        mounts,
    },
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    /// `empty`, `compatible` or `incompatible: <reason>`.
    pub pinned_state: String,
    pub links: Vec<LinkStatus>,
    /// Cgroups policed on their own or by a policed path.
    pub policies: Vec<PolicyStatus>,
    /// Cgroup paths policed with every cgroup made at or below them (`--policy`).
    pub policy_paths: Vec<PathPolicyStatus>,
    /// This dockerd's cgroup parents: only there does a cgroup that looks like an unknown
    /// container get the unclassified default.
    pub container_parents: Vec<ParentStatus>,
    /// Containers the agent registered.
    pub containers: Vec<ContainerStatus>,
    /// Container cgroups denied everything because their container was not classified yet.
    pub unclassified_cgroups: Vec<CgroupRef>,
    pub orphan_rules: usize,
    pub counters: Option<Counters>,
}

#[derive(Debug, Serialize)]
pub struct LinkStatus {
    pub hook: String,
    pub cgroup_id: u64,
    /// The cgroup's path, if it still exists.
    pub cgroup: Option<String>,
    /// Programs the kernel reports attached to that cgroup for this hook.
    pub kernel_attached_prog_ids: Vec<u32>,
}

#[derive(Debug, Serialize)]
pub struct PolicyStatus {
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub policy_id: u32,
    /// True if the policy is a policed path's (this cgroup's or an ancestor's).
    pub by_path: bool,
    pub mode: &'static str,
    pub allow: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PathPolicyStatus {
    /// The path relative to the cgroup v2 root, when a cgroup by that path exists (the maps
    /// hold only its hash).
    pub path: Option<String>,
    /// The FNV-1a hash and the length the maps know it by.
    pub key: String,
    pub policy_id: u32,
    pub mode: &'static str,
    pub allow: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ParentStatus {
    /// As [`PathPolicyStatus::path`].
    pub path: Option<String>,
    pub key: String,
    /// Why it is registered: `default` (of either driver, until the daemon's is known),
    /// `driver` (the daemon's driver's default), `cgroup-parent`, `seen`.
    pub sources: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ContainerStatus {
    pub id: String,
    pub policed: bool,
    pub policy_id: Option<u32>,
    pub mode: Option<&'static str>,
    pub allow: Vec<String>,
    /// cgroups that carry the container's policy in the kernel.
    pub cgroups: Vec<CgroupRef>,
}

#[derive(Debug, Serialize)]
pub struct CgroupRef {
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Counters {
    pub allowed: u64,
    pub denied: std::collections::BTreeMap<&'static str, u64>,
    pub audited: std::collections::BTreeMap<&'static str, u64>,
    pub events_lost: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(
    pin: &PinDir,
    name: &'static str,
    wrap: fn(MapData) -> Map,
) -> Result<T, StatusError> {
    let data =
        MapData::from_pin(pin.map(name)).map_err(|source| StatusError::Map { name, source })?;
    T::try_from(wrap(data)).map_err(|source| StatusError::Map { name, source })
}

/// Reads the pinned state under `pin_dir`.
pub fn read(pin_dir: &Path) -> Result<Status, StatusError> {
    let pin = PinDir::new(pin_dir);
    let state = pin.check();
    let cg_root = mounts::cgroup2_mount().ok();
    let paths = cg_root
        .as_deref()
        .map(cgroup::paths_by_id)
        .unwrap_or_default();
    let path_of = |id: u64| paths.get(&id).map(|p| p.display().to_string());

    let mut links = Vec::new();
    for p in pin.link_pins() {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some((hook, cgroup_id)) = layout::parse_link_pin_name(&name) else {
            continue;
        };
        let kernel_attached_prog_ids = paths
            .get(&cgroup_id)
            .and_then(|dir| File::open(dir).ok())
            .zip(CgroupAttachType::ALL.into_iter().find(|t| t.name() == hook))
            .and_then(|(f, t)| attached_programs(&f, t).ok())
            .unwrap_or_default();
        links.push(LinkStatus {
            hook: hook.to_owned(),
            cgroup_id,
            cgroup: path_of(cgroup_id),
            kernel_attached_prog_ids,
        });
    }

    // The maps know paths by hash: name the ones that exist (and the drivers' defaults).
    let mut names: std::collections::HashMap<PathKey, String> = std::collections::HashMap::new();
    if let Some(root) = cg_root.as_deref() {
        for dir in paths.values() {
            if let Ok(p) = KernelPath::of_dir(root, dir) {
                names.insert(p.key(), p.to_string());
            }
        }
    }
    for d in [
        crate::docker::cgroup_path::CgroupDriver::Cgroupfs,
        crate::docker::cgroup_path::CgroupDriver::Systemd,
    ] {
        let p = crate::docker::cgroup_path::default_parent(d);
        names.insert(p.key(), p.to_string());
    }
    let key_text = |k: &PathKey| format!("{:016x}/{}", k.hash, k.len);

    let mut containers = Vec::new();
    let mut unclassified_cgroups = Vec::new();
    let mut policy_paths = Vec::new();
    let mut container_parents = Vec::new();
    let (pinned_state, policies, orphan_rules, counters) = match state {
        PinnedState::Empty => ("empty".to_owned(), vec![], 0, None),
        PinnedState::Incompatible(why) => (format!("incompatible: {why}"), vec![], 0, None),
        PinnedState::Compatible => {
            let cgroups: HashMap<MapData, _, _> = open(&pin, maps::CGROUP_POLICY, Map::HashMap)?;
            let a4: HashMap<MapData, _, _> = open(&pin, maps::ALLOW_V4, Map::HashMap)?;
            let a6: HashMap<MapData, _, _> = open(&pin, maps::ALLOW_V6, Map::HashMap)?;
            let c4: LpmTrie<MapData, _, _> = open(&pin, maps::CIDR_V4, Map::LpmTrie)?;
            let c6: LpmTrie<MapData, _, _> = open(&pin, maps::CIDR_V6, Map::LpmTrie)?;
            let st: PerCpuArray<MapData, u64> = open(&pin, maps::STATS, Map::PerCpuArray)?;
            let ct: HashMap<MapData, _, _> = open(&pin, maps::CONTAINERS, Map::HashMap)?;
            let pp: HashMap<MapData, _, _> = open(&pin, maps::PATH_POLICY, Map::HashMap)?;
            let parents: HashMap<MapData, PathKey, u32> =
                open(&pin, maps::CONTAINER_PARENTS, Map::HashMap)?;
            let view = read_view(&cgroups, &a4, &a6, &c4, &c6, &ct, &pp);
            for (key, policy_id) in &view.path_owned {
                let policy = view.policies.get(policy_id);
                policy_paths.push(PathPolicyStatus {
                    path: names.get(key).cloned(),
                    key: key_text(key),
                    policy_id: *policy_id,
                    mode: policy.map(|p| mode_name(p.mode)).unwrap_or("enforce"),
                    allow: policy
                        .map(|p| p.rules.iter().map(|r| r.to_string()).collect())
                        .unwrap_or_default(),
                });
            }
            for (key, bits) in parents.iter().flatten() {
                let sources = [
                    (PARENT_DEFAULT, "default"),
                    (PARENT_DRIVER, "driver"),
                    (PARENT_CONFIGURED, "cgroup-parent"),
                    (PARENT_SEEN, "seen"),
                ]
                .into_iter()
                .filter(|(b, _)| bits & b != 0)
                .map(|(_, n)| n)
                .collect();
                container_parents.push(ParentStatus {
                    path: names.get(&key).cloned(),
                    key: key_text(&key),
                    sources,
                });
            }
            container_parents.sort_by(|a, b| a.path.cmp(&b.path));
            let by_path = view.path_cgroups();
            let cgref = |id: u64| CgroupRef {
                cgroup_id: id,
                cgroup: path_of(id),
            };
            for (id, policy_id) in &view.containers {
                let policy = policy_id.and_then(|p| view.policies.get(&p));
                containers.push(ContainerStatus {
                    id: id.to_string(),
                    policed: policy_id.is_some(),
                    policy_id: *policy_id,
                    mode: policy.map(|p| mode_name(p.mode)),
                    allow: policy
                        .map(|p| p.rules.iter().map(|r| r.to_string()).collect())
                        .unwrap_or_default(),
                    cgroups: view
                        .cgroup_entries
                        .iter()
                        .filter(|(_, v)| policy_id.is_some_and(|p| v.policy_id == p))
                        .map(|(cg, _)| cgref(*cg))
                        .collect(),
                });
            }
            unclassified_cgroups = view
                .cgroup_entries
                .iter()
                .filter(|(_, v)| v.flags & egress_common::policy::FLAG_UNCLASSIFIED != 0)
                .map(|(cg, _)| cgref(*cg))
                .collect();
            let policies = view
                .cgroup_policies()
                .iter()
                .map(|(id, a)| PolicyStatus {
                    cgroup_id: *id,
                    cgroup: path_of(*id),
                    policy_id: a.policy_id,
                    by_path: by_path.contains_key(id),
                    mode: mode_name(a.policy.mode),
                    allow: a.policy.rules.iter().map(|r| r.to_string()).collect(),
                })
                .collect();
            let orphans = view.orphans.values().map(Vec::len).sum();
            let s = read_stats(&st).map_err(|source| StatusError::Map {
                name: maps::STATS,
                source,
            })?;
            let counters = Counters {
                allowed: s.allowed,
                denied: s.denied,
                audited: s.audited,
                events_lost: s.events_lost,
            };
            ("compatible".to_owned(), policies, orphans, Some(counters))
        }
    };
    Ok(Status {
        pin_dir: pin_dir.display().to_string(),
        pinned_state,
        links,
        policies,
        policy_paths,
        container_parents,
        containers,
        unclassified_cgroups,
        orphan_rules,
        counters,
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "pin directory: {} ({})", self.pin_dir, self.pinned_state)?;
        if self.links.is_empty() {
            writeln!(f, "programs: not attached (no pinned links)")?;
        } else {
            writeln!(f, "programs:")?;
            for l in &self.links {
                writeln!(
                    f,
                    "  {:<9} at {} (cgroup id {}), kernel reports programs {:?} attached there",
                    l.hook,
                    match (l.cgroup_id, l.cgroup.as_deref()) {
                        (0, _) => "the cgroup tracepoint (all cgroups)",
                        (_, Some(p)) => p,
                        (_, None) => "<cgroup gone>",
                    },
                    l.cgroup_id,
                    l.kernel_attached_prog_ids
                )?;
            }
        }
        writeln!(f, "policed cgroups: {}", self.policies.len())?;
        for p in &self.policies {
            writeln!(
                f,
                "  {} (id {}): {}, policy {}{}, {} allow rule(s)",
                p.cgroup.as_deref().unwrap_or("<cgroup gone>"),
                p.cgroup_id,
                p.mode,
                p.policy_id,
                if p.by_path { " (by path)" } else { "" },
                p.allow.len()
            )?;
            for r in &p.allow {
                writeln!(f, "      allow {r}")?;
            }
        }
        if !self.policy_paths.is_empty() {
            writeln!(
                f,
                "policed cgroup paths (the cgroup and every cgroup made below it): {}",
                self.policy_paths.len()
            )?;
            for p in &self.policy_paths {
                writeln!(
                    f,
                    "  {}: {}, policy {}, {} allow rule(s)",
                    p.path
                        .clone()
                        .unwrap_or_else(|| format!("<no such cgroup now, key {}>", p.key)),
                    p.mode,
                    p.policy_id,
                    p.allow.len()
                )?;
            }
        }
        if !self.container_parents.is_empty() {
            writeln!(
                f,
                "docker cgroup parents (unknown containers below them are unclassified): {}",
                self.container_parents
                    .iter()
                    .map(|p| format!(
                        "{} ({})",
                        p.path.clone().unwrap_or_else(|| format!("key {}", p.key)),
                        p.sources.join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            )?;
        }
        writeln!(f, "containers: {}", self.containers.len())?;
        for c in &self.containers {
            let cgs: Vec<String> = c
                .cgroups
                .iter()
                .map(|r| r.cgroup.clone().unwrap_or_else(|| r.cgroup_id.to_string()))
                .collect();
            match c.mode {
                Some(mode) => writeln!(
                    f,
                    "  {}: {}, policy {}, {} allow rule(s), cgroups {:?}",
                    &c.id[..12],
                    mode,
                    c.policy_id.unwrap_or_default(),
                    c.allow.len(),
                    cgs
                )?,
                None => writeln!(f, "  {}: not policed", &c.id[..12])?,
            }
            for r in &c.allow {
                writeln!(f, "      allow {r}")?;
            }
        }
        if !self.unclassified_cgroups.is_empty() {
            writeln!(
                f,
                "unclassified container cgroups (everything denied until the agent classifies them): {}",
                self.unclassified_cgroups.len()
            )?;
            for r in &self.unclassified_cgroups {
                writeln!(
                    f,
                    "  {}",
                    r.cgroup.clone().unwrap_or_else(|| r.cgroup_id.to_string())
                )?;
            }
        }
        if self.orphan_rules > 0 {
            writeln!(
                f,
                "rules of no policed cgroup: {} (the agent removes them when it starts)",
                self.orphan_rules
            )?;
        }
        if let Some(c) = &self.counters {
            let d: u64 = c.denied.values().sum();
            let a: u64 = c.audited.values().sum();
            writeln!(
                f,
                "counters: allowed {}, denied {} {:?}, audited {} {:?}, events lost {}",
                c.allowed, d, c.denied, a, c.audited, c.events_lost
            )?;
        }
        Ok(())
    }
}

/// What `cleanup` removed.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CleanupReport {
    pub links_detached: usize,
    pub maps_unpinned: usize,
}

/// Detaches every link and unpins everything under `pin_dir`. Idempotent.
pub fn cleanup(pin_dir: &Path) -> Result<CleanupReport, layout::PinIoError> {
    let (links_detached, maps_unpinned) = PinDir::new(pin_dir).remove_all()?;
    Ok(CleanupReport {
        links_detached,
        maps_unpinned,
    })
}
