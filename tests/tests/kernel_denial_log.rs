//! The denial log's memory is bounded: a policed cgroup that sprays 100,000 distinct denied
//! destinations cannot grow the agent. Its table of logged (container, destination) keys is
//! capped, so the agent logs at most that many lines one by one and says in one line how many
//! it did not; its RSS stays within a few MiB of where it was.
//!
//! Needs the agent and probe binaries (`cargo xtask test` builds them). Run as root, serially.

use std::{fs, net::SocketAddr, thread, time::Duration};

use egress_agent::observe::denials::DEFAULT_CAPACITY;
use egress_tests::{
    agent::Agent,
    lab::Lab,
    probe::{EPERM, Probe},
    slots,
};

/// Distinct denied destinations, sent in chunks so that the agent sees (nearly) every event
/// rather than losing most of them to a full ring buffer.
const DESTINATIONS: u32 = 100_000;
const CHUNK: u32 = 5_000;
/// How much the agent's RSS may grow over the spray.
const MAX_GROWTH_KIB: u64 = 4 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).expect("reading the agent's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// The agent's CPU time in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading the agent's stat");
    let after_comm = &stat[stat.rfind(')').expect("comm in stat") + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Waits until the agent has used no CPU for 300 ms (it has drained what was sent).
fn wait_idle(pid: u32) {
    let mut last = cpu_ticks(pid);
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(300));
        let now = cpu_ticks(pid);
        if now == last {
            return;
        }
        last = now;
    }
    panic!("the agent did not go idle within 30 s");
}

fn spray(lab: &Lab, cg: &egress_tests::cgroup::Cgroup, chunk: u32) {
    // Chunk i sprays ports 1024.. of 127.<slot>.<1 + i / 200>.<1 + i % 200>: no destination twice.
    let ip = lab.ip_in(1 + (chunk / 200) as u8, 1 + (chunk % 200) as u8);
    let out = lab.probe(cg, Probe::udp(SocketAddr::new(ip, 1024), "x").spray(CHUNK));
    assert_eq!(out.attempts, u64::from(CHUNK), "{out:?}");
    assert_eq!(
        out.errnos.get(&EPERM).copied(),
        Some(u64::from(CHUNK)),
        "every send is denied with EPERM: {out:?}"
    );
}

#[test]
fn spraying_denied_destinations_does_not_grow_the_agent() {
    let lab = Lab::bare("denial-log-bound", slots::DENIAL_LOG_BOUND);
    let cg = lab.cgroup("sprayer");
    // No entries: everything the cgroup sends is denied.
    let policy = format!("{}=", cg.path.display());
    let agent = Agent::start_with(
        &lab.pins.path,
        &lab.parent().path,
        &[policy],
        &["--deny-log-interval", "600"],
    );
    let pid = agent.pid();

    // Warm up the allocator and the channels, then measure from there.
    spray(&lab, &cg, 0);
    wait_idle(pid);
    let before = rss_kib(pid);
    let chunks = DESTINATIONS / CHUNK;
    for chunk in 1..=chunks {
        spray(&lab, &cg, chunk);
        wait_idle(pid);
    }
    let after = rss_kib(pid);
    let lines = agent
        .log_at("WARN")
        .into_iter()
        .filter(|v| v["fields"]["message"] == "egress denied")
        .count();
    println!(
        "agent RSS {before} KiB before {} more denied destinations, {after} KiB after; {lines} denial lines",
        chunks * CHUNK
    );
    assert!(
        after <= before + MAX_GROWTH_KIB,
        "the agent grew from {before} KiB to {after} KiB over {} distinct denied destinations",
        chunks * CHUNK
    );
    assert!(
        lines <= DEFAULT_CAPACITY,
        "{lines} denial lines logged one by one; the table holds {DEFAULT_CAPACITY}"
    );
    // The agent says that it stopped logging them one by one (it checks a few times a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let said = agent.log_at("WARN").iter().any(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("were not logged one by one"))
        });
        if said {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no line says that denials were not logged one by one; log:\n{}",
            agent
                .log_text()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(100));
    }
}
