//! End-to-end, maps that fail closed and stay in step (issue 7, items 4 and 10), with the real
//! dockerd and `egress-agent run --docker on` (see `egress_tests::e2e::Lab`):
//!
//! 55. A running container allowed `late.test:8080`, a name that resolves (to an IPv6 address
//!     in the container's own network namespace) only after the container started: the new
//!     rule is the policy's first IPv6 rule with a port, and the flags in the container's
//!     cgroup entry must follow, or the connect is denied.
//! 56. The agent's cgroup map is full (filled from outside, as with bpftool): a labelled
//!     container's cgroup gets no entry, so the agent freezes it and kills its processes; the
//!     start fails at once instead of running unpoliced, one error line names the container,
//!     the map and its size, and `status` counts it.
//!
//! Needs root, a dockerd and the test image: `cargo xtask test --with-docker`. Run serially.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use egress_agent::enforcer::layout::PinDir;
use egress_common::{maps, policy::CgroupPolicy};
use egress_tests::{
    bpf::PinnedMap,
    e2e::{AgentOpts, Check, Lab, Outcome, PORT, TcpTarget},
};

const ALLOW: &str = "egress.allow";

/// 55. A name resolved after the start adds the container's first IPv6 port rule. Before the
///     fix the running container's cgroup entry kept "every IPv6 rule allows any port", the
///     lookup with the port was skipped, and the connect was denied.
#[test]
fn a_name_resolved_after_the_start_reaches_a_running_container_over_ipv6() {
    let mut lab = Lab::new("maps-late-v6", 55);
    lab.start_agent(&AgentOpts::default());
    let late: IpAddr = "fd00:e9:55::10".parse::<Ipv6Addr>().unwrap().into();
    let client = lab.start_sleeper(
        "client",
        &[
            (ALLOW, &format!("late.test:{PORT}")),
            // The agent's own lookup (not the container's answer) puts the address in.
            ("egress.dns", "resolve"),
        ],
        &["--sysctl", "net.ipv6.conf.all.disable_ipv6=0"],
    );
    lab.wait_policed(&client.id, &[]);
    // Started and policed: its cgroup's entry was written with the policy of now.
    let pid = lab.docker.pid(&client.id);
    let target = TcpTarget::start_in_netns_of(pid, SocketAddr::new(late, PORT), "late");
    let before = lab.exec_probes(&client.id, &[Check::tcp("before", late, PORT)]);
    assert_eq!(
        before[0].outcome(),
        Outcome::Denied,
        "not resolved yet: {:?}",
        before[0]
    );

    lab.dns.set_a("late.test", &[late], 30);
    let rule = format!("[{late}]:{PORT}");
    lab.wait_policed(&client.id, std::slice::from_ref(&rule));
    let after = lab.exec_probes(&client.id, &[Check::tcp("after", late, PORT)]);
    assert!(
        after[0].reached("late"),
        "the name resolved ({rule} is in the policy) but the running container cannot reach it: {:?}",
        after[0]
    );
    assert!(target.accepted() >= 1);
}

/// 56. No room in the cgroup map for a labelled container's cgroup: killed, not unpoliced.
///     Before the fix the tracepoint's failed insert was ignored and the container ran with no
///     policy at all.
#[test]
fn a_container_whose_cgroup_finds_the_map_full_is_killed_and_the_log_says_why() {
    let mut lab = Lab::new("maps-cgroup-full", 56);
    let target = lab.start_target("target", 10);
    let ip = target.ip.unwrap();
    // Unknown containers are left alone: only the lab's labelled one is this agent's business.
    lab.start_agent(&AgentOpts {
        unclassified_allow: true,
        ..AgentOpts::default()
    });
    let map = PinnedMap::open(&PinDir::new(&lab.pin.path).map(maps::CGROUP_POLICY));
    let filled = map.fill(
        |i| 0xe9e9_0000_0000_0000_u64 + i,
        CgroupPolicy::unclassified(),
    );
    assert!(filled > 0);

    let t0 = Instant::now();
    let (out, wall) = lab.run_rm(
        "client",
        &[(ALLOW, "10.231.56.99")],
        &format!("nc -w 3 {ip} {PORT}; echo reached-or-not"),
    );
    println!("docker run --rm ({wall:?}):\n{out}");
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "docker run did not return"
    );
    assert!(
        !out.contains("ok target") && !out.contains("reached-or-not"),
        "the container ran: {out}"
    );
    let line = lab.agent().wait_for(
        "naming the map and its size",
        Duration::from_secs(15),
        |f| {
            f["map"] == maps::CGROUP_POLICY
                && f["capacity"] == maps::CGROUP_POLICY_ENTRIES
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("no room") && m.contains("froze"))
        },
    );
    println!("agent: {line}");
    let container = line["container"].as_str().unwrap_or_default().to_owned();
    assert_eq!(container.len(), 12, "the line names the container: {line}");
    let status = lab.pin.status();
    assert!(
        status["counters"]["cgroup_mkdir_insert_failures"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{status:#}"
    );
}
