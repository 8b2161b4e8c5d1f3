//! A policed cgroup reaches its allowed destinations; anything else is denied with EPERM at
//! once, for TCP and UDP `sendto`, IPv4, IPv6 and `::ffff:a.b.c.d` through an IPv6 socket.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use std::net::{IpAddr, SocketAddr};

use egress_tests::{
    lab::Lab,
    net::{TcpSink, UdpSink, V6_LOOPBACK},
    probe::Probe,
    slots,
};

#[test]
fn tcp_v4_reaches_the_allowed_address_and_gets_eperm_at_once_elsewhere() {
    let lab = Lab::new("tcp-v4", slots::TCP_V4);
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &lab.ip(1).to_string());

    lab.tcp(&cg, allowed.addr)
        .assert_ok("connect to the allowed address");
    assert!(
        allowed.wait_accepted(1),
        "the allowed connection did not reach its listener"
    );
    lab.tcp(&cg, other.addr)
        .assert_denied("connect to another local listener");
    other.assert_accepted_stays(0, "denied connect");
}

#[test]
fn tcp_v6_loopback_is_judged_by_address_and_port() {
    let lab = Lab::new("tcp-v6", slots::TCP_V6);
    // Loopback has one IPv6 address, so the allowed and the forbidden destination differ in
    // port.
    let allowed = TcpSink::bind(V6_LOOPBACK);
    let other = TcpSink::bind(V6_LOOPBACK);
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &format!("[::1]:{}", allowed.addr.port()));

    lab.tcp(&cg, allowed.addr)
        .assert_ok("connect to the allowed [::1]:port");
    assert!(allowed.wait_accepted(1));
    lab.tcp(&cg, other.addr)
        .assert_denied("connect to another port of ::1");
    other.assert_accepted_stays(0, "denied IPv6 connect");

    // An IPv6 address rule without a port allows every port of it.
    lab.enforce(&cg, "::1");
    lab.tcp(&cg, other.addr)
        .assert_ok("connect to ::1 once ::1 is allowed on every port");
    // And a policy without ::1 denies ::1 altogether.
    lab.enforce(&cg, &lab.ip(1).to_string());
    lab.tcp(&cg, allowed.addr)
        .assert_denied("connect to ::1 when only an IPv4 address is allowed");
}

#[test]
fn v4_mapped_destination_through_an_ipv6_socket_is_judged_as_ipv4() {
    let lab = Lab::new("v4-mapped", slots::V4_MAPPED);
    let allowed = TcpSink::bind(lab.ip(1));
    let other = TcpSink::bind(lab.ip(2));
    let udp_other = UdpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");
    // An IPv4 rule, used by destinations written as ::ffff:a.b.c.d.
    lab.enforce(&cg, &lab.ip(1).to_string());

    lab.probe(&cg, Probe::tcp6(allowed.addr))
        .assert_ok("IPv6 socket to ::ffff:<allowed IPv4>");
    assert!(allowed.wait_accepted(1));
    let denied = lab
        .probe(&cg, Probe::tcp6(other.addr))
        .assert_denied("IPv6 socket to ::ffff:<other IPv4>")
        .clone();
    other.assert_accepted_stays(0, "denied v4-mapped connect");
    let ev = lab
        .enforcer()
        .expect_event("denial of the v4-mapped connect", |e| e.pid == denied.pid);
    assert_eq!(
        ev.addr,
        lab.ip(2),
        "a ::ffff:a.b.c.d destination is reported as the IPv4 address it was judged as"
    );
    assert_eq!(ev.port, other.addr.port());
    assert_eq!(ev.hook, egress_common::event::Hook::Connect6);

    let udp = lab
        .probe(&cg, Probe::udp6(udp_other.addr, "v4-mapped-denied"))
        .assert_denied("IPv6 UDP socket sendto ::ffff:<other IPv4>")
        .clone();
    udp_other.assert_never_got("v4-mapped-denied");
    let ev = lab
        .enforcer()
        .expect_event("denial of the v4-mapped sendto", |e| e.pid == udp.pid);
    assert_eq!(ev.addr, lab.ip(2));
    // The kernel hands a v4-mapped UDP send to its IPv4 path, so the sendmsg4 program judges it
    // (a v4-mapped TCP connect, above, reaches connect6 only).
    assert_eq!(ev.hook, egress_common::event::Hook::Sendmsg4);
}

fn udp_sendto_case(
    lab: &Lab,
    allowed_ip: IpAddr,
    other_ip: IpAddr,
    rule: impl Fn(SocketAddr) -> String,
) {
    let allowed = UdpSink::bind(allowed_ip);
    let other = UdpSink::bind(other_ip);
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &rule(allowed.addr));

    lab.probe(&cg, Probe::udp(allowed.addr, "to-allowed"))
        .assert_ok("sendto the allowed destination");
    assert!(
        allowed.wait_for("to-allowed"),
        "the allowed datagram did not arrive (received {:?})",
        allowed.received()
    );
    lab.probe(&cg, Probe::udp(other.addr, "to-other"))
        .assert_denied("sendto another local socket without connect");
    other.assert_never_got("to-other");
}

#[test]
fn udp_sendto_v4_denied_datagram_gets_eperm_and_never_arrives() {
    let lab = Lab::new("udp-v4", slots::UDP_V4);
    udp_sendto_case(&lab, lab.ip(1), lab.ip(2), |a| a.ip().to_string());
}

#[test]
fn udp_sendto_v6_denied_datagram_gets_eperm_and_never_arrives() {
    let lab = Lab::new("udp-v6", slots::UDP_V6);
    udp_sendto_case(&lab, V6_LOOPBACK, V6_LOOPBACK, |a| a.to_string());
}
