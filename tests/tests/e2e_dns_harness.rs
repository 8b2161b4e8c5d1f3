//! End-to-end, the DNS tests' harness on its own (no agent, nothing policed): the test DNS
//! hands out 2 of a pool's 6 addresses at random per question and logs each question with its
//! transport; a test host serves DNS on its own address from inside its network namespace and
//! can go silent; the glibc probe image resolves with getaddrinfo through Docker's embedded
//! resolver and connects to the pool host's addresses.
//!
//! The lab (`egress_tests::e2e::Lab`) is network 79. Needs root, a dockerd and the test image:
//! `cargo xtask test --with-docker -- e2e_dns_harness`.

use std::collections::BTreeSet;

use egress_tests::{
    dns::Transport,
    e2e::{EMBEDDED_DNS, Lab, Net, PORT, assert_answered},
};

#[test]
fn pool_log_dns_host_and_glibc_probe_work_without_an_agent() {
    let lab = Lab::new("dns-harness", 79);
    let (_pool, ips) = lab.start_pool_host("pool", &[20, 21, 22, 23, 24, 25]);
    lab.dns.set_pool("cdn.test", &ips, 2, 1);
    let other = lab.start_target("other", 30);
    let other_ip = other.ip.unwrap();
    let other_dns = lab.start_dns_host(&other);
    other_dns.set_a("there.test", &[other_ip], 30);
    let c = lab.start_probe_host("client", &[], Net::Lab, &[]);

    let mut seen = BTreeSet::new();
    for i in 0..20 {
        let r = lab.ask(&c.name, EMBEDDED_DNS, "cdn.test", i % 2 == 1);
        assert_eq!(r.rcode.as_deref(), Some("NoError"), "{r:?}");
        assert_eq!(r.addrs.len(), 2, "2 of the pool: {r:?}");
        assert!(r.addrs.iter().all(|a| ips.contains(a)), "{r:?}");
        seen.extend(r.addrs);
    }
    println!("20 answers carried {} distinct pool addresses", seen.len());
    assert!(seen.len() > 2, "the pick is random: {seen:?}");

    // The log tells the transports apart (asked straight, not through Docker's resolver).
    let gateway = format!("{}:53", lab.gateway);
    lab.dns.reset_counts();
    lab.ask(&c.name, &gateway, "cdn.test", true);
    lab.ask(&c.name, &gateway, "cdn.test", false);
    assert_eq!(lab.dns.queries_via("cdn.test", Transport::Tcp), 1);
    assert_eq!(lab.dns.queries_via("cdn.test", Transport::Udp), 1);

    // A test host's own DNS server, on its address.
    let there = format!("{other_ip}:53");
    assert_answered(
        &lab.ask(&c.name, &there, "there.test", false),
        other_ip,
        "udp",
    );
    assert_answered(
        &lab.ask(&c.name, &there, "there.test", true),
        other_ip,
        "tcp",
    );
    assert_eq!(other_dns.queries_for("there.test"), 2);
    assert_eq!(lab.dns.queries_for("there.test"), 0);
    other_dns.set_silent(true);
    let r = lab.ask(&c.name, &there, "there.test", false);
    assert!(r.rcode.is_none() && r.error.is_some(), "silent: {r:?}");
    assert_eq!(other_dns.queries_for("there.test"), 3, "still logged");

    // getaddrinfo (glibc) and a connect, to whichever 2 of the pool each lookup got.
    let (reports, text) = lab.connect_by_name(&c.name, "cdn.test", PORT, 10);
    assert_eq!(reports.len(), 10, "{text}");
    assert!(reports.iter().all(|r| r.ok), "{text}");

    // busybox's resolver through the embedded DNS too.
    let b = lab.start_sleeper("busybox", &[], &[]);
    let (out, found) = lab.nslookup(&b.name, "there.test");
    assert!(!found, "there.test is only on the other host: {out}");
    let (out, found) = lab.nslookup(&b.name, "cdn.test");
    assert!(found, "{out}");
}
