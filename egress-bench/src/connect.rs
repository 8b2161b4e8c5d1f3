//! Part 1: what the enforcer costs a `connect` (TCP) and a `sendto` (UDP), against the same
//! client in a cgroup without any program, with allow maps of 10 to 100,000 entries and 1 to
//! 1,000 policed cgroups, and the programs' own run time from the kernel's BPF statistics.
//!
//! Each configuration is measured in paired runs: one client process alternates batches
//! between the cgroup without a program (side A) and the configuration's cgroup (side B), in
//! the order A B B A, so both see the same moments of this shared machine. The maps are put in
//! the configuration's state before the run. Configurations rotate over rounds. A control
//! configuration pairs the no-program cgroup with a second no-program cgroup: its spread is
//! what noise alone does to a ratio.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use egress_agent::sys::bpf::CgroupAttachType;
use egress_tests::{
    command::run_ok, interrupt, net::TcpSink, placement::Placement, udp_drain::UdpDrain,
};
use serde_json::json;

use crate::{
    bpf_stats::{BpfStats, prog_stats},
    client::{ClientReport, Op, SideReport},
    floor::{Floor, FloorProgram},
    lab::{EnforcerLab, attached_program},
    note,
    report::{Section, Target},
    stats::{self, Ratio},
};

/// Where the sinks of part 1 listen.
const SINK_IP: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);

#[derive(Debug, Clone)]
pub struct Opts {
    pub rounds: usize,
    /// Batches per side per run.
    pub batches: usize,
    pub tcp_batch: usize,
    pub udp_batch: usize,
    pub warmup: usize,
    pub entries: Vec<usize>,
    pub cgroups: Vec<usize>,
}

/// One side of a client run.
#[derive(Debug, Clone)]
pub struct SideSpec {
    pub cgroup: PathBuf,
    pub netns: Option<PathBuf>,
    pub dst: SocketAddrV4,
}

/// How many operations a client run does.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub batch: usize,
    pub batches: usize,
    pub warmup: usize,
    /// Untimed operations after each move between sides.
    pub settle: usize,
}

/// Runs the client (`egress-bench client`) once, starting in side A; fails if any operation
/// failed.
pub fn run_client(
    exe: &Path,
    op: Op,
    a: &SideSpec,
    b: Option<&SideSpec>,
    load: Load,
) -> Result<ClientReport> {
    run_client_with(exe, op, a, b, load, &[])
}

/// [`run_client`] with more arguments for the client (e.g. `--names` of the DNS operations).
pub fn run_client_with(
    exe: &Path,
    op: Op,
    a: &SideSpec,
    b: Option<&SideSpec>,
    load: Load,
    extra: &[String],
) -> Result<ClientReport> {
    let mut cmd = Placement {
        cgroup: Some(a.cgroup.clone()),
        netns: a.netns.clone(),
    }
    .command(exe);
    cmd.args(["client", op.arg()]);
    for (prefix, s) in [("a", Some(a)), ("b", b)] {
        let Some(s) = s else { continue };
        cmd.arg(format!("--{prefix}-cgroup")).arg(&s.cgroup);
        cmd.arg(format!("--{prefix}-dst")).arg(s.dst.to_string());
        if let Some(ns) = &s.netns {
            cmd.arg(format!("--{prefix}-netns")).arg(ns);
        }
    }
    cmd.arg("--batch")
        .arg(load.batch.to_string())
        .arg("--batches")
        .arg(load.batches.to_string())
        .arg("--warmup")
        .arg(load.warmup.to_string())
        .arg("--settle")
        .arg(load.settle.to_string())
        .args(extra);
    let total = (load.batch + load.settle) * load.batches * 2 + load.warmup * 2;
    // Generous: an operation takes microseconds; a stuck run is killed.
    let timeout = Duration::from_secs(60) + Duration::from_millis(total as u64);
    let out = run_ok(&mut cmd, timeout)?;
    let line = out.stdout.lines().last().unwrap_or_default();
    let r: ClientReport = serde_json::from_str(line)
        .with_context(|| format!("the bench client printed {:?}", out.stdout))?;
    if r.errors > 0 {
        bail!(
            "{} {} operations failed ({} → {}): {}",
            r.errors,
            op.arg(),
            a.cgroup.display(),
            b.map_or(a.dst, |b| b.dst),
            r.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(r)
}

/// One measured configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// A second cgroup without a program: the noise floor of a paired ratio.
    Control,
    /// A minimal allow-all program of the same hook on a cgroup of its own: the kernel's price
    /// of any such hook ([`floor`](super::floor)).
    Floor,
    /// The minimal program plus one `bpf_get_current_cgroup_id` call, on a cgroup of its own.
    FloorCgroupId,
    /// Policed with the smallest allow map, side A under the minimal program instead of no
    /// program: what the enforcer costs beyond the kernel's hook machinery.
    OverFloor,
    /// Under the programs, not policed: one map lookup.
    Unpoliced,
    /// Policed with `entries` rules, with `cgroups` policed cgroups in all.
    Policed { entries: usize, cgroups: usize },
}

impl Setup {
    pub fn label(self) -> String {
        match self {
            Setup::Control => "control: no program vs. no program".into(),
            Setup::Floor => "kernel hook floor: minimal allow-all program".into(),
            Setup::FloorCgroupId => {
                "minimal program + `bpf_get_current_cgroup_id` (a helper call)".into()
            }
            Setup::OverFloor => {
                "policed (smallest map) **× minimal program**, not × no program: our own share"
                    .into()
            }
            Setup::Unpoliced => "enforcer attached, cgroup not policed".into(),
            Setup::Policed { entries, cgroups } => format!(
                "policed: {} entries, {} policed cgroup{}",
                stats::int(entries as f64),
                stats::int(cgroups as f64),
                if cgroups == 1 { "" } else { "s" }
            ),
        }
    }
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => unreachable!("the sinks are IPv4"),
    }
}

struct Bench<'a> {
    lab: &'a mut EnforcerLab,
    exe: &'a Path,
    tcp: SocketAddrV4,
    udp: SocketAddrV4,
    /// The cgroup with the minimal program.
    floor: PathBuf,
    /// The cgroup with the minimal program that calls `bpf_get_current_cgroup_id`.
    floor_cgroup_id: PathBuf,
    o: &'a Opts,
}

impl Bench<'_> {
    /// Puts the maps in the state of `s` and returns the cgroup side B runs in.
    fn apply(&mut self, s: Setup) -> Result<PathBuf> {
        let allowed = [SocketAddr::V4(self.tcp), SocketAddr::V4(self.udp)];
        let smallest = self.o.entries.iter().copied().min().unwrap_or(10);
        let (entries, cgroups) = match s {
            Setup::Control
            | Setup::Floor
            | Setup::FloorCgroupId
            | Setup::OverFloor
            | Setup::Unpoliced => (smallest, 1),
            Setup::Policed { entries, cgroups } => (entries, cgroups),
        };
        self.lab.set_measured(&allowed, entries)?;
        self.lab.set_fillers(cgroups - 1)?;
        Ok(match s {
            Setup::Control => self.lab.control.path.clone(),
            Setup::Floor => self.floor.clone(),
            Setup::FloorCgroupId => self.floor_cgroup_id.clone(),
            Setup::Unpoliced => self.lab.unpoliced.path.clone(),
            Setup::OverFloor | Setup::Policed { .. } => self.lab.measured.path.clone(),
        })
    }

    fn load(&self, op: Op) -> (SocketAddrV4, Load) {
        let (dst, batch) = match op {
            Op::TcpConnect => (self.tcp, self.o.tcp_batch),
            Op::UdpSendto => (self.udp, self.o.udp_batch),
            _ => unreachable!("part 1 measures connects and sends only"),
        };
        (
            dst,
            Load {
                batch,
                batches: self.o.batches,
                warmup: self.o.warmup,
                settle: 10,
            },
        )
    }

    /// A paired run: no program (A; the minimal program for [`Setup::OverFloor`]) against
    /// `s` (B).
    fn paired(&mut self, s: Setup, op: Op) -> Result<ClientReport> {
        let b = self.apply(s)?;
        let (dst, load) = self.load(op);
        let a = SideSpec {
            cgroup: match s {
                Setup::OverFloor => self.floor.clone(),
                _ => self.lab.free.path.clone(),
            },
            netns: None,
            dst,
        };
        let b = SideSpec {
            cgroup: b,
            netns: None,
            dst,
        };
        run_client(self.exe, op, &a, Some(&b), load)
    }

    /// `s` alone (for the statistics pass).
    fn single(&mut self, s: Setup, op: Op) -> Result<ClientReport> {
        let cg = self.apply(s)?;
        let (dst, mut load) = self.load(op);
        load.batches = load.batches.div_ceil(2);
        let a = SideSpec {
            cgroup: cg,
            netns: None,
            dst,
        };
        run_client(self.exe, op, &a, None, load)
    }
}

pub fn setups(o: &Opts) -> Vec<Setup> {
    let mut v = vec![
        Setup::Control,
        Setup::Floor,
        Setup::FloorCgroupId,
        Setup::OverFloor,
        Setup::Unpoliced,
    ];
    let smallest = o.entries.iter().copied().min().unwrap_or(10);
    for &e in &o.entries {
        v.push(Setup::Policed {
            entries: e,
            cgroups: 1,
        });
    }
    for &c in &o.cgroups {
        if c > 1 {
            v.push(Setup::Policed {
                entries: smallest,
                cgroups: c,
            });
        }
    }
    v
}

/// Per configuration: (connect4 or sendmsg4) ns per run and run count, from the statistics pass.
type ProgNs = Vec<[Option<(f64, u64)>; 2]>;

pub fn run(lab: &mut EnforcerLab, exe: &Path, o: &Opts) -> Result<Section> {
    let tcp_sink = TcpSink::bind(IpAddr::V4(SINK_IP));
    let udp_sink = UdpDrain::bind(SocketAddr::new(IpAddr::V4(SINK_IP), 0))?;
    let hooks = [CgroupAttachType::Connect4, CgroupAttachType::Sendmsg4];
    let floor_cgroup = lab.free_cgroup("floor");
    let _floor = Floor::attach(&floor_cgroup.path, FloorProgram::Empty, &hooks)?;
    let floor_id_cgroup = lab.free_cgroup("floor-cgroup-id");
    let _floor_id = Floor::attach(&floor_id_cgroup.path, FloorProgram::CgroupId, &hooks)?;
    let mut b = Bench {
        lab,
        exe,
        tcp: v4(tcp_sink.addr),
        udp: v4(udp_sink.addr),
        floor: floor_cgroup.path.clone(),
        floor_cgroup_id: floor_id_cgroup.path.clone(),
        o,
    };
    let setups = setups(o);
    let n = setups.len();
    // res[op][setup][round]
    let mut res: [Vec<Vec<ClientReport>>; 2] = [vec![Vec::new(); n], vec![Vec::new(); n]];
    for round in 0..o.rounds {
        note(&format!("connect: round {}/{}", round + 1, o.rounds));
        for i in stats::rotation(n, round) {
            for (k, op) in [Op::TcpConnect, Op::UdpSendto].into_iter().enumerate() {
                interrupt::check()?;
                res[k][i].push(b.paired(setups[i], op)?);
            }
        }
    }

    // The programs' own cost, from the kernel's statistics, in a separate pass (the statistics
    // add two clock reads per run, which the timed rounds above must not pay).
    note("connect: BPF run-time statistics pass");
    let ids = [
        b.lab.prog_id(CgroupAttachType::Connect4)?,
        b.lab.prog_id(CgroupAttachType::Sendmsg4)?,
    ];
    let floor_ids = [
        attached_program(&b.floor, CgroupAttachType::Connect4)?,
        attached_program(&b.floor, CgroupAttachType::Sendmsg4)?,
    ];
    let floor_id_ids = [
        attached_program(&b.floor_cgroup_id, CgroupAttachType::Connect4)?,
        attached_program(&b.floor_cgroup_id, CgroupAttachType::Sendmsg4)?,
    ];
    let mut prog_ns: ProgNs = vec![[None, None]; n];
    {
        let _stats = BpfStats::enable()?;
        for (i, s) in setups.iter().enumerate() {
            if *s == Setup::Control {
                continue;
            }
            // The minimal program's own run time is the statistics' overhead plus the least a
            // program costs: the baseline for ours.
            let ids = match s {
                Setup::Floor => floor_ids,
                Setup::FloorCgroupId => floor_id_ids,
                _ => ids,
            };
            for (k, op) in [Op::TcpConnect, Op::UdpSendto].into_iter().enumerate() {
                interrupt::check()?;
                let (t0, n0) = prog_stats(ids[k])?;
                b.single(*s, op)?;
                let (t1, n1) = prog_stats(ids[k])?;
                let runs = n1.saturating_sub(n0);
                let ns = t1.saturating_sub(t0).as_nanos() as f64 / runs.max(1) as f64;
                prog_ns[i][k] = Some((ns, runs));
            }
        }
    }
    note(&format!(
        "connect: the sinks accepted {} connections and received {} datagrams",
        tcp_sink.accepted(),
        udp_sink.received()
    ));
    report(o, &setups, &res, &prog_ns)
}

/// Flat within ±3 %: the half-range of the rows' medians relative to their mean. A wider
/// spread counts as missed only if the confidence intervals of the highest and the lowest row
/// do not overlap (otherwise noise could explain it).
fn flatness(what: String, rows: &[Ratio]) -> Target {
    let medians: Vec<f64> = rows.iter().map(|r| r.median).collect();
    let h = stats::half_range(&medians);
    let lo = rows.iter().min_by(|a, b| a.median.total_cmp(&b.median));
    let hi = rows.iter().max_by(|a, b| a.median.total_cmp(&b.median));
    let verdict = match (lo, hi) {
        _ if !h.is_finite() => "not measured",
        _ if h <= 0.03 => "met",
        (Some(lo), Some(hi)) if hi.ci_lo > lo.ci_hi => "missed",
        _ => "unresolved (CIs overlap)",
    };
    Target::custom(what, format!("±{:.1} %", h * 100.0), verdict)
}

fn side_b(r: &ClientReport) -> &SideReport {
    r.b.as_ref().unwrap_or(&r.a)
}

fn report(
    o: &Opts,
    setups: &[Setup],
    res: &[Vec<Vec<ClientReport>>; 2],
    prog_ns: &ProgNs,
) -> Result<Section> {
    let mut md = String::new();
    let mut targets = Vec::new();
    let mut raw = Vec::new();
    let smallest = o.entries.iter().copied().min().unwrap_or(10);
    let largest = o.entries.iter().copied().max().unwrap_or(10);
    let most_cgroups = o.cgroups.iter().copied().max().unwrap_or(1);
    for (k, (kind, unit, prog, what)) in [
        (
            "TCP connect",
            "connects/s",
            "connect4",
            format!(
                "`socket` + `connect` + `close` (SO_LINGER 0) to a loopback listener (backlog \
                 4096, accepted by a thread of the harness); {} batches of {} per side per run; \
                 latency is `connect` alone",
                o.batches, o.tcp_batch
            ),
        ),
        (
            "UDP sendto",
            "sendto/s",
            "sendmsg4",
            format!(
                "`sendto` of 16 bytes on an unconnected UDP socket to a loopback socket (drained \
                 by a thread of the harness); {} batches of {} per side per run; latency is \
                 `sendto` alone",
                o.batches, o.udp_batch
            ),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let runs = &res[k];
        md.push_str(&format!("#### {kind}\n\n{what}.\n\n"));
        md.push_str(&format!(
            "| configuration | {unit} | × no program | p50 | p99 | p99 × no program | {prog} ns/run |\n\
             |---|---:|---:|---:|---:|---:|---:|\n"
        ));
        // The no-program side of every run.
        let all_a: Vec<&SideReport> = setups
            .iter()
            .zip(runs)
            .filter(|(s, _)| **s != Setup::OverFloor)
            .flat_map(|(_, rs)| rs.iter().map(|r| &r.a))
            .collect();
        let med = |xs: Vec<f64>| stats::median(&xs);
        md.push_str(&format!(
            "| no program (physical limit; side A of every run) | {} | 1 | {} | {} | 1 | — |\n",
            stats::int(med(all_a.iter().map(|s| s.rate()).collect())),
            stats::dur_ns(med(all_a.iter().map(|s| s.p50_ns as f64).collect())),
            stats::dur_ns(med(all_a.iter().map(|s| s.p99_ns as f64).collect())),
        ));
        let mut ratio_of = Vec::new();
        for (i, s) in setups.iter().enumerate() {
            let rs = &runs[i];
            let pairs: Vec<f64> = rs.iter().flat_map(|r| r.pair_ratios.clone()).collect();
            let ratio = Ratio::of(&pairs);
            let p99r = Ratio::of(
                &rs.iter()
                    .map(|r| side_b(r).p99_ns as f64 / r.a.p99_ns as f64)
                    .collect::<Vec<_>>(),
            );
            let ns = prog_ns[i][k];
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                s.label(),
                stats::int(med(rs.iter().map(|r| side_b(r).rate()).collect())),
                ratio,
                stats::dur_ns(med(rs.iter().map(|r| side_b(r).p50_ns as f64).collect())),
                stats::dur_ns(med(rs.iter().map(|r| side_b(r).p99_ns as f64).collect())),
                p99r,
                ns.map_or("—".into(), |(v, _)| format!("{v:.0}")),
            ));
            ratio_of.push((*s, ratio));
            raw.push(json!({
                "test": kind,
                "setup": s.label(),
                "runs": rs,
                "prog_ns_per_run": ns.map(|x| x.0),
                "prog_runs": ns.map(|x| x.1),
            }));
        }
        let pick = |f: &dyn Fn(&Setup) -> bool| -> Vec<Ratio> {
            ratio_of
                .iter()
                .filter(|(s, _)| f(s))
                .map(|(_, r)| *r)
                .collect()
        };
        let entries_rows = pick(&|s| matches!(s, Setup::Policed { cgroups: 1, .. }));
        let cgroups_rows =
            pick(&|s| matches!(s, Setup::Policed { entries, .. } if *entries == smallest));
        let medians = |rs: &[Ratio]| rs.iter().map(|r| r.median).collect::<Vec<_>>();
        let (by_entries, by_cgroups) = (medians(&entries_rows), medians(&cgroups_rows));
        let worst = ratio_of
            .iter()
            .filter(|(s, _)| matches!(s, Setup::Policed { .. }))
            .map(|(_, r)| *r)
            .min_by(|a, b| a.median.total_cmp(&b.median))
            .unwrap_or(Ratio::one());
        let control = ratio_of
            .iter()
            .find(|(s, _)| *s == Setup::Control)
            .map(|(_, r)| *r)
            .unwrap_or(Ratio::one());
        md.push_str(&format!(
            "\nFlatness of the policed rows' ratios: {} → {} entries: {}; 1 → {} policed \
             cgroups: {}. Noise (control row): median {:.3}, 95 % CI {:.3}–{:.3}, \
             interquartile range of single pairs {:.3}–{:.3}.\n\n",
            stats::int(smallest as f64),
            stats::int(largest as f64),
            stats::spread(&by_entries),
            stats::int(most_cgroups as f64),
            stats::spread(&by_cgroups),
            control.median,
            control.ci_lo,
            control.ci_hi,
            control.p25,
            control.p75,
        ));
        let find = |want: Setup| ratio_of.iter().find(|(s, _)| *s == want).map(|(_, r)| *r);
        if let (Some(floor), Some(id), Some(over)) = (
            find(Setup::Floor),
            find(Setup::FloorCgroupId),
            find(Setup::OverFloor),
        ) {
            md.push_str(&format!(
                "Kernel hook floor: a minimal allow-all `{prog}` program costs {floor} × no \
                 program (the kernel's hook machinery, paid by any program of this hook), {id} \
                 with one `bpf_get_current_cgroup_id` call; the enforcer's policed cgroup runs \
                 at {over} × the minimal program (what the enforcer's own program costs).\n\n"
            ));
        }
        targets.push(Target::ratio(
            format!("{kind}: enforcer {unit} ≥ 0.97× no program (worst policed row)"),
            &worst,
            0.97,
        ));
        if let Some(over) = find(Setup::OverFloor) {
            targets.push(Target::ratio(
                format!(
                    "{kind}: (diagnostic) enforcer {unit} ≥ 0.97× a minimal allow-all program \
                     (our program alone, the kernel's hook cost excluded)"
                ),
                &over,
                0.97,
            ));
        }
        targets.push(flatness(
            format!(
                "{kind}: flat within ±3 % from {} to {} entries",
                stats::int(smallest as f64),
                stats::int(largest as f64)
            ),
            &entries_rows,
        ));
        targets.push(flatness(
            format!(
                "{kind}: flat within ±3 % from 1 to {} policed cgroups",
                stats::int(most_cgroups as f64)
            ),
            &cgroups_rows,
        ));
    }
    Ok(Section {
        title: "1. Connect cost".into(),
        intro: format!(
            "One client process per run alternates batches between a cgroup without any program \
             (side A) and the configuration's cgroup (side B) in the order A B B A A B B A, \
             moving itself before each batch, so both sides share the same moments of this \
             machine. {} rounds, configurations rotated each round; the maps are put in the \
             configuration's state before its run (policies of 10 entries on the other policed \
             cgroups). Rates and latencies are medians over rounds; `× no program` is the median \
             of the per-batch-pair ratios B/A over all rounds, with its 95 % confidence interval \
             in brackets; the control row pairs two cgroups without programs and shows what noise alone does. `ns/run` \
             is the kernel's own run time of our program per run (`run_time_ns / run_cnt` with \
             BPF statistics on; measured in a separate pass so that the timed runs do not pay \
             for the statistics; on the hook-floor row it is the minimal program's, i.e. the \
             statistics' own clock reads plus the least any program costs).",
            o.rounds
        ),
        markdown: md,
        targets,
        raw: json!(raw),
    })
}
