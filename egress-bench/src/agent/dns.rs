//! Part 5: what the agent's DNS proxy costs, with the real `egress-agent run` and dockerd.
//!
//! Two containers on Docker's default bridge with `--dns` at a third one: one policed
//! (`egress.allow` of one name of the bench's zone, the agent's default `learn` mode) and one
//! unlabelled. The bench's DNS server listens on port 53 of the third container (its sockets
//! bound in that container's network namespace), where both containers' DNS goes: the
//! unlabelled one's straight to it, the
//! policed one's redirected by the programs to the agent's proxy in its network namespace,
//! which filters the question, forwards it to the container's resolver (the same server),
//! learns the answer's address and only then answers. The load generator ([`crate::client`],
//! the `dns-*` operations) runs in the containers' cgroups and network namespaces (it moves
//! itself between the two before each batch, A B B A ..., so both are measured in the same time
//! windows):
//!
//! - the latency of one question (a new socket, the question, the answer, `close`), over UDP
//!   and over TCP: p50 and p99 direct and through the proxy, and what the proxy adds;
//! - questions per second, one at a time and with 16 in flight on one UDP socket, through the
//!   proxy against direct (median of per-pair ratios);
//! - the agent's RSS before, at its peak and after N more policed containers (`sleep`, on the
//!   same bridge, each in a network namespace of its own: a bridge takes 1,024 ports at most)
//!   have each looked up 20 names of their own through the proxy (learned: 20 addresses each).
//!   (Not in one shared namespace: the agent rewrites every container of a namespace when one
//!   joins it, which makes 1,000 of them there a case of its own.)
//!
//! Everything stays on the machine: the only server the containers ask is the bench's, in a
//! container of its own (never `--network host`, whose containers' resolvers are the host's
//! own, nor the bridge's gateway, where the host may run a resolver). Containers, agent, pins
//! and cgroups are removed at the end.

use std::{
    fs,
    net::{IpAddr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use egress_common::container::ContainerId;
use egress_tests::interrupt;
use serde_json::json;

use super::{
    Bench, DNS_IP, Ground, MIB,
    fleet::{Fleet, allow},
    maps::Maps,
    procfs::memory,
};
use crate::{
    bench_dir,
    client::{ClientReport, Op},
    connect::{Load, SideSpec, run_client_with},
    note,
    report::{Section, Target},
    stats::{self, Ratio},
    zone::{self, Zone},
};

/// The network the DNS part's containers are on.
const BRIDGE: &str = "bridge";
/// Names each of the many containers looks up (and the proxy learns).
const NAMES_PER_CONTAINER: usize = 20;
/// What one more running container costs the host (its shim, ~13 MiB RSS of which much is
/// shared text, `sleep`, dockerd's and containerd's share), to keep the many-container run
/// within [`MEMORY_SHARE`] of the memory available.
const HOST_COST_PER_CONTAINER: u64 = 12 << 20;
/// The share of the host's available memory the many containers may take.
const MEMORY_SHARE: f64 = 0.6;
/// `docker run -d` at a time for the many containers.
const PARALLEL_RUNS: usize = 4;
/// Questions in flight for the rate under load.
const WINDOW: usize = 16;
/// How many containers look up their names at once (the 1,000-container phase), and how many
/// are started, then ask, at a time.
const LEARNERS: usize = 8;
const BATCH: usize = 40;

pub struct Opts {
    pub quick: bool,
    /// Client runs per measurement (each alternates the sides over `batches` batches each).
    pub rounds: usize,
    pub batches: usize,
    pub udp_batch: usize,
    pub tcp_batch: usize,
    pub window_batch: usize,
    /// Policed containers that each learn [`NAMES_PER_CONTAINER`] names, for the RSS.
    pub containers: usize,
}

impl Opts {
    pub fn new(quick: bool, rounds: usize) -> Self {
        if quick {
            Self {
                quick,
                rounds: rounds.min(2),
                batches: 4,
                udp_batch: 200,
                tcp_batch: 100,
                window_batch: 1_000,
                containers: 10,
            }
        } else {
            Self {
                quick,
                rounds,
                batches: 8,
                udp_batch: 1_000,
                tcp_batch: 500,
                window_batch: 5_000,
                containers: 1_000,
            }
        }
    }
}

/// One measurement of the proxy against direct: the client's reports of every round.
struct Paired {
    what: &'static str,
    reports: Vec<ClientReport>,
}

impl Paired {
    /// Median over rounds of a side's percentile (ns), direct (A) or proxied (B).
    fn median_of(&self, proxied: bool, f: fn(&crate::client::SideReport) -> u64) -> f64 {
        let v: Vec<f64> = self
            .reports
            .iter()
            .filter_map(|r| if proxied { r.b.as_ref() } else { Some(&r.a) })
            .map(|s| f(s) as f64)
            .collect();
        stats::median(&v)
    }

    /// Median over rounds of what the proxy adds to a percentile (ns).
    fn added(&self, f: fn(&crate::client::SideReport) -> u64) -> f64 {
        let v: Vec<f64> = self
            .reports
            .iter()
            .filter_map(|r| Some(f(r.b.as_ref()?) as f64 - f(&r.a) as f64))
            .collect();
        stats::median(&v)
    }

    /// rate(proxied) / rate(direct), per pair of neighbouring batches over every round.
    fn rate_ratio(&self) -> Ratio {
        let v: Vec<f64> = self
            .reports
            .iter()
            .flat_map(|r| r.pair_ratios.iter().copied())
            .collect();
        Ratio::of(&v)
    }

    /// Median over rounds of a side's rate (questions per second).
    fn rate(&self, proxied: bool) -> f64 {
        let v: Vec<f64> = self
            .reports
            .iter()
            .filter_map(|r| if proxied { r.b.as_ref() } else { Some(&r.a) })
            .map(crate::client::SideReport::rate)
            .collect();
        stats::median(&v)
    }
}

/// A side of the load generator: a container's cgroup and network namespace, and the server.
fn side(cgroup: PathBuf, netns: &Path, server: SocketAddrV4) -> SideSpec {
    SideSpec {
        cgroup,
        netns: Some(netns.to_owned()),
        dst: server,
    }
}

/// The network namespace of a running container (`/proc/<its pid>/ns/net`).
fn netns_of(fleet: &Fleet, id: &ContainerId) -> Result<PathBuf> {
    let pid = fleet.inspect(id, "{{.State.Pid}}")?;
    match pid.parse::<u32>() {
        Ok(p) if p > 0 => Ok(PathBuf::from(format!("/proc/{p}/ns/net"))),
        _ => bail!("container {} has no pid ({pid:?})", id.short()),
    }
}

fn names_arg(names: &[String]) -> Vec<String> {
    vec!["--names".into(), names.join(",")]
}

/// Waits until runc has made the cgroups of `ids`.
fn wait_cgroups(fleet: &Fleet, ids: &[ContainerId]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.iter().any(|id| !fleet.cgroup_of(id).is_dir()) {
        interrupt::check()?;
        if Instant::now() > deadline {
            bail!("not every container's cgroup exists after 60 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Each name once from `side`, retried until the proxy answers it (see `dns-learn`).
fn learn(exe: &Path, side: &SideSpec, names: &[String]) -> Result<ClientReport> {
    let load = Load {
        batch: names.len(),
        batches: 1,
        warmup: 0,
        settle: 0,
    };
    run_client_with(exe, Op::DnsLearn, side, None, load, &names_arg(names))
}

/// Each container of `ids` looks up its `names` (see [`learn`]), [`LEARNERS`] containers at a
/// time; returns the indices of those whose names were all answered, and what went wrong for
/// the others.
fn learn_all(
    exe: &Path,
    fleet: &Fleet,
    ids: &[ContainerId],
    names: &[Vec<String>],
    server: SocketAddrV4,
) -> Result<(Vec<usize>, Vec<String>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(Vec::with_capacity(ids.len()));
    thread::scope(|scope| {
        let workers: Vec<_> = (0..LEARNERS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        interrupt::check()?;
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let (Some(id), Some(names)) = (ids.get(i), names.get(i)) else {
                            return Ok(());
                        };
                        let outcome = netns_of(fleet, id)
                            .and_then(|ns| {
                                learn(exe, &side(fleet.cgroup_of(id), &ns, server), names)
                            })
                            .map(|_| ())
                            .map_err(|e| format!("{}: {e:#}", id.short()));
                        outcomes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((i, outcome));
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| bail!("a learning thread panicked"))
        })
    })?;
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);
    let mut answered = Vec::new();
    let mut unanswered = Vec::new();
    for (i, outcome) in outcomes {
        match outcome {
            Ok(()) => answered.push(i),
            Err(e) => unanswered.push(e),
        }
    }
    Ok((answered, unanswered))
}

/// How many more running containers the host's available memory allows.
fn affordable_containers(wanted: usize) -> usize {
    let avail = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib * 1024);
    wanted.min((avail as f64 * MEMORY_SHARE / HOST_COST_PER_CONTAINER as f64) as usize)
}

/// Resets the peak RSS (`VmHWM`) of a process, so that a later read is the peak from now.
fn reset_peak(pid: u32) -> Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of pid {pid}"))
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

/// The rows, targets and raw figures of the section.
type Measured = (
    Vec<(String, String)>,
    Vec<Target>,
    serde_json::Map<String, serde_json::Value>,
);

/// What [`run`] measures with the agent running (pid `apid`): the table's rows, the targets and
/// the raw figures.
fn measure(
    b: &mut Bench<'_>,
    exe: &Path,
    o: &Opts,
    server: &Zone,
    server_addr: SocketAddrV4,
    apid: u32,
    build: &str,
) -> Result<Measured> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut targets = Vec::new();
    let mut raw = serde_json::Map::new();
    let asked = vec![server.learn_domain(0)];
    let dns_opt = server_addr.ip().to_string();
    let bridge = ["--network", BRIDGE, "--dns", &dns_opt];
    let ids = b.fleet.run_many_on(
        &bridge,
        &[allow(asked.join(",")), Vec::new()],
        PARALLEL_RUNS,
    )?;
    wait_cgroups(&b.fleet, &ids)?;
    let policed_ns = netns_of(&b.fleet, &ids[0])?;
    let policed = side(b.fleet.cgroup_of(&ids[0]), &policed_ns, server_addr);
    let direct = side(
        b.fleet.cgroup_of(&ids[1]),
        &netns_of(&b.fleet, &ids[1])?,
        server_addr,
    );
    note("dns: waiting for the policed container's DNS proxy");
    learn(exe, &policed, &asked)?;

    // 1. Latency and rate: direct (A, the unlabelled container) against the proxy (B).
    let mut paired = Vec::new();
    for (op, what, batch) in [
        (Op::DnsUdp, "UDP", o.udp_batch),
        (Op::DnsTcp, "TCP", o.tcp_batch),
        (
            Op::DnsUdpWindow,
            "UDP, 16 in flight on one socket",
            o.window_batch,
        ),
    ] {
        note(&format!("dns: {what}, direct against the proxy"));
        let mut reports = Vec::new();
        for _ in 0..o.rounds {
            interrupt::check()?;
            let load = Load {
                batch,
                batches: o.batches,
                warmup: batch / 10,
                settle: 5,
            };
            let mut extra = names_arg(&asked);
            extra.extend(["--window".into(), WINDOW.to_string()]);
            reports.push(run_client_with(
                exe,
                op,
                &direct,
                Some(&policed),
                load,
                &extra,
            )?);
        }
        paired.push(Paired { what, reports });
    }
    for p in &paired {
        let window = p.what.contains("in flight");
        if !window {
            rows.push((
                format!("DNS over {}: one question, direct (p50 / p99)", p.what),
                format!(
                    "{} / {}",
                    stats::dur_ns(p.median_of(false, |s| s.p50_ns)),
                    stats::dur_ns(p.median_of(false, |s| s.p99_ns))
                ),
            ));
            rows.push((
                format!(
                    "DNS over {}: one question through the agent's proxy (p50 / p99)",
                    p.what
                ),
                format!(
                    "{} / {}",
                    stats::dur_ns(p.median_of(true, |s| s.p50_ns)),
                    stats::dur_ns(p.median_of(true, |s| s.p99_ns))
                ),
            ));
            let (add50, add99) = (p.added(|s| s.p50_ns), p.added(|s| s.p99_ns));
            rows.push((
                format!(
                    "DNS over {}: added by the proxy at p50 / p99 (median over {} rounds)",
                    p.what,
                    p.reports.len()
                ),
                format!("{:.3} ms / {:.3} ms", ms(add50), ms(add99)),
            ));
            for (at, added, bound) in [("p50", add50, 0.2), ("p99", add99, 2.0)] {
                targets.push(Target::custom(
                    format!(
                        "DNS over {}: the proxy adds ≤ {bound} ms at {at} ({build} build)",
                        p.what
                    ),
                    format!("{:.3} ms", ms(added)),
                    stats::verdict_at_most(ms(added), bound),
                ));
            }
        }
        let ratio = p.rate_ratio();
        rows.push((
            format!(
                "DNS over {}: questions per second, direct / through the proxy",
                p.what
            ),
            format!(
                "{} / {} ({ratio} × direct; median of per-pair ratios [95 % CI])",
                stats::int(p.rate(false)),
                stats::int(p.rate(true))
            ),
        ));
        if window {
            targets.push(Target::ratio(
                format!(
                    "DNS questions per second through the proxy ≥ 0.8 × direct ({}; {build} build)",
                    p.what
                ),
                &ratio,
                0.8,
            ));
        }
        raw.insert(
            format!(
                "dns_{}",
                p.what.split(',').next().unwrap_or(p.what).to_lowercase()
            ),
            json!(p.reports),
        );
    }

    // 2. RSS with many policed containers that each learned their names.
    let n = affordable_containers(o.containers);
    note(&format!(
        "dns: {n} policed containers learning {NAMES_PER_CONTAINER} names each{}",
        if n < o.containers {
            format!(" ({} asked; the host's memory allows {n})", o.containers)
        } else {
            String::new()
        }
    ));
    let names: Vec<Vec<String>> = (0..n)
        .map(|i| {
            (0..NAMES_PER_CONTAINER)
                .map(|k| server.learn_domain(1 + i * NAMES_PER_CONTAINER + k))
                .collect()
        })
        .collect();
    // Every container on the bridge is a neighbour of the gateway: beyond the host's hard limit
    // (`gc_thresh3`, 1,024 by default) the last ones are never resolved and their questions time
    // out. Room for all of them while the phase runs; the old limits come back on drop.
    let _neighbours = NeighbourRoom::for_hosts(n)?;
    thread::sleep(Duration::from_secs(1));
    reset_peak(apid)?;
    let (rss_start, _) = memory(apid)?;
    let t0 = Instant::now();
    let labels: Vec<Vec<(String, String)>> = names.iter().map(|l| allow(l.join(","))).collect();
    // Started and asking in batches, as a compose project's containers look their names up
    // when they start.
    let mut many = Vec::with_capacity(n);
    // Containers whose names were all answered; the others are counted and reported.
    let (mut answered, mut unanswered) = (Vec::new(), Vec::new());
    let mut learned = Duration::ZERO;
    for (k, chunk) in labels.chunks(BATCH).enumerate() {
        interrupt::check()?;
        let ids = b.fleet.run_many_on(&bridge, chunk, PARALLEL_RUNS)?;
        wait_cgroups(&b.fleet, &ids)?;
        let t1 = Instant::now();
        let first = k * BATCH;
        let (ok, failed) = learn_all(
            exe,
            &b.fleet,
            &ids,
            &names[first..first + ids.len()],
            server_addr,
        )?;
        learned += t1.elapsed();
        answered.extend(ok.into_iter().map(|i| first + i));
        unanswered.extend(failed);
        many.extend(ids);
    }
    let started = t0.elapsed();
    thread::sleep(Duration::from_secs(2));
    let (rss_end, rss_peak) = memory(apid)?;
    // Every address is in its container's allow set (checked on a sample: the first and the
    // last container).
    let maps = Maps::open(&b.pin)?;
    for (i, id) in many
        .iter()
        .enumerate()
        .filter(|(i, _)| [answered.first(), answered.last()].contains(&Some(i)))
    {
        let policy = maps
            .container(id)
            .with_context(|| format!("container {} is not in the agent's map", id.short()))?;
        for (k, name) in names[i].iter().enumerate() {
            let ip = zone::learn_addr(1 + i * NAMES_PER_CONTAINER + k);
            let rule = egress_policy::policy::Rule::addr(IpAddr::V4(ip), None)?;
            if !maps.has_rule(policy.policy_id, &rule) {
                bail!(
                    "container {} looked up {name} but its address {ip} is not in its allow set",
                    id.short()
                );
            }
        }
    }
    drop(maps);
    rows.push((
        format!("of these {n}, containers whose {NAMES_PER_CONTAINER} names were all answered"),
        match unanswered.first() {
            None => format!("{} of {n}", answered.len()),
            Some(first) => format!(
                "{} of {n}; **{} not** (the first: {})",
                answered.len(),
                unanswered.len(),
                first.chars().take(300).collect::<String>()
            ),
        },
    ));
    rows.push((
        format!(
            "agent RSS with {n} more policed containers (same bridge, started {BATCH} at a \
             time in {:.0} s) that each looked up {NAMES_PER_CONTAINER} names of their own \
             through the proxy once started ({:.1} s of asking in all): before / peak / after",
            started.as_secs_f64(),
            learned.as_secs_f64()
        ),
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            rss_start / MIB,
            rss_peak / MIB,
            rss_end / MIB
        ),
    ));
    if n >= 1000 {
        targets.push(Target::custom(
            format!(
                "agent RSS ≤ 32 MiB with 1,000 policed containers that each learned \
                 {NAMES_PER_CONTAINER} names (measured: {n}; {build} build)"
            ),
            format!("{:.1} MiB (peak {:.1} MiB)", rss_end / MIB, rss_peak / MIB),
            stats::verdict_at_most(rss_peak / MIB, 32.0),
        ));
    }
    raw.insert(
        "dns_learned_containers".into(),
        json!({
            "containers": n, "asked": o.containers, "names_each": NAMES_PER_CONTAINER,
            "answered": answered.len(), "unanswered": unanswered,
            "rss_start_bytes": rss_start, "rss_peak_bytes": rss_peak, "rss_end_bytes": rss_end,
            "start_s": started.as_secs_f64(), "learn_s": learned.as_secs_f64(),
        }),
    );
    Ok((rows, targets, raw))
}

pub fn run(cg2: &Path, exe: &Path, o: &Opts) -> Result<Section> {
    let build = if o.quick { "debug" } else { "release" };
    // Dropped in reverse order: the containers (with `b`), the DNS servers, then `ground`.
    let (docker, ground) = Ground::new(cg2, "dns")?;
    let attach = ground.attach();
    // The agent's own `--dns-server` (it resolves nothing in learn mode).
    let agent_zone = Zone::start(DNS_IP, 0)?;
    let dir = bench_dir();
    let policy_file = dir.join("dns-policy.toml");
    fs::write(&policy_file, "# Made by `cargo xtask bench`: no rules.\n")?;
    let mut b = Bench {
        dir: &dir,
        pin: ground.pins.path.clone(),
        attach: attach.clone(),
        fleet: Fleet::new(docker, &attach),
        zone: &agent_zone,
        policy_file,
        serial: 0,
        dns_mode: None,
    };
    // The server the containers ask: port 53 of the bridge's gateway, the host's side of
    // `docker0` (the bench's own server; it fails to start if the host serves port 53 there).
    // Not a container's: with a thousand containers on the bridge, the containers' ARP for
    // another container's address went unanswered (their neighbour entries FAILED) and every
    // question to it timed out.
    let gateway = b.fleet.bridge_gateway()?;
    let server_addr = SocketAddrV4::new(gateway, 53);
    let server = Zone::start_on(SocketAddr::V4(server_addr))
        .with_context(|| format!("the bench's DNS server on the bridge's gateway {server_addr}"))?;
    let agent = b.start_agent("dns")?;
    let measured = measure(&mut b, exe, o, &server, server_addr, agent.0.pid(), build);
    // The agent's log is kept in `target/bench` whatever happened.
    let stopped = b.stop_agent(agent);
    let (rows, targets, raw) = measured.with_context(|| {
        format!(
            "the DNS part ({} questions reached the bench's server; the agent's log is in {})",
            server.total_queries(),
            b.dir.display()
        )
    })?;
    stopped?;
    drop(b);
    drop(server);
    drop(agent_zone);
    drop(ground);

    let mut md = String::from("| measurement | result |\n|---|---|\n");
    for (k, v) in &rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push('\n');
    Ok(Section {
        title: "5. DNS proxy".into(),
        intro: format!(
            "The real `egress-agent run` ({build} build) with the host's dockerd and its DNS \
             proxy in its default `learn` mode. Two busybox containers (`{}`) on Docker's \
             default bridge with `--dns {}` ask the bench's DNS server on the bridge's \
             gateway, {server_addr}: an unlabelled one directly, a policed one through the \
             agent's proxy (the programs redirect its port-53 traffic to the proxy in its network \
             namespace, which forwards to the same server). The load generator runs in their \
             cgroups and network namespaces, alternating between them batch by batch (A B B A \
             …); a question is a new socket, the question, the answer and `close`. Added latency \
             is the median over rounds of (proxy − direct) at each percentile; rates are \
             medians of per-pair ratios [95 % CI]. RSS is VmRSS; the peak is VmHWM, reset \
             before the containers start.",
            egress_tests::docker::image(),
            server_addr.ip()
        ),
        markdown: md,
        targets,
        raw: serde_json::Value::Object(raw),
    })
}

/// The host's IPv4 neighbour table limits (`net.ipv4.neigh.default.gc_thresh1..3`), raised for
/// a phase and put back when dropped.
struct NeighbourRoom {
    old: Vec<(String, String)>,
}

impl NeighbourRoom {
    const PATH: &str = "/proc/sys/net/ipv4/neigh/default";

    /// Room for `hosts` neighbours besides what the host has (never lowers a limit).
    fn for_hosts(hosts: usize) -> Result<Self> {
        let want = [(1, hosts), (2, 2 * hosts + 512), (3, 4 * hosts + 1024)];
        let mut room = Self { old: Vec::new() };
        for (k, at_least) in want {
            let path = format!("{}/gc_thresh{k}", Self::PATH);
            let old = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let was: usize = old.trim().parse().unwrap_or(0);
            if was < at_least {
                std::fs::write(&path, at_least.to_string())
                    .with_context(|| format!("writing {path}"))?;
                room.old.push((path, old.trim().to_owned()));
            }
        }
        Ok(room)
    }
}

impl Drop for NeighbourRoom {
    fn drop(&mut self) {
        for (path, old) in self.old.iter().rev() {
            if let Err(e) = std::fs::write(path, old) {
                eprintln!("bench: could not put {path} back to {old}: {e}");
            }
        }
    }
}
