//! The backstop: what the connect and sendmsg hooks never see. A policed cgroup gets `EPERM`
//! for raw, ping, UDP-Lite, SCTP and `AF_PACKET` sockets and for source routes; a packet of a
//! socket made before its cgroup was policed leaves only to an allowed destination. Judged by
//! what reaches `lo` (an `AF_PACKET` capture outside the cgroup), not only by the errno.
//!
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use std::{
    net::{IpAddr, SocketAddr},
    process::Stdio,
    time::Duration,
};

use egress_common::event::{Hook, Reason, Verdict};
use egress_tests::{
    bins,
    bypass::{Attempt, Kind, Step},
    capture::Capture,
    cgroup::Cgroup,
    lab::Lab,
    net::V6_LOOPBACK,
    slots,
};

fn run(
    cg: &Cgroup,
    kind: Kind,
    addr: SocketAddr,
    marker: &str,
    via: Option<SocketAddr>,
) -> Attempt {
    let mut cmd = cg.command(bins::bypass());
    cmd.arg(kind.name()).arg(addr.to_string()).arg(marker);
    if let Some(via) = via {
        cmd.arg("--via").arg(via.to_string());
    }
    parse(kind, cmd.output().expect("egress-bypass runs"))
}

fn parse(kind: Kind, out: std::process::Output) -> Attempt {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "egress-bypass {}: {e}; stdout {stdout:?}, stderr {:?}",
            kind.name(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[test]
fn a_policed_cgroup_gets_eperm_for_every_socket_no_hook_judges_and_nothing_reaches_the_wire() {
    let lab = Lab::new("backstop", slots::BACKSTOP);
    let cg = lab.cgroup("policed");
    // The forbidden destination is ip(2); ip(1) is the only one allowed.
    lab.enforce(&cg, &lab.ip(1).to_string());
    let capture = Capture::start("lo");
    let forbidden = at(lab.ip(2), 9);
    let cases = [
        (Kind::RawIcmp, forbidden, "raw ICMP"),
        (Kind::RawIcmp, at(V6_LOOPBACK, 0), "raw ICMPv6"),
        (Kind::RawHdrincl, forbidden, "raw IP with IP_HDRINCL"),
        (Kind::Udplite, forbidden, "UDP-Lite"),
        (Kind::Udplite, at(V6_LOOPBACK, 9), "UDP-Lite over IPv6"),
    ];
    for (kind, addr, what) in cases {
        let marker = format!("bypass-{}-{}", kind.name(), addr.ip());
        let attempt = run(&cg, kind, addr, &marker, None);
        attempt.assert_refused_at(Step::Socket, what);
        capture.assert_never_saw(&marker, what);
        let ev = lab.enforcer().expect_event(what, |e| e.pid == attempt.pid);
        assert_eq!(
            (ev.verdict, ev.reason, ev.hook),
            (Verdict::Denied, Reason::SocketRefused, Hook::SockCreate),
            "{what}: {ev:?}"
        );
    }
    // This kernel has no SCTP (machine.md): refused either way, never sent.
    run(&cg, Kind::Sctp, forbidden, "bypass-sctp", None).assert_not_sent("SCTP");
    // Ping sockets: the host's ping_group_range keeps root out already; the Docker tests, whose
    // containers may make them, check the backstop refuses them.
    run(&cg, Kind::Ping, forbidden, "bypass-ping", None).assert_not_sent("a ping socket");
    capture.assert_never_saw("bypass-", "any attempt");
}

/// `AF_PACKET` needs the BPF LSM: where the kernel runs it, a policed cgroup's packet socket is
/// refused; where it does not (this host's kernel lists `bpf` but refuses tracing programs),
/// the agent says so at start and the frame does leave: the hole `status` and the README name.
#[test]
fn af_packet_is_refused_exactly_where_the_agent_says_the_bpf_lsm_layer_is_attached() {
    let lab = Lab::new("backstop-packet", slots::BACKSTOP_PACKET);
    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &lab.ip(1).to_string());
    let capture = Capture::start("lo");
    let attempt = run(&cg, Kind::Packet, at(lab.ip(2), 9), "bypass-packet", None);
    // `status` (read from the pins, as an operator would) says the same as the agent's start.
    let backstop = lab.pins.status()["backstop"].clone();
    let missing = lab.enforcer().report.lsm_missing.is_some();
    assert_eq!(
        backstop["lsm_socket_create"], !missing,
        "status: {backstop}"
    );
    for layer in ["sock_create", "setsockopt", "egress"] {
        assert_eq!(
            backstop[layer], true,
            "status: {layer} attached: {backstop}"
        );
    }
    let says_packet = backstop["missing"].as_array().is_some_and(|m| {
        m.iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("AF_PACKET")))
    });
    assert_eq!(
        says_packet, missing,
        "status names AF_PACKET as possible: {backstop}"
    );
    match &lab.enforcer().report.lsm_missing {
        None => {
            attempt.assert_refused_at(Step::Socket, "an AF_PACKET socket");
            capture.assert_never_saw("bypass-packet", "the AF_PACKET frame");
            let ev = lab
                .enforcer()
                .expect_event("AF_PACKET", |e| e.pid == attempt.pid);
            assert_eq!(
                (ev.reason, ev.hook),
                (Reason::SocketRefused, Hook::SocketLsm)
            );
        }
        Some(why) => {
            assert!(
                why.contains("BPF LSM"),
                "the reason names the missing layer: {why}"
            );
            attempt.assert_sent("an AF_PACKET frame without the BPF LSM layer");
            capture.assert_saw("bypass-packet", "the AF_PACKET frame without the layer");
        }
    }
}

#[test]
fn source_routes_are_refused_on_the_socket_and_dropped_from_ancillary_data() {
    let lab = Lab::new("backstop-route", slots::BACKSTOP_ROUTE);
    let allowed = at(lab.ip(1), 9);
    let hop = lab.ip(2);
    let capture = Capture::start("lo");

    // The attack is real: unpoliced, a source route through ip(2) to ip(1) leaves for ip(2).
    let free = lab.cgroup("free");
    run(
        &free,
        Kind::CmsgOptions,
        at(hop, 0),
        "route-free",
        Some(allowed),
    )
    .assert_sent("an unpoliced source-routed send");
    capture.assert_saw("route-free", "the unpoliced source-routed packet");

    let cg = lab.cgroup("policed");
    lab.enforce(&cg, &lab.ip(1).to_string());
    let a = run(
        &cg,
        Kind::IpOptions,
        at(hop, 0),
        "route-sockopt",
        Some(allowed),
    );
    a.assert_refused_at(Step::Setsockopt, "IP_OPTIONS with a loose source route");
    let ev = lab
        .enforcer()
        .expect_event("IP_OPTIONS", |e| e.pid == a.pid);
    assert_eq!(
        (ev.reason, ev.hook),
        (Reason::SourceRoute, Hook::Setsockopt)
    );

    let a = run(
        &cg,
        Kind::CmsgOptions,
        at(hop, 0),
        "route-cmsg",
        Some(allowed),
    );
    // The sendmsg hook judged ip(1) (allowed); the packet, bound for ip(2), is dropped at
    // egress and the send fails.
    a.assert_refused_at(Step::Send, "a source route in the ancillary data");
    let ev = lab
        .enforcer()
        .expect_event("the source-routed packet", |e| {
            e.reason == Reason::SourceRoute && e.hook == Hook::Egress
        });
    assert_eq!(ev.addr, hop, "the drop names where the packet was going");

    let a = run(
        &cg,
        Kind::Rthdr6,
        at(V6_LOOPBACK, 0),
        "route-rthdr",
        Some(at(V6_LOOPBACK, 9)),
    );
    a.assert_refused_at(Step::Setsockopt, "IPV6_RTHDR");
    for m in ["route-sockopt", "route-cmsg", "route-rthdr"] {
        capture.assert_never_saw(m, m);
    }
}

#[test]
fn a_raw_socket_made_before_its_cgroup_was_policed_reaches_only_allowed_destinations() {
    let lab = Lab::new("backstop-later", slots::BACKSTOP_LATER);
    let capture = Capture::start("lo");
    let cg = lab.cgroup("later");
    let go = std::env::temp_dir().join(format!("egress-backstop-go-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    let started = |marker: &str, dest: IpAddr| {
        let mut child = cg
            .command(bins::bypass())
            .args(["raw-icmp", &at(dest, 0).to_string(), marker, "--after"])
            .arg(&go)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("egress-bypass starts");
        // It says `socket` once its raw socket exists (made while the cgroup is unpoliced).
        let mut line = String::new();
        let mut err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        std::io::BufRead::read_line(&mut err, &mut line).expect("the bypass's first line");
        assert_eq!(line.trim(), "socket", "egress-bypass said {line:?}");
        child
    };
    let forbidden = started("later-forbidden", lab.ip(2));
    let allowed = started("later-allowed", lab.ip(1));
    lab.enforce(&cg, &lab.ip(1).to_string());
    std::fs::write(&go, "").expect("the go file");
    let forbidden = parse(Kind::RawIcmp, forbidden.wait_with_output().expect("waits"));
    let allowed = parse(Kind::RawIcmp, allowed.wait_with_output().expect("waits"));

    forbidden.assert_refused_at(Step::Send, "an echo request to a forbidden host");
    capture.assert_never_saw("later-forbidden", "the forbidden echo request");
    let ev = lab.enforcer().expect_event("the unjudged packet", |e| {
        e.reason == Reason::UnjudgedPacket && e.addr == lab.ip(2)
    });
    assert_eq!((ev.verdict, ev.hook), (Verdict::Denied, Hook::Egress));

    let _ = std::fs::remove_file(&go);
    allowed.assert_sent("an echo request to the allowed host");
    capture.assert_saw("later-allowed", "the allowed echo request");
}

#[test]
fn audit_mode_reports_a_raw_socket_and_lets_it_send() {
    let lab = Lab::new("backstop-audit", slots::BACKSTOP_AUDIT);
    let capture = Capture::start("lo");
    let cg = lab.cgroup("audited");
    lab.audit(&cg, &lab.ip(1).to_string());
    let a = run(&cg, Kind::RawIcmp, at(lab.ip(2), 0), "audit-raw", None);
    a.assert_sent("a raw socket in audit mode");
    capture.assert_saw("audit-raw", "the audited echo request");
    let ev = lab
        .enforcer()
        .expect_event("the audited socket", |e| e.pid == a.pid);
    assert_eq!(
        (ev.verdict, ev.reason),
        (Verdict::Audited, Reason::SocketRefused)
    );
    // The unpoliced control: nothing refused, nothing reported.
    let free = lab.cgroup("free");
    let b = run(&free, Kind::RawIcmp, at(lab.ip(3), 0), "free-raw", None);
    b.assert_sent("a raw socket of an unpoliced cgroup");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !lab.enforcer().events().iter().any(|e| e.pid == b.pid),
        "an unpoliced cgroup's raw socket was reported"
    );
}
