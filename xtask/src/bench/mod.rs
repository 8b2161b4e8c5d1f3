//! `cargo xtask bench [--quick]`: what the enforcer costs, measured side by side with the
//! alternatives in one run, printed as a markdown table (stdout and `target/bench/report.md`,
//! raw runs in `report.json`).
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
//!
//! Configurations alternate in rounds (A B C, B C A, ...) so that drift and noise on this
//! shared machine hit every side alike; tables show medians over rounds and ratios measured
//! within each round. Nothing is compared against thresholds: the targets are reported.
//!
//! All traffic goes to loopback addresses (127.77.0.0/16 for the sinks and servers) or to
//! network namespaces and containers the bench makes; the allow lists name only loopback
//! addresses and `.test` domains answered by the bench's own DNS server.

mod agent;
mod client;
mod connect;
mod dns;
mod env;
mod floor;
mod lab;
mod nft;
mod proxy;
mod stats;

use std::{
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use crate::{say, sys, target_dir};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    inner: Option<Inner>,

    /// A reduced run (fewer rounds, shorter runs; under two minutes on a 2-core machine once
    /// built) that keeps the harness from rotting. Its report goes to
    /// `target/bench/report-quick.md`.
    #[arg(long)]
    pub quick: bool,

    /// Run only these parts (comma-separated): connect, nft, proxy, agent. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,

    /// Rounds per comparison (default: 3 with --quick, 7 otherwise).
    #[arg(long)]
    pub rounds: Option<usize>,

    /// The markdown report (default: `target/bench/report.md`, or `report-quick.md`).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
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
}

/// One part of the report.
pub struct Section {
    pub title: String,
    pub intro: String,
    pub markdown: String,
    pub targets: Vec<Target>,
    pub raw: serde_json::Value,
}

/// A target of the issue and where this run stands (reported, never enforced).
pub struct Target {
    pub what: String,
    pub shown: String,
    pub verdict: &'static str,
}

impl Target {
    /// A ratio (with its confidence interval) that should be at least `bound`.
    pub fn ratio(what: String, r: &stats::Ratio, bound: f64) -> Self {
        Self {
            what,
            shown: if r.median.is_finite() {
                format!("{r}")
            } else {
                "n/a".into()
            },
            verdict: r.verdict_at_least(bound),
        }
    }

    /// Anything else, formatted by the caller.
    pub fn custom(what: String, shown: String, verdict: &'static str) -> Self {
        Self {
            what,
            shown,
            verdict,
        }
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, with the seconds since the bench started.
pub fn note(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    say(&format!("[{t:6.1} s] {msg}"));
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(Inner::Client(c)) = args.inner {
        return client::run(c);
    }
    let start = *START.get_or_init(Instant::now);
    if !sys::is_root() {
        bail!(
            "the benchmarks load eBPF programs, make cgroups and network namespaces and start \
             dockerd, so they need root: run `sudo -E cargo xtask bench{}`",
            if args.quick { " --quick" } else { "" }
        );
    }
    sys::catch_signals();
    let cg2 = sys::ensure_kernel_fs()?;
    env::sweep_leftovers();
    let parts: Vec<Part> = if args.only.is_empty() {
        vec![Part::Connect, Part::Nft, Part::Proxy, Part::Agent]
    } else {
        args.only.clone()
    };
    // Check every tool first, so that a missing package fails the run before anything runs.
    if parts.contains(&Part::Proxy) {
        proxy::check_tools()?;
    }
    if parts.contains(&Part::Nft) {
        nft::check_tools()?;
    }
    if parts.contains(&Part::Agent) {
        agent::check_tools()?;
    }
    let quick = args.quick;
    let rounds = args.rounds.unwrap_or(if quick { 3 } else { 7 }).max(1);
    let exe = std::env::current_exe().context("the path of this xtask")?;
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = machine();
    note(&format!(
        "benchmarks: {} ({} rounds); parts: {parts:?}",
        if quick { "quick" } else { "full" },
        rounds
    ));

    let mut sections = Vec::new();
    // Programs of others (e.g. tests running at the same time) attached above our cgroups.
    let mut foreign = std::collections::BTreeSet::new();
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
        let mut lab = lab::EnforcerLab::open(&cg2, fillers)?;
        note(&format!(
            "enforcer attached at {} (pins in {})",
            lab.attach.path.display(),
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
                Part::Agent => continue,
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
        let s = agent::run(&dir, &agent::Opts::new(quick, rounds))?;
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
    let md = render(quick, rounds, &machine, &sections, &foreign, total);
    let out = args.out.unwrap_or_else(|| {
        dir.join(if quick {
            "report-quick.md"
        } else {
            "report.md"
        })
    });
    fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
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
    let raw_path = out.with_extension("json");
    fs::write(&raw_path, serde_json::to_string_pretty(&raw)?)
        .with_context(|| format!("writing {}", raw_path.display()))?;
    println!("{md}");
    say(&format!(
        "report: {} (raw runs: {}); {:.0} s in all",
        out.display(),
        raw_path.display(),
        total.as_secs_f64()
    ));
    Ok(())
}

fn render(
    quick: bool,
    rounds: usize,
    machine: &serde_json::Value,
    sections: &[(Section, Duration)],
    foreign: &std::collections::BTreeSet<String>,
    total: Duration,
) -> String {
    let mut md = String::new();
    let m = |k: &str| machine[k].as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        md,
        "## egress-enforcer benchmarks ({}), {}\n",
        if quick { "quick run" } else { "full run" },
        m("date")
    );
    let _ = writeln!(
        md,
        "Machine: {}, {} CPUs, {} RAM, kernel {}, load average {} at the start; commit {}. \
         `cargo xtask bench{}` took {:.0} s ({} rounds per comparison).\n",
        m("cpu"),
        m("cpus"),
        m("memory"),
        m("kernel"),
        m("loadavg"),
        m("commit"),
        if quick { " --quick" } else { "" },
        total.as_secs_f64(),
        rounds,
    );
    let _ = writeln!(
        md,
        "This is a shared 2-core machine: absolute numbers are noisy; compare the ratios, which \
         are measured side by side within each round. Client, servers, proxy and the harness \
         share the same two cores.\n"
    );
    if !foreign.is_empty() {
        let _ = writeln!(
            md,
            "**Caveat:** programs of others were attached above the measured cgroups at some \
             point of this run ({}). They ran for both sides of every comparison, so the \
             \"no program\" side paid for them too; the ratios still compare like with like, \
             the absolute \"physical limit\" is lower than on an idle host.\n",
            foreign.iter().cloned().collect::<Vec<_>>().join("; ")
        );
    }
    if quick {
        let _ = writeln!(
            md,
            "A quick run is a smoke test of the harness: with so few rounds and short runs its \
             figures are rough and most verdicts below cannot be resolved. Use the full run \
             (`cargo xtask bench`) for numbers.\n"
        );
    }
    let all: Vec<&Target> = sections.iter().flat_map(|(s, _)| &s.targets).collect();
    if !all.is_empty() {
        let _ = writeln!(
            md,
            "### Targets (where this run stands; not enforced)\n\nRatios show the median and, in brackets, its 95 % confidence interval (fewer than \
             {} samples: their range). `met` and `missed` mean the whole interval is on that side \
             of the target; `… by the median` means the interval spans the target (or there are \
             too few samples), so only the median says which side this run is on.\n\n\
             | target | this run | status |\n|---|---:|---|",
            stats::MIN_FOR_CI
        );
        for t in all {
            let _ = writeln!(md, "| {} | {} | {} |", t.what, t.shown, t.verdict);
        }
        md.push('\n');
    }
    for (s, d) in sections {
        let _ = writeln!(
            md,
            "### {} ({:.0} s)\n\n{}\n\n{}",
            s.title,
            d.as_secs_f64(),
            s.intro,
            s.markdown
        );
    }
    md
}

/// What the report says about the machine.
fn machine() -> serde_json::Value {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let loadavg = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(crate::workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(crate::workspace_root())
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    json!({
        "date": utc_now(),
        "cpu": cpu,
        "cpus": cpus.to_string(),
        "memory": format!("{:.0} GiB", mem_kib / 1024.0 / 1024.0),
        "kernel": kernel,
        "loadavg": loadavg,
        "commit": if dirty { format!("{commit} (with uncommitted changes)") } else { commit },
    })
}

/// `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s / 60 % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }
}
