//! Maps that fail closed and stay in step (issue 7, items 4, 10 and 11), against the real
//! kernel, with the enforcer in process:
//!
//! - a container cgroup policed through the `cgroup_mkdir` tracepoint gets its policy's new
//!   flags when the policy gains its first port rule or CIDR, IPv4 and IPv6, without the
//!   cgroup being named;
//! - a container cgroup whose entry finds `EG_CGRP_POLICY` full (at mkdir, or when the agent
//!   writes it) is frozen and its processes killed, never left unpoliced;
//! - rules that do not fit deny everything, and say which map; a container that does not fit in
//!   `EG_CONTAINERS` is denied as unclassified even with `--unclassified allow`; unpoliced
//!   containers leave `EG_CONTAINERS` to policed ones;
//! - rules a removal left behind allow nothing to the next owner of a policy id.
//!
//! Maps are filled from outside with raw `bpf(2)` writes on the pinned maps, as `bpftool map
//! update pinned ...` would. Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use std::{
    fs,
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use egress_agent::enforcer::keys::{RuleKey, encode, lpm};
use egress_common::{
    container::ContainerKey,
    event::Reason,
    maps,
    policy::{CgroupPolicy, Mode as PolicyMode},
    rule::{Ip4RuleKey, RuleValue},
};
use egress_policy::policy::{Mode, parse_ip_entry};
use egress_tests::{
    agent,
    bpf::{PinnedMap, bytes_of},
    cgroup::Cgroup,
    lab::{Lab, container_id},
    net::{TcpSink, V6_LOOPBACK},
    probe::Probe,
    slots,
    wait::holds_within,
};

/// Made-up cgroup ids for filling the cgroup map (real ones are small inode numbers).
const FAKE_CGROUP: u64 = 0xe9e9_0000_0000_0000;
/// A policy id the enforcer never hands out in a test, for rules that fill a rule map.
const FOREIGN_POLICY: u32 = 0xe9e9_0000;

fn enforce(entries: &str) -> Option<(Mode, &str)> {
    Some((Mode::Enforce, entries))
}

fn frozen(cg: &Cgroup) -> bool {
    fs::read_to_string(cg.path.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

/// Fills the lab's cgroup map with entries of made-up cgroups; returns how many went in.
fn fill_cgroup_map(lab: &Lab) -> (PinnedMap, u64) {
    let map = PinnedMap::open(&lab.pins.map(maps::CGROUP_POLICY));
    let n = map.fill(|i| FAKE_CGROUP + i, CgroupPolicy::unclassified());
    assert!(
        n >= u64::from(maps::CGROUP_POLICY_ENTRIES) - 64,
        "filled only {n} entries"
    );
    (map, n)
}

/// Runs `probe` in `cg` (which the agent froze) and checks that it never ran: it is killed
/// (SIGKILL) within a few seconds and `sink` got nothing.
#[track_caller]
fn assert_killed_before_it_ran(cg: &Cgroup, probe: Probe, sink: &TcpSink, what: &str) {
    let t0 = Instant::now();
    // Joins the frozen cgroup before exec, so spawn() returns only once it is killed.
    let mut child = match probe.spawn_in(cg) {
        Ok(c) => c,
        Err(e) => panic!("{what}: spawning the probe in {}: {e}", cg.path.display()),
    };
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the probe") {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the probe in the failed cgroup was not killed within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{what}: the probe should have been killed before it ran, it exited with {status}"
    );
    sink.assert_accepted_stays(0, what);
}

/// The first port rule and the first CIDR of a policy reach the cgroup the tracepoint policed
/// (v4). Before the fix only the container's entry got the new flags: the cgroup's entry kept
/// "every IPv4 rule allows any port" (the port lookup was skipped) and "no IPv4 CIDR" (the trie
/// was not consulted), so both new destinations were denied.
#[test]
fn a_container_cgroup_gets_the_flags_of_its_policys_first_v4_port_rule_and_cidr() {
    let lab = Lab::new("maps-flags-v4", slots::MAPS_FLAGS_V4);
    let e = lab.enforcer();
    let plain = TcpSink::bind(lab.ip(1));
    let port = TcpSink::bind(lab.ip(2));
    let in_range = TcpSink::bind(lab.ip_in(1, 5));
    let id = container_id(lab.slot, 1);

    e.set_container(&id, enforce(&lab.ip(1).to_string()), &[])
        .unwrap();
    // runc makes the container's cgroup: the tracepoint gives it the container's policy.
    let cg = lab.cgroup(id.as_str());
    lab.tcp(&cg, plain.addr)
        .assert_ok("the container's address rule, through the tracepoint");
    lab.tcp(&cg, port.addr).assert_denied("not allowed yet");

    // A domain resolves: the policy gains its first IPv4 rule with a port. The cgroup is not
    // named (as at a domain update).
    let with_port = format!("{},{}", lab.ip(1), port.addr);
    e.set_container(&id, enforce(&with_port), &[]).unwrap();
    lab.tcp(&cg, port.addr)
        .assert_ok("the first IPv4 port rule reaches the cgroup the tracepoint policed");
    lab.tcp(&cg, plain.addr)
        .assert_ok("the any-port rule still");

    // And its first IPv4 CIDR.
    let with_cidr = format!("{with_port},{}/24", lab.ip_in(1, 0));
    e.set_container(&id, enforce(&with_cidr), &[]).unwrap();
    lab.tcp(&cg, in_range.addr)
        .assert_ok("the first IPv4 CIDR reaches the cgroup the tracepoint policed");

    // Back to the first policy: both go again.
    e.set_container(&id, enforce(&lab.ip(1).to_string()), &[])
        .unwrap();
    lab.tcp(&cg, port.addr)
        .assert_denied("the port rule is gone");
    lab.tcp(&cg, in_range.addr)
        .assert_denied("the CIDR is gone");
}

/// The same for IPv6 (on ::1, the loopback's only IPv6 address): a port rule, then a CIDR.
#[test]
fn a_container_cgroup_gets_the_flags_of_its_policys_first_v6_port_rule_and_cidr() {
    let lab = Lab::new("maps-flags-v6", slots::MAPS_FLAGS_V6);
    let e = lab.enforcer();
    let v4 = TcpSink::bind(lab.ip(1));
    let a6 = TcpSink::bind(V6_LOOPBACK);
    let b6 = TcpSink::bind(V6_LOOPBACK);
    let id = container_id(lab.slot, 1);

    e.set_container(&id, enforce(&lab.ip(1).to_string()), &[])
        .unwrap();
    let cg = lab.cgroup(id.as_str());
    lab.tcp(&cg, v4.addr).assert_ok("the IPv4 rule");
    lab.tcp(&cg, a6.addr).assert_denied("no IPv6 rule yet");

    let with_port = format!("{},[::1]:{}", lab.ip(1), a6.addr.port());
    e.set_container(&id, enforce(&with_port), &[]).unwrap();
    lab.tcp(&cg, a6.addr)
        .assert_ok("the first IPv6 port rule reaches the cgroup the tracepoint policed");
    lab.tcp(&cg, b6.addr).assert_denied("another port of ::1");

    let with_cidr = format!("{},::/127", lab.ip(1));
    e.set_container(&id, enforce(&with_cidr), &[]).unwrap();
    lab.tcp(&cg, b6.addr)
        .assert_ok("the first IPv6 CIDR reaches the cgroup the tracepoint policed");
}

/// The tracepoint finds the cgroup map full when runc makes a registered container's cgroup.
/// It cannot deny anything itself: it counts the failure and tells the agent, which freezes the
/// cgroup and kills what is (or comes) in it. Before the fix the failed insert was ignored and
/// the cgroup ran unpoliced.
#[test]
fn a_container_cgroup_that_finds_the_cgroup_map_full_is_frozen_and_killed() {
    let lab = Lab::new("maps-cgroup-full", slots::MAPS_CGROUP_FULL);
    let e = lab.enforcer();
    let forbidden = TcpSink::bind(lab.ip(2));
    let id = container_id(lab.slot, 1);
    e.set_container(&id, enforce(&lab.ip(1).to_string()), &[])
        .unwrap();
    fill_cgroup_map(&lab);

    let cg = lab.cgroup(id.as_str());
    assert!(
        holds_within(Duration::from_secs(5), || frozen(&cg)),
        "the agent did not freeze {} (no room for its entry)",
        cg.path.display()
    );
    assert_killed_before_it_ran(
        &cg,
        Probe::tcp(forbidden.addr),
        &forbidden,
        "a process that joins the failed cgroup",
    );
    let s = e.stats();
    assert_eq!(s.cgroup_mkdir_insert_failures, 1, "{s:?}");

    let status = agent::status_json(&lab.pins.path);
    assert_eq!(
        status["counters"]["cgroup_mkdir_insert_failures"], 1,
        "{status:#}"
    );
    let ours = status["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no container {id} in {status:#}"));
    assert_eq!(ours["killed"], true, "{ours:#}");
    let fill = status["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == maps::CGROUP_POLICY)
        .unwrap_or_else(|| panic!("no {} in {status:#}", maps::CGROUP_POLICY));
    assert_eq!(fill["capacity"], maps::CGROUP_POLICY_ENTRIES, "{fill:#}");
    assert_eq!(fill["entries"], maps::CGROUP_POLICY_ENTRIES, "{fill:#}");
}

/// The agent itself cannot write a container cgroup's entry (the cgroup map is full): the
/// cgroup is frozen and the process already running in it killed. Before the fix the error was
/// returned and the cgroup went on unpoliced.
#[test]
fn a_container_cgroup_the_agent_cannot_write_is_frozen_and_its_processes_killed() {
    let lab = Lab::new("maps-agent-cgroup-full", slots::MAPS_AGENT_CGROUP_FULL);
    let e = lab.enforcer();
    let forbidden = TcpSink::bind(lab.ip(2));
    let id = container_id(lab.slot, 1);
    // The container's own cgroup (unclassified so far: the agent did not know it) and one it
    // made below it, which no entry covers.
    let own = lab.cgroup(id.as_str());
    let sub = Cgroup::at(&{
        let p = own.path.join("sub");
        fs::create_dir(&p).unwrap();
        p
    });
    let stop = std::env::temp_dir().join(format!("egress-test-maps-stop-{}", std::process::id()));
    let _ = fs::remove_file(&stop);
    let looping = Probe::tcp(forbidden.addr).loop_until(&stop);
    let running = looping.start_in(&sub);
    assert!(
        forbidden.wait_accepted(1),
        "the probe in the unpoliced sub-cgroup connects"
    );
    fill_cgroup_map(&lab);

    let err = e
        .set_container(&id, enforce(&lab.ip(1).to_string()), &[&own, &sub])
        .expect_err("the sub-cgroup's entry cannot fit");
    for part in [
        maps::CGROUP_POLICY,
        &format!("({} entries)", maps::CGROUP_POLICY_ENTRIES),
        &format!("container {}", id.short()),
        "froze",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
    assert!(frozen(&sub), "{} is frozen", sub.path.display());
    let child_gone = holds_within(Duration::from_secs(5), || sub.procs().is_empty());
    assert!(child_gone, "the probe in {} was killed", sub.path.display());
    drop(running);
    let _ = fs::remove_file(&stop);
    // Connections made before the kill may still wait in the listener's backlog.
    std::thread::sleep(Duration::from_millis(200));
    let seen = forbidden.accepted();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(forbidden.accepted(), seen, "no connection after the kill");
    let later = TcpSink::bind(lab.ip(3));
    assert_killed_before_it_ran(
        &sub,
        Probe::tcp(later.addr),
        &later,
        "a new process in the failed cgroup",
    );
    assert!(
        e.stats().insert_failures[maps::CGROUP_POLICY] >= 1,
        "counted"
    );
}

/// Rules that do not fit (the rule map was filled from outside): the policed cgroup, then a
/// container, is denied everything, even what its policy allows, with its own reason; the error
/// names the map and its size; the failure is counted and `status` shows it. Before the fix the
/// cgroup (and the container with `--unclassified allow`) was left unpoliced.
#[test]
fn rules_that_do_not_fit_deny_everything_and_say_which_map() {
    let lab = Lab::new("maps-rules-full", slots::MAPS_RULES_FULL);
    let e = lab.enforcer();
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    let rules = PinnedMap::open(&lab.pins.map(maps::ALLOW_V4));
    let filler = |i: u64| Ip4RuleKey::new(FOREIGN_POLICY, (i as u32).to_be_bytes(), 0);
    let n = rules.fill(filler, RuleValue { tag: 0 });
    assert_eq!(n, u64::from(maps::MAX_ADDR_RULES));

    let cg = lab.cgroup("policed");
    let err = e
        .try_set_policy(&cg, Mode::Enforce, &lab.ip(1).to_string())
        .expect_err("the rule cannot fit");
    for part in [
        maps::ALLOW_V4,
        &format!("({} entries)", maps::MAX_ADDR_RULES),
        &format!("rule {}", lab.ip(1)),
        &format!("cgroup {}", cg.id),
        "denied all egress",
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
    lab.tcp(&cg, allowed.addr)
        .assert_denied("deny-all: not even what the policy allows");
    lab.tcp(&cg, other.addr).assert_denied("deny-all");
    let ev = e.expect_event("a policy_not_written denial", |ev| ev.cgroup_id == cg.id);
    assert_eq!(ev.reason, Reason::PolicyNotWritten, "{ev:?}");
    assert_eq!(e.stats().insert_failures[maps::ALLOW_V4], 1);
    let status = agent::status_json(&lab.pins.path);
    assert_eq!(
        status["counters"]["insert_failures"][maps::ALLOW_V4],
        1,
        "{status:#}"
    );
    let ours = status["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["cgroup_id"] == cg.id)
        .unwrap_or_else(|| panic!("no policy of cgroup {} in {status:#}", cg.id));
    assert_eq!(ours["denied_all"], true, "{ours:#}");

    // Room for one rule: the next write puts the policy in force.
    rules.delete(bytes_of(&filler(0))).unwrap();
    e.try_set_policy(&cg, Mode::Enforce, &lab.ip(1).to_string())
        .unwrap();
    lab.tcp(&cg, allowed.addr)
        .assert_ok("the policy fits now and is in force");
    lab.tcp(&cg, other.addr).assert_denied("its policy");

    // A container, with `--unclassified allow`: not registering it would leave it unpoliced.
    // (The map is full again: the cgroup's rule took the slot.)
    e.set_unclassified_deny(false);
    let id = container_id(lab.slot, 1);
    let err = e
        .set_container(&id, enforce(&lab.ip(2).to_string()), &[])
        .expect_err("the container's rule cannot fit");
    assert!(
        err.contains(maps::ALLOW_V4) && err.contains(&format!("container {}", id.short())),
        "{err}"
    );
    let ccg = lab.cgroup(id.as_str());
    lab.tcp(&ccg, other.addr)
        .assert_denied("the container is denied everything, even what it is allowed");
    let ev = e.expect_event("the container's denial", |ev| ev.cgroup_id == ccg.id);
    assert_eq!(ev.reason, Reason::PolicyNotWritten, "{ev:?}");
}

/// `EG_CONTAINERS` is full: a policed container cannot be registered for the tracepoint. With
/// `--unclassified allow` its cgroup would run unpoliced; instead, until it fits, unknown
/// container cgroups are denied, and its running cgroups get their entries from the agent.
#[test]
fn a_container_that_does_not_fit_in_the_container_map_is_denied_not_unpoliced() {
    let lab = Lab::new("maps-containers-full", slots::MAPS_CONTAINERS_FULL);
    let e = lab.enforcer();
    e.set_unclassified_deny(false);
    // The lab's parent stands for this dockerd's cgroup parent (the unclassified default
    // applies only below one).
    e.add_container_parent(&lab.parent().path);
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    let map = PinnedMap::open(&lab.pins.map(maps::CONTAINERS));
    let fake = |i: u64| {
        let mut id = [b'f'; 64];
        id[..16].copy_from_slice(format!("{i:016x}").as_bytes());
        ContainerKey { id }
    };
    let n = map.fill(
        fake,
        CgroupPolicy::new(FOREIGN_POLICY, PolicyMode::Enforce, 0),
    );
    assert_eq!(n, u64::from(maps::MAX_CONTAINERS));

    let id = container_id(lab.slot, 1);
    let err = e
        .set_container(&id, enforce(&lab.ip(1).to_string()), &[])
        .expect_err("no room for the container's entry");
    for part in [
        maps::CONTAINERS,
        &format!("({} entries)", maps::MAX_CONTAINERS),
        &format!("container {}", id.short()),
    ] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
    let cg = lab.cgroup(id.as_str());
    lab.tcp(&cg, allowed.addr)
        .assert_denied("unregistered: denied as unclassified despite --unclassified allow");
    let ev = e.expect_event("the unclassified denial", |ev| ev.cgroup_id == cg.id);
    assert_eq!(ev.reason, Reason::Unclassified, "{ev:?}");

    // Docker's `start`: the agent writes the running container's cgroups itself.
    let _ = e.set_container(&id, enforce(&lab.ip(1).to_string()), &[&cg]);
    lab.tcp(&cg, allowed.addr)
        .assert_ok("its own policy, written by the agent");
    lab.tcp(&cg, other.addr).assert_denied("its own policy");

    // Room again: the retry registers it, and unknown containers are allowed again.
    map.delete(bytes_of(&fake(0))).unwrap();
    let mut n = 2;
    let back = holds_within(Duration::from_secs(10), || {
        // A new unknown container cgroup each time: the default applies at mkdir.
        n += 1;
        let probe_cg = lab.cgroup(container_id(lab.slot, n).as_str());
        let ok = Probe::tcp(other.addr).run_in(&probe_cg).ok;
        std::thread::sleep(Duration::from_millis(100));
        ok
    });
    assert!(
        back,
        "once the retry registered the container, --unclassified allow is back in force"
    );
}

/// Unpoliced containers have a map of their own: as many of them as `EG_CONTAINERS` holds do
/// not keep a policed container out. Before the fix they filled `EG_CONTAINERS` and the policed
/// container could not be registered.
#[test]
fn unpoliced_containers_leave_the_container_map_to_policed_ones() {
    let lab = Lab::new("maps-unpoliced-room", slots::MAPS_UNPOLICED_ROOM);
    let e = lab.enforcer();
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    for n in 0..maps::MAX_CONTAINERS {
        e.set_container(&container_id(lab.slot, 100 + n), None, &[])
            .unwrap_or_else(|err| panic!("unpoliced container {n}: {err}"));
    }
    let err = e
        .set_container(&container_id(lab.slot, 99), None, &[])
        .expect_err("EG_UNPOLICED is full now");
    assert!(
        err.contains(maps::UNPOLICED)
            && err.contains(&format!("({} entries)", maps::MAX_UNPOLICED)),
        "{err}"
    );

    let id = container_id(lab.slot, 1);
    e.set_container(&id, enforce(&lab.ip(1).to_string()), &[])
        .expect("a policed container still finds room");
    let cg = lab.cgroup(id.as_str());
    lab.tcp(&cg, allowed.addr).assert_ok("its policy");
    lab.tcp(&cg, other.addr).assert_denied("its policy");
    // An unpoliced one keeps its cgroup unpoliced.
    let free = lab.cgroup(container_id(lab.slot, 100).as_str());
    lab.tcp(&free, other.addr)
        .assert_ok("a known unpoliced container");
}

/// A policy is removed and a failed delete leaves rules of its id behind (written here
/// directly, exact and CIDR): the next cgroup and the next container that get a policy must
/// not be allowed anything by them. Before the fix the next owner got the same (lowest free)
/// id and the leftovers allowed their destinations.
#[test]
fn rules_left_behind_by_a_removal_allow_nothing_to_the_next_owner() {
    let lab = Lab::new("maps-leftovers", slots::MAPS_LEFTOVERS);
    let e = lab.enforcer();
    let allowed = TcpSink::bind(lab.ip(1));
    let leaked = TcpSink::bind(lab.ip(2));
    let leaked_range = TcpSink::bind(lab.ip_in(3, 7));
    let own_range = format!("{}/24", lab.ip_in(9, 0));
    let entries = format!("{},{own_range}", lab.ip(1));
    let a4 = PinnedMap::open(&lab.pins.map(maps::ALLOW_V4));
    let c4 = PinnedMap::open(&lab.pins.map(maps::CIDR_V4));
    let leave_behind = |policy_id: u32| {
        for entry in [lab.ip(2).to_string(), format!("{}/24", lab.ip_in(3, 0))] {
            let rule = parse_ip_entry(&entry).unwrap().unwrap();
            let v = RuleValue { tag: 0 };
            match encode(policy_id, &rule) {
                RuleKey::V4(k) => a4.update(bytes_of(&k), bytes_of(&v), 0).unwrap(),
                RuleKey::Cidr4(l, d) => c4.update(bytes_of(&lpm(l, d)), bytes_of(&v), 0).unwrap(),
                other => panic!("{other:?}"),
            }
        }
    };
    let check = |cg: &Cgroup, who: &str| {
        lab.tcp(cg, allowed.addr)
            .assert_ok(&format!("{who}: its own rule"));
        lab.tcp(cg, leaked.addr)
            .assert_denied(&format!("{who}: an exact rule the last owner left behind"));
        lab.tcp(cg, leaked_range.addr)
            .assert_denied(&format!("{who}: a CIDR rule the last owner left behind"));
    };

    // A cgroup's policy.
    let a = lab.cgroup("a");
    lab.enforce(&a, &entries);
    let id_a = e
        .policies()
        .into_iter()
        .find(|(cg, _)| *cg == a.id)
        .map(|(_, p)| p.policy_id)
        .expect("a's policy");
    assert!(e.remove_policy(&a));
    leave_behind(id_a);
    let b = lab.cgroup("b");
    lab.enforce(&b, &entries);
    check(&b, "the next cgroup");

    // A container's.
    let c1 = container_id(lab.slot, 1);
    e.set_container(&c1, enforce(&entries), &[]).unwrap();
    let id_c1 = e
        .containers()
        .into_iter()
        .find(|(c, _)| *c == c1)
        .and_then(|(_, p)| p)
        .map(|p| p.policy_id)
        .expect("c1's policy");
    assert!(e.remove_container(&c1));
    leave_behind(id_c1);
    let c2 = container_id(lab.slot, 2);
    e.set_container(&c2, enforce(&entries), &[]).unwrap();
    let cg2 = lab.cgroup(c2.as_str());
    check(&cg2, "the next container");
}
