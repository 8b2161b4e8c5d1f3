//! Which container an event belongs to, through indexes, never a scan:
//!
//! 1. the cgroup → container index the reconciler keeps ([`SharedIndex::container_of`]);
//! 2. for a cgroup it has not seen yet (the process may be gone already): the owner of the
//!    event's policy id, from the enforcer's policy id → container index
//!    ([`PolicyOwners::container_of_policy`]);
//! 3. else the container the process's cgroup path names (the host's `/proc/<pid>/cgroup`).
//!
//! What 2 or 3 found is remembered for the cgroup, so the next event of that cgroup takes 1.

use std::future::Future;

use egress_common::policy::NO_RULES_POLICY_ID;

use super::events::EgressEvent;
use crate::{
    docker::cgroup_path, host::Host, owner::WeakEnforcerHandle, reconcile::index::SharedIndex,
};
use egress_common::container::ContainerId;

/// Who owns a policy id (the enforcer knows; a test can tell it too).
pub trait PolicyOwners {
    /// The container whose policy has id `policy_id`, if a container's has.
    fn container_of_policy(
        &self,
        policy_id: u32,
    ) -> impl Future<Output = Option<ContainerId>> + Send;
}

impl PolicyOwners for WeakEnforcerHandle {
    async fn container_of_policy(&self, policy_id: u32) -> Option<ContainerId> {
        WeakEnforcerHandle::container_of_policy(self, policy_id)
            .await
            .ok()
            .flatten()
    }
}

/// Attributes events to containers (see the module doc).
pub struct Attribution<O> {
    index: SharedIndex,
    owners: O,
    host: Host,
}

impl<O: PolicyOwners> Attribution<O> {
    pub fn new(index: SharedIndex, owners: O, host: Host) -> Self {
        Self {
            index,
            owners,
            host,
        }
    }

    /// The container of the event's cgroup, if any.
    pub async fn container_of(&self, ev: &EgressEvent) -> Option<ContainerId> {
        if let Some(id) = self.index.container_of(ev.cgroup_id) {
            return Some(id);
        }
        let owner = if ev.policy_id == NO_RULES_POLICY_ID {
            None
        } else {
            self.owners.container_of_policy(ev.policy_id).await
        };
        let found = owner.or_else(|| container_of_pid(&self.host, ev.pid));
        if let Some(id) = found {
            self.index.remember_cgroup(ev.cgroup_id, id);
        }
        found
    }
}

/// The container a process belongs to, from its cgroup v2 path.
fn container_of_pid(host: &Host, pid: u32) -> Option<ContainerId> {
    let text = std::fs::read_to_string(host.proc_cgroup(pid)).ok()?;
    ContainerId::of_cgroup_path(&cgroup_path::parse_proc_cgroup(&text)?)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::Ipv4Addr,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use egress_common::event::{Hook, Reason, Verdict};

    use super::*;

    fn c(n: u8) -> ContainerId {
        format!("{n:064x}").parse().unwrap()
    }

    /// Answers from a table and counts the questions.
    #[derive(Default)]
    struct Owners {
        by_policy: HashMap<u32, ContainerId>,
        asked: AtomicUsize,
    }

    impl PolicyOwners for &Owners {
        async fn container_of_policy(&self, policy_id: u32) -> Option<ContainerId> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            self.by_policy.get(&policy_id).copied()
        }
    }

    fn event(cgroup_id: u64, policy_id: u32, pid: u32) -> EgressEvent {
        EgressEvent {
            cgroup_id,
            pid,
            tid: pid,
            comm: "probe".into(),
            policy_id,
            addr: Ipv4Addr::new(10, 0, 0, 1).into(),
            port: 443,
            protocol: 6,
            family: egress_common::AF_INET,
            sock_type: 0,
            verdict: Verdict::Denied,
            reason: Reason::NoMatchingRule,
            hook: Hook::Connect4,
        }
    }

    /// A host root with no /proc: the pid fallback finds nothing.
    fn empty_host() -> Host {
        Host::new(std::env::temp_dir().join("egress-no-such-host-root")).unwrap()
    }

    #[tokio::test]
    async fn a_known_cgroup_is_answered_by_the_index_alone() {
        let index = SharedIndex::default();
        index.set_cgroups(c(1), &[100]);
        let owners = Owners::default();
        let a = Attribution::new(index, &owners, empty_host());
        assert_eq!(a.container_of(&event(100, 5, 1)).await, Some(c(1)));
        assert_eq!(owners.asked.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_unknown_cgroup_is_attributed_by_its_policy_id_once() {
        let index = SharedIndex::default();
        let owners = Owners {
            by_policy: HashMap::from([(7, c(2))]),
            ..Owners::default()
        };
        let a = Attribution::new(index.clone(), &owners, empty_host());
        assert_eq!(a.container_of(&event(200, 7, 1)).await, Some(c(2)));
        assert_eq!(a.container_of(&event(200, 7, 1)).await, Some(c(2)));
        assert_eq!(
            owners.asked.load(Ordering::Relaxed),
            1,
            "the second event of the cgroup is answered by the index"
        );
        assert_eq!(index.container_of(200), Some(c(2)));
        // Forgotten with its container.
        index.remove_container(&c(2));
        assert_eq!(index.container_of(200), None);
    }

    #[tokio::test]
    async fn the_no_rules_policy_has_no_owner_to_ask() {
        let owners = Owners::default();
        let a = Attribution::new(SharedIndex::default(), &owners, empty_host());
        assert_eq!(
            a.container_of(&event(300, NO_RULES_POLICY_ID, 1)).await,
            None
        );
        assert_eq!(owners.asked.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn the_pid_names_the_container_below_the_host_root() {
        let root = std::env::temp_dir().join(format!("egress-attr-root-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/42")).unwrap();
        std::fs::write(
            root.join("proc/42/cgroup"),
            format!("0::/system.slice/docker-{}.scope\n", c(3)),
        )
        .unwrap();
        let owners = Owners::default();
        let a = Attribution::new(SharedIndex::default(), &owners, Host::new(&root).unwrap());
        assert_eq!(a.container_of(&event(400, 9, 42)).await, Some(c(3)));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
