//! End-to-end, what `status` calls policed is policed:
//!
//! 1. A labelled container that holds a way out of any cgroup policy (`--privileged`,
//!    `CAP_SYS_ADMIN`/`CAP_NET_ADMIN`/`CAP_BPF`, the Docker socket, a bpffs, a writable
//!    cgroupfs, the host's PID namespace) is still policed, the agent warns at once naming the
//!    container and the reason, and `status` shows it as "policed, not enforceable".
//! 2. With `--attach-cgroup` below the cgroup v2 root, a labelled container whose cgroup is
//!    outside it is reported (and logged) as not enforceable, never as policed; one inside it
//!    is policed and enforced.
//!
//! Needs root, the shared dockerd and the test image: `cargo xtask test --with-docker`.

use std::{fs, path::PathBuf, time::Duration};

use egress_tests::{
    cgroup::CgroupTree,
    e2e::{AgentOpts, Check, Lab, PORT, wait_until},
};
use serde_json::Value;

const ALLOW: &str = "egress.allow";

/// A field of a log line's `fields` (what `Agent::wait_for` hands its predicate).
fn field<'a>(fields: &'a Value, k: &str) -> &'a str {
    fields[k].as_str().unwrap_or_default()
}

#[test]
fn containers_that_can_escape_are_policed_but_named_not_enforceable() {
    let mut lab = Lab::new("enf-escape", 68);
    let a = lab.start_target("a", 10);
    lab.start_agent(&AgentOpts::default());
    let allow = a.ip.unwrap().to_string();
    let labels = [(ALLOW, allow.as_str())];

    let plain = lab.start_sleeper("plain", &labels, &[]);
    // `--privileged` containers cannot start on this machine (dockerd lacks CAP_SYS_RESOURCE);
    // the agent polices from `create`, so a created one is enough.
    let privileged = lab.create_only("privileged", &labels, &["--privileged"]);
    let cap = lab.start_sleeper("netadmin", &labels, &["--cap-add", "NET_ADMIN"]);
    let sock = lab.start_sleeper(
        "dockersock",
        &labels,
        &["-v", "/var/run/docker.sock:/var/run/docker.sock:ro"],
    );
    let pid = lab.start_sleeper("hostpid", &labels, &["--pid", "host"]);
    let cgroupfs = lab.start_sleeper("cgroupfs", &labels, &["-v", "/sys/fs/cgroup:/hostcg:rw"]);

    let cases = [
        (&privileged, "--privileged"),
        (&cap, "NET_ADMIN"),
        (&sock, "Docker socket"),
        (&pid, "--pid host"),
        (&cgroupfs, "cgroupfs writable"),
    ];
    for (c, reason) in cases {
        let st = wait_until(
            &format!("status to show {} as policed, not enforceable", c.name),
            Duration::from_secs(20),
            || {
                let st = lab.pin.container(&c.id)?;
                (st["state"] == "policed, not enforceable").then_some(st)
            },
        );
        assert_eq!(st["policed"], true, "{}: {st}", c.name);
        assert_eq!(st["enforceable"], false, "{}: {st}", c.name);
        let warning = lab.agent().wait_for(
            &format!("a warning naming {} and `{reason}`", c.name),
            Duration::from_secs(10),
            |v| {
                field(v, "message").starts_with("policed, not enforceable")
                    && field(v, "container") == c.name
                    && field(v, "reasons").contains(reason)
            },
        );
        println!("{}: {warning}", c.name);
    }
    let st = lab.wait_policed(&plain.id, std::slice::from_ref(&allow));
    assert_eq!(st["state"], "policed", "{st}");
    assert_eq!(st["enforceable"], true, "{st}");

    // Still policed: the capability holder reaches A only.
    let probes = lab.exec_probes(
        &cap.name,
        &[
            Check::tcp("a", a.ip.unwrap(), PORT),
            Check::tcp("gateway", lab.gateway, PORT),
        ],
    );
    assert!(probes[0].reached("a"), "{:?}", probes[0]);
    probes[1].assert_denied("NET_ADMIN container, a destination it is not allowed");
}

/// Removes what runc leaves in the cgroup v1 hierarchies for a custom `--cgroup-parent`.
struct V1Leftovers(String);

impl Drop for V1Leftovers {
    fn drop(&mut self) {
        for ctrl in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir: PathBuf = ctrl.path().join(&self.0);
            if dir.is_dir() && ctrl.file_name() != "unified" {
                let _ = fs::remove_dir(&dir);
            }
        }
    }
}

#[test]
fn a_container_outside_the_attach_cgroup_is_not_called_policed() {
    let tree = CgroupTree::create("enf-attach");
    let parent_name = tree
        .root
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let _v1 = V1Leftovers(parent_name.clone());
    let mut lab = Lab::new("enf-attach", 69);
    let a = lab.start_target("a", 10);
    lab.start_agent(&AgentOpts {
        attach_cgroup: Some(tree.root.path.clone()),
        ..AgentOpts::default()
    });
    let allow = a.ip.unwrap().to_string();
    let labels = [(ALLOW, allow.as_str())];

    let outside = lab.start_sleeper("outside", &labels, &[]);
    let inside = lab.start_sleeper(
        "inside",
        &labels,
        &["--cgroup-parent", &format!("/{parent_name}")],
    );

    let st = wait_until(
        "status to show the outside container as not enforceable",
        Duration::from_secs(20),
        || {
            let st = lab.pin.container(&outside.id)?;
            (st["state"] == "not enforceable").then_some(st)
        },
    );
    assert_eq!(st["policed"], false, "never reported as policed: {st}");
    assert_eq!(st["enforceable"], false, "{st}");
    lab.agent().wait_for(
        "an error naming the outside container",
        Duration::from_secs(10),
        |v| {
            field(v, "message").starts_with("container not enforceable")
                && field(v, "container") == outside.name
        },
    );
    let st = lab.wait_policed(&inside.id, std::slice::from_ref(&allow));
    assert_eq!(st["state"], "policed", "{st}");
    let probes = lab.exec_probes(
        &inside.name,
        &[
            Check::tcp("a", a.ip.unwrap(), PORT),
            Check::tcp("gateway", lab.gateway, PORT),
        ],
    );
    assert!(probes[0].reached("a"), "{:?}", probes[0]);
    probes[1].assert_denied("the container inside the attach cgroup");
    drop(lab);
    drop(tree);
}

/// A `--policy` cgroup outside `--attach-cgroup` would be judged by no program: the agent
/// refuses to start and says so, rather than report a policy that nothing enforces.
#[test]
fn a_policy_cgroup_outside_the_attach_cgroup_is_refused() {
    let attach = CgroupTree::create("enf-policy-attach");
    let outside = CgroupTree::create("enf-policy-outside");
    let pins = egress_tests::e2e::PinDir::new("enf-policy-outside");
    let mut child = std::process::Command::new(egress_tests::bins::agent())
        .args([
            "--log-format",
            "json",
            "run",
            "--docker",
            "off",
            "--pin-dir",
        ])
        .arg(&pins.path)
        .arg("--attach-cgroup")
        .arg(&attach.root.path)
        .arg("--policy")
        .arg(format!("{}=10.255.255.1", outside.root.path.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning the agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the agent") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent runs with a --policy cgroup outside --attach-cgroup");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "the agent ran: {err}");
    assert!(
        err.contains("outside --attach-cgroup")
            && err.contains(&outside.root.path.display().to_string()),
        "{err}"
    );
}
