//! The benchmark behind `cargo xtask bench [--quick]`: what the enforcer costs, measured side
//! by side with the alternatives in one run, printed as a markdown table (stdout and
//! `target/bench/report.md`, raw runs in `report.json`). It runs on the privileged test harness
//! (`egress-tests`): its cgroups, pin directories, network namespaces, sinks, helper processes,
//! agent runners, containers and DNS server.
//!
//! 1. [`connect`]: TCP connects and UDP sends per second and their latency from a cgroup,
//!    without any program vs. under the enforcer with 10 to 100,000 allow entries and 1 to
//!    1,000 policed cgroups, with the kernel's own run time of the programs.
//! 2. [`proxy`]: the blog's approach (an nginx `stream` proxy per allowed destination) vs.
//!    direct under the enforcer vs. direct without a program: new connections per second,
//!    request latency, keep-alive requests per second, bulk bytes per second (wrk, iperf3).
//! 3. [`nft`]: an nftables filter with the same allowlist as a set, matched on the cgroup,
//!    in network namespaces of its own: connects per second.
//! 4. [`agent`]: the agent with Docker: time from `docker run` to the policy in the map,
//!    `docker run` latency with and without the agent, the agent's RSS and CPU with 100
//!    policed containers, during churn, with 1,000 policies, and refreshing 1,000 domains.
//! 5. [`agent::dns`]: the agent's DNS proxy: the latency it adds to a question (p50, p99; UDP
//!    and TCP) and the questions per second through it, against the same client asking the
//!    server directly, and the agent's RSS with 1,000 policed containers that each learned 20
//!    names.
//!
//! Configurations alternate in rounds (A B C, B C A, ...) so that drift and noise on this
//! shared machine hit every side alike; tables show medians over rounds and ratios measured
//! within each round. Nothing is compared against thresholds: the targets are reported.
//!
//! All traffic goes to loopback addresses (127.77.0.0/16 for the sinks and servers) or to
//! network namespaces and containers the bench makes; the allow lists name only loopback
//! addresses and `.test` domains answered by the bench's own DNS server.
//!
//! Other modules: [`client`] the load generator (this binary's hidden `client` subcommand),
//! [`lab`] the in-process enforcer and its cgroups, [`floor`] the minimal programs,
//! [`bpf_stats`] the kernel's run-time statistics, [`zone`] the bench's DNS names,
//! [`dns_client`] the load generator's DNS questions, [`stats`]
//! the statistics, [`report`] the markdown.

pub mod agent;
pub mod bpf_stats;
pub mod client;
pub mod connect;
pub mod dns_client;
pub mod floor;
pub mod lab;
pub mod nft;
pub mod proxy;
pub mod report;
pub mod stats;
pub mod zone;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use egress_tests::{interrupt, sweep};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask bench",
    bin_name = "cargo xtask bench",
    about = "Measure what the enforcer costs, side by side with the alternatives (no program, an \
             nginx stream proxy, an nftables set, the agent with Docker), and print a markdown \
             table of medians and ratios (also written to `target/bench/report.md`). Needs root.",
    args_conflicts_with_subcommands = true
)]
pub struct BenchArgs {
    #[command(subcommand)]
    inner: Option<Inner>,

    /// A reduced run (fewer rounds, shorter runs; under two minutes on a 2-core machine once
    /// built) that keeps the harness from rotting. Its report goes to
    /// `target/bench/report-quick.md`.
    #[arg(long)]
    pub quick: bool,

    /// Run only these parts (comma-separated): connect, nft, proxy, agent, dns. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,

    /// Rounds per comparison (default: 3 with --quick, 7 otherwise).
    #[arg(long)]
    pub rounds: Option<usize>,

    /// The markdown report (default: `target/bench/report.md`, or `report-quick.md`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// (internal) Only check that the tools of the parts asked for are installed, so that
    /// `cargo xtask bench` fails on a missing package before it builds anything big.
    #[arg(long, hide = true)]
    pub preflight: bool,
}

#[derive(Debug, Subcommand)]
enum Inner {
    /// (internal) The load generator that runs inside the measured cgroup.
    #[command(hide = true)]
    Client(client::ClientArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Connect,
    Nft,
    Proxy,
    Agent,
    Dns,
}

/// Where the bench writes its report, its servers' files and its logs: `$EGRESS_BENCH_DIR`
/// (`cargo xtask bench` sets it to `<target dir>/bench`), else `target/bench` of the workspace.
pub fn bench_dir() -> PathBuf {
    match std::env::var_os("EGRESS_BENCH_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace().join("target").join("bench"),
    }
}

/// The workspace root (this crate lives in `<root>/egress-bench`).
fn workspace() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here)
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, with the seconds since the bench started.
pub fn note(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench: [{t:6.1} s] {msg}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(Inner::Client(c)) = args.inner {
        return client::run(c);
    }
    let parts: Vec<Part> = if args.only.is_empty() {
        vec![
            Part::Connect,
            Part::Nft,
            Part::Proxy,
            Part::Agent,
            Part::Dns,
        ]
    } else {
        args.only.clone()
    };
    // Every tool first, so that a missing package fails the run before anything runs.
    if parts.contains(&Part::Proxy) {
        proxy::check_tools()?;
    }
    if parts.contains(&Part::Nft) {
        nft::check_tools()?;
    }
    if parts.contains(&Part::Agent) || parts.contains(&Part::Dns) {
        agent::check_tools()?;
    }
    if args.preflight {
        return Ok(());
    }
    let start = *START.get_or_init(Instant::now);
    if !is_root() {
        bail!(
            "the benchmarks load eBPF programs, make cgroups and network namespaces and start \
             dockerd, so they need root: run `sudo -E cargo xtask bench{}`",
            if args.quick { " --quick" } else { "" }
        );
    }
    interrupt::catch();
    let cg2 = egress_agent::sys::mounts::cgroup2_mount()
        .context("finding the cgroup v2 mount (`cargo xtask bench` mounts bpffs and tracefs)")?;
    sweep::leftovers();
    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 3 } else { 7 }).max(1);
    let exe = std::env::current_exe().context("the path of this benchmark binary")?;
    let dir = bench_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = report::machine(workspace());
    note(&format!(
        "benchmarks: {} ({} rounds); parts: {parts:?}",
        if quick { "quick" } else { "full" },
        rounds
    ));

    let mut sections = Vec::new();
    // Programs of others (e.g. tests running at the same time) attached above our cgroups.
    let mut foreign = BTreeSet::new();
    let lab_parts = [Part::Connect, Part::Nft, Part::Proxy];
    if parts.iter().any(|p| lab_parts.contains(p)) {
        let connect_opts = connect::Opts {
            rounds,
            batches: if quick { 6 } else { 16 },
            tcp_batch: if quick { 200 } else { 500 },
            udp_batch: if quick { 1_000 } else { 2_500 },
            warmup: 500,
            entries: vec![10, 1_000, 100_000],
            cgroups: vec![1, 100, 1_000],
        };
        let fillers = if parts.contains(&Part::Connect) {
            connect_opts.cgroups.iter().copied().max().unwrap_or(1) - 1
        } else {
            0
        };
        let mut lab = lab::EnforcerLab::open(fillers)?;
        note(&format!(
            "enforcer attached at {} (pins in {})",
            lab.attach().path.display(),
            lab.pin_dir().display()
        ));
        for p in &parts {
            foreign.extend(lab.foreign_programs());
            let t0 = Instant::now();
            let s = match p {
                Part::Connect => connect::run(&mut lab, &exe, &connect_opts)?,
                Part::Nft => nft::run(
                    &mut lab,
                    &exe,
                    &cg2,
                    &dir,
                    &nft::Opts {
                        rounds,
                        load: connect::Load {
                            batch: if quick { 200 } else { 500 },
                            batches: if quick { 6 } else { 16 },
                            warmup: 500,
                            settle: 10,
                        },
                        entries: if quick {
                            vec![1_000]
                        } else {
                            vec![1_000, 100_000]
                        },
                    },
                )?,
                Part::Proxy => proxy::run(
                    &mut lab,
                    &exe,
                    &dir,
                    &proxy::Opts {
                        rounds: if quick { rounds.min(2) } else { rounds },
                        seconds: if quick { 1 } else { 2 },
                        cycle: connect::Load {
                            batch: if quick { 50 } else { 100 },
                            batches: if quick { 6 } else { 16 },
                            warmup: 100,
                            settle: 5,
                        },
                    },
                )?,
                Part::Agent | Part::Dns => continue,
            };
            foreign.extend(lab.foreign_programs());
            note(&format!(
                "{}: done in {:.0} s",
                s.title,
                t0.elapsed().as_secs_f64()
            ));
            sections.push((s, t0.elapsed()));
        }
    }
    if parts.contains(&Part::Agent) {
        let t0 = Instant::now();
        let s = agent::run(&cg2, &agent::Opts::new(quick, rounds))?;
        note(&format!(
            "{}: done in {:.0} s",
            s.title,
            t0.elapsed().as_secs_f64()
        ));
        sections.push((s, t0.elapsed()));
    }
    if parts.contains(&Part::Dns) {
        let t0 = Instant::now();
        let s = agent::dns::run(&cg2, &exe, &agent::dns::Opts::new(quick, rounds))?;
        note(&format!(
            "{}: done in {:.0} s",
            s.title,
            t0.elapsed().as_secs_f64()
        ));
        sections.push((s, t0.elapsed()));
    }

    let total = start.elapsed();
    if !foreign.is_empty() {
        note(&format!(
            "warning: programs of others were attached above the measured cgroups: {foreign:?}"
        ));
    }
    let md = report::render(quick, rounds, &machine, &sections, &foreign, total);
    let raw = json!({
        "quick": quick,
        "rounds": rounds,
        "machine": machine,
        "seconds": total.as_secs_f64(),
        "sections": sections.iter().map(|(s, d)| json!({
            "title": s.title,
            "seconds": d.as_secs_f64(),
            "runs": s.raw,
        })).collect::<Vec<_>>(),
    });
    let out = args.out.unwrap_or_else(|| {
        dir.join(if quick {
            "report-quick.md"
        } else {
            "report.md"
        })
    });
    let raw_path = write_report(&out, &md, &raw)?;
    note(&format!(
        "report: {} (raw runs: {}); {:.0} s in all",
        out.display(),
        raw_path.display(),
        total.as_secs_f64()
    ));
    Ok(())
}

/// Writes the markdown (also to stdout) and the raw runs next to it; returns where those went
/// (`.json`).
fn write_report(out: &Path, md: &str, raw: &serde_json::Value) -> Result<PathBuf> {
    fs::write(out, md).with_context(|| format!("writing {}", out.display()))?;
    let raw_path = out.with_extension("json");
    fs::write(&raw_path, serde_json::to_string_pretty(raw)?)
        .with_context(|| format!("writing {}", raw_path.display()))?;
    println!("{md}");
    Ok(raw_path)
}
