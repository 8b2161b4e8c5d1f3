//! End-to-end, the backstop from a real container: a labelled container (Docker's defaults:
//! `CAP_NET_RAW`, ping sockets for every group) gets `EPERM` for ping, raw ICMP, raw IP and
//! UDP-Lite sockets, and nothing it tried reaches its network (a capture on every interface of
//! the host, the containers' veths among them); an unlabelled container on the same network sends each, which shows the
//! capture sees them. (`AF_PACKET` needs the BPF LSM layer: `kernel_backstop`.)
//!
//! Needs root, a dockerd and the test images: `cargo xtask test --with-docker`. Run serially.

use std::net::{IpAddr, SocketAddr};

use egress_tests::{
    bypass::{Attempt, Kind, Step},
    capture::Capture,
    docker::BYPASS_PATH,
    e2e::{AgentOpts, Lab, dns::Net},
};

fn attempt(lab: &Lab, container: &str, kind: Kind, to: IpAddr, marker: &str) -> Attempt {
    let addr = SocketAddr::new(to, 9).to_string();
    let out = lab.docker.output(&[
        "exec",
        container,
        BYPASS_PATH,
        kind.name(),
        &addr,
        marker,
        "--dev",
        "eth0",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{container}: egress-bypass {}: {e}; stdout {stdout:?}, stderr {:?}",
            kind.name(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_labelled_container_can_make_no_ping_raw_or_udplite_socket_and_nothing_leaves() {
    let mut lab = Lab::new("backstop", 95);
    let target = lab.start_target("target", 10);
    let to = target.ip.expect("the target's address");
    lab.start_agent(&AgentOpts::default());
    // Every interface of the host: the containers' veths carry what they send.
    let capture = Capture::start("any");

    // Allowed: a host of the lab's network that is not the target.
    let allowed = lab.ip(20).to_string();
    let labelled = lab.start_probe_host("labelled", &[("egress.allow", &allowed)], Net::Lab, &[]);
    lab.wait_policed(&labelled.id, std::slice::from_ref(&allowed));
    let free = lab.start_probe_host("free", &[], Net::Lab, &[]);

    for (kind, what) in [
        (Kind::Ping, "a ping socket (no capability needed)"),
        (Kind::RawIcmp, "a raw ICMP socket (CAP_NET_RAW)"),
        (Kind::RawHdrincl, "raw IP with IP_HDRINCL"),
        (Kind::Udplite, "UDP-Lite"),
    ] {
        let marker = format!("e2e-backstop-{}", kind.name());
        attempt(&lab, &labelled.name, kind, to, &marker)
            .assert_refused_at(Step::Socket, &format!("labelled: {what}"));
        capture.assert_never_saw(&marker, &format!("labelled: {what}"));

        let free_marker = format!("e2e-free-{}", kind.name());
        attempt(&lab, &free.name, kind, to, &free_marker)
            .assert_sent(&format!("unlabelled: {what}"));
        capture.assert_saw(&free_marker, &format!("unlabelled: {what}"));
    }
}
