//! What the denial logger needs to name things: which container a cgroup belongs to, the
//! container's name and image, and which allowed domain an IP came from. The reconciler keeps
//! it current; the logger only reads it.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{Arc, RwLock},
};

use crate::sys::cgroup::CgroupId;
use egress_common::container::ContainerId;

/// A container as logs show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub image: String,
    /// `enforce`, `audit`, `deny-all (invalid labels)` or `unpoliced`.
    pub mode: String,
}

#[derive(Debug, Default)]
pub struct Index {
    by_cgroup: HashMap<CgroupId, ContainerId>,
    meta: HashMap<ContainerId, ContainerMeta>,
    /// IP -> the allowed domains (of any container) it was resolved from.
    domains: HashMap<IpAddr, BTreeSet<String>>,
    /// Per container, IP -> the names the DNS proxy learned it under from its answers.
    learned: HashMap<ContainerId, HashMap<IpAddr, BTreeSet<String>>>,
}

/// The index, shared between the reconciler (writer) and the logger (reader).
#[derive(Debug, Clone, Default)]
pub struct SharedIndex(Arc<RwLock<Index>>);

impl SharedIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_container(&self, id: ContainerId, meta: ContainerMeta) {
        self.write().meta.insert(id, meta);
    }

    pub fn set_cgroups(&self, id: ContainerId, cgroups: &[CgroupId]) {
        let mut w = self.write();
        w.by_cgroup.retain(|_, c| *c != id);
        for cg in cgroups {
            w.by_cgroup.insert(*cg, id);
        }
    }

    /// Replaces the IP -> domains map (built from every resolved domain).
    pub fn set_domains(&self, domains: HashMap<IpAddr, BTreeSet<String>>) {
        self.write().domains = domains;
    }

    /// Replaces what the DNS proxy learned for container `id` (IP -> names).
    pub fn set_learned(&self, id: ContainerId, learned: HashMap<IpAddr, BTreeSet<String>>) {
        let mut w = self.write();
        if learned.is_empty() {
            w.learned.remove(&id);
        } else {
            w.learned.insert(id, learned);
        }
    }

    pub fn remove_container(&self, id: &ContainerId) {
        let mut w = self.write();
        w.meta.remove(id);
        w.learned.remove(id);
        w.by_cgroup.retain(|_, c| c != id);
    }

    pub fn container_of(&self, cgroup: CgroupId) -> Option<ContainerId> {
        self.read().by_cgroup.get(&cgroup).copied()
    }

    pub fn remember_cgroup(&self, cgroup: CgroupId, id: ContainerId) {
        self.write().by_cgroup.insert(cgroup, id);
    }

    pub fn meta(&self, id: &ContainerId) -> Option<ContainerMeta> {
        self.read().meta.get(id).cloned()
    }

    /// The allowed domains `ip` was resolved from, and the names `container` learned it under
    /// (empty if none).
    pub fn domains_of(&self, container: Option<&ContainerId>, ip: &IpAddr) -> Vec<String> {
        let r = self.read();
        let learned = container
            .and_then(|c| r.learned.get(c))
            .and_then(|m| m.get(ip));
        let names: BTreeSet<&String> = r
            .domains
            .get(ip)
            .into_iter()
            .chain(learned)
            .flatten()
            .collect();
        names.into_iter().cloned().collect()
    }
}
