//! End-to-end, what happens when a learned address expires (its answer's TTL plus
//! `--dns-grace`): connections and connected UDP sockets opened while it was learned keep
//! working — the kernel judges a TCP connection at connect and a connected UDP socket at
//! connect, not per packet — while a new connect and an explicit `sendto` to it are denied.
//!
//! The lab (`egress_tests::e2e::Lab`) is network 88; the target echoes on TCP 8082 and has a
//! UDP sink on 9000. Needs root, a dockerd and the test image: `cargo xtask test
//! --with-docker -- e2e_dns_expiry`.

use std::time::Duration;

use egress_tests::{
    dns_client::Report,
    e2e::{AgentOpts, Lab},
    wait::holds_within,
};

const ALLOW: &str = "egress.allow";

fn step<'a>(reports: &'a [Report], op: &str, text: &str) -> &'a Report {
    reports
        .iter()
        .find(|r| r.op == format!("expiry.{op}"))
        .unwrap_or_else(|| panic!("no step {op}: {text}"))
}

#[test]
fn open_connections_outlive_an_expired_address_new_ones_do_not() {
    let mut lab = Lab::new("dns-expiry", 88);
    let t = lab.start_target("t", 10);
    let sink = lab.udp_sink(&t);
    let ip = t.ip.unwrap();
    lab.dns.set_a("short.expiry.test", &[ip], 1);
    lab.start_agent(&AgentOpts {
        extra: vec!["--dns-grace".into(), "1s".into()],
        ..AgentOpts::default()
    });
    let c = lab.dns_client("client", &[(ALLOW, "short.expiry.test")]);
    // TTL 1 s + grace 1 s: gone well within the 6 s wait.
    let (reports, text) = lab.probe(
        &c.name,
        &["dns-expiry", "short.expiry.test", "--wait-ms", "6000"],
    );
    println!("{text}");
    for op in ["resolve", "tcp_open", "udp_open"] {
        assert!(step(&reports, op, &text).ok, "while learned, {op}: {text}");
    }
    assert!(
        step(&reports, "tcp_old", &text).ok,
        "the open TCP connection keeps working: {text}"
    );
    assert!(
        step(&reports, "udp_old", &text).ok,
        "the connected UDP socket keeps sending: {text}"
    );
    assert!(
        step(&reports, "tcp_new", &text).denied(),
        "a new connect is denied: {text}"
    );
    assert!(
        step(&reports, "udp_sendto", &text).denied(),
        "an explicit sendto is denied: {text}"
    );
    let s = lab.sink(sink);
    assert!(
        s.received("expiry-udp-connected-before"),
        "sink got the first datagram"
    );
    assert!(
        holds_within(Duration::from_secs(2), || s
            .received("expiry-udp-connected-after")),
        "the connected socket's datagram after expiry arrived"
    );
    assert!(
        !s.received("expiry-udp-sendto-after"),
        "the denied sendto never arrived"
    );
}
