//! The bench's containers: busybox (the harness's test image) with `--network none` (the DNS
//! part's: the default bridge with `--dns` at its gateway, or another container's network), the
//! agent's attach cgroup as `--cgroup-parent` and this run's label, named and removed through
//! the harness's [`Containers`]. Also the cleanup of what containers leave: the cgroups runc
//! mirrors in the v1 hierarchies, and the containers of killed runs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use egress_common::container::ContainerId;
use egress_tests::{
    cgroup::remove_tree,
    command::run_ok,
    e2e::{self, Containers, Docker},
};

/// The label every bench container carries, with the pid of its run as the value.
pub const RUN_LABEL: &str = "bench.egress-enforcer";

/// How a bench container is launched.
#[derive(Debug, Clone, Copy)]
pub enum Launch {
    /// `docker run --rm`, waited for.
    Foreground,
    /// `docker run -d`.
    Detached,
    /// `docker create`: known to Docker (and the agent), never started.
    Create,
}

/// `--label` values of a container.
pub type Labels = [(String, String)];

/// An `egress.allow` label.
pub fn allow(entries: String) -> Vec<(String, String)> {
    vec![(egress_policy::labels::ALLOW_LABEL.to_owned(), entries)]
}

pub struct Fleet {
    docker: Docker,
    image: String,
    /// The cgroup v2 directory of `--cgroup-parent` (the agent's attach cgroup).
    attach: PathBuf,
    names: Containers,
    /// The names given so far, removed in chunks on drop (one `docker rm` of a thousand
    /// containers could outlast the harness's time limit).
    made: Vec<String>,
}

impl Fleet {
    pub fn new(docker: Docker, attach: &Path) -> Self {
        let names = Containers::new(&docker, &format!("egress-bench-{}", std::process::id()));
        Self {
            docker,
            image: e2e::image(),
            attach: attach.to_owned(),
            names,
            made: Vec::new(),
        }
    }

    /// The docker CLI (no time limit of its own: the callers give one).
    pub fn docker_cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.args(["--host", &self.docker.host]);
        c
    }

    /// `docker run` or `create` of a new bench container running `cmd`, `--network none`.
    pub fn command(&mut self, launch: Launch, labels: &Labels, cmd: &[&str]) -> Command {
        self.command_on(launch, &["--network", "none"], labels, cmd)
    }

    /// [`command`](Self::command) with these network options (`--network ...`, `--dns ...`).
    pub fn command_on(
        &mut self,
        launch: Launch,
        network: &[&str],
        labels: &Labels,
        cmd: &[&str],
    ) -> Command {
        let name = self.names.name("c");
        self.made.push(name.clone());
        let mut c = self.docker_cmd();
        c.args(match launch {
            Launch::Foreground => ["run", "--rm"].as_slice(),
            Launch::Detached => &["run", "-d"],
            Launch::Create => &["create"],
        });
        let parent = self.attach.file_name().unwrap_or_default();
        c.args(["--name", &name])
            .args(network)
            .arg("--cgroup-parent")
            .arg(Path::new("/").join(parent))
            .arg("--label")
            .arg(format!("{RUN_LABEL}={}", std::process::id()));
        for (k, v) in labels {
            c.arg("--label").arg(format!("{k}={v}"));
        }
        c.arg(&self.image).args(cmd);
        c
    }

    /// Runs a container to completion; returns the wall time of `docker run`.
    pub fn run_rm(&mut self, labels: &Labels) -> Result<Duration> {
        let mut cmd = self.command(Launch::Foreground, labels, &["true"]);
        let t0 = Instant::now();
        run_ok(&mut cmd, Duration::from_secs(120))?;
        Ok(t0.elapsed())
    }

    /// Starts a long-running container; returns its id.
    pub fn run_detached(&mut self, labels: &Labels) -> Result<ContainerId> {
        self.long_running(Launch::Detached, labels)
    }

    /// Creates (does not start) a long-running container; returns its id.
    pub fn create(&mut self, labels: &Labels) -> Result<ContainerId> {
        self.long_running(Launch::Create, labels)
    }

    fn long_running(&mut self, launch: Launch, labels: &Labels) -> Result<ContainerId> {
        let out = run_ok(
            &mut self.command(launch, labels, &SLEEP),
            Duration::from_secs(120),
        )?;
        parse_id(launch, &out.stdout)
    }

    /// Starts a long-running container for each of `labels` with these network options,
    /// `parallel` `docker run -d` at a time; returns their ids in order.
    pub fn run_many_on(
        &mut self,
        network: &[&str],
        labels: &[Vec<(String, String)>],
        parallel: usize,
    ) -> Result<Vec<ContainerId>> {
        let mut ids = Vec::with_capacity(labels.len());
        for chunk in labels.chunks(parallel.max(1)) {
            let children: Vec<std::process::Child> = chunk
                .iter()
                .map(|l| {
                    self.command_on(Launch::Detached, network, l, &SLEEP)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                })
                .collect::<std::io::Result<_>>()?;
            for child in children {
                let out = child.wait_with_output()?;
                if !out.status.success() {
                    anyhow::bail!(
                        "`docker run -d` failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                ids.push(parse_id(
                    Launch::Detached,
                    &String::from_utf8_lossy(&out.stdout),
                )?);
            }
        }
        Ok(ids)
    }

    /// `docker inspect --format FORMAT` of a container.
    pub fn inspect(&self, id: &ContainerId, format: &str) -> Result<String> {
        self.docker
            .try_run(&["inspect", "--format", format, id.as_str()])
            .map(|s| s.trim().to_owned())
            .map_err(anyhow::Error::msg)
    }

    /// The IPv4 gateway of Docker's default bridge (the host's side of `docker0`).
    pub fn bridge_gateway(&self) -> Result<std::net::Ipv4Addr> {
        let out = self
            .docker
            .try_run(&[
                "network",
                "inspect",
                "--format",
                "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
                "bridge",
            ])
            .map_err(anyhow::Error::msg)?;
        if let Some(gw) = out.split_whitespace().find_map(|a| a.parse().ok()) {
            return Ok(gw);
        }
        // The default bridge often leaves `Gateway` empty: the address of its interface.
        let dev = self
            .docker
            .try_run(&[
                "network",
                "inspect",
                "--format",
                "{{index .Options \"com.docker.network.bridge.name\"}}",
                "bridge",
            ])
            .map_err(anyhow::Error::msg)?;
        let dev = dev.trim();
        let addrs = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", dev])
            .output()
            .with_context(|| format!("ip -4 addr show dev {dev}"))?;
        String::from_utf8_lossy(&addrs.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next()?.parse().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the bridge network has no IPv4 gateway ({out:?}; {dev:?} has no IPv4 address)"
                )
            })
    }

    /// The cgroup v2 directory of `--cgroup-parent`.
    pub fn attach(&self) -> &Path {
        &self.attach
    }

    /// The cgroup v2 directory runc makes for a container.
    pub fn cgroup_of(&self, id: &ContainerId) -> PathBuf {
        self.attach.join(id.as_str())
    }
}

/// What a long-running bench container runs.
const SLEEP: [&str; 2] = ["sleep", "3600"];

/// The container id `docker run -d` or `docker create` printed.
fn parse_id(launch: Launch, stdout: &str) -> Result<ContainerId> {
    let id = stdout.trim();
    id.parse()
        .map_err(|e| anyhow::anyhow!("`docker {launch:?}` printed {id:?}: {e}"))
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for chunk in self.made.chunks(50) {
            let _ = self
                .docker_cmd()
                .args(["rm", "-f"])
                .args(chunk)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        // Then `names` drops: a last `docker rm -f` of every name (gone by now).
    }
}

/// The cgroup directories runc made for `--cgroup-parent` in every v1 hierarchy; removed on
/// drop once the containers are gone.
pub struct MirroredParents {
    pub name: String,
}

impl Drop for MirroredParents {
    fn drop(&mut self) {
        for e in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path().join(&self.name);
            if p.is_dir() {
                remove_tree(&p);
            }
        }
    }
}

/// Removes bench containers of earlier runs that were killed (label [`RUN_LABEL`] with the pid
/// of a process that is gone).
pub fn sweep_killed_runs(docker: &Docker) {
    let format = format!("{{{{.ID}}}} {{{{.Label \"{RUN_LABEL}\"}}}}");
    let filter = format!("label={RUN_LABEL}");
    let Ok(list) = docker.try_run(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &filter,
        "--format",
        &format,
    ]) else {
        return;
    };
    for line in list.lines() {
        let Some((id, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = docker.try_run(&["rm", "-f", id]);
        }
    }
}
