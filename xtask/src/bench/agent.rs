//! Part 4: what the agent itself costs, with the real `egress-agent run` binary and dockerd:
//!
//! - `docker run --rm` latency of a labelled container with and without the agent (alternated
//!   in rounds; "without" means no agent and no programs);
//! - time from `docker run -d` of a labelled container to its entry in the agent's container
//!   map, to its cgroup enforcing the policy, and to its domain's IP in the allow map;
//! - the agent's RSS and CPU while idle with N policed containers, and during a churn of
//!   containers;
//! - its RSS with 1,000 cgroup policies of 10 entries (`--policy`, no Docker);
//! - the time and CPU to resolve and to refresh 1,000 domains (one container selected by the
//!   policy file with 1,000 allowed names whose answers change).
//!
//! The agent attaches at a cgroup of its own (`<cgroup2>/egress-bench-<pid>-docker`, which is
//! the `--cgroup-parent` of every bench container) with its own pin directory, so it judges
//! the bench's containers only. Its DNS server is the bench's own ([`super::dns`]) on
//! 127.77.2.1; the containers run with `--network none` and send nothing. Everything is removed
//! at the end: containers, agent, pins, cgroups (also those runc made in the v1 hierarchies),
//! and a dockerd this run started (with its host changes).

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use egress_agent::{
    container::ContainerId,
    enforcer::{
        keys::{RuleKey, encode},
        layout::PinDir,
    },
    policy::Rule,
};
use egress_common::{
    container::ContainerKey,
    maps,
    policy::{CgroupPolicy, FLAG_UNCLASSIFIED},
    rule::{Ip4RuleKey, RuleValue},
};
use serde_json::json;

use super::{
    Section, Target,
    dns::{self, Dns},
    env::{Cgroups, Daemon, require_tool, run_ok},
    lab::PinGuard,
    note,
    stats::{self, Ratio},
};
use crate::{cargo, docker, sys};

const DNS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 77, 2, 1)), 5353);
/// The label the policy file selects the refresh container by.
const REFRESH_LABEL: &str = "bench.egress-enforcer.refresh";
const MIB: f64 = 1024.0 * 1024.0;

pub struct Opts {
    pub quick: bool,
    /// `docker run` latency: rounds, and runs per side per round.
    pub latency_rounds: usize,
    pub latency_runs: usize,
    /// Containers whose time to policy is measured (they stay as policed containers).
    pub policy_runs: usize,
    /// Policed containers for the idle figures.
    pub containers: usize,
    pub idle: Duration,
    pub churn: usize,
    /// Labelled containers in all for the RSS with many containers (the ones beyond the
    /// running ones are created, not started).
    pub created: usize,
    pub policies: usize,
    pub domains: usize,
    pub refresh_cycles: usize,
}

impl Opts {
    pub fn new(quick: bool, rounds: usize) -> Self {
        if quick {
            Self {
                quick,
                latency_rounds: rounds.min(2),
                latency_runs: 2,
                policy_runs: 3,
                containers: 10,
                idle: Duration::from_secs(3),
                churn: 5,
                created: 30,
                policies: 1_000,
                domains: 100,
                refresh_cycles: 1,
            }
        } else {
            Self {
                quick,
                latency_rounds: rounds.min(5),
                latency_runs: 4,
                policy_runs: 10,
                containers: 100,
                idle: Duration::from_secs(10),
                churn: 30,
                created: 1_000,
                policies: 1_000,
                domains: 1_000,
                refresh_cycles: 3,
            }
        }
    }
}

pub fn check_tools() -> Result<()> {
    require_tool("docker", "docker.io", "the agent benchmarks")?;
    if !docker::ping(docker::SOCK) {
        require_tool("dockerd", "docker.io", "the agent benchmarks")?;
        require_tool("iptables", "iptables", "dockerd")?;
    }
    Ok(())
}

fn docker_cmd() -> Command {
    let mut c = Command::new("docker");
    c.arg("--host").arg(format!("unix://{}", docker::SOCK));
    c
}

/// Containers this run made; removed on drop (also any other with this run's label).
struct Containers {
    label: String,
    ids: Vec<String>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        let mut ids = std::mem::take(&mut self.ids);
        if let Ok(o) = docker_cmd()
            .args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label={}", self.label))
            .stdin(Stdio::null())
            .output()
        {
            ids.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
        ids.sort();
        ids.dedup();
        for chunk in ids.chunks(50) {
            let _ = docker_cmd()
                .args(["rm", "-f"])
                .args(chunk)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The cgroup directories runc made for `--cgroup-parent` in every hierarchy (v1 ones too);
/// removed on drop once the containers are gone.
struct ParentCgroups {
    name: String,
}

impl Drop for ParentCgroups {
    fn drop(&mut self) {
        for e in fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path().join(&self.name);
            if p.is_dir() {
                super::env::remove_tree(&p);
            }
        }
    }
}

/// CPU time (user + system) of a process.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |k: &str| -> f64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            * 1024.0
    };
    Ok((kib("VmRSS:"), kib("VmHWM:")))
}

/// A running `egress-agent run`.
struct Agent {
    daemon: Daemon,
    log: PathBuf,
}

impl Agent {
    fn start(bin: &Path, args: &[String], log: &Path) -> Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.env_remove("RUST_LOG")
            .env_remove("EGRESS_LOG")
            .env_remove("EGRESS_ATTACH_CGROUP")
            .env_remove("EGRESS_PIN_DIR")
            .env_remove("EGRESS_POLICY_FILE")
            .args(["--log-format", "json", "--log-level", "info", "run"])
            .args(args);
        let mut daemon = Daemon::spawn("egress-agent", &mut cmd, log)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.contains("\"message\":\"ready\"") {
                break;
            }
            daemon
                .check_alive()
                .with_context(|| format!("see {}", log.display()))?;
            sys::check_interrupted()?;
            if Instant::now() > deadline {
                bail!(
                    "egress-agent was not ready within 60 s; see {}",
                    log.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(Self {
            daemon,
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    fn stop(mut self) -> Result<()> {
        self.daemon
            .check_alive()
            .with_context(|| format!("see {}", self.log.display()))?;
        self.daemon.stop();
        Ok(())
    }
}

/// The agent's pinned maps, read from the bench.
struct Maps {
    containers: BpfHashMap<MapData, ContainerKey, CgroupPolicy>,
    cgroups: BpfHashMap<MapData, u64, CgroupPolicy>,
    allow4: BpfHashMap<MapData, Ip4RuleKey, RuleValue>,
}

impl Maps {
    fn open(pin: &Path) -> Result<Self> {
        let dir = PinDir::new(pin);
        let open = |name: &str| -> Result<Map> {
            let data = MapData::from_pin(dir.map(name))
                .with_context(|| format!("opening the agent's pinned map {name}"))?;
            Ok(Map::HashMap(data))
        };
        Ok(Self {
            containers: open(maps::CONTAINERS)?.try_into()?,
            cgroups: open(maps::CGROUP_POLICY)?.try_into()?,
            allow4: open(maps::ALLOW_V4)?.try_into()?,
        })
    }

    fn container_keys(&self) -> HashSet<[u8; 64]> {
        self.containers.keys().flatten().map(|k| k.id).collect()
    }

    fn container(&self, id: &ContainerId) -> Option<CgroupPolicy> {
        self.containers.get(&id.key(), 0).ok()
    }

    fn has_rule(&self, policy_id: u32, rule: &Rule) -> bool {
        match encode(policy_id, rule) {
            RuleKey::V4(k) => self.allow4.get(&k, 0).is_ok(),
            _ => false,
        }
    }
}

fn rule(ip: Ipv4Addr, port: u16) -> Rule {
    Rule::addr(IpAddr::V4(ip), Some(port)).expect("a valid port")
}

struct Bench<'a> {
    dir: &'a Path,
    bin: PathBuf,
    pin: PathBuf,
    attach: PathBuf,
    parent: String,
    label: String,
    containers: &'a mut Containers,
    dns: &'a Dns,
    policy_file: PathBuf,
    serial: usize,
}

impl Bench<'_> {
    fn agent_args(&self) -> Vec<String> {
        [
            "--docker",
            "on",
            "--pin-dir",
            &self.pin.to_string_lossy(),
            "--attach-cgroup",
            &self.attach.to_string_lossy(),
            "--dns-server",
            &self.dns.addr.to_string(),
            "--policy-file",
            &self.policy_file.to_string_lossy(),
            "--ttl-floor",
            &dns::TTL_REFRESH.to_string(),
            "--grace",
            "0",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn start_agent(&mut self, what: &str) -> Result<Agent> {
        self.serial += 1;
        let log = self.dir.join(format!("agent-{}-{what}.log", self.serial));
        Agent::start(&self.bin, &self.agent_args(), &log)
    }

    fn stop_agent(&self, a: Agent) -> Result<()> {
        a.stop()?;
        egress_agent::status::cleanup(&self.pin)
            .with_context(|| format!("cleaning up {}", self.pin.display()))?;
        Ok(())
    }

    /// `docker run` or `create` of a bench container: `--cgroup-parent` ours, no network, our
    /// label.
    fn run_cmd(&self, launch: Launch, labels: &[(String, String)], cmd: &[&str]) -> Command {
        let mut c = docker_cmd();
        c.args(match launch {
            Launch::Foreground => ["run", "--rm"].as_slice(),
            Launch::Detached => &["run", "-d"],
            Launch::Create => &["create"],
        });
        c.arg("--network")
            .arg("none")
            .arg("--cgroup-parent")
            .arg(format!("/{}", self.parent))
            .arg("--label")
            .arg(&self.label);
        for (k, v) in labels {
            c.arg("--label").arg(format!("{k}={v}"));
        }
        c.arg(docker::TEST_IMAGE).args(cmd);
        c
    }

    /// Runs a container to completion; returns the wall time of `docker run`.
    fn run_rm(&self, labels: &[(String, String)]) -> Result<Duration> {
        let t0 = Instant::now();
        run_ok(
            &mut self.run_cmd(Launch::Foreground, labels, &["true"]),
            Duration::from_secs(120),
        )?;
        Ok(t0.elapsed())
    }

    /// Starts a long-running container; returns its id.
    fn run_detached(&mut self, labels: &[(String, String)]) -> Result<ContainerId> {
        self.long_running(Launch::Detached, labels)
    }

    /// Creates (does not start) a long-running container; returns its id.
    fn create(&mut self, labels: &[(String, String)]) -> Result<ContainerId> {
        self.long_running(Launch::Create, labels)
    }

    fn long_running(&mut self, launch: Launch, labels: &[(String, String)]) -> Result<ContainerId> {
        let out = run_ok(
            &mut self.run_cmd(launch, labels, &["sleep", "3600"]),
            Duration::from_secs(120),
        )?;
        let id = out.stdout.trim().to_owned();
        self.containers.ids.push(id.clone());
        id.parse()
            .map_err(|e| anyhow::anyhow!("`docker {launch:?}` printed {id:?}: {e}"))
    }

    fn cgroup_of(&self, id: &ContainerId) -> PathBuf {
        self.attach.join(id.as_str())
    }

    fn labels(allow: String) -> Vec<(String, String)> {
        vec![(egress_agent::labels::ALLOW_LABEL.to_owned(), allow)]
    }
}

/// The `egress.allow` of the `n`-th of many bench containers: 8 loopback addresses (third
/// octets from `octet`) and 2 domains of the bench's zone (numbered from `domain`, distinct per
/// `n`).
fn many_allow(n: usize, octet: usize, domain: usize) -> String {
    let mut allow: Vec<String> = (0..8)
        .map(|k| format!("127.78.{}.{}:443", octet + k, n % 250 + 1))
        .collect();
    allow.push(format!("c{}.{}:443", domain + 2 * n, dns::ZONE));
    allow.push(format!("c{}.{}", domain + 1 + 2 * n, dns::ZONE));
    allow.join(",")
}

/// How a bench container is launched.
#[derive(Debug, Clone, Copy)]
enum Launch {
    /// `docker run --rm`, waited for.
    Foreground,
    /// `docker run -d`.
    Detached,
    /// `docker create`: known to Docker (and the agent), never started.
    Create,
}

/// What one `docker run -d` took until each stage was in the agent's maps.
#[derive(Debug, Default, serde::Serialize)]
struct PolicyTiming {
    docker_run_returned_ms: f64,
    container_entry_ms: f64,
    /// When the container's cgroup v2 directory (made by runc) was first seen.
    cgroup_created_ms: f64,
    /// Whether that first sight already showed the container's policy in the cgroup map (the
    /// `cgroup_mkdir` program gave it at creation), rather than `unclassified` or nothing.
    policed_at_creation: bool,
    cgroup_policed_ms: f64,
    rules_ms: f64,
}

/// When each stage of a new container was first seen in the maps.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    policy: Option<CgroupPolicy>,
    entry: Option<Instant>,
    cgroup: Option<Instant>,
    rules: Option<Instant>,
}

/// Starts a container whose label allows one address and one domain and watches the maps.
/// Other containers of the host may show up in the container map meanwhile (the agent knows
/// every container), so every new key is followed until `docker run` names ours.
fn time_to_policy(b: &mut Bench, maps: &Maps, n: usize) -> Result<PolicyTiming> {
    let domain_ip = dns::resolve(&format!("c{n}.{}", dns::ZONE), 0)
        .context("a bench name")?
        .0;
    let fixed = rule(Ipv4Addr::new(127, 78, 255, 1), 443);
    let allow = format!("{fixed},c{n}.{}:443", dns::ZONE);
    let before = maps.container_keys();
    let dirs = |attach: &Path| -> HashSet<String> {
        fs::read_dir(attach)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let dirs_before = dirs(&b.attach);
    // New cgroup directories: first sight, and the cgroup map's value for it at that moment.
    let mut new_dirs: std::collections::HashMap<String, (Instant, Option<CgroupPolicy>)> =
        Default::default();
    let mut cmd = b.run_cmd(Launch::Detached, &Bench::labels(allow), &["sleep", "3600"]);
    let t0 = Instant::now();
    let mut child = Some(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("docker run -d")?,
    );
    let mut returned: Option<Instant> = None;
    let mut ours: Option<ContainerId> = None;
    let mut seen: std::collections::HashMap<[u8; 64], Seen> = Default::default();
    let deadline = t0 + Duration::from_secs(60);
    loop {
        let now = Instant::now();
        if let Some(c) = child.as_mut()
            && c.try_wait()?.is_some()
        {
            returned = Some(now);
            let out = child.take().expect("just checked").wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "docker run -d failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            b.containers.ids.push(s.clone());
            ours = Some(
                s.parse()
                    .map_err(|e| anyhow::anyhow!("docker run -d printed {s:?}: {e}"))?,
            );
        }
        for d in dirs(&b.attach).difference(&dirs_before) {
            if new_dirs.contains_key(d) {
                continue;
            }
            if let Ok(m) = fs::metadata(b.attach.join(d)) {
                new_dirs.insert(d.clone(), (now, maps.cgroups.get(&m.ino(), 0).ok()));
            }
        }
        for k in maps.container_keys().difference(&before) {
            let Some(id) = ContainerId::from_key(&ContainerKey { id: *k }) else {
                continue;
            };
            if ours.is_some_and(|o| o != id) {
                continue;
            }
            let st = seen.entry(*k).or_default();
            // Only policed containers have an entry in EG_CONTAINERS.
            if st.policy.is_none()
                && let Some(p) = maps.container(&id)
            {
                st.policy = Some(p);
                st.entry = Some(now);
            }
            let Some(p) = st.policy else { continue };
            if st.cgroup.is_none()
                && let Ok(m) = fs::metadata(b.cgroup_of(&id))
                && let Ok(v) = maps.cgroups.get(&m.ino(), 0)
                && v.policy_id == p.policy_id
                && v.flags & FLAG_UNCLASSIFIED == 0
            {
                st.cgroup = Some(now);
            }
            if st.rules.is_none()
                && maps.has_rule(p.policy_id, &rule(domain_ip, 443))
                && maps.has_rule(p.policy_id, &fixed)
            {
                st.rules = Some(now);
            }
        }
        if let (Some(r), Some(id)) = (returned, ours)
            && let Some(st) = seen.get(&id.key().id)
            && let (Some(e), Some(c), Some(rl)) = (st.entry, st.cgroup, st.rules)
            && let Some((created, first)) = new_dirs.get(id.as_str())
        {
            let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
            let policy = st.policy.map(|p| p.policy_id);
            return Ok(PolicyTiming {
                docker_run_returned_ms: ms(r),
                container_entry_ms: ms(e),
                cgroup_created_ms: ms(*created),
                policed_at_creation: first.is_some_and(|v| {
                    Some(v.policy_id) == policy && v.flags & FLAG_UNCLASSIFIED == 0
                }),
                cgroup_policed_ms: ms(c),
                rules_ms: ms(rl),
            });
        }
        sys::check_interrupted()?;
        if now > deadline {
            if let Some(mut c) = child {
                let _ = c.kill();
                let _ = c.wait();
            }
            let st = ours.and_then(|id| seen.get(&id.key().id).copied());
            bail!("the container's policy was not complete in the maps after 60 s: {st:?}");
        }
        thread::sleep(Duration::from_micros(500));
    }
}

/// The refresh container's policy id once all `domains` answers of `version` are in the map
/// (with the port 443 rule). Returns when done, or fails after `timeout`.
fn wait_domains(
    maps: &Maps,
    id: &ContainerId,
    domains: usize,
    version: u8,
    timeout: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    let rules: Vec<Rule> = (0..domains)
        .map(|n| {
            let (ip, _) = dns::resolve(&format!("r{n}.refresh.{}", dns::ZONE), version)
                .expect("a refresh name");
            rule(ip, 443)
        })
        .collect();
    let mut next = 0;
    loop {
        if let Some(p) = maps.container(id) {
            while next < rules.len() && maps.has_rule(p.policy_id, &rules[next]) {
                next += 1;
            }
            if next == rules.len() {
                return Ok(Instant::now());
            }
        }
        sys::check_interrupted()?;
        if Instant::now() > deadline {
            bail!(
                "only {next} of {domains} domain answers (version {version}) reached the map within {timeout:?}"
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(dir: &Path, o: &Opts) -> Result<Section> {
    let bins = if o.quick {
        cargo::build_executables(&["-p", "egress-agent", "--bins"])?
    } else {
        cargo::build_executables(&["--release", "-p", "egress-agent", "--bins"])?
    };
    let bin = bins
        .get("egress-agent")
        .cloned()
        .context("cargo built no egress-agent")?;
    let build = if o.quick { "debug" } else { "release" };
    let dockerd = docker::ensure_dockerd()?;
    let res = (|| -> Result<Section> {
        docker::ensure_busybox_image(docker::TEST_IMAGE)?;
        measure(dir, o, &bin, build)
    })();
    // Stops a dockerd this run started, and undoes its changes, after everything else is gone.
    let stopped = dockerd.stop();
    let section = res?;
    stopped?;
    Ok(section)
}

/// Removes bench containers of earlier runs that were killed (label `bench.egress-enforcer=<pid>` of a
/// process that is gone).
fn sweep_containers() {
    let Ok(o) = docker_cmd()
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=bench.egress-enforcer",
        ])
        .args(["--format", "{{.ID}} {{.Label \"bench.egress-enforcer\"}}"])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Some((id, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = docker_cmd()
                .args(["rm", "-f", id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn measure(dir: &Path, o: &Opts, bin: &Path, build: &str) -> Result<Section> {
    sweep_containers();
    let pid = std::process::id();
    let cg2 = egress_agent::sys::mounts::cgroup2_mount()?;
    let parent = format!("egress-bench-{pid}-docker");
    // Dropped last (declared first): the cgroups, after the containers and the pins.
    let _runc_cgroups = ParentCgroups {
        name: parent.clone(),
    };
    let mut cgroups = Cgroups::default();
    let attach = cgroups.make(&cg2.join(&parent))?.path;
    let pins = PinGuard::new(PathBuf::from(format!(
        "/sys/fs/bpf/egress-bench-{pid}-agent"
    )));
    let dns = Dns::start(DNS_ADDR)?;
    let label = format!("bench.egress-enforcer={pid}");
    let mut containers = Containers {
        label: label.clone(),
        ids: Vec::new(),
    };
    let policy_file = dir.join("agent-policy.toml");
    {
        let mut f = String::from(
            "# Made by `cargo xtask bench`: the refresh container may reach 1,000 names.\n[[container]]\n",
        );
        let _ = writeln!(f, "label = \"{REFRESH_LABEL}\"\nallow = [");
        for n in 0..o.domains {
            let _ = writeln!(f, "  \"r{n}.refresh.{}:443\",", dns::ZONE);
        }
        f.push_str("]\n");
        fs::write(&policy_file, f)?;
    }
    let mut b = Bench {
        dir,
        bin: bin.to_owned(),
        pin: pins.path.clone(),
        attach: attach.clone(),
        parent: parent.clone(),
        label,
        containers: &mut containers,
        dns: &dns,
        policy_file,
        serial: 0,
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut targets = Vec::new();
    let mut raw = serde_json::Map::new();

    // 1. docker run latency, without and with the agent, alternated.
    note("agent: docker run latency without and with the agent");
    let lat_labels = Bench::labels("127.78.255.1:443".into());
    b.run_rm(&lat_labels)?; // warm-up: image and daemon caches
    let mut without: Vec<f64> = Vec::new();
    let mut with: Vec<f64> = Vec::new();
    let mut round_ratio: Vec<f64> = Vec::new();
    for round in 0..o.latency_rounds {
        let mut per = [Vec::new(), Vec::new()];
        for side in stats::rotation(2, round) {
            sys::check_interrupted()?;
            let agent = if side == 1 {
                Some(b.start_agent("latency")?)
            } else {
                None
            };
            for _ in 0..o.latency_runs {
                per[side].push(ms(b.run_rm(&lat_labels)?));
            }
            if let Some(a) = agent {
                b.stop_agent(a)?;
            }
        }
        round_ratio.push(stats::median(&per[1]) / stats::median(&per[0]));
        without.extend(&per[0]);
        with.extend(&per[1]);
    }
    let lat_ratio = Ratio::of(&round_ratio);
    rows.push((
        "`docker run --rm` of a labelled container (`true`), no agent".into(),
        format!("{:.0} ms", stats::median(&without)),
    ));
    rows.push((
        "the same with the agent running".into(),
        format!(
            "{:.0} ms ({} × without; median of per-round ratios [95 % CI])",
            stats::median(&with),
            lat_ratio
        ),
    ));
    raw.insert(
        "docker_run_ms".into(),
        json!({"without": without, "with": with}),
    );

    // 2. One agent for the rest: time to policy, idle, churn, domains.
    let agent = b.start_agent("main")?;
    let apid = agent.pid();
    thread::sleep(Duration::from_secs(1));
    let (rss_empty, _) = memory(apid)?;
    let maps = Maps::open(&b.pin)?;
    note("agent: time from docker run to the policy in the maps");
    let mut timings = Vec::new();
    for n in 0..o.policy_runs {
        sys::check_interrupted()?;
        timings.push(time_to_policy(&mut b, &maps, n)?);
    }
    let med =
        |f: fn(&PolicyTiming) -> f64| stats::median(&timings.iter().map(f).collect::<Vec<_>>());
    let p_max =
        |f: fn(&PolicyTiming) -> f64| timings.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
    for (what, f) in [
        (
            "`docker run -d` returns",
            (|t: &PolicyTiming| t.docker_run_returned_ms) as fn(&PolicyTiming) -> f64,
        ),
        (
            "… the container's entry is in the agent's container map",
            |t| t.container_entry_ms,
        ),
        (
            "… its address and its domain's resolved address are in the allow map",
            |t| t.rules_ms,
        ),
        (
            "… runc has made its cgroup (first seen by the bench)",
            |t| t.cgroup_created_ms,
        ),
        (
            "… its cgroup enforces its policy (cgroup map, not `unclassified`)",
            |t| t.cgroup_policed_ms,
        ),
    ] {
        rows.push((
            format!("time from starting `docker run -d` until {what}"),
            format!("{:.0} ms (max {:.0} ms)", med(f), p_max(f)),
        ));
    }
    let at_creation = timings.iter().filter(|t| t.policed_at_creation).count();
    rows.push((
        "containers whose cgroup already had its policy when the bench first saw it (the \
         container's entry came first, so the `cgroup_mkdir` program gave the cgroup its policy \
         as runc made it, before any process ran there)"
            .into(),
        format!("{at_creation} of {}", timings.len()),
    ));
    raw.insert("time_to_policy".into(), json!(timings));

    note(&format!("agent: {} policed containers", o.containers));
    let mut ids = Vec::new();
    for n in o.policy_runs..o.containers {
        sys::check_interrupted()?;
        ids.push(b.run_detached(&Bench::labels(many_allow(n, 200, 1000)))?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.iter().any(|id| maps.container(id).is_none()) {
        sys::check_interrupted()?;
        if Instant::now() > deadline {
            bail!("not every container is in the agent's map after 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_secs(1));
    let c0 = cpu_time(apid)?;
    thread::sleep(o.idle);
    let c1 = cpu_time(apid)?;
    let (rss_n, _) = memory(apid)?;
    let idle_pct = (c1 - c0).as_secs_f64() / o.idle.as_secs_f64() * 100.0;
    rows.push((
        "agent RSS, running with Docker, no containers".into(),
        format!("{:.1} MiB", rss_empty / MIB),
    ));
    rows.push((
        format!("agent RSS with {} policed containers", o.containers),
        format!("{:.1} MiB", rss_n / MIB),
    ));
    rows.push((
        format!(
            "agent CPU while idle with {} policed containers ({} s)",
            o.containers,
            o.idle.as_secs()
        ),
        format!("{idle_pct:.2} % of one core"),
    ));
    let per_container = (rss_n - rss_empty) / o.containers as f64;
    let extrapolated = rss_empty + per_container * 1000.0;

    note(&format!("agent: churn of {} containers", o.churn));
    let c0 = cpu_time(apid)?;
    let t0 = Instant::now();
    for n in 0..o.churn {
        sys::check_interrupted()?;
        b.run_rm(&Bench::labels(format!(
            "127.78.250.{}:443,c{}.{}:443",
            n % 250 + 1,
            5000 + n,
            dns::ZONE
        )))?;
    }
    let wall = t0.elapsed();
    let c1 = cpu_time(apid)?;
    let (rss_churn, hwm) = memory(apid)?;
    rows.push((
        format!("churn: {} labelled `docker run --rm` one after another", o.churn),
        format!(
            "{:.1} s; agent CPU {:.2} s ({:.1} % of one core, {:.0} ms per container); RSS after {:.1} MiB, peak {:.1} MiB",
            wall.as_secs_f64(),
            (c1 - c0).as_secs_f64(),
            (c1 - c0).as_secs_f64() / wall.as_secs_f64() * 100.0,
            ms(c1 - c0) / o.churn as f64,
            rss_churn / MIB,
            hwm / MIB
        ),
    ));

    note(&format!(
        "agent: {} domains, first resolution and refresh",
        o.domains
    ));
    let c0 = cpu_time(apid)?;
    let t0 = Instant::now();
    let mark = Instant::now();
    let refresh_id = b.run_detached(&[(REFRESH_LABEL.to_owned(), String::new())])?;
    let done = wait_domains(&maps, &refresh_id, o.domains, 0, Duration::from_secs(120))?;
    let c1 = cpu_time(apid)?;
    let (q, _, _) = dns.queries_since(mark, ".refresh.bench.test");
    rows.push((
        format!(
            "{} domains (policy file, one container): from `docker run -d` to all answers in the allow map",
            o.domains
        ),
        format!(
            "{:.0} ms; agent CPU {:.0} ms; {q} DNS queries",
            ms(done - t0),
            ms(c1 - c0)
        ),
    ));
    // Steady refresh with unchanged answers: the TTL is 5 s, so each name is asked again
    // every 5 s.
    let steady = Duration::from_secs(if o.quick { 6 } else { 15 });
    let c0 = cpu_time(apid)?;
    let mark = Instant::now();
    thread::sleep(steady);
    let c1 = cpu_time(apid)?;
    let (q, _, _) = dns.queries_since(mark, ".refresh.bench.test");
    rows.push((
        format!(
            "{} domains refreshed every {} s (TTL), answers unchanged: agent CPU over {} s",
            o.domains,
            dns::TTL_REFRESH,
            steady.as_secs()
        ),
        format!(
            "{:.2} % of one core; {q} DNS queries",
            (c1 - c0).as_secs_f64() / steady.as_secs_f64() * 100.0
        ),
    ));
    let mut refresh = Vec::new();
    for cycle in 1..=o.refresh_cycles {
        sys::check_interrupted()?;
        let mark = Instant::now();
        let c0 = cpu_time(apid)?;
        dns.set_version(cycle as u8);
        let done = wait_domains(
            &maps,
            &refresh_id,
            o.domains,
            cycle as u8,
            Duration::from_secs(60),
        )?;
        let c1 = cpu_time(apid)?;
        let (q, first, last) = dns.queries_since(mark, ".refresh.bench.test");
        let first = first.unwrap_or(mark);
        refresh.push(json!({
            "from_first_query_ms": ms(done.saturating_duration_since(first)),
            "query_spread_ms": ms(last.unwrap_or(first).saturating_duration_since(first)),
            "agent_cpu_ms": ms(c1 - c0),
            "queries": q,
        }));
    }
    let rmed = |k: &str| {
        stats::median(
            &refresh
                .iter()
                .filter_map(|r| r[k].as_f64())
                .collect::<Vec<_>>(),
        )
    };
    rows.push((
        format!(
            "{} domains, all answers changed: from the first query of the refresh to all new answers in the allow map (median of {})",
            o.domains, o.refresh_cycles
        ),
        format!(
            "{:.0} ms (queries spread over {:.0} ms); agent CPU {:.0} ms; {:.0} DNS queries",
            rmed("from_first_query_ms"),
            rmed("query_spread_ms"),
            rmed("agent_cpu_ms"),
            rmed("queries")
        ),
    ));
    raw.insert("refresh".into(), json!(refresh));

    // Many containers' worth of policy from real Docker objects: created, not started (1,000
    // running containers would need 1,000 shims on this machine). The agent polices a
    // container from its `create` event: container entry, rules, resolved domains.
    let existing = ids.len() + o.policy_runs;
    let more = o.created.saturating_sub(existing);
    note(&format!(
        "agent: {} labelled containers in all ({more} more with `docker create`)",
        o.created
    ));
    let t0 = Instant::now();
    let mut created = Vec::new();
    for n in 0..more {
        sys::check_interrupted()?;
        created.push(b.create(&Bench::labels(many_allow(n, 210, 10_000)))?);
    }
    let create_wall = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while created.iter().any(|id| maps.container(id).is_none()) {
        sys::check_interrupted()?;
        if Instant::now() > deadline {
            bail!("not every created container is in the agent's map after 120 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_secs(2));
    let (rss_created, hwm_created) = memory(apid)?;
    let total = existing + created.len();
    rows.push((
        format!(
            "agent RSS with {total} labelled containers (8 addresses and 2 domains each; {} \
             running, {} created with `docker create` in {:.0} s), the refresh container's \
             {} domains too",
            existing,
            created.len(),
            create_wall.as_secs_f64(),
            o.domains
        ),
        format!(
            "{:.1} MiB (peak so far {:.1} MiB)",
            rss_created / MIB,
            hwm_created / MIB
        ),
    ));
    if total >= 1000 {
        targets.push(Target::custom(
            format!(
                "agent RSS ≤ 40 MiB with 1,000 containers' worth of policy (measured: {total} \
                 labelled Docker containers; {build} build)"
            ),
            format!("{:.1} MiB", rss_created / MIB),
            stats::verdict_at_most(rss_created / MIB, 40.0),
        ));
    }
    raw.insert(
        "created_containers".into(),
        json!({"total": total, "created": created.len(), "rss_bytes": rss_created, "hwm_bytes": hwm_created}),
    );
    drop(maps);
    b.stop_agent(agent)?;

    // 3. RSS with 1,000 cgroup policies (no Docker).
    note(&format!("agent: RSS with {} cgroup policies", o.policies));
    let base_args = |b: &Bench| -> Vec<String> {
        [
            "--docker",
            "off",
            "--pin-dir",
            &b.pin.to_string_lossy(),
            "--attach-cgroup",
            &b.attach.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let a = Agent::start(bin, &base_args(&b), &dir.join("agent-nopolicy.log"))?;
    thread::sleep(Duration::from_secs(1));
    let (rss_none, _) = memory(a.pid())?;
    b.stop_agent(a)?;
    let mut args = base_args(&b);
    let pol_dir = attach.join("policies");
    fs::create_dir(&pol_dir)?;
    for n in 0..o.policies {
        let cg = cgroups.make(&pol_dir.join(format!("p{n:04}")))?;
        let entries: Vec<String> = (0..10)
            .map(|k| format!("127.78.{}.{}:443", 100 + k, n % 250 + 1))
            .collect();
        args.push("--policy".into());
        args.push(format!("{}={}", cg.path.display(), entries.join(",")));
    }
    let t0 = Instant::now();
    let a = Agent::start(bin, &args, &dir.join("agent-policies.log"))?;
    let ready = t0.elapsed();
    thread::sleep(Duration::from_secs(1));
    let (rss_pol, hwm_pol) = memory(a.pid())?;
    b.stop_agent(a)?;
    rows.push((
        "agent RSS, no policy (`--docker off`)".into(),
        format!("{:.1} MiB", rss_none / MIB),
    ));
    rows.push((
        format!(
            "agent RSS with {} cgroup policies of 10 entries (`--policy`, `--docker off`)",
            o.policies
        ),
        format!(
            "{:.1} MiB (peak {:.1} MiB); ready {:.0} ms after start",
            rss_pol / MIB,
            hwm_pol / MIB,
            ms(ready)
        ),
    ));
    if o.containers >= 100 {
        rows.push((
            format!(
                "agent RSS for 1,000 policed containers, extrapolated from {} (not measured)",
                o.containers
            ),
            format!(
                "{:.1} MiB ({:.1} KiB per container)",
                extrapolated / MIB,
                per_container / 1024.0
            ),
        ));
    }
    targets.push(Target::custom(
        format!(
            "agent RSS ≤ 40 MiB with 1,000 containers' worth of policy (measured: {} cgroup policies; {} build)",
            o.policies, build
        ),
        format!("{:.1} MiB", rss_pol / MIB),
        stats::verdict_at_most(rss_pol / MIB, 40.0),
    ));
    if o.containers >= 100 {
        targets.push(Target::custom(
            format!(
                "agent RSS ≤ 40 MiB for 1,000 containers, extrapolated from {} containers ({} build)",
                o.containers, build
            ),
            format!("{:.1} MiB", extrapolated / MIB),
            stats::verdict_at_most(extrapolated / MIB, 40.0),
        ));
    }
    raw.insert(
        "memory_bytes".into(),
        json!({
            "empty_docker": rss_empty, "containers": rss_n, "churn_after": rss_churn,
            "churn_peak": hwm, "no_policy": rss_none, "policies": rss_pol,
        }),
    );
    drop(b);
    drop(containers);
    drop(pins);
    drop(cgroups);

    let mut md = String::from("| measurement | result |\n|---|---|\n");
    for (k, v) in &rows {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md.push('\n');
    Ok(Section {
        title: "4. Agent costs".into(),
        intro: format!(
            "The real `egress-agent run` ({build} build{}) with the host's dockerd; the agent has its \
             own pin directory and attach cgroup (the `--cgroup-parent` of every bench container), \
             the bench's DNS server, `--ttl-floor {}` and `--grace 0`. Containers are busybox \
             (`{}`) with `--network none`. CPU is the agent's user + system time from \
             /proc/PID/stat (10 ms ticks); RSS is VmRSS (eBPF maps live in kernel memory and are \
             not in it).",
            if o.quick {
                "; the quick run uses the debug build, so its CPU and RSS figures overstate \
                 the release build's"
            } else {
                ""
            },
            dns::TTL_REFRESH,
            docker::TEST_IMAGE
        ),
        markdown: md,
        targets,
        raw: serde_json::Value::Object(raw),
    })
}
