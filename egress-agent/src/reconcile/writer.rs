//! The kernel side as the reconciler sees it: exactly the map writes it makes, behind a trait,
//! so that its rules run on the real owner ([`EnforcerHandle`]) and are tested on an in-memory
//! fake (`reconcile::fake`, in unit tests).

use std::future::Future;

use crate::{
    owner::{CommandError, EnforcerHandle},
    sys::{cgroup::CgroupId, kernel_path::KernelPath},
};
use egress_common::container::ContainerId;
use egress_policy::policy::{Policy, Rule};

/// The map writes of the reconciler. Each call returns once the write is in the maps (or has
/// failed: a policy that does not fit fails closed in the kernel and comes back as
/// [`CommandError::Enforcer`], see [`crate::enforcer::EnforcerError::is_repeated`]).
pub trait MapWriter: Send + Sync + 'static {
    /// Registers a container: `Some(policy)` polices it, `None` marks it known and unpoliced.
    /// `cgroups` are its cgroups that exist already; they get its entry too (see
    /// [`crate::enforcer::Enforcer::set_container`]).
    fn set_container(
        &self,
        container: ContainerId,
        policy: Option<Policy>,
        cgroups: Vec<CgroupId>,
    ) -> impl Future<Output = Result<(), CommandError>> + Send;

    /// Forgets a container, its entry and its cgroups' entries; false if it was not known.
    fn remove_container(
        &self,
        container: ContainerId,
        cgroups: Vec<CgroupId>,
    ) -> impl Future<Output = Result<bool, CommandError>> + Send;

    /// The containers the maps hold, also those an earlier run left pinned.
    fn containers(&self) -> impl Future<Output = Result<Vec<ContainerId>, CommandError>> + Send;

    /// Adds `bits` (`egress_common::cgroup_path::PARENT_*`) to a cgroup parent of this dockerd
    /// (`add`) or takes them off; true if anything changed.
    fn change_container_parent(
        &self,
        path: KernelPath,
        bits: u32,
        add: bool,
    ) -> impl Future<Output = Result<bool, CommandError>> + Send;

    /// Adds `rules` to the policy of a policed container now, ahead of bulk writes queued
    /// before it (the answers a DNS proxy lets through); the rest of the policy stays. False if
    /// the container is not policed, or is failed closed (its full policy did not fit). The
    /// next [`MapWriter::set_container`] of the container replaces its policy as a whole.
    fn add_container_rules(
        &self,
        container: ContainerId,
        rules: Vec<Rule>,
    ) -> impl Future<Output = Result<bool, CommandError>> + Send;
}

impl MapWriter for EnforcerHandle {
    async fn set_container(
        &self,
        container: ContainerId,
        policy: Option<Policy>,
        cgroups: Vec<CgroupId>,
    ) -> Result<(), CommandError> {
        EnforcerHandle::set_container(self, container, policy, cgroups).await
    }

    async fn remove_container(
        &self,
        container: ContainerId,
        cgroups: Vec<CgroupId>,
    ) -> Result<bool, CommandError> {
        EnforcerHandle::remove_container(self, container, cgroups).await
    }

    async fn containers(&self) -> Result<Vec<ContainerId>, CommandError> {
        let known = EnforcerHandle::containers(self).await?;
        Ok(known.into_iter().map(|(id, _)| id).collect())
    }

    async fn change_container_parent(
        &self,
        path: KernelPath,
        bits: u32,
        add: bool,
    ) -> Result<bool, CommandError> {
        EnforcerHandle::change_container_parent(self, path, bits, add).await
    }

    async fn add_container_rules(
        &self,
        container: ContainerId,
        rules: Vec<Rule>,
    ) -> Result<bool, CommandError> {
        EnforcerHandle::add_container_rules(self, container, rules).await
    }
}
