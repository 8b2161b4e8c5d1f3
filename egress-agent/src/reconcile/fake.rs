//! In-memory fakes of the reconciler's two sides, for its unit tests.
//!
//! - [`FakeWriter`] keeps the kernel state the writes produce, as the enforcer would leave it:
//!   containers with their policy and the cgroups that carry it, the cgroup parents with their
//!   bits. It can hold the pinned state of an earlier run, and be told that a container's
//!   writes do not fit (as with a full map): a policy whose rules do not fit fails closed
//!   (denied all), a container without room in `EG_CONTAINERS` stays unregistered and the
//!   unclassified default is deny meanwhile. Failures are reported as the enforcer reports them
//!   (repeated ones marked so).
//! - [`FakeNames`] answers from a table of domains and their IPs, and counts references.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::maps::MapError;
use egress_common::maps;

use super::{MapWriter, NameResolver};
use crate::{
    enforcer::{EnforcerError, FailedClosed, Owner},
    owner::CommandError,
    resolver::{AddOutcome, FirstAnswer, ResolverError, normalize_domain},
    sys::{cgroup::CgroupId, kernel_path::KernelPath},
};
use egress_common::container::ContainerId;
use egress_policy::policy::{Policy, Rule};

/// Which map a container's writes find full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// A rule map: the policy fails closed (its entries deny everything).
    Rules,
    /// `EG_CONTAINERS`: the container stays unregistered (its cgroups still get its entry).
    Containers,
}

/// A container as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// None: known and not policed.
    pub policy: Option<Policy>,
    /// The cgroups whose entries carry its policy.
    pub cgroups: BTreeSet<CgroupId>,
    /// Its rules did not fit: it is denied all egress until a write fits.
    pub failed_closed: bool,
    /// It has its `EG_CONTAINERS` entry (the tracepoint can police its new cgroups).
    pub registered: bool,
}

#[derive(Debug, Default)]
struct Kernel {
    containers: BTreeMap<ContainerId, Entry>,
    parents: BTreeMap<KernelPath, u32>,
    /// `--unclassified deny`.
    unclassified_deny: bool,
    full: BTreeMap<ContainerId, Full>,
    /// Containers whose last write failed (its failures are "repeated" until one fits).
    failing: BTreeSet<ContainerId>,
    /// `set_container` calls per container.
    writes: BTreeMap<ContainerId, usize>,
}

/// The kernel side, in memory. Clones share the state.
#[derive(Clone, Debug, Default)]
pub struct FakeWriter(Arc<Mutex<Kernel>>);

impl FakeWriter {
    fn kernel(&self) -> MutexGuard<'_, Kernel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A container an earlier run left pinned with `policy`.
    pub fn pin(&self, id: ContainerId, policy: Option<Policy>) {
        self.kernel().containers.insert(
            id,
            Entry {
                policy,
                cgroups: BTreeSet::new(),
                failed_closed: false,
                registered: true,
            },
        );
    }

    /// From now on the writes of `id` find `map` full.
    pub fn fill(&self, id: ContainerId, map: Full) {
        self.kernel().full.insert(id, map);
    }

    /// The writes of `id` fit again.
    pub fn make_room(&self, id: &ContainerId) {
        self.kernel().full.remove(id);
    }

    pub fn set_unclassified_deny(&self, deny: bool) {
        self.kernel().unclassified_deny = deny;
    }

    /// What a new cgroup of an unknown container gets: denied with `--unclassified deny`, and
    /// whatever it says while a policed container is unregistered.
    pub fn unclassified_denied(&self) -> bool {
        let k = self.kernel();
        k.unclassified_deny || k.containers.values().any(|e| !e.registered)
    }

    pub fn entry(&self, id: &ContainerId) -> Option<Entry> {
        self.kernel().containers.get(id).cloned()
    }

    pub fn ids(&self) -> BTreeSet<ContainerId> {
        self.kernel().containers.keys().copied().collect()
    }

    pub fn parents(&self) -> BTreeMap<KernelPath, u32> {
        self.kernel().parents.clone()
    }

    /// How many times `id` was written.
    pub fn writes(&self, id: &ContainerId) -> usize {
        self.kernel().writes.get(id).copied().unwrap_or(0)
    }
}

/// The error the enforcer returns for an insert into a full `map`.
fn full_map(id: ContainerId, map: &'static str, repeated: bool) -> CommandError {
    CommandError::Enforcer(EnforcerError::FailedClosed(Box::new(FailedClosed {
        owner: Owner::Container(id),
        what: "its policy (fake)".into(),
        map,
        capacity: maps::capacity(map).unwrap_or_default(),
        source: MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_elem",
            io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
        }),
        outcome: "failed closed (fake)".into(),
        repeated,
    })))
}

/// What a write of the fake returns.
type Reply<T> = Result<T, CommandError>;

impl MapWriter for FakeWriter {
    async fn set_container(
        &self,
        id: ContainerId,
        policy: Option<Policy>,
        cg: Vec<u64>,
    ) -> Reply<()> {
        let mut k = self.kernel();
        *k.writes.entry(id).or_default() += 1;
        let full = k.full.get(&id).copied().filter(|_| policy.is_some());
        let entry = k.containers.entry(id).or_insert(Entry {
            policy: None,
            cgroups: BTreeSet::new(),
            failed_closed: false,
            registered: true,
        });
        if policy.is_some() {
            // The policy's entry goes to the cgroups named and stays on those that had it.
            entry.cgroups.extend(cg);
        } else {
            entry.cgroups.clear();
        }
        entry.policy = policy;
        entry.failed_closed = full == Some(Full::Rules);
        entry.registered = full != Some(Full::Containers);
        let repeated = k.failing.contains(&id);
        match full {
            None => {
                k.failing.remove(&id);
                Ok(())
            }
            Some(map) => {
                k.failing.insert(id);
                let name = match map {
                    Full::Rules => maps::ALLOW_V4,
                    Full::Containers => maps::CONTAINERS,
                };
                Err(full_map(id, name, repeated))
            }
        }
    }

    async fn remove_container(&self, id: ContainerId, _cgroups: Vec<u64>) -> Reply<bool> {
        let mut k = self.kernel();
        k.failing.remove(&id);
        Ok(k.containers.remove(&id).is_some())
    }

    async fn containers(&self) -> Reply<Vec<ContainerId>> {
        Ok(self.ids().into_iter().collect())
    }

    async fn change_container_parent(&self, path: KernelPath, bits: u32, add: bool) -> Reply<bool> {
        let mut k = self.kernel();
        let had = k.parents.get(&path).copied().unwrap_or(0);
        let now = if add { had | bits } else { had & !bits };
        if now == 0 {
            k.parents.remove(&path);
        } else {
            k.parents.insert(path, now);
        }
        Ok(now != had)
    }

    async fn add_container_rules(&self, id: ContainerId, rules: Vec<Rule>) -> Reply<bool> {
        let mut k = self.kernel();
        match k.containers.get_mut(&id) {
            Some(Entry {
                policy: Some(policy),
                failed_closed: false,
                ..
            }) => {
                policy.rules.extend(rules);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    ips: HashMap<String, BTreeSet<IpAddr>>,
    refs: HashMap<String, usize>,
}

/// A resolver that answers from a table (a domain not in it has no IPs yet).
#[derive(Clone, Debug, Default)]
pub struct FakeNames(Arc<Mutex<Table>>);

impl FakeNames {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `domain` resolves to `ips` from now on.
    pub fn answer(&self, domain: &str, ips: &[&str]) {
        let ips = ips.iter().map(|s| s.parse().expect("an IP")).collect();
        self.table().ips.insert(normalize(domain), ips);
    }

    /// References held on `domain`.
    pub fn refs(&self, domain: &str) -> usize {
        self.table()
            .refs
            .get(&normalize(domain))
            .copied()
            .unwrap_or(0)
    }
}

fn normalize(domain: &str) -> String {
    normalize_domain(domain).expect("a domain")
}

impl NameResolver for FakeNames {
    fn add(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<AddOutcome, ResolverError>> + Send + 'static {
        let outcome = normalize_domain(domain).map(|domain| {
            let mut t = self.table();
            *t.refs.entry(domain.clone()).or_default() += 1;
            let ips = t.ips.get(&domain).cloned();
            AddOutcome {
                domain,
                status: match ips {
                    Some(_) => FirstAnswer::Resolved,
                    None => FirstAnswer::Pending,
                },
                ips: ips.unwrap_or_default(),
            }
        });
        std::future::ready(outcome)
    }

    fn remove(&self, domain: &str) {
        let mut t = self.table();
        if let Some(n) = t.refs.get_mut(&normalize(domain)) {
            *n = n.saturating_sub(1);
        }
    }

    fn snapshot(&self, domain: &str) -> Option<BTreeSet<IpAddr>> {
        let domain = normalize_domain(domain).ok()?;
        let t = self.table();
        (t.refs.get(&domain).copied().unwrap_or(0) > 0)
            .then(|| t.ips.get(&domain).cloned().unwrap_or_default())
    }
}
