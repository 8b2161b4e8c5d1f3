//! End-to-end, the DNS proxy's reason to be: a name whose server hands each asker 2 of 6
//! addresses at random with a TTL of 1 s (as CDNs do). A container allowed `cdn.test` resolves
//! and connects 50 times and succeeds 50 times, because the agent learns the addresses of the
//! container's own answers before it releases them — with glibc's resolver (the probe image)
//! and with busybox's.
//!
//! The lab (`egress_tests::e2e::Lab`) is network 80: the pool host owns `10.231.80.20-25` and
//! answers `ok cdn` on TCP 8080. Needs root, a dockerd and the test image:
//! `cargo xtask test --with-docker -- e2e_dns_cdn`.

use std::collections::BTreeSet;

use egress_tests::e2e::{AgentOpts, Check, Lab, PORT};

const ALLOW: &str = "egress.allow";
const TRIES: usize = 50;

fn cdn_lab(tag: &str, n: u8) -> (Lab, Vec<std::net::IpAddr>) {
    let mut lab = Lab::new(tag, n);
    let (_pool, ips) = lab.start_pool_host("cdn", &[20, 21, 22, 23, 24, 25]);
    lab.dns.set_pool("cdn.test", &ips, 2, 1);
    lab.start_agent(&AgentOpts::default());
    (lab, ips)
}

#[test]
fn glibc_client_connects_fifty_times_to_a_rotating_name() {
    let (lab, ips) = cdn_lab("dns-cdn-glibc", 80);
    let c = lab.dns_client("glibc", &[(ALLOW, "cdn.test")]);
    let (reports, text) = lab.connect_by_name(&c.name, "cdn.test", PORT, TRIES);
    assert_eq!(reports.len(), TRIES, "one report per try: {text}");
    let failed: Vec<_> = reports.iter().filter(|r| !r.ok).collect();
    let peers: BTreeSet<_> = reports.iter().filter_map(|r| r.peer).collect();
    println!(
        "glibc: {} of {TRIES} connected, to {} distinct pool addresses",
        TRIES - failed.len(),
        peers.len()
    );
    assert!(failed.is_empty(), "failed tries: {failed:#?}");
    assert!(
        peers.iter().all(|p| ips.contains(&p.ip())),
        "only pool addresses: {peers:?}"
    );
    assert!(peers.len() > 2, "the answers rotated: {peers:?}");
}

#[test]
fn busybox_client_connects_fifty_times_to_a_rotating_name() {
    let (lab, _ips) = cdn_lab("dns-cdn-busybox", 81);
    let c = lab.busybox_dns_client("busybox", &[(ALLOW, "cdn.test")]);
    let checks: Vec<Check> = (0..TRIES)
        .map(|i| Check::tcp(&format!("try{i}"), "cdn.test", PORT))
        .collect();
    let probes = lab.exec_probes(&c.name, &checks);
    let failed: Vec<_> = probes.iter().filter(|p| !p.reached("cdn")).collect();
    println!("busybox: {} of {TRIES} connected", TRIES - failed.len());
    assert!(failed.is_empty(), "failed tries: {failed:#?}");
}
