//! End-to-end, the DNS proxy when things go wrong: an upstream that drops everything gives
//! SERVFAIL within `--dns-upstream-timeout` (plus a margin), never a hang, over UDP and TCP;
//! malformed DNS from a container does not take the agent down, which answers afterwards; an
//! agent killed with SIGKILL while a container loops over lookups leaves that container's DNS
//! closed (no answer at all, never one the policy would refuse: the server's log and the
//! answers show it) and a restarted agent answers again soon (the figure is printed).
//!
//! Labs (`egress_tests::e2e::Lab`): networks 89, 90 and 91. Needs root, a dockerd and the
//! test image: `cargo xtask test --with-docker -- e2e_dns_failure`.

use std::{
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use egress_tests::{
    dns_client::Report,
    e2e::{AgentOpts, EMBEDDED_DNS, Lab, alive, assert_answered, probe_in},
};

const ALLOW: &str = "egress.allow";
/// What SERVFAIL may take beyond the configured upstream timeout.
const SERVFAIL_MARGIN_MS: f64 = 700.0;
/// How soon after the restarted agent is ready its DNS must answer again.
const BACK_WITHIN_MS: i128 = 1000;

fn now_ms() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i128
}

#[test]
fn unreachable_upstream_gives_servfail_in_bounded_time() {
    let mut lab = Lab::new("dns-upstream", 89);
    let t = lab.start_target("silent", 10);
    let silent = lab.start_dns_host(&t);
    silent.set_silent(true);
    lab.start_agent(&AgentOpts {
        extra: vec!["--dns-upstream-timeout".into(), "1s".into()],
        ..AgentOpts::default()
    });
    let c = lab.dns_client("client", &[(ALLOW, "slow.failure.test")]);
    let server = format!("{}:53", t.ip.unwrap());
    for tcp in [false, true] {
        let r = lab.ask(&c.name, &server, "slow.failure.test", tcp);
        println!("tcp={tcp}: {r:?}");
        assert_eq!(r.rcode.as_deref(), Some("ServFail"), "tcp={tcp}: {r:?}");
        assert!(
            r.ms <= 1000.0 + SERVFAIL_MARGIN_MS,
            "tcp={tcp}: SERVFAIL after {:.0} ms (timeout 1 s)",
            r.ms
        );
    }
    assert!(
        silent.queries_for("slow.failure.test") >= 2,
        "the questions were forwarded to the silent server: {:?}",
        silent.log()
    );
}

#[test]
fn malformed_dns_does_not_take_the_agent_down() {
    let mut lab = Lab::new("dns-malformed", 90);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    lab.dns.set_a("fine.failure.test", &[ip_a], 1);
    lab.start_agent(&AgentOpts::default());
    let c = lab.dns_client("client", &[(ALLOW, "fine.failure.test")]);
    for tcp in [false, true] {
        let mut args = vec!["dns-garbage", EMBEDDED_DNS, "--timeout-ms", "1000"];
        if tcp {
            args.push("--tcp");
        }
        let (r, text) = lab.probe(&c.name, &args);
        println!("garbage tcp={tcp}: {text}");
        assert!(
            r.first()
                .is_some_and(|r| matches!(r.rcode.as_deref(), None | Some("FormErr"))),
            "dropped or FORMERR: {text}"
        );
    }
    let pid = lab.agent().pid() as i32;
    assert!(
        alive(pid),
        "the agent survived; log:\n{}",
        lab.agent().log_text()
    );
    for tcp in [false, true] {
        let r = lab.ask(&c.name, EMBEDDED_DNS, "fine.failure.test", tcp);
        assert_answered(&r, ip_a, &format!("after the garbage, tcp={tcp}"));
    }
}

/// The loop's reports whose question left in `[from, to)` (ms since the epoch).
fn sent_between(reports: &[Report], from: i128, to: i128) -> impl Iterator<Item = &Report> {
    reports
        .iter()
        .filter(move |r| (from..to).contains(&(r.unix_ms as i128)))
}

#[test]
fn agent_sigkill_fails_closed_and_dns_is_back_after_restart() {
    let mut lab = Lab::new("dns-sigkill", 91);
    let a = lab.start_target("a", 10);
    let ip_a = a.ip.unwrap();
    lab.dns.set_a("ok.kill.test", &[ip_a], 1);
    let marker = lab.marker("kill");
    lab.start_agent(&AgentOpts::default());
    let c = lab.dns_client("client", &[(ALLOW, "ok.kill.test")]);

    // Two loops (the allowed name, the marker) for 30 s, a question every ~20 ms.
    let loops: Vec<_> = ["ok.kill.test", marker.as_str()]
        .into_iter()
        .map(|name| {
            let (docker, container, name) = (lab.docker.clone(), c.name.clone(), name.to_owned());
            thread::spawn(move || {
                probe_in(
                    &docker,
                    &container,
                    &[
                        "dns-query",
                        EMBEDDED_DNS,
                        &name,
                        "--for-ms",
                        "30000",
                        "--every-ms",
                        "20",
                        "--timeout-ms",
                        "200",
                    ],
                )
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    let killed = now_ms();
    lab.kill_agent();
    thread::sleep(Duration::from_secs(1));
    let restarted = now_ms();
    lab.start_agent(&AgentOpts::default());
    let ready = now_ms();
    let mut results = loops.into_iter().map(|l| l.join().expect("loop thread"));
    let (allowed, allowed_text) = results.next().unwrap();
    let (denied, denied_text) = results.next().unwrap();

    // Never an answer the policy would refuse, and the marker never reached the server.
    for r in &denied {
        assert!(
            r.addrs.is_empty() && matches!(r.rcode.as_deref(), None | Some("NXDomain")),
            "the marker got an answer: {r:?}"
        );
    }
    assert_eq!(lab.dns.queries_for(&marker), 0, "{:?}", lab.dns.log());
    assert!(
        sent_between(&denied, 0, killed).any(|r| r.rcode.is_some()),
        "the marker was answered (NXDOMAIN) before the kill: {denied_text}"
    );
    // The allowed name: answered before the kill, unanswered while the agent is dead.
    assert!(
        sent_between(&allowed, 0, killed).any(|r| r.rcode.as_deref() == Some("NoError")),
        "answered before the kill: {allowed_text}"
    );
    let during: Vec<_> = sent_between(&allowed, killed + 100, restarted).collect();
    assert!(!during.is_empty(), "questions while dead: {allowed_text}");
    assert!(
        during.iter().all(|r| r.rcode.is_none()),
        "no answer while the agent is dead: {during:#?}"
    );
    let back = sent_between(&allowed, restarted, i128::MAX)
        .find(|r| r.rcode.as_deref() == Some("NoError"))
        .unwrap_or_else(|| panic!("never answered after the restart: {allowed_text}"));
    let back_at = back.unix_ms as i128 + back.ms as i128;
    println!(
        "DNS unanswered for {} ms after SIGKILL; answered {} ms after the restart began, {} ms \
         after the new agent's ready line (agent startup {} ms)",
        back_at - killed,
        back_at - restarted,
        back_at - ready,
        ready - restarted
    );
    assert!(
        back_at - ready <= BACK_WITHIN_MS,
        "DNS answered {} ms after ready (target {BACK_WITHIN_MS} ms)",
        back_at - ready
    );
}
