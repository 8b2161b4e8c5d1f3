//! End-to-end, the DNS proxy on every kind of network: on a user-defined network a container
//! allowed `db` reaches the `db` container by name through Docker's embedded DNS, one not
//! allowed `db` gets NXDOMAIN for it; the same on an `internal: true` network; on the default
//! bridge with `--dns` and with `--network host` an allowed name is answered and a marker name
//! is refused without reaching the server.
//!
//! Labs (`egress_tests::e2e::Lab`): networks 85, 86 (and its internal `10.232.86.0/24`) and
//! 87. Needs root, a dockerd and the test image: `cargo xtask test --with-docker --
//! e2e_dns_networks`.

use egress_tests::e2e::{AgentOpts, EMBEDDED_DNS, Lab, Net, PORT, assert_answered, assert_stopped};

const ALLOW: &str = "egress.allow";

/// A client allowed `db` connects to it by name; one allowed something else gets NXDOMAIN.
#[track_caller]
fn db_by_name(lab: &Lab, net: Net<'_>, context: &str) {
    let allowed = lab.start_probe_host("allowed", &[(ALLOW, "db")], net, &[]);
    let other = lab.start_probe_host("other", &[(ALLOW, "other.net.test")], net, &[]);
    for c in [&allowed, &other] {
        lab.wait_registered(&c.id, &[]);
        lab.wait_dns_proxy(&c.name, EMBEDDED_DNS);
    }
    let (r, text) = lab.connect_by_name(&allowed.name, "db", PORT, 1);
    assert!(
        r.first().is_some_and(|r| r.ok),
        "{context}: `db` by name: {text}"
    );
    let r = lab.ask(&other.name, EMBEDDED_DNS, "db", false);
    assert_stopped(&r, "NXDomain", "db", &[], context);
    let (r, text) = lab.connect_by_name(&other.name, "db", PORT, 1);
    assert!(
        r.first().is_some_and(|r| !r.ok && r.peer.is_none()),
        "{context}: `db` does not resolve for the other client: {text}"
    );
}

#[test]
fn user_defined_network_container_names_are_policy() {
    let mut lab = Lab::new("dns-net-user", 85);
    lab.start_target_with("db", 10, &["--network-alias", "db"]);
    lab.start_agent(&AgentOpts::default());
    db_by_name(&lab, Net::Lab, "user-defined network");
}

#[test]
fn internal_network_container_names_are_policy() {
    let mut lab = Lab::new("dns-net-internal", 86);
    let internal = lab.create_network("internal", "10.232.86.0/24", true);
    lab.start_target_on("db", &internal, &["--network-alias", "db"]);
    lab.start_agent(&AgentOpts::default());
    db_by_name(&lab, Net::Other(&internal, &[]), "internal network");
}

#[test]
fn default_bridge_with_dns_and_host_network() {
    let mut lab = Lab::new("dns-net-bridge", 87);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    lab.dns.set_a("allowed.net.test", &[ip_a], 1);
    lab.start_agent(&AgentOpts::default());
    let gateway = format!("{}:53", lab.gateway);
    let gateways = [lab.gateway];
    // On the default bridge the resolv.conf holds the `--dns` server itself; with
    // `--network host`, the host's (never asked: the questions name the lab's server).
    for (role, net) in [
        ("bridge", Net::Other("bridge", &gateways)),
        ("host", Net::Other("host", &[])),
    ] {
        let c = lab.start_probe_host(role, &[(ALLOW, "allowed.net.test")], net, &[]);
        lab.wait_registered(&c.id, &[]);
        lab.wait_dns_proxy(&c.name, &gateway);
        for tcp in [false, true] {
            let how = format!("{role} tcp={tcp}");
            let r = lab.ask(&c.name, &gateway, "allowed.net.test", tcp);
            assert_answered(&r, ip_a, &how);
            let marker = lab.marker(&format!("{role}-{tcp}"));
            let r = lab.ask(&c.name, &gateway, &marker, tcp);
            assert_stopped(&r, "NXDomain", &marker, &[&lab.dns], &how);
        }
    }
}
