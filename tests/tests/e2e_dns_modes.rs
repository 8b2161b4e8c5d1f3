//! End-to-end, the DNS modes and the ports that are not the proxy's. `egress.dns=resolve`: the
//! agent resolves an allowed name itself, so the container reaches its IP without looking it
//! up (in the default `learn` mode the same connect is denied until the container's own
//! answer carried the IP); questions are filtered in both. DNS over TLS (853) to a test host is
//! denied unless `egress.allow` names that address and port, and an entry naming a server's
//! port 53 sends the container's questions straight to it (the server's log shows them).
//!
//! Labs (`egress_tests::e2e::Lab`): networks 92 and 93. Needs root, a dockerd and the test
//! image: `cargo xtask test --with-docker -- e2e_dns_modes`.

use egress_tests::e2e::{
    AgentOpts, DOT_PORT, EMBEDDED_DNS, Lab, PORT, assert_answered, assert_stopped,
};

const ALLOW: &str = "egress.allow";
const DNS_MODE: &str = "egress.dns";

#[test]
fn resolve_mode_allows_the_agents_own_answers_and_still_filters() {
    let mut lab = Lab::new("dns-resolve", 92);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    lab.dns.set_a("fixed.mode.test", &[ip_a], 30);
    lab.start_agent(&AgentOpts::default());
    let by_ip = [ip_a.to_string(), PORT.to_string()];
    let connect_ip = ["dns-connect", by_ip[0].as_str(), by_ip[1].as_str()];

    let resolve = lab.start_probe_host(
        "resolve",
        &[(ALLOW, "fixed.mode.test"), (DNS_MODE, "resolve")],
        egress_tests::e2e::Net::Lab,
        &[],
    );
    // The agent's own lookup put the address in the allow set: no question from the client.
    lab.wait_policed(&resolve.id, std::slice::from_ref(&by_ip[0]));
    let (r, text) = lab.probe(&resolve.name, &connect_ip);
    assert!(
        r.first().is_some_and(|r| r.ok),
        "resolve mode, by IP: {text}"
    );
    lab.wait_dns_proxy(&resolve.name, EMBEDDED_DNS);
    let marker = lab.marker("resolve");
    let r = lab.ask(&resolve.name, EMBEDDED_DNS, &marker, false);
    assert_stopped(&r, "NXDomain", &marker, &[&lab.dns], "resolve mode");
    assert_answered(
        &lab.ask(&resolve.name, EMBEDDED_DNS, "fixed.mode.test", false),
        ip_a,
        "resolve mode",
    );

    let learn = lab.dns_client("learn", &[(ALLOW, "fixed.mode.test"), (DNS_MODE, "learn")]);
    let (r, text) = lab.probe(&learn.name, &connect_ip);
    assert!(
        r.first().is_some_and(|r| r.denied()),
        "learn mode: the IP is not allowed before an answer carried it: {text}"
    );
    let (r, text) = lab.connect_by_name(&learn.name, "fixed.mode.test", PORT, 1);
    assert!(
        r.first().is_some_and(|r| r.ok),
        "learn mode, by name: {text}"
    );
}

#[test]
fn dns_over_tls_and_direct_dns_need_an_explicit_entry() {
    let mut lab = Lab::new("dns-dot", 93);
    let t = lab.start_target("t", 10);
    let ip = t.ip.unwrap();
    let host_dns = lab.start_dns_host(&t);
    host_dns.set_a("direct.dot.test", &[ip], 30);
    lab.start_agent(&AgentOpts::default());
    let dot = ["dns-connect", &ip.to_string(), &DOT_PORT.to_string()].map(str::to_owned);
    let dot: Vec<&str> = dot.iter().map(String::as_str).collect();

    let plain = lab.dns_client("plain", &[(ALLOW, "direct.dot.test")]);
    let (r, text) = lab.probe(&plain.name, &dot);
    assert!(
        r.first().is_some_and(|r| r.denied()),
        "853 without an entry: {text}"
    );

    let named = lab.dns_client("named", &[(ALLOW, &format!("{ip}:{DOT_PORT}"))]);
    let (r, text) = lab.probe(&named.name, &dot);
    assert!(
        r.first().is_some_and(|r| r.ok),
        "853 named by `{ip}:{DOT_PORT}`: {text}"
    );

    // `ADDR:53` named explicitly: questions go straight there, not through the proxy's filter.
    let direct = lab.dns_client("direct", &[(ALLOW, &format!("{ip}:53"))]);
    let server = format!("{ip}:53");
    let marker = lab.marker("direct");
    let r = lab.ask(&direct.name, &server, &marker, false);
    assert_eq!(r.rcode.as_deref(), Some("NXDomain"), "{r:?}");
    assert_eq!(
        host_dns.queries_for(&marker),
        1,
        "the explicitly allowed server got the question itself"
    );
    // Without the entry the same question is the proxy's and never arrives.
    let marker = lab.marker("plain");
    let r = lab.ask(&plain.name, &server, &marker, false);
    assert_stopped(&r, "NXDomain", &marker, &[&host_dns, &lab.dns], "no entry");
}
