//! Policies stay with their cgroup: unpoliced cgroups are never affected, removing a policy
//! restores full access, two cgroups' policies do not leak into each other, and replacing a
//! policy takes effect at once.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use egress_tests::{
    cgroup,
    lab::Lab,
    net::{TcpSink, UdpSink, V6_LOOPBACK},
    probe::Probe,
    slots,
};

#[test]
fn unpoliced_cgroups_are_never_affected() {
    let lab = Lab::new("unpoliced", slots::UNPOLICED);
    let a = TcpSink::bind(lab.ip(1));
    let b = TcpSink::bind(lab.ip(2));
    let v6 = TcpSink::bind(V6_LOOPBACK);
    let udp = UdpSink::bind(lab.ip(2));
    let policed = lab.cgroup("policed");
    let sibling = lab.cgroup("sibling");
    // Deny everything in `policed`.
    lab.enforce(&policed, "");
    lab.tcp(&policed, b.addr)
        .assert_denied("the policed cgroup, for contrast");

    // A sibling under the same attach point, the attach cgroup itself and the test's own
    // cgroup (outside the subtree) are not policed: everything goes through.
    for cg in [&sibling, lab.parent(), &cgroup::own()] {
        let where_ = cg.path.display().to_string();
        lab.tcp(cg, a.addr).assert_ok(&format!("TCP from {where_}"));
        lab.tcp(cg, b.addr).assert_ok(&format!("TCP from {where_}"));
        lab.tcp(cg, v6.addr)
            .assert_ok(&format!("TCP ::1 from {where_}"));
        let payload = format!("from-{}", cg.id);
        lab.probe(cg, Probe::udp(udp.addr, &payload))
            .assert_ok(&format!("UDP from {where_}"));
        assert!(
            udp.wait_for(&payload),
            "datagram from {where_} did not arrive"
        );
    }
    let stats = lab.enforcer().stats();
    assert_eq!(
        stats.denied_total(),
        1,
        "only the policed cgroup's connect may be denied: {stats:?}"
    );
}

#[test]
fn removing_a_policy_restores_full_access() {
    let lab = Lab::new("remove-policy", slots::REMOVE_POLICY);
    let a = TcpSink::bind(lab.ip(1));
    let b = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &lab.ip(1).to_string());
    lab.tcp(&cg, b.addr)
        .assert_denied("before the policy is removed");

    assert!(lab.enforcer().remove_policy(&cg), "the cgroup had a policy");
    lab.tcp(&cg, b.addr)
        .assert_ok("after the policy was removed");
    lab.tcp(&cg, a.addr)
        .assert_ok("after the policy was removed");
    assert!(
        !lab.enforcer().remove_policy(&cg),
        "removing again reports that there was no policy"
    );
}

#[test]
fn policies_of_two_cgroups_do_not_leak_into_each_other() {
    let lab = Lab::new("two-cgroups", slots::TWO_CGROUPS);
    let x = TcpSink::bind(lab.ip(1));
    let y = TcpSink::bind(lab.ip(2));
    let ux = UdpSink::bind(lab.ip(1));
    let uy = UdpSink::bind(lab.ip(2));
    let a = lab.cgroup("a");
    let b = lab.cgroup("b");
    lab.enforce(&a, &lab.ip(1).to_string());
    lab.enforce(&b, &lab.ip(2).to_string());

    lab.tcp(&a, x.addr)
        .assert_ok("a -> its own allowed address");
    lab.tcp(&a, y.addr)
        .assert_denied("a -> b's allowed address");
    lab.tcp(&b, y.addr)
        .assert_ok("b -> its own allowed address");
    lab.tcp(&b, x.addr)
        .assert_denied("b -> a's allowed address");
    lab.probe(&a, Probe::udp(uy.addr, "a-to-y"))
        .assert_denied("a sendto b's address");
    lab.probe(&b, Probe::udp(ux.addr, "b-to-x"))
        .assert_denied("b sendto a's address");
    ux.assert_never_got("b-to-x");
    uy.assert_never_got("a-to-y");

    // Changing one cgroup's policy leaves the other's alone.
    lab.enforce(&a, &lab.ip(2).to_string());
    lab.tcp(&a, y.addr).assert_ok("a after its policy changed");
    lab.tcp(&b, x.addr).assert_denied("b is unchanged");
    lab.tcp(&b, y.addr).assert_ok("b is unchanged");
}

#[test]
fn replacing_a_policy_takes_effect_at_once() {
    let lab = Lab::new("replace-policy", slots::REPLACE_POLICY);
    let a = TcpSink::bind(lab.ip(1));
    let b = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");

    lab.enforce(&cg, &lab.ip(1).to_string());
    lab.tcp(&cg, a.addr).assert_ok("first policy allows .1");
    lab.tcp(&cg, b.addr).assert_denied("first policy denies .2");

    lab.enforce(&cg, &lab.ip(2).to_string());
    lab.tcp(&cg, a.addr)
        .assert_denied("second policy no longer allows .1");
    lab.tcp(&cg, b.addr).assert_ok("second policy allows .2");

    lab.enforce(&cg, &format!("{},{}", lab.ip(1), lab.ip(2)));
    lab.tcp(&cg, a.addr).assert_ok("third policy allows both");
    lab.tcp(&cg, b.addr).assert_ok("third policy allows both");

    lab.enforce(&cg, "");
    lab.tcp(&cg, a.addr)
        .assert_denied("an empty policy denies everything");
    lab.tcp(&cg, b.addr)
        .assert_denied("an empty policy denies everything");
}
