//! Which cgroup entries point at which policy id, so that a change of a policy's flags or mode
//! reaches every cgroup that carries the policy without a scan of the whole cgroup map.
//!
//! The enforcer adds a cgroup when it writes the cgroup's entry itself and when the
//! `cgroup_mkdir` tracepoint reports that it gave a container cgroup its container's policy
//! (a `Classified` notice). A notice lost to a full ring buffer would leave a gap, so the
//! enforcer rebuilds the index from the map whenever the lost-event counter has moved since
//! the last rebuild. Cgroups removed by `cgroup_rmdir` stay listed until the next write finds
//! their entry gone (updates of listed cgroups never create an entry).

use std::collections::{BTreeMap, BTreeSet};

use crate::sys::cgroup::CgroupId;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupIndex {
    by_policy: BTreeMap<u32, BTreeSet<CgroupId>>,
    by_cgroup: BTreeMap<CgroupId, u32>,
}

impl CgroupIndex {
    /// Records that `cgroup`'s entry points at `policy_id` (and no longer at another id).
    pub fn set(&mut self, cgroup: CgroupId, policy_id: u32) {
        if let Some(old) = self.by_cgroup.insert(cgroup, policy_id)
            && old != policy_id
        {
            self.unlink(old, cgroup);
        }
        self.by_policy.entry(policy_id).or_default().insert(cgroup);
    }

    /// Forgets `cgroup` (its entry is gone).
    pub fn remove_cgroup(&mut self, cgroup: CgroupId) {
        if let Some(id) = self.by_cgroup.remove(&cgroup) {
            self.unlink(id, cgroup);
        }
    }

    /// The cgroups pointing at `policy_id`.
    pub fn cgroups_of(&self, policy_id: u32) -> Vec<CgroupId> {
        self.by_policy
            .get(&policy_id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The policy id `cgroup`'s entry points at, if known.
    pub fn policy_of(&self, cgroup: CgroupId) -> Option<u32> {
        self.by_cgroup.get(&cgroup).copied()
    }

    /// Replaces everything with what the map holds.
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = (CgroupId, u32)>) {
        *self = Self::default();
        for (cg, id) in entries {
            self.set(cg, id);
        }
    }

    /// Number of cgroups listed.
    pub fn len(&self) -> usize {
        self.by_cgroup.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_cgroup.is_empty()
    }

    fn unlink(&mut self, policy_id: u32, cgroup: CgroupId) {
        if let Some(set) = self.by_policy.get_mut(&policy_id) {
            set.remove(&cgroup);
            if set.is_empty() {
                self.by_policy.remove(&policy_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_points_at_one_policy_at_a_time() {
        let mut ix = CgroupIndex::default();
        ix.set(10, 1);
        ix.set(11, 1);
        ix.set(10, 2);
        assert_eq!(ix.cgroups_of(1), vec![11]);
        assert_eq!(ix.cgroups_of(2), vec![10]);
        assert_eq!(ix.policy_of(10), Some(2));
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn removing_the_last_cgroup_of_a_policy_forgets_the_policy() {
        let mut ix = CgroupIndex::default();
        ix.set(10, 1);
        ix.remove_cgroup(10);
        ix.remove_cgroup(99);
        assert!(ix.cgroups_of(1).is_empty());
        assert!(ix.is_empty());
        assert_eq!(ix, CgroupIndex::default());
    }

    #[test]
    fn rebuild_replaces_everything() {
        let mut ix = CgroupIndex::default();
        ix.set(10, 1);
        ix.rebuild([(20, 3), (21, 3), (22, 4)]);
        assert!(ix.cgroups_of(1).is_empty());
        assert_eq!(ix.cgroups_of(3), vec![20, 21]);
        assert_eq!(ix.policy_of(22), Some(4));
    }
}
