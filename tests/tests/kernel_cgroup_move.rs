//! Which cgroup judges a connect: the programs look the policy up by the *calling task's*
//! cgroup (`bpf_get_current_cgroup_id`), but the kernel only runs them for sockets created in
//! the subtree they are attached to. These tests pin both facts down.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use egress_common::event::Verdict;
use egress_tests::{cgroup, lab::Lab, net::TcpSink, probe::Probe, slots};

#[test]
fn socket_created_unpoliced_then_task_moved_into_a_policed_cgroup_is_denied() {
    let lab = Lab::new("move-into-policed", slots::MOVE_INTO_POLICED);
    let sink = TcpSink::bind(lab.ip(2));
    let unpoliced = lab.cgroup("unpoliced");
    let policed = lab.cgroup("policed");
    lab.enforce(&policed, &lab.ip(1).to_string());

    // Created in a sibling (same attach point, no policy), connected from the policed cgroup:
    // the policy follows the task.
    let out = lab
        .probe(&unpoliced, Probe::tcp(sink.addr).then_move_to(&policed))
        .assert_denied("socket from an unpoliced cgroup, connect after moving into a policed one")
        .clone();
    sink.assert_accepted_stays(0, "denied connect");
    let ev = lab
        .enforcer()
        .expect_event("the denial", |e| e.pid == out.pid);
    assert_eq!(ev.verdict, Verdict::Denied);
    assert_eq!(
        ev.cgroup_id, policed.id,
        "judged by the cgroup the task was in when it connected"
    );
}

#[test]
fn socket_created_policed_then_task_moved_out_is_allowed() {
    let lab = Lab::new("move-out-of-policed", slots::MOVE_OUT_OF_POLICED);
    let sink = TcpSink::bind(lab.ip(2));
    let policed = lab.cgroup("policed");
    let unpoliced = lab.cgroup("unpoliced");
    lab.enforce(&policed, &lab.ip(1).to_string());

    // Current design: the socket's origin does not matter, the task's cgroup at connect time
    // does, so leaving the policed cgroup before connecting escapes the policy. (Moving between
    // cgroups needs write access to cgroup.procs, which a container does not have.)
    let out = lab
        .probe(&policed, Probe::tcp(sink.addr).then_move_to(&unpoliced))
        .assert_ok("socket from the policed cgroup, connect after moving out")
        .clone();
    assert!(sink.wait_accepted(1));
    assert!(
        !lab.enforcer().events().iter().any(|e| e.pid == out.pid),
        "no event for an unpoliced connect"
    );
    assert_eq!(lab.enforcer().stats().denied_total(), 0);
}

#[test]
fn socket_created_outside_the_attach_cgroup_is_not_judged_even_from_a_policed_cgroup() {
    let lab = Lab::new("created-outside-attach", slots::CREATED_OUTSIDE_ATTACH);
    let sink = TcpSink::bind(lab.ip(2));
    let policed = lab.cgroup("policed");
    lab.enforce(&policed, &lab.ip(1).to_string());

    // The kernel runs cgroup sock_addr programs of the socket's cgroup. A socket created outside
    // the subtree the programs are attached to is never judged, whichever cgroup the task has
    // moved to. (The agent attaches at the cgroup v2 root by default, where this cannot happen;
    // the tests attach lower.)
    let out = lab
        .probe(&cgroup::own(), Probe::tcp(sink.addr).then_move_to(&policed))
        .assert_ok("socket from outside the attach point, connect from the policed cgroup")
        .clone();
    assert!(sink.wait_accepted(1));
    assert!(!lab.enforcer().events().iter().any(|e| e.pid == out.pid));

    // The same process shape with the socket created inside the subtree is denied.
    let unpoliced = lab.cgroup("unpoliced");
    lab.probe(&unpoliced, Probe::tcp(sink.addr).then_move_to(&policed))
        .assert_denied("socket created under the attach point");
}
