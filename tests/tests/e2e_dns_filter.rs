//! End-to-end, query filtering: a question for a name the policy does not allow is answered by
//! the agent (NXDOMAIN, or REFUSED with `--dns-deny refused`) and never forwarded — the test
//! servers' logs show it never arrived — whichever way the container sends it: UDP or TCP, to
//! Docker's embedded `127.0.0.11`, to the network's gateway, or straight to another test
//! host's port 53 (unconnected and connected UDP, TCP). An allowed name asked the same ways is
//! answered by the server it was sent to, from the address asked.
//! Wildcards, one case per rule: `*.x` matches one label, not two, not the apex; `**.x`
//! matches any depth, not the apex.
//!
//! Labs (`egress_tests::e2e::Lab`): networks 82, 83, 84 and 94; the names are marker names under
//! `leak.test` that no table holds. Needs root, a dockerd and the test image:
//! `cargo xtask test --with-docker -- e2e_dns_filter`.

use egress_tests::{
    dns_client::Via,
    e2e::{AgentOpts, EMBEDDED_DNS, Lab, assert_answered, assert_stopped},
};

const ALLOW: &str = "egress.allow";

#[test]
fn names_not_allowed_get_nxdomain_and_never_leave() {
    let mut lab = Lab::new("dns-filter", 82);
    let a = lab.start_target("a", 10);
    let other = lab.start_target("other", 11);
    let ip_a = a.ip.unwrap();
    let other_dns = lab.start_dns_host(&other);
    for dns in [&lab.dns, &other_dns] {
        dns.set_a("allowed.filter.test", &[ip_a], 1);
    }
    lab.start_agent(&AgentOpts::default());
    let c = lab.dns_client("client", &[(ALLOW, "allowed.filter.test")]);

    let gateway = format!("{}:53", lab.gateway);
    let host = format!("{}:53", other.ip.unwrap());
    let mut paths = Vec::new();
    for (to, server) in [
        ("embedded", EMBEDDED_DNS),
        ("gateway", gateway.as_str()),
        ("host", host.as_str()),
    ] {
        for (by, via) in [
            ("udp", Via::Udp),
            ("connected", Via::ConnectedUdp),
            ("tcp", Via::Tcp),
        ] {
            paths.push((format!("{to}-{by}"), server, via));
        }
    }
    for (how, server, via) in &paths {
        let (how, server, via) = (how.as_str(), *server, *via);
        let marker = lab.marker(how);
        let r = lab.ask_via(&c.name, server, &marker, via);
        assert_stopped(&r, "NXDomain", &marker, &[&lab.dns, &other_dns], how);
        let logged = lab.agent().log_text();
        assert!(
            logged.contains(&marker),
            "{how}: the refused question is logged with its name; log:\n{logged}"
        );
    }
    // The allowed name, the same ways: answered, by the server it was sent to, and (to a
    // `recvfrom`) from the address asked.
    for (how, server, via) in &paths {
        let (how, server, via) = (how.as_str(), *server, *via);
        let (before_lab, before_other) = (
            lab.dns.queries_for("allowed.filter.test"),
            other_dns.queries_for("allowed.filter.test"),
        );
        let r = lab.ask_via(&c.name, server, "allowed.filter.test", via);
        assert_answered(&r, ip_a, how);
        if via == Via::Udp {
            assert_eq!(
                r.peer.map(|p| p.to_string()).as_deref(),
                Some(server),
                "{how}: the answer comes from the address asked"
            );
        }
        let (to_lab, to_other) = (
            lab.dns.queries_for("allowed.filter.test") - before_lab,
            other_dns.queries_for("allowed.filter.test") - before_other,
        );
        let counts = format!("lab's server got {to_lab}, the other host {to_other}");
        if how.starts_with("host") {
            assert!(
                to_other >= 1 && to_lab == 0,
                "{how}: forwarded to the host it was sent to ({counts})"
            );
        } else {
            assert!(
                to_lab >= 1 && to_other == 0,
                "{how}: forwarded to the lab's server ({counts})"
            );
        }
    }

    // busybox's resolver (its resolv.conf: the embedded DNS).
    let b = lab.busybox_dns_client("busybox", &[(ALLOW, "allowed.filter.test")]);
    let marker = lab.marker("busybox");
    let (out, found) = lab.nslookup(&b.name, &marker);
    assert!(!found && out.contains("NXDOMAIN"), "busybox: {out}");
    assert_eq!(
        lab.dns.queries_for(&marker),
        0,
        "busybox: {:?}",
        lab.dns.log()
    );
    let (out, found) = lab.nslookup(&b.name, "allowed.filter.test");
    assert!(found && out.contains(&ip_a.to_string()), "busybox: {out}");
}

#[test]
fn dns_deny_refused_answers_refused() {
    let mut lab = Lab::new("dns-refused", 83);
    lab.start_agent(&AgentOpts {
        extra: vec!["--dns-deny".into(), "refused".into()],
        ..AgentOpts::default()
    });
    let c = lab.dns_client("client", &[(ALLOW, "allowed.refused.test")]);
    for (how, tcp) in [("udp", false), ("tcp", true)] {
        let marker = lab.marker(how);
        let r = lab.ask(&c.name, EMBEDDED_DNS, &marker, tcp);
        assert_stopped(&r, "Refused", &marker, &[&lab.dns], how);
    }
}

#[test]
fn wildcards_match_one_label_or_any_depth_never_the_apex() {
    let mut lab = Lab::new("dns-wild", 84);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    let cases = [
        ("a.one.wild.test", true, "`*.` matches one label"),
        ("a.b.one.wild.test", false, "`*.` does not match two labels"),
        ("one.wild.test", false, "`*.` does not match the apex"),
        ("a.any.wild.test", true, "`**.` matches depth 1"),
        ("a.b.c.any.wild.test", true, "`**.` matches depth 3"),
        ("any.wild.test", false, "`**.` does not match the apex"),
    ];
    for (name, _, _) in cases {
        lab.dns.set_a(name, &[ip_a], 30);
    }
    lab.start_agent(&AgentOpts::default());
    let c = lab.dns_client("client", &[(ALLOW, "*.one.wild.test,**.any.wild.test")]);
    for (name, allowed, rule) in cases {
        let r = lab.ask(&c.name, EMBEDDED_DNS, name, false);
        if allowed {
            let rule = format!(
                "{rule} (the server got {} questions for {name}; agent log:\n{})",
                lab.dns.queries_for(name),
                lab.agent().log_text()
            );
            assert_answered(&r, ip_a, &rule);
            assert!(lab.dns.queries_for(name) >= 1, "{rule}: forwarded");
        } else {
            assert_stopped(&r, "NXDomain", name, &[&lab.dns], rule);
        }
    }
}

/// A denial of an address the container learned from its own answer names the name it was
/// learned under (read from the proxy's store, the only copy): `a.learned.test` is allowed on
/// port 8080 only, its address is learned, and a connect to its port 8081 is denied with
/// `domain = a.learned.test` in the line. A name the proxy never answered stays unnamed.
#[test]
fn a_denial_names_the_learned_name_of_its_address() {
    let mut lab = Lab::new("dns-denial-name", 94);
    let t = lab.start_target("t", 10);
    let ip = t.ip.unwrap();
    lab.dns.set_a("a.learned.test", &[ip], 60);
    lab.start_agent(&AgentOpts::default());
    let c = lab.dns_client("client", &[(ALLOW, "a.learned.test:8080")]);
    let (reports, text) = lab.probe(&c.name, &["dns-connect", "a.learned.test", "8080"]);
    assert!(reports.iter().all(|r| r.ok), "port 8080 is allowed: {text}");
    let (reports, text) = lab.probe(&c.name, &["dns-connect", "a.learned.test", "8081"]);
    assert!(
        reports.iter().all(|r| r.denied()),
        "port 8081 is not allowed: {text}"
    );
    let line = lab.agent().wait_for(
        "denying the connect to port 8081",
        std::time::Duration::from_secs(15),
        |f| f["message"] == "egress denied" && f["port"] == 8081,
    );
    assert_eq!(
        line["domain"], "a.learned.test",
        "the denial names the learned name: {line}"
    );
}
