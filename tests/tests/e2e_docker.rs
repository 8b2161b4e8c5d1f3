//! End-to-end, policy semantics and logs: `egress-agent run --docker on` follows the real
//! dockerd and polices containers by their `egress.*` labels. Each test builds an
//! [`egress_tests::e2e::Lab`]: its own bridge network `10.231.<n>.0/24` (n = the test's number
//! below), a test DNS server on the gateway, busybox target hosts answering `ok <role>` on TCP
//! 8080/8081, and an agent attached at the cgroup v2 root with its own pin directory.
//!
//! 1. `egress.allow=allowed.test`: TCP and UDP to A pass, B is denied at once by IP and its
//!    name does not resolve (the agent's DNS proxy answers; the server never sees the question);
//!    an unlabelled container reaches both.
//! 2. A wildcard `*.svc.test` allows the names one label below it through busybox's resolver,
//!    not deeper ones nor the apex (every rule: `e2e_dns_filter`).
//! 3. `allowed.test:8080` allows that port only; a CIDR entry allows exactly its range.
//! 7. Malformed labels: everything is denied and the log names container, label and token.
//! 9. `egress.mode=audit`: the connection passes and the would-be denial is logged.
//! 10. A denial's log line carries container name, id, image, pid, comm, destination, port,
//!     protocol, the allowed domain the IP belongs to, and the mode.
//!
//! Needs root, a dockerd (`DOCKER_HOST`, else /var/run/docker.sock) and the image
//! `egress-test-busybox:latest` (`EGRESS_TEST_IMAGE`): `cargo xtask test --with-docker`. Without
//! them the tests fail with the reason. Run serially:
//! `cargo test -p egress-tests --test 'e2e_*' -- --test-threads=1`.

use std::time::Duration;

use egress_tests::e2e::{
    AgentOpts, Check, EPERM_TEXT, Lab, OTHER_PORT, Outcome, PORT, UDP_PORT, image,
};
use serde_json::Value;

const ALLOW: &str = "egress.allow";
const MODE: &str = "egress.mode";
const LOG_TIMEOUT: Duration = Duration::from_secs(15);

type Labels<'a> = &'a [(&'a str, &'a str)];

fn field<'a>(f: &'a Value, k: &str) -> &'a str {
    f[k].as_str().unwrap_or_default()
}

/// 1. The allowed domain's host is reachable over TCP and UDP; the other host is not: by IP the
///    denial is immediate EPERM, by name the lookup fails at once (the question never reaches
///    the server). Unlabelled containers are free.
#[test]
fn allowed_domain_reaches_a_only_unlabelled_reaches_both() {
    let mut lab = Lab::new("allow", 1);
    let a = lab.start_target("a", 10);
    let b = lab.start_target("b", 11);
    let sink_a = lab.udp_sink(&a);
    let sink_b = lab.udp_sink(&b);
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    lab.dns.set_a("allowed.test", &[ip_a], 30);
    lab.dns.set_a("other.test", &[ip_b], 30);
    lab.start_agent(&AgentOpts::default());

    let checks = |who: &str| {
        vec![
            Check::tcp("tcpA_name", "allowed.test", PORT),
            Check::tcp("tcpA_ip", ip_a, PORT),
            Check::udp(&format!("udpA_{who}"), ip_a, UDP_PORT),
            Check::tcp("tcpB_name", "other.test", PORT),
            Check::tcp("tcpB_ip", ip_b, PORT),
            Check::udp(&format!("udpB_{who}"), ip_b, UDP_PORT),
        ]
    };
    let (run, p) = lab.probe_client("labelled", &[(ALLOW, "allowed.test")], &checks("lab"), &[]);
    println!("labelled client ({:?}):\n{}", run.wall, run.output);
    assert!(p[0].reached("a"), "labelled, A by name: {:?}", p[0]);
    assert!(p[1].reached("a"), "labelled, A by IP: {:?}", p[1]);
    assert_ne!(
        p[2].outcome(),
        Outcome::Denied,
        "labelled, UDP to A: {:?}",
        p[2]
    );
    assert!(
        lab.sink(sink_a).received("udpA_lab"),
        "the UDP datagram to A did not arrive: {:?}",
        p[2]
    );
    p[3].assert_unresolved("labelled, B by name");
    assert_eq!(
        lab.dns.queries_for("other.test"),
        0,
        "the question for B's name left the agent"
    );
    p[4].assert_denied("labelled, B by IP");
    p[5].assert_denied("labelled, UDP to B");
    assert!(
        !lab.sink(sink_b).received("udpB_lab"),
        "a denied datagram arrived at B"
    );

    let (run, p) = lab.probe_client("free", &[], &checks("free"), &[]);
    println!("unlabelled client ({:?}):\n{}", run.wall, run.output);
    assert!(
        p[0].reached("a") && p[1].reached("a"),
        "unlabelled to A: {p:?}"
    );
    assert!(
        p[3].reached("b") && p[4].reached("b"),
        "unlabelled to B: {p:?}"
    );
    for udp in [&p[2], &p[5]] {
        assert_ne!(udp.outcome(), Outcome::Denied, "unlabelled: {udp:?}");
    }
    assert!(
        lab.sink(sink_a).received("udpA_free"),
        "UDP to A: {:?}",
        p[2]
    );
    assert!(
        lab.sink(sink_b).received("udpB_free"),
        "UDP to B: {:?}",
        p[5]
    );
}

/// 2. A wildcard entry allows the names exactly one label below it (busybox's resolver; the
///    other rules are `e2e_dns_filter`'s): a deeper name and the apex do not resolve.
#[test]
fn wildcard_label_allows_one_label_below() {
    let mut lab = Lab::new("wildcard", 2);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    for name in ["allowed.test", "api.svc.test", "x.api.svc.test", "svc.test"] {
        lab.dns.set_a(name, &[ip_a], 30);
    }
    lab.start_agent(&AgentOpts::default());

    let checks = [
        Check::tcp("wild_name", "api.svc.test", PORT),
        Check::tcp("tcpA_name", "allowed.test", PORT),
        Check::tcp("tcpA_ip", ip_a, PORT),
        Check::tcp("deeper", "x.api.svc.test", PORT),
        Check::tcp("apex", "svc.test", PORT),
    ];
    let (run, p) = lab.probe_client("wild", &[(ALLOW, "*.svc.test,allowed.test")], &checks, &[]);
    println!("{}", run.output);
    assert!(
        p[0].reached("a"),
        "one label below the wildcard: {:?}",
        p[0]
    );
    assert!(p[1].reached("a"), "the exact name beside it: {:?}", p[1]);
    assert!(
        p[2].reached("a"),
        "A by IP, learned from the answers: {:?}",
        p[2]
    );
    p[3].assert_unresolved("two labels below `*.svc.test`");
    p[4].assert_unresolved("the apex of `*.svc.test`");
    for name in ["x.api.svc.test", "svc.test"] {
        assert_eq!(lab.dns.queries_for(name), 0, "{name} reached the server");
    }
}

/// 3. A port entry allows only that port of the domain's host; a CIDR entry allows exactly its
///    range, on every port.
#[test]
fn port_and_cidr_entries_allow_exactly_what_they_say() {
    let mut lab = Lab::new("portcidr", 3);
    // 10.231.3.8/30 is .8-.11: .10 and .11 are inside, .7 and .12 just outside.
    let a = lab.start_target("a", 10);
    let inside = lab.start_target("inside", 11);
    let below = lab.start_target("below", 7);
    let above = lab.start_target("above", 12);
    let ip = |s: &egress_tests::e2e::Started| s.ip.unwrap();
    lab.dns.set_a("allowed.test", &[ip(&a)], 30);
    lab.start_agent(&AgentOpts::default());

    let checks = [
        Check::tcp("A_name_8080", "allowed.test", PORT),
        Check::tcp("A_ip_8080", ip(&a), PORT),
        Check::tcp("A_name_8081", "allowed.test", OTHER_PORT),
        Check::tcp("A_ip_8081", ip(&a), OTHER_PORT),
        Check::tcp("inside", ip(&inside), PORT),
    ];
    let (run, p) = lab.probe_client("port", &[(ALLOW, "allowed.test:8080")], &checks, &[]);
    println!("allowed.test:8080:\n{}", run.output);
    assert!(p[0].reached("a"), "{:?}", p[0]);
    assert!(p[1].reached("a"), "{:?}", p[1]);
    p[2].assert_denied("allowed.test:8080, port 8081 by name");
    p[3].assert_denied("allowed.test:8080, port 8081 by IP");
    p[4].assert_denied("allowed.test:8080, another host");

    let checks = [
        Check::tcp("A_8080", ip(&a), PORT),
        Check::tcp("A_8081", ip(&a), OTHER_PORT),
        Check::tcp("inside_edge", ip(&inside), PORT),
        Check::tcp("below", ip(&below), PORT),
        Check::tcp("above", ip(&above), PORT),
    ];
    let (run, p) = lab.probe_client("cidr", &[(ALLOW, "10.231.3.8/30")], &checks, &[]);
    println!("10.231.3.8/30:\n{}", run.output);
    assert!(p[0].reached("a"), "{:?}", p[0]);
    assert!(
        p[1].reached("a"),
        "a CIDR without port allows every port: {:?}",
        p[1]
    );
    assert!(p[2].reached("inside"), "{:?}", p[2]);
    p[3].assert_denied("10.231.3.8/30, .7 just below");
    p[4].assert_denied("10.231.3.8/30, .12 just above");
}

/// 7. Malformed labels fail closed: an invalid entry among valid ones, a misspelt key and an
///    unknown mode each deny the container everything, and the agent names the container, the
///    label key and the offending token.
#[test]
fn malformed_labels_deny_everything_and_are_named_in_the_log() {
    let mut lab = Lab::new("malformed", 7);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    lab.dns.set_a("allowed.test", &[ip_a], 30);
    lab.start_agent(&AgentOpts::default());

    let checks = [
        Check::tcp("A_ip", ip_a, PORT),
        Check::tcp("A_name", "allowed.test", PORT),
    ];
    // (labels, label key named in the log, token named in the log)
    let cases: [(Labels, &str, &str); 3] = [
        (&[(ALLOW, "allowed.test,bad..name")], ALLOW, "bad..name"),
        (&[("egress.alow", "allowed.test")], "egress.alow", ""),
        (
            &[(ALLOW, "allowed.test"), (MODE, "enforcing")],
            MODE,
            "enforcing",
        ),
    ];
    for (labels, key, token) in cases {
        let (run, p) = lab.probe_client("bad", labels, &checks, &[]);
        println!("{labels:?}:\n{}", run.output);
        p[0].assert_denied(&format!("{labels:?}, A by IP"));
        assert!(!p[1].reached("a"), "{labels:?}, A by name: {:?}", p[1]);
        let f = lab.agent().wait_for(
            &format!("naming the malformed label of {}", run.name),
            LOG_TIMEOUT,
            |f| field(f, "container") == run.name && field(f, "label") == key,
        );
        println!("log: {f}");
        assert_eq!(field(&f, "token"), token, "{f}");
        assert_eq!(field(&f, "id"), &run.id[..12], "{f}");
        let msg = field(&f, "message");
        assert!(msg.contains("denying all egress"), "{f}");
        assert!(msg.contains(key), "the message should name the label: {f}");
        if token.is_empty() {
            assert!(msg.contains("unknown key"), "{f}");
        } else {
            assert!(
                msg.contains(token),
                "the message should name the token: {f}"
            );
        }
    }
}

/// 9. Audit mode lets the connection through and logs what enforce mode would have denied.
#[test]
fn audit_mode_allows_and_logs_the_would_be_denial() {
    let mut lab = Lab::new("audit", 9);
    let a = lab.start_target("a", 10);
    let b = lab.start_target("b", 11);
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    lab.dns.set_a("allowed.test", &[ip_a], 30);
    lab.start_agent(&AgentOpts::default());

    let checks = [
        Check::tcp("A", "allowed.test", PORT),
        Check::tcp("B", ip_b, PORT),
    ];
    let (run, p) = lab.probe_client(
        "audited",
        &[(ALLOW, "allowed.test"), (MODE, "audit")],
        &checks,
        &[],
    );
    println!("{}", run.output);
    assert!(p[0].reached("a"), "{:?}", p[0]);
    assert!(p[1].reached("b"), "audit mode must not block: {:?}", p[1]);

    let f = lab
        .agent()
        .wait_for("auditing the connect to B", LOG_TIMEOUT, |f| {
            field(f, "container") == run.name && field(f, "destination") == ip_b.to_string()
        });
    println!("log: {f}");
    assert_eq!(
        field(&f, "message"),
        "egress would be denied (audit mode)",
        "{f}"
    );
    assert_eq!(field(&f, "mode"), "audit", "{f}");
    assert_eq!(f["port"], PORT, "{f}");
    assert_eq!(field(&f, "protocol"), "tcp", "{f}");
    assert_eq!(field(&f, "container_id"), &run.id[..12], "{f}");
    let about_a = lab.agent().lines().into_iter().any(|v| {
        field(&v["fields"], "container") == run.name
            && field(&v["fields"], "destination") == ip_a.to_string()
    });
    assert!(
        !about_a,
        "an allowed connect was logged:\n{}",
        lab.agent().log_text()
    );
    let denied = lab
        .agent()
        .messages("egress denied")
        .into_iter()
        .any(|f| field(&f, "container") == run.name);
    assert!(
        !denied,
        "nothing is denied in audit mode:\n{}",
        lab.agent().log_text()
    );
}

/// 10. One denial line says everything: container name, id, image, pid, comm, destination,
///     port, protocol, the allowed domain the IP belongs to, and the mode (TCP and UDP).
#[test]
fn denial_log_line_names_everything() {
    let mut lab = Lab::new("denylog", 10);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    lab.dns.set_a("allowed.test", &[ip_a], 30);
    lab.start_agent(&AgentOpts::default());

    let checks = [
        Check::tcp("ok", "allowed.test", PORT),
        Check::tcp("tcp_denied", "allowed.test", OTHER_PORT),
        Check::udp("udp_denied", ip_a, UDP_PORT),
    ];
    let (run, p) = lab.probe_client("client", &[(ALLOW, "allowed.test:8080")], &checks, &[]);
    println!("{}", run.output);
    assert!(p[0].reached("a"), "{:?}", p[0]);
    p[1].assert_denied("port 8081");
    p[2].assert_denied("UDP 9000");
    assert!(p[1].out.contains(EPERM_TEXT));

    for (port, protocol, comm) in [(OTHER_PORT, "tcp", "nc"), (UDP_PORT, "udp", "tftp")] {
        let f = lab.agent().wait_for(
            &format!("denying {protocol} port {port}"),
            LOG_TIMEOUT,
            |f| {
                field(f, "message") == "egress denied"
                    && field(f, "destination") == ip_a.to_string()
                    && f["port"] == port
            },
        );
        println!("log: {f}");
        assert_eq!(field(&f, "container"), run.name, "{f}");
        assert_eq!(field(&f, "container_id"), &run.id[..12], "{f}");
        assert_eq!(field(&f, "image"), image(), "{f}");
        assert!(f["pid"].as_u64().is_some_and(|p| p > 1), "{f}");
        assert_eq!(field(&f, "comm"), comm, "{f}");
        assert_eq!(field(&f, "protocol"), protocol, "{f}");
        assert_eq!(field(&f, "domain"), "allowed.test", "{f}");
        assert_eq!(field(&f, "mode"), "enforce", "{f}");
        assert!(f["cgroup_id"].as_u64().is_some_and(|c| c > 1), "{f}");
    }
}
