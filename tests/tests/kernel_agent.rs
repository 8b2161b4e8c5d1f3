//! The `egress-agent` binary: enforcement survives `kill -9`, a new agent takes the pinned state
//! over with no window, `status` shows it, `cleanup` removes everything (twice), and an
//! incompatible pinned layout is replaced with a log line.
//!
//! Needs `target/<profile>/egress-agent` (`cargo build -p egress-agent`; `cargo xtask test`
//! builds it) or `EGRESS_AGENT_BIN`. Run as root, serially:
//! `cargo test -p egress-tests -- --test-threads=1`.

use std::{fs, path::PathBuf};

use egress_common::{maps, programs::CgroupAttachType};
use egress_tests::{
    agent::{self, Agent},
    bpf,
    lab::Lab,
    net::TcpSink,
    probe::{EPERM, Probe},
    slots,
};

/// A file whose existence stops `--loop-until` probes; removed on drop.
struct StopFile(PathBuf);

impl StopFile {
    fn new(lab: &Lab) -> Self {
        let p = std::env::temp_dir().join(format!(
            "egress-test-{}-{}-stop",
            lab.name,
            std::process::id()
        ));
        let _ = fs::remove_file(&p);
        Self(p)
    }

    fn stop(&self) {
        fs::write(&self.0, b"stop").expect("writing the stop file");
    }
}

impl Drop for StopFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn hook_links(status: &serde_json::Value) -> Vec<&serde_json::Value> {
    let hooks: Vec<&str> = CgroupAttachType::ALL.iter().map(|t| t.name()).collect();
    status["links"]
        .as_array()
        .expect("status.links")
        .iter()
        .filter(|l| l["hook"].as_str().is_some_and(|h| hooks.contains(&h)))
        .collect()
}

#[test]
fn sigkilled_agent_keeps_enforcing_and_a_new_agent_takes_over_without_a_window() {
    let lab = Lab::bare("agent-restart", slots::AGENT_RESTART);
    let allowed = TcpSink::bind(lab.ip(1));
    let forbidden = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");
    let policy = format!("{}={}", cg.path.display(), lab.ip(1));

    let first = Agent::start(&lab.pins.path, &lab.parent().path, &[policy]);
    lab.tcp(&cg, allowed.addr).assert_ok("allowed, first agent");
    lab.tcp(&cg, forbidden.addr)
        .assert_denied("forbidden, first agent");

    let status = first.sigkill();
    assert!(!status.success(), "the agent was killed: {status}");
    lab.tcp(&cg, forbidden.addr)
        .assert_denied("forbidden, after the agent was killed with SIGKILL");
    lab.tcp(&cg, allowed.addr)
        .assert_ok("allowed, no agent running");

    // Probes connect in tight loops for the whole restart: the forbidden address must never be
    // reached, the allowed one never refused.
    let stop = StopFile::new(&lab);
    let deny_loop = Probe::tcp(forbidden.addr).loop_until(&stop.0);
    let allow_loop = Probe::tcp(allowed.addr).loop_until(&stop.0);
    let denying = deny_loop.start_in(&cg);
    let allowing = allow_loop.start_in(&cg);
    let second = Agent::start(&lab.pins.path, &lab.parent().path, &[]);
    // Keep probing a little after the second agent is ready (its old links are gone by then).
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.stop();
    let denied = denying.wait(&deny_loop);
    let allowed_out = allowing.wait(&allow_loop);
    eprintln!(
        "during the restart: {} denied attempts (max {} µs), {} allowed attempts (max {} µs)",
        denied.attempts, denied.max_elapsed_us, allowed_out.attempts, allowed_out.max_elapsed_us
    );
    assert_eq!(
        denied.successes, 0,
        "a connect to the forbidden address got through during the restart: {denied:?}"
    );
    assert!(
        denied.attempts > 100,
        "too few attempts to cover the restart: {denied:?}"
    );
    assert_eq!(
        denied.errnos.get(&EPERM).copied(),
        Some(denied.attempts),
        "every attempt was denied with EPERM: {denied:?}"
    );
    assert_eq!(
        allowed_out.successes, allowed_out.attempts,
        "a connect to the allowed address failed during the restart: {allowed_out:?}"
    );
    forbidden.assert_accepted_stays(0, "the forbidden listener");
    assert_eq!(
        second.ready_fields()["reused_pinned_state"],
        true,
        "the second agent reused the pinned state; log:\n{}",
        second.log_text()
    );

    lab.tcp(&cg, forbidden.addr)
        .assert_denied("forbidden, second agent");
    lab.tcp(&cg, allowed.addr)
        .assert_ok("allowed, second agent");

    // `status` (read-only, from the pins) shows the policy the first agent applied.
    let status = agent::status_json(&lab.pins.path);
    assert_eq!(status["pinned_state"], "compatible", "{status:#}");
    let policies = status["policies"].as_array().expect("status.policies");
    let ours = policies
        .iter()
        .find(|p| p["cgroup_id"] == cg.id)
        .unwrap_or_else(|| panic!("no policy for cgroup {} in {status:#}", cg.id));
    assert_eq!(ours["mode"], "enforce", "{ours:#}");
    assert_eq!(
        ours["allow"],
        serde_json::json!([lab.ip(1).to_string()]),
        "{ours:#}"
    );
    assert_eq!(
        ours["cgroup"].as_str(),
        Some(cg.path.to_str().unwrap()),
        "{ours:#}"
    );
    let links = hook_links(&status);
    assert_eq!(
        links.len(),
        CgroupAttachType::ALL.len(),
        "one link per hook after the restart: {status:#}"
    );
    for l in links {
        assert_eq!(l["cgroup_id"], lab.parent().id, "{l:#}");
        assert_eq!(
            l["kernel_attached_prog_ids"].as_array().map(Vec::len),
            Some(1),
            "the kernel reports the program attached: {l:#}"
        );
    }

    // An orderly stop leaves enforcement in place too.
    let status = second.sigterm();
    assert!(
        status.success(),
        "egress-agent exits 0 on SIGTERM: {status}"
    );
    lab.tcp(&cg, forbidden.addr)
        .assert_denied("forbidden, after the second agent stopped");
}

#[test]
fn cleanup_leaves_nothing_attached_or_pinned_and_can_run_twice() {
    let lab = Lab::bare("agent-cleanup", slots::AGENT_CLEANUP);
    let forbidden = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");
    let policy = format!("{}={}", cg.path.display(), lab.ip(1));
    let attach = lab.parent().path.clone();

    let running = Agent::start(&lab.pins.path, &attach, &[policy]);
    // Before cleanup the kernel shows our programs: the checks below can tell a difference.
    for (hook, ids) in bpf::attached(&attach) {
        assert_eq!(
            ids.len(),
            1,
            "{} attached while the agent runs",
            hook.name()
        );
    }
    assert_eq!(
        bpf::bpftool_cgroup_show(&attach).len(),
        CgroupAttachType::ALL.len(),
        "bpftool sees every cgroup program while the agent runs"
    );
    running.sigkill();
    lab.tcp(&cg, forbidden.addr).assert_denied("before cleanup");

    agent::cleanup(&lab.pins.path);
    assert!(
        !lab.pins.path.exists(),
        "the pin directory {} is gone after cleanup",
        lab.pins.path.display()
    );
    for (hook, ids) in bpf::attached(&attach) {
        assert!(
            ids.is_empty(),
            "{}: the kernel still reports programs {ids:?} attached after cleanup",
            hook.name()
        );
    }
    let shown = bpf::bpftool_cgroup_show(&attach);
    assert!(
        shown.is_empty(),
        "bpftool cgroup show {}: {shown:?}",
        attach.display()
    );
    lab.tcp(&cg, forbidden.addr)
        .assert_ok("enforcement stopped after cleanup");
    assert!(forbidden.wait_accepted(1));

    agent::cleanup(&lab.pins.path);
    assert!(!lab.pins.path.exists());
    let status = agent::status_json(&lab.pins.path);
    assert_eq!(status["pinned_state"], "empty", "{status:#}");
    assert!(hook_links(&status).is_empty(), "{status:#}");
}

#[test]
fn agent_replaces_an_incompatible_pinned_layout_and_logs_it() {
    let lab = Lab::bare("agent-incompatible", slots::AGENT_INCOMPATIBLE);
    let forbidden = TcpSink::bind(lab.ip(2));
    let cg = lab.cgroup("policed");
    let policy = format!("{}={}", cg.path.display(), lab.ip(1));
    let attach = lab.parent().path.clone();

    let first = Agent::start(&lab.pins.path, &attach, std::slice::from_ref(&policy));
    first.sigkill();
    bpf::write_array_u64(&lab.pins.map(maps::META), maps::META_LAYOUT_SLOT, 999);
    let status = agent::status_json(&lab.pins.path);
    assert!(
        status["pinned_state"]
            .as_str()
            .is_some_and(|s| s.starts_with("incompatible") && s.contains("999")),
        "status reports the incompatible layout: {status:#}"
    );

    let second = Agent::start(&lab.pins.path, &attach, &[policy]);
    let warnings = second.log_at("WARN");
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().contains("incompatible") && w.to_string().contains("999")),
        "a warning names the replaced layout; log:\n{}",
        second.log_text()
    );
    assert_eq!(
        second.ready_fields()["reused_pinned_state"],
        false,
        "log:\n{}",
        second.log_text()
    );
    lab.tcp(&cg, forbidden.addr)
        .assert_denied("the policy applied on the replaced state enforces");
    assert_eq!(
        agent::status_json(&lab.pins.path)["pinned_state"],
        "compatible"
    );
    for (hook, ids) in bpf::attached(&attach) {
        assert_eq!(
            ids.len(),
            1,
            "{}: only the new program is attached: {ids:?}",
            hook.name()
        );
    }
    forbidden.assert_accepted_stays(0, "the forbidden listener");
}
