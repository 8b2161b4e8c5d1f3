//! The containers the enforcer knows, indexed both ways: container → its policy id (None: known
//! and not policed), and policy id → the container that owns it. The second direction is what
//! attributes an event (which carries a policy id) or a tracepoint notice to its container
//! without a scan of every container.

use std::collections::{BTreeMap, btree_map};

use egress_common::container::ContainerId;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerTable {
    by_container: BTreeMap<ContainerId, Option<u32>>,
    by_policy: BTreeMap<u32, ContainerId>,
}

impl ContainerTable {
    /// Records `container` with its policy id (None: not policed); returns what it had.
    pub fn insert(
        &mut self,
        container: ContainerId,
        policy_id: Option<u32>,
    ) -> Option<Option<u32>> {
        let old = self.by_container.insert(container, policy_id);
        if let Some(Some(old_id)) = old
            && Some(old_id) != policy_id
        {
            self.by_policy.remove(&old_id);
        }
        if let Some(id) = policy_id {
            self.by_policy.insert(id, container);
        }
        old
    }

    /// Forgets `container`; returns what it had.
    pub fn remove(&mut self, container: &ContainerId) -> Option<Option<u32>> {
        let old = self.by_container.remove(container);
        if let Some(Some(id)) = old {
            self.by_policy.remove(&id);
        }
        old
    }

    /// The policy id of `container` (`Some(None)`: known, not policed).
    pub fn get(&self, container: &ContainerId) -> Option<&Option<u32>> {
        self.by_container.get(container)
    }

    pub fn contains_key(&self, container: &ContainerId) -> bool {
        self.by_container.contains_key(container)
    }

    /// The container that owns `policy_id`, if a container does.
    pub fn owner_of(&self, policy_id: u32) -> Option<ContainerId> {
        self.by_policy.get(&policy_id).copied()
    }

    pub fn iter(&self) -> btree_map::Iter<'_, ContainerId, Option<u32>> {
        self.by_container.iter()
    }

    pub fn keys(&self) -> btree_map::Keys<'_, ContainerId, Option<u32>> {
        self.by_container.keys()
    }

    pub fn values(&self) -> btree_map::Values<'_, ContainerId, Option<u32>> {
        self.by_container.values()
    }

    pub fn len(&self) -> usize {
        self.by_container.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_container.is_empty()
    }
}

impl From<BTreeMap<ContainerId, Option<u32>>> for ContainerTable {
    fn from(by_container: BTreeMap<ContainerId, Option<u32>>) -> Self {
        let by_policy = by_container
            .iter()
            .filter_map(|(c, id)| Some(((*id)?, *c)))
            .collect();
        Self {
            by_container,
            by_policy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> ContainerId {
        format!("{n:064x}").parse().unwrap()
    }

    #[test]
    fn the_owner_of_a_policy_id_follows_registration_and_forgetting() {
        let mut t = ContainerTable::default();
        assert_eq!(t.insert(c(1), Some(7)), None);
        t.insert(c(2), None);
        assert_eq!(t.owner_of(7), Some(c(1)));
        // A new policy for the same container: the old id has no owner any more.
        t.insert(c(1), Some(9));
        assert_eq!((t.owner_of(7), t.owner_of(9)), (None, Some(c(1))));
        // Not policed any more.
        assert_eq!(t.insert(c(1), None), Some(Some(9)));
        assert_eq!(t.owner_of(9), None);
        t.insert(c(1), Some(10));
        assert_eq!(t.remove(&c(1)), Some(Some(10)));
        assert_eq!(t.owner_of(10), None);
        assert_eq!(t.len(), 1, "the unpoliced one is still known");
        assert_eq!(t.get(&c(2)), Some(&None));
    }

    #[test]
    fn recovered_containers_are_indexed() {
        let t = ContainerTable::from(BTreeMap::from([(c(1), Some(3)), (c(2), None)]));
        assert_eq!(t.owner_of(3), Some(c(1)));
        assert!(t.contains_key(&c(2)));
        assert_eq!(t.keys().count(), 2);
    }
}
