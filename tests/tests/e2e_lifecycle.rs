//! End-to-end, over time: the first instruction of a container, containers that exist before
//! the agent, containers removed while it is down, and allowed names whose IPs change. Each test
//! builds an [`egress_tests::e2e::Lab`] on `10.231.<n>.0/24` (n = the test's number below).
//!
//! 4. A labelled container whose entrypoint connects at once to a forbidden host is denied
//!    (EPERM, 20 runs out of 20); an unlabelled one connects (20 out of 20).
//! 5. A container running before the agent starts is policed once the agent is ready; a
//!    container removed while the agent is down leaves no entry once it is back.
//! 6. An allowed name moves from A to C (`egress.dns=resolve`: the agent's own lookups decide):
//!    C becomes reachable within a few seconds, A stays reachable during the grace period and
//!    is denied after it.
//!
//! Needs root, a dockerd and the test image (`cargo xtask test --with-docker`); fails with the
//! reason without them. Run serially: `cargo test -p egress-tests --test 'e2e_*' --
//! --test-threads=1`.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use egress_tests::e2e::{
    AgentOpts, Check, EPERM_TEXT, IMMEDIATE, Lab, Outcome, PORT, Probe, Started, ms, parse_probes,
    probe_script, wait_until,
};

const ALLOW: &str = "egress.allow";
const RUNS: usize = 20;

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let n = v.len();
    format!(
        "min {:.0} ms, median {:.0} ms, max {:.0} ms",
        ms(v[0]),
        ms(v[n / 2]),
        ms(v[n - 1])
    )
}

/// 4. Policed from the first instruction: nothing the entrypoint does can race the agent.
#[test]
fn first_instruction_is_policed_every_time() {
    let mut lab = Lab::new("first", 4);
    let b = lab.start_target("b", 11);
    let ip_b = b.ip.unwrap();
    // allowed.test points at an address of the lab's subnet where nothing runs; no client
    // connects to it.
    lab.dns.set_a("allowed.test", &[lab.ip(10)], 30);
    lab.start_agent(&AgentOpts::default());
    let script = probe_script(&[Check::tcp("B", ip_b, PORT)]);

    let mut walls = Vec::new();
    let mut connects = Vec::new();
    let mut bad = Vec::new();
    for i in 0..RUNS {
        let (out, wall) = lab.run_rm("labelled", &[(ALLOW, "allowed.test")], &script);
        let p = parse_probes(&out).remove("B");
        match &p {
            Some(p) if p.outcome() == Outcome::Denied && p.elapsed < IMMEDIATE => {
                connects.push(p.elapsed)
            }
            _ => bad.push(format!("run {i}: {out}")),
        }
        walls.push(wall);
    }
    println!(
        "labelled, forbidden connect as first instruction: {} of {RUNS} denied with EPERM; \
         docker run wall time {}; connect() inside the container {}",
        RUNS - bad.len(),
        stats(walls),
        if connects.is_empty() {
            "-".to_owned()
        } else {
            stats(connects)
        }
    );
    assert!(
        bad.is_empty(),
        "{} of {RUNS} labelled runs were not denied at once with EPERM:\n{}",
        bad.len(),
        bad.join("\n")
    );

    let mut walls = Vec::new();
    let mut connects = Vec::new();
    let mut bad = Vec::new();
    for i in 0..RUNS {
        let (out, wall) = lab.run_rm("free", &[], &script);
        match parse_probes(&out).remove("B") {
            Some(p) if p.reached("b") => connects.push(p.elapsed),
            _ => bad.push(format!("run {i}: {out}")),
        }
        walls.push(wall);
    }
    println!(
        "unlabelled, same connect: {} of {RUNS} connected; docker run wall time {}; connect \
         inside the container {}",
        RUNS - bad.len(),
        stats(walls),
        if connects.is_empty() {
            "-".to_owned()
        } else {
            stats(connects)
        }
    );
    assert!(
        bad.is_empty(),
        "{} of {RUNS} unlabelled runs did not connect:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The lines `LOOP <n> <output>` a looping container printed so far.
fn loop_lines(lab: &Lab, c: &Started) -> Vec<String> {
    lab.docker
        .run(&["logs", &c.id])
        .lines()
        .filter(|l| l.starts_with("LOOP "))
        .map(str::to_owned)
        .collect()
}

fn loop_ok(line: &str) -> bool {
    line.ends_with(" ok b")
}

/// 5. Containers that exist before the agent are policed once it is ready; containers removed
///    while it is down are forgotten when it comes back.
#[test]
fn agent_started_after_containers_polices_them_and_forgets_removed_ones() {
    let mut lab = Lab::new("late", 5);
    let a = lab.start_target("a", 10);
    let b = lab.start_target("b", 11);
    let (ip_a, ip_b): (IpAddr, IpAddr) = (a.ip.unwrap(), b.ip.unwrap());
    lab.dns.set_a("allowed.test", &[ip_a], 30);

    // Before any agent: a labelled container that tries B every 200 ms, and one that will be
    // removed while the agent is down.
    let looper = lab.start_detached(
        "looper",
        &[(ALLOW, "allowed.test")],
        &[],
        &format!(
            "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); \
             out=$(timeout 3 nc -w 1 {ip_b} {PORT} 2>&1 </dev/null); echo \"LOOP $i $(echo $out)\"; \
             usleep 200000; done"
        ),
    );
    let doomed = lab.start_sleeper("doomed", &[(ALLOW, "allowed.test")], &[]);
    wait_until(
        "the looper to reach B twice while no agent runs",
        Duration::from_secs(20),
        || {
            (loop_lines(&lab, &looper)
                .iter()
                .filter(|l| loop_ok(l))
                .count()
                >= 2)
                .then_some(())
        },
    );

    let t0 = Instant::now();
    let ready_after = lab.start_agent(&AgentOpts::default()).ready_after;
    let at_ready = loop_lines(&lab, &looper).len();
    println!("agent ready in {:.0} ms", ms(ready_after));
    // One line may come from a connect that started before the policy was in place.
    let lines = wait_until(
        "five more loop lines after the agent is ready",
        Duration::from_secs(20),
        || {
            let v = loop_lines(&lab, &looper);
            (v.len() >= at_ready + 6).then_some(v)
        },
    );
    let after: Vec<&String> = lines[at_ready + 1..].iter().collect();
    println!(
        "looper: {} lines before the agent was ready, then {after:?} ({:.0} ms after start)",
        at_ready,
        ms(t0.elapsed())
    );
    for l in &after {
        assert!(
            l.contains(EPERM_TEXT),
            "after the agent is ready, the running container's connects to B must be denied \
             with EPERM: {l:?}\nall lines: {lines:#?}"
        );
    }
    // New processes in it too, and its allowed name still works.
    let checks = [
        Check::tcp("A", "allowed.test", PORT),
        Check::tcp("B", ip_b, PORT),
    ];
    let p = lab.exec_probes(&looper.id, &checks);
    assert!(p[0].reached("a"), "{:?}", p[0]);
    p[1].assert_denied("exec in the container that predates the agent");
    lab.wait_policed(&doomed.id, &[]);

    // The agent stops; enforcement stays; a container is removed meanwhile.
    lab.stop_agent();
    let p = lab.exec_probes(&looper.id, &checks);
    p[1].assert_denied("while the agent is down");
    assert!(
        lab.pin.container(&doomed.id).is_some(),
        "the container to be removed is registered before the agent stops"
    );
    lab.docker.run(&["rm", "-f", &doomed.id]);
    let ready_after = lab.start_agent(&AgentOpts::default()).ready_after;
    println!("agent back, ready in {:.0} ms", ms(ready_after));
    let status = lab.pin.status();
    let ids: Vec<&str> = status["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        !ids.contains(&doomed.id.as_str()),
        "the container removed while the agent was down still has a map entry: {status:#}"
    );
    assert!(
        ids.contains(&looper.id.as_str()),
        "the running container lost its entry: {status:#}"
    );
    let p = lab.exec_probes(&looper.id, &checks);
    assert!(p[0].reached("a"), "{:?}", p[0]);
    p[1].assert_denied("after the agent came back");
}

/// 6. An allowed name moves from A to C (TTL 2 s, grace 4 s) in `egress.dns=resolve` mode, where
///    the agent's own lookups allow the addresses: C becomes reachable within a few seconds, A
///    stays reachable for the grace period, then is denied.
#[test]
fn dns_change_moves_the_allowance_with_a_grace_period() {
    const GRACE: u64 = 4;
    let mut lab = Lab::new("dnschange", 6);
    let a = lab.start_target("a", 10);
    let c = lab.start_target("c", 12);
    let (ip_a, ip_c) = (a.ip.unwrap(), c.ip.unwrap());
    lab.dns.set_a("allowed.test", &[ip_a], 2);
    lab.start_agent(&AgentOpts {
        grace: GRACE,
        ..AgentOpts::default()
    });
    let client = lab.start_sleeper(
        "client",
        &[(ALLOW, "allowed.test"), ("egress.dns", "resolve")],
        &[],
    );
    lab.wait_policed(&client.id, &[ip_a.to_string()]);
    let p = lab.exec_probes(
        &client.id,
        &[
            Check::tcp("name", "allowed.test", PORT),
            Check::tcp("A", ip_a, PORT),
            Check::tcp("C", ip_c, PORT),
        ],
    );
    assert!(p[0].reached("a"), "{:?}", p[0]);
    assert!(p[1].reached("a"), "{:?}", p[1]);
    p[2].assert_denied("C before the change");

    let changed = Instant::now();
    lab.dns.set_a("allowed.test", &[ip_c], 2);
    let checks = [
        Check::tcp("C", ip_c, PORT),
        Check::tcp("A", ip_a, PORT),
        Check::tcp("name", "allowed.test", PORT),
    ];
    let mut c_at = None;
    let mut name_at = None;
    let mut a_ok_last = None;
    let mut a_denied_at: Option<Duration> = None;
    let mut history: Vec<(f64, Vec<Probe>)> = Vec::new();
    loop {
        let p = lab.exec_probes(&client.id, &checks);
        let now = changed.elapsed();
        history.push((now.as_secs_f64(), p.clone()));
        let dump = || format!("{history:#?}");
        if p[0].reached("c") {
            c_at.get_or_insert(now);
        } else {
            assert!(c_at.is_none(), "C was reachable, then not: {}", dump());
            p[0].assert_denied("C before the agent saw the change");
        }
        if p[1].reached("a") {
            assert!(
                a_denied_at.is_none(),
                "A was denied, then reachable again: {}",
                dump()
            );
            a_ok_last = Some(now);
        } else {
            p[1].assert_denied("A after the grace period");
            a_denied_at.get_or_insert(now);
        }
        if c_at.is_some() && p[2].reached("c") {
            name_at.get_or_insert(now);
        }
        if let (Some(_), Some(_), Some(d)) = (c_at, name_at, a_denied_at)
            && now > d + Duration::from_millis(1500)
        {
            break;
        }
        assert!(
            now < Duration::from_secs(30),
            "no complete move within 30 s: {}",
            dump()
        );
    }
    let (c_at, name_at, a_denied_at) = (c_at.unwrap(), name_at.unwrap(), a_denied_at.unwrap());
    let a_ok_last = a_ok_last.expect("A reachable right after the change");
    println!(
        "after the DNS change: C reachable at {:.1} s, the name reaches C at {:.1} s, A last \
         reachable at {:.1} s, A denied from {:.1} s (grace {GRACE} s); {} probe rounds",
        c_at.as_secs_f64(),
        name_at.as_secs_f64(),
        a_ok_last.as_secs_f64(),
        a_denied_at.as_secs_f64(),
        history.len()
    );
    assert!(
        c_at < Duration::from_secs(8),
        "C took {c_at:?} to become reachable (TTL 2 s)"
    );
    assert!(
        a_ok_last >= c_at,
        "A must stay reachable for the grace period after C is allowed: A last reachable at \
         {a_ok_last:?}, C at {c_at:?}"
    );
    let grace_seen = a_denied_at.saturating_sub(c_at);
    assert!(
        grace_seen >= Duration::from_millis(GRACE * 1000 - 1500),
        "A was denied {grace_seen:?} after C was allowed; the grace period is {GRACE} s"
    );
    assert!(
        grace_seen <= Duration::from_secs(GRACE + 6),
        "A was still allowed {grace_seen:?} after C was (grace {GRACE} s)"
    );
}
