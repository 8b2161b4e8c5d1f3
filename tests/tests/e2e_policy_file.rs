//! End-to-end, the policy file: `egress-agent run --docker on --policy-file F` combines F's
//! `[[container]]` rules with the containers' `egress.*` labels and reloads F on SIGHUP,
//! keeping the previous policy when the new file has errors. The test builds an
//! [`egress_tests::e2e::Lab`] on `10.231.11.0/24` (no other e2e test uses 11): a test DNS
//! server on the gateway, busybox targets A (`.10`, `allowed.test`), B (`.11`) and C (`.12`)
//! answering `ok <role>` on TCP 8080, and the agent with its own pin directory.
//!
//! 11. `policy_file_adds_and_overrides_labels_and_reloads_on_sighup`:
//!     - F adds B to a container labelled `egress.allow=allowed.test`, selected by name: it
//!       reaches A and B, C is denied; a container with the same label that F does not select
//!       reaches A only. A container without `egress.*` labels that F selects by label is
//!       policed by F alone (F allows A: B and C are denied).
//!     - F rewritten (`replace = true`, C only; the label rule now allows B) + SIGHUP: the
//!       agent logs `policy file reloaded`, and within seconds the same running containers
//!       follow the new file.
//!     - A broken F (an invalid entry; then an unknown field) + SIGHUP: the agent logs that
//!       it refused the file, naming the file and the token, keeps running, and the previous
//!       policy stays in force, although the broken file would allow A and B.
//!     - A valid F without the name rule + SIGHUP: the container is back to its labels alone.
//! 12. `agent_refuses_to_start_with_a_broken_policy_file`: `run --policy-file <broken>` exits
//!     non-zero at once, naming the file and every offending token, and loads nothing.
//!
//! Needs root, a dockerd and the test image (`cargo xtask test --with-docker`); fails with the
//! reason without them. Run serially: `cargo test -p egress-tests --test e2e_policy_file --
//! --test-threads=1`.

use std::{
    fs,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use egress_tests::{
    bins,
    e2e::{
        Agent, AgentOpts, Check, LAB_LABEL, Lab, PORT, PinDir, Probe, Started, alive, image, ms,
        shared_docker_host,
    },
};
use serde_json::Value;

/// The lab's number: `10.231.11.0/24`.
const N: u8 = 11;
const ALLOW: &str = "egress.allow";
/// The label the file's label rule selects (not an `egress.*` label).
const TEAM: &str = "test.egress-e2e.team";
const LOG_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a reload may take to reach the kernel's maps.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
const RELOADED: &str = "policy file reloaded";
const REFUSED: &str = "policy file refused";

fn field<'a>(f: &'a Value, k: &str) -> &'a str {
    f[k].as_str().unwrap_or_default()
}

/// A directory of the test's own under /tmp, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!("/tmp/egress-e2e-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        Self(p)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[track_caller]
fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The log lines whose message starts with `prefix`, their `fields`.
fn lines_starting(agent: &Agent, prefix: &str) -> Vec<Value> {
    agent
        .lines()
        .into_iter()
        .map(|v| v["fields"].clone())
        .filter(|f| field(f, "message").starts_with(prefix))
        .collect()
}

/// Sends SIGHUP and waits for the next log line whose message starts with `prefix`; returns
/// its `fields` and how long it took.
#[track_caller]
fn hup_and_wait(agent: &Agent, prefix: &str) -> (Value, Duration) {
    let before = lines_starting(agent, prefix).len();
    let t0 = Instant::now();
    agent.sighup();
    loop {
        if let Some(f) = lines_starting(agent, prefix).into_iter().nth(before) {
            return (f, t0.elapsed());
        }
        assert!(
            t0.elapsed() < LOG_TIMEOUT,
            "no new agent log line `{prefix}...` within {LOG_TIMEOUT:?} of SIGHUP; log:\n{}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The allow entries `egress-agent status` shows for a policed container.
#[track_caller]
fn allow_of(lab: &Lab, id: &str) -> Option<Vec<String>> {
    let c = lab.pin.container(id)?;
    if c["policed"] != true {
        return None;
    }
    Some(
        c["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Waits until the status shows the container policed with every IP of `with` and none of
/// `without` (exact-address entries, any port); returns how long it took.
#[track_caller]
fn wait_allow(lab: &Lab, c: &Started, with: &[IpAddr], without: &[IpAddr]) -> Duration {
    let t0 = Instant::now();
    let has = |allow: &[String], ip: &IpAddr| allow.iter().any(|a| *a == ip.to_string());
    loop {
        let allow = allow_of(lab, &c.id);
        if let Some(a) = &allow
            && with.iter().all(|ip| has(a, ip))
            && !without.iter().any(|ip| has(a, ip))
        {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < RELOAD_TIMEOUT,
            "{} not policed with {with:?} and without {without:?} within {RELOAD_TIMEOUT:?}; \
             status shows {allow:?}",
            c.name
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// What one container may reach: `(target role, IP, reachable?)` per target.
#[track_caller]
fn assert_reach(lab: &Lab, c: &Started, expect: &[(&str, IpAddr, bool)], context: &str) {
    let checks: Vec<Check> = expect
        .iter()
        .map(|(role, ip, _)| Check::tcp(role, ip, PORT))
        .collect();
    let p: Vec<Probe> = lab.exec_probes(&c.id, &checks);
    println!("{context}, {}: {p:?}", c.name);
    for ((role, _, reachable), probe) in expect.iter().zip(&p) {
        if *reachable {
            assert!(
                probe.reached(role),
                "{context}: {} should reach {role}: {probe:?}",
                c.name
            );
        } else {
            probe.assert_denied(&format!("{context}: {} to {role}", c.name));
        }
    }
}

/// Checks a refusal line: it names the file and the token, says the previous file stays.
#[track_caller]
fn assert_refusal(f: &Value, path: &Path, token: &str) {
    println!("log: {f}");
    let path = path.display().to_string();
    let msg = field(f, "message");
    assert_eq!(field(f, "path"), path, "{f}");
    assert!(msg.contains(&path), "the refusal should name the file: {f}");
    assert!(
        msg.contains(&format!("`{token}`")),
        "the refusal should name `{token}`: {f}"
    );
    assert!(
        msg.contains("previous one stays"),
        "the refusal should say the previous file stays in force: {f}"
    );
}

/// 11. The file adds to and overrides labels, selects by name and by label, follows SIGHUP,
///     and a broken file changes nothing.
#[test]
fn policy_file_adds_and_overrides_labels_and_reloads_on_sighup() {
    let t_start = Instant::now();
    let dir = TempDir::new("policyfile");
    let file = dir.file("policy.toml");
    let mut lab = Lab::new("policyfile", N);
    let a = lab.start_target("a", 10);
    let b = lab.start_target("b", 11);
    let c = lab.start_target("c", 12);
    let (ip_a, ip_b, ip_c) = (a.ip.unwrap(), b.ip.unwrap(), c.ip.unwrap());
    lab.dns.set_a("allowed.test", &[ip_a], 30);
    // The selected container's name, removed with the lab's containers.
    let selected = lab.containers.name("selected");
    let team = format!("files-{}", std::process::id());

    // F1: the name rule adds B; the label rule polices a container without egress labels.
    let f1 = format!(
        "# e2e_policy_file, version 1\n\
         [[container]]\n\
         name = \"{selected}\"\n\
         allow = [\"{ip_b}\"]\n\
         \n\
         [[container]]\n\
         label = \"{TEAM}={team}\"\n\
         allow = [\"{ip_a}\"]\n"
    );
    write(&file, &f1);
    lab.start_agent(&AgentOpts {
        policy_file: Some(file.clone()),
        // The agent's own lookups allow the names' addresses (the waits below rely on it).
        dns_mode: Some("resolve"),
        ..AgentOpts::default()
    });
    println!("agent ready after {:?}", lab.agent().ready_after);
    let agent_pid = lab.agent().pid() as i32;

    // The selected container: labelled like the control one, named as F says.
    let id = lab.docker.run(&[
        "run",
        "-d",
        "--name",
        &selected,
        "--network",
        &lab.network,
        "--dns",
        &lab.gateway.to_string(),
        "--label",
        &format!("{LAB_LABEL}={}", lab.tag),
        "--label",
        &format!("{ALLOW}=allowed.test"),
        "--stop-timeout",
        "1",
        &image(),
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    let sel = Started {
        name: selected.clone(),
        id,
        ip: None,
    };
    let control = lab.start_sleeper("control", &[(ALLOW, "allowed.test")], &[]);
    let files_only = lab.start_sleeper("filesonly", &[(TEAM, &team)], &[]);

    // --- F1 in force.
    lab.wait_policed(&sel.id, &[ip_a.to_string(), ip_b.to_string()]);
    lab.wait_policed(&control.id, &[ip_a.to_string()]);
    lab.wait_policed(&files_only.id, &[ip_a.to_string()]);
    assert_reach(
        &lab,
        &sel,
        &[("a", ip_a, true), ("b", ip_b, true), ("c", ip_c, false)],
        "F1 (label + name rule)",
    );
    let p = lab.exec_probes(&sel.id, &[Check::tcp("a_name", "allowed.test", PORT)]);
    assert!(
        p[0].reached("a"),
        "F1: {} to allowed.test: {:?}",
        sel.name,
        p[0]
    );
    assert_reach(
        &lab,
        &control,
        &[("a", ip_a, true), ("b", ip_b, false), ("c", ip_c, false)],
        "F1, not selected",
    );
    assert_reach(
        &lab,
        &files_only,
        &[("a", ip_a, true), ("b", ip_b, false), ("c", ip_c, false)],
        "F1, no egress labels, label rule",
    );
    assert!(
        lines_starting(lab.agent(), RELOADED).is_empty(),
        "nothing was reloaded yet:\n{}",
        lab.agent().log_text()
    );

    // --- F2 + SIGHUP: the name rule replaces everything with C; the label rule allows B.
    let f2 = format!(
        "# e2e_policy_file, version 2\n\
         [[container]]\n\
         name = \"{selected}\"\n\
         replace = true\n\
         allow = [\"{ip_c}\"]\n\
         \n\
         [[container]]\n\
         label = \"{TEAM}={team}\"\n\
         allow = [\"{ip_b}\"]\n"
    );
    write(&file, &f2);
    let (f, logged) = hup_and_wait(lab.agent(), RELOADED);
    println!("log ({:.0} ms after SIGHUP): {f}", ms(logged));
    assert_eq!(field(&f, "message"), RELOADED, "{f}");
    assert_eq!(field(&f, "path"), file.display().to_string(), "{f}");
    let t_reload = Instant::now();
    wait_allow(&lab, &sel, &[ip_c], &[ip_a, ip_b]);
    wait_allow(&lab, &files_only, &[ip_b], &[ip_a, ip_c]);
    let applied = logged + t_reload.elapsed();
    println!("F2 in the maps {:.0} ms after SIGHUP", ms(applied));
    assert!(
        applied < RELOAD_TIMEOUT,
        "the reload took {applied:?} to reach the maps"
    );
    let f2_reach_sel = [("a", ip_a, false), ("b", ip_b, false), ("c", ip_c, true)];
    let f2_reach_files = [("a", ip_a, false), ("b", ip_b, true), ("c", ip_c, false)];
    assert_reach(&lab, &sel, &f2_reach_sel, "F2 (replace = true, C only)");
    assert_reach(
        &lab,
        &files_only,
        &f2_reach_files,
        "F2, label rule allows B",
    );
    assert_reach(
        &lab,
        &control,
        &[("a", ip_a, true), ("b", ip_b, false), ("c", ip_c, false)],
        "F2, not selected",
    );

    // --- Broken files + SIGHUP: refused, named, nothing changes (they would allow A and B).
    let broken: [(&str, String, &str); 2] = [
        (
            "an invalid entry",
            format!(
                "[[container]]\n\
                 name = \"{selected}\"\n\
                 replace = true\n\
                 allow = [\"{ip_a}\", \"{ip_b}\", \"bad..name\"]\n\
                 \n\
                 [[container]]\n\
                 label = \"{TEAM}={team}\"\n\
                 allow = [\"{ip_a}\", \"{ip_b}\"]\n"
            ),
            "bad..name",
        ),
        (
            "an unknown field",
            format!(
                "[[container]]\n\
                 name = \"{selected}\"\n\
                 replace = true\n\
                 allow = [\"{ip_a}\", \"{ip_b}\"]\n\
                 colour = \"red\"\n\
                 \n\
                 [[container]]\n\
                 label = \"{TEAM}={team}\"\n\
                 allow = [\"{ip_a}\", \"{ip_b}\"]\n"
            ),
            "colour",
        ),
    ];
    for (what, text, token) in &broken {
        write(&file, text);
        let reloads = lines_starting(lab.agent(), RELOADED).len();
        let (f, took) = hup_and_wait(lab.agent(), REFUSED);
        println!("{what}: refused {:.0} ms after SIGHUP", ms(took));
        assert_refusal(&f, &file, token);
        assert!(
            alive(agent_pid),
            "the agent exited after refusing {what}:\n{}",
            lab.agent().log_text()
        );
        assert_eq!(
            lines_starting(lab.agent(), RELOADED).len(),
            reloads,
            "a file with {what} was reloaded:\n{}",
            lab.agent().log_text()
        );
        let ctx = format!("F2 after refusing {what}");
        let allow = allow_of(&lab, &sel.id);
        assert!(
            allow.as_ref().is_some_and(|a| a.contains(&ip_c.to_string())
                && !a.contains(&ip_a.to_string())
                && !a.contains(&ip_b.to_string())),
            "{ctx}: {} should still allow C only: {allow:?}",
            sel.name
        );
        assert_reach(&lab, &sel, &f2_reach_sel, &ctx);
        assert_reach(&lab, &files_only, &f2_reach_files, &ctx);
    }

    // --- A valid file again: the agent still reloads; without the name rule the selected
    // container is back to its labels (A by name), the label rule still polices the other.
    let f4 = format!(
        "# e2e_policy_file, version 4\n\
         [[container]]\n\
         label = \"{TEAM}={team}\"\n\
         allow = [\"{ip_c}\"]\n"
    );
    write(&file, &f4);
    let (f, logged) = hup_and_wait(lab.agent(), RELOADED);
    println!("log ({:.0} ms after SIGHUP): {f}", ms(logged));
    wait_allow(&lab, &sel, &[ip_a], &[ip_b, ip_c]);
    wait_allow(&lab, &files_only, &[ip_c], &[ip_a, ip_b]);
    assert_reach(
        &lab,
        &sel,
        &[("a", ip_a, true), ("b", ip_b, false), ("c", ip_c, false)],
        "F4 (no name rule: labels alone)",
    );
    assert_reach(
        &lab,
        &files_only,
        &[("a", ip_a, false), ("b", ip_b, false), ("c", ip_c, true)],
        "F4, label rule allows C",
    );

    // No error but the two refusals; still the same process, and it stops cleanly.
    let errors: Vec<Value> = lab
        .agent()
        .lines()
        .into_iter()
        .filter(|v| v["level"] == "ERROR" && !field(&v["fields"], "message").starts_with(REFUSED))
        .collect();
    assert!(
        errors.is_empty(),
        "errors other than the refusals: {errors:?}"
    );
    assert_eq!(lab.agent().pid() as i32, agent_pid);
    lab.stop_agent();
    println!("test took {:?}", t_start.elapsed());
}

/// A child process killed (and reaped) on drop, also on panic.
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 12. A broken policy file at startup: the agent exits non-zero at once, names the file and
///     every offending token, and loads nothing.
#[test]
fn agent_refuses_to_start_with_a_broken_policy_file() {
    let dir = TempDir::new("policyfile-refused");
    let file = dir.file("broken.toml");
    // Two problems in two rules: both must be named.
    write(
        &file,
        "[[container]]\n\
         name = \"billing\"\n\
         allow = [\"10.231.11.10\", \"bad..name\"]\n\
         \n\
         [[container]]\n\
         label = \"com.example.team=payments\"\n\
         colour = \"red\"\n",
    );
    // A pin directory of its own: if the agent started after all, the guard detaches it.
    let mut pin = PinDir::new("policyfile-refused");
    let t0 = Instant::now();
    let mut guard = KillOnDrop(Some(
        Command::new(bins::agent())
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("DOCKER_HOST", shared_docker_host())
            .args(["--log-format", "json", "run", "--docker", "on", "--pin-dir"])
            .arg(&pin.path)
            .arg("--policy-file")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning egress-agent run: {e}")),
    ));
    let status = loop {
        let c = guard.0.as_mut().expect("child");
        if let Some(st) = c.try_wait().expect("waiting for egress-agent") {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "egress-agent run with a broken policy file still runs after 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    let out = guard
        .0
        .take()
        .expect("child")
        .wait_with_output()
        .expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("exited with {status} after {took:?}:\n{text}");
    assert!(
        !status.success(),
        "the agent accepted a broken file: {text}"
    );
    assert!(
        took < Duration::from_secs(5),
        "refusing the file took {took:?}"
    );
    let path = file.display().to_string();
    assert!(
        text.contains(&path),
        "the error should name the file: {text}"
    );
    for token in ["bad..name", "colour"] {
        assert!(
            text.contains(&format!("`{token}`")),
            "the error should name `{token}`: {text}"
        );
    }
    assert!(
        !text.contains("\"message\":\"ready\""),
        "the agent got ready with a broken file: {text}"
    );
    assert!(
        !pin.path.exists(),
        "the agent pinned state under {} before refusing the file",
        pin.path.display()
    );
    pin.cleanup();
}
