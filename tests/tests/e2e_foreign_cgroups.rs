//! Only this dockerd's containers are unclassified: with `--unclassified deny`, a cgroup that
//! merely looks like a container (`<64 hex>`, `docker-<id>.scope`) but is not below one of
//! the followed dockerd's cgroup parents — another runtime's (Docker in Docker, rootless
//! Docker, containerd with the cgroupfs driver) — is left alone, while the same look-alike
//! below the daemon's own parent, which no container owns, is denied as unclassified.
//!
//! Uses the shared dockerd (`cargo xtask test --with-docker`); the look-alikes are plain
//! cgroups this test makes, probed from loopback by processes started in them.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use egress_tests::{
    cgroup::{Cgroup, remove_tree},
    e2e::{AgentOpts, Lab, PORT, TcpTarget, loopback, wait_until},
    probe::Probe,
};

/// Cgroups this test made, removed (deepest first) when dropped, also on panic.
struct Made(Vec<PathBuf>);

impl Made {
    /// Makes `dir` and whatever of its parents below `mount` is missing.
    #[track_caller]
    fn cgroup(&mut self, mount: &Path, dir: &Path) -> Cgroup {
        let mut missing = Vec::new();
        let mut d = dir;
        while d != mount && !d.exists() {
            missing.push(d.to_owned());
            d = d.parent().expect("below the mount");
        }
        for m in missing.into_iter().rev() {
            fs::create_dir(&m).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", m.display()));
            self.0.push(m);
        }
        Cgroup::at(dir)
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            remove_tree(d);
        }
    }
}

/// A container id no container has: 64 hex digits from the pid, the clock and `n`.
fn fake_id(n: u32) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}{:016x}{:032x}", std::process::id(), n, t)
}

#[test]
fn look_alikes_outside_this_dockerds_cgroup_parents_are_not_unclassified() {
    let mut lab = Lab::new("path-foreign", 60);
    let target = TcpTarget::start(SocketAddr::new(loopback(60, 1), PORT), "target");
    let driver = lab.docker.run(&["info", "--format", "{{.CgroupDriver}}"]);
    let mount = egress_agent::sys::mounts::cgroup2_mount().expect("a cgroup v2 mount");
    let mut made = Made(Vec::new());
    let subtree = mount.join(format!("egress-test-path-foreign-{}", std::process::id()));

    lab.start_agent(&AgentOpts::default());

    // This dockerd's own parent, and the other driver's default (no parent of this daemon's
    // once the agent knows the driver).
    let (ours, other_default) = match driver.as_str() {
        "systemd" => (
            mount.join(format!("system.slice/docker-{}.scope", fake_id(0))),
            mount.join(format!("docker/{}", fake_id(1))),
        ),
        _ => (
            mount.join(format!("docker/{}", fake_id(0))),
            mount.join(format!("system.slice/docker-{}.scope", fake_id(1))),
        ),
    };
    let foreign = [
        // Docker (cgroupfs driver) of another daemon, or containerd / kind with cgroupfs.
        subtree.join(format!("docker/{}", fake_id(2))),
        // Rootless Docker / another systemd-driver daemon.
        subtree.join(format!(
            "user.slice/user-1000.slice/user@1000.service/docker-{}.scope",
            fake_id(3)
        )),
        // Docker in Docker: an inner container below an outer one.
        mount.join(format!("docker/{}/docker/{}", fake_id(4), fake_id(5))),
        // Kubernetes with the cgroupfs driver.
        subtree.join(format!("kubepods/burstable/pod1234/{}", fake_id(6))),
        other_default,
    ];
    let probe = Probe::tcp(target.addr);
    for dir in &foreign {
        let cg = made.cgroup(&mount, dir);
        probe
            .run_in(&cg)
            .assert_ok(&format!("a foreign look-alike {}", dir.display()));
    }
    let reached = foreign.len();
    wait_until(
        "the target to count the foreign probes' connections",
        Duration::from_secs(5),
        || (target.accepted() >= reached).then_some(()),
    );
    let own = made.cgroup(&mount, &ours);
    probe.run_in(&own).assert_denied(&format!(
        "an unknown container below this dockerd's parent {}",
        ours.display()
    ));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        target.accepted(),
        reached,
        "the denied probe reached the target"
    );

    let status = lab.pin.status();
    let unclassified: Vec<u64> = status["unclassified_cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["cgroup_id"].as_u64())
        .collect();
    assert!(
        unclassified.contains(&own.id),
        "status lists {} as unclassified: {status:#}",
        ours.display()
    );
    for dir in &foreign {
        let id = Cgroup::at(dir).id;
        assert!(
            !unclassified.contains(&id),
            "status lists the foreign {} as unclassified: {status:#}",
            dir.display()
        );
    }
    let parent = if driver == "systemd" {
        "/system.slice"
    } else {
        "/docker"
    };
    let parents = status["container_parents"]
        .as_array()
        .expect("status.container_parents");
    assert!(
        parents.iter().any(|p| p["path"] == parent
            && p["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s == "driver"))),
        "status lists {parent} as the driver's parent: {status:#}"
    );
    let other = if driver == "systemd" {
        "/docker"
    } else {
        "/system.slice"
    };
    assert!(
        !parents.iter().any(|p| p["path"] == other),
        "the other driver's default {other} is no parent once the driver is known: {status:#}"
    );
}
