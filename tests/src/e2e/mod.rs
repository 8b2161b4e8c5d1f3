//! End-to-end harness: a real dockerd, real containers, the real `egress-agent run --docker on`
//! attached at the cgroup v2 root, and a test DNS server.
//!
//! A [`Lab`] is one test's world: a user-defined bridge network with a fixed subnet
//! (`10.231.<n>.0/24`, gateway `.1`), a [`TestDns`] on the gateway's port 53, its containers
//! (every one gets `--network <net> --dns <gateway>`), its agent and its bpffs pin directory.
//! Dropping it (also on panic) stops the agent, cleans up its pin directory (the code of
//! `egress-agent cleanup`), removes the containers, the network and the DNS server. Targets are busybox containers with fixed
//! IPs answering `ok` on TCP 8080 and 8081 ([`Lab::start_target`]); UDP reaches a receiver of
//! the test's own opened inside a target's network namespace ([`UdpSink`]). Clients are
//! busybox containers running a [`probe_script`], whose `PROBE` lines say what the kernel
//! answered and how long it took ([`Probe`]).
//!
//! Traffic only ever goes to the lab's own containers and DNS server; no real name is
//! resolved. Nothing is skipped: without Docker or the test image the tests fail with the
//! reason ([`Docker::require`]).
//!
//! Address plan: `10.231.<n>.0/24` for the bridge test `n`, `127.231.<n>.0/24` for tests on the
//! host network (see [`loopback`]), so no two e2e tests share an address.
//!
//! The lab is built from the shared pieces of the harness ([`crate::docker`], [`crate::agent`],
//! [`crate::pins`], [`crate::dns`]); [`probes`] holds what clients run and report, [`targets`]
//! what they reach. The pieces are re-exported here under their old `e2e::` paths.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::dns::TestDns;

pub mod dns;
pub mod probes;
pub mod targets;

pub use crate::{
    agent::{Agent, AgentOpts, DOCKER_READY_TIMEOUT as READY_TIMEOUT},
    docker::{
        Containers, DEFAULT_DOCKER_HOST, DEFAULT_IMAGE, Docker, DockerdProcess, PrivateDockerd,
        SharedDockerdRestart, dockerd_processes, dockerd_socket, image, ping, shared_docker_host,
    },
    pins::PinDir,
    process::alive,
    wait::wait_until,
};
pub use dns::{EMBEDDED_DNS, Net, assert_answered, assert_stopped, probe_in};
pub use probes::{
    Check, EPERM_TEXT, IMMEDIATE, Outcome, Probe, WAIT_FOR_DNS, exec_probes, parse_probes,
    probe_script, probes_of,
};
pub use targets::{
    DOT_PORT, ECHO_PORT, OTHER_PORT, PORT, TcpTarget, UDP_PORT, UdpSink, answers_ok, loopback,
};

/// Label put on every container of a lab (its value is the lab's tag), to sweep leftovers of
/// killed runs. It does not start with `egress.`, so the agent ignores it.
pub const LAB_LABEL: &str = "test.egress-e2e.lab";

/// Milliseconds, for reports.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A container the lab started.
#[derive(Debug, Clone)]
pub struct Started {
    pub name: String,
    pub id: String,
    pub ip: Option<IpAddr>,
}

impl Started {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// A client container's run.
#[derive(Debug, Clone)]
pub struct ClientRun {
    pub name: String,
    pub id: String,
    pub output: String,
    /// Wall time of `docker start -a` (or `docker run`).
    pub wall: Duration,
}

/// One test's world: see the module docs. Fields drop in the order the cleanup needs
/// (see the `Drop` impl).
pub struct Lab {
    pub tag: String,
    pub n: u8,
    pub docker: Docker,
    pub network: String,
    pub gateway: IpAddr,
    pub dns: TestDns,
    pub pin: PinDir,
    agent: Option<Agent>,
    pub containers: Containers,
    sinks: Vec<UdpSink>,
    /// Networks the test made beside the lab's own ([`Lab::create_network`]).
    extra_networks: Vec<String>,
    /// The glibc probe image, once built ([`Lab::probe_image`]).
    probe_image: std::sync::OnceLock<String>,
}

impl Lab {
    /// Docker (required), a network `egress-e2e-<tag>` on `10.231.<n>.0/24`, the test DNS on
    /// `10.231.<n>.1:53`. No agent yet.
    #[track_caller]
    pub fn new(tag: &str, n: u8) -> Self {
        let docker = Docker::require();
        let network = format!("egress-e2e-{tag}");
        sweep_lab(&docker, tag, &network);
        let gateway = IpAddr::V4(Ipv4Addr::new(10, 231, n, 1));
        let containers = Containers::new(&docker, &format!("egress-e2e-{tag}"));
        let pin = PinDir::new(tag);
        docker.run(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            &format!("10.231.{n}.0/24"),
            "--gateway",
            &gateway.to_string(),
            "--label",
            &format!("{LAB_LABEL}={tag}"),
            &network,
        ]);
        // From here the network is ours; a panic below still removes it.
        let dns = match TestDns::start_on(SocketAddr::new(gateway, 53)) {
            Ok(d) => d,
            Err(e) => {
                let _ = docker.output(&["network", "rm", &network]);
                panic!("starting the test DNS on {gateway}:53: {e}");
            }
        };
        Self {
            tag: tag.to_owned(),
            n,
            docker,
            network,
            gateway,
            dns,
            pin,
            agent: None,
            containers,
            sinks: Vec::new(),
            extra_networks: Vec::new(),
            probe_image: std::sync::OnceLock::new(),
        }
    }

    /// `10.231.<n>.<host>`.
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 231, self.n, host))
    }

    /// The options every container of the lab gets.
    fn base_args(&self, name: &str) -> Vec<String> {
        let mut args = self.base_args_on(name, None);
        args.extend([
            "--network".into(),
            self.network.clone(),
            "--dns".into(),
            self.gateway.to_string(),
        ]);
        args
    }

    /// The options of a container on `network` (`host`, `container:<name>`, ...) instead of
    /// the lab's network, or on none at all (`None`: the caller adds them). No `--dns`: Docker
    /// refuses it beside `container:` networks, and such a container must use IPs only.
    fn base_args_on(&self, name: &str, network: Option<&str>) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--name".into(),
            name.into(),
            "--label".into(),
            format!("{LAB_LABEL}={}", self.tag),
            "--stop-timeout".into(),
            "1".into(),
        ];
        if let Some(n) = network {
            args.extend(["--network".into(), n.to_owned()]);
        }
        args
    }

    /// `docker create` (not started) of a sleeper with these labels and extra options.
    #[track_caller]
    pub fn create_only(&self, role: &str, labels: &[(&str, &str)], extra: &[&str]) -> Started {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["create".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([image(), "sleep".into(), "60".into()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// A detached container running `script` on `network` (`host`, `container:<name>`)
    /// rather than the lab's network; it resolves no names.
    #[track_caller]
    pub fn start_detached_on(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        network: &str,
        script: &str,
    ) -> Started {
        self.detached(
            role,
            labels,
            |name| self.base_args_on(name, Some(network)),
            &[],
            script,
        )
    }

    /// A target host at `10.231.<n>.<host>`: answers `ok <role>` on TCP 8080, 8081 and 853
    /// (DNS over TLS's port), echoes on TCP [`ECHO_PORT`] (unpoliced; `role` is one word).
    /// Returns once 8080 and 8081 answer from the host.
    #[track_caller]
    pub fn start_target(&self, role: &str, host: u8) -> Started {
        self.start_target_with(role, host, &[])
    }

    /// [`Lab::start_target`] with more `docker run` options (`--network-alias db`, ...).
    #[track_caller]
    pub fn start_target_with(&self, role: &str, host: u8, extra: &[&str]) -> Started {
        let name = self.containers.name(role);
        let ip = self.ip(host);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(self.base_args(&name));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--ip".into(), ip.to_string(), image()]);
        args.extend([
            "sh".into(),
            "-c".into(),
            format!(
                "trap 'exit 0' TERM; nc -ll -p {PORT} -e echo ok {role} & \
                 nc -ll -p {OTHER_PORT} -e echo ok {role} & nc -ll -p {DOT_PORT} -e echo ok {role} & \
                 nc -ll -p {ECHO_PORT} -e cat & while :; do sleep 1; done"
            ),
        ]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for port in [PORT, OTHER_PORT] {
            let addr = SocketAddr::new(ip, port);
            wait_until(
                &format!("target {name} to answer on {addr}"),
                Duration::from_secs(20),
                || answers_ok(addr).then_some(()),
            );
        }
        Started {
            name,
            id,
            ip: Some(ip),
        }
    }

    /// A [`UdpSink`] on UDP 9000 in the target's network namespace (kept until the lab ends).
    #[track_caller]
    pub fn udp_sink(&mut self, target: &Started) -> usize {
        let pid = self.docker.pid(&target.id);
        self.sinks.push(UdpSink::start_in_netns_of(pid, UDP_PORT));
        self.sinks.len() - 1
    }

    pub fn sink(&self, i: usize) -> &UdpSink {
        &self.sinks[i]
    }

    fn label_args(labels: &[(&str, &str)]) -> Vec<String> {
        labels
            .iter()
            .flat_map(|(k, v)| ["--label".to_owned(), format!("{k}={v}")])
            .collect()
    }

    /// `docker create` + `docker start -a` of a client that runs `script`; its output
    /// (stdout and stderr), id and wall time. The container is removed when the lab ends.
    ///
    /// Between create and start it waits until the agent has registered the container
    /// (`egress-agent status` lists it) with every allow entry of `ready` (e.g. the IPs of its
    /// allowed names in `egress.dns=resolve` mode), and the script starts with
    /// [`WAIT_FOR_DNS`] (the agent's DNS proxy opens once the container runs): these clients
    /// test what a policy allows, not how fast it is written (the first-instruction race is
    /// [`Lab::run_rm`]'s business).
    #[track_caller]
    pub fn run_client(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        script: &str,
        ready: &[String],
    ) -> ClientRun {
        self.run_client_from(&image(), role, labels, script, ready)
    }

    /// [`Lab::run_client`] of a container made from `image` (one the test built, say).
    #[track_caller]
    pub fn run_client_from(
        &self,
        image: &str,
        role: &str,
        labels: &[(&str, &str)],
        script: &str,
        ready: &[String],
    ) -> ClientRun {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["create".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        let script = match self.agent {
            Some(_) => format!("{WAIT_FOR_DNS}{script}"),
            None => script.to_owned(),
        };
        args.extend([image.into(), "sh".into(), "-c".into(), script]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if self.agent.is_some() {
            self.wait_registered(&id, ready);
        }
        let t0 = Instant::now();
        let out = self.docker.output(&["start", "-a", &id]);
        let wall = t0.elapsed();
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ClientRun {
            name,
            id,
            output,
            wall,
        }
    }

    /// A client that runs `checks` and exits (see [`Lab::run_client`] for `ready`); its
    /// probes in the checks' order.
    #[track_caller]
    pub fn probe_client(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        checks: &[Check],
        ready: &[String],
    ) -> (ClientRun, Vec<Probe>) {
        self.probe_client_from(&image(), role, labels, checks, ready)
    }

    /// [`Lab::probe_client`] of a container made from `image`.
    #[track_caller]
    pub fn probe_client_from(
        &self,
        image: &str,
        role: &str,
        labels: &[(&str, &str)],
        checks: &[Check],
        ready: &[String],
    ) -> (ClientRun, Vec<Probe>) {
        let run = self.run_client_from(image, role, labels, &probe_script(checks), ready);
        let probes = probes_of(&run.output, checks);
        (run, probes)
    }

    /// `docker run --rm` of a one-shot client (the realistic path: create, start, attach in one
    /// call); its output and wall time.
    #[track_caller]
    pub fn run_rm(&self, role: &str, labels: &[(&str, &str)], script: &str) -> (String, Duration) {
        self.run_rm_from(&image(), role, labels, script)
    }

    /// [`Lab::run_rm`] of a container made from `image`.
    #[track_caller]
    pub fn run_rm_from(
        &self,
        image: &str,
        role: &str,
        labels: &[(&str, &str)],
        script: &str,
    ) -> (String, Duration) {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
        args.extend(self.base_args(&name));
        args.extend(Self::label_args(labels));
        args.extend([image.into(), "sh".into(), "-c".into(), script.to_owned()]);
        let t0 = Instant::now();
        let out = self
            .docker
            .output(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let wall = t0.elapsed();
        (
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            wall,
        )
    }

    /// A long-running container (`sleep` loop, stops at once on SIGTERM) with these labels and
    /// extra `docker run` options; probe it with [`Lab::exec_probes`].
    #[track_caller]
    pub fn start_sleeper(&self, role: &str, labels: &[(&str, &str)], extra: &[&str]) -> Started {
        self.start_detached(
            role,
            labels,
            extra,
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        )
    }

    /// A detached container running `script` in `sh -c`.
    #[track_caller]
    pub fn start_detached(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        extra: &[&str],
        script: &str,
    ) -> Started {
        self.detached(role, labels, |name| self.base_args(name), extra, script)
    }

    /// `docker run -d` of `sh -c SCRIPT` with the options `base` gives for its name.
    #[track_caller]
    fn detached(
        &self,
        role: &str,
        labels: &[(&str, &str)],
        base: impl FnOnce(&str) -> Vec<String>,
        extra: &[&str],
        script: &str,
    ) -> Started {
        let name = self.containers.name(role);
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        args.extend(base(&name));
        args.extend(Self::label_args(labels));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([image(), "sh".into(), "-c".into(), script.to_owned()]);
        let id = self
            .docker
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Started { name, id, ip: None }
    }

    /// Runs the checks in a running container (`docker exec`).
    #[track_caller]
    pub fn exec_probes(&self, container: &str, checks: &[Check]) -> Vec<Probe> {
        exec_probes(&self.docker, container, checks)
    }

    /// Starts the agent (its pin directory is the lab's; the DNS server is the lab's).
    #[track_caller]
    pub fn start_agent(&mut self, opts: &AgentOpts) -> &Agent {
        assert!(self.agent.is_none(), "the lab's agent already runs");
        let agent = Agent::start_docker(&self.pin.path, SocketAddr::new(self.gateway, 53), opts);
        self.agent.insert(agent)
    }

    /// The running agent.
    #[track_caller]
    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("the lab's agent runs")
    }

    /// Stops the agent with SIGTERM (its pinned state stays) and returns its log.
    #[track_caller]
    pub fn stop_agent(&mut self) -> String {
        let agent = self.agent.take().expect("the lab's agent runs");
        let log = agent.log_text();
        agent.stop();
        log
    }

    /// Kills the agent with SIGKILL, as in a crash (its pinned state stays).
    pub fn kill_agent(&mut self) {
        drop(self.agent.take());
    }

    /// Waits until `egress-agent status` shows the container policed with an allow entry
    /// equal to each of `entries` (e.g. `10.231.1.10`, `10.231.1.10:8080`); returns the
    /// container's status entry.
    #[track_caller]
    pub fn wait_policed(&self, id: &str, entries: &[String]) -> Value {
        let c = self.wait_registered(id, entries);
        assert_eq!(c["policed"], true, "container {id} is not policed: {c}");
        c
    }

    /// Waits until `egress-agent status` lists the container (policed or not) with an allow
    /// entry equal to each of `entries`; returns its status entry.
    #[track_caller]
    pub fn wait_registered(&self, id: &str, entries: &[String]) -> Value {
        wait_until(
            &format!("status to list container {id} with {entries:?}"),
            Duration::from_secs(20),
            || {
                let c = self.pin.container(id)?;
                let allow: Vec<String> = c["allow"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect();
                entries.iter().all(|e| allow.contains(e)).then_some(c)
            },
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The agent, then its programs and maps (no fail-closed leftovers on the host), then
        // the containers, the UDP sinks (their netns goes with the containers), the network;
        // the DNS server stops when the fields drop.
        drop(self.agent.take());
        self.pin.cleanup();
        self.containers.remove_all();
        self.sinks.clear();
        for net in self.extra_networks.iter().chain([&self.network]) {
            if let Err(e) = self.docker.try_run(&["network", "rm", net]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Removes what a killed earlier run of lab `tag` left: its containers and its networks.
fn sweep_lab(docker: &Docker, tag: &str, network: &str) {
    if docker.remove_containers(Some(&format!("{LAB_LABEL}={tag}"))) > 0 {
        eprintln!("removing leftover containers of lab {tag}");
    }
    let labelled = docker
        .try_run(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label={LAB_LABEL}={tag}"),
        ])
        .unwrap_or_default();
    let mut leftovers: Vec<&str> = labelled.split_whitespace().collect();
    if !leftovers.contains(&network) && docker.try_run(&["network", "inspect", network]).is_ok() {
        leftovers.push(network);
    }
    for net in leftovers {
        eprintln!("removing the leftover network {net}");
        let _ = docker.output(&["network", "rm", net]);
    }
}
