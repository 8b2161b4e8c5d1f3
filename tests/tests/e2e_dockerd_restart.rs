//! End-to-end, test 8: dockerd restarts under a running agent. A labelled container with
//! `--restart always` is policed before; after the restart it is running again and still
//! policed, and a new labelled container started after the restart is policed too (an
//! unlabelled one is not).
//!
//! Which daemon restarts:
//! - with `EGRESS_TEST_RESTART_DOCKER=1` (set by `cargo xtask test --with-docker` when it owns
//!   the daemon), the shared one (`DOCKER_HOST`, else /var/run/docker.sock): SIGTERM, wait for
//!   its clean exit, start it again with the same command line (`setsid`, same working
//!   directory, same log), wait for `/_ping`. A guard starts it again if the test fails while
//!   it is down, and removes this test's containers;
//! - otherwise a private dockerd of the test's own (own socket, data and exec roots, no bridge,
//!   no iptables changes), so a manual run never takes the shared daemon away from others. The
//!   agent then follows only that daemon, so it runs with `--unclassified allow` (it must not
//!   deny the shared daemon's new containers, which it cannot classify).
//!
//! Containers use the host network; the targets are TCP listeners of the test on
//! `127.231.8.10` (A, `allowed.test`) and `127.231.8.11` (B), the test DNS on `127.231.8.1:53`.
//!
//! Needs root, dockerd and the test image (`cargo xtask test --with-docker`); fails with the
//! reason without them.

use std::{
    env,
    net::SocketAddr,
    time::{Duration, Instant},
};

use egress_tests::{
    dns::TestDns,
    e2e::{
        Agent, AgentOpts, Check, Containers, Docker, LAB_LABEL, PinDir, PrivateDockerd,
        SharedDockerdRestart, TcpTarget, exec_probes, image, loopback, ms, probe_script, probes_of,
        wait_until,
    },
};

const N: u8 = 8;
const TAG: &str = "restart";

enum Daemon {
    Shared(SharedDockerdRestart),
    Private(PrivateDockerd),
}

impl Daemon {
    fn restart(&mut self) -> Duration {
        match self {
            Daemon::Shared(s) => {
                let t0 = Instant::now();
                let stopped = s.stop();
                let up = s.start();
                println!(
                    "shared dockerd: stopped in {:.0} ms, answered {:.0} ms after its start",
                    ms(stopped),
                    ms(up)
                );
                t0.elapsed()
            }
            Daemon::Private(p) => p.restart(),
        }
    }
}

fn restart_shared() -> bool {
    env::var("EGRESS_TEST_RESTART_DOCKER").is_ok_and(|v| v.trim() == "1")
}

#[test]
fn dockerd_restart_keeps_policies_and_polices_new_containers() {
    let shared = Docker::require();
    let (mut daemon, docker) = if restart_shared() {
        let s = SharedDockerdRestart::find(&shared).sweeping(&format!("{LAB_LABEL}={TAG}"));
        (Daemon::Shared(s), shared.clone())
    } else {
        let p = PrivateDockerd::start(TAG);
        let d = p.docker();
        let tar = p.dir.join("image.tar");
        let tar = tar.to_string_lossy();
        shared.run(&["save", "--output", &tar, &image()]);
        d.run(&["load", "--quiet", "--input", &tar]);
        (Daemon::Private(p), d)
    };
    println!(
        "restarting {}",
        match &daemon {
            Daemon::Shared(s) => format!("the shared dockerd (pid {})", s.process.pid),
            Daemon::Private(_) => format!("a private dockerd ({})", docker.host),
        }
    );

    let (ip_dns, ip_a, ip_b) = (loopback(N, 1), loopback(N, 10), loopback(N, 11));
    let target_a = TcpTarget::start(SocketAddr::new(ip_a, 8080), "a");
    let target_b = TcpTarget::start(SocketAddr::new(ip_b, 8080), "b");
    let dns = TestDns::start_on(SocketAddr::new(ip_dns, 53))
        .unwrap_or_else(|e| panic!("test DNS on {ip_dns}:53: {e}"));
    dns.set_a("allowed.test", &[ip_a], 30);
    let mut pin = PinDir::new(TAG);
    let containers = Containers::new(&docker, &format!("egress-e2e-{TAG}"));
    let mut agent = Agent::start_docker(
        &pin.path,
        dns.addr(),
        &AgentOpts {
            unclassified_allow: matches!(daemon, Daemon::Private(_)),
            docker_host: docker.host.clone(),
            // The containers connect to A by IP: the agent's own lookup allows it.
            dns_mode: Some("resolve"),
            ..AgentOpts::default()
        },
    );

    let base = |name: &str| -> Vec<String> {
        [
            "--name",
            name,
            "--network",
            "host",
            "--dns",
            &ip_dns.to_string(),
            "--label",
            &format!("{LAB_LABEL}={TAG}"),
            "--stop-timeout",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let checks = [Check::tcp("A", ip_a, 8080), Check::tcp("B", ip_b, 8080)];

    // A labelled container that Docker restarts with the daemon.
    let kept = containers.name("kept");
    let mut args: Vec<String> = vec!["run".into(), "-d".into()];
    args.extend(base(&kept));
    args.extend(
        [
            "--restart",
            "always",
            "--label",
            "egress.allow=allowed.test",
            &image(),
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ]
        .map(String::from),
    );
    let kept_id = docker.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until(
        "the kept container to be policed with A",
        Duration::from_secs(20),
        || {
            let c = pin.container(&kept_id)?;
            c["allow"]
                .as_array()?
                .iter()
                .any(|a| a == &ip_a.to_string())
                .then_some(())
        },
    );
    let p = exec_probes(&docker, &kept, &checks);
    assert!(p[0].reached("a"), "before the restart, A: {:?}", p[0]);
    p[1].assert_denied("before the restart, B");
    let started_before = docker.inspect(&kept, "{{.State.StartedAt}}");
    let syncs_before = agent.messages("synced with Docker").len();

    let away = daemon.restart();
    println!("dockerd was away for {:.0} ms", ms(away));
    let t0 = Instant::now();
    wait_until(
        "the kept container to run again after the restart",
        Duration::from_secs(60),
        || {
            let s = docker
                .try_run(&[
                    "inspect",
                    "--format",
                    "{{.State.Running}} {{.State.StartedAt}}",
                    &kept,
                ])
                .ok()?;
            (s.starts_with("true ") && !s.ends_with(&started_before)).then_some(())
        },
    );
    println!(
        "kept container running again {:.0} ms after the daemon answered",
        ms(t0.elapsed())
    );
    // At once, whether or not the agent has resynced: the kernel knows the container.
    let p = exec_probes(&docker, &kept, &checks);
    assert!(
        p[0].reached("a"),
        "after the restart, A from the kept container: {:?}",
        p[0]
    );
    p[1].assert_denied("after the restart, B from the kept container");

    wait_until(
        "the agent to sync with the restarted daemon",
        Duration::from_secs(60),
        || (agent.messages("synced with Docker").len() > syncs_before).then_some(()),
    );
    assert!(
        agent.is_running(),
        "the agent exited:\n{}",
        agent.log_text()
    );
    let p = exec_probes(&docker, &kept, &checks);
    assert!(
        p[0].reached("a"),
        "after the resync, A from the kept container: {:?}",
        p[0]
    );
    p[1].assert_denied("after the resync, B from the kept container");

    // New containers after the restart.
    let script = probe_script(&checks);
    let run = |role: &str, labels: &[&str]| {
        let name = containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        args.extend(base(&name));
        for l in labels {
            args.extend(["--label".to_owned(), l.to_string()]);
        }
        args.extend([image(), "sh".into(), "-c".into(), script.clone()]);
        let out = docker.output(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        probes_of(&text, &checks)
    };
    let p = run("new", &["egress.allow=allowed.test"]);
    assert!(p[0].reached("a"), "new labelled container, A: {:?}", p[0]);
    p[1].assert_denied("new labelled container after the restart, B");
    let p = run("free", &[]);
    assert!(
        p[0].reached("a") && p[1].reached("b"),
        "new unlabelled container: {p:?}"
    );
    assert!(target_b.accepted() >= 1 && target_a.accepted() >= 1);

    let denied = agent.messages("egress denied");
    assert!(
        denied.iter().any(|f| f["destination"] == ip_b.to_string()),
        "the denials are logged:\n{}",
        agent.log_text()
    );
    drop(agent);
    pin.cleanup();
    containers.remove_all();
    drop(daemon);
}
