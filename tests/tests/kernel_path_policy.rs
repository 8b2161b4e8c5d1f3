//! `--policy` cgroups are policed by path: a policed cgroup that is removed and made again (a
//! service restart) is policed again at once, and so is every cgroup below it — those that
//! existed when the agent started and those made later, at any depth — from the first
//! instruction of a process started in them, with or without a running agent.
//!
//! Needs `target/<profile>/egress-agent` (or `EGRESS_AGENT_BIN`). Run as root, serially.

use std::{fs, path::Path};

use egress_tests::{
    agent::{self, Agent},
    cgroup::{Cgroup, remove_tree},
    lab::Lab,
    net::TcpSink,
};

/// Makes the cgroup `dir` (its parent exists) and returns it.
#[track_caller]
fn mkdir(dir: &Path) -> Cgroup {
    fs::create_dir(dir).unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
    Cgroup::at(dir)
}

/// The policy `ip(1)` only, checked from `cg` by processes started in it.
#[track_caller]
fn assert_policed(lab: &Lab, cg: &Cgroup, allowed: &TcpSink, forbidden: &TcpSink, what: &str) {
    lab.tcp(cg, forbidden.addr)
        .assert_denied(&format!("{what} ({}): forbidden", cg.path.display()));
    lab.tcp(cg, allowed.addr)
        .assert_ok(&format!("{what} ({}): allowed", cg.path.display()));
}

#[test]
fn a_remade_policy_cgroup_and_every_cgroup_below_it_are_policed_from_their_first_instruction() {
    let lab = Lab::bare("path-policy", egress_tests::slots::PATH_POLICY_REMADE);
    let allowed = TcpSink::bind(lab.ip(1));
    let forbidden = TcpSink::bind(lab.ip(2));
    let svc = lab.cgroup("svc");
    let before = mkdir(&svc.path.join("before"));
    // Same leading name, not below `svc`: never policed.
    let sibling = lab.cgroup("svc2");
    let policy = format!("{}={}", svc.path.display(), lab.ip(1));

    let running = Agent::start(&lab.pins.path, &lab.parent().path, &[policy]);
    assert_policed(&lab, &svc, &allowed, &forbidden, "the --policy cgroup");
    assert_policed(
        &lab,
        &before,
        &allowed,
        &forbidden,
        "a child that existed when the agent started",
    );
    lab.tcp(&sibling, forbidden.addr)
        .assert_ok("a sibling whose name starts like the policed cgroup's");
    let mut reached = 1;

    // The service restarts: its cgroup goes and is made again, with a new id.
    remove_tree(&svc.path);
    let remade = mkdir(&svc.path);
    assert_ne!(remade.id, svc.id, "the re-made cgroup is a new cgroup");
    assert_policed(
        &lab,
        &remade,
        &allowed,
        &forbidden,
        "the re-made --policy cgroup",
    );
    let later = mkdir(&remade.path.join("later"));
    let deeper = mkdir(&later.path.join("deeper"));
    assert_policed(&lab, &later, &allowed, &forbidden, "a child made later");
    assert_policed(
        &lab,
        &deeper,
        &allowed,
        &forbidden,
        "a grandchild made later",
    );

    // Deep below it: paths longer than 255 bytes, and longer than the 1023 bytes the
    // tracepoint's record holds (the kernel keeps the first ones, which name the ancestor).
    let name = "n".repeat(250);
    let mut dir = remade.path.clone();
    let mut deep = Vec::new();
    for _ in 0..4 {
        dir = dir.join(&name);
        deep.push(mkdir(&dir));
    }
    let mount = egress_agent::sys::mounts::cgroup2_mount().unwrap();
    for cg in &deep {
        let len = cg.path.strip_prefix(&mount).unwrap().as_os_str().len() + 1;
        assert_policed(
            &lab,
            cg,
            &allowed,
            &forbidden,
            &format!("a cgroup {len} bytes deep below the policed one"),
        );
    }
    assert!(
        deep.last()
            .unwrap()
            .path
            .strip_prefix(&mount)
            .unwrap()
            .as_os_str()
            .len()
            > 1023
    );

    let status = agent::status_json(&lab.pins.path);
    let paths = status["policy_paths"]
        .as_array()
        .expect("status.policy_paths");
    let want = format!("/{}", svc.path.strip_prefix(&mount).unwrap().display());
    assert!(
        paths.iter().any(|p| p["path"] == want.as_str()
            && p["allow"] == serde_json::json!([lab.ip(1).to_string()])),
        "status lists the policed path {want}: {status:#}"
    );

    // Without an agent the kernel alone does it.
    running.sigkill();
    remove_tree(&svc.path);
    let svc3 = mkdir(&svc.path);
    let child = mkdir(&svc3.path.join("child"));
    assert_policed(
        &lab,
        &svc3,
        &allowed,
        &forbidden,
        "re-made while no agent runs",
    );
    assert_policed(
        &lab,
        &child,
        &allowed,
        &forbidden,
        "its child, made while no agent runs",
    );
    lab.tcp(&sibling, forbidden.addr)
        .assert_ok("the sibling, still not policed");
    reached += 1;
    forbidden.assert_accepted_stays(
        reached,
        "the forbidden listener (only the sibling reached it)",
    );
}

#[test]
fn nested_policy_paths_the_deepest_wins_and_a_missing_cgroup_is_policed_once_made() {
    let lab = Lab::bare("path-nested", egress_tests::slots::PATH_POLICY_NESTED);
    let outer_ok = TcpSink::bind(lab.ip(1));
    let inner_ok = TcpSink::bind(lab.ip(3));
    let forbidden = TcpSink::bind(lab.ip(2));
    let outer = lab.cgroup("slice");
    // The inner cgroup does not exist when the agent starts (its service is not running).
    let inner_dir = outer.path.join("inner");
    let specs = [
        format!("{}={}", inner_dir.display(), lab.ip(3)),
        format!("{}={}", outer.path.display(), lab.ip(1)),
    ];
    let running = Agent::start(&lab.pins.path, &lab.parent().path, &specs);
    let warned = running
        .log_at("WARN")
        .iter()
        .any(|w| w.to_string().contains("does not exist yet"));
    assert!(
        warned,
        "a warning says the inner cgroup is policed once made; log:\n{}",
        running.log_text()
    );

    let inner = mkdir(&inner_dir);
    let below_inner = mkdir(&inner.path.join("x"));
    let beside = mkdir(&outer.path.join("other"));
    for cg in [&inner, &below_inner] {
        lab.tcp(cg, inner_ok.addr)
            .assert_ok("the inner policy's address");
        lab.tcp(cg, outer_ok.addr)
            .assert_denied("the outer policy's address, from the inner path");
        lab.tcp(cg, forbidden.addr)
            .assert_denied("forbidden, inner");
    }
    for cg in [&outer, &beside] {
        lab.tcp(cg, outer_ok.addr)
            .assert_ok("the outer policy's address");
        lab.tcp(cg, inner_ok.addr)
            .assert_denied("the inner policy's address, from the outer path");
    }

    // A second agent on the same pins (a restart) keeps both, and its walk of the existing
    // cgroups leaves the deeper path's cgroups their own policy.
    running.sigkill();
    let second = Agent::start(&lab.pins.path, &lab.parent().path, &specs);
    lab.tcp(&below_inner, inner_ok.addr)
        .assert_ok("inner, after the restart");
    lab.tcp(&below_inner, outer_ok.addr)
        .assert_denied("outer's address from inner, after the restart");
    lab.tcp(&beside, outer_ok.addr)
        .assert_ok("outer, after the restart");
    drop(second);
    forbidden.assert_accepted_stays(0, "the forbidden listener");
}

/// The path walk of `cgroup_mkdir` (up to 1023 bytes, 64 ancestors looked up) must leave the
/// verifier room: a program over its 1,000,000-instruction budget does not load at all.
#[test]
fn the_mkdir_program_stays_well_within_the_verifier_budget() {
    let lab = Lab::new("path-verifier", egress_tests::slots::PATH_VERIFIER);
    // The newest cgroup_mkdir program is the one this lab's enforcer just loaded (the tests
    // run one at a time).
    let ours = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| p.name_as_str() == Some("cgroup_mkdir"))
        .max_by_key(|p| p.id())
        .expect("the lab's cgroup_mkdir program is loaded");
    let processed = ours
        .verified_instruction_count()
        .expect("the kernel reports verified instructions (5.16+)");
    eprintln!(
        "cgroup_mkdir (program {}): the verifier processed {processed} instructions",
        ours.id()
    );
    assert!(
        processed < 500_000,
        "cgroup_mkdir took {processed} of the verifier's 1,000,000 instructions"
    );
    drop(lab);
}
