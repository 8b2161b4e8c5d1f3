//! What the enforcer does with the `cgroup_mkdir` tracepoint's notices.
//!
//! - `Classified`: the tracepoint gave a new container cgroup its container's policy. The cgroup
//!   joins the index of that policy, so later changes of the policy's flags or mode reach it;
//!   if the policy changed while the notice was on its way, the entry is brought up to date
//!   now; if the container is gone meanwhile, the entry goes.
//! - `CgroupMapFull`: the cgroup's entry found no room, so no program judges it. The enforcer
//!   tries the insert once more (a cgroup may have gone since), and if it fails again it freezes
//!   the cgroup and kills its processes (see `crate::sys::cgroup_kill`); one error line names
//!   the container, the cgroup, the map and its capacity. The tracepoint has counted the failure.

use egress_common::{
    event::Notice,
    maps,
    policy::{CgroupPolicy, NO_RULES_POLICY_ID, NOTE_KILLED},
};
use tracing::{debug, error, warn};

use super::{BPF_EXIST, Enforcer, Owner, remove_cgroup_entry};
use crate::{observe::events::CgroupNotice, sys::cgroup};
use egress_common::container::ContainerId;

impl Enforcer {
    /// Acts on one notice of the tracepoint.
    pub fn on_notice(&mut self, n: &CgroupNotice) {
        match n.notice {
            Notice::Classified => self.on_classified(n),
            Notice::CgroupMapFull => self.on_cgroup_map_full(n),
        }
    }

    fn on_classified(&mut self, n: &CgroupNotice) {
        let cg = n.cgroup_id;
        let Some(want) = self.values.get(&n.policy_id).copied() else {
            // Its container was removed while the notice was on its way.
            if self
                .maps
                .cgroups
                .get(&cg, 0)
                .is_ok_and(|v| v.policy_id == n.policy_id)
                && let Err(e) = remove_cgroup_entry(&mut self.maps, cg)
            {
                warn!("{e}");
            }
            return;
        };
        self.index.set(cg, n.policy_id);
        match self.maps.cgroups.get(&cg, 0) {
            Ok(v) if v.policy_id == n.policy_id && v != want => {
                if let Err(e) = self.maps.cgroups.insert(cg, want, BPF_EXIST) {
                    warn!(
                        cgroup = cg,
                        policy_id = n.policy_id,
                        "bringing a new container cgroup's entry up to date: {e}"
                    );
                }
            }
            Ok(_) => {}
            // Removed again already (cgroup_rmdir).
            Err(_) => self.index.remove_cgroup(cg),
        }
        if want.notes & NOTE_KILLED != 0 {
            // A cgroup of it is policed again: the note has served.
            let value = CgroupPolicy {
                notes: want.notes & !NOTE_KILLED,
                ..want
            };
            self.values.insert(n.policy_id, value);
            if let Some(c) = self.container_of(n.policy_id) {
                let _ = self.maps.containers.insert(c.key(), value, BPF_EXIST);
            }
        }
    }

    fn on_cgroup_map_full(&mut self, n: &CgroupNotice) {
        let cg = n.cgroup_id;
        let capacity = maps::CGROUP_POLICY_ENTRIES;
        let (value, container) = if n.policy_id == NO_RULES_POLICY_ID {
            (CgroupPolicy::unclassified(), None)
        } else {
            match self.values.get(&n.policy_id) {
                Some(v) => (*v, self.container_of(n.policy_id)),
                None => {
                    debug!(
                        cgroup = cg,
                        "no room for the entry of a container that is gone"
                    );
                    return;
                }
            }
        };
        if self.maps.cgroups.insert(cg, value, 0).is_ok() {
            if n.policy_id != NO_RULES_POLICY_ID {
                self.index.set(cg, n.policy_id);
            }
            error!(
                container = container
                    .as_ref()
                    .map(|c| c.short())
                    .unwrap_or("unregistered"),
                cgroup_id = cg,
                map = maps::CGROUP_POLICY,
                capacity,
                "map {} ({capacity} entries) was full when runc made a container cgroup; the agent wrote its entry a moment later (it ran unpoliced until then)",
                maps::CGROUP_POLICY
            );
            return;
        }
        let owner_id = container.or_else(|| self.container_of_cgroup(cg));
        let owner = owner_id.map(Owner::Container).unwrap_or(Owner::Cgroup(cg));
        let outcome = match self.kill_cgroup(owner, cg) {
            Ok(done) => {
                if let Some(c) = container {
                    let value = CgroupPolicy {
                        notes: value.notes | NOTE_KILLED,
                        ..value
                    };
                    self.values.insert(n.policy_id, value);
                    let _ = self.maps.containers.insert(c.key(), value, BPF_EXIST);
                }
                done
            }
            Err(why) => why,
        };
        error!(
            container = owner_id.as_ref().map(|c| c.short()).unwrap_or("unknown"),
            registered = container.is_some(),
            cgroup_id = cg,
            map = maps::CGROUP_POLICY,
            capacity,
            "no room in map {} ({capacity} entries) for the entry of a new container cgroup: {outcome}",
            maps::CGROUP_POLICY
        );
    }

    /// The container that owns `policy_id`.
    fn container_of(&self, policy_id: u32) -> Option<ContainerId> {
        self.containers.owner_of(policy_id)
    }

    /// The container a cgroup's path names (its last component), for an unregistered one.
    fn container_of_cgroup(&self, cg: u64) -> Option<ContainerId> {
        let path = cgroup::find_by_id(self.cgroup_mount.as_deref()?, cg)?;
        ContainerId::of_cgroup_path(path.to_str()?)
    }
}
