//! The reconciler's rules, on the in-memory fakes: each test drives it with Docker events,
//! domain updates or policy files and checks the kernel state the fake writer ends up with.
//! Container cgroups are directories below a temporary "cgroup mount" (ids are their inodes).

use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use egress_common::cgroup_path::{PARENT_CONFIGURED, PARENT_DEFAULT, PARENT_DRIVER, PARENT_SEEN};
use tokio::sync::mpsc;

use super::{
    ReconcileConfig, Reconciler,
    fake::{FakeNames, FakeWriter, Full},
    index::SharedIndex,
};
use crate::{
    docker::{
        cgroup_path::{self, CgroupDriver},
        privileges::Privileges,
        watch::{ContainerInfo, DockerEvent},
    },
    resolver::DomainUpdate,
};
use egress_common::container::ContainerId;
use egress_policy::{
    labels::{Capabilities, ImageLabels},
    policy::{Mode, Policy, Rule, parse_ip_entries},
    policy_file::PolicyFile,
};

/// The host's resolv.conf server (no container may reach it unless an entry names it: DNS goes
/// through the agent's proxy).
const HOST_DNS: &str = "10.0.0.2";

/// A directory standing in for the cgroup v2 mount, removed when dropped.
struct Mount(PathBuf);

impl Mount {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "egress-reconcile-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Makes the cgroup `rel` (and its parents); returns its id.
    fn cgroup(&self, rel: &str) -> u64 {
        let dir = self.0.join(rel);
        std::fs::create_dir_all(&dir).unwrap();
        ino(&dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ino(dir: &Path) -> u64 {
    std::fs::metadata(dir).unwrap().ino()
}

/// A reconciler on fakes, with what the tests look at.
struct Rig {
    kernel: FakeWriter,
    names: FakeNames,
    index: SharedIndex,
    mount: Mount,
    r: Reconciler<FakeWriter, FakeNames>,
}

fn rig() -> Rig {
    rig_on(FakeWriter::default(), None)
}

/// A reconciler starting on `kernel` (e.g. the pinned state of an earlier run).
fn rig_on(kernel: FakeWriter, file: Option<PolicyFile>) -> Rig {
    let names = FakeNames::default();
    let index = SharedIndex::default();
    let mount = Mount::new();
    let cfg = ReconcileConfig {
        caps: Capabilities::default(),
        cgroup_mount: mount.0.clone(),
        host_resolvers: vec![HOST_DNS.parse().unwrap()],
        attach_cgroup: mount.0.clone(),
        dns_default: egress_policy::dns::DnsMode::Learn,
    };
    let r = Reconciler::new(cfg, kernel.clone(), names.clone(), file, index.clone());
    Rig {
        kernel,
        names,
        index,
        mount,
        r,
    }
}

fn cid(n: u8) -> ContainerId {
    format!("{n:02x}{}", "ab".repeat(31)).parse().unwrap()
}

/// Container `n` named `name` with these labels (the operator's), created, not running, on the
/// default bridge.
fn info(n: u8, name: &str, labels: &[(&str, &str)]) -> ContainerInfo {
    ContainerInfo {
        id: cid(n),
        name: name.to_owned(),
        image: "busybox:latest".into(),
        image_id: None,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        image_labels: ImageLabels::Known(HashMap::new()),
        pid: None,
        running: false,
        cgroup_parent: None,
        dns: vec![],
        network_mode: "bridge".into(),
        networks: vec!["bridge".into()],
        privileges: Privileges::default(),
    }
}

fn allow(entries: &str) -> [(&str, &str); 1] {
    [("egress.allow", entries)]
}

/// `entries` in resolve mode: the agent resolves the exact names itself.
fn allow_resolved(entries: &str) -> [(&str, &str); 2] {
    [("egress.allow", entries), ("egress.dns", "resolve")]
}

fn running(mut i: ContainerInfo) -> ContainerInfo {
    i.running = true;
    i
}

/// The enforce policy of a bridged container allowed `entries` (addresses), with its own
/// loopback (and no DNS server: DNS goes through the agent's proxy).
fn enforce(entries: &str) -> Option<Policy> {
    let rules = parse_ip_entries(entries).unwrap();
    Some(Policy::new(Mode::Enforce, rules).with_loopback(true))
}

fn rules_of(rig: &Rig, n: u8) -> BTreeSet<Rule> {
    let entry = rig.kernel.entry(&cid(n)).expect("registered");
    entry.policy.expect("policed").rules
}

fn rule(s: &str) -> Rule {
    egress_policy::policy::parse_ip_entry(s).unwrap().unwrap()
}

fn update(domain: &str, ips: &[&str]) -> DomainUpdate {
    DomainUpdate {
        domain: domain.into(),
        ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn sync(infos: Vec<ContainerInfo>) -> DockerEvent {
    DockerEvent::Sync {
        containers: infos,
        cgroup_driver: CgroupDriver::Cgroupfs,
    }
}

fn file(text: &str) -> PolicyFile {
    PolicyFile::parse(text, Capabilities::default()).unwrap()
}

#[tokio::test]
async fn a_created_container_is_registered_with_its_policy_before_its_cgroup_exists() {
    let mut rig = rig();
    rig.r
        .on_docker(DockerEvent::Created(info(1, "web", &allow("10.0.0.5:443"))))
        .await;
    let entry = rig.kernel.entry(&cid(1)).expect("registered at create");
    assert_eq!(entry.policy, enforce("10.0.0.5:443"));
    assert!(entry.cgroups.is_empty(), "{:?}", entry.cgroups);
    assert!(entry.registered && !entry.failed_closed);
    assert_eq!(rig.index.meta(&cid(1)).unwrap().mode, "enforce");
}

#[tokio::test]
async fn an_unlabelled_container_is_registered_as_not_policed() {
    let mut rig = rig();
    rig.r
        .on_docker(DockerEvent::Created(info(1, "plain", &[])))
        .await;
    let entry = rig
        .kernel
        .entry(&cid(1))
        .expect("known, so not unclassified");
    assert_eq!(entry.policy, None);
    assert_eq!(rig.index.meta(&cid(1)).unwrap().mode, "unpoliced");
}

#[tokio::test]
async fn invalid_labels_deny_all_egress() {
    let mut rig = rig();
    rig.r
        .on_docker(DockerEvent::Created(info(1, "typo", &allow("10.0.0.300"))))
        .await;
    let entry = rig.kernel.entry(&cid(1)).unwrap();
    assert_eq!(entry.policy, Some(Policy::deny_all().with_loopback(true)));
    assert_eq!(
        rig.index.meta(&cid(1)).unwrap().mode,
        "deny-all (invalid egress labels)"
    );
}

#[tokio::test]
async fn a_started_container_gets_its_policy_on_its_cgroups_and_their_parent_is_registered() {
    let mut rig = rig();
    let web = info(1, "web", &allow("10.0.0.5"));
    rig.r.on_docker(DockerEvent::Created(web.clone())).await;
    let own = rig.mount.cgroup(&format!("docker/{}", cid(1)));
    let child = rig.mount.cgroup(&format!("docker/{}/app", cid(1)));
    rig.r.on_docker(DockerEvent::Started(running(web))).await;
    let entry = rig.kernel.entry(&cid(1)).unwrap();
    assert_eq!(entry.cgroups, BTreeSet::from([own, child]));
    assert_eq!(entry.policy, enforce("10.0.0.5"));
    assert_eq!(rig.index.container_of(own), Some(cid(1)));
    assert_eq!(rig.index.container_of(child), Some(cid(1)));
    let docker = cgroup_path::default_parent(CgroupDriver::Cgroupfs);
    assert_ne!(
        rig.kernel.parents().get(&docker).copied().unwrap_or(0) & PARENT_SEEN,
        0,
        "{:?}",
        rig.kernel.parents()
    );
}

#[tokio::test]
async fn a_destroyed_container_is_forgotten_with_its_domains() {
    let mut rig = rig();
    rig.names.answer("api.example.com", &["192.0.2.1"]);
    rig.r
        .on_docker(DockerEvent::Created(info(
            1,
            "web",
            &allow_resolved("api.example.com:443"),
        )))
        .await;
    assert!(rules_of(&rig, 1).contains(&rule("192.0.2.1:443")));
    assert_eq!(rig.names.refs("api.example.com"), 1);
    rig.r.on_docker(DockerEvent::Died(cid(1))).await;
    assert!(
        rig.kernel.entry(&cid(1)).is_some(),
        "a dead container stays"
    );
    rig.r.on_docker(DockerEvent::Destroyed(cid(1))).await;
    assert_eq!(rig.kernel.entry(&cid(1)), None);
    assert_eq!(rig.names.refs("api.example.com"), 0);
    assert_eq!(rig.index.meta(&cid(1)), None);
    assert!(rig.r.is_empty());
}

#[tokio::test]
async fn a_renamed_container_keeps_its_policy_and_its_new_name_counts() {
    let mut rig = rig();
    rig.r
        .on_docker(DockerEvent::Created(info(1, "web", &allow("10.0.0.5"))))
        .await;
    // Joins the network namespace of a container named `web2` (not there yet), unpoliced.
    let mut joiner = info(2, "sidecar", &[]);
    joiner.network_mode = "container:web2".into();
    rig.r.on_docker(DockerEvent::Created(joiner)).await;
    assert_eq!(
        rig.kernel.entry(&cid(1)).unwrap().policy,
        enforce("10.0.0.5")
    );
    rig.r
        .on_docker(DockerEvent::Renamed(info(1, "web2", &allow("10.0.0.5"))))
        .await;
    assert_eq!(rig.index.meta(&cid(1)).unwrap().name, "web2");
    let policy = rig.kernel.entry(&cid(1)).unwrap().policy.unwrap();
    assert_eq!(policy.rules, enforce("10.0.0.5").unwrap().rules);
    assert!(
        !policy.loopback,
        "an unpoliced container now shares its network namespace: no loopback"
    );
}

#[tokio::test]
async fn a_full_sync_forgets_the_containers_that_vanished() {
    let mut rig = rig();
    for (n, name) in [(1, "a"), (2, "b")] {
        rig.r
            .on_docker(DockerEvent::Created(info(n, name, &allow("10.0.0.5"))))
            .await;
    }
    rig.r
        .on_docker(sync(vec![info(1, "a", &allow("10.0.0.5"))]))
        .await;
    assert_eq!(rig.kernel.ids(), BTreeSet::from([cid(1)]));
    assert_eq!(rig.r.len(), 1);
}

#[tokio::test]
async fn an_agent_restart_rewrites_pinned_containers_that_exist_and_forgets_the_others() {
    let pinned = FakeWriter::default();
    pinned.pin(cid(1), enforce("10.9.9.9"));
    pinned.pin(cid(2), None);
    pinned.pin(cid(3), enforce("10.9.9.9"));
    let mut rig = rig_on(pinned, None);
    rig.r
        .on_docker(sync(vec![
            info(1, "kept", &allow("10.0.0.5")),
            info(4, "new", &[]),
        ]))
        .await;
    assert_eq!(rig.kernel.ids(), BTreeSet::from([cid(1), cid(4)]));
    assert_eq!(
        rig.kernel.entry(&cid(1)).unwrap().policy,
        enforce("10.0.0.5"),
        "rewritten from its labels, not kept as pinned"
    );
    assert_eq!(rig.kernel.entry(&cid(4)).unwrap().policy, None);
}

#[tokio::test]
async fn a_new_policy_file_applies_to_matching_containers_and_comes_off_the_others() {
    let mut rig = rig_on(
        FakeWriter::default(),
        Some(file(
            "[[container]]\nname = \"billing\"\nallow = [\"10.0.0.7\"]\n",
        )),
    );
    for (n, name, entries) in [(1, "billing", "10.0.0.5"), (2, "web", "10.0.0.6")] {
        rig.r
            .on_docker(DockerEvent::Created(info(n, name, &allow(entries))))
            .await;
    }
    rig.r
        .on_docker(DockerEvent::Created(info(3, "plain", &[])))
        .await;
    assert_eq!(
        rig.kernel.entry(&cid(1)).unwrap().policy,
        enforce("10.0.0.5,10.0.0.7")
    );
    let web_writes = rig.kernel.writes(&cid(2));

    // SIGHUP with a file that selects `web` and `plain` instead.
    let next = "[[container]]\nname = \"web\"\nallow = [\"10.0.0.8\"]\n\n\
                [[container]]\nname = \"plain\"\nmode = \"audit\"\n";
    rig.r.set_policy_file(Some(file(next))).await;
    assert_eq!(
        rig.kernel.entry(&cid(1)).unwrap().policy,
        enforce("10.0.0.5")
    );
    assert_eq!(
        rig.kernel.entry(&cid(2)).unwrap().policy,
        enforce("10.0.0.6,10.0.0.8")
    );
    let plain = rig
        .kernel
        .entry(&cid(3))
        .unwrap()
        .policy
        .expect("policed by the file");
    assert_eq!((plain.mode, plain.loopback), (Mode::Audit, false));
    assert!(rig.kernel.writes(&cid(2)) > web_writes);

    // No file: the labels alone.
    let web_writes = rig.kernel.writes(&cid(2));
    let billing_writes = rig.kernel.writes(&cid(1));
    rig.r.set_policy_file(None).await;
    assert_eq!(
        rig.kernel.entry(&cid(2)).unwrap().policy,
        enforce("10.0.0.6")
    );
    assert_eq!(rig.kernel.entry(&cid(3)).unwrap().policy, None);
    assert_eq!(rig.kernel.writes(&cid(2)), web_writes + 1);
    assert_eq!(
        rig.kernel.writes(&cid(1)),
        billing_writes,
        "a container the change does not concern is not rewritten"
    );
}

#[tokio::test]
async fn domain_updates_reach_every_container_using_the_domain_and_only_those() {
    let mut rig = rig();
    let containers = [
        (1, "a", "a.example"),
        (2, "ab", "a.example:443,b.example"),
        (3, "b", "b.example"),
    ];
    for (n, name, entries) in containers {
        rig.r
            .on_docker(DockerEvent::Created(info(
                n,
                name,
                &allow_resolved(entries),
            )))
            .await;
    }
    rig.r
        .on_docker(DockerEvent::Created(info(4, "plain", &[])))
        .await;
    let untouched = [3, 4].map(|n| rig.kernel.writes(&cid(n)));
    rig.r
        .on_domains(vec![update("a.example", &["192.0.2.1", "2001:db8::1"])])
        .await;
    assert_eq!(
        rules_of(&rig, 1),
        enforce("192.0.2.1,2001:db8::1").unwrap().rules
    );
    assert_eq!(
        rules_of(&rig, 2),
        enforce("192.0.2.1:443,[2001:db8::1]:443").unwrap().rules
    );
    assert_eq!(rules_of(&rig, 3), enforce("").unwrap().rules);
    assert_eq!([3, 4].map(|n| rig.kernel.writes(&cid(n))), untouched);

    // IPs that drop out of the set come off.
    rig.r
        .on_domains(vec![update("a.example", &["192.0.2.9"])])
        .await;
    assert_eq!(rules_of(&rig, 1), enforce("192.0.2.9").unwrap().rules);
}

#[tokio::test]
async fn a_learn_mode_container_resolves_nothing_and_reaches_no_resolver() {
    let mut rig = rig();
    rig.names.answer("a.example", &["192.0.2.1"]);
    let mut web = info(1, "web", &allow("a.example,10.0.0.5"));
    web.dns = vec![HOST_DNS.parse().unwrap()];
    rig.r.on_docker(DockerEvent::Created(web)).await;
    assert_eq!(
        rig.names.refs("a.example"),
        0,
        "learned from its answers instead"
    );
    rig.r
        .on_domains(vec![update("a.example", &["192.0.2.9"])])
        .await;
    assert_eq!(rules_of(&rig, 1), enforce("10.0.0.5").unwrap().rules);
}

#[tokio::test]
async fn a_burst_of_domain_updates_rewrites_a_container_once_and_no_change_not_at_all() {
    let mut rig = rig();
    rig.r
        .on_docker(DockerEvent::Created(info(
            1,
            "ab",
            &allow_resolved("a.example,b.example"),
        )))
        .await;
    let before = rig.kernel.writes(&cid(1));
    let burst = vec![
        update("a.example", &["192.0.2.1"]),
        update("b.example", &["192.0.2.2"]),
    ];
    rig.r.on_domains(burst.clone()).await;
    assert_eq!(rig.kernel.writes(&cid(1)), before + 1);
    assert_eq!(
        rules_of(&rig, 1),
        enforce("192.0.2.1,192.0.2.2").unwrap().rules
    );
    rig.r.on_domains(burst).await;
    assert_eq!(rig.kernel.writes(&cid(1)), before + 1, "nothing changed");
}

#[tokio::test]
async fn a_policy_that_does_not_fit_fails_closed_and_is_written_once_it_fits() {
    let mut rig = rig();
    rig.kernel.fill(cid(1), Full::Rules);
    let web = info(1, "web", &allow_resolved("a.example"));
    rig.r.on_docker(DockerEvent::Created(web.clone())).await;
    let entry = rig.kernel.entry(&cid(1)).unwrap();
    assert!(entry.failed_closed, "denied all while it does not fit");
    // The second `create` event (after inspect) fails again: the reconciler goes on.
    rig.r.on_docker(DockerEvent::Created(web)).await;
    assert!(rig.kernel.entry(&cid(1)).unwrap().failed_closed);

    rig.kernel.make_room(&cid(1));
    // The first answer of its domain has no IPs: its policy stays as it was, but it is
    // rewritten all the same, since the last write did not go in.
    rig.r.on_domains(vec![update("a.example", &[])]).await;
    let entry = rig.kernel.entry(&cid(1)).unwrap();
    assert!(!entry.failed_closed);
    assert_eq!(entry.policy, enforce(""));
}

#[tokio::test]
async fn a_container_without_room_in_the_container_map_leaves_unknown_containers_denied() {
    let mut rig = rig();
    rig.kernel.set_unclassified_deny(false);
    rig.kernel.fill(cid(1), Full::Containers);
    let web = info(1, "web", &allow("10.0.0.5"));
    rig.r.on_docker(DockerEvent::Created(web.clone())).await;
    assert!(!rig.kernel.entry(&cid(1)).unwrap().registered);
    assert!(
        rig.kernel.unclassified_denied(),
        "denied while it is unregistered"
    );

    rig.kernel.make_room(&cid(1));
    rig.r.on_docker(DockerEvent::Started(running(web))).await;
    assert!(rig.kernel.entry(&cid(1)).unwrap().registered);
    assert!(
        !rig.kernel.unclassified_denied(),
        "--unclassified allow again"
    );
}

#[tokio::test]
async fn cgroup_parents_follow_the_daemons_driver_and_its_containers() {
    let mut rig = rig();
    let docker = cgroup_path::default_parent(CgroupDriver::Cgroupfs);
    let system = cgroup_path::default_parent(CgroupDriver::Systemd);
    rig.r.register_default_parents().await;
    assert_eq!(
        rig.kernel.parents(),
        [
            (docker.clone(), PARENT_DEFAULT),
            (system.clone(), PARENT_DEFAULT)
        ]
        .into()
    );
    rig.r
        .on_docker(DockerEvent::Sync {
            containers: vec![],
            cgroup_driver: CgroupDriver::Systemd,
        })
        .await;
    assert_eq!(
        rig.kernel.parents(),
        [(system.clone(), PARENT_DRIVER)].into(),
        "the other driver's default is no parent of this daemon"
    );
    let mut custom = info(1, "custom", &[]);
    custom.cgroup_parent = Some("/custom".into());
    rig.r.on_docker(DockerEvent::Created(custom)).await;
    let configured = cgroup_path::parent_path(Some("/custom"), CgroupDriver::Systemd).unwrap();
    assert_eq!(
        rig.kernel.parents().get(&configured),
        Some(&PARENT_CONFIGURED)
    );
}

#[tokio::test]
async fn the_fake_takes_incremental_rules_for_policed_containers_only() {
    use super::MapWriter as _;
    let mut rig = rig();
    rig.r
        .on_docker(DockerEvent::Created(info(1, "web", &allow("10.0.0.5"))))
        .await;
    rig.r
        .on_docker(DockerEvent::Created(info(2, "plain", &[])))
        .await;
    let extra = vec![rule("192.0.2.7:443")];
    assert!(
        rig.kernel
            .add_container_rules(cid(1), extra.clone())
            .await
            .unwrap()
    );
    assert!(rules_of(&rig, 1).contains(&extra[0]));
    assert!(!rig.kernel.add_container_rules(cid(2), extra).await.unwrap());
}

/// Waits (a few seconds at most) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never true: {what}");
}

#[tokio::test]
async fn the_task_follows_docker_tells_when_synced_and_takes_domain_updates_and_files() {
    let rig = rig();
    let (kernel, names) = (rig.kernel.clone(), rig.names.clone());
    let (docker_tx, docker) = mpsc::channel(16);
    let (domains_tx, domains) = mpsc::unbounded_channel();
    let (handle, task) = super::spawn(rig.r, docker, domains);
    assert!(!handle.is_synced());
    docker_tx
        .send(DockerEvent::Created(info(
            1,
            "web",
            &allow_resolved("a.example"),
        )))
        .await
        .unwrap();
    docker_tx
        .send(sync(vec![info(1, "web", &allow_resolved("a.example"))]))
        .await
        .unwrap();
    handle.synced().await.unwrap();
    assert!(handle.is_synced());
    assert_eq!(kernel.entry(&cid(1)).unwrap().policy, enforce(""));
    assert_eq!(names.refs("a.example"), 1);
    let docker_default = cgroup_path::default_parent(CgroupDriver::Cgroupfs);
    assert_eq!(
        kernel.parents(),
        [(docker_default, PARENT_DRIVER)].into(),
        "registered before the first event, narrowed at the sync"
    );

    domains_tx
        .send(update("a.example", &["192.0.2.1"]))
        .unwrap();
    eventually("the domain's IP is written", || {
        kernel.entry(&cid(1)).and_then(|e| e.policy) == enforce("192.0.2.1")
    })
    .await;

    let f = file("[[container]]\nname = \"web\"\nallow = [\"10.0.0.7\"]\n");
    handle.set_policy_file(Some(f)).await.unwrap();
    assert_eq!(
        kernel.entry(&cid(1)).unwrap().policy,
        enforce("192.0.2.1,10.0.0.7")
    );
    let policies = handle.policies().await.unwrap();
    assert_eq!(policies.get(&cid(1)), Some(&enforce("192.0.2.1,10.0.0.7")));

    // The watcher stopped: the task ends.
    drop(docker_tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends with the Docker events")
        .unwrap();
    assert!(handle.set_policy_file(None).await.is_err());
}

#[tokio::test]
async fn a_task_stopped_before_its_first_sync_is_never_synced() {
    let rig = rig();
    let (_docker_tx, docker) = mpsc::channel(16);
    let (_domains_tx, domains) = mpsc::unbounded_channel();
    let (handle, task) = super::spawn(rig.r, docker, domains);
    handle.stop().await;
    task.await.unwrap();
    assert!(handle.synced().await.is_err());
}
