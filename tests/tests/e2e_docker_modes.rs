//! End-to-end, `--docker` does what `--help` says:
//!
//! 1. `--docker off`: Docker containers are neither policed nor denied as unclassified — also
//!    not those an earlier agent (with Docker) left policed in the pinned maps.
//! 2. `--docker on` without a Docker socket: the agent waits, retrying and saying so, and
//!    follows Docker as soon as the socket is there.
//! 3. `--docker auto`: the log says which of the two it became.
//!
//! Needs root, the shared dockerd and the test image: `cargo xtask test --with-docker`.

use std::{fs, os::unix::fs::symlink, path::PathBuf, time::Duration};

use egress_tests::e2e::{
    Agent, AgentOpts, Check, Lab, PORT, probe_script, probes_of, shared_docker_host, wait_until,
};
use serde_json::Value;

const ALLOW: &str = "egress.allow";

fn message(fields: &Value) -> &str {
    fields["message"].as_str().unwrap_or_default()
}

#[test]
fn docker_off_neither_polices_nor_denies_containers() {
    let mut lab = Lab::new("mode-off", 70);
    let a = lab.start_target("a", 10);
    let b = lab.start_target("b", 11);
    // A first agent with Docker polices a labelled container...
    lab.start_agent(&AgentOpts::default());
    let allow = a.ip.unwrap().to_string();
    let p = lab.start_sleeper("policed", &[(ALLOW, &allow)], &[]);
    lab.wait_policed(&p.id, std::slice::from_ref(&allow));
    let to_b = [Check::tcp("b", b.ip.unwrap(), PORT)];
    lab.exec_probes(&p.name, &to_b)[0].assert_denied("with a Docker-following agent");
    lab.stop_agent();

    // ... an agent with --docker off on the same pinned state lets it go,
    lab.start_agent(&AgentOpts {
        docker_mode: "off",
        ..AgentOpts::default()
    });
    let probes = lab.exec_probes(&p.name, &to_b);
    assert!(
        probes[0].reached("b"),
        "--docker off still polices: {:?}",
        probes[0]
    );
    // and a container made now (unknown to it) is not denied as unclassified.
    let (output, _) = lab.run_rm("unknown", &[(ALLOW, &allow)], &probe_script(&to_b));
    let probes = probes_of(&output, &to_b);
    assert!(
        probes[0].reached("b"),
        "--docker off denied a new container: {output}"
    );
    let status = lab.pin.status();
    assert_eq!(status["containers"], Value::Array(vec![]), "{status}");
    assert_eq!(
        status["unclassified_cgroups"],
        Value::Array(vec![]),
        "{status}"
    );
}

/// A socket path that does not exist yet; removed on drop.
struct LateSocket(PathBuf);

impl Drop for LateSocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn docker_on_waits_for_the_socket_and_says_so() {
    let lab = Lab::new("mode-on", 71);
    let sock = LateSocket(std::env::temp_dir().join(format!(
        "egress-test-late-docker-{}.sock",
        std::process::id()
    )));
    let _ = fs::remove_file(&sock.0);
    let agent = Agent::start_docker(
        &lab.pin.path,
        std::net::SocketAddr::new(lab.gateway, 53),
        &AgentOpts {
            docker_host: format!("unix://{}", sock.0.display()),
            wait_ready: false,
            ..AgentOpts::default()
        },
    );
    agent.wait_for(
        "saying that it waits for Docker",
        Duration::from_secs(10),
        |f| message(f).starts_with("--docker on: waiting for Docker"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut agent = agent;
    assert!(
        agent.is_running(),
        "the agent gave up: {}",
        agent.log_text()
    );
    assert!(
        !agent
            .lines()
            .iter()
            .any(|v| message(&v["fields"]) == "ready"),
        "ready without Docker: {}",
        agent.log_text()
    );
    // The socket appears (a link to the shared daemon's): the agent follows Docker.
    let real = shared_docker_host();
    let real = real.strip_prefix("unix://").unwrap_or(&real).to_owned();
    symlink(&real, &sock.0).expect("linking the late socket");
    agent.wait_for(
        "ready once the socket exists",
        Duration::from_secs(30),
        |f| message(f) == "ready",
    );
    agent.stop();
}

#[test]
fn docker_auto_says_what_it_became() {
    let lab = Lab::new("mode-auto", 72);
    let dns = std::net::SocketAddr::new(lab.gateway, 53);
    let missing =
        std::env::temp_dir().join(format!("egress-test-no-docker-{}.sock", std::process::id()));
    let agent = Agent::start_docker(
        &lab.pin.path,
        dns,
        &AgentOpts {
            docker_mode: "auto",
            docker_host: format!("unix://{}", missing.display()),
            ..AgentOpts::default()
        },
    );
    let f = agent.wait_for("the auto choice", Duration::from_secs(5), |f| {
        message(f).starts_with("--docker auto")
    });
    assert!(
        message(&f).contains("not following Docker (as --docker off)")
            && message(&f).contains(&missing.display().to_string()),
        "{f}"
    );
    agent.stop();
    let agent = Agent::start_docker(
        &lab.pin.path,
        dns,
        &AgentOpts {
            docker_mode: "auto",
            ..AgentOpts::default()
        },
    );
    let f = agent.wait_for("the auto choice", Duration::from_secs(5), |f| {
        message(f).starts_with("--docker auto")
    });
    assert!(
        message(&f).contains("following Docker (as --docker on)"),
        "{f}"
    );
    wait_until(
        "the agent to sync with Docker",
        Duration::from_secs(10),
        || {
            agent
                .lines()
                .iter()
                .any(|v| message(&v["fields"]) == "synced with Docker")
                .then_some(())
        },
    );
    agent.stop();
}
