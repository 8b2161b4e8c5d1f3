//! The read-only view behind `egress-agent status`: what is pinned and attached, straight from
//! bpffs and the kernel, whether or not an agent is running.

use std::{fs::File, path::Path};

use aya::maps::{HashMap, Map, MapData, PerCpuArray, lpm_trie::LpmTrie};
use egress_common::{
    cgroup_path::{PARENT_CONFIGURED, PARENT_DEFAULT, PARENT_DRIVER, PARENT_SEEN, PathKey},
    maps,
    policy::{CgroupPolicy, FLAG_DENY_ALL, NOTE_ESCAPABLE, NOTE_KILLED, NOTE_OUTSIDE_ATTACH},
};
use serde::Serialize;

use crate::{
    enforcer::{
        MapRefs,
        layout::{self, PinDir, PinnedState},
        read_stats, read_view,
    },
    sys::{
        bpf::{CgroupAttachType, attached_programs},
        cgroup,
        kernel_path::KernelPath,
        mounts,
    },
};
use egress_policy::policy::mode_name;

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    /// `empty`, `compatible` or `incompatible: <reason>`.
    pub pinned_state: String,
    pub links: Vec<LinkStatus>,
    /// Which layers of the backstop (what the connect and sendmsg hooks never see) are
    /// attached.
    pub backstop: Backstop,
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
    /// How full the maps the agent inserts into are.
    pub maps: Vec<MapFill>,
    pub counters: Option<Counters>,
}

/// The backstop's layers, each true when its program's link is pinned.
#[derive(Debug, Serialize)]
pub struct Backstop {
    /// Raw, ping and non-TCP/UDP inet sockets refused for policed cgroups.
    pub sock_create: bool,
    /// Source routes (`IP_OPTIONS`, `IPV6_RTHDR`) refused.
    pub setsockopt: bool,
    /// Source-routed packets dropped, other protocols judged by destination.
    pub egress: bool,
    /// Non-IP address families (`AF_PACKET`, `AF_XDP`, ...) refused (BPF LSM).
    pub lsm_socket_create: bool,
    /// What stays possible for a policed container, one line per missing layer.
    pub missing: Vec<&'static str>,
}

impl Backstop {
    fn of(links: &[LinkStatus]) -> Self {
        let has = |hook: &str| links.iter().any(|l| l.hook == hook);
        let (sock_create, setsockopt, egress, lsm_socket_create) = (
            has("sock_create"),
            has("setsockopt"),
            has("egress"),
            has("lsm_socket_create"),
        );
        let mut missing = Vec::new();
        if !sock_create {
            missing.push("sock_create: raw, ping, UDP-Lite and SCTP sockets are NOT refused");
        }
        if !setsockopt {
            missing.push("setsockopt: source routes on sockets are NOT refused");
        }
        if !egress {
            missing.push(
                "egress: source-routed packets and packets of other protocols are NOT dropped",
            );
        }
        if !lsm_socket_create {
            missing.push(
                "BPF LSM socket_create: not attached (the kernel does not run the BPF LSM, or refused its program: the agent's start says which): AF_PACKET, AF_XDP and other non-IP sockets are NOT refused; drop NET_RAW (--cap-drop NET_RAW) for policed containers",
            );
        }
        Self {
            sock_create,
            setsockopt,
            egress,
            lsm_socket_create,
            missing,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: usize,
    pub capacity: u32,
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
    /// False if the cgroup is not below the cgroup the programs are attached to (no program
    /// judges it).
    pub enforceable: bool,
    pub policy_id: u32,
    /// True if the policy is a policed path's (this cgroup's or an ancestor's).
    pub by_path: bool,
    pub mode: &'static str,
    pub allow: Vec<String>,
    /// Its policy did not fit in the maps: everything is denied until it does.
    pub denied_all: bool,
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
    /// A policy of the agent's is in force for it (false for a container whose cgroup is
    /// outside the attach cgroup: nothing judges it).
    pub policed: bool,
    /// `policed`, `policed, not enforceable` (it can switch off or escape any cgroup policy),
    /// `not enforceable` (outside the attach cgroup) or `not policed`.
    pub state: &'static str,
    /// False if the agent knows a way out of its policy (see `not_enforceable`).
    pub enforceable: bool,
    /// Why not, one reason each.
    pub not_enforceable: Vec<&'static str>,
    /// It may reach its own loopback (its network namespace is its own).
    pub loopback: bool,
    pub policy_id: Option<u32>,
    pub mode: Option<&'static str>,
    pub allow: Vec<String>,
    /// cgroups that carry the container's policy in the kernel.
    pub cgroups: Vec<CgroupRef>,
    /// Its policy did not fit in the maps: everything is denied until it does.
    pub denied_all: bool,
    /// A cgroup of it found no room in the cgroup map, and the agent killed its processes.
    pub killed: bool,
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
    /// Inserts of the `cgroup_mkdir` tracepoint that found `EG_CGRP_POLICY` full.
    pub cgroup_mkdir_insert_failures: u64,
    /// The agent's failed inserts, by map (each failed its owner closed).
    pub insert_failures: std::collections::BTreeMap<&'static str, u64>,
    /// Port-53 destinations sent to the DNS proxy, sent where a rule named them, and denied
    /// because their origin could not be stored.
    pub dns_redirected: u64,
    pub dns_direct: u64,
    pub dns_origin_failures: u64,
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
            .zip(CgroupAttachType::of_program(hook))
            .and_then(|(f, t)| attached_programs(&f, t).ok())
            .unwrap_or_default();
        links.push(LinkStatus {
            hook: hook.to_owned(),
            cgroup_id,
            cgroup: path_of(cgroup_id),
            kernel_attached_prog_ids,
        });
    }

    // Where the socket programs are attached: a cgroup outside it is judged by none.
    let attach_paths: Vec<String> = links
        .iter()
        .filter(|l| l.cgroup_id != 0)
        .filter_map(|l| l.cgroup.clone())
        .collect();
    let judged = |path: Option<&str>| match path {
        Some(p) => attach_paths
            .iter()
            .any(|a| std::path::Path::new(p).starts_with(a)),
        // A cgroup that is gone judges nothing either way.
        None => true,
    };
    let mut fill = Vec::new();
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
            let up: HashMap<MapData, _, _> = open(&pin, maps::UNPOLICED, Map::HashMap)?;
            let pp: HashMap<MapData, _, _> = open(&pin, maps::PATH_POLICY, Map::HashMap)?;
            let parents: HashMap<MapData, PathKey, u32> =
                open(&pin, maps::CONTAINER_PARENTS, Map::HashMap)?;
            let view = read_view(&MapRefs {
                cgroups: &cgroups,
                allow4: &a4,
                allow6: &a6,
                cidr4: &c4,
                cidr6: &c6,
                containers: &ct,
                unpoliced: &up,
                path_policy: &pp,
            });
            let value_of = |id: u32| view.values.get(&id).copied();
            let denied = |v: Option<CgroupPolicy>| v.is_some_and(|v| v.flags & FLAG_DENY_ALL != 0);
            let policed = view.containers.values().filter(|p| p.is_some()).count();
            for (name, entries) in [
                (maps::CGROUP_POLICY, view.cgroup_entries.len()),
                (maps::CONTAINERS, policed),
                (maps::UNPOLICED, view.containers.len() - policed),
            ]
            .into_iter()
            .chain(
                [maps::ALLOW_V4, maps::ALLOW_V6, maps::CIDR_V4, maps::CIDR_V6]
                    .map(|m| (m, view.rule_counts.get(m).copied().unwrap_or(0))),
            ) {
                fill.push(MapFill {
                    name,
                    entries,
                    capacity: maps::capacity(name).unwrap_or_default(),
                });
            }
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
                let mut notes = policy.map(|p| p.notes).unwrap_or(0);
                let cgroups: Vec<CgroupRef> = view
                    .cgroup_entries
                    .iter()
                    .filter(|(_, v)| policy_id.is_some_and(|p| v.policy_id == p))
                    .map(|(cg, _)| cgref(*cg))
                    .collect();
                if cgroups.iter().any(|c| !judged(c.cgroup.as_deref())) {
                    notes |= NOTE_OUTSIDE_ATTACH;
                }
                let mut not_enforceable = Vec::new();
                if notes & NOTE_ESCAPABLE != 0 {
                    not_enforceable.push(
                        "it can switch off or escape any cgroup policy (see the agent's log)",
                    );
                }
                if notes & NOTE_OUTSIDE_ATTACH != 0 {
                    not_enforceable
                        .push("its cgroup is outside the attach cgroup: no program judges it");
                }
                let state = match policy {
                    None => "not policed",
                    Some(_) if notes & NOTE_OUTSIDE_ATTACH != 0 => "not enforceable",
                    Some(_) if notes & NOTE_ESCAPABLE != 0 => "policed, not enforceable",
                    Some(_) => "policed",
                };
                containers.push(ContainerStatus {
                    id: id.to_string(),
                    policed: policy.is_some() && notes & NOTE_OUTSIDE_ATTACH == 0,
                    state,
                    enforceable: not_enforceable.is_empty(),
                    not_enforceable,
                    loopback: policy.is_some_and(|p| p.loopback),
                    policy_id: *policy_id,
                    mode: policy.map(|p| mode_name(p.mode)),
                    allow: policy
                        .map(|p| p.rules.iter().map(|r| r.to_string()).collect())
                        .unwrap_or_default(),
                    cgroups,
                    denied_all: denied(policy_id.and_then(value_of)),
                    killed: policy_id
                        .and_then(value_of)
                        .is_some_and(|v| v.notes & NOTE_KILLED != 0),
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
                    enforceable: judged(path_of(*id).as_deref()),
                    policy_id: a.policy_id,
                    by_path: by_path.contains_key(id),
                    mode: mode_name(a.policy.mode),
                    allow: a.policy.rules.iter().map(|r| r.to_string()).collect(),
                    denied_all: denied(value_of(a.policy_id)),
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
                cgroup_mkdir_insert_failures: s.cgroup_mkdir_insert_failures,
                insert_failures: s.insert_failures,
                dns_redirected: s.dns_redirected,
                dns_direct: s.dns_direct,
                dns_origin_failures: s.dns_origin_failures,
            };
            ("compatible".to_owned(), policies, orphans, Some(counters))
        }
    };
    Ok(Status {
        pin_dir: pin_dir.display().to_string(),
        pinned_state,
        backstop: Backstop::of(&links),
        links,
        policies,
        policy_paths,
        container_parents,
        containers,
        unclassified_cgroups,
        orphan_rules,
        maps: fill,
        counters,
    })
}

/// How `status` shows an owner whose policy did not fit.
const DENIED_ALL: &str = "DENIED ALL (its policy did not fit in the maps)";
/// How `status` shows a container a cgroup of which was killed for want of room.
const KILLED: &str = ", a cgroup of it was KILLED (no room in EG_CGRP_POLICY)";

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
                        (0, _) if l.hook.starts_with("lsm_") => "the BPF LSM hook (all tasks)",
                        (0, _) => "the cgroup tracepoint (all cgroups)",
                        (_, Some(p)) => p,
                        (_, None) => "<cgroup gone>",
                    },
                    l.cgroup_id,
                    l.kernel_attached_prog_ids
                )?;
            }
        }
        if !self.links.is_empty() {
            if self.backstop.missing.is_empty() {
                writeln!(
                    f,
                    "backstop: complete (sock_create, setsockopt, egress, BPF LSM socket_create)"
                )?;
            } else {
                writeln!(f, "backstop: INCOMPLETE")?;
                for m in &self.backstop.missing {
                    writeln!(f, "  {m}")?;
                }
            }
        }
        writeln!(f, "policed cgroups: {}", self.policies.len())?;
        for p in &self.policies {
            writeln!(
                f,
                "  {} (id {}){}: {}, policy {}{}, {} allow rule(s)",
                p.cgroup.as_deref().unwrap_or("<cgroup gone>"),
                p.cgroup_id,
                if p.enforceable {
                    ""
                } else {
                    " NOT ENFORCEABLE (outside the attach cgroup)"
                },
                if p.denied_all { DENIED_ALL } else { p.mode },
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
                    "  {}: {}, {}{}{}, policy {}, {} allow rule(s), cgroups {:?}",
                    &c.id[..12],
                    c.state,
                    if c.denied_all { DENIED_ALL } else { mode },
                    if c.killed { KILLED } else { "" },
                    if c.loopback { ", own loopback" } else { "" },
                    c.policy_id.unwrap_or_default(),
                    c.allow.len(),
                    cgs
                )?,
                None => writeln!(f, "  {}: not policed", &c.id[..12])?,
            }
            for why in &c.not_enforceable {
                writeln!(f, "      not enforceable: {why}")?;
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
        if !self.maps.is_empty() {
            let fill: Vec<String> = self
                .maps
                .iter()
                .map(|m| format!("{} {}/{}", m.name, m.entries, m.capacity))
                .collect();
            writeln!(f, "map entries: {}", fill.join(", "))?;
        }
        if let Some(c) = &self.counters {
            let d: u64 = c.denied.values().sum();
            let a: u64 = c.audited.values().sum();
            writeln!(
                f,
                "counters: allowed {}, denied {} {:?}, audited {} {:?}, events lost {}",
                c.allowed, d, c.denied, a, c.audited, c.events_lost
            )?;
            writeln!(
                f,
                "dns: redirected to the proxy {}, sent where a rule named the server {}, origin not stored (denied) {}",
                c.dns_redirected, c.dns_direct, c.dns_origin_failures
            )?;
            let failed: Vec<String> = c
                .insert_failures
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(m, n)| {
                    format!(
                        "{m} ({} entries) {n}",
                        maps::capacity(m).unwrap_or_default()
                    )
                })
                .chain((c.cgroup_mkdir_insert_failures > 0).then(|| {
                    format!(
                        "{} ({} entries) {} by the cgroup_mkdir tracepoint",
                        maps::CGROUP_POLICY,
                        maps::CGROUP_POLICY_ENTRIES,
                        c.cgroup_mkdir_insert_failures
                    )
                }))
                .collect();
            if !failed.is_empty() {
                writeln!(
                    f,
                    "failed inserts (each one failed its container or cgroup closed): {}",
                    failed.join(", ")
                )?;
            }
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
