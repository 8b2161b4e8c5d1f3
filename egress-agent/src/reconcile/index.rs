//! What the denial logger needs to name things: which container a cgroup belongs to, the
//! container's name and image, and which allowed domain an IP came from. The reconciler keeps
//! it current; the logger only reads it.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    sync::{Arc, RwLock, Weak},
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

/// Where the names a container learned an address under are found: the DNS proxy's store
/// of that container (read when a denial is logged, never copied).
pub trait LearnedNames: Send + Sync {
    fn names_of(&self, ip: IpAddr) -> Vec<String>;
}

#[derive(Default)]
pub struct Index {
    by_cgroup: HashMap<CgroupId, ContainerId>,
    meta: HashMap<ContainerId, ContainerMeta>,
    /// IP -> the allowed domains (of any container) it was resolved from.
    domains: HashMap<IpAddr, BTreeSet<String>>,
    /// Per container, what the DNS proxy learned from its answers.
    learned: HashMap<ContainerId, Weak<dyn LearnedNames>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("by_cgroup", &self.by_cgroup)
            .field("meta", &self.meta)
            .field("domains", &self.domains.len())
            .field("learned", &self.learned.len())
            .finish()
    }
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

    /// Where the names container `id` learned are looked up (its DNS proxy).
    pub fn set_learned(&self, id: ContainerId, learned: Weak<dyn LearnedNames>) {
        self.write().learned.insert(id, learned);
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
            .and_then(Weak::upgrade)
            .map(|source| source.names_of(*ip))
            .unwrap_or_default();
        let names: BTreeSet<String> = r
            .domains
            .get(ip)
            .into_iter()
            .flatten()
            .cloned()
            .chain(learned)
            .collect();
        names.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(Vec<(IpAddr, &'static str)>);

    impl LearnedNames for Names {
        fn names_of(&self, ip: IpAddr) -> Vec<String> {
            let names = self.0.iter().filter(|(a, _)| *a == ip);
            names.map(|(_, n)| (*n).to_owned()).collect()
        }
    }

    #[test]
    fn learned_names_are_read_from_their_source_while_it_lives() {
        let index = SharedIndex::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let id: ContainerId = "ab".repeat(32).parse().unwrap();
        let other: ContainerId = "cd".repeat(32).parse().unwrap();
        index.set_domains(HashMap::from([(
            a,
            BTreeSet::from(["api.test".to_owned()]),
        )]));
        let source: Arc<dyn LearnedNames> = Arc::new(Names(vec![(a, "cdn.test"), (b, "x.test")]));
        index.set_learned(id, Arc::downgrade(&source));
        assert_eq!(index.domains_of(Some(&id), &a), ["api.test", "cdn.test"]);
        assert_eq!(index.domains_of(Some(&id), &b), ["x.test"]);
        assert_eq!(index.domains_of(Some(&other), &b), Vec::<String>::new());
        assert_eq!(index.domains_of(None, &a), ["api.test"]);
        // The proxy is gone (the container stopped): nothing of it is named.
        drop(source);
        assert!(index.domains_of(Some(&id), &b).is_empty());
    }
}
