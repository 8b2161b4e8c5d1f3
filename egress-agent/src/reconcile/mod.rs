//! The controller: turns what Docker says about containers, what their labels (and the policy
//! file) ask for, and what DNS says about the allowed names into kernel policies, through a
//! [`MapWriter`] (the enforcer's owner task).
//!
//! - At `create` a container's policy is registered at once, from its labels and the IPs
//!   already known, so the `cgroup_mkdir` tracepoint polices the container's cgroup the moment
//!   runc makes it; names not resolved yet are resolved right after and added.
//! - At `start` (and at every sync) its existing cgroups get the policy too — for containers
//!   that started before the agent knew them.
//! - A full sync (first start, and after every Docker reconnect) reconciles to exactly the
//!   containers that exist: the kernel forgets the others.
//! - Every DNS change of an allowed name is written into every container using it.
//! - This dockerd's cgroup parents are registered (`EG_CT_PARENTS`): both drivers' defaults
//!   until the daemon's driver is known, then its driver's default, every `--cgroup-parent`
//!   and the parent of every container cgroup found. Only below them does a cgroup that looks
//!   like an unknown container get the unclassified default.
//!
//! The [`Reconciler`] holds the rules; [`task::spawn`] runs it as a task fed with Docker events,
//! domain updates and policy-file replacements. It writes through a [`MapWriter`] (the owner's
//! [`crate::owner::EnforcerHandle`]) and resolves through a [`NameResolver`] (the resolver's
//! [`ResolverHandle`]), so its rules are unit tested on fakes (`fake`, `tests`). What a
//! classification asks of the kernel is computed by the pure functions of
//! [`egress_policy::desired`].

#[cfg(test)]
mod fake;
pub mod index;
pub mod names;
pub mod resolvers;
pub mod task;
#[cfg(test)]
mod tests;
pub mod writer;

pub use self::{
    names::NameResolver,
    task::{ReconcilerGone, ReconcilerHandle, spawn},
    writer::MapWriter,
};

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use egress_common::{
    cgroup_path::{PARENT_CONFIGURED, PARENT_DEFAULT, PARENT_DRIVER, PARENT_SEEN},
    maps::CONTAINER_PARENTS,
    policy::{NOTE_ESCAPABLE, NOTE_OUTSIDE_ATTACH},
};

use tracing::{debug, error, info, warn};

use self::index::{ContainerMeta, SharedIndex};
use crate::{
    dns::{DnsService, DnsTarget, discover::NetnsSource},
    docker::{
        cgroup_path::{self, CgroupDriver},
        privileges,
        watch::{ContainerInfo, DockerEvent},
    },
    resolver::{DomainUpdate, FirstAnswer, ResolverHandle},
    sys::{cgroup::CgroupId, kernel_path::KernelPath},
};
use egress_common::container::ContainerId;
use egress_policy::{
    dns::{DnsMode, DnsPolicy},
    labels::{Capabilities, Classification},
    policy::{Policy, Rule, mode_name},
    policy_file::PolicyFile,
};

/// Fixed inputs of the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    pub caps: Capabilities,
    /// The cgroup v2 mount, to find containers' cgroups.
    pub cgroup_mount: PathBuf,
    /// Nameservers of the host's resolv.conf (see [`resolvers`]).
    pub host_resolvers: Vec<IpAddr>,
    /// The cgroup the programs are attached to: a container whose cgroup is outside it is not
    /// judged by them (reported as not enforceable).
    pub attach_cgroup: PathBuf,
    /// What `egress.dns` is for a container without the label (`--dns-mode`).
    pub dns_default: DnsMode,
}

struct Tracked {
    info: ContainerInfo,
    class: Classification,
    /// Normalized domains this container holds a resolver reference on.
    domains: BTreeSet<String>,
    /// The policy last written (None: unpoliced).
    written: Option<Option<Policy>>,
    /// Why no cgroup policy can hold it (`NOTE_*` bits), as last logged.
    notes: u8,
}

/// Follows containers and keeps the kernel's policies in line with them: writes through `W`
/// ([`crate::owner::EnforcerHandle`] in the agent), resolves through `N` ([`ResolverHandle`]).
pub struct Reconciler<W = crate::owner::EnforcerHandle, N = ResolverHandle> {
    cfg: ReconcileConfig,
    writer: W,
    resolver: N,
    policy_file: Option<PolicyFile>,
    driver: CgroupDriver,
    containers: BTreeMap<ContainerId, Tracked>,
    /// Effective IPs of every domain in use, from the resolver.
    domain_ips: HashMap<String, BTreeSet<IpAddr>>,
    index: SharedIndex,
    /// Cgroup parents registered by this run, with their `PARENT_*` bits.
    parents: HashMap<KernelPath, u32>,
    /// The DNS proxy, told about every policed container (None in the unit tests).
    dns: Option<DnsService>,
}

/// Why a container could not be brought in line (logged; the caller goes on).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("container {name} ({id}): {source}")]
    Enforcer {
        name: String,
        id: String,
        source: crate::owner::CommandError,
    },
}

impl<W: MapWriter, N: NameResolver> Reconciler<W, N> {
    pub fn new(
        cfg: ReconcileConfig,
        writer: W,
        resolver: N,
        policy_file: Option<PolicyFile>,
        index: SharedIndex,
    ) -> Self {
        Self {
            cfg,
            writer,
            resolver,
            policy_file,
            driver: CgroupDriver::Cgroupfs,
            containers: BTreeMap::new(),
            domain_ips: HashMap::new(),
            index,
            parents: HashMap::new(),
            dns: None,
        }
    }

    /// Tells `dns` about every policed container from now on.
    pub fn with_dns(mut self, dns: DnsService) -> Self {
        self.dns = Some(dns);
        self
    }

    /// Registers both drivers' default cgroup parents (`/docker`, `/system.slice`) until the
    /// first sync tells the daemon's driver: a container created before that without the
    /// agent's knowledge is unclassified there.
    pub async fn register_default_parents(&mut self) {
        for driver in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
            let parent = cgroup_path::default_parent(driver);
            self.add_parent(parent, PARENT_DEFAULT, "default of a cgroup driver")
                .await;
        }
    }

    /// Adds `bits` to a cgroup parent (once per run).
    async fn add_parent(&mut self, path: KernelPath, bits: u32, source: &str) {
        if self.parents.get(&path).is_some_and(|b| b & bits == bits) {
            return;
        }
        match self
            .writer
            .change_container_parent(path.clone(), bits, true)
            .await
        {
            Ok(changed) => {
                if changed {
                    info!(parent = %path, source,
                        "Docker cgroup parent registered: a cgroup below it that looks like a container the agent does not know is unclassified");
                }
                *self.parents.entry(path).or_default() |= bits;
            }
            Err(e) => error!(parent = %path, source, map = CONTAINER_PARENTS,
                "registering a Docker cgroup parent failed; an unknown container's cgroup below it is not denied as unclassified: {e}"),
        }
    }

    /// Takes `bits` off a cgroup parent (whatever run registered them).
    async fn remove_parent(&mut self, path: KernelPath, bits: u32) {
        match self
            .writer
            .change_container_parent(path.clone(), bits, false)
            .await
        {
            Ok(changed) => {
                if let Some(b) = self.parents.get_mut(&path) {
                    *b &= !bits;
                }
                if changed {
                    debug!(parent = %path, bits, "Docker cgroup parent bits removed");
                }
            }
            Err(e) => error!(parent = %path, map = CONTAINER_PARENTS,
                "removing a Docker cgroup parent failed (look-alike cgroups below it stay unclassified): {e}"),
        }
    }

    /// Applies one Docker event. Errors are logged, never fatal: the next event or sync
    /// retries.
    pub async fn on_docker(&mut self, ev: DockerEvent) {
        match ev {
            DockerEvent::Sync {
                containers,
                cgroup_driver,
            } => self.sync(containers, cgroup_driver).await,
            DockerEvent::Created(info) => self.upsert(info, false).await,
            DockerEvent::Started(info) | DockerEvent::Renamed(info) => {
                self.upsert(info, true).await
            }
            DockerEvent::Died(id) => {
                if let Some(t) = self.containers.get_mut(&id) {
                    t.info.running = false;
                    t.info.pid = None;
                }
                // Its namespace is gone: the proxy waits for the next one.
                self.tell_dns(&id);
            }
            DockerEvent::Destroyed(id) => self.forget(&id).await,
        }
    }

    /// Replaces the policy file (SIGHUP) and re-applies every container.
    pub async fn set_policy_file(&mut self, file: Option<PolicyFile>) {
        self.policy_file = file;
        let infos: Vec<ContainerInfo> = self.containers.values().map(|t| t.info.clone()).collect();
        for info in infos {
            let running = info.running;
            self.upsert(info, running).await;
        }
    }

    /// Domains' IPs changed: rewrite every container that uses one of them, once. A refresh
    /// of many domains arrives as a burst of updates; taking them together rewrites a
    /// container of many domains once per burst instead of once per domain.
    pub async fn on_domains(&mut self, updates: Vec<DomainUpdate>) {
        let mut changed = HashSet::new();
        for update in updates {
            debug!(domain = %update.domain, ips = ?update.ips, "domain update");
            changed.insert(update.domain.clone());
            self.domain_ips.insert(update.domain, update.ips);
        }
        if changed.is_empty() {
            return;
        }
        self.publish_domains();
        let users: Vec<ContainerId> = self
            .containers
            .iter()
            .filter(|(_, t)| t.domains.iter().any(|d| changed.contains(d)))
            .map(|(id, _)| *id)
            .collect();
        for id in users {
            if let Err(e) = self.write(&id, false).await {
                error!("{e}");
            }
        }
    }

    /// Number of containers followed.
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    async fn sync(&mut self, containers: Vec<ContainerInfo>, driver: CgroupDriver) {
        self.driver = driver;
        let own_default = cgroup_path::default_parent(driver);
        self.add_parent(own_default, PARENT_DRIVER, "the daemon's cgroup driver")
            .await;
        let present: HashSet<ContainerId> = containers.iter().map(|c| c.id).collect();
        for info in containers {
            let running = info.running;
            self.upsert(info, running).await;
        }
        // Containers gone while we were not looking: in our memory or only in the kernel's.
        let mut gone: BTreeSet<ContainerId> = self
            .containers
            .keys()
            .filter(|id| !present.contains(id))
            .copied()
            .collect();
        match self.writer.containers().await {
            Ok(known) => gone.extend(known.into_iter().filter(|id| !present.contains(id))),
            Err(e) => error!("listing the kernel's containers: {e}"),
        }
        for id in gone {
            self.forget(&id).await;
        }
        // The driver is known: the other driver's default is no parent of this daemon's
        // (unless a container was seen there or names it).
        for d in [CgroupDriver::Cgroupfs, CgroupDriver::Systemd] {
            let bits = if d == driver {
                PARENT_DEFAULT
            } else {
                PARENT_DEFAULT | PARENT_DRIVER
            };
            self.remove_parent(cgroup_path::default_parent(d), bits)
                .await;
        }
        info!(containers = self.containers.len(), "synced with Docker");
    }

    /// The classification of a container, labels (the image's may only make it stricter) and
    /// policy file combined; image labels set aside are logged when the classification changes.
    fn classify(&self, info: &ContainerInfo) -> Classification {
        let verdict = egress_policy::policy_file::judge(
            self.policy_file.as_ref(),
            &info.labelled(),
            self.cfg.caps,
        );
        if self
            .containers
            .get(&info.id)
            .is_none_or(|t| t.class != verdict.classification)
        {
            verdict.log_warnings(&info.name, info.id.short(), &info.image);
        }
        verdict.classification
    }

    async fn upsert(&mut self, info: ContainerInfo, with_cgroups: bool) {
        let id = info.id;
        let class = self.classify(&info);
        let changed_class = self.containers.get(&id).is_none_or(|t| t.class != class);
        if changed_class {
            log_classification(&info, &class);
        }
        let wanted = egress_policy::desired::domains(&class, self.cfg.dns_default);
        let held = self
            .containers
            .get(&id)
            .map(|t| t.domains.clone())
            .unwrap_or_default();
        self.index.set_container(
            id,
            ContainerMeta {
                name: info.name.clone(),
                image: info.image.clone(),
                mode: egress_policy::desired::mode_label(&class).to_owned(),
            },
        );
        if let Some(parent) = info
            .cgroup_parent
            .as_deref()
            .and_then(|p| cgroup_path::parent_path(Some(p), self.driver))
        {
            self.add_parent(parent, PARENT_CONFIGURED, "a container's --cgroup-parent")
                .await;
        }
        let tracked = self.containers.entry(id).or_insert_with(|| Tracked {
            info: info.clone(),
            class: class.clone(),
            domains: BTreeSet::new(),
            written: None,
            notes: 0,
        });
        tracked.info = info;
        tracked.class = class;
        self.note_enforceability(&id);
        // Fail closed and fast: register what is known now (before runc makes the cgroup),
        // then resolve new names and write again.
        if let Err(e) = self.write(&id, with_cgroups).await {
            error!("{e}");
        }
        self.tell_dns(&id);
        // Containers sharing its network namespace may gain or lose their loopback.
        self.rewrite_netns_peers(&id).await;
        let new: Vec<String> = wanted.difference(&held).cloned().collect();
        for d in held.difference(&wanted) {
            self.resolver.remove(d);
        }
        if let Some(t) = self.containers.get_mut(&id) {
            t.domains = wanted;
        }
        if new.is_empty() {
            return;
        }
        // Never wait for DNS here: other containers' events (an unlabelled container must be
        // registered before its cgroup appears) would wait behind a slow resolver. The
        // reference is taken now; the IPs arrive as a DomainUpdate (`on_domain`), and a name
        // that another container already uses has its IPs at once.
        let mut known = false;
        for d in &new {
            let outcome = self.resolver.add(d);
            let domain = d.clone();
            tokio::spawn(async move {
                match outcome.await {
                    Ok(out) => match out.status {
                        FirstAnswer::Resolved => {}
                        FirstAnswer::Failed(why) => warn!(%domain, error = %why,
                            "allowed domain did not resolve; its IPs are added when it does"),
                        FirstAnswer::Pending => warn!(%domain,
                            "allowed domain not answered yet; its IPs are added when it is"),
                    },
                    Err(e) => error!(%domain, "resolver: {e}"),
                }
            });
            if let Some(ips) = self.resolver.snapshot(d) {
                self.domain_ips.insert(d.clone(), ips);
                known = true;
            }
        }
        if known {
            self.publish_domains();
            if let Err(e) = self.write(&id, false).await {
                error!("{e}");
            }
        }
    }

    /// Computes and writes the policy of `id`; with `with_cgroups`, also onto its existing
    /// cgroups.
    async fn write(&mut self, id: &ContainerId, with_cgroups: bool) -> Result<(), ReconcileError> {
        let Some(t) = self.containers.get(id) else {
            return Ok(());
        };
        let policy = self.policy_of(id, t);
        let (cgroups, dir) = if with_cgroups && t.info.running {
            self.cgroups_of(&t.info)
        } else {
            (Vec::new(), None)
        };
        if !with_cgroups && t.written.as_ref() == Some(&policy) {
            return Ok(());
        }
        let name = t.info.name.clone();
        match self
            .writer
            .set_container(*id, policy.clone(), cgroups.clone())
            .await
        {
            Ok(()) => {}
            // Logged when it first failed; `written` stays unset, so the next write retries.
            Err(crate::owner::CommandError::Enforcer(e)) if e.is_repeated() => {
                debug!(container = %name, "still failed closed: {e}");
                return Ok(());
            }
            Err(source) => {
                return Err(ReconcileError::Enforcer {
                    name,
                    id: id.short().to_owned(),
                    source,
                });
            }
        }
        if with_cgroups {
            self.index.set_cgroups(*id, &cgroups);
        }
        if let Some(t) = self.containers.get_mut(id) {
            t.written = Some(policy);
        }
        if let Some(parent) =
            dir.and_then(|d| cgroup_path::parent_of_dir(&self.cfg.cgroup_mount, &d))
        {
            self.add_parent(parent, PARENT_SEEN, "the parent of a container's cgroup")
                .await;
        }
        Ok(())
    }

    /// The kernel policy of a tracked container: its rules, its own loopback if nothing
    /// wider shares its network namespace, and what keeps it from being enforceable.
    fn policy_of(&self, id: &ContainerId, t: &Tracked) -> Option<Policy> {
        let (mode, rules) = self.rules_of(t)?;
        let loopback =
            mode == egress_policy::policy::Mode::Enforce && self.own_loopback(id, t, &rules);
        Some(
            Policy::new(mode, rules)
                .with_loopback(loopback)
                .with_notes(t.notes),
        )
    }

    /// Mode and rules of a tracked container; None if it is not policed.
    fn rules_of(&self, t: &Tracked) -> Option<(egress_policy::policy::Mode, BTreeSet<Rule>)> {
        // Learned addresses are the enforcer's layer of the policy (the DNS proxy writes them).
        egress_policy::desired::rules(
            &t.class,
            &self.domain_ips,
            &BTreeSet::new(),
            self.cfg.dns_default,
        )
    }

    /// True if `id` may reach its own loopback: its network namespace is its own (not the
    /// host's, and known: not before Docker let the agent inspect it), and every other container
    /// in it is policed in enforce mode with rules that `rules` include (a container with a
    /// wider policy there could forward for it).
    fn own_loopback(&self, id: &ContainerId, t: &Tracked, rules: &BTreeSet<Rule>) -> bool {
        let mode = t.info.network_mode.as_str();
        if mode.is_empty() || mode == "host" {
            return false;
        }
        let Some(ns) = self.netns_owner(id, &t.info) else {
            return false;
        };
        self.containers
            .iter()
            .filter(|(other, o)| *other != id && self.netns_owner(other, &o.info) == Some(ns))
            .all(|(_, o)| match self.rules_of(o) {
                Some((egress_policy::policy::Mode::Enforce, theirs)) => theirs.is_subset(rules),
                _ => false,
            })
    }

    /// The container whose network namespace `info`'s container uses: itself, or the target
    /// of `--network container:<name or id>` (None if that is not known).
    fn netns_owner(&self, id: &ContainerId, info: &ContainerInfo) -> Option<ContainerId> {
        let Some(target) = info.network_mode.strip_prefix("container:") else {
            return Some(*id);
        };
        self.containers
            .iter()
            .find(|(cid, c)| {
                c.info.name == target || (target.len() >= 12 && cid.as_str().starts_with(target))
            })
            .map(|(cid, _)| *cid)
    }

    /// Rewrites the containers that share `id`'s network namespace (their loopback depends on
    /// who else is in it).
    async fn rewrite_netns_peers(&mut self, id: &ContainerId) {
        let Some(t) = self.containers.get(id) else {
            return;
        };
        let Some(ns) = self.netns_owner(id, &t.info) else {
            return;
        };
        let peers: Vec<ContainerId> = self
            .containers
            .iter()
            .filter(|(other, o)| *other != id && self.netns_owner(other, &o.info) == Some(ns))
            .map(|(other, _)| *other)
            .collect();
        for peer in peers {
            if let Err(e) = self.write(&peer, true).await {
                error!("{e}");
            }
        }
    }

    /// Works out whether a policed container can escape any cgroup policy, or sits outside the
    /// attach cgroup; warns once per change, naming the container and the reasons.
    fn note_enforceability(&mut self, id: &ContainerId) {
        let Some(t) = self.containers.get(id) else {
            return;
        };
        if matches!(t.class, Classification::Unpoliced) {
            return;
        }
        let escapes = privileges::escape_reasons(&t.info.privileges);
        let outside = self.outside_attach(&t.info);
        let mut notes = 0;
        if !escapes.is_empty() {
            notes |= NOTE_ESCAPABLE;
        }
        if let Some(dir) = &outside {
            notes |= NOTE_OUTSIDE_ATTACH;
            if t.notes & NOTE_OUTSIDE_ATTACH == 0 {
                error!(
                    container = %t.info.name,
                    id = id.short(),
                    cgroup = %dir.display(),
                    attach_cgroup = %self.cfg.attach_cgroup.display(),
                    "container not enforceable: its cgroup is outside the cgroup the programs are attached to, so nothing judges its egress"
                );
            }
        }
        if !escapes.is_empty() && t.notes & NOTE_ESCAPABLE == 0 {
            warn!(
                container = %t.info.name,
                id = id.short(),
                image = %t.info.image,
                reasons = %escapes.join("; "),
                "policed, not enforceable: the container can switch off or escape any cgroup policy"
            );
        }
        if let Some(t) = self.containers.get_mut(id) {
            t.notes = notes;
        }
    }

    /// The container's cgroup (found, or where it will be) if it is not below the attach
    /// cgroup.
    fn outside_attach(&self, info: &ContainerInfo) -> Option<PathBuf> {
        let dir = if info.running {
            cgroup_path::find(
                &self.cfg.cgroup_mount,
                &info.id,
                info.pid,
                info.cgroup_parent.as_deref(),
                self.driver,
            )
        } else {
            None
        };
        let dir = dir.or_else(|| {
            cgroup_path::candidates(
                &self.cfg.cgroup_mount,
                &info.id,
                info.cgroup_parent.as_deref(),
                self.driver,
            )
            .into_iter()
            .next()
        })?;
        (!dir.starts_with(&self.cfg.attach_cgroup)).then_some(dir)
    }

    /// The container's cgroups (its own first), and its own cgroup's directory.
    fn cgroups_of(&self, info: &ContainerInfo) -> (Vec<CgroupId>, Option<PathBuf>) {
        match cgroup_path::find(
            &self.cfg.cgroup_mount,
            &info.id,
            info.pid,
            info.cgroup_parent.as_deref(),
            self.driver,
        ) {
            Some(dir) => (cgroup_path::subtree_ids(&dir), Some(dir)),
            None => {
                debug!(container = %info.name, "no cgroup found (not running yet?)");
                (Vec::new(), None)
            }
        }
    }

    async fn forget(&mut self, id: &ContainerId) {
        let ns = self
            .containers
            .get(id)
            .and_then(|t| self.netns_owner(id, &t.info));
        let name = match self.containers.remove(id) {
            Some(t) => {
                for d in &t.domains {
                    self.resolver.remove(d);
                }
                t.info.name
            }
            None => id.short().to_owned(),
        };
        self.index.remove_container(id);
        if let Some(dns) = &self.dns {
            dns.forget(id);
        }
        match self.writer.remove_container(*id, Vec::new()).await {
            Ok(true) => {
                info!(container = %name, id = id.short(), "container gone; its policy is removed")
            }
            Ok(false) => {}
            Err(e) => error!(container = %name, id = id.short(), "removing policy: {e}"),
        }
        // Those left in its network namespace may have their loopback back.
        if let Some(ns) = ns {
            let peers: Vec<ContainerId> = self
                .containers
                .iter()
                .filter(|(other, o)| self.netns_owner(other, &o.info) == Some(ns))
                .map(|(other, _)| *other)
                .collect();
            for peer in peers {
                if let Err(e) = self.write(&peer, true).await {
                    error!("{e}");
                }
            }
        }
    }

    /// Tells the DNS proxy what it needs of `id`: its DNS policy, where its network namespace
    /// is and its resolvers; or that it is not policed.
    fn tell_dns(&self, id: &ContainerId) {
        let Some(dns) = &self.dns else { return };
        let Some(t) = self.containers.get(id) else {
            return;
        };
        let Some(policy) = DnsPolicy::of(&t.class, self.cfg.dns_default) else {
            dns.forget(id);
            return;
        };
        dns.upsert(DnsTarget {
            id: *id,
            name: t.info.name.clone(),
            policy: std::sync::Arc::new(policy),
            netns: self.netns_source(&t.info),
            servers: self.dns_servers(id, &t.info),
        });
    }

    /// Where the proxy finds the network namespace of `info`'s container.
    fn netns_source(&self, info: &ContainerInfo) -> NetnsSource {
        if info.network_mode == "host" {
            return NetnsSource::Own;
        }
        if info.running
            && let Some(pid) = info.pid
        {
            return NetnsSource::Pid(pid);
        }
        // Being made: its processes join its namespace (or the one it shares) first.
        NetnsSource::Cgroups(cgroup_path::candidates(
            &self.cfg.cgroup_mount,
            &info.id,
            info.cgroup_parent.as_deref(),
            self.driver,
        ))
    }

    /// The resolvers the container's questions go to, as Docker set them up (never what the
    /// container's own resolv.conf says now: it can write that file); None until Docker has
    /// let the agent inspect it.
    fn dns_servers(&self, id: &ContainerId, info: &ContainerInfo) -> Option<Vec<SocketAddr>> {
        // `--network container:X` uses X's resolvers.
        let info = match self.netns_owner(id, info) {
            Some(owner) if owner != *id => self.containers.get(&owner).map(|t| &t.info)?,
            _ => info,
        };
        if info.network_mode.is_empty() {
            return None;
        }
        let servers = resolvers::upstreams(
            &info.dns,
            &info.network_mode,
            &info.networks,
            &self.cfg.host_resolvers,
        );
        Some(
            servers
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 53))
                .collect(),
        )
    }

    fn publish_domains(&self) {
        let mut by_ip: HashMap<IpAddr, BTreeSet<String>> = HashMap::new();
        for (d, ips) in &self.domain_ips {
            for ip in ips {
                by_ip.entry(*ip).or_default().insert(d.clone());
            }
        }
        self.index.set_domains(by_ip);
    }

    /// Containers and their computed policies (for tests and `status`-like views).
    pub fn policies(&self) -> BTreeMap<ContainerId, Option<Policy>> {
        self.containers
            .iter()
            .map(|(id, t)| (*id, self.policy_of(id, t)))
            .collect()
    }
}

fn log_classification(info: &ContainerInfo, class: &Classification) {
    match class {
        Classification::Unpoliced => {
            debug!(container = %info.name, id = info.id.short(), "not policed (no egress.* label)")
        }
        Classification::Policed(spec) => info!(
            container = %info.name,
            id = info.id.short(),
            image = %info.image,
            mode = mode_name(spec.mode),
            allow = %spec.entries.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(","),
            "policing container"
        ),
        Classification::Invalid(errors) => {
            for e in errors {
                error!(
                    container = %info.name,
                    id = info.id.short(),
                    label = %e.label,
                    token = %e.token,
                    "invalid egress policy, denying all egress of the container: {e}"
                );
            }
        }
    }
}
