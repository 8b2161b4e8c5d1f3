//! Which containers are proxied, and their listeners.
//!
//! The reconciler tells the service about every policed container ([`DnsService::upsert`]):
//! its DNS policy, where its network namespace is ([`NetnsSource`]) and its resolvers (once
//! Docker has said). The service finds the namespace — while the container is being made, by
//! watching its cgroup for runc's init process — binds the listeners in it, starts serving,
//! and only then points the container's redirect at them (`EnforcerHandle::set_dns_redirect`):
//! until then its DNS is denied, never unfiltered. A restarted agent reopens the ports the
//! pinned redirects name, so the redirect stays valid across the restart.
//!
//! A container that stops loses its listeners (its namespace goes with it) and its redirect;
//! one that is forgotten loses its entry. Learned addresses expire in a sweep every second.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use egress_common::{
    container::ContainerId,
    dns::{DnsRedirect, REDIRECT_V6_LOOPBACK},
};
use egress_policy::dns::DnsPolicy;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tracing::{debug, error, info};

use super::{
    DnsConfig,
    counters::{Counters, Snapshot},
    discover::{self, NetnsSource},
    netns::{Netns, NetnsThread},
    peers::Peers,
    proxied::Proxied,
    serve, sockets,
    upstream::Upstream,
};
use crate::{enforcer::Owner, owner::EnforcerHandle, reconcile::index::SharedIndex};

/// How often a container being made is looked for, at first, and later.
const POLL_FAST: Duration = Duration::from_millis(2);
const POLL_SLOW: Duration = Duration::from_millis(200);
/// How long the fast polling lasts.
const FAST_FOR: Duration = Duration::from_secs(10);
/// How often learned addresses are checked for expiry, and the counters logged if they moved.
const SWEEP: Duration = Duration::from_secs(1);
const COUNTERS_EVERY: Duration = Duration::from_secs(60);

/// What the reconciler says about one policed container.
#[derive(Debug, Clone)]
pub struct DnsTarget {
    pub id: ContainerId,
    pub name: String,
    /// Shared with the container's proxy (one copy per container).
    pub policy: Arc<DnsPolicy>,
    pub netns: NetnsSource,
    /// Its resolvers; None until Docker has said (questions wait for them).
    pub servers: Option<Vec<SocketAddr>>,
}

enum State {
    Finding(JoinHandle<()>),
    Serving {
        proxied: Arc<Proxied>,
        inode: u64,
        /// The listener loops; dropping the set stops them.
        _tasks: JoinSet<()>,
    },
}

impl Drop for State {
    fn drop(&mut self) {
        if let State::Finding(task) = self {
            task.abort();
        }
    }
}

struct Entry {
    target: DnsTarget,
    servers: watch::Sender<Option<Vec<SocketAddr>>>,
    /// Changes whenever the entry starts looking for its namespace again: a finder of an
    /// older generation gives up.
    generation: u64,
    state: State,
}

struct Inner {
    index: SharedIndex,
    peers: Arc<Peers>,
    cfg: Arc<DnsConfig>,
    counters: Arc<Counters>,
    thread: Arc<NetnsThread>,
    enforcer: EnforcerHandle,
    own_ns: u64,
    entries: Mutex<BTreeMap<ContainerId, Entry>>,
    /// Ports the pinned redirects name (a restarted agent reopens them).
    pinned_ports: Mutex<BTreeMap<Owner, u16>>,
    generations: std::sync::atomic::AtomicU64,
}

/// A cheap, clonable handle on the proxy.
#[derive(Clone)]
pub struct DnsService {
    inner: Arc<Inner>,
}

impl DnsService {
    /// Starts the proxy (its expiry sweep); reads the redirects a previous agent pinned.
    pub async fn start(
        cfg: DnsConfig,
        enforcer: EnforcerHandle,
        pin_dir: &std::path::Path,
        index: SharedIndex,
    ) -> anyhow::Result<Self> {
        let own_ns = Netns::current()
            .map_err(|e| anyhow::anyhow!("reading the agent's network namespace: {e}"))?
            .inode();
        let pinned: BTreeMap<Owner, u16> = enforcer
            .dns_redirects()
            .await
            .map_err(|e| anyhow::anyhow!("reading the pinned DNS redirects: {e}"))?
            .into_iter()
            .map(|(owner, r)| (owner, r.port))
            .collect();
        let inner = Arc::new(Inner {
            index,
            peers: Arc::new(Peers::open(pin_dir)),
            cfg: Arc::new(cfg),
            counters: Arc::default(),
            thread: Arc::new(NetnsThread::new()),
            enforcer,
            own_ns,
            entries: Mutex::default(),
            pinned_ports: Mutex::new(pinned),
            generations: Default::default(),
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// A policed container, new or changed.
    pub fn upsert(&self, target: DnsTarget) {
        let mut entries = self.inner.lock();
        let id = target.id;
        match entries.get_mut(&id) {
            None => {
                let (servers, _) = watch::channel(target.servers.clone());
                let generation = self.inner.next_generation();
                let finder = tokio::spawn(find_and_serve(
                    Arc::downgrade(&self.inner),
                    id,
                    target.netns.clone(),
                    generation,
                ));
                entries.insert(
                    id,
                    Entry {
                        target,
                        servers,
                        generation,
                        state: State::Finding(finder),
                    },
                );
            }
            Some(entry) => {
                let servers = target.servers.clone();
                entry.servers.send_if_modified(|s| {
                    let changed = *s != servers;
                    *s = servers;
                    changed
                });
                if entry.target.policy != target.policy
                    && let State::Serving { proxied, .. } = &entry.state
                {
                    let (proxied, policy) = (proxied.clone(), target.policy.clone());
                    tokio::spawn(async move { proxied.set_policy(policy).await });
                }
                let moved = entry.target.netns != target.netns
                    && !self.inner.same_netns(&entry.state, &target.netns);
                // An unchanged policy keeps the copy its proxy holds.
                let mut target = target;
                if entry.target.policy == target.policy {
                    target.policy = entry.target.policy.clone();
                }
                entry.target = target;
                if moved {
                    self.inner.restart(&mut *entry, id);
                }
            }
        }
    }

    /// A container the agent no longer polices, or that is gone.
    pub fn forget(&self, id: &ContainerId) {
        let removed = self.inner.lock().remove(id);
        if let Some(entry) = removed {
            let serving = matches!(entry.state, State::Serving { .. });
            drop(entry);
            if serving {
                let enforcer = self.inner.enforcer.clone();
                let owner = Owner::Container(*id);
                tokio::spawn(async move {
                    // The owner may be gone already (its redirect with it).
                    let _ = enforcer.set_dns_redirect(owner, None).await;
                });
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ContainerId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_generation(&self) -> u64 {
        self.generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// True if `state` serves the namespace `source` names (a container that Docker now says
    /// started, in the namespace it was found in while being made).
    fn same_netns(&self, state: &State, source: &NetnsSource) -> bool {
        let State::Serving { inode, .. } = state else {
            return false;
        };
        match source {
            NetnsSource::Own => *inode == self.own_ns,
            NetnsSource::Pid(_) => discover::find(source, self.own_ns)
                .ok()
                .flatten()
                .is_some_and(|ns| ns.inode() == *inode),
            NetnsSource::Cgroups(_) => false,
        }
    }

    /// Drops the entry's listeners and redirect and looks for its namespace again.
    fn restart(self: &Arc<Self>, entry: &mut Entry, id: ContainerId) {
        if matches!(entry.state, State::Serving { .. }) {
            let enforcer = self.enforcer.clone();
            tokio::spawn(async move {
                let owner = Owner::Container(id);
                if let Err(e) = enforcer.set_dns_redirect(owner, None).await {
                    debug!(container = %id.short(), "dropping the DNS redirect: {e}");
                }
                let _ = enforcer.set_learned_rules(owner, Default::default()).await;
            });
        }
        entry.generation = self.next_generation();
        let finder = tokio::spawn(find_and_serve(
            Arc::downgrade(self),
            id,
            entry.target.netns.clone(),
            entry.generation,
        ));
        entry.state = State::Finding(finder);
    }
}

/// Looks for the namespace of `id` until found, then serves it.
/// Looks for the namespace of `id` until found, then serves it. Holds the service only
/// weakly while it looks: a container that never starts must not keep the service (and the
/// enforcer's handle in it) alive when the agent stops.
async fn find_and_serve(
    weak: std::sync::Weak<Inner>,
    id: ContainerId,
    source: NetnsSource,
    generation: u64,
) {
    let started = Instant::now();
    let (inner, ns) = loop {
        let Some(inner) = weak.upgrade() else { return };
        match discover::find(&source, inner.own_ns) {
            Ok(Some(ns)) => break (inner, ns),
            Ok(None) => {}
            // The process Docker named is gone: the container stopped, and its `die` event
            // starts the search again.
            Err(e) if matches!(source, NetnsSource::Pid(_)) => {
                debug!(container = %id.short(), ?source, "the container's process is gone: {e}");
                return;
            }
            Err(e) => {
                debug!(container = %id.short(), ?source, "network namespace not found yet: {e}")
            }
        }
        drop(inner);
        let wait = if started.elapsed() < FAST_FOR {
            POLL_FAST
        } else {
            POLL_SLOW
        };
        tokio::time::sleep(wait).await;
    };
    if let Err(e) = serve_in(&inner, id, ns, generation).await {
        let name = inner
            .lock()
            .get(&id)
            .map(|e| e.target.name.clone())
            .unwrap_or_default();
        error!(container = %name, id = id.short(),
            "starting the DNS proxy in the container's network namespace failed; its DNS stays denied: {e}");
    }
}

async fn serve_in(
    inner: &Arc<Inner>,
    id: ContainerId,
    ns: Netns,
    generation: u64,
) -> anyhow::Result<()> {
    let owner = Owner::Container(id);
    let inode = ns.inode();
    let ns = Arc::new(ns);
    let preferred = inner
        .pinned_ports
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&owner)
        .copied();
    let l = inner
        .thread
        .run(ns.clone(), move || sockets::bind_listeners(preferred))
        .await?;
    let port = l.port;
    let v6 = l.v6.is_some();
    let listeners = serve::Listeners {
        udp4: UdpSocket::from_std(l.udp4)?,
        tcp4: TcpListener::from_std(l.tcp4)?,
        v6: match l.v6 {
            Some((u, t)) => Some((UdpSocket::from_std(u)?, TcpListener::from_std(t)?)),
            None => None,
        },
    };
    let (proxied, name) = {
        let entries = inner.lock();
        let Some(entry) = entries.get(&id).filter(|e| e.generation == generation) else {
            return Ok(());
        };
        let proxied = Arc::new(Proxied::new(
            owner,
            entry.target.name.clone(),
            entry.target.policy.clone(),
            entry.servers.subscribe(),
            inner.peers.clone(),
            Upstream::new(ns.clone(), inner.thread.clone()),
            inner.cfg.clone(),
            inner.counters.clone(),
            inner.enforcer.clone(),
        ));
        let names: std::sync::Weak<dyn crate::reconcile::index::LearnedNames> =
            Arc::downgrade(&proxied) as _;
        inner.index.set_learned(id, names);
        (proxied, entry.target.name.clone())
    };
    let mut tasks = JoinSet::new();
    serve::spawn(&mut tasks, &proxied, &inner.counters, listeners);
    let redirect = DnsRedirect::new(port, if v6 { REDIRECT_V6_LOOPBACK } else { 0 });
    inner
        .enforcer
        .set_dns_redirect(owner, Some(redirect))
        .await
        .map_err(|e| anyhow::anyhow!("writing the DNS redirect: {e}"))?;
    let mut entries = inner.lock();
    match entries.get_mut(&id).filter(|e| e.generation == generation) {
        Some(entry) => {
            info!(container = %name, id = id.short(), port, ipv6_loopback = v6, netns = inode,
                "DNS proxy serving the container");
            entry.state = State::Serving {
                proxied,
                inode,
                _tasks: tasks,
            };
        }
        None => {
            // Forgotten, or moved on to another namespace (a newer finder serves that one)
            // while the listeners were being made.
            debug!(container = %name, "DNS proxy start superseded");
        }
    }
    Ok(())
}

async fn sweep(inner: std::sync::Weak<Inner>) {
    let mut last_log = Instant::now();
    let mut last = Snapshot::default();
    loop {
        tokio::time::sleep(SWEEP).await;
        let Some(inner) = inner.upgrade() else { return };
        let serving: Vec<Arc<Proxied>> = inner
            .lock()
            .values()
            .filter_map(|e| match &e.state {
                State::Serving { proxied, .. } => Some(proxied.clone()),
                State::Finding(_) => None,
            })
            .collect();
        let now = Instant::now();
        for p in serving {
            p.expire(now).await;
        }
        if last_log.elapsed() >= COUNTERS_EVERY {
            let snap = inner.counters.snapshot();
            if snap != last {
                info!(counters = %snap, "DNS proxy");
                last = snap;
            }
            last_log = Instant::now();
        }
    }
}
