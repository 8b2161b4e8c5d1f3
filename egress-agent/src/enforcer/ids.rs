//! Which policy ids are in use, which one a new owner gets, and which ones must never be
//! handed out again because something of theirs may still be in the maps.
//!
//! Rules are keyed by policy id, so a rule of a removed policy that is still in a map would
//! allow its destination to whoever gets that id next. Two things keep that from happening:
//!
//! - ids are handed out in increasing order, wrapping at `u32::MAX`, never the lowest free one:
//!   an id that was just freed is the last one to come back (after four billion others), and
//!   after a restart the count goes on above every id found in the maps;
//! - an id whose removal left something behind (a rule, a cgroup entry or a container entry
//!   whose delete failed) is quarantined with what is left: it is not handed out again, even
//!   after the wrap, until every leftover is gone. The enforcer retries the deletes.

use std::collections::{BTreeMap, BTreeSet};

use egress_common::policy::NO_RULES_POLICY_ID;

use crate::sys::cgroup::CgroupId;
use egress_common::container::ContainerId;
use egress_policy::policy::Rule;

/// Something of a removed policy that a failed delete left in the maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leftover {
    /// A rule under the policy's id.
    Rule(Rule),
    /// A cgroup entry pointing at the policy's id.
    Cgroup(CgroupId),
    /// The entry of the container that owned the policy.
    Container(ContainerId),
}

/// Every id is in use: the agent holds as many policies as the maps can hold owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no free policy id: {live} policies are in use (the limit is {limit})")]
pub struct NoFreeId {
    pub live: usize,
    pub limit: usize,
}

/// Policy id bookkeeping (no map access: the enforcer does the deletes and reports back).
#[derive(Debug, Clone)]
pub struct PolicyIds {
    /// The next id to try.
    next: u32,
    live: BTreeSet<u32>,
    quarantine: BTreeMap<u32, BTreeSet<Leftover>>,
    limit: usize,
}

impl PolicyIds {
    /// At most `limit` ids in use at once.
    pub fn new(limit: usize) -> Self {
        Self {
            next: 1,
            live: BTreeSet::new(),
            quarantine: BTreeMap::new(),
            limit,
        }
    }

    /// After a restart: `live` are the ids owners hold, `highest` the highest id found anywhere
    /// in the maps (owned or not); counting goes on above it.
    pub fn recover(&mut self, live: impl IntoIterator<Item = u32>, highest: u32) {
        self.live = live
            .into_iter()
            .filter(|id| *id != NO_RULES_POLICY_ID)
            .collect();
        self.next = successor(highest.max(self.live.last().copied().unwrap_or(0)));
    }

    /// A fresh id for a new owner.
    pub fn alloc(&mut self) -> Result<u32, NoFreeId> {
        if self.live.len() >= self.limit {
            return Err(NoFreeId {
                live: self.live.len(),
                limit: self.limit,
            });
        }
        // Bounded: at most live + quarantined ids are skipped, and there are fewer of those
        // than ids.
        loop {
            let id = self.next;
            self.next = successor(id);
            if !self.live.contains(&id) && !self.quarantine.contains_key(&id) {
                self.live.insert(id);
                return Ok(id);
            }
        }
    }

    /// The owner of `id` is gone. `leftovers` are what its removal could not delete; the id is
    /// quarantined until they are gone too (see [`PolicyIds::cleared`]).
    pub fn release(&mut self, id: u32, leftovers: BTreeSet<Leftover>) {
        self.live.remove(&id);
        if !leftovers.is_empty() {
            self.quarantine.entry(id).or_default().extend(leftovers);
        }
    }

    /// A leftover of quarantined `id` is gone; the id leaves quarantine with its last one.
    pub fn cleared(&mut self, id: u32, leftover: &Leftover) {
        if let Some(left) = self.quarantine.get_mut(&id) {
            left.remove(leftover);
            if left.is_empty() {
                self.quarantine.remove(&id);
            }
        }
    }

    pub fn is_live(&self, id: u32) -> bool {
        self.live.contains(&id)
    }

    /// Quarantined ids and what is left of each.
    pub fn quarantined(&self) -> &BTreeMap<u32, BTreeSet<Leftover>> {
        &self.quarantine
    }

    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// The id after `id`, skipping [`NO_RULES_POLICY_ID`] on the wrap.
fn successor(id: u32) -> u32 {
    match id.wrapping_add(1) {
        NO_RULES_POLICY_ID => 1,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_policy::policy::parse_ip_entry;

    fn rule(s: &str) -> Leftover {
        Leftover::Rule(parse_ip_entry(s).unwrap().unwrap())
    }

    #[test]
    fn a_freed_id_is_not_handed_out_again_next() {
        let mut ids = PolicyIds::new(100);
        let a = ids.alloc().unwrap();
        ids.release(a, BTreeSet::new());
        let b = ids.alloc().unwrap();
        assert_ne!(a, b, "the freed id came straight back");
        assert!(b > a);
    }

    #[test]
    fn an_id_with_leftovers_stays_out_of_use_until_they_are_gone() {
        let mut ids = PolicyIds::new(100);
        let a = ids.alloc().unwrap();
        let left = rule("10.0.0.1");
        ids.release(a, [left].into());
        assert!(ids.quarantined().contains_key(&a));
        // Even across the wrap it is skipped.
        ids.next = a;
        let b = ids.alloc().unwrap();
        assert_ne!(b, a);
        ids.cleared(a, &left);
        assert!(ids.quarantined().is_empty());
        ids.next = a;
        assert_eq!(ids.alloc().unwrap(), a, "clean again, the id may come back");
    }

    #[test]
    fn quarantine_keeps_an_id_until_its_last_leftover_is_gone() {
        let mut ids = PolicyIds::new(100);
        let a = ids.alloc().unwrap();
        let (r, cg) = (rule("10.0.0.0/8:53"), Leftover::Cgroup(77));
        ids.release(a, [r, cg].into());
        ids.cleared(a, &r);
        assert_eq!(ids.quarantined()[&a], [cg].into());
        ids.cleared(a, &Leftover::Cgroup(78));
        assert!(
            ids.quarantined().contains_key(&a),
            "a leftover it never had"
        );
        ids.cleared(a, &cg);
        assert!(!ids.quarantined().contains_key(&a));
    }

    #[test]
    fn counting_wraps_past_zero_and_skips_ids_in_use() {
        let mut ids = PolicyIds::new(100);
        ids.recover([1, 2], u32::MAX - 1);
        assert_eq!(ids.alloc().unwrap(), u32::MAX);
        assert_eq!(
            ids.alloc().unwrap(),
            3,
            "0 is the no-rules id, 1 and 2 are in use"
        );
        assert!(ids.is_live(3));
    }

    #[test]
    fn after_a_restart_counting_goes_on_above_every_id_in_the_maps() {
        let mut ids = PolicyIds::new(100);
        // 9 is only in the maps as an orphan rule's id: never reuse it either.
        ids.recover([3, 5], 9);
        assert_eq!(ids.alloc().unwrap(), 10);
        ids.recover([0, 12], 4);
        assert_eq!(ids.live_count(), 1, "the no-rules id is nobody's");
        assert_eq!(ids.alloc().unwrap(), 13);
    }

    #[test]
    fn the_limit_counts_live_ids_only() {
        let mut ids = PolicyIds::new(2);
        let a = ids.alloc().unwrap();
        ids.alloc().unwrap();
        assert_eq!(ids.alloc(), Err(NoFreeId { live: 2, limit: 2 }));
        ids.release(a, [Leftover::Cgroup(1)].into());
        assert!(
            ids.alloc().is_ok(),
            "a quarantined id does not count as live"
        );
    }
}
