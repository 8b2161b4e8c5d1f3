//! Every denial and audit hit reaches user space through the ring buffer with the right pid,
//! cgroup, address, port and hook, and is counted per verdict.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use egress_common::event::{Hook, Verdict};
use egress_tests::{
    lab::Lab,
    net::{TcpSink, UdpSink, V6_LOOPBACK},
    probe::Probe,
    slots,
};

#[test]
fn audit_mode_allows_and_reports_what_enforce_would_deny() {
    let lab = Lab::new("audit", slots::AUDIT);
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("audited");
    lab.audit(&cg, &lab.ip(1).to_string());
    let before = lab.enforcer().stats();

    let out = lab
        .tcp(&cg, other.addr)
        .assert_ok("audit mode lets the connect through")
        .clone();
    assert!(
        other.wait_accepted(1),
        "the audited connection did not reach its listener"
    );
    let ev = lab
        .enforcer()
        .expect_event("audit event of the probe", |e| e.pid == out.pid);
    assert_eq!(ev.verdict, Verdict::Audited, "{ev:?}");
    assert_eq!(ev.addr, lab.ip(2), "{ev:?}");
    assert_eq!(ev.port, other.addr.port(), "{ev:?}");
    assert_eq!(ev.cgroup_id, cg.id, "{ev:?}");
    assert_eq!(ev.hook, Hook::Connect4, "{ev:?}");
    assert_eq!(ev.protocol, libc::IPPROTO_TCP as u8, "{ev:?}");
    assert_eq!(ev.comm, "egress-probe", "{ev:?}");

    // An allowed destination is not an audit hit.
    let ok = lab
        .tcp(&cg, allowed.addr)
        .assert_ok("allowed in audit mode")
        .clone();
    let after = lab.enforcer().stats();
    assert_eq!(
        after.audited_total(),
        before.audited_total() + 1,
        "one audit hit: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.denied_total(),
        before.denied_total(),
        "audit mode denies nothing: {after:?}"
    );
    assert_eq!(after.allowed, before.allowed + 1, "{after:?}");
    assert!(
        !lab.enforcer().events().iter().any(|e| e.pid == ok.pid),
        "a connect a rule allows produced an event"
    );
}

#[test]
fn denials_are_reported_and_counted() {
    let lab = Lab::new("denial-events", slots::DENIAL_EVENTS);
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    let udp6 = UdpSink::bind(V6_LOOPBACK);
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &lab.ip(1).to_string());
    let before = lab.enforcer().stats();

    lab.tcp(&cg, allowed.addr).assert_ok("allowed");
    let tcp = lab.tcp(&cg, other.addr).assert_denied("tcp").clone();
    let udp = lab
        .probe(&cg, Probe::udp(udp6.addr, "denied-v6"))
        .assert_denied("udp6 sendto")
        .clone();

    let ev = lab
        .enforcer()
        .expect_event("the TCP denial", |e| e.pid == tcp.pid);
    assert_eq!(ev.verdict, Verdict::Denied, "{ev:?}");
    assert_eq!(ev.reason_name(), "no_matching_rule", "{ev:?}");
    assert_eq!(ev.addr, lab.ip(2), "{ev:?}");
    assert_eq!(ev.port, other.addr.port(), "{ev:?}");
    assert_eq!(ev.cgroup_id, cg.id, "{ev:?}");
    assert_eq!(ev.hook, Hook::Connect4, "{ev:?}");
    assert_eq!(ev.protocol, libc::IPPROTO_TCP as u8, "{ev:?}");

    let ev = lab
        .enforcer()
        .expect_event("the UDP denial", |e| e.pid == udp.pid);
    assert_eq!(ev.verdict, Verdict::Denied, "{ev:?}");
    assert_eq!(ev.addr, V6_LOOPBACK, "{ev:?}");
    assert_eq!(ev.port, udp6.addr.port(), "{ev:?}");
    assert_eq!(ev.hook, Hook::Sendmsg6, "{ev:?}");
    assert_eq!(ev.protocol, libc::IPPROTO_UDP as u8, "{ev:?}");

    let after = lab.enforcer().stats();
    assert_eq!(
        after.denied_total(),
        before.denied_total() + 2,
        "two denials: {before:?} -> {after:?}"
    );
    assert_eq!(
        after
            .denied
            .get("no_matching_rule")
            .copied()
            .unwrap_or_default(),
        before
            .denied
            .get("no_matching_rule")
            .copied()
            .unwrap_or_default()
            + 2,
        "counted under their reason: {after:?}"
    );
    assert_eq!(after.allowed, before.allowed + 1, "{after:?}");
    assert_eq!(after.audited_total(), before.audited_total(), "{after:?}");
    assert_eq!(after.events_lost, 0, "{after:?}");

    // The denials are all there is: exactly two events.
    let events = lab.enforcer().events();
    assert_eq!(events.len(), 2, "{events:#?}");
}
