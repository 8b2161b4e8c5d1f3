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
//! The agent (`$EGRESS_AGENT_BIN`, which `cargo xtask bench` builds) runs through the harness's
//! agent runners and attaches at a cgroup of its own (`<cgroup2>/egress-test-bench-docker-<pid>`,
//! the `--cgroup-parent` of every bench container, [`fleet`]) with its own pin directory, so it
//! judges the bench's containers only. Its DNS server is the bench's own ([`crate::zone`]) on
//! 127.77.2.1; the containers run with `--network none` and send nothing. Everything is removed
//! at the end: containers, agent, pins, cgroups (also those runc made in the v1 hierarchies).
//! The dockerd is the host's, or the one `cargo xtask bench` started (and stops).
//!
//! Part 5, the agent's DNS proxy, is [`dns`]: it shares this part's agent runner and fleet.

pub mod dns;
mod fleet;
mod maps;
mod procfs;
mod timing;

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use egress_tests::{
    agent::{Agent, AgentOpts},
    cgroup::CgroupTree,
    docker::{Docker, shared_docker_host},
    interrupt,
    pins::PinDir,
    tools,
};
use serde_json::json;

use crate::{
    bench_dir, note,
    report::{Section, Target},
    stats::{self, Ratio},
    zone::{self, Zone},
};
use fleet::{Fleet, MirroredParents, allow};
use maps::Maps;
use procfs::{cpu_time, memory};
use timing::{PolicyTiming, time_to_policy, wait_domains};

const DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 77, 2, 1));
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

/// The docker CLI, and dockerd and iptables if no dockerd answers yet (`cargo xtask bench`
/// starts one then).
pub fn check_tools() -> Result<()> {
    tools::require("docker", "docker.io", "the agent benchmarks")?;
    if !docker().ping() {
        tools::require("dockerd", "docker.io", "the agent benchmarks")?;
        tools::require("iptables", "iptables", "dockerd")?;
    }
    Ok(())
}

/// The daemon the bench's containers run on: `$DOCKER_HOST` or `/var/run/docker.sock`.
fn docker() -> Docker {
    Docker::new(&shared_docker_host())
}

/// The agent's own pieces of one run: its pins, attach cgroup, DNS server and policy file.
struct Bench<'a> {
    dir: &'a Path,
    pin: PathBuf,
    attach: PathBuf,
    fleet: Fleet,
    zone: &'a Zone,
    policy_file: PathBuf,
    serial: usize,
    /// `--dns-mode` of the agents it starts (None: the agent's default, `learn`).
    dns_mode: Option<&'static str>,
}

impl Bench<'_> {
    /// `egress-agent run --docker on` with the bench's pins, attach cgroup, DNS server and
    /// policy file, `--grace 0`; waits for `ready`.
    fn start_agent(&mut self, what: &str) -> Result<(Agent, PathBuf)> {
        self.serial += 1;
        let log = self.dir.join(format!("agent-{}-{what}.log", self.serial));
        let opts = AgentOpts {
            grace: 0,
            policy_file: Some(self.policy_file.clone()),
            attach_cgroup: Some(self.attach.clone()),
            dns_mode: self.dns_mode,
            ..AgentOpts::default()
        };
        Ok((Agent::start_docker(&self.pin, self.zone.addr(), &opts), log))
    }

    /// Stops it (keeping its log in `target/bench`) and removes what it pinned.
    fn stop_agent(&self, (agent, log): (Agent, PathBuf)) -> Result<()> {
        fs::write(&log, agent.log_text()).with_context(|| format!("writing {}", log.display()))?;
        agent.stop();
        self.cleanup()
    }

    /// Stops a `--docker off` agent the same way.
    fn stop_plain_agent(&self, agent: Agent) -> Result<()> {
        let status = agent.sigterm();
        if !status.success() {
            bail!("egress-agent exited with {status} on SIGTERM");
        }
        self.cleanup()
    }

    fn cleanup(&self) -> Result<()> {
        egress_agent::status::cleanup(&self.pin)
            .with_context(|| format!("cleaning up {}", self.pin.display()))?;
        Ok(())
    }
}

/// The `egress.allow` of the `n`-th of many bench containers: 8 loopback addresses (third
/// octets from `octet`) and 2 domains of the bench's zone (numbered from `domain`, distinct per
/// `n`).
fn many_allow(zone: &Zone, n: usize, octet: usize, domain: usize) -> String {
    let mut allow: Vec<String> = (0..8)
        .map(|k| format!("127.78.{}.{}:443", octet + k, n % 250 + 1))
        .collect();
    allow.push(format!("{}:443", zone.container_domain(domain + 2 * n)));
    allow.push(zone.container_domain(domain + 1 + 2 * n));
    allow.join(",")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What an agent part stands on: the agent's pin directory and attach cgroup (with the cgroups
/// runc makes for it in the v1 hierarchies). Dropped after the part's containers and DNS
/// servers, in field order.
struct Ground {
    pins: PinDir,
    _runc_cgroups: MirroredParents,
    tree: CgroupTree,
}

impl Ground {
    /// Checks that dockerd answers, removes the containers of killed runs, and makes the pin
    /// directory and attach cgroup named after `tag`; returns the daemon too.
    fn new(cg2: &Path, tag: &str) -> Result<(Docker, Self)> {
        let docker = docker();
        if !docker.ping() {
            bail!(
                "dockerd does not answer on {}; `sudo -E cargo xtask bench` starts one if none \
                 runs",
                docker.host
            );
        }
        fleet::sweep_killed_runs(&docker);
        let tree = CgroupTree::create(&format!("bench-{tag}"));
        let attach = &tree.root.path;
        let runc = MirroredParents {
            name: attach
                .strip_prefix(cg2)
                .unwrap_or(attach)
                .to_string_lossy()
                .into_owned(),
        };
        let ground = Self {
            pins: PinDir::new(&format!("bench-{tag}-agent")),
            _runc_cgroups: runc,
            tree,
        };
        Ok((docker, ground))
    }

    fn attach(&self) -> PathBuf {
        self.tree.root.path.clone()
    }
}

pub fn run(cg2: &Path, o: &Opts) -> Result<Section> {
    let build = if o.quick { "debug" } else { "release" };
    // Dropped in reverse order: the containers (with `b`), the DNS server, then `ground`.
    let (docker, ground) = Ground::new(cg2, "docker")?;
    let attach = ground.attach();
    let zone = Zone::start(DNS_IP, o.domains)?;
    let dir = bench_dir();
    let policy_file = dir.join("agent-policy.toml");
    {
        let mut f = String::from(
            "# Made by `cargo xtask bench`: the refresh container may reach 1,000 names.\n[[container]]\n",
        );
        let _ = writeln!(f, "label = \"{REFRESH_LABEL}\"\nallow = [");
        for n in 0..o.domains {
            let _ = writeln!(f, "  \"{}:443\",", zone::refresh_domain(n));
        }
        f.push_str("]\n");
        fs::write(&policy_file, f)?;
    }
    let mut b = Bench {
        dir: &dir,
        pin: ground.pins.path.clone(),
        attach: attach.clone(),
        fleet: Fleet::new(docker, &attach),
        zone: &zone,
        policy_file,
        serial: 0,
        // This part measures the agent's own resolution of the allowed names (and their
        // refresh): the `resolve` mode.
        dns_mode: Some("resolve"),
    };
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut targets = Vec::new();
    let mut raw = serde_json::Map::new();

    // 1. docker run latency, without and with the agent, alternated.
    note("agent: docker run latency without and with the agent");
    let lat_labels = allow("127.78.255.1:443".into());
    b.fleet.run_rm(&lat_labels)?; // warm-up: image and daemon caches
    let mut without: Vec<f64> = Vec::new();
    let mut with: Vec<f64> = Vec::new();
    let mut round_ratio: Vec<f64> = Vec::new();
    for round in 0..o.latency_rounds {
        let mut per = [Vec::new(), Vec::new()];
        for side in stats::rotation(2, round) {
            interrupt::check()?;
            let agent = if side == 1 {
                Some(b.start_agent("latency")?)
            } else {
                None
            };
            for _ in 0..o.latency_runs {
                per[side].push(ms(b.fleet.run_rm(&lat_labels)?));
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
    let apid = agent.0.pid();
    thread::sleep(Duration::from_secs(1));
    let (rss_empty, _) = memory(apid)?;
    let maps = Maps::open(&b.pin)?;
    note("agent: time from docker run to the policy in the maps");
    let mut timings = Vec::new();
    for n in 0..o.policy_runs {
        interrupt::check()?;
        timings.push(time_to_policy(&mut b.fleet, &zone, &maps, n)?);
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
        interrupt::check()?;
        ids.push(
            b.fleet
                .run_detached(&allow(many_allow(&zone, n, 200, 1000)))?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.iter().any(|id| maps.container(id).is_none()) {
        interrupt::check()?;
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
        interrupt::check()?;
        b.fleet.run_rm(&allow(format!(
            "127.78.250.{}:443,{}:443",
            n % 250 + 1,
            zone.container_domain(5000 + n)
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
    let q0 = zone.refresh_queries();
    let c0 = cpu_time(apid)?;
    let t0 = Instant::now();
    let refresh_id = b
        .fleet
        .run_detached(&[(REFRESH_LABEL.to_owned(), String::new())])?;
    let done = wait_domains(
        &maps,
        &zone,
        &refresh_id,
        (o.domains, 0),
        zone.total_queries(),
        Duration::from_secs(120),
    )?
    .done;
    let c1 = cpu_time(apid)?;
    let q = zone.refresh_queries() - q0;
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
    let q0 = zone.refresh_queries();
    let c0 = cpu_time(apid)?;
    thread::sleep(steady);
    let c1 = cpu_time(apid)?;
    let q = zone.refresh_queries() - q0;
    rows.push((
        format!(
            "{} domains refreshed every {} s (TTL), answers unchanged: agent CPU over {} s",
            o.domains,
            zone::TTL_REFRESH,
            steady.as_secs()
        ),
        format!(
            "{:.2} % of one core; {q} DNS queries",
            (c1 - c0).as_secs_f64() / steady.as_secs_f64() * 100.0
        ),
    ));
    let mut refresh = Vec::new();
    for cycle in 1..=o.refresh_cycles {
        interrupt::check()?;
        let q0 = zone.refresh_queries();
        let asked = zone.total_queries();
        let mark = Instant::now();
        let c0 = cpu_time(apid)?;
        zone.set_version(cycle as u8);
        let seen = wait_domains(
            &maps,
            &zone,
            &refresh_id,
            (o.domains, cycle as u8),
            asked,
            Duration::from_secs(60),
        )?;
        let c1 = cpu_time(apid)?;
        let q = zone.refresh_queries() - q0;
        let (done, first, last) = (seen.done, seen.first_query.unwrap_or(mark), seen.last_query);
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
        interrupt::check()?;
        created.push(b.fleet.create(&allow(many_allow(&zone, n, 210, 10_000)))?);
    }
    let create_wall = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while created.iter().any(|id| maps.container(id).is_none()) {
        interrupt::check()?;
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
    let a = Agent::start(&b.pin, &b.attach, &[]);
    thread::sleep(Duration::from_secs(1));
    let (rss_none, _) = memory(a.pid())?;
    b.stop_plain_agent(a)?;
    let pol_dir = ground.tree.child("policies").path;
    let mut policies = Vec::new();
    for n in 0..o.policies {
        let cg = pol_dir.join(format!("p{n:04}"));
        fs::create_dir(&cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
        let entries: Vec<String> = (0..10)
            .map(|k| format!("127.78.{}.{}:443", 100 + k, n % 250 + 1))
            .collect();
        policies.push(format!("{}={}", cg.display(), entries.join(",")));
    }
    let t0 = Instant::now();
    let a = Agent::start(&b.pin, &b.attach, &policies);
    let ready = t0.elapsed();
    thread::sleep(Duration::from_secs(1));
    let (rss_pol, hwm_pol) = memory(a.pid())?;
    b.stop_plain_agent(a)?;
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
    drop(zone);
    drop(ground);

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
             the bench's DNS server (every answer's TTL is at least {} s, so the harness's \
             `--ttl-floor 1` changes nothing) and `--grace 0`. Containers are busybox \
             (`{}`) with `--network none`. CPU is the agent's user + system time from \
             /proc/PID/stat (10 ms ticks); RSS is VmRSS (eBPF maps live in kernel memory and are \
             not in it).",
            if o.quick {
                "; the quick run uses the debug build, so its CPU and RSS figures overstate \
                 the release build's"
            } else {
                ""
            },
            zone::TTL_REFRESH,
            egress_tests::docker::image()
        ),
        markdown: md,
        targets,
        raw: serde_json::Value::Object(raw),
    })
}
