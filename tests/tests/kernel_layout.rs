//! Opening the enforcer on pinned state: a compatible state is reused with its policies; one of
//! another layout (a map of another shape, another layout version) is detected and replaced.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use egress_agent::{enforcer::layout::PinnedState, sys::bpf::CgroupAttachType};
use egress_common::maps;
use egress_tests::{
    bpf::{self, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH},
    cgroup::Cgroup,
    lab::Lab,
    net::TcpSink,
    slots,
};

/// After a replacement: fresh maps of the right shape, one program per hook at the attach
/// cgroup (the old links are gone), and a new policy enforces.
#[track_caller]
fn assert_fresh_and_enforcing(lab: &Lab) {
    assert_eq!(lab.pins.dir().check(), PinnedState::Compatible);
    for (hook, ids) in bpf::attached(&lab.parent().path) {
        assert_eq!(
            ids.len(),
            1,
            "{}: exactly the new program is attached, found {ids:?}",
            hook.name()
        );
    }
    let sink = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("after-replace");
    lab.enforce(&cg, &lab.ip(1).to_string());
    lab.tcp(&cg, sink.addr)
        .assert_denied("a policy set on the replaced state");
}

/// Leaves a complete, compatible pinned state with one policed cgroup (returned), with no
/// enforcer running.
fn pinned_state_with_a_policy(lab: &mut Lab) -> Cgroup {
    lab.start_enforcer();
    let cg = lab.cgroup("before");
    lab.enforce(&cg, &lab.ip(1).to_string());
    lab.stop_enforcer();
    assert_eq!(lab.pins.dir().check(), PinnedState::Compatible);
    cg
}

/// Reopens on an incompatible state: it is replaced, and the old programs keep enforcing the
/// old policy (no window) until the new enforcer releases them.
#[track_caller]
fn reopen_expecting_replacement(lab: &mut Lab, policed: &Cgroup, reason_mentions: &str) {
    let sink = TcpSink::bind(lab.ip(2));
    let report = lab.start_enforcer().clone();
    let why = report
        .replaced
        .clone()
        .unwrap_or_else(|| panic!("the incompatible state was not replaced: {report:?}"));
    assert!(
        why.contains(reason_mentions),
        "the reason {why:?} should mention {reason_mentions:?}"
    );
    assert!(!report.reused, "{report:?}");
    assert_eq!(
        report.recovered_policies, 0,
        "nothing is recovered from a replaced state: {report:?}"
    );
    lab.tcp(policed, sink.addr)
        .assert_denied("the replaced state's programs keep enforcing until they are released");
    assert!(
        lab.enforcer().release_previous() >= CgroupAttachType::ALL.len(),
        "the old links are released"
    );
    assert!(
        lab.pins.dir().retired().is_empty(),
        "the retired maps are unpinned"
    );
    assert_fresh_and_enforcing(lab);
}

#[test]
fn compatible_pinned_state_is_reused_with_its_policies() {
    let mut lab = Lab::bare("layout-reuse", slots::LAYOUT_REUSE);
    let sink = TcpSink::bind(lab.ip(2));
    let policed = pinned_state_with_a_policy(&mut lab);
    lab.tcp(&policed, sink.addr)
        .assert_denied("the pinned state enforces while no enforcer runs");
    let old_links = lab.pins.dir().link_pins().len();
    assert!(
        old_links >= CgroupAttachType::ALL.len(),
        "{old_links} link pins"
    );

    let report = lab.start_enforcer().clone();
    assert!(report.reused, "{report:?}");
    assert_eq!(report.replaced, None, "{report:?}");
    assert_eq!(report.recovered_policies, 1, "{report:?}");
    assert_eq!(
        report.released_links, old_links,
        "the links of the first run were released once the new ones were in place: {report:?}"
    );
    for (hook, ids) in bpf::attached(&lab.parent().path) {
        assert_eq!(
            ids.len(),
            1,
            "{}: one program attached, found {ids:?}",
            hook.name()
        );
    }
    lab.tcp(&policed, sink.addr)
        .assert_denied("the recovered policy enforces");
    // The recovered policy is known to the new enforcer: it can remove it.
    assert!(lab.enforcer().remove_policy(&policed));
    lab.tcp(&policed, sink.addr)
        .assert_ok("after removing the recovered policy");
}

#[test]
fn meta_map_of_another_value_size_is_replaced() {
    let mut lab = Lab::bare("layout-meta", slots::LAYOUT_META);
    let policed = pinned_state_with_a_policy(&mut lab);
    // EG_META as an older build might have made it: 16-byte values instead of u64.
    bpf::pin_foreign_map(
        &lab.pins.map(maps::META),
        maps::META,
        BPF_MAP_TYPE_ARRAY,
        4,
        16,
        maps::META_SLOTS,
    );
    assert!(matches!(
        lab.pins.dir().check(),
        PinnedState::Incompatible(_)
    ));
    reopen_expecting_replacement(&mut lab, &policed, maps::META);
}

#[test]
fn policy_map_of_another_value_size_is_replaced() {
    let mut lab = Lab::bare("layout-policy-map", slots::LAYOUT_POLICY_MAP);
    let policed = pinned_state_with_a_policy(&mut lab);
    // EG_CGRP_POLICY with a 16-byte value: a program of this build would read garbage from it.
    bpf::pin_foreign_map(
        &lab.pins.map(maps::CGROUP_POLICY),
        maps::CGROUP_POLICY,
        BPF_MAP_TYPE_HASH,
        8,
        16,
        maps::MAX_POLICED_CGROUPS,
    );
    reopen_expecting_replacement(&mut lab, &policed, maps::CGROUP_POLICY);
}

#[test]
fn another_layout_version_is_replaced() {
    let mut lab = Lab::bare("layout-version", slots::LAYOUT_VERSION);
    let policed = pinned_state_with_a_policy(&mut lab);
    // Same shapes, but the maps say they were made for another layout.
    bpf::write_array_u64(&lab.pins.map(maps::META), maps::META_LAYOUT_SLOT, 999);
    reopen_expecting_replacement(&mut lab, &policed, "layout version 999");
}
