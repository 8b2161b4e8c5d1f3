//! The fixture of the kernel tests: one test's cgroup subtree, pin directory, addresses and
//! (optionally) an in-process enforcer, all removed again when it is dropped, even on panic.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use egress_agent::{
    enforcer::{Applied, Enforcer, EnforcerConfig, OpenReport, Owner, Stats},
    observe::events::EgressEvent,
    owner::{self, EnforcerHandle},
};
use egress_common::{container::ContainerId, dns::DnsRedirect};
use egress_policy::policy::{Mode, Policy, parse_ip_entries};
use tokio::{runtime::Runtime, sync::broadcast};

use crate::{
    cgroup::{Cgroup, CgroupTree},
    net,
    pins::PinDir,
    probe::{Outcome, Probe},
};

/// How long to wait for an event to reach user space.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Panics unless the tests run as root: they load eBPF programs and make cgroups.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the kernel tests load eBPF programs and create cgroups: run them as root (`sudo -E cargo xtask test`)"
    );
}

/// A policy from entries in the `--policy` grammar (`a,b/24:80`).
#[track_caller]
fn policy(mode: Mode, entries: &str) -> Policy {
    let rules =
        parse_ip_entries(entries).unwrap_or_else(|e| panic!("policy entries {entries:?}: {e}"));
    Policy::new(mode, rules)
}

/// A container id of test `slot`, `n`-th of the test: 64 hex digits no real container has.
pub fn container_id(slot: u8, n: u32) -> ContainerId {
    let pid = std::process::id();
    format!("e9e9{slot:02x}{pid:08x}{n:08x}{:042x}", 0xe9)
        .parse()
        .expect("a valid container id")
}

/// An enforcer running in this process: its owner task on a private tokio runtime, and a
/// subscription to its events taken before anything could be denied.
pub struct InProcess {
    pub report: OpenReport,
    handle: Option<EnforcerHandle>,
    events: Mutex<EventLog>,
    rt: Option<Runtime>,
}

struct EventLog {
    rx: broadcast::Receiver<EgressEvent>,
    seen: Vec<EgressEvent>,
}

impl InProcess {
    /// `Enforcer::open` at `pin_dir`, attached at `attach`, and `owner::spawn`.
    #[track_caller]
    pub fn open(pin_dir: &Path, attach: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let cfg = EnforcerConfig {
            pin_dir: pin_dir.to_owned(),
            attach_cgroup: attach.to_owned(),
        };
        let _in_rt = rt.enter();
        let (enforcer, report) = Enforcer::open(&cfg).unwrap_or_else(|e| {
            panic!(
                "Enforcer::open(pin {}, attach {}): {e:#}",
                pin_dir.display(),
                attach.display()
            )
        });
        let (handle, _task) = owner::spawn(enforcer);
        let rx = handle.subscribe();
        drop(_in_rt);
        Self {
            report,
            handle: Some(handle),
            events: Mutex::new(EventLog { rx, seen: vec![] }),
            rt: Some(rt),
        }
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("runtime")
    }

    fn handle(&self) -> &EnforcerHandle {
        self.handle.as_ref().expect("handle")
    }

    /// Sets or replaces the policy of `cg`: `entries` in the `--policy` grammar (`a,b/24:80`).
    #[track_caller]
    pub fn set_policy(&self, cg: &Cgroup, mode: Mode, entries: &str) {
        let policy = policy(mode, entries);
        self.rt()
            .block_on(self.handle().set_policy(cg.id, policy))
            .unwrap_or_else(|e| panic!("set_policy({}, {entries:?}): {e}", cg.path.display()));
    }

    /// Sets `policy` (as built by the caller, flags included) on `cg`.
    #[track_caller]
    pub fn apply(&self, cg: &Cgroup, policy: Policy) {
        self.rt()
            .block_on(self.handle().set_policy(cg.id, policy))
            .unwrap_or_else(|e| panic!("set_policy({}): {e}", cg.path.display()));
    }

    /// Like [`InProcess::set_policy`], returning the enforcer's error as text.
    pub fn try_set_policy(&self, cg: &Cgroup, mode: Mode, entries: &str) -> Result<(), String> {
        let policy = policy(mode, entries);
        self.rt()
            .block_on(self.handle().set_policy(cg.id, policy))
            .map_err(|e| e.to_string())
    }

    /// Registers a container (as at Docker's `create` event): `Some((mode, entries))` polices
    /// it, `None` marks it unpoliced. `cgroups` are cgroups of it that exist already. Returns
    /// the enforcer's error as text.
    pub fn set_container(
        &self,
        id: &ContainerId,
        policy: Option<(Mode, &str)>,
        cgroups: &[&Cgroup],
    ) -> Result<(), String> {
        let policy = policy.map(|(mode, entries)| self::policy(mode, entries));
        let cgroups = cgroups.iter().map(|c| c.id).collect();
        self.rt()
            .block_on(self.handle().set_container(*id, policy, cgroups))
            .map_err(|e| e.to_string())
    }

    /// Forgets a container (as at Docker's `destroy` event).
    #[track_caller]
    pub fn remove_container(&self, id: &ContainerId) -> bool {
        self.rt()
            .block_on(self.handle().remove_container(*id, vec![]))
            .unwrap_or_else(|e| panic!("remove_container({id:?}): {e}"))
    }

    /// The policies of the cgroups policed on their own, by cgroup id.
    #[track_caller]
    pub fn policies(&self) -> Vec<(u64, Applied)> {
        self.rt()
            .block_on(self.handle().policies())
            .unwrap_or_else(|e| panic!("policies(): {e}"))
    }

    /// The containers the enforcer knows.
    #[track_caller]
    pub fn containers(&self) -> Vec<(ContainerId, Option<Applied>)> {
        self.rt()
            .block_on(self.handle().containers())
            .unwrap_or_else(|e| panic!("containers(): {e}"))
    }

    /// Registers `dir` as a cgroup parent of this dockerd (container look-alikes made below it
    /// get the unclassified default).
    #[track_caller]
    pub fn add_container_parent(&self, dir: &Path) {
        let mount = egress_agent::sys::mounts::cgroup2_mount().expect("a cgroup v2 mount");
        let path = egress_agent::sys::kernel_path::KernelPath::of_dir(&mount, dir)
            .unwrap_or_else(|e| panic!("kernel path of {}: {e}", dir.display()));
        self.rt()
            .block_on(self.handle().change_container_parent(
                path,
                egress_common::cgroup_path::PARENT_SEEN,
                true,
            ))
            .unwrap_or_else(|e| panic!("add_container_parent({}): {e}", dir.display()));
    }

    /// What new container cgroups of unknown containers get.
    #[track_caller]
    pub fn set_unclassified_deny(&self, deny: bool) {
        self.rt()
            .block_on(self.handle().set_unclassified_deny(deny))
            .unwrap_or_else(|e| panic!("set_unclassified_deny({deny}): {e}"))
    }

    /// Removes the policy of `cg`; returns whether it had one.
    #[track_caller]
    pub fn remove_policy(&self, cg: &Cgroup) -> bool {
        self.rt()
            .block_on(self.handle().remove_policy(cg.id))
            .unwrap_or_else(|e| panic!("remove_policy({}): {e}", cg.path.display()))
    }

    /// Releases the programs of a replaced layout; returns how many links were released.
    #[track_caller]
    pub fn release_previous(&self) -> usize {
        self.rt()
            .block_on(self.handle().release_previous())
            .unwrap_or_else(|e| panic!("release_previous(): {e}"))
    }

    /// Sets (or with None removes) the DNS redirect of the cgroup `cg` policed on its own.
    #[track_caller]
    pub fn set_dns_redirect(&self, cg: &Cgroup, redirect: Option<DnsRedirect>) {
        self.rt()
            .block_on(
                self.handle()
                    .set_dns_redirect(Owner::Cgroup(cg.id), redirect),
            )
            .unwrap_or_else(|e| panic!("set_dns_redirect({}): {e}", cg.path.display()))
    }

    /// Every owner's DNS redirect.
    #[track_caller]
    pub fn dns_redirects(&self) -> Vec<(Owner, DnsRedirect)> {
        self.rt()
            .block_on(self.handle().dns_redirects())
            .unwrap_or_else(|e| panic!("dns_redirects(): {e}"))
    }

    /// The kernel counters.
    #[track_caller]
    pub fn stats(&self) -> Stats {
        self.rt()
            .block_on(self.handle().stats())
            .unwrap_or_else(|e| panic!("stats(): {e}"))
    }

    /// Waits for an event matching `pred` (events seen earlier count too) and returns it.
    #[track_caller]
    pub fn expect_event(&self, what: &str, pred: impl Fn(&EgressEvent) -> bool) -> EgressEvent {
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = log.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = self
                .rt()
                .block_on(async { tokio::time::timeout(left, log.rx.recv()).await });
            match next {
                Ok(Ok(ev)) => {
                    log.seen.push(ev.clone());
                    if pred(&ev) {
                        return ev;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    panic!("{what}: the event subscription lagged by {n} events")
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    panic!(
                        "{what}: the enforcer task stopped; events seen: {:#?}",
                        log.seen
                    )
                }
                Err(_) => panic!(
                    "{what}: no matching event within {EVENT_TIMEOUT:?}; events seen: {:#?}",
                    log.seen
                ),
            }
        }
    }

    /// Every event received so far (waits [`net::SETTLE`] for stragglers first).
    pub fn events(&self) -> Vec<EgressEvent> {
        std::thread::sleep(net::SETTLE);
        let mut log = self.events.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(ev) = log.rx.try_recv() {
            log.seen.push(ev);
        }
        log.seen.clone()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // Dropping the last handle stops the owner task, which drops the enforcer; the pinned
        // links keep enforcing until the pin directory is cleaned up.
        self.handle.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// One test's world. Dropped in field order: the enforcer, then the pins (detached and
/// unpinned), then the cgroups.
pub struct Lab {
    pub name: String,
    /// Second octet of this test's IPv4 addresses (see [`crate::slots`]).
    pub slot: u8,
    enforcer: Option<InProcess>,
    pub pins: PinDir,
    pub tree: CgroupTree,
}

impl Lab {
    /// A lab with an in-process enforcer attached at the test's parent cgroup.
    #[track_caller]
    pub fn new(name: &str, slot: u8) -> Self {
        let mut lab = Self::bare(name, slot);
        lab.start_enforcer();
        lab
    }

    /// A lab without an enforcer (for tests that start the agent binary or open it themselves).
    #[track_caller]
    pub fn bare(name: &str, slot: u8) -> Self {
        require_root();
        Self {
            name: name.to_owned(),
            slot,
            enforcer: None,
            pins: PinDir::new(name),
            tree: CgroupTree::create(name),
        }
    }

    /// Opens an in-process enforcer on this lab's pin directory and parent cgroup.
    #[track_caller]
    pub fn start_enforcer(&mut self) -> &OpenReport {
        assert!(self.enforcer.is_none(), "an enforcer is running already");
        let e = InProcess::open(&self.pins.path, &self.tree.root.path);
        &self.enforcer.insert(e).report
    }

    /// Stops the in-process enforcer (its pinned state stays and keeps enforcing).
    pub fn stop_enforcer(&mut self) {
        self.enforcer.take();
    }

    /// The running in-process enforcer.
    #[track_caller]
    pub fn enforcer(&self) -> &InProcess {
        self.enforcer
            .as_ref()
            .expect("no enforcer running in this lab")
    }

    /// The test's parent cgroup, where the programs are attached. It is never policed.
    pub fn parent(&self) -> &Cgroup {
        &self.tree.root
    }

    /// Creates a child cgroup of the test's parent cgroup.
    #[track_caller]
    pub fn cgroup(&self, name: &str) -> Cgroup {
        self.tree.child(name)
    }

    /// `127.<slot>.0.<host>`.
    pub fn ip(&self, host: u8) -> IpAddr {
        net::v4(self.slot, 0, host)
    }

    /// `127.<slot>.<net>.<host>`.
    pub fn ip_in(&self, net: u8, host: u8) -> IpAddr {
        net::v4(self.slot, net, host)
    }

    /// Enforce mode: only `entries` are allowed.
    #[track_caller]
    pub fn enforce(&self, cg: &Cgroup, entries: &str) {
        self.enforcer().set_policy(cg, Mode::Enforce, entries);
    }

    /// Audit mode: everything is allowed, what `entries` do not allow is reported.
    #[track_caller]
    pub fn audit(&self, cg: &Cgroup, entries: &str) {
        self.enforcer().set_policy(cg, Mode::Audit, entries);
    }

    /// Runs `probe` in `cg`.
    #[track_caller]
    pub fn probe(&self, cg: &Cgroup, probe: Probe) -> Outcome {
        probe.run_in(cg)
    }

    /// TCP connect from `cg` to `addr`.
    #[track_caller]
    pub fn tcp(&self, cg: &Cgroup, addr: SocketAddr) -> Outcome {
        Probe::tcp(addr).run_in(cg)
    }
}
