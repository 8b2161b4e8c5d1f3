//! Rules allow exactly what they name: a CIDR its range (edges included, neighbours excluded), a
//! port rule its port, for IPv4 and IPv6.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use egress_tests::{
    lab::Lab,
    net::{TcpSink, V6_LOOPBACK},
    netns::NetNs,
    probe::Probe,
    slots,
};

#[test]
fn cidr_v4_rule_allows_exactly_its_range() {
    let lab = Lab::new("cidr-v4", slots::CIDR_V4);
    let cg = lab.cgroup("policed");
    // 127.<slot>.1.0/24
    let range = format!("{}/24", lab.ip_in(1, 0));
    lab.enforce(&cg, &range);

    for (ip, inside) in [
        (lab.ip_in(1, 0), true),    // first address of the range
        (lab.ip_in(1, 7), true),    // inside
        (lab.ip_in(1, 255), true),  // last address of the range
        (lab.ip_in(0, 255), false), // just below
        (lab.ip_in(2, 0), false),   // just above
        (lab.ip_in(2, 1), false),   // the next /24
    ] {
        let sink = TcpSink::bind(ip);
        let out = lab.tcp(&cg, sink.addr);
        if inside {
            out.assert_ok(&format!("{ip} is inside {range}"));
            assert!(sink.wait_accepted(1), "{ip}: connection did not arrive");
        } else {
            out.assert_denied(&format!("{ip} is outside {range}"));
            sink.assert_accepted_stays(0, &format!("{ip} outside {range}"));
        }
    }
}

#[test]
fn port_rule_allows_exactly_its_port() {
    let lab = Lab::new("port-rule", slots::PORT_RULE);
    let cg = lab.cgroup("policed");
    // Two listeners on one address and two in a CIDR range, each with its own port.
    let host_a = TcpSink::bind(lab.ip(1));
    let host_b = TcpSink::bind(lab.ip(1));
    let net_a = TcpSink::bind(lab.ip_in(1, 1));
    let net_b = TcpSink::bind(lab.ip_in(1, 2));
    lab.enforce(
        &cg,
        &format!(
            "{},{}/24:{}",
            host_a.addr,
            lab.ip_in(1, 0),
            net_a.addr.port()
        ),
    );

    lab.tcp(&cg, host_a.addr)
        .assert_ok("the port an address rule names");
    lab.tcp(&cg, host_b.addr)
        .assert_denied("another port of the same address");
    lab.tcp(&cg, net_a.addr)
        .assert_ok("the port a CIDR rule names");
    lab.tcp(&cg, net_b.addr)
        .assert_denied("another port inside the CIDR range");
    // The CIDR rule's port on an address outside its range is still denied.
    let outside = TcpSink::bind_addr(std::net::SocketAddr::new(lab.ip_in(2, 1), 0));
    lab.tcp(&cg, outside.addr)
        .assert_denied("an address outside the CIDR range");
    host_b.assert_accepted_stays(0, "other port of the address");
    net_b.assert_accepted_stays(0, "other port inside the range");
}

/// A policy whose address rules all allow any port skips the lookup with the port; gaining or
/// losing a port rule on replacement must switch that back and forth, per family.
#[test]
fn port_rules_come_and_go_with_policy_replacement() {
    let lab = Lab::new("port-replace", slots::PORT_RULE_REPLACE);
    let cg = lab.cgroup("policed");
    let a = TcpSink::bind(lab.ip(1));
    let b = TcpSink::bind(lab.ip(1));
    let a6 = TcpSink::bind(V6_LOOPBACK);
    let b6 = TcpSink::bind(V6_LOOPBACK);

    lab.enforce(&cg, &format!("{},::1", lab.ip(1)));
    for s in [&a, &b, &a6, &b6] {
        lab.tcp(&cg, s.addr)
            .assert_ok("address rules without a port allow every port");
    }

    // IPv4 gains a port rule (the any-port rule goes), IPv6 keeps any port.
    lab.enforce(&cg, &format!("{},::1", a.addr));
    lab.tcp(&cg, a.addr).assert_ok("the IPv4 rule's port");
    lab.tcp(&cg, b.addr)
        .assert_denied("another IPv4 port once the rule names one");
    lab.tcp(&cg, b6.addr)
        .assert_ok("IPv6 still allows every port");

    // A port rule and an any-port rule for the same IPv6 address, and the reverse for IPv4.
    lab.enforce(&cg, &format!("{},[::1]:{},::1", lab.ip(1), a6.addr.port()));
    lab.tcp(&cg, b.addr)
        .assert_ok("the IPv4 rule allows every port again");
    lab.tcp(&cg, b6.addr)
        .assert_ok("the any-port IPv6 rule beside a port rule");

    lab.enforce(&cg, &format!("{},[::1]:{}", lab.ip(1), a6.addr.port()));
    lab.tcp(&cg, a6.addr).assert_ok("the IPv6 rule's port");
    lab.tcp(&cg, b6.addr)
        .assert_denied("another IPv6 port once only the port rule is left");
}

#[test]
fn cidr_v6_rule_allows_exactly_its_range() {
    // Loopback has only ::1, so the ranges move around it: ::/127 holds ::0 and ::1 (::1 is its
    // upper edge), ::2/127 starts right above ::1, and ::/64 is a wide range holding ::1.
    let lab = Lab::new("cidr-v6", slots::CIDR_V6);
    let cg = lab.cgroup("policed");
    let a = TcpSink::bind(V6_LOOPBACK);
    let b = TcpSink::bind(V6_LOOPBACK);

    lab.enforce(&cg, "::/127");
    lab.tcp(&cg, a.addr)
        .assert_ok("::1 is the last address of ::/127");
    lab.tcp(&cg, b.addr).assert_ok("::/127 allows every port");

    lab.enforce(&cg, "::2/127");
    lab.tcp(&cg, a.addr)
        .assert_denied("::1 is just below ::2/127");

    lab.enforce(&cg, "::/64");
    lab.tcp(&cg, a.addr).assert_ok("::1 is inside ::/64");

    lab.enforce(&cg, "1::/16");
    lab.tcp(&cg, a.addr).assert_denied("::1 is outside 1::/16");

    // A CIDR rule with a port: only that port.
    lab.enforce(&cg, &format!("[::/127]:{}", a.addr.port()));
    lab.tcp(&cg, a.addr)
        .assert_ok("the port of the IPv6 CIDR rule");
    lab.tcp(&cg, b.addr)
        .assert_denied("another port under an IPv6 CIDR rule with a port");
}

#[test]
fn cidr_v6_rule_allows_exactly_its_range_in_a_test_netns() {
    // Real IPv6 neighbours of a range's edges, on the loopback of a namespace of our own.
    let lab = Lab::new("cidr-v6-netns", slots::CIDR_V6_NETNS);
    let ns = NetNs::create("cidr-v6");
    let range = "fd00:e9:108::100/120"; // ::100 ..= ::1ff
    let cases: [(&str, bool); 5] = [
        ("fd00:e9:108::100", true),  // first address
        ("fd00:e9:108::1a7", true),  // inside
        ("fd00:e9:108::1ff", true),  // last address
        ("fd00:e9:108::ff", false),  // just below
        ("fd00:e9:108::200", false), // just above
    ];
    for (a, _) in cases {
        ns.add_addr(a.parse().unwrap());
    }
    let sinks: Vec<TcpSink> = ns.run(|| {
        cases
            .iter()
            .map(|(a, _)| TcpSink::bind(a.parse().unwrap()))
            .collect()
    });
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, range);

    for ((a, inside), sink) in cases.iter().zip(&sinks) {
        let out = lab.probe(&cg, Probe::tcp(sink.addr).in_netns(&ns));
        if *inside {
            out.assert_ok(&format!("{a} is inside {range}"));
            assert!(sink.wait_accepted(1), "{a}: connection did not arrive");
        } else {
            out.assert_denied(&format!("{a} is outside {range}"));
            sink.assert_accepted_stays(0, &format!("{a} outside {range}"));
        }
    }

    // The same range with a port: only that port.
    let (first, second) = (&sinks[1], &sinks[2]);
    lab.enforce(&cg, &format!("[{range}]:{}", first.addr.port()));
    lab.probe(&cg, Probe::tcp(first.addr).in_netns(&ns))
        .assert_ok("the port of the IPv6 CIDR rule");
    lab.probe(&cg, Probe::tcp(second.addr).in_netns(&ns))
        .assert_denied("another port inside the IPv6 range");
}
